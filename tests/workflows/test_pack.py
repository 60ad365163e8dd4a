"""Every other workflow of the pack end to end at least once: the demo agent where the model's
answers don't matter, the fake model where they do; `smithers init`; discovery and prompts."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from engine.runtime import Engine
from engine.store import Store
from tests.support import clean_env, events_of
from tests.workflows.conftest import (PYTEST, Script, approve, git, outputs, run, say, states, use_fake_model,
                                      worktrees, write)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def demo(db_path: Path):
    """(Engine, Store) whose every agent step uses the demo agent (like `--agent demo`)."""
    store = await Store.open(db_path)
    eng = Engine(store, poll_interval=0.05, agent_override="demo")
    try:
        yield eng, store
    finally:
        await eng.close()
        await store.close()


def test_the_pack_is_discovered_with_inputs_descriptions_and_prompts():
    from workflows import builtin
    from workflows._support import PROMPTS, PROMPT_DIR

    names = {"implement", "review", "plan", "research", "research-plan-implement", "ralph", "debug",
             "improve-test-coverage", "ticket-create", "kanban"}
    found = builtin()
    assert names <= set(found)
    for name in names:
        wf, target = found[name]
        assert wf.input is not None and wf.description and "\n" not in wf.description, name
        assert target.startswith("module:workflows.")
    assert {p.stem for p in PROMPT_DIR.glob("*.md")} == set(PROMPTS)
    assert "{" not in PROMPTS["kanban-ticket"].replace("{path}", "").replace("{title}", "").replace("{body}", "")


def test_plan_through_the_cli_with_the_demo_agent(smithers, project):
    done = smithers("run", "plan", "--agent", "demo", "--input", json.dumps({"goal": "add a subtract function"}),
                    cwd=project)
    assert done.returncode == 0, done.stderr
    shown = smithers.json("show", _last_run(smithers, project), cwd=project)
    plan = next(n for n in shown["nodes"] if n["id"] == "plan")["output"]
    assert plan["summary"] and plan["steps"] and plan["steps"][0]["title"]
    bad = smithers("run", "plan", "--agent", "demo", "--input", json.dumps({"goal": "  "}), cwd=project)
    assert bad.returncode == 4 and "say what the plan is for" in bad.stderr


async def test_research_returns_a_structured_report(demo, project):
    eng, store = demo
    status, ex = await run(eng, "research", {"question": "how is calc tested?"}, project)
    assert status == "finished"
    report = (await outputs(store, ex.run_id))[("research", 0)]
    assert set(report) == {"summary", "findings", "open_questions", "recommendations"}
    prompt = [e for e in await events_of(store, ex.run_id, "agent") if e.data.get("kind") == "prompt"][0]
    assert "how is calc tested?" in prompt.data["text"]


async def test_review_runs_reviewers_in_parallel_over_the_uncommitted_diff(engine, project, llm, script: Script):
    eng, store = engine
    use_fake_model(project, llm)
    (project / "calc.py").write_text((project / "calc.py").read_text().replace("a - b", "a + b"))
    (project / "NEW.md").write_text("a new file\n")
    script.on("review:correctness", None, approve)
    script.on("review:security", None, lambda r, t, p: say({
        "approved": False, "feedback": "validate input",
        "issues": [{"severity": "minor", "description": "no type check"},
                   {"severity": "critical", "description": "eval on input", "file": "calc.py", "line": 2}]}))
    status, ex = await run(eng, "review", {"reviewers": ["correctness", "security"],
                                           "context": "add() must add"}, project)
    assert status == "finished", ex.error
    out = await outputs(store, ex.run_id)
    assert out[("changes", 0)]["changed_files"] == ["NEW.md", "calc.py"]
    v = out[("verdict", 0)]
    assert v["approved"] is False and v["reviewed"] is True
    assert v["approvals"] == {"correctness": True, "security": False}
    assert [i["severity"] for i in v["issues"]] == ["critical", "minor"]
    assert "[critical] eval on input (calc.py:2)" in v["text"]
    for call in script.prompts("review:correctness") + script.prompts("review:security"):
        assert "+    return a + b" in call.prompt and "+a new file" in call.prompt and "add() must add" in call.prompt


async def test_review_with_nothing_to_review_skips_the_reviewers(demo, project):
    eng, store = demo
    status, ex = await run(eng, "review", {}, project)
    assert status == "finished"
    st = await states(store, ex.run_id)
    assert {st[k] for k in st if k[0].startswith("review-")} == {"skipped"}
    v = (await outputs(store, ex.run_id))[("verdict", 0)]
    assert v["reviewed"] is False and "nothing to review" in v["text"]
    status, ex = await run(eng, "review", {"ref": "no-such-branch"}, project)
    assert status == "failed" and "unknown ref 'no-such-branch'" in ex.error


async def test_debug_and_improve_test_coverage_run_the_loop(demo, project):
    eng, store = demo
    status, ex = await run(eng, "debug", {"problem": "add(2, 3) returns -1", "max_rounds": 1,
                                          "test_command": f"{PYTEST} tests/test_add.py"}, project)
    assert status == "finished"
    out = await outputs(store, ex.run_id)
    # the demo agent changes nothing, so the real test still fails: the result says so
    assert out[("debug-check", 0)]["passed"] is False
    assert out[("debug-result", 0)]["status"] == "out_of_rounds"
    prompt = [e for e in await events_of(store, ex.run_id, "agent") if e.data.get("kind") == "prompt"][0]
    assert "add(2, 3) returns -1" in prompt.data["text"] and "root cause" in prompt.data["text"]

    status, ex = await run(eng, "improve-test-coverage", {"target": "calc.py", "test_command": "true"}, project)
    assert status == "finished"
    out = await outputs(store, ex.run_id)
    assert out[("coverage-result", 0)]["status"] == "done" and out[("coverage-result", 0)]["rounds"] == 1
    assert ("coverage-review-tests", 0) in out
    assert worktrees(project) == [str(project)]


async def test_ralph_repeats_until_the_agent_is_done_a_command_passes_or_the_count(demo, project):
    eng, store = demo
    status, ex = await run(eng, "ralph", {"prompt": "tidy up"}, project)
    assert status == "finished"
    r = (await outputs(store, ex.run_id))[("ralph-result", 0)]
    assert r["iterations"] == 1 and r["stopped_because"] == "agent_done"

    until = "test -f marker || { touch marker; exit 1; }"
    status, ex = await run(eng, "ralph", {"prompt": "tidy up", "until_command": until, "stop_when_done": False},
                           project)
    assert status == "finished"
    out = await outputs(store, ex.run_id)
    r = out[("ralph-result", 0)]
    assert r["iterations"] == 2 and r["stopped_because"] == "condition_passed"
    assert [out[("ralph-condition", i)]["passed"] for i in (0, 1)] == [False, True]
    assert r["changed_files"] == ["marker"] and git(project, "show", f"{r['branch']}:marker") == ""

    status, ex = await run(eng, "ralph", {"prompt": "tidy up", "until_command": "false", "max_iterations": 3},
                           project)
    r = (await outputs(store, ex.run_id))[("ralph-result", 0)]
    assert r["iterations"] == 3 and r["stopped_because"] == "max_iterations"
    assert worktrees(project) == [str(project)]


async def test_ticket_create_writes_ticket_files_kanban_can_read(engine, project, llm, script: Script):
    eng, store = engine
    use_fake_model(project, llm)
    drafts = {"tickets": [
        {"title": "Fix add", "body": "add() subtracts (calc.py).", "acceptance": ["add(2, 3) == 5"]},
        {"title": "Implement mul", "body": "mul() returns None.", "acceptance": []}]}
    script.on("tickets", None, lambda r, t, p: say(drafts))
    write(project, {".smithers/tickets/fix-add.md": "# Someone else's ticket\n"})
    status, ex = await run(eng, "ticket-create", {"description": "fix calc", "max_tickets": 5}, project)
    assert status == "finished", ex.error
    made = (await outputs(store, ex.run_id))[("write", 0)]
    assert made["files"] == [".smithers/tickets/fix-add-2.md", ".smithers/tickets/implement-mul.md"]
    assert (project / ".smithers/tickets/fix-add.md").read_text() == "# Someone else's ticket\n"  # not overwritten
    text = (project / ".smithers/tickets/fix-add-2.md").read_text()
    assert text.startswith("# Fix add\n") and "- add(2, 3) == 5" in text
    assert "fix calc" in script.prompts("tickets")[0].prompt

    from workflows.kanban import parse_ticket

    assert parse_ticket(text, Path("fix-add-2.md"))[0] == "Fix add"


async def test_research_plan_implement_waits_for_the_plan_then_implements(demo, project):
    eng, store = demo
    data = {"goal": "make add() add", "test_command": f"{PYTEST} tests/test_add.py", "max_rounds": 1}
    status, ex = await run(eng, "research-plan-implement", data, project)
    assert status == "waiting"
    st = await states(store, ex.run_id)
    assert st[("research", 0)] == st[("plan", 0)] == "done" and st[("approve-plan", 0)] == "waiting_approval"
    assert ("implement", 0) not in st or st[("implement", 0)] == "pending"
    await eng.decide(ex.run_id, "approve-plan", 0, True, by="tester")
    ex = await eng.resume(ex.run_id)
    assert await ex.execute() == "finished", ex.error
    out = await outputs(store, ex.run_id)
    assert out[("implement-result", 0)]["rounds"] == 1
    prompt = [e for e in await events_of(store, ex.run_id, "agent")
              if e.node_id == "implement-implement" and e.data.get("kind") == "prompt"][0]
    assert "The approved plan" in prompt.data["text"] and "What research found" in prompt.data["text"]

    status, ex = await run(eng, "research-plan-implement", data, project)
    await eng.decide(ex.run_id, "approve-plan", 0, False, by="tester", note="wrong approach")
    ex = await eng.resume(ex.run_id)
    assert await ex.execute() == "failed" and "denied by tester" in ex.error
    assert ("implement-implement", 0) not in await states(store, ex.run_id)


# -- smithers init ----------------------------------------------------------------------------------

def test_init_creates_config_tickets_and_is_idempotent(project: Path):
    from engine.config import load_settings
    from smithers_tui.init import init_project

    text = init_project(project)
    assert "Created .smithers/config.toml" in text and ".smithers/tickets/example.md" in text
    assert "smithers run kanban" in text and "Next:" in text and "git init" not in text
    cfg = (project / ".smithers/config.toml").read_text()
    assert tomllib.loads(cfg) == {} and "[agents.implementer]" in cfg  # all commented out, and valid
    assert load_settings(project).agents == {}
    assert ".worktrees/" in (project / ".git/info/exclude").read_text()
    assert "smithers.db" in (project / ".smithers/.gitignore").read_text()

    (project / ".smithers/config.toml").write_text('[agents.default]\nmodel = "openai/gpt-4.1"\n')
    again = init_project(project)
    assert again.startswith("Nothing to do")
    assert (project / ".smithers/config.toml").read_text().startswith("[agents.default]")  # never overwritten
    assert (project / ".git/info/exclude").read_text().count(".worktrees/") == 1
    (project / ".smithers/tickets/example.md").unlink()
    (project / ".smithers/tickets/mine.md").write_text("# Mine\n")
    init_project(project)
    assert not (project / ".smithers/tickets/example.md").exists()  # tickets exist: no example added back


def test_init_outside_git_says_to_make_a_repository(tmp_path: Path):
    from smithers_tui.init import init_project

    text = init_project(tmp_path)
    assert "git init" in text and (tmp_path / ".smithers/tickets/example.md").is_file()
    with pytest.raises(FileNotFoundError):
        init_project(tmp_path / "missing")


def test_init_then_kanban_with_the_demo_agent(smithers, project: Path):
    """The first-use path: init, commit, run kanban on the example ticket."""
    from smithers_tui.init import init_project

    init_project(project)
    git(project, "add", ".smithers")
    git(project, "commit", "-qm", "smithers init")
    done = smithers("run", "kanban", "--agent", "demo", "--input", json.dumps({"test_command": "true"}),
                    cwd=project, env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = smithers.json("show", _last_run(smithers, project), cwd=project)["nodes"]
    summary = next(n for n in rows if n["id"] == "summary")["output"]
    assert [t["slug"] for t in summary["tickets"]] == ["example"]
    assert summary["tickets"][0]["status"] == "done" and summary["tickets"][0]["branch"] == "ticket/example"
    assert git(project, "worktree", "list").count("\n") == 1


def _last_run(smithers, project: Path) -> str:
    return smithers.json("ps", cwd=project)[0]["run_id"]
