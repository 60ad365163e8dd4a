"""Helpers for the app's tests: the workflow file, runs seeded through a second connection (as
another process would), the app with a frozen clock, and `until` to wait for a condition without
measuring time."""
from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any, Callable

from engine.loader import load_target
from engine.runtime import Engine
from engine.store import Store
from smithers_tui.app import SmithersApp
from smithers_tui.widgets.fmt import FrozenClock

FLOW = '''
"""flow: a loop, parallel checks, a gate, an agent step, a summary."""
from pydantic import BaseModel, Field
from engine import Approval, Loop, Parallel, Sequence, Task, workflow


class FlowInput(BaseModel):
    rounds: int = Field(2, ge=1, le=10, description="how many rounds the loop runs")
    topic: str = Field("tests", description="what the run is about")


class Count(BaseModel):
    n: int


def count(ctx):
    prev = ctx.latest("count")
    return Count(n=(prev.n if prev else 0) + 1)


def check(ctx):
    return {"ok": True}


@workflow(name="flow", input=FlowInput)
def flow(ctx):
    """A loop, parallel checks, a gate, then release notes."""
    last = ctx.latest("count")
    return Sequence(
        Task("plan", value={"topic": ctx.input.topic}),
        Loop("rounds", Task("count", run=count, output=Count),
             until=last is not None and last.n >= ctx.input.rounds, max_iterations=10),
        Parallel(Task("lint", run=check), Task("test", run=check)),
        Approval("ship", message="Ship it?"),
        Task("notes", agent="default", prompt=f"Write release notes about {ctx.input.topic}"),
        Task("summary", value={"shipped": True}),
    )


@workflow(name="quick")
def quick(ctx):
    """One step."""
    return Task("only", value=1)


@workflow(name="agents")
def agents(ctx):
    """Two agents at once."""
    return Parallel(Task("alpha", agent="default", prompt="Say hello as alpha"),
                    Task("beta", agent="default", prompt="Say hello as beta"))
'''

PROVIDER_VARS = ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENROUTER_API_KEY",
                 "DEEPSEEK_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY", "XAI_API_KEY"]


def target(project: Path, name: str = "flow") -> str:
    return f"file:{project / '.smithers' / 'workflows' / 'flow.py'}:{name}"


async def connect(db: Path) -> Store:
    """Another connection, safe while the app's are open in this process."""
    return await Store.open(db)


async def seed(db: Path, project: Path, run_id: str, input: Any = None, name: str = "flow") -> str:
    """Run a workflow to its end or its gate through another connection; returns its status."""
    store = await connect(db)
    try:
        eng = Engine(store, max_concurrency=1, agent_override="demo")
        wf, tgt = load_target(target(project, name))
        ex = await eng.start(wf, tgt, input, run_id=run_id, workdir=project)
        status = await ex.execute(stop_when_waiting=True)
        await eng.close()
        return status
    finally:
        await store.close()


def seed_sync(db: Path, project: Path, run_id: str, input: Any = None, name: str = "flow") -> str:
    return asyncio.run(seed(db, project, run_id, input, name))


def ids(prefix: str) -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def make_app(db: Path, project: Path, **kw: Any) -> SmithersApp:
    kw.setdefault("agent_override", "demo")
    kw.setdefault("clock", FrozenClock())
    kw.setdefault("new_id", ids("branch"))
    kw.setdefault("poll", 0.05)
    return SmithersApp(db, project=project, **kw)


async def until(pilot: Any, cond: Callable[[], Any], what: str = "condition", limit: int = 400) -> Any:
    """Let the app work until cond() holds (checked between short pauses); fail after `limit` checks."""
    for _ in range(limit):
        value = cond()
        if value:
            return value
        await pilot.pause(0.025)
    raise AssertionError(f"gave up waiting for {what}")


async def run_row(db: Path, run_id: str) -> dict[str, Any]:
    """The run's row as the database holds it (read with SQLite itself, read-only)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return dict(row) if row is not None else {}
    finally:
        conn.close()


def screen_is(app: Any, cls: type, **attrs: Any) -> bool:
    s = app.screen
    return isinstance(s, cls) and all(getattr(s, k, None) == v for k, v in attrs.items())


async def ready(pilot: Any, app: Any) -> None:
    """The app has opened its database and shows the runs."""
    from smithers_tui.screens.runs import RunsScreen

    await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded, "the runs screen")
