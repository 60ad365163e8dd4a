"""Launcher: workflows with descriptions, a form from the input model with validation messages,
the demo agent offered when no model is configured, the run started here and opened."""
from __future__ import annotations

from pathlib import Path

from textual import events
from textual.widgets import Input, OptionList, Static, Checkbox

from smithers_tui.screens.approval import ApprovalScreen
from smithers_tui.screens.launcher import LauncherScreen
from smithers_tui.screens.run import RunScreen
from tests.tui.helpers import ready, make_app, run_row, until


async def test_launch_validates_the_form_then_starts_and_opens_the_run(db: Path, project: Path) -> None:
    app = make_app(db, project, agent_override=None)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.action_new_run("flow")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen) and app.screen.loaded and app.screen.form_for, "launcher")
        screen = app.screen
        names = [str(screen.query_one(OptionList).get_option_at_index(i).id)
                 for i in range(screen.query_one(OptionList).option_count)]
        assert "flow" in names and "hello" in names  # project and built-in workflows
        note = str(screen.query_one("#agent-note", Static).render())
        assert "No model is configured" in note
        assert screen.query_one("#demo", Checkbox).value is True  # the demo agent is offered
        rounds = screen.query_one("#field-rounds", Input)
        rounds.value = "0"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "greater than or equal to 1" in str(screen.query_one("#error-rounds", Static).render()),
                    "the field's message")
        assert isinstance(app.screen, LauncherScreen)  # nothing started
        rounds.value = "1"
        screen.query_one("#field-topic", Input).value = "launch"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, (RunScreen, ApprovalScreen)), "the run to open")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the gate to ask")
        run_id = app.screen.run_id
        await pilot.press("y")
        await until(pilot, lambda: not app.host.executing(run_id), "the run to end")
        row = await run_row(db, run_id)
        assert row["status"] == "finished"
        assert '"topic":"launch"' in row["input"]
        notes = [n for n in app.host.agents.buffers if n[1] == "notes"]
        assert notes, "the demo agent streamed the notes step"


async def test_workflow_without_input_says_so(db: Path, project: Path) -> None:
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.action_new_run("quick")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen) and app.screen.loaded and app.screen.form_for, "launcher")
        assert "takes no input" in str(app.screen.query_one(".empty", Static).render())
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run")
        await until(pilot, lambda: app.screen.run and app.screen.run.status == "finished", "finished")


NOTES = '''
from pydantic import BaseModel
from engine import Task, workflow


class NotesInput(BaseModel):
    message: str
    count: int = 1


@workflow(name="notes", input=NotesInput)
def notes(ctx):
    """Writes a note."""
    return Task("write", value=ctx.input.message)
'''


async def test_typing_right_after_n_down_down_tab_goes_to_the_first_field(db: Path, project: Path) -> None:
    """Issue 13: letters typed into the form never act as the app's keys (a opened the inbox, q quit),
    and tab goes from the list to the first field, not to the form's scrolling container."""
    (project / ".smithers" / "workflows" / "notes.py").write_text(NOTES)
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        await pilot.press("n", "down", "down", "tab", *"a quick question", "space", "q")
        screen = app.screen
        assert isinstance(screen, LauncherScreen) and app.is_running  # q did not quit, a did not open the inbox
        assert screen.chosen == "notes"
        field = screen.query_one("#field-message", Input)
        assert app.focused is field and field.value == "a quick question q"


async def test_keys_arriving_at_once_as_a_terminal_sends_them_all_reach_the_first_field(db: Path,
                                                                                      project: Path) -> None:
    """A terminal delivers `n ↓ ↓ tab` and the sentence in one read: the form of the workflow chosen is
    still being built when the letters arrive; they are kept for its first field, in order."""
    (project / ".smithers" / "workflows" / "notes.py").write_text(NOTES)
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        for key in ["n", "down", "down", "tab", *"a quick question", "space", "q"]:  # no waiting between them
            char = " " if key == "space" else key if len(key) == 1 else None
            app.post_message(events.Key(key, char))
        screen = await until(pilot, lambda: app.screen if isinstance(app.screen, LauncherScreen) else None, "new run")
        field = await until(pilot, lambda: next(iter(screen.query("#field-message").results(Input)), None),
                            "the form of notes")
        await until(pilot, lambda: field.value == "a quick question q", "the sentence in the field")
        assert app.is_running and app.screen is screen and screen.chosen == "notes" and app.focused is field


async def test_a_broken_project_workflow_is_listed_with_its_error_and_files_are_read_again(db: Path,
                                                                                         project: Path) -> None:
    folder = project / ".smithers" / "workflows"
    (folder / "broken.py").write_text("from engine import workflow\n\n@workflow(name='broken'\ndef x(ctx):\n    pass\n")
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.action_new_run()
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen) and app.screen.loaded and app.screen.form_for, "launcher")
        screen = app.screen
        broken = screen.listing.get("broken")
        assert broken is not None and broken.wf is None and "SyntaxError" in (broken.error or "")
        assert "line" in broken.error  # where in the file
        ol = screen.query_one(OptionList)
        ol.highlighted = [o.id for o in ol._options].index("broken")
        await until(pilot, lambda: screen.form_for == "broken", "the broken entry chosen")
        assert "does not load" in str(screen.query_one("#wf-title", Static).render())
        await pilot.press("ctrl+s")
        await until(pilot, lambda: any("loads" in m for m in app.said), "refused")
        (folder / "notes.py").write_text(NOTES)  # a new file while the screen is open
        (folder / "broken.py").unlink()
        await until(pilot, lambda: screen.listing.get("notes") is not None and screen.listing.get("broken") is None,
                    "the list read again")
        assert "notes" in [o.id for o in screen.query_one(OptionList)._options]


async def test_launch_checks_say_what_would_fail_and_start_nothing(db: Path, project: Path) -> None:
    """Kanban with no tickets and outside a repository, implement outside a repository: said before
    starting, with what to do; nothing is started. A workflow without agent steps has no model box."""
    app = make_app(db, project)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        app.action_new_run("kanban")
        await until(pilot, lambda: isinstance(app.screen, LauncherScreen) and app.screen.checked_for == "kanban",
                    "the checks")
        screen = app.screen
        text = str(screen.query_one("#checks", Static).render())
        assert "not a git repository" in text and "git init" in text
        assert "no tickets in .smithers/tickets/" in text
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "not started" in str(screen.query_one("#start-status", Static).render()),
                    "not started")
        assert isinstance(app.screen, LauncherScreen) and not app.host.tasks
        assert (await app.host.reader.list_runs()) == []
        ol = screen.query_one(OptionList)
        ol.highlighted = [o.id for o in ol._options].index("hello")
        await until(pilot, lambda: screen.checked_for == "hello", "hello checked")
        assert screen.problems == [] and not screen.query_one("#agent-box").display
        ol.highlighted = [o.id for o in ol._options].index("implement")
        await until(pilot, lambda: screen.checked_for == "implement", "implement checked")
        assert any("not a git repository" in p for p in screen.problems)
        assert screen.query_one("#agent-box").display  # it has agent steps
