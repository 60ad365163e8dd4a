"""The workflow-writing guide for coding agents (`smithers guide`, the MCP resource
smithers://guide and prompt write_workflow). Its Python examples are checked by the tests."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

GUIDE = Path(__file__).with_name("guide.md")
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@lru_cache(maxsize=1)
def guide_text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def python_blocks(text: str | None = None) -> list[str]:
    """The guide's Python code blocks, in order."""
    return _BLOCK.findall(text if text is not None else guide_text())
