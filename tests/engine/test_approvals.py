"""Approvals: a gate puts its node in `waiting_approval` and the run in `waiting` (exit 3, `show`,
`ps --status waiting`); approve/deny from the CLI (NODE optional when exactly one waits, --iteration,
--note, --by); the decision is the Approval's output and a workflow branches on it; deny policies
fail/skip/continue for Approval nodes and needs_approval tasks; an engine running in this process
notices a decision written by another process and goes on; `approve --resume`; a decision recorded
while nobody owns the run is applied on `smithers resume`."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from engine.loader import load_target
from tests.support import MARK, Smithers, report

# --- workflows (files, so that subprocesses and resume load exactly the same code) ---------------


GATED = MARK + """
from engine import Approval, Branch, Sequence, Task, workflow


@workflow
def gated(ctx):
    ok = ctx.get("ok")
    return Sequence(
        Task("before", run=mark),
        Approval("ok", message="ship it?", on_deny=ON_DENY),
        Branch(ok is not None and ok.approved,
               Task("shipped", run=lambda c: mark(c, "shipped")),
               Task("held", run=lambda c: mark(c, "held"))),
        Task("after", run=mark),
    )
"""

GATED_TASK = MARK + """
from engine import Sequence, Task, workflow


@workflow
def gated_task(ctx):
    return Sequence(
        Task("before", run=mark),
        Task("deploy", run=mark, needs_approval=True, approval_message="deploy to prod?", on_deny=ON_DENY),
        Task("after", run=mark),
    )
"""

TWO_GATES = MARK + """
from engine import Approval, Parallel, Sequence, Task, workflow


@workflow
def two_gates(ctx):
    return Sequence(Parallel(Approval("left", message="left ok?"), Approval("right", message="right ok?")),
                    Task("after", run=mark))
"""

LOOP_GATE = MARK + """
from engine import Approval, Loop, Sequence, Task, workflow


@workflow
def loop_gate(ctx):
    return Loop("rounds", Task("work", run=mark), Approval("review", message="round ok?"), max_iterations=2)
"""

# A gate beside a step that takes a while: the run is `running` while the step works, `waiting`
# once only the gate is left.
BESIDE_WORK = MARK + """
import time
from engine import Approval, Parallel, Sequence, Task, workflow

RELEASE = Path(__file__).with_name("release")


def slow(ctx):
    while not RELEASE.exists():
        time.sleep(0.01)
    return mark(ctx)


@workflow
def beside_work(ctx):
    return Sequence(Parallel(Approval("gate", message="go on?"), Task("slow", run=slow)), Task("after", run=mark))
"""


def write(folder: Path, name: str, source: str, **consts: str) -> Path:
    text = source
    for k, v in consts.items():
        text = f"{k} = {v!r}\n" + text
    path = folder / name
    path.write_text(text)
    return path


def side_log(folder: Path, run_id: str) -> Counter:
    path = folder / "side.log"
    if not path.exists():
        return Counter()
    return Counter(line.split(" ", 1)[1] for line in path.read_text().splitlines() if line.split(" ", 1)[0] == run_id)


def one_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {done.stderr!r}"
    return lines[0]


def nodes(rep: dict) -> dict[tuple[str, int], dict]:
    return {(n["id"], n["iteration"]): n for n in rep["nodes"]}


def approvals_rows(db: Path, run_id: str) -> list[dict]:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM approvals WHERE run_id=? ORDER BY node_id, iteration",
                                              (run_id,))]
    finally:
        conn.close()


async def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --- the gate through the CLI --------------------------------------------------------------------
def test_gate_waits_then_approve_with_note_and_by_and_resume_branches_on_the_decision(tmp_path, smithers):
    wf = write(tmp_path, "gated.py", GATED, ON_DENY="fail")
    done = smithers("run", wf, "--run-id", "g1")
    assert done.returncode == 3, done.stderr
    assert "waits for approval" in done.stdout and "ship it?" in done.stdout and "smithers approve g1" in done.stdout

    rep = smithers.json("show", "g1")
    assert rep["status"] == "waiting"
    n = nodes(rep)
    assert n[("before", 0)]["state"] == "done"
    assert n[("ok", 0)]["state"] == "waiting_approval" and n[("ok", 0)]["kind"] == "approval"
    assert ("shipped", 0) not in n and ("after", 0) not in n
    assert rep["owner"] is None  # nobody holds a run that waits for a human
    assert [(a["node_id"], a["message"], a["decision"]) for a in rep["approvals"]] == [("ok", "ship it?", None)]

    waiting = smithers.json("ps", "--status", "waiting")
    assert [w["run_id"] for w in waiting] == ["g1"]
    assert waiting[0]["waiting"] == [{"node_id": "ok", "iteration": 0, "message": "ship it?"}]
    assert all(r["run_id"] != "g1" for r in smithers.json("ps", "--status", "running"))

    done = smithers("approve", "g1", "--by", "alice", "--note", "looks good")
    assert done.returncode == 0, done.stderr
    assert "approved" in done.stdout and "smithers resume g1" in done.stdout
    assert smithers.json("ps", "--status", "waiting")[0]["waiting"] == []  # decided: no longer listed as open

    done = smithers("resume", "g1", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["status"] == "finished"
    n = nodes(rep)
    decision = n[("ok", 0)]["output"]
    assert n[("ok", 0)]["state"] == "done"
    assert (decision["approved"], decision["by"], decision["note"]) == (True, "alice", "looks good")
    assert isinstance(decision["at"], float) and decision["at"] <= time.time()
    assert n[("shipped", 0)]["output"] == "shipped" and ("held", 0) not in n
    a = rep["approvals"][0]
    assert (a["decision"], a["decided_by"], a["note"]) == ("approved", "alice", "looks good")
    assert side_log(tmp_path, "g1") == {"before#0": 1, "shipped#0": 1, "after#0": 1}


def test_approve_json_and_default_by(tmp_path, smithers):
    wf = write(tmp_path, "gated.py", GATED, ON_DENY="fail")
    assert smithers("run", wf, "--run-id", "g2", "-q").returncode == 3
    out = smithers.json("approve", "g2", "ok")
    assert (out["run_id"], out["node_id"], out["iteration"], out["decision"]) == ("g2", "ok", 0, "approved")
    assert out["by"]  # the user's name when --by is not given
    assert out["owner_alive"] is False


@pytest.mark.parametrize("on_deny, run_status, gate_state", [
    ("fail", "failed", "failed"),
    ("skip", "finished", "skipped"),
    ("continue", "finished", "done"),
])
def test_deny_policies_of_an_approval(tmp_path, smithers, on_deny, run_status, gate_state):
    wf = write(tmp_path, "gated.py", GATED, ON_DENY=on_deny)
    assert smithers("run", wf, "--run-id", "d", "-q").returncode == 3
    done = smithers("deny", "d", "--by", "bob", "--note", "not today")
    assert done.returncode == 0, done.stderr and "denied" in done.stdout
    done = smithers("resume", "d", "--json")
    assert done.returncode == {"failed": 1, "finished": 0}[run_status], done.stderr
    rep = json.loads(done.stdout)
    assert rep["status"] == run_status
    n = nodes(rep)
    assert n[("ok", 0)]["state"] == gate_state
    decision = n[("ok", 0)]["output"]
    assert (decision["approved"], decision["by"], decision["note"]) == (False, "bob", "not today")
    if on_deny == "fail":
        assert "denied by bob" in rep["error"] and "not today" in rep["error"] and "'ok'" in rep["error"]
        assert side_log(tmp_path, "d") == {"before#0": 1}
    else:  # the workflow goes on and branches on the decision
        assert n[("held", 0)]["output"] == "held" and ("shipped", 0) not in n
        assert side_log(tmp_path, "d") == {"before#0": 1, "held#0": 1, "after#0": 1}


@pytest.mark.parametrize("on_deny, run_status, task_state", [
    ("fail", "failed", "failed"),
    ("skip", "finished", "skipped"),
    ("continue", "finished", "skipped"),
])
def test_deny_policies_of_a_needs_approval_task(tmp_path, smithers, on_deny, run_status, task_state):
    wf = write(tmp_path, "gated_task.py", GATED_TASK, ON_DENY=on_deny)
    done = smithers("run", wf, "--run-id", "t", "-q")
    assert done.returncode == 3, done.stderr
    rep = smithers.json("show", "t")
    assert rep["status"] == "waiting" and nodes(rep)[("deploy", 0)]["state"] == "waiting_approval"
    assert smithers.json("ps", "--status", "waiting")[0]["waiting"] == [
        {"node_id": "deploy", "iteration": 0, "message": "deploy to prod?"}]
    assert side_log(tmp_path, "t") == {"before#0": 1}  # the gated task has not run

    done = smithers("deny", "t", "--by", "bob", "--resume", "--json")
    assert done.returncode == {"failed": 1, "finished": 0}[run_status], done.stderr
    rep = json.loads(done.stdout)
    assert rep["status"] == run_status
    n = nodes(rep)
    assert n[("deploy", 0)]["state"] == task_state and n[("deploy", 0)]["output"] is None
    assert "denied by bob" in n[("deploy", 0)]["error"]
    assert "deploy#0" not in side_log(tmp_path, "t")  # a denied task never runs
    if run_status == "failed":
        assert "deploy" in rep["error"] and "denied by bob" in rep["error"]
        assert ("after", 0) not in n
    else:
        assert side_log(tmp_path, "t") == {"before#0": 1, "after#0": 1}


def test_approved_needs_approval_task_runs_once(tmp_path, smithers):
    wf = write(tmp_path, "gated_task.py", GATED_TASK, ON_DENY="fail")
    assert smithers("run", wf, "--run-id", "t", "-q").returncode == 3
    done = smithers("approve", "t", "deploy", "--by", "carol", "--resume", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["status"] == "finished"
    n = nodes(rep)
    assert n[("deploy", 0)]["state"] == "done" and n[("deploy", 0)]["output"] == "deploy ran"
    assert side_log(tmp_path, "t") == {"before#0": 1, "deploy#0": 1, "after#0": 1}
    assert rep["approvals"][0]["decided_by"] == "carol"


def test_node_may_be_left_out_only_when_exactly_one_gate_waits(tmp_path, smithers):
    wf = write(tmp_path, "two.py", TWO_GATES)
    assert smithers("run", wf, "--run-id", "two", "-q").returncode == 3
    rep = smithers.json("show", "two")
    assert {k for k, v in nodes(rep).items() if v["state"] == "waiting_approval"} == {("left", 0), ("right", 0)}
    assert {(w["node_id"], w["message"]) for w in smithers.json("ps", "--status", "waiting")[0]["waiting"]} == {
        ("left", "left ok?"), ("right", "right ok?")}

    done = smithers("approve", "two")
    assert done.returncode == 4
    line = one_line(done)
    assert "several gates" in line and "left" in line and "right" in line
    assert all(r["decision"] is None for r in approvals_rows(smithers.db, "two"))  # nothing written

    done = smithers("approve", "two", "nosuch")
    assert done.returncode == 4 and "no gate 'nosuch'" in one_line(done)

    assert smithers("approve", "two", "left", "--by", "a").returncode == 0
    done = smithers("approve", "two", "left", "--by", "b")  # decided already: the loser is told by whom
    assert done.returncode != 0 and "already approved by a" in one_line(done)
    assert smithers("deny", "two", "--by", "c", "--note", "nope").returncode == 0  # only `right` is left
    rows = {r["node_id"]: r for r in approvals_rows(smithers.db, "two")}
    assert (rows["left"]["decision"], rows["left"]["decided_by"]) == ("approved", "a")
    assert (rows["right"]["decision"], rows["right"]["decided_by"], rows["right"]["note"]) == ("denied", "c", "nope")
    done = smithers("approve", "two")  # nothing open any more
    assert done.returncode != 0 and "already" in one_line(done)


def test_gate_in_a_loop_is_decided_per_iteration(tmp_path, smithers):
    wf = write(tmp_path, "loop.py", LOOP_GATE)
    assert smithers("run", wf, "--run-id", "lp", "-q").returncode == 3
    done = smithers("approve", "lp", "review", "--iteration", "1")
    assert done.returncode == 4 and "iteration 1" in one_line(done)
    assert smithers("approve", "lp", "review", "--iteration", "0", "--by", "x", "--resume", "-q").returncode == 3
    rep = smithers.json("show", "lp")
    assert nodes(rep)[("review", 1)]["state"] == "waiting_approval"
    assert smithers.json("ps", "--status", "waiting")[0]["waiting"] == [
        {"node_id": "review", "iteration": 1, "message": "round ok?"}]
    done = smithers("approve", "lp", "review", "--iteration", "0")
    assert done.returncode != 0 and "already approved by x" in one_line(done)
    done = smithers("approve", "lp", "review", "--iteration", "1", "--by", "y", "--resume", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    n = nodes(rep)
    assert rep["status"] == "finished"
    assert (n[("review", 0)]["output"]["by"], n[("review", 1)]["output"]["by"]) == ("x", "y")
    assert side_log(tmp_path, "lp") == {"work#0": 1, "work#1": 1}


def test_decision_recorded_while_nobody_owns_the_run_is_applied_on_resume(tmp_path, smithers):
    wf = write(tmp_path, "gated_task.py", GATED_TASK, ON_DENY="fail")
    assert smithers("run", wf, "--run-id", "off", "-q").returncode == 3
    done = smithers("approve", "off", "--by", "dana")
    assert done.returncode == 0 and "smithers resume off" in done.stdout
    rep = smithers.json("show", "off")
    assert rep["status"] == "waiting"  # nothing ran it yet
    assert nodes(rep)[("deploy", 0)]["state"] == "waiting_approval"
    row = approvals_rows(smithers.db, "off")[0]
    assert (row["decision"], row["decided_by"], row["applied"]) == ("approved", "dana", 0)
    assert side_log(tmp_path, "off") == {"before#0": 1}

    done = smithers("resume", "off", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["status"] == "finished" and nodes(rep)[("deploy", 0)]["state"] == "done"
    assert approvals_rows(smithers.db, "off")[0]["applied"] == 1
    assert side_log(tmp_path, "off") == {"before#0": 1, "deploy#0": 1, "after#0": 1}
    events = [json.loads(line) for line in smithers("logs", "off", "--json").stdout.splitlines()]
    decided = [e for e in events if e["type"] == "approval_decided"]
    assert len(decided) == 1 and decided[0]["data"]["by"] == "dana"


def test_approve_resume_continues_a_run_nobody_owns(tmp_path, smithers):
    wf = write(tmp_path, "gated.py", GATED, ON_DENY="fail")
    assert smithers("run", wf, "--run-id", "ar", "-q").returncode == 3
    done = smithers("approve", "ar", "--resume")
    assert done.returncode == 0, done.stderr
    assert "continuing the run here" in done.stdout and "finished" in done.stdout
    rep = smithers.json("show", "ar")
    assert rep["status"] == "finished" and rep["owner"] is None
    assert side_log(tmp_path, "ar") == {"before#0": 1, "shipped#0": 1, "after#0": 1}


def test_deny_resume_with_fail_policy_exits_1(tmp_path, smithers):
    wf = write(tmp_path, "gated.py", GATED, ON_DENY="fail")
    assert smithers("run", wf, "--run-id", "dr", "-q").returncode == 3
    done = smithers("deny", "dr", "--resume", "--by", "eve", "--note", "too risky")
    assert done.returncode == 1
    assert "denied by eve" in done.stdout and "too risky" in done.stdout
    assert smithers.json("show", "dr")["status"] == "failed"


# --- an engine in this process, a decision from another process ----------------------------------
async def start_in_process(eng, wf_path: Path, run_id: str):
    wf, target = load_target(str(wf_path))
    ex = await eng.start(wf, target, None, run_id=run_id, workdir=wf_path.parent)
    return ex, asyncio.create_task(ex.execute(stop_when_waiting=False))


@pytest.mark.parametrize("approved", [True, False])
async def test_running_engine_notices_a_decision_from_another_process(tmp_path, engine, approved):
    eng, store = engine
    wf = write(tmp_path, "gated.py", GATED, ON_DENY="fail")
    cli = Smithers(tmp_path, store.path)
    ex, task = await start_in_process(eng, wf, "live")

    async def waiting():
        return (await store.get_run("live")).status == "waiting"

    await wait_until(waiting, what="the run to wait")
    assert not task.done()  # the engine stays on it, idle
    # what another process sees: waiting, not "running", and the gate is findable
    rep = await asyncio.to_thread(cli.json, "show", "live")
    assert rep["status"] == "waiting" and rep["owner"]["pid"] is not None
    ps = await asyncio.to_thread(cli.json, "ps", "--status", "waiting")
    assert [(p["run_id"], p["waiting"]) for p in ps] == [("live", [{"node_id": "ok", "iteration": 0,
                                                                    "message": "ship it?"}])]

    verb = "approve" if approved else "deny"
    done = await asyncio.to_thread(cli, verb, "live", "--by", "frank", "--note", "from afar")
    assert done.returncode == 0, done.stderr
    assert "its owner" in done.stdout and "goes on with it" in done.stdout

    status = await asyncio.wait_for(task, timeout=30)  # noticed promptly; the timeout is only a guard
    assert status == ("finished" if approved else "failed")
    rep = await report(store, "live")
    assert rep["status"] == status and rep["owner"] is None
    decision = nodes(rep)[("ok", 0)]["output"]
    assert (decision["approved"], decision["by"], decision["note"]) == (approved, "frank", "from afar")
    if approved:
        assert side_log(tmp_path, "live") == {"before#0": 1, "shipped#0": 1, "after#0": 1}
    else:
        assert "denied by frank" in rep["error"]
        assert side_log(tmp_path, "live") == {"before#0": 1}


async def test_run_is_running_while_work_goes_on_beside_a_gate_and_waiting_once_only_the_gate_is_left(
        tmp_path, engine):
    eng, store = engine
    wf = write(tmp_path, "beside.py", BESIDE_WORK)
    ex, task = await start_in_process(eng, wf, "bw")

    async def gate_requested():
        return any(a.node_id == "gate" for a in await store.approvals("bw"))

    await wait_until(gate_requested, what="the gate to be requested")
    rep = await report(store, "bw")
    n = nodes(rep)
    assert n[("slow", 0)]["state"] == "running" and n[("gate", 0)]["state"] == "waiting_approval"
    assert rep["status"] == "running"  # a step is really working

    (tmp_path / "release").write_text("go")

    async def waiting():
        return (await store.get_run("bw")).status == "waiting"

    await wait_until(waiting, what="the run to show it waits for a human")
    rep = await report(store, "bw")
    assert nodes(rep)[("slow", 0)]["state"] == "done"
    assert not task.done()

    await eng.decide("bw", None, None, True, by="gina")  # from this process: goes on at once
    assert await asyncio.wait_for(task, timeout=30) == "finished"
    assert side_log(tmp_path, "bw") == {"slow#0": 1, "after#0": 1}
    events = [e.type for e in await store.events("bw")]
    assert events.count("run_waiting") == 1
    assert events.index("run_waiting") < events.index("approval_decided")


async def test_in_process_decide_reports_a_conflict_and_keeps_the_first_decision(tmp_path, engine):
    from engine.errors import ApprovalConflict

    eng, store = engine
    wf = write(tmp_path, "gated.py", GATED, ON_DENY="fail")
    wf_def, target = load_target(str(wf))
    ex = await eng.start(wf_def, target, None, run_id="c1", workdir=tmp_path)
    assert await ex.execute() == "waiting"
    row = await eng.decide("c1", "ok", None, False, by="hank", note="no")
    assert (row.gate.decision, row.gate.decided_by) == ("denied", "hank")
    with pytest.raises(ApprovalConflict, match="already denied by hank"):
        await eng.decide("c1", "ok", None, True, by="ivy")
    with pytest.raises(ApprovalConflict, match="already denied by hank"):
        await eng.decide("c1", None, None, True, by="ivy")
    rows = approvals_rows(store.path, "c1")
    assert [(r["decision"], r["decided_by"]) for r in rows] == [("denied", "hank")]
