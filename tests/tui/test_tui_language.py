"""The app and the new steps, through Pilot: a select gate and a rank gate decided in the prompt, a
human task answered in a form generated from its model (a field that does not fit is marked and
nothing is sent), a sub-workflow's child run nested under its step, waits on a signal and a timer
shown in the tree, and spend against budget in the run's head."""
from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, OptionList

from engine.loader import load_target
from smithers_tui.screens.answer import AnswerScreen
from smithers_tui.screens.approval import ApprovalScreen
from smithers_tui.screens.run import RunScreen, budget_line
from smithers_tui.widgets.input_form import InputForm
from tests.tui.helpers import connect, make_app, ready, seed, until

LANG = '''
from pydantic import BaseModel, Field
from engine import (Approval, Budget, HumanTask, Sequence, Signal, Subflow, Task, Timer, workflow)


class Release(BaseModel):
    name: str = Field(description="what to call it")
    week: int


@workflow(name="choose")
def choose(ctx):
    return Sequence(
        Approval("pick", message="Which plan?", mode="select", options=["A", "B", "C"]),
        Approval("order", message="Order the fixes", mode="rank", options=["db", "ui", "docs"]),
        Task("done", run=lambda c: [c.output("pick").choice, c.output("order").ranking]),
    )


@workflow(name="ask")
def ask(ctx):
    return Sequence(HumanTask("release", prompt="Name the release", output=Release),
                    Task("done", run=lambda c: c.output("release").name.upper()))


@workflow(name="kid")
def kid(ctx):
    return Sequence(Task("k1", value=1), Signal("go"))


@workflow(name="nest", budget=Budget(tokens=500))
def nest(ctx):
    return Sequence(Task("first", value=0), Subflow("sub", kid), Timer("nap", seconds=3600))
'''


def lang_target(project: Path, name: str) -> str:
    return f"file:{project / '.smithers' / 'workflows' / 'lang.py'}:{name}"


async def seed_run(db: Path, project: Path, name: str, run_id: str) -> str:
    (project / ".smithers" / "workflows" / "lang.py").write_text(LANG)
    return await seed(db, project, run_id, where=lang_target(project, name))


async def run_status(db: Path, run_id: str) -> str:
    store = await connect(db)
    try:
        return str((await store.get_run(run_id)).status)
    finally:
        await store.close()


async def test_select_and_rank_gates_are_decided_in_the_prompt(db: Path, project: Path) -> None:
    assert await seed_run(db, project, "choose", "c1") == "waiting"
    app = make_app(db, project)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        app.open_run("c1")
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen) and app.screen.loaded, "the select prompt")
        ol = app.screen.query_one("#options", OptionList)
        assert ol.display and app.screen.focused is ol and ol.option_count == 3  # has_focus follows a message
        await pilot.press("down", "y")  # B
        await until(pilot, lambda: isinstance(app.screen, ApprovalScreen) and app.screen.node == "order"
                    and app.screen.loaded, "the rank prompt")
        ol = app.screen.query_one("#options", OptionList)
        assert [str(ol.get_option_at_index(i).prompt) for i in range(3)] == ["1. db", "2. ui", "3. docs"]
        await pilot.press("down", "down", "ctrl+up", "ctrl+up")  # docs to the top
        assert app.screen.options == ["docs", "db", "ui"]
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.view == "finished",
                    "the run to finish here")
        report = (await app.host.view.report(app.screen.run_id)).json_dict()
        done = next(n for n in report["nodes"] if n["id"] == "done")
        assert done["output"] == ["B", ["docs", "db", "ui"]]
        gates = {a["node_id"]: a for a in report["approvals"]}
        assert gates["pick"]["answer"] == "B" and gates["order"]["mode"] == "rank"


async def test_a_human_task_is_answered_in_a_form_made_from_its_model(db: Path, project: Path) -> None:
    assert await seed_run(db, project, "ask", "h1") == "waiting"
    app = make_app(db, project)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        app.open_run("h1")
        await until(pilot, lambda: isinstance(app.screen, AnswerScreen) and app.screen.loaded, "the answer form")
        form = app.screen.query_one(InputForm)
        assert set(form.kinds) == {"name", "week"} and form.kinds["week"][0] == "int"
        assert "Name the release" in str(app.screen.query_one("#message").render())
        app.screen.query_one("#field-name", Input).value = "oak"
        app.screen.query_one("#field-week", Input).value = "soon"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: form.error_count() == 1, "the bad field to be marked")
        assert "not valid JSON" in str(app.screen.query_one("#error-week").render())
        store = await connect(db)
        try:
            assert (await store.approvals("h1", open_only=False))[0].decision is None  # nothing was sent
        finally:
            await store.close()
        app.screen.query_one("#field-week", Input).value = "23"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.view == "finished",
                    "the run to finish here")
        report = (await app.host.view.report(app.screen.run_id)).json_dict()
        done = next(n for n in report["nodes"] if n["id"] == "done")
        release = next(n for n in report["nodes"] if n["id"] == "release")
        assert done["output"] == "OAK" and release["output"] == {"name": "oak", "week": 23}


async def test_a_subflow_nests_its_child_runs_rows_and_waits_and_budget_show(db: Path, project: Path) -> None:
    (project / ".smithers" / "workflows" / "lang.py").write_text(LANG)
    app = make_app(db, project)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot, app)
        wf, tgt = load_target(lang_target(project, "nest"))
        rid = await app.host.start(wf, tgt, None, demo=False, run_id="n1")
        app.open_run(rid)

        def labels() -> list[str]:
            if not isinstance(app.screen, RunScreen) or not app.screen.query("#tree"):
                return []
            return [str(r.label) for r in app.screen.query_one("#tree")._rows]

        await until(pilot, lambda: any("waits for signal 'go'" in t for t in labels()), "the child's signal row")
        rows = labels()
        sub = next(i for i, t in enumerate(rows) if t.startswith("● ↳ sub") or "↳ sub" in t)
        assert "run n1.sub" in rows[sub]
        assert any("k1" in t for t in rows[sub + 1:]), rows  # the child's steps under its step
        tree = app.screen.query_one("#tree")
        child_rows = [r for r in tree._rows if r.path.startswith(next(r.path for r in tree._rows if "↳ sub" in str(r.label)) + "/")]
        assert child_rows and all(r.key is None for r in child_rows)
        head = str(app.screen.query_one("#run-head").render())
        assert "budget 0/500 tokens" in head

        await app.host.engine.signal("n1.sub", "go", None)
        await until(pilot, lambda: any("sleeps until" in t for t in labels()), "the timer row")
        report = (await app.host.view.report("n1")).json_dict()
        node = next(n for n in report["nodes"] if n["id"] == "nap")
        assert node["state"] == "waiting" and node["wait"]["due"] > 0
        assert await run_status(db, "n1.sub") == "finished"
        await app.host.cancel("n1")
        await until(pilot, lambda: not app.host.executing("n1"), "the cancel")


def test_budget_line() -> None:
    line = budget_line([{"scope": "<run>", "tokens": 200, "usd": None, "spent_tokens": 72, "spent_usd": 0.0},
                        {"scope": "review", "tokens": None, "usd": 1.0, "spent_tokens": 9, "spent_usd": 1.25}])
    assert line == "budget 72/200 tokens  ·  review $1.25/$1.00 (spent)"
