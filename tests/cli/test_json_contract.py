"""The JSON the CLI prints is a contract scripts rely on: its keys are pinned here. A new key is a
deliberate change of this file; a key that disappears breaks someone."""
from __future__ import annotations

import json

from tests.support import Smithers

FLOW = """
from engine import Approval, Loop, Sequence, Task, workflow


@workflow
def shaped(ctx):
    return Sequence(Task("a", value=1),
                    Loop("l", Task("s", run=lambda c: c.iteration), until=lambda c: c.get("s") == 1),
                    Approval("gate", message="go on?"),
                    Task("z", value="end"))
"""

REPORT = {"run_id", "workflow", "target", "input", "status", "error", "parent_run_id", "parent_frame", "kind",
          "successor_run_id", "frame", "last_frame", "created_at", "updated_at", "finished_at", "owner", "usage",
          "approvals", "nodes"}
REPORT_OPTIONAL = {"result", "budgets", "parent_step"}  # a finished run's result; budgets; a sub-workflow's step
NODE = {"id", "iteration", "kind", "state", "attempts", "error", "output"}
NODE_OPTIONAL = {"usage", "loop_iteration", "worktree", "wait", "child_run_id", "cache", "caught", "saga"}
APPROVAL = {"node_id", "iteration", "message", "decision", "decided_by", "note", "decided_at"}
APPROVAL_OPTIONAL = {"mode", "options", "answer", "allowed", "due", "schema"}  # select/rank gates, human tasks
USAGE = {"tokens_in", "tokens_out", "cost_usd"}
PS = {"run_id", "workflow", "status", "frame", "created_at", "updated_at", "finished_at", "error", "parent_run_id",
      "kind", "waiting", "owner"}
FORK = {"run_id", "from_run", "from_frame", "kind", "carried", "rerun", "input_changed"}
DECISION = {"run_id", "node_id", "iteration", "decision", "by", "note", "owner_alive"}
FRAME = {"frame", "at", "changes", "status"}
LINEAGE = {"run_id", "kind", "status", "parent_frame", "frames", "successor_run_id", "children"}
EVENT = {"seq", "run_id", "frame", "at", "type", "node_id", "iteration", "data"}


def check_report(rep: dict) -> None:
    assert REPORT <= set(rep) <= REPORT | REPORT_OPTIONAL
    assert set(rep["usage"]) == USAGE
    for n in rep["nodes"]:
        assert NODE <= set(n) <= NODE | NODE_OPTIONAL, n
    for a in rep["approvals"]:
        assert APPROVAL <= set(a) <= APPROVAL | APPROVAL_OPTIONAL, a


def test_the_json_shapes_are_pinned(tmp_path) -> None:
    (tmp_path / "shaped.py").write_text(FLOW)
    cli = Smithers(tmp_path, tmp_path / "s.db")
    done = cli("run", "shaped.py", "--run-id", "r", "--json")
    assert done.returncode == 3, done.stderr
    rep = json.loads(done.stdout)
    check_report(rep)
    assert rep["status"] == "waiting" and rep["approvals"][0]["decision"] is None
    assert next(n for n in rep["nodes"] if n["id"] == "l")["loop_iteration"] == 1
    check_report(cli.json("show", "r"))
    check_report(cli.json("show", "r", "--frame", "1"))

    (ps,) = cli.json("ps")
    assert set(ps) == PS and [set(w) for w in ps["waiting"]] == [{"node_id", "iteration", "message"}]
    assert ps["owner"] is None

    done = cli("approve", "r", "--json")
    assert done.returncode == 0
    assert set(json.loads(done.stdout)) == DECISION

    frames = cli.json("frames", "r")
    assert frames and all(set(f) == FRAME for f in frames)
    tl = cli.json("timeline", "r")
    assert set(tl) == {"run_id", "frames", "lineage"} and set(tl["lineage"]) == LINEAGE

    fork = cli.json("fork", "r", "--frame", "2", "--run-id", "f")
    assert set(fork) == FORK and fork["run_id"] == "f"
    assert set(cli.json("cancel", "f")) == {"run_id", "result"}

    done = cli("logs", "r", "--json")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines and all(set(e) == EVENT for e in lines)


LANGUAGE = """
from pydantic import BaseModel
from engine import Approval, HumanTask, Parallel, Sequence, Signal, Task, workflow


class Plan(BaseModel):
    title: str


@workflow
def asks(ctx):
    return Sequence(Signal("go"),
                    Parallel(Approval("pick", message="which?", mode="select", options=["A", "B"]),
                             HumanTask("plan", prompt="title?", output=Plan)),
                    Task("z", value="end"))
"""
WAIT = {"node_id", "iteration", "kind"}
WAIT_OPTIONAL = {"name", "due", "child"}
DECISION_OPTIONAL = {"answer"}
SIGNAL = {"run_id", "name", "seq", "by", "matched", "waiting", "owner_alive"}


def test_the_json_shapes_of_gates_answers_signals_and_waits_are_pinned(tmp_path) -> None:
    (tmp_path / "asks.py").write_text(LANGUAGE)
    cli = Smithers(tmp_path, tmp_path / "s.db")
    run = cli.spawn("run", "asks.py", "--run-id", "r")
    try:
        assert any("wait_started" in line for line in run.stdout)  # reads until the run waits for the signal
        (ps,) = cli.json("ps")
        assert set(ps) == PS | {"waits"} and [set(w) for w in ps["waits"]] == [WAIT | {"name"}]
        assert set(cli.json("signal", "r", "go")) == SIGNAL
        run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 3
    rep = cli.json("show", "r")
    check_report(rep)
    gates = {a["node_id"]: a for a in rep["approvals"]}
    assert set(gates["pick"]) == APPROVAL | {"mode", "options"}
    assert set(gates["plan"]) == APPROVAL | {"mode", "schema"}
    (ps,) = cli.json("ps")
    assert set(ps) == PS and sorted(set(w) for w in ps["waiting"]) == [{"node_id", "iteration", "message", "mode"}] * 2
    assert set(cli.json("approve", "r", "pick", "--choice", "B")) == DECISION | DECISION_OPTIONAL
    assert set(cli.json("answer", "r", "plan", "--data", '{"title": "t"}')) == DECISION | DECISION_OPTIONAL
    rep = cli.json("show", "r")
    check_report(rep)
    assert {a["node_id"]: set(a) for a in rep["approvals"]} == {"pick": APPROVAL | {"mode", "options", "answer"},
                                                                 "plan": APPROVAL | {"mode", "schema", "answer"}}
