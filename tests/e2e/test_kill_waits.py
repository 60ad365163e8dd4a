"""Crash and resume across the durable waits, with real `smithers` subprocesses killed by SIGKILL:
while waiting on a signal, on a timer, on a human task, during a saga's compensation, and while a
sub-workflow's child run is mid-step. After each kill, what other processes send is recorded
(the run is a row, nobody polls), and `smithers resume` goes on from the saved frame: the timer
keeps its due time, the signal and the answer are taken, finished steps and compensations never
run again."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support import MARK, Smithers, ran

WAITS = MARK + """
from pydantic import BaseModel
from engine import HumanTask, Parallel, Saga, Sequence, Signal, Subflow, Task, Timer, workflow


class CI(BaseModel):
    build: int


class Plan(BaseModel):
    title: str


@workflow
def on_signal(ctx):
    return Sequence(Task("before", run=mark), Signal("ci", output=CI),
                    Task("after", run=lambda c: mark(c, c.output("ci").build)))


@workflow
def on_timer(ctx):
    return Sequence(Task("before", run=mark), Timer("nap", seconds=2), Task("after", run=mark))


@workflow
def on_human(ctx):
    # the signal keeps the foreground process alive while the human task waits (a person alone would stop it)
    return Sequence(Task("before", run=mark),
                    Parallel(HumanTask("ask", prompt="title?", output=Plan), Signal("hold")),
                    Task("after", run=lambda c: mark(c, c.output("ask").title)))


def undo_b(ctx):
    mark(ctx)
    hang = Path(__file__).with_name("hang-once")
    if not hang.exists():
        hang.write_text("x")
        time.sleep(120)  # killed here
    return "b undone"


def fail(ctx):
    mark(ctx)
    raise RuntimeError("payment declined")


@workflow
def compensating(ctx):
    return Saga("order", [(Task("a", run=mark), Task("undo-a", run=mark)),
                          (Task("b", run=mark), Task("undo-b", run=undo_b)),
                          (Task("c", run=fail, retries=0), None)])


def slow_child_step(ctx):
    mark(ctx)
    hang = Path(__file__).with_name("child-hang-once")
    if not hang.exists():
        hang.write_text("x")
        time.sleep(120)  # killed here
    return "child done"


@workflow
def child(ctx):
    return Sequence(Task("c1", run=mark), Task("c2", run=slow_child_step), Task("c3", run=mark))


@workflow
def parent(ctx):
    return Sequence(Task("p1", run=mark), Subflow("sub", child), Task("p2", run=lambda c: mark(c, c.output("sub"))))
"""


@pytest.fixture
def cli(tmp_path: Path) -> Smithers:
    (tmp_path / "waits.py").write_text(WAITS)
    return Smithers(tmp_path, tmp_path / "smithers.db")


def run_until(cli: Smithers, name: str, run_id: str, text: str):
    """Start `smithers run waits.py:NAME` and read its progress until a line holding `text`."""
    proc = cli.spawn("run", f"{cli.cwd / 'waits.py'}:{name}", "--run-id", run_id)
    for line in proc.stdout:
        if text in line:
            return proc
    raise AssertionError(f"the run ended before {text!r}: {proc.communicate()}")


def kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def until_file(path: Path, proc) -> None:
    """Wait until a step has written its marker (the process is then inside that step)."""
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)


@pytest.mark.timeout(120)
def test_kill_while_waiting_on_a_signal_then_signal_then_resume(cli, tmp_path):
    proc = run_until(cli, "on_signal", "sig", "wait_started")
    kill(proc)
    rep = cli.json("show", "sig")
    assert rep["status"] == "waiting" and {n["id"]: n["state"] for n in rep["nodes"]}["ci"] == "waiting"
    done = cli("signal", "sig", "ci", "--data", '{"build": 12}')
    assert done.returncode == 0 and "`smithers resume sig` continues it" in done.stdout
    done = cli("resume", "sig", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == 12
    assert ran(tmp_path, "sig") == Counter({("before", 0): 1, ("after", 0): 1})


@pytest.mark.timeout(120)
def test_kill_while_waiting_on_a_timer_resume_keeps_its_due_time(cli, tmp_path):
    proc = run_until(cli, "on_timer", "tim", "wait_started")
    kill(proc)
    rep = cli.json("show", "tim")
    due = next(n for n in rep["nodes"] if n["id"] == "nap")["wait"]["due"]
    (item,) = cli.json("ps", "--status", "waiting")
    assert item["waits"] == [{"node_id": "nap", "iteration": 0, "kind": "timer", "due": due}]
    done = cli("resume", "tim", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    nap = next(n for n in json.loads(done.stdout)["nodes"] if n["id"] == "nap")
    assert nap["output"]["due"] == due and nap["output"]["fired_at"] >= due
    assert ran(tmp_path, "tim") == Counter({("before", 0): 1, ("after", 0): 1})


@pytest.mark.timeout(120)
def test_kill_while_waiting_on_a_human_task_then_answer_then_resume(cli, tmp_path):
    proc = run_until(cli, "on_human", "hum", "wait_started")
    kill(proc)
    done = cli("answer", "hum", "ask", "--data", '{"title": "parser"}', "--by", "ann")
    assert done.returncode == 0, done.stderr
    assert "`smithers resume hum` continues the run" in done.stdout
    assert cli("signal", "hum", "hold").returncode == 0
    done = cli("resume", "hum", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["status"] == "finished" and rep["result"] == "parser"
    assert ran(tmp_path, "hum") == Counter({("before", 0): 1, ("after", 0): 1})


@pytest.mark.timeout(120)
def test_kill_during_compensation_goes_on_compensating_after_resume(cli, tmp_path):
    proc = cli.spawn("run", f"{tmp_path / 'waits.py'}:compensating", "--run-id", "saga", "--quiet")
    until_file(tmp_path / "hang-once", proc)
    kill(proc)
    rep = cli.json("show", "saga")
    assert next(n for n in rep["nodes"] if n["id"] == "order")["saga"]["phase"] == "compensating"
    done = cli("resume", "saga", timeout=60)
    assert done.returncode == 1 and "compensated: undo-b, undo-a" in done.stdout
    counts = ran(tmp_path, "saga")
    assert counts == Counter({("a", 0): 1, ("b", 0): 1, ("c", 0): 1, ("undo-b", 0): 2, ("undo-a", 0): 1})


@pytest.mark.timeout(120)
def test_kill_while_a_child_run_is_mid_step_resume_goes_on_in_both(cli, tmp_path):
    proc = cli.spawn("run", f"{tmp_path / 'waits.py'}:parent", "--run-id", "par", "--quiet")
    until_file(tmp_path / "child-hang-once", proc)
    kill(proc)
    assert cli.json("show", "par.sub")["status"] == "interrupted"
    done = cli("resume", "par.sub", timeout=60)  # resuming the child continues its parent, which drives it
    assert done.returncode == 0, done.stderr
    assert "is a sub-workflow of run par, which drives it" in done.stdout
    assert cli.json("show", "par")["result"] == "c3 ran"  # the child's result, handed on by p2
    assert ran(tmp_path, "par") == Counter({("p1", 0): 1, ("p2", 0): 1})
    assert ran(tmp_path, "par.sub") == Counter({("c1", 0): 1, ("c2", 0): 2, ("c3", 0): 1})
