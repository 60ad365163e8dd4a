"""The implement validation loop end to end: real worktree, real test subprocess, agents via litellm
against the fake server."""
from __future__ import annotations

import pytest
from tests.fakes.openai_server import Reply

from tests.workflows.conftest import (PYTEST, Script, approve, edit, edits, git, outputs, run, say, states,
                                      use_fake_model, worktrees)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def test_loop_feeds_failures_and_review_feedback_into_the_next_round(engine, project, llm, script: Script):
    """Round 1: a wrong fix, tests fail, no review. Round 2: tests pass, the reviewer rejects.
    Round 3: the implementer acts on the review, tests pass, the reviewer approves."""
    eng, store = engine
    use_fake_model(project, llm)
    fixes = {1: edit("calc.py", "return a - b", "return a * b"),
             2: edit("calc.py", "return a * b", "return b + a"),
             3: edit("calc.py", "return b + a", "return a + b")}

    def implementer(rnd, turn, prompt):
        return Reply.tools(fixes[rnd]) if turn == 0 else say({"summary": f"round {rnd}", "files_changed": ["calc.py"]})

    def reviewer(rnd, turn, prompt):
        if "return b + a" in prompt:
            return say({"approved": False, "feedback": "write the operands in order",
                        "issues": [{"severity": "minor", "description": "operands swapped", "file": "calc.py",
                                    "line": 2}]})
        return approve()

    script.on("implement", None, implementer)
    script.on("review", None, reviewer)
    status, ex = await run(eng, "implement", {"prompt": "Fix add() in calc.py", "reviewers": ["correctness"],
                                              "test_command": f"{PYTEST} tests/test_add.py"}, project)
    assert status == "finished", ex.error
    out = await outputs(store, ex.run_id)
    st = await states(store, ex.run_id)

    checks = [out[("implement-check", i)] for i in range(3)]
    assert [c["passed"] for c in checks] == [False, True, True]
    assert checks[0]["exit_code"] == 1 and "assert 6 == 5" in checks[0]["output"]
    assert checks[0]["changed_files"] == ["calc.py"] and "+    return a * b" in checks[0]["diff"]
    assert st[("implement-review-correctness", 0)] == "skipped"  # failing code is not reviewed
    assert out[("implement-review-correctness", 1)]["approved"] is False
    assert out[("implement-review-correctness", 2)]["approved"] is True

    prompts = script.prompts("implement")
    assert [c.round for c in prompts] == [1, 2, 3]
    assert "assert 6 == 5" in prompts[1].prompt  # round 1's failure went into round 2
    assert "write the operands in order" in prompts[2].prompt and "[minor] operands swapped (calc.py:2)" in prompts[2].prompt
    reviews = script.prompts("review:correctness")
    assert "+    return b + a" in reviews[0].prompt and "passed" in reviews[0].prompt

    result = out[("implement-result", 0)]
    assert result["status"] == "done" and result["succeeded"] and result["rounds"] == 3
    assert result["passed"] and result["approved"] and result["changed_files"] == ["calc.py"]
    assert "approved by correctness in round 3" in result["reason"]
    # the work is committed on the branch; the worktree is gone; the user's checkout is untouched
    branch = result["branch"]
    assert branch.startswith("smithers/") and result["commit"] == git(project, "rev-parse", branch).strip()
    assert "return a + b" in git(project, "show", f"{branch}:calc.py")
    assert "return a - b" in (project / "calc.py").read_text()
    assert worktrees(project) == [str(project)]


async def test_out_of_rounds_says_so_honestly(engine, project, llm, script: Script):
    eng, store = engine
    use_fake_model(project, llm)
    script.on("implement", None, edits(summary="I could not find it"))  # never changes anything
    script.on("review", None, approve)
    status, ex = await run(eng, "implement", {"prompt": "Fix add()", "max_rounds": 2,
                                              "test_command": f"{PYTEST} tests/test_add.py"}, project)
    assert status == "finished"
    result = (await outputs(store, ex.run_id))[("implement-result", 0)]
    assert result["status"] == "out_of_rounds" and result["succeeded"] is False and result["rounds"] == 2
    assert result["passed"] is False and result["approved"] is False
    assert "tests still fail after 2 round(s) of 2" in result["reason"] and "assert -1 == 5" in result["reason"]
    assert script.prompts("review") == []


async def test_an_implementer_that_cannot_run_ends_failed_not_done(engine, project, llm, script: Script):
    eng, store = engine
    use_fake_model(project, llm)
    script.on("implement", None, lambda rnd, turn, prompt: Reply.error(400, text="model not found"))
    status, ex = await run(eng, "implement", {"prompt": "Fix add()", "test_command": "true"}, project)
    assert status == "finished"
    out = await outputs(store, ex.run_id)
    result = out[("implement-result", 0)]
    assert result["status"] == "failed" and result["rounds"] == 1 and not result["succeeded"]
    assert "implement agent failed in round 1" in result["reason"]
    assert out[("implement-check", 0)]["implemented"] is False and out[("implement-check", 0)]["ran"] is False
    assert (await states(store, ex.run_id))[("implement-implement", 0)] == "failed"


async def test_test_command_is_detected_and_a_timeout_kills_it(engine, project, llm, script: Script, tmp_path):
    from workflows._support import detect_test_command, run_command

    cmd = detect_test_command(project)
    assert cmd is not None and "-m pytest" in cmd
    empty = tmp_path / "empty"
    empty.mkdir()
    assert detect_test_command(empty) is None
    (empty / "package.json").write_text('{"scripts": {"test": "vitest run"}}')
    assert detect_test_command(empty) == "npm test"
    slow = await run_command("echo start; sleep 30; echo never", project, timeout=0.5)
    assert slow.timed_out and slow.exit_code is None and not slow.ok
    assert "start" in slow.output and "never" not in slow.output and "timed out after 0.5s" in slow.output
    big = await run_command("python3 -c \"print('x' * 100000); print('END')\"", project, keep=2000)
    assert big.ok and big.output.rstrip().endswith("END") and "bytes cut" in big.output


async def test_a_fork_with_another_test_command_checks_again(engine, project, monkeypatch):
    """The steps close over their input (test command, prompt...): a fork that changes it must see
    them as changed and run them again, not carry the old results."""
    eng, store = engine
    eng.agent_override = "demo"
    status, ex = await run(eng, "implement", {"prompt": "Fix add()", "max_rounds": 1, "reviewers": [],
                                              "test_command": "false"}, project)
    assert status == "finished"
    assert (await outputs(store, ex.run_id))[("implement-result", 0)]["status"] == "out_of_rounds"
    info = await eng.fork(ex.run_id, None, input={"test_command": "true"})
    assert "implement-check#0" in info.rerun and "implement-result#0" in info.rerun
    child = await eng.resume(info.run_id)
    assert await child.execute() == "finished", child.error
    result = (await outputs(store, child.run_id))[("implement-result", 0)]
    assert result["status"] == "done" and result["test_command"] == "true"


async def test_outside_a_git_repository_the_run_fails_saying_what_to_do(engine, tmp_path):
    eng, _ = engine
    eng.agent_override = "demo"
    plain = tmp_path / "plain"
    plain.mkdir()
    status, ex = await run(eng, "implement", {"prompt": "x", "test_command": "true"}, plain)
    assert status == "failed" and "not inside a git repository" in ex.error and "git init" in ex.error
