"""Gates across resumes, rewinds and cancels: a gate denied and asked again, iterations, the open
gates only, a loser told who decided. (Each test once exposed a bug; its docstring says which.)"""
from __future__ import annotations

import json

import pytest

from tests.support import MARK, write_source as write


GATED = MARK + """
from engine import Approval, Sequence, Task, workflow


@workflow
def gated(ctx):
    return Sequence(Task("before", run=mark), Approval("ok", message="ship it?", on_deny="fail"),
                    Task("after", run=mark))
"""

GATED_TASK = MARK + """
from engine import Sequence, Task, workflow


@workflow
def gated_task(ctx):
    return Sequence(Task("before", run=mark),
                    Task("deploy", run=mark, needs_approval=True, approval_message="deploy?", on_deny="fail"),
                    Task("after", run=mark))
"""

LOOP_GATE = MARK + """
from engine import Approval, Loop, Task, workflow


@workflow
def loop_gate(ctx):
    return Loop("rounds", Task("work", run=mark), Approval("review", message="round ok?"), max_iterations=2)
"""


@pytest.mark.parametrize("source, gate", [(GATED, "ok"), (GATED_TASK, "deploy")], ids=["approval", "task"])
def test_a_denied_gate_asked_again_on_resume_can_be_approved(tmp_path, smithers, source, gate):
    """engine/store/sqlite.py:202 (commit_ops) writes a gate request with `INSERT OR IGNORE INTO
    approvals`. When a run failed because a gate was denied (on_deny="fail") and is resumed, the
    gate is asked again (node `waiting_approval`, run `waiting`, exit 3), but the approvals row keeps
    the old denial, so: `ps --status waiting` lists no gate, and `smithers approve RUN` answers
    "already denied by bob" — a gate shown in the tree that the approve command cannot find, and a
    run that can never go on. Fix: when render.request_approval (engine/render.py:233) asks again
    for a key whose row is decided and applied, reset the row (UPDATE approvals SET decision=NULL,
    decided_by=NULL, note=NULL, decided_at=NULL, applied=0, requested_at=?, frame=? ...), e.g. an
    upsert `INSERT ... ON CONFLICT DO UPDATE ... WHERE applied=1`; keep the old decision in the event log."""
    wf = write(tmp_path, "gated.py", source)
    assert smithers("run", wf, "--run-id", "r", "-q").returncode == 3
    assert smithers("deny", "r", "--by", "bob", "--resume", "-q").returncode == 1
    done = smithers("resume", "r", "-q")
    assert done.returncode == 3, done.stdout + done.stderr  # asked again
    rep = smithers.json("show", "r")
    assert {n["id"]: n["state"] for n in rep["nodes"]}[gate] == "waiting_approval"
    assert smithers.json("ps", "--status", "waiting")[0]["waiting"] != [], "the waiting gate is not listed"
    done = smithers("approve", "r", "--by", "alice")
    assert done.returncode == 0, done.stderr
    done = smithers("resume", "r", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "finished"


def test_a_resumed_run_is_not_reported_as_finished(tmp_path, smithers):
    """engine/runtime.py Engine.resume: the `changes` written when a run is taken over reset status
    and error but not `finished_at`. A failed run that is resumed (and then runs, or waits at a gate)
    keeps the `finished_at` of its failure: `show --json` and `ps` report it finished at that time
    and `ps` computes "took" from it. Fix: add "finished_at": None to `changes` in Engine.resume."""
    wf = write(tmp_path, "gated.py", GATED)
    assert smithers("run", wf, "--run-id", "r", "-q").returncode == 3
    assert smithers("deny", "r", "--resume", "-q").returncode == 1
    assert smithers.json("show", "r")["finished_at"] is not None
    smithers("resume", "r", "-q")
    rep = smithers.json("show", "r")
    assert rep["status"] in ("waiting", "running")
    assert rep["finished_at"] is None


def test_iteration_without_node_is_not_ignored(tmp_path, smithers):
    """engine/approval.py:34-47 (find_gate): --iteration is applied only when NODE is given. With
    the loop's second gate waiting, `smithers approve RUN --iteration 0` (meaning the first round)
    silently approves iteration 1. Fix: filter `gates` by iteration whenever it is given, and say
    "no gate waits at iteration 0" when none does."""
    wf = write(tmp_path, "loop.py", LOOP_GATE)
    assert smithers("run", wf, "--run-id", "lp", "-q").returncode == 3
    assert smithers("approve", "lp", "--resume", "-q").returncode == 3  # round 0 approved; round 1 waits
    done = smithers("approve", "lp", "--iteration", "0", "--by", "x")
    assert done.returncode != 0, "approved another iteration than the one asked for"
    rows = {a["iteration"]: a["decision"] for a in smithers.json("show", "lp")["approvals"]}
    assert rows[1] is None


def test_waiting_line_lists_only_the_open_gates(tmp_path, smithers):
    """smithers_tui/cli.py final_line (`gates = ... for a in s.get("approvals", [])`): the line
    printed when a run waits names every gate ever requested, decided ones included ("waits for
    approval (review: round ok?, review: round ok?)"), so a user cannot tell what to approve.
    Fix: list only approvals whose decision is None (with their iteration when it is not 0)."""
    wf = write(tmp_path, "loop.py", LOOP_GATE)
    assert smithers("run", wf, "--run-id", "lp", "-q").returncode == 3
    done = smithers("approve", "lp", "--resume", "-q")
    assert done.returncode == 3
    line = done.stdout.strip().splitlines()[-1]
    assert "waits for approval" in line
    assert line.count("round ok?") == 1, line


def test_task_on_deny_is_checked_like_an_approvals(tmp_path):
    """engine/dsl.py Task.__init__ (on_deny: Literal["fail", "skip"]) does not check on_deny, while
    Approval does. A typo such as on_deny="skipp" is accepted and a denial then fails the whole run
    (apply_decision treats anything unknown as "fail"). Fix: raise TypeError as Approval does, for
    anything but "fail", "skip" or "continue" (apply_decision already handles "continue" like skip)."""
    from engine import Task

    with pytest.raises(TypeError, match="on_deny"):
        Task("t", run=lambda c: 1, needs_approval=True, on_deny="skipp")


@pytest.mark.parametrize("end", ["rewind", "cancel"])
def test_approving_a_rewound_or_cancelled_run_is_refused(tmp_path, smithers, end):
    """engine/approval.py find_gate (line 33) takes every undecided approvals row, whatever the run's
    status. After `smithers rewind` (or `cancel`) of a waiting run its gate row stays undecided, so
    `smithers approve ORIG` "succeeds" and says "`smithers resume ORIG` continues the run" — which
    then refuses (rewound / cancelled): the decision went to a read-only run while the successor's
    gate still waits. Fix: in find_gate (or Engine.decide) refuse runs that are not waiting/running
    with a one-line BadInput; for a rewound run name its successor ("approve it in RUN2")."""
    wf = write(tmp_path, "gated.py", GATED)
    assert smithers("run", wf, "--run-id", "o", "-q").returncode == 3
    if end == "rewind":
        assert smithers("rewind", "o", "--frame", "1", "--run-id", "o2", "-q").returncode == 0
    else:
        assert smithers("cancel", "o").returncode == 0
    done = smithers("approve", "o", "--by", "alice")
    assert done.returncode == 4, done.stdout
    if end == "rewind":
        assert "o2" in done.stderr
    assert all(a["decision"] is None for a in smithers.json("show", "o")["approvals"])


def test_the_loser_is_told_who_decided_even_when_the_run_has_moved_on(tmp_path, smithers):
    """engine/approval.py find_gate (`if decided and run["status"] in ("waiting", "running")`): with
    NODE left out, a decision that arrives after the winner's was applied and the run ended (an
    engine owning the run applies it at once; seen in the approve/deny race against a live owner)
    gets "run R (failed) has no gate waiting for a decision" (exit 4) instead of "gate 'ok' of run R
    was already denied by bob". Fix: raise ApprovalConflict(_already(...)) for the latest decided
    gate whatever the run's status (BadInput only when the run never had a gate)."""
    wf = write(tmp_path, "gated.py", GATED)
    assert smithers("run", wf, "--run-id", "r", "-q").returncode == 3
    assert smithers("deny", "r", "--by", "bob", "--resume", "-q").returncode == 1  # applied: the run failed
    done = smithers("approve", "r", "--by", "alice")
    assert done.returncode == 1
    assert "already denied by bob" in done.stderr
