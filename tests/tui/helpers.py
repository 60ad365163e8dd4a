"""Helpers for the app's tests: the workflow file, runs seeded through a second connection (as
another process would), the app with a frozen clock, and `until` to wait for a condition.

`until` never measures time: it checks the condition again each time the app has processed a
message (any message, anywhere in the app: a key, a timer, a worker's state, a refresh), so a
loaded machine only makes it wait longer. A condition that never comes true is caught by
pytest-timeout (pyproject's `timeout`), a hang guard, not a deadline the app must meet."""
from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from textual._context import message_hook
from textual.message import Message

from engine.loader import load_target
from engine.runtime import Engine
from engine.store import Store
from smithers_tui.app import SmithersApp
from smithers_tui.prefs import Prefs
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


async def seed(db: Path, project: Path, run_id: str, input: Any = None, name: str = "flow",
               where: str | None = None) -> str:
    """Run a workflow (the project's `name`, or the target `where`: a file, file:PATH:NAME) to its end
    or its gate through another connection; returns its status."""
    store = await connect(db)
    try:
        eng = Engine(store, max_concurrency=1, agent_override="demo")
        wf, tgt = load_target(where or target(project, name))
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


# the terminal sizes every screen is snapshotted at
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36"),
         pytest.param((200, 50), id="200x50")]


class Pulse:
    """Wakes whoever waits at the next message the app processes."""

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] = []
        self.count = 0

    def __call__(self, _message: Message) -> None:
        self.count += 1
        waiters, self.waiters = self.waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    async def next(self) -> None:
        f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(f)
        await f


class TestApp(SmithersApp):
    """The real app, telling `until` about every message it processes (Textual's message hook)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.said: list[str] = []  # every notification, in order: never expires (a toast does, by the clock)
        self.pulse = Pulse()
        # Screens and widgets a test creates itself (app.open_run(...) from the test) start their
        # message pumps from the test's context: give it the hook too.
        message_hook.set(self.pulse)

    def notify(self, message: str, **kw: Any) -> None:
        self.said.append(str(message))
        super().notify(message, **kw)

    def on_load(self) -> None:
        # Runs in the app's own task before any screen or widget starts, so every message pump
        # created afterwards inherits the hook.
        message_hook.set(self.pulse)


def make_app(db: Path, project: Path, **kw: Any) -> TestApp:
    kw.setdefault("agent_override", "demo")
    kw.setdefault("clock", FrozenClock())
    kw.setdefault("new_id", ids("branch"))
    kw.setdefault("poll", 0.05)
    kw.setdefault("prefs", Prefs(project / ".prefs" / "app.json"))
    return TestApp(db, project=project, **kw)


async def until(pilot: Any, cond: Callable[[], Any], what: str = "condition") -> Any:
    """Let the app work until cond() holds, checking it again after each message the app processes."""
    app = pilot.app
    pulse: Pulse | None = getattr(app, "pulse", None)
    if os.environ.get("UNTIL_DEBUG"):
        print("until:", what, flush=True)
    while True:
        value = cond()
        if value:
            return value
        if pulse is None:  # an app made without make_app: yield to it and look again
            await asyncio.sleep(0)
            await pilot.pause()
            continue
        await pulse.next()


async def settle(pilot: Any) -> None:
    """Wait until the app has nothing left to do for now: every pending message handled, and the
    process idle (Textual's own measure, by CPU time, not a fixed delay)."""
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()


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


async def open_run(pilot: Any, app: Any, run_id: str, *, prompt: str = "later") -> Any:
    """Open a run's screen and wait until it is loaded. A waiting gate brings up its prompt:
    `prompt="later"` puts it off (esc), `"keep"` returns the prompt screen itself."""
    await until(pilot, lambda: app.host.ready.is_set(), "the database")
    app.open_run(run_id)
    return await run_shown(pilot, app, run_id, prompt=prompt)


async def run_shown(pilot: Any, app: Any, run_id: str, *, prompt: str = "later") -> Any:
    """Wait for the screen of `run_id` (opened by the app: a fork, a replay...) to be loaded and, if it
    runs here, to reach its gate or its end; its gate's prompt up if one waits; put the prompt off,
    or return it (`prompt="keep"`)."""
    from smithers_tui.screens.approval import ApprovalScreen
    from smithers_tui.screens.run import RunScreen

    screen = await until(pilot, lambda: next((s for s in reversed(app.screen_stack) if isinstance(s, RunScreen)
                                              and s.run_id == run_id), None), f"the screen of {run_id}")

    def settled() -> bool:
        if not screen.loaded:
            return False
        if app.host.executing(run_id) and screen.run is not None and screen.run.status == "running":
            return False  # still going here: wait for its gate or its end (the test workflows are quick)
        decided = {a.key for a in screen.approvals if a.decision}
        gates = [k for k, r in screen.model.live.items() if r.state == "waiting_approval"
                 and (run_id, *k) not in app.later and k not in decided]
        active = screen.run is not None and screen.run.status in ("running", "waiting")
        if gates and active:
            return isinstance(app.screen, ApprovalScreen) and app.screen.loaded
        return app.screen is screen

    await until(pilot, settled, f"the run {run_id} to load")
    if isinstance(app.screen, ApprovalScreen):
        if prompt == "keep":
            return app.screen
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the prompt put off")
    return screen


async def palette(pilot: Any, query: str, expect: str, key: str = "ctrl+p") -> None:
    """Open the command palette, type `query`, wait for the first hit to read `expect`, run it."""
    from textual.command import CommandList, CommandPalette

    app = pilot.app
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
    await pilot.press(*query)

    def first_hit() -> str:
        hits = app.screen.query(CommandList)
        if not hits or not hits.first().option_count:
            return ""
        option = hits.first().highlighted_option or hits.first().get_option_at_index(0)
        return str(option.prompt)

    await until(pilot, lambda: expect in first_hit(), f"the palette to offer {expect!r}")
    await pilot.press("enter")
