"""`python -m smithers_tui.screenshots DIR` (make screenshots): drive the real app through real
runs (a temporary project and database, the demo agent) and write one SVG per screen to DIR."""
from __future__ import annotations

import asyncio
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Callable

SIZE = (120, 36)

RELEASE = '''
"""release: plan, build in rounds, three reviewers in parallel, a human gate, release notes."""
from pydantic import BaseModel, Field
from engine import Approval, Loop, Parallel, Sequence, Task, workflow


class ReleaseInput(BaseModel):
    version: str = Field("1.4.0", description="the version to release")
    rounds: int = Field(3, ge=1, le=10, description="build rounds before review")
    notes_style: str = Field("short", description="how the release notes read")


class Build(BaseModel):
    round: int
    passed: bool


class Review(BaseModel):
    approved: bool
    feedback: str


def build(ctx):
    prev = ctx.latest("build")
    n = (prev.round if prev else 0) + 1
    ctx.log(f"building round {n}")
    return Build(round=n, passed=n >= ctx.input.rounds)


@workflow(name="release", input=ReleaseInput)
def release(ctx):
    """Build in rounds until green, three parallel reviews, a human gate, then release notes."""
    last = ctx.latest("build")
    return Sequence(
        Task("plan", agent="planner", prompt=f"Plan the release of {ctx.input.version}"),
        Loop("builds", Task("build", run=build, output=Build), until=last is not None and last.passed,
             max_iterations=10),
        Parallel(*[Task(f"review-{lens}", agent="reviewer", output=Review,
                        prompt=f"Review release {ctx.input.version} for {lens}")
                   for lens in ("correctness", "security", "docs")]),
        Approval("ship", message=f"Ship {ctx.input.version} to production?"),
        Task("notes", agent="default", prompt=f"Write {ctx.input.notes_style} release notes for {ctx.input.version}"),
    )
'''


async def until(pilot: Any, cond: Callable[[], Any]) -> Any:
    """Let the app work until cond() holds (checked again after each pause for the app to be idle)."""
    for _ in range(2000):
        value = cond()
        if value:
            return value
        await pilot.pause()
    raise RuntimeError("the app did not get there")


async def seed(db: Path, project: Path) -> None:
    """Runs made before the app opens, as `smithers run` would: one finished, one at its gate."""
    from engine.loader import load_target
    from engine.runtime import Engine
    from engine.store import Store

    store = await Store.open(db)
    try:
        eng = Engine(store, agent_override="demo")
        from workflows import builtin

        wf, target = builtin()["hello"]
        ex = await eng.start(wf, target, {"name": "Ada", "times": 4}, workdir=project)
        await ex.execute()
        wf, target = load_target(f"file:{project / '.smithers' / 'workflows' / 'release.py'}:release")
        ex = await eng.start(wf, target, {"version": "1.3.2", "rounds": 2}, workdir=project)
        await ex.execute(stop_when_waiting=True)
        await eng.close()
    finally:
        await store.close()


TICKETS = {
    "login-form.md": "# Login form\n\nA login form with e-mail and password.\n",
    "logout.md": "# Logout button\n\nA logout button in the header.\n",
    "signup.md": "---\ntest_command: \"false\"\n---\n# Sign-up page\n\nA sign-up page.\n",
}


def kanban_repo(project: Path) -> None:
    """The project as a git repository with three tickets, for the board (run last)."""
    import os
    import subprocess

    env = {**os.environ, "GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@example.invalid",
           "GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@example.invalid"}
    tickets = project / ".smithers" / "tickets"
    tickets.mkdir(parents=True, exist_ok=True)
    for name, text in TICKETS.items():
        (tickets / name).write_text(text)
    (project / ".gitignore").write_text(".smithers/\n.worktrees/\n")
    (project / "README.md").write_text("demo\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, env=env)


async def shoot(out: Path) -> list[str]:
    from .app import SmithersApp
    from .prefs import Prefs
    from .screens.agents import AgentsScreen
    from .screens.approval import ApprovalScreen
    from .screens.board import BoardScreen
    from .screens.fork import ForkScreen
    from .screens.help import HelpScreen
    from .screens.inbox import InboxScreen
    from .screens.launcher import LauncherScreen
    from .screens.run import RunScreen
    from .screens.runs import RunsScreen
    from .widgets.inspector import Inspector

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with tempfile.TemporaryDirectory(prefix="smithers-shots-") as tmp:
        project = Path(tmp)
        (project / ".smithers" / "workflows").mkdir(parents=True)
        (project / ".smithers" / "workflows" / "release.py").write_text(textwrap.dedent(RELEASE).lstrip())
        db = project / ".smithers" / "smithers.db"
        kanban_repo(project)
        await seed(db, project)
        app = SmithersApp(db, project=project, agent_override="demo", prefs=Prefs(project / "prefs.json"))

        def save(name: str) -> None:
            app.save_screenshot(f"{name}.svg", path=str(out))
            written.append(f"{name}.svg")

        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
            await pilot.pause()
            save("runs")
            app.action_new_run("release")
            await until(pilot, lambda: isinstance(app.screen, LauncherScreen) and app.screen.checked_for == "release")
            await pilot.pause()
            save("launcher")
            await pilot.press("ctrl+s")
            await until(pilot, lambda: isinstance(app.screen, ApprovalScreen) and app.screen.loaded)
            await pilot.pause()
            save("approval")
            await pilot.press("escape")
            run = app.screen
            assert isinstance(run, RunScreen)
            await until(pilot, lambda: run.loaded and app.screen is run)
            run.step_tree.select_key(("review-security", 0))
            await until(pilot, lambda: run.query_one(Inspector).shown_for == ("review-security", 0))
            await pilot.pause()
            save("run")
            for _ in range(5):
                await pilot.press("left_square_bracket")
            await until(pilot, lambda: run.past is not None and run.model.view_frame == run.model.last - 5)
            await until(pilot, lambda: run.selected_key() is None
                        or run.query_one(Inspector).shown_for == run.selected_key())
            await pilot.pause()
            save("run-past")
            await pilot.press("f")
            fork = await until(pilot, lambda: isinstance(app.screen, ForkScreen) and app.screen)
            fork.query_one("TextArea").cursor_blink = False
            await pilot.pause()
            save("fork")
            await pilot.press("escape")
            await pilot.press("end")
            await pilot.press("g")
            await until(pilot, lambda: isinstance(app.screen, AgentsScreen) and app.screen.loaded
                        and len(app.screen.panes) >= 3 and all(p.seen for p in app.screen.panes.values()))
            await pilot.pause()
            save("agents")
            await pilot.press("escape")
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.pause()
            save("help")
            await pilot.press("escape")
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, InboxScreen) and app.screen.loaded)
            await pilot.pause()
            save("inbox")
            await pilot.press("escape")
            wf, target = (await app.workflows())["kanban"]
            kb = await app.host.start(wf, target, {"test_command": "true", "max_rounds": 2,
                                                   "reviewers": ["correctness"]}, demo=True)
            await until(pilot, lambda: not app.host.executing(kb))
            app.open_run(kb)
            await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded
                        and app.screen.run_id == kb)
            await pilot.press("b")
            await until(pilot, lambda: isinstance(app.screen, BoardScreen) and app.screen.loaded)
            await pilot.pause()
            save("board")
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "screenshots")
    written = asyncio.run(shoot(out))
    print(f"wrote {', '.join(written)} to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
