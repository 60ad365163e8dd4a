"""Attempt: one try of one step — how compute steps are called, how a failure reads."""
from __future__ import annotations

import asyncio
import inspect
import sysconfig
import time
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .errors import SmithersError, TaskTimeout
from .errors import one_line_validation

if TYPE_CHECKING:
    from .context import TaskCtx
    from .render import Ready
    from .run import RunExecutor

ENGINE_DIR = str(Path(__file__).parent)
_NOT_USER = tuple({ENGINE_DIR, *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib"))})


def new_run_id() -> str:
    return time.strftime("%m%d") + "-" + uuid.uuid4().hex[:6]

def user_frame(e: BaseException, prefer: str | None = None) -> traceback.FrameSummary | None:
    """The traceback frame to name in a one-line error: the last one in `prefer` (the workflow or
    step file) if any, else the last one outside the engine, the standard library and packages."""
    frames = traceback.extract_tb(e.__traceback__)
    if prefer:
        mine = [f for f in frames if f.filename == prefer]
        if mine:
            return mine[-1]
    ours = [f for f in frames if not f.filename.startswith(_NOT_USER) and not f.filename.startswith("<")]
    return ours[-1] if ours else None


def error_line(e: BaseException, prefer: str | None = None) -> str:
    """One line for a step's failure, with known secret values redacted (engine/secrets.py)."""
    from .secrets import redact  # agents' redaction hook: keep in merges

    return redact(_error_line(e, prefer))


def _error_line(e: BaseException, prefer: str | None = None) -> str:
    """One line for a step's failure: the exception and where in user code it was raised."""
    if isinstance(e, ValidationError):
        return f"ValidationError: {one_line_validation(e)}"
    if isinstance(e, SmithersError) and not isinstance(e, TaskTimeout):
        return str(e)
    fs = user_frame(e, prefer)
    where = f" (at {fs.filename}:{fs.lineno})" if fs else ""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}{where}" if text else f"{type(e).__name__}{where}"


class StepResult:
    """What a step runner returns when it has more to record than the output (usage, commit...)."""

    def __init__(self, value: Any, **attempt: Any) -> None:
        self.value, self.attempt = value, attempt


async def run_compute(ex: "RunExecutor", r: "Ready", tctx: "TaskCtx") -> Any:
    fn = r.task.run
    assert fn is not None
    if inspect.iscoroutinefunction(fn):
        result = await fn(tctx)
    else:
        result = await asyncio.to_thread(fn, tctx)
    if inspect.isawaitable(result):
        result = await result
    return result


async def cached(ex: "RunExecutor", r: "Ready", tctx: "TaskCtx") -> StepResult | None:
    """A cached step's output from an earlier run (a hit), or None (a miss: the step runs and its
    output is stored with its result)."""
    from .render import coerce_output

    task = r.task
    cache = task.cache
    assert cache is not None  # only cached tasks come here
    key = cache.key_for(tctx)
    entry = await ex.store.cache_get(task.id, key, str(cache.version))
    fresh = entry is not None and (cache.ttl is None or time.time() - entry.created_at <= cache.ttl)
    if entry is not None and fresh:
        try:
            coerce_output(task, entry.value)
        except (ValidationError, TypeError, ValueError):
            fresh = False  # the output model changed since: run the step
    if entry is None or not fresh:
        ex.cache_keys[r.key] = key
        return None
    source = f"{entry.run_id}:{entry.node_id}" + (f"[{entry.iteration}]" if entry.iteration else "")
    ex.emit("cache_hit", r.key, {"cache_key": key, "version": str(cache.version), "from": source})
    return StepResult(entry.value, cache="hit", cache_key=key, cached_from=source)
