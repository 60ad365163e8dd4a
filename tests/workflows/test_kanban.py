"""kanban end to end: real git, real test subprocesses, agents through litellm against the fake server
(they edit files with write_file/edit_file tool calls, then return their structured answers)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflows.conftest import (PYTEST, Script, approve, edit, edits, git, outputs, run, run_tests, say,
                                      use_fake_model, worktrees, write)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # litellm's own pydantic use

FIX_ADD = edit("calc.py", "return a - b", "return a + b")
FIX_MUL = edit("calc.py", "return None", "return a * b")
FIX_GREET = edit("calc.py", 'return "hi"', 'return f"hello, {name}"')


def ticket(title: str, body: str, test: str | None = None) -> str:
    front = f"---\ntest_command: {PYTEST} {test}\n---\n" if test else ""
    return f"{front}# {title}\n\n{body}\n"


def add_tickets(root: Path, tickets: dict[str, str]) -> None:
    write(root, {f".smithers/tickets/{name}.md": text for name, text in tickets.items()})


def three_tickets(root: Path) -> None:
    add_tickets(root, {
        "add": ticket("Fix add", "add() subtracts; it must add.", "tests/test_add.py"),
        "mul": ticket("Implement mul", "mul() returns None; it must multiply.", "tests/test_mul.py"),
        "greet": ticket("Greet by name", "greet(name) must return 'hello, <name>'.", "tests/test_greet.py"),
    })


async def test_three_tickets_are_implemented_merged_and_cleaned_up(engine, project, llm, script: Script):
    eng, store = engine
    use_fake_model(project, llm)
    three_tickets(project)
    script.on("implement", "Fix add", edits(FIX_ADD))
    script.on("implement", "Implement mul", edits(FIX_MUL))
    script.on("implement", "Greet by name", edits(FIX_GREET))
    script.on("review", None, approve)

    status, ex = await run(eng, "kanban", {"reviewers": ["correctness"], "test_command": PYTEST}, project)
    assert status == "finished", ex.error
    out = await outputs(store, ex.run_id)

    board = out[("tickets", 0)]
    assert [t["slug"] for t in board["tickets"]] == ["add", "greet", "mul"]
    assert board["base_branch"] == "main"
    summary = out[("summary", 0)]
    rows = {r["slug"]: r for r in summary["tickets"]}
    for slug in ("add", "mul", "greet"):
        assert rows[slug]["status"] == "done" and rows[slug]["merged"] is True, rows[slug]
        assert rows[slug]["rounds"] == 1 and rows[slug]["branch"] == f"ticket/{slug}"
        # each ticket's own check ran its own test file for real
        check = out[(f"ticket-{slug}-check", 0)]
        assert check["ran"] and check["passed"] and f"tests/test_{slug}.py" in check["command"]
        assert "1 passed" in check["output"]
        assert out[(f"ticket-{slug}-result", 0)]["changed_files"] == ["calc.py"]
    assert summary["done"] == summary["merged"] == 3

    # the ticket branches hold their own change only
    assert "return a + b" in git(project, "show", "ticket/add:calc.py")
    assert "return None" in git(project, "show", "ticket/add:calc.py")
    assert "return a * b" in git(project, "show", "ticket/mul:calc.py")
    # the base branch has all three, the full suite passes on it, and the workflow checked that too
    assert git(project, "branch", "--show-current").strip() == "main"
    calc = (project / "calc.py").read_text()
    assert "return a + b" in calc and "return a * b" in calc and 'return f"hello, {name}"' in calc
    assert run_tests(project).returncode == 0
    assert summary["post_merge_check"]["passed"] is True and "3 passed" in summary["post_merge_check"]["output"]
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""
    merges = git(project, "log", "--merges", "--format=%s", "main").splitlines()
    assert sorted(merges) == sorted(f"Merge branch 'ticket/{s}' into main" for s in ("add", "greet", "mul"))
    # worktrees gone, branches kept
    assert worktrees(project) == [str(project)]
    assert not (project / ".worktrees").exists()
    assert set(git(project, "branch", "--format=%(refname:short)").split()) >= {"ticket/add", "ticket/mul",
                                                                                 "ticket/greet"}
    assert len(out[("cleanup", 0)]["worktrees_removed"]) == 3
    # the implementer's prompt carried the ticket
    assert "add() subtracts" in script.prompts("implement", "Fix add")[0].prompt


async def test_a_ticket_that_never_passes_ends_out_of_rounds_and_the_others_merge(engine, project, llm,
                                                                                  script: Script):
    eng, store = engine
    use_fake_model(project, llm)
    three_tickets(project)
    script.on("implement", "Fix add", edits(FIX_ADD))
    script.on("implement", "Greet by name", edits(FIX_GREET))
    # mul's implementer writes notes but never fixes mul()
    script.on("implement", "Implement mul", edits(("write_file", {"path": "NOTES.md", "content": "mul: todo\n"})))
    script.on("review", None, approve)

    status, ex = await run(eng, "kanban", {"reviewers": ["correctness"], "max_rounds": 2, "test_command": PYTEST},
                           project)
    assert status == "finished", ex.error
    out = await outputs(store, ex.run_id)
    rows = {r["slug"]: r for r in out[("summary", 0)]["tickets"]}

    mul = rows["mul"]
    assert mul["status"] == "out_of_rounds" and mul["merged"] is False and mul["rounds"] == 2
    assert "tests still fail after 2 round(s)" in mul["why"] and "not merged" in mul["why"]
    result = out[("ticket-mul-result", 0)]
    assert result["succeeded"] is False and result["passed"] is False and result["tests_ran"] is True
    # two real failing checks; no review of failing code
    for it in (0, 1):
        assert out[("ticket-mul-check", it)]["passed"] is False
        assert out[("ticket-mul-check", it)]["exit_code"] == 1
        assert ("ticket-mul-review-correctness", it) not in out or out[("ticket-mul-review-correctness", it)] is None
    # round 2's prompt carried round 1's failure
    rounds = script.prompts("implement", "Implement mul")
    assert [c.round for c in rounds] == [1, 2]
    assert "did not finish" in rounds[1].prompt and "assert None == 6" in rounds[1].prompt
    assert "first round" in rounds[0].prompt

    for slug in ("add", "greet"):
        assert rows[slug]["status"] == "done" and rows[slug]["merged"] is True
    calc = (project / "calc.py").read_text()
    assert "return a + b" in calc and "return None" in calc and not (project / "NOTES.md").exists()
    # nothing lost: the failed ticket's work is committed on its branch
    assert git(project, "show", "ticket/mul:NOTES.md") == "mul: todo\n"
    # the merged result was checked honestly: mul's test still fails there
    chk = out[("summary", 0)]["post_merge_check"]
    assert chk["ran"] is True and chk["passed"] is False and "1 failed, 2 passed" in chk["output"]
    assert worktrees(project) == [str(project)]


async def test_two_tickets_changing_the_same_line_conflict_and_nothing_is_lost(engine, project, llm,
                                                                               script: Script):
    eng, store = engine
    use_fake_model(project, llm)
    add_tickets(project, {
        "a-plus": ticket("Add with plus", "Make add() add.", "tests/test_add.py"),
        "b-swap": ticket("Add swapped", "Make add() add, operands swapped.", "tests/test_add.py"),
    })
    script.on("implement", "Add with plus", edits(FIX_ADD))
    script.on("implement", "Add swapped", edits(edit("calc.py", "return a - b", "return b + a")))
    script.on("review", None, approve)

    status, ex = await run(eng, "kanban", {"reviewers": ["correctness"], "approve_merge": True,
                                           "test_command": f"{PYTEST} tests/test_add.py"}, project)
    assert status == "waiting"  # both done: the merge waits for a human
    await eng.decide(ex.run_id, "approve-merge", 0, True, by="tester")
    ex = await eng.resume(ex.run_id)
    assert await ex.execute() == "finished", ex.error
    out = await outputs(store, ex.run_id)

    report = out[("merge", 0)]
    assert report["approved"] is True
    merges = {m["slug"]: m for m in report["merges"]}
    assert merges["a-plus"]["merged"] is True
    assert merges["b-swap"]["merged"] is False and merges["b-swap"]["conflicts"] == ["calc.py"]
    assert "conflicts in calc.py" in merges["b-swap"]["message"]
    rows = {r["slug"]: r for r in out[("summary", 0)]["tickets"]}
    assert rows["b-swap"]["status"] == "done" and rows["b-swap"]["merged"] is False
    assert rows["b-swap"]["conflicts"] == ["calc.py"] and "conflicts in calc.py" in rows["b-swap"]["why"]

    # the base has the first change, the repository is clean (merge aborted), the second is on its branch
    assert "return a + b" in (project / "calc.py").read_text()
    assert not (project / ".git" / "MERGE_HEAD").exists()
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""
    assert "return b + a" in git(project, "show", "ticket/b-swap:calc.py")
    assert worktrees(project) == [str(project)]


async def test_denied_merge_merges_nothing_but_keeps_every_branch(engine, project, llm, script: Script):
    eng, store = engine
    use_fake_model(project, llm)
    add_tickets(project, {"add": ticket("Fix add", "add() subtracts.", "tests/test_add.py")})
    script.on("implement", "Fix add", edits(FIX_ADD))
    script.on("review", None, approve)
    status, ex = await run(eng, "kanban", {"reviewers": ["correctness"], "approve_merge": True}, project)
    assert status == "waiting"
    await eng.decide(ex.run_id, "approve-merge", 0, False, by="tester", note="not today")
    ex = await eng.resume(ex.run_id)
    assert await ex.execute() == "finished", ex.error
    out = await outputs(store, ex.run_id)
    row = out[("summary", 0)]["tickets"][0]
    assert row["status"] == "done" and row["merged"] is False
    assert "denied by tester (not today)" in row["why"]
    assert "return a - b" in (project / "calc.py").read_text()
    assert "return a + b" in git(project, "show", "ticket/add:calc.py")
    assert worktrees(project) == [str(project)]


async def test_no_tickets_fails_with_what_to_do(engine, project):
    eng, _ = engine
    status, ex = await run(eng, "kanban", {}, project)
    assert status == "failed"
    assert "no tickets in" in ex.error and "smithers init" in ex.error


def test_ticket_files_parse_title_front_matter_and_slug(tmp_path: Path):
    from workflows.kanban import parse_ticket

    title, body, meta = parse_ticket("---\n# a comment\ntest_command: make test\n---\n# Do it\n\nText\n",
                                     Path("x.md"))
    assert (title, meta) == ("Do it", {"test_command": "make test"}) and body.startswith("# Do it")
    assert parse_ticket("no heading here\n", Path("my_ticket.md"))[0] == "my ticket"
    assert say("x").text == "x"


async def test_stopped_mid_way_and_resumed_by_another_engine_it_finishes_the_same(engine, db_path, project, llm,
                                                                                   script: Script):
    """Like quitting the app (or a crash) while tickets are in flight: a new engine resumes the run,
    finished steps are not redone, the worktrees are reused, and everything still merges."""
    from engine.runtime import Engine

    eng, store = engine
    use_fake_model(project, llm)
    three_tickets(project)
    script.on("implement", "Fix add", edits(FIX_ADD))
    script.on("implement", "Implement mul", edits(FIX_MUL))
    script.on("implement", "Greet by name", edits(FIX_GREET))
    script.on("review", None, approve)
    from workflows import builtin

    wf, target = builtin()["kanban"]
    ex = await eng.start(wf, target, {"reviewers": ["correctness"], "test_command": PYTEST}, workdir=project)

    def stop_after_first_ticket(run_id, frame, state):
        if any(k[0].endswith("-result") for k in state.outputs):
            ex.request_stop()

    eng.on_commit = stop_after_first_ticket
    assert await ex.execute() not in ("finished", "failed")
    before = {k: v for k, v in (await outputs(store, ex.run_id)).items() if v is not None}
    finished_first = {k for k in before if k[0].endswith("-result")}
    assert ("summary", 0) not in before and finished_first

    other = Engine(store, poll_interval=0.05)
    try:
        ex2 = await other.resume(ex.run_id)
        assert await ex2.execute() == "finished", ex2.error
    finally:
        await other.close()
    out = await outputs(store, ex.run_id)
    assert {k: out[k] for k in finished_first} == {k: before[k] for k in finished_first}  # not redone
    summary = out[("summary", 0)]
    assert summary["merged"] == 3 and all(r["status"] == "done" for r in summary["tickets"])
    assert run_tests(project).returncode == 0
    assert worktrees(project) == [str(project)]


async def test_conflicts_handed_to_an_agent_are_resolved_rechecked_and_merged(engine, project, llm,
                                                                              script: Script):
    from tests.workflows.conftest import CALC

    eng, store = engine
    use_fake_model(project, llm)
    add_tickets(project, {
        "a-plus": ticket("Add with plus", "Make add() add.", "tests/test_add.py"),
        "b-swap": ticket("Add swapped", "Make add() add, operands swapped.", "tests/test_add.py"),
        "c-paren": ticket("Add in parens", "Make add() add, in parentheses.", "tests/test_add.py"),
    })
    script.on("implement", "Add with plus", edits(FIX_ADD))
    script.on("implement", "Add swapped", edits(edit("calc.py", "return a - b", "return b + a")))
    script.on("implement", "Add in parens", edits(edit("calc.py", "return a - b", "return (a + b)")))
    script.on("review", None, approve)
    resolved = CALC.lstrip("\n").replace("return a - b", "return a + b  # both sides agree")
    script.on("resolve", "Add swapped", edits(("write_file", {"path": "calc.py", "content": resolved}),
                                              summary="kept main's line"))
    script.on("resolve", "Add in parens", edits(summary="I left it"))  # leaves the markers in place

    status, ex = await run(eng, "kanban", {"reviewers": ["correctness"], "resolve_conflicts": True,
                                           "test_command": PYTEST + " tests/test_add.py"}, project)
    assert status == "finished", ex.error
    out = await outputs(store, ex.run_id)
    rows = {r["slug"]: r for r in out[("summary", 0)]["tickets"]}

    assert rows["a-plus"]["merged"] and not rows["a-plus"]["conflicts"]
    b = rows["b-swap"]
    assert b["merged"] is True and b["resolved"] is True and b["conflicts"] == ["calc.py"]
    assert "resolved by the agent" in b["why"] and "passes" in b["why"]
    c = rows["c-paren"]
    assert c["merged"] is False and c["resolved"] is False and c["conflicts"] == ["calc.py"]
    assert "conflict markers are left in calc.py" in c["why"]
    assert out[("ticket-c-paren-resolve-check", 0)]["resolved"] is False

    # the resolver saw the conflict; main has the resolution; the unresolved branch is as it was
    prompt = script.prompts("resolve", "Add swapped")[0].prompt
    assert "- calc.py" in prompt and "git merge main" in prompt
    calc = (project / "calc.py").read_text()
    assert "return a + b  # both sides agree" in calc and "<<<<<<<" not in calc
    assert run_tests(project, "tests/test_add.py").returncode == 0
    assert "return (a + b)" in git(project, "show", "ticket/c-paren:calc.py")
    assert "<<<<<<<" not in git(project, "show", "ticket/c-paren:calc.py")
    assert git(project, "log", "-1", "--format=%P", "ticket/c-paren").count(" ") == 0  # no half-done merge
    assert worktrees(project) == [str(project)]
    assert out[("summary", 0)]["post_merge_check"]["passed"] is True
