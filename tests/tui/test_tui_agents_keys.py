"""Agent panes, help (? and F1), the command palette, remapped keys, and quitting with runs active."""
from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable

from engine.loader import load_target
from smithers_tui.screens.agents import AgentsScreen
from smithers_tui.screens.approval import ApprovalScreen
from smithers_tui.screens.confirm import ConfirmScreen
from smithers_tui.screens.help import HelpScreen
from smithers_tui.screens.launcher import LauncherScreen
from smithers_tui.screens.run import RunScreen
from smithers_tui.widgets.agent_pane import AgentPane
from tests.tui.helpers import make_app, palette, ready, run_row, seed, target, until


async def test_agent_panes_stream_each_agent_in_a_grid(db: Path, project: Path) -> None:
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        wf, tgt = load_target(target(project, "agents"))
        rid = await app.host.start(wf, tgt, None, demo=True, run_id="ag")
        app.open_run(rid)
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded, "the run")
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, AgentsScreen) and len(app.screen.panes) == 2, "two panes")
        screen = app.screen
        await until(pilot, lambda: all(p.seen > 0 for p in screen.panes.values()), "the panes to fill")
        texts = {p.key[1]: p.text() for p in screen.panes.values()}
        assert "[demo agent]" in texts["alpha"] and "alpha" in texts["alpha"]
        assert "beta" in texts["beta"]
        assert screen.query_one("#grid").styles.grid_size_columns == 2
        first = app.focused
        assert isinstance(first, AgentPane)
        await pilot.press("tab")
        assert isinstance(app.focused, AgentPane) and app.focused is not first
        await pilot.press("z")
        assert screen.maximized is app.focused
        await pilot.press("escape")
        assert screen.maximized is None
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "back to the step")
        assert app.screen.selected_key() in (("alpha", 0), ("beta", 0))


async def test_help_lists_every_key_of_the_screen(db: Path, project: Path) -> None:
    await seed(db, project, "r1", name="quick")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        rows = {r[2]: r for r in app.screen.rows}
        assert {"runs.new", "runs.filter", "runs.open", "quit", "help", "inbox"} <= set(rows)
        await pilot.press("escape")
        app.open_run("r1")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded, "the run")
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        ids = {r[2] for r in app.screen.rows}
        assert {"run.fork", "run.rewind", "run.replay", "run.earlier", "run.later", "run.live", "run.agents"} <= ids
        assert app.screen.query_one(DataTable).row_count == len(app.screen.rows)
        await pilot.press("f1")  # toggles
        assert isinstance(app.screen, RunScreen)


async def test_palette_offers_what_fits_and_runs_it(db: Path, project: Path) -> None:
    await seed(db, project, "w1")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        await palette(pilot, "launch flow", "Launch flow")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen) and app.screen.loaded, "the launcher")
        assert app.screen.chosen == "flow"
        await pilot.press("escape")
        await palette(pilot, "approve ship", "Approve ship", key="colon")
        await until(pilot, lambda: not app.host.executing("w1") and any("approved" in m
                                                                         for m in app.said), "approved")
        await until(pilot, lambda: not app.host.executing("w1"), "the run to finish here")
        assert (await run_row(db, "w1"))["status"] == "finished"


async def test_keys_remapped_in_the_config(db: Path, project: Path) -> None:
    (project / ".smithers" / "config.toml").write_text('[keys]\n"runs.new" = "x"\nhelp = "h"\n')
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        await until(pilot, lambda: app._keymap, "the keymap")
        await pilot.press("h")
        assert isinstance(app.screen, HelpScreen)
        assert any(r[2] == "runs.new" and r[0] == "x" for r in app.screen.rows)
        await pilot.press("escape")
        await pilot.press("x")
        assert isinstance(app.screen, LauncherScreen)


async def test_quit_with_an_active_run_asks_and_leaves_it_resumable(db: Path, project: Path) -> None:
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        wf, tgt = load_target(target(project))
        await app.host.start(wf, tgt, None, demo=True, run_id="live")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen) or app.host.executing("live"), "running")
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen) and app.is_running
        await pilot.press("q")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, "the app to quit")
    row = await run_row(db, "live")
    assert row["status"] in ("running", "waiting") and row["owner_id"] is None  # resumable, not cancelled


async def test_help_puts_the_screens_keys_first_without_duplicates_or_internal_names(db: Path,
                                                                                     project: Path) -> None:
    await seed(db, project, "r1", name="quick")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        await pilot.press("question_mark")
        rows = app.screen.rows
        assert rows[0][3] == "screen" and rows[0][2].startswith("runs.")  # the screen's own keys come first
        keys = [r[0] for r in rows]
        assert keys.count("a") == 1 and keys.count("q") == 1  # no key listed twice
        assert all(r[2] != "help_quit" and r[1] != "help_quit" for r in rows)
        assert not any(r[1].lower().startswith(("page left", "page right", "scroll")) for r in rows)
        await pilot.press("escape")
        app.open_run("r1")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded, "the run")
        await pilot.press("question_mark")
        ids = [r[2] for r in app.screen.rows]
        named = [i for i in ids if i]
        assert ids.index("run.fork") < ids.index("help") and len(named) == len(set(named))
        assert {"run.next_failure", "run.search", "run.axis", "run.earlier10"} <= set(ids)


async def test_palette_lists_keys_once_offers_what_applies_and_shows_its_key(db: Path, project: Path) -> None:
    from smithers_tui.screens.palette import SmithersCommands

    (project / ".smithers" / "workflows" / "bad.py").write_text(
        "from engine import Task, workflow\n\ndef boom(ctx):\n    raise RuntimeError('no')\n\n"
        "@workflow(name='bad')\ndef bad(ctx):\n    return Task('x', run=boom, retries=0)\n")
    await seed(db, project, "r1", name="quick")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        from engine.loader import load_target

        wf, tgt = load_target(str(project / ".smithers" / "workflows" / "bad.py"))
        rid = await app.host.start(wf, tgt, None, demo=True, run_id="failed-run")
        await until(pilot, lambda: not app.host.executing(rid), "the run to fail")
        app.open_run(rid)
        screen = await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded
                             and app.screen.run.status == "failed" and app.screen, "the failed run")
        provider = SmithersCommands(screen)
        await provider.startup()
        titles = [c[0] for c in provider.commands]
        assert titles.count("Keys") == 1
        assert not any(t.startswith("Cancel") for t in titles)  # a failed run cannot be cancelled
        assert "Resume this run" in titles
        fork = next(c for c in provider.commands if c[0].startswith("Fork from frame"))
        assert fork[3] == "f"  # shown beside the command
        system = [c.title for c in app.get_system_commands(screen)]
        assert "Keys" not in system and "Theme" in system


async def test_the_theme_is_kept_across_restarts(db: Path, project: Path) -> None:
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.theme = "nord"
        await until(pilot, lambda: app.prefs.get("theme") == "nord", "saved")
    again = make_app(db, project, prefs=type(app.prefs)(app.prefs.path))
    async with again.run_test(size=(120, 36)) as pilot:
        await ready(pilot, again)
        assert again.theme == "nord"
