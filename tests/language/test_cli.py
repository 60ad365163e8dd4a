"""The CLI of the new steps, as real subprocesses: `smithers signal`, `smithers answer`,
`smithers approve --choice / --rank`, `smithers run --budget-*`, and bad input (a signal to a
finished run or an unknown run, a payload failing the model, an answer to a node that is not
waiting, a wrong choice): one line, exit 4, nothing written."""

from __future__ import annotations

import json
import sqlite3

import pytest

WF = """
from pydantic import BaseModel
from engine import Approval, HumanTask, Sequence, Signal, Task, Timer, workflow


class CI(BaseModel):
    status: str
    build: int


class Plan(BaseModel):
    title: str
    steps: int = 1


@workflow
def flow(ctx):
    return Sequence(
        Task("a", value=1),
        Approval("pick", message="which plan?", mode="select", options=["A", "B", "C"]),
        Approval("order", message="order them", mode="rank", options=["A", "B", "C"]),
        HumanTask("plan", prompt="what to build?", output=Plan),
        Task("b", run=lambda c: [c.output("pick").choice, c.output("order").ranking, c.output("plan").title]),
    )


@workflow
def signalled(ctx):
    return Sequence(Signal("ci", name="ci-done", output=CI), Task("b", run=lambda c: c.output("ci").build))
"""


def counts(db) -> tuple[int, ...]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("events", "frames", "signals", "approvals"))


def one_line_4(done) -> str:
    assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smithers: "), done.stderr
    return lines[0]


def wait_for_line(proc, text: str) -> str:
    """Read a process's output until a line holding `text` (its progress says what happened)."""
    for line in proc.stdout:
        if text in line:
            return line
    raise AssertionError(f"the process ended without printing {text!r}: {proc.stderr.read()}")


@pytest.fixture
def wf(write_workflow):
    return write_workflow("wf.py", WF)


def test_select_rank_and_answer_from_the_cli_with_bad_input_refused(smithers, wf, db_path):
    done = smithers("run", f"{wf}:flow", "--run-id", "r1")
    assert done.returncode == 3
    assert "`smithers approve r1 pick --choice A|B|C`" in done.stdout
    before = counts(db_path)
    assert "asks to choose one of A, B, C" in one_line_4(smithers("approve", "r1", "pick"))
    assert "'D' is not an option" in one_line_4(smithers("approve", "r1", "pick", "--choice", "D"))
    assert "asks for one choice, not a ranking" in one_line_4(smithers("approve", "r1", "pick", "--rank", "A,B,C"))
    assert "has no human task 'plan' waiting" in one_line_4(smithers("answer", "r1", "plan", "--data", "{}"))
    assert "'pick' of run r1 is a gate, not a human task" in one_line_4(smithers("answer", "r1", "pick", "--data",
                                                                                  "{}"))
    assert "not valid JSON" in one_line_4(smithers("answer", "r1", "pick", "--data", "{oops"))
    assert counts(db_path) == before  # nothing written

    d = smithers.json("approve", "r1", "pick", "--choice", "B", "--by", "ann")
    assert (d["decision"], d["answer"], d["by"]) == ("approved", "B", "ann")
    done = smithers("resume", "r1")
    assert done.returncode == 3 and "--rank A,B,C" in done.stdout
    assert "not an order of all the options" in one_line_4(smithers("approve", "r1", "order", "--rank", "C,A"))
    done = smithers("approve", "r1", "order", "--rank", "C,A,B", "--resume")
    assert done.returncode == 3 and "waits for an answer (plan: what to build?)" in done.stdout

    before = counts(db_path)
    line = one_line_4(smithers("answer", "r1", "plan", "--data", '{"title": 3}'))
    assert "does not fit Plan: title: Input should be a valid string; nothing was written" in line
    assert "waits for no answer" in one_line_4(smithers("answer", "r1", "order", "--data", "{}"))
    assert counts(db_path) == before
    (tmp := wf.parent / "answer.json").write_text('{"title": "parser", "steps": 2}')
    done = smithers("answer", "r1", "--data-file", tmp, "--resume", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["status"] == "finished" and rep["result"] == ["B", ["C", "A", "B"], "parser"]
    gates = {g["node_id"]: g for g in rep["approvals"]}
    assert (gates["pick"]["mode"], gates["pick"]["answer"]) == ("select", "B")
    assert (gates["plan"]["mode"], gates["plan"]["decision"]) == ("human", "answered")
    assert "already answered" in one_line_4(smithers("answer", "r1", "plan", "--data", '{"title": "again"}'))


def test_signal_from_the_cli_to_a_waiting_run_and_bad_signals(smithers, wf, db_path):
    run = smithers.spawn("run", f"{wf}:signalled", "--run-id", "s1")
    try:
        wait_for_line(run, "wait_started")  # it says so when it waits; then another process signals it
        before = counts(db_path)
        line = one_line_4(smithers("signal", "s1", "ci-done", "--data", '{"status": "green"}'))
        assert "does not fit CI: build: Field required; nothing was sent" in line
        assert "not valid JSON" in one_line_4(smithers("signal", "s1", "ci-done", "--data", "{"))
        assert "no run 'nope'" in one_line_4(smithers("signal", "nope", "ci-done"))
        assert counts(db_path) == before
        sent = smithers.json("signal", "s1", "ci-done", "--data", '{"status": "green", "build": 5}', "--by", "ci")
        assert (sent["matched"], sent["waiting"], sent["owner_alive"], sent["by"]) == (True, True, True, "ci")
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert "signal_received" in out and "run s1 finished" in out
    rep = smithers.json("show", "s1")
    assert rep["result"] == 5
    before = counts(db_path)
    assert "is finished: it takes no more signals" in one_line_4(smithers("signal", "s1", "ci-done", "--data", "{}"))
    assert counts(db_path) == before


def test_a_signal_to_a_run_nobody_runs_is_kept_and_resume_takes_it(smithers, write_workflow, db_path):
    path = write_workflow("gate.py", """
from engine import Approval, Sequence, Signal, Task, workflow


@workflow
def later(ctx):
    return Sequence(Approval("first", message="go?"), Signal("ping"), Task("done", run=lambda c: c.output("ping")))
""")
    assert smithers("run", path, "--run-id", "k1").returncode == 3
    done = smithers("signal", "k1", "ping", "--data", '"hello"')
    assert done.returncode == 0
    assert "no step waits for it yet: it is kept for the first Signal step named 'ping'" in done.stdout
    assert "`smithers resume k1` continues it" in done.stdout
    (w,) = smithers.json("ps")[0]["waiting"]
    assert w["node_id"] == "first"
    done = smithers("approve", "k1", "--resume", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == "hello"


def test_run_budget_flags_and_ps_show_waits(smithers, write_workflow):
    path = write_workflow("nap.py", """
from engine import Sequence, Signal, Task, workflow


@workflow
def nap(ctx):
    return Sequence(Task("a", value=1), Signal("wake", timeout=3600))
""")
    assert "must be 0 or more" in one_line_4(smithers("run", path, "--budget-usd", "-1"))
    run = smithers.spawn("run", path, "--run-id", "n1", "--budget-usd", "2.5", "--budget-tokens", "1000")
    try:
        wait_for_line(run, "wait_started")
        (item,) = smithers.json("ps")
        assert item["status"] == "waiting" and item["waits"][0]["kind"] == "signal"
        assert item["waits"][0]["name"] == "wake" and item["waits"][0]["due"] > 0
        assert "n1" in smithers("ps").stdout and "waits for signal 'wake'" in smithers("ps").stdout
        rep = smithers.json("show", "n1")
        assert rep["budgets"] == [{"scope": "<run>", "tokens": 1000, "usd": 2.5, "spent_tokens": 0,
                                   "spent_usd": 0.0, "nodes": None}]
        assert smithers("signal", "n1", "wake").returncode == 0
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
