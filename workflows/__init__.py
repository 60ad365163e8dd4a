"""The built-in workflow pack. Each module defines one or more @workflow functions using only
the engine's public API; `builtin()` finds them all."""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from engine.dsl import WorkflowDef


@lru_cache(maxsize=1)
def builtin() -> dict[str, tuple[WorkflowDef, str]]:
    """name -> (workflow, recorded target `module:workflows.x:name`)."""
    found: dict[str, tuple[WorkflowDef, str]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for v in vars(mod).values():
            if isinstance(v, WorkflowDef) and v.name not in found:
                found[v.name] = (v, f"module:{mod.__name__}:{v.name}")
    return found
