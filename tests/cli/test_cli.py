"""The `smithers` CLI contract, through real subprocesses: exit codes (0 finished, 1 failed,
2 cancelled, 3 waiting, 4 bad input), one-line errors that write nothing, and the --json shapes
other programs rely on (show, frames, logs, ps, workflows)."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

from engine.store.schema import SCHEMA_VERSION
from tests.support import blocks_once, clean_env, newer_database, wait_until as wait_for

COUNTER = """
from pydantic import BaseModel
from engine import Loop, Sequence, Task, workflow


class Input(BaseModel):
    n: int = 2


def step(ctx):
    ctx.log(f"step {ctx.iteration}")
    return ctx.iteration * 10


@workflow(input=Input)
def counter(ctx):
    return Sequence(Loop("l", Task("step", run=step), max_iterations=ctx.input.n), Task("done", value="ok"))
"""

FAILS = """
from engine import Sequence, Task, workflow


def boom(ctx):
    raise RuntimeError("it broke")


@workflow
def fails(ctx):
    return Sequence(Task("a", value=1), Task("b", run=boom, retries=0))
"""


SLEEPS = """
import asyncio
from pathlib import Path
from engine import Sequence, Task, workflow


async def sleep(ctx):
    Path(__file__).with_name("sleeping").write_text("x")
    await asyncio.sleep(60)


@workflow
def sleeps(ctx):
    return Sequence(Task("nap", run=sleep), Task("after", value=1))
"""

GATE = """
from engine import Approval, Sequence, Task, workflow


@workflow
def gated(ctx):
    return Sequence(Task("a", value=1), Approval("ok", message="ship it?"), Task("b", value=2))
"""

TWO = """
from engine import Task, workflow


@workflow
def first(ctx):
    return Task("a", value="first")


@workflow
def second(ctx):
    return Task("a", value="second")
"""

NONE = """
X = 1
"""


def one_line_error(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {done.stderr!r}"
    return lines[0]



# --- run: exit codes ---------------------------------------------------------------------------
def test_run_finished_exits_0_and_prints_the_report_as_json(smithers, write_workflow):
    path = write_workflow("counter.py", COUNTER)
    done = smithers("run", path, "--input", '{"n": 3}', "--run-id", "r1", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert (rep["run_id"], rep["workflow"], rep["status"], rep["input"]) == ("r1", "counter", "finished", {"n": 3})
    outs = {(n["id"], n["iteration"]): n["output"] for n in rep["nodes"]}
    assert outs[("step", 2)] == 20 and outs[("done", 0)] == "ok"


def test_run_builtin_hello_exits_0(smithers):
    done = smithers("run", "hello", "--input", '{"times": 2}')
    assert done.returncode == 0, done.stderr
    assert "finished" in done.stdout.strip().splitlines()[-1]


def test_run_failed_exits_1_naming_the_step(smithers, write_workflow):
    path = write_workflow("fails.py", FAILS)
    done = smithers("run", path, "--run-id", "f1")
    assert done.returncode == 1
    last = done.stdout.strip().splitlines()[-1]
    assert "f1 failed" in last and "it broke" in last and "resume" in last
    assert smithers.json("show", "f1")["status"] == "failed"


def test_run_waiting_for_approval_exits_3(smithers, write_workflow):
    path = write_workflow("gated.py", GATE)
    done = smithers("run", path, "--run-id", "g1")
    assert done.returncode == 3, done.stderr
    rep = smithers.json("show", "g1")
    assert rep["status"] == "waiting"
    assert {n["id"]: n["state"] for n in rep["nodes"]}["ok"] == "waiting_approval"


def test_cancel_from_another_process_makes_the_run_exit_2(smithers, write_workflow, tmp_path):
    path = write_workflow("sleeps.py", SLEEPS)
    proc = smithers.spawn("run", path, "--run-id", "c1")
    try:
        wait_for(lambda: (tmp_path / "sleeping").exists() or proc.poll() is not None, what="the step to start")
        done = smithers("cancel", "c1", "--json")
        assert done.returncode == 0, done.stderr
        assert proc.wait(20) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rep = smithers.json("show", "c1")
    assert rep["status"] == "cancelled"
    assert {n["id"]: n["state"] for n in rep["nodes"]}["nap"] == "cancelled"


def test_a_file_with_two_workflows_runs_the_one_named(smithers, write_workflow):
    path = write_workflow("two.py", TWO)
    done = smithers("run", f"{path}:second", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["nodes"][0]["output"] == "second"


# --- bad input: one line, exit 4, nothing written ----------------------------------------------
@pytest.mark.parametrize("case", ["unknown workflow", "no workflow in file", "two workflows", "invalid json",
                                  "input fails the model", "syntax error", "missing file", "missing input file"])
def test_bad_input_to_run_is_one_line_exit_4_and_writes_nothing(smithers, write_workflow, tmp_path, db_path, case):
    counter = write_workflow("counter.py", COUNTER)
    args = {
        "unknown workflow": ["run", "no-such-workflow"],
        "no workflow in file": ["run", write_workflow("none.py", NONE)],
        "two workflows": ["run", write_workflow("two.py", TWO)],
        "invalid json": ["run", counter, "--input", "{n: 3"],
        "input fails the model": ["run", counter, "--input", '{"n": "many"}'],
        "syntax error": ["run", write_workflow("broken.py", "def (:\n")],
        "missing file": ["run", tmp_path / "nowhere.py"],
        "missing input file": ["run", counter, "--input-file", tmp_path / "nowhere.json"],
    }[case]
    done = smithers(*args)
    assert done.returncode == 4, (done.stdout, done.stderr)
    line = one_line_error(done)
    assert line.startswith("smithers: ")
    assert not db_path.exists()
    assert not (tmp_path / ".smithers").exists()
    expected = {"unknown workflow": "no-such-workflow", "no workflow in file": "@workflow",
                "two workflows": ":NAME", "invalid json": "JSON", "input fails the model": "'counter'",
                "syntax error": "broken.py", "missing file": "nowhere.py", "missing input file": "nowhere.json"}[case]
    assert expected in line


def test_the_hello_input_is_validated_before_anything_is_written(smithers, db_path):
    done = smithers("run", "hello", "--input", '{"times": 0}')
    assert done.returncode == 4
    assert "times" in one_line_error(done)
    assert not db_path.exists()


def test_a_db_path_that_is_not_a_database_is_refused_untouched(smithers, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for args in (["run", "hello"], ["ps"], ["show", "x"]):
        done = smithers(*args, db=notes)
        assert done.returncode == 4, done.stderr
        assert "not a smithers database" in one_line_error(done)
    assert notes.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_database_from_a_newer_schema_is_refused(smithers, tmp_path):
    newer = newer_database(tmp_path / "newer.db")
    done = smithers("run", "hello", db=newer)
    assert done.returncode == 4
    assert "newer" in one_line_error(done)
    conn = sqlite3.connect(newer)
    try:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("future",)]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    finally:
        conn.close()


@pytest.mark.parametrize("cmd", ["show", "frames", "logs", "resume", "cancel"])
def test_an_unknown_run_is_one_line_exit_4(smithers, cmd):
    assert smithers("run", "hello", "--run-id", "known").returncode == 0
    done = smithers(cmd, "nope")
    assert done.returncode == 4
    assert "nope" in one_line_error(done)


def test_show_frame_out_of_range_is_exit_4(smithers):
    assert smithers("run", "hello", "--run-id", "h").returncode == 0
    done = smithers("show", "h", "--frame", "9999")
    assert done.returncode == 4
    assert "--frame" in one_line_error(done)


# --- the JSON contract -------------------------------------------------------------------------
@pytest.fixture
def finished_run(smithers, write_workflow) -> str:
    path = write_workflow("counter.py", COUNTER)
    done = smithers("run", path, "--input", '{"n": 2}', "--run-id", "run-1")
    assert done.returncode == 0, done.stderr
    return "run-1"


def test_show_json_fields(smithers, finished_run):
    rep = smithers.json("show", finished_run)
    for field in ("run_id", "workflow", "input", "status", "parent_run_id", "parent_frame", "nodes", "error",
                  "frame"):
        assert field in rep, field
    assert (rep["run_id"], rep["workflow"], rep["input"], rep["status"]) == ("run-1", "counter", {"n": 2}, "finished")
    assert rep["parent_run_id"] is None and rep["parent_frame"] is None and rep["error"] is None
    for n in rep["nodes"]:
        assert {"id", "iteration", "state", "attempts", "error", "output"} <= set(n)
    tasks = {(n["id"], n["iteration"]): n for n in rep["nodes"] if n["id"] in ("step", "done")}
    assert {k: (n["state"], n["attempts"], n["error"], n["output"]) for k, n in tasks.items()} == {
        ("step", 0): ("done", 1, None, 0), ("step", 1): ("done", 1, None, 10), ("done", 0): ("done", 0, None, "ok")}


def test_show_frame_shows_the_run_as_it_was(smithers, finished_run):
    rep = smithers.json("show", finished_run)
    frames = smithers.json("frames", finished_run)
    first_done = next(f["frame"] for f in frames if "step#0 done" in f["changes"])
    past = smithers.json("show", finished_run, "--frame", first_done)
    assert past["frame"] == first_done and past["status"] == "running"
    states = {(n["id"], n["iteration"]): (n["state"], n["output"]) for n in past["nodes"]}
    assert states[("step", 0)] == ("done", 0)
    assert ("done", 0) not in states
    zero = smithers.json("show", finished_run, "--frame", 0)
    assert zero["nodes"] == [] and zero["status"] == "running"
    last = smithers.json("show", finished_run, "--frame", rep["frame"])
    strip = lambda r: sorted((n["id"], n["iteration"], n["state"], json.dumps(n["output"])) for n in r["nodes"])  # noqa: E731
    assert strip(last) == strip(rep) and last["status"] == "finished"


def test_frames_json(smithers, finished_run):
    frames = smithers.json("frames", finished_run)
    assert [f["frame"] for f in frames] == list(range(len(frames)))
    assert all({"frame", "at", "changes", "status"} <= set(f) for f in frames)
    assert frames[-1]["status"] == "finished"
    assert frames[-1]["frame"] == smithers.json("show", finished_run)["frame"]
    changes = [c for f in frames for c in f["changes"]]
    assert "step#0 running" in changes and "step#1 done" in changes


def test_logs_json_is_one_event_per_line(smithers, finished_run):
    done = smithers("logs", finished_run, "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert all({"seq", "run_id", "frame", "type", "node_id", "iteration", "data"} <= set(e) for e in events)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("node_started") == 2 and types.count("node_finished") >= 3
    logs = [e["data"]["message"] for e in events if e["type"] == "log"]
    assert logs == ["step 0", "step 1"]


def test_ps_json_and_status_filter(smithers, write_workflow, finished_run):
    assert smithers("run", write_workflow("fails.py", FAILS), "--run-id", "bad-1").returncode == 1
    runs = {r["run_id"]: r for r in smithers.json("ps")}
    assert runs["run-1"]["status"] == "finished" and runs["bad-1"]["status"] == "failed"
    assert runs["run-1"]["workflow"] == "counter"
    assert "it broke" in runs["bad-1"]["error"]
    assert [r["run_id"] for r in smithers.json("ps", "--status", "failed")] == ["bad-1"]
    assert [r["run_id"] for r in smithers.json("ps", "--status", "finished")] == ["run-1"]
    assert smithers.json("ps", "--status", "running") == []


def test_ps_json_without_a_database_is_empty_and_creates_nothing(smithers, db_path):
    assert smithers.json("ps") == []
    assert not db_path.exists()


def test_workflows_json_lists_hello_with_its_input_schema(smithers):
    items = {w["name"]: w for w in smithers.json("workflows")}
    hello = items["hello"]
    assert hello["builtin"] is True
    props = hello["input_schema"]["properties"]
    assert {"name", "times"} <= set(props) and props["times"]["type"] == "integer"


def test_workflows_json_includes_project_workflows(smithers, write_workflow):
    write_workflow(".smithers/workflows/counter.py", COUNTER)
    items = {w["name"]: w for w in smithers.json("workflows")}
    assert items["counter"]["builtin"] is False
    assert items["counter"]["input_schema"]["properties"]["n"]["default"] == 2
    done = smithers("run", "counter", "--json")
    assert done.returncode == 0, done.stderr


# --- resume ------------------------------------------------------------------------------------
def kill_when_blocked(smithers, path: Path, run_id: str, tmp_path: Path) -> None:
    proc = smithers.spawn("run", path, "--run-id", run_id)
    try:
        wait_for(lambda: (tmp_path / "blocked-once").exists() or proc.poll() is not None, what="the step to block")
        assert proc.poll() is None, proc.communicate()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_resume_after_kill_goes_on_from_the_last_frame(smithers, write_workflow, tmp_path):
    path = write_workflow("blocks.py", blocks_once())
    kill_when_blocked(smithers, path, "k1", tmp_path)
    before = smithers.json("show", "k1")
    assert before["status"] == "interrupted"  # its owner is gone: nothing moves it until a resume
    assert {n["id"]: n["state"] for n in before["nodes"]} == {"first": "done", "block": "running"}
    done = smithers("resume", "k1", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    nodes = {n["id"]: n for n in rep["nodes"]}
    assert rep["status"] == "finished"
    assert (nodes["block"]["attempts"], nodes["block"]["output"]) == (2, "attempt 2")
    assert nodes["last"]["output"] == 3


def test_resume_of_a_changed_workflow_needs_accept_changes(smithers, write_workflow, tmp_path):
    path = write_workflow("blocks.py", blocks_once())
    kill_when_blocked(smithers, path, "k2", tmp_path)
    frame = smithers.json("show", "k2")["frame"]
    path.write_text(path.read_text() + "\n# changed\n")
    done = smithers("resume", "k2")
    assert done.returncode == 4
    line = one_line_error(done)
    assert "--accept-changes" in line and "changed" in line
    after = smithers.json("show", "k2")
    assert after["frame"] == frame and after["status"] == "interrupted"
    done = smithers("resume", "k2", "--accept-changes")
    assert done.returncode == 0, done.stderr
    assert smithers.json("show", "k2")["status"] == "finished"


def test_resume_of_a_finished_run_is_exit_4(smithers, finished_run):
    done = smithers("resume", finished_run)
    assert done.returncode == 4
    assert "finished" in one_line_error(done)


# --- where the database is ---------------------------------------------------------------------
def test_db_flag_and_smithers_db_env(smithers, tmp_path):
    env_db = tmp_path / "from-env.db"
    flag_db = tmp_path / "from-flag.db"
    env = clean_env(SMITHERS_DB=str(env_db))
    assert smithers("run", "hello", "--run-id", "e1", db=None, env=env).returncode == 0
    assert env_db.exists() and not (tmp_path / ".smithers").exists()
    assert [r["run_id"] for r in smithers.json("ps", db=None, env=env)] == ["e1"]
    # --db wins over SMITHERS_DB, before or after the subcommand
    assert smithers("run", "hello", "--run-id", "f1", db=flag_db, env=env).returncode == 0
    assert [r["run_id"] for r in smithers.json("ps", db=flag_db, env=env)] == ["f1"]
    assert [r["run_id"] for r in smithers.json("ps", "--db", flag_db, db=None, env=env)] == ["f1"]
    assert [r["run_id"] for r in smithers.json("ps", db=None, env=env)] == ["e1"]


def test_default_database_is_in_the_working_directory(smithers, tmp_path):
    env = clean_env()
    assert "SMITHERS_DB" not in env
    assert smithers("run", "hello", "--run-id", "d1", db=None, env=env).returncode == 0
    assert (tmp_path / ".smithers" / "smithers.db").exists()
    assert [r["run_id"] for r in smithers.json("ps", db=None, env=env)] == ["d1"]
