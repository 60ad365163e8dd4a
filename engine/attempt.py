"""Attempt: one try of one step — how compute steps are called, how a failure reads."""
from __future__ import annotations

import asyncio
import inspect
import time
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .errors import SmithersError, TaskTimeout
from .render import one_line_validation

if TYPE_CHECKING:
    from .context import TaskCtx
    from .render import Ready
    from .run import RunExecutor

ENGINE_DIR = str(Path(__file__).parent)


def new_run_id() -> str:
    return time.strftime("%m%d") + "-" + uuid.uuid4().hex[:6]

def error_line(e: BaseException) -> str:
    """One line for a step's failure: the exception and where in user code it was raised."""
    if isinstance(e, (SmithersError, ValidationError)) and not isinstance(e, TaskTimeout):
        msg = one_line_validation(e) if isinstance(e, ValidationError) else str(e)
        return f"{type(e).__name__}: {msg}" if isinstance(e, ValidationError) else msg
    where = ""
    for fs in traceback.extract_tb(e.__traceback__):
        if not fs.filename.startswith(ENGINE_DIR) and "asyncio" not in fs.filename and "concurrent" not in fs.filename:
            where = f" (at {fs.filename}:{fs.lineno})"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}{where}" if text else f"{type(e).__name__}{where}"

class StepResult:
    """What a step runner returns when it has more to record than the output (usage, commit...)."""

    def __init__(self, value: Any, **attempt: Any) -> None:
        self.value, self.attempt = value, attempt


async def run_compute(ex: "RunExecutor", r: "Ready", tctx: "TaskCtx") -> Any:
    fn = r.node.run  # type: ignore[union-attr]
    if inspect.iscoroutinefunction(fn):
        result = await fn(tctx)
    else:
        result = await asyncio.to_thread(fn, tctx)
    if inspect.isawaitable(result):
        result = await result
    return result
