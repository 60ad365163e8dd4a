"""Workers as real processes (`smithers worker`, `smithers up`), on SQLite and on PostgreSQL where the
store matters: detached runs, a queue shared by several workers, kill -9 of workers and of a
foreground owner at random moments (another process takes over at once, no finished step runs
again), a decision from another process that the run follows without `resume`, who owns what in
`ps` and `status`, and bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from engine.runtime import Engine
from engine.state import RunStatus
from engine.store import Store
from smithers_tui.background import is_worker
from tests.e2e.test_kill_resume import DURABLE, ROUNDS, WIDE, outputs, side_log
from tests.support import Smithers, WorkerProc, blocks_once, done_frames, newer_database, until

STEPS = """
import os
from pathlib import Path

from engine import Sequence, Task, workflow

SIDE = Path(__file__).with_name("side.log")


def mark(ctx):
    with open(SIDE, "a") as f:
        f.write(f"{ctx.run_id} {ctx.node_id} {os.getpid()}\\n")
    return ctx.input["n"] * 10 + int(ctx.node_id[1])


@workflow
def steps(ctx):
    return Sequence(*[Task(f"s{i}", run=mark) for i in range(3)])
"""

GATED = """
from engine import Approval, Sequence, Task, workflow


def after(ctx):
    return "after the gate"


@workflow
def gated(ctx):
    return Sequence(Task("before", value=1), Approval("ok", message="go on?"), Task("after", run=after))
"""


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path: Path) -> str:
    """The database the workers share: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "smithers.db")
    return request.getfixturevalue("pg_server").create_database()


def cli_for(tmp_path: Path, db: str) -> Smithers:
    return Smithers(tmp_path, db)  # type: ignore[arg-type]  # a URL is passed on as it is


async def finished(store, ids: list[str]) -> bool:
    runs = await store.list_runs(limit=100_000)
    done = {r.id for r in runs if r.status == RunStatus.FINISHED}
    bad = [r for r in runs if r.id in ids and r.status in (RunStatus.FAILED, RunStatus.CANCELLED)]
    assert not bad, [(r.id, r.status, r.error) for r in bad]
    return set(ids) <= done


# --- detached runs ---------------------------------------------------------------------------------
def test_a_detached_run_without_workers_is_queued_and_says_how_to_start_one(tmp_path, smithers, write_workflow):
    wf = write_workflow("steps.py", STEPS)
    done = smithers("run", wf, "--input", '{"n": 1}', "--detach", "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    assert list(json.loads(done.stdout)) == ["run_id"]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no worker is running" in lines[0] and "smithers up" in lines[0]
    (row,) = smithers.json("ps")
    assert (row["run_id"], row["status"], row["owner"]) == (run_id, "queued", None)
    assert not (tmp_path / "side.log").exists()  # nothing ran
    bad = smithers("run", wf, "--input", '{n', "--detach")  # checked before anything is written
    assert bad.returncode == 4 and len(smithers.json("ps")) == 1


def test_up_twice_is_a_no_op_status_shows_the_workers_and_down_stops_them(tmp_path, smithers, write_workflow):
    wf = write_workflow("steps.py", STEPS)
    up = smithers("up", "--workers", "2")
    assert up.returncode == 0, up.stderr
    pid_file = tmp_path / ".smithers" / "workers.pid"
    pids = sorted(int(p) for p in pid_file.read_text().split())
    try:
        assert len(pids) == 2 and all(is_worker(p) for p in pids)
        again = smithers("up")
        assert again.returncode == 0 and "already running" in again.stdout
        assert sorted(int(p) for p in pid_file.read_text().split()) == pids
        status = smithers.json("status")
        assert sorted(w["pid"] for w in status["workers"]) == pids and all(w["alive"] for w in status["workers"])
        done = smithers("run", wf, "--input", '{"n": 2}', "--detach", "-q")
        assert done.returncode == 0 and done.stderr == ""  # workers run: no hint
        run_id = done.stdout.strip()
        follow = smithers("logs", run_id, "--follow")
        assert follow.returncode == 0, follow.stderr
        rep = smithers.json("show", run_id)
        assert rep["status"] == "finished" and [n["output"] for n in rep["nodes"]] == [20, 21, 22]
        log = (tmp_path / ".smithers" / "workers.log").read_text()
        assert f"run {run_id} (steps) taken at frame 0" in log and f"run {run_id} finished" in log
    finally:
        down = smithers("down")
    assert down.returncode == 0 and "stopped 2 worker(s)" in down.stdout
    assert not pid_file.exists() and not any(is_worker(p) for p in pids)
    assert smithers.json("status")["workers"] == []
    assert "no workers running" in smithers("down").stdout


async def test_a_queue_of_200_runs_over_4_workers_runs_each_exactly_once(tmp_path, db, write_workflow):
    from engine.loader import load_target

    wf_path = write_workflow("steps.py", STEPS)
    wf, target = load_target(str(wf_path))
    cli = cli_for(tmp_path, db)
    async with await Store.open(db) as store:
        eng = Engine(store)
        ids = [(await eng.queue(wf, target, {"n": i}, run_id=f"q{i:03d}", workdir=tmp_path)).run_id
               for i in range(200)]
        workers = [WorkerProc(cli, "--concurrency", "4") for _ in range(4)]
        try:
            await until(store, lambda: finished(store, ids), "200 runs to finish")
        finally:
            codes = [w.stop() for w in workers]
        assert codes == [0, 0, 0, 0]
        by_worker = {w.id: w for w in workers}
        for rid in ids:
            claims = [e.data["owner"] for e in await store.events(rid, types=["run_resumed"])]
            assert len(claims) == 1 and claims[0] in by_worker, (rid, claims)  # one worker took it, once
    executed: dict[str, list[tuple[str, int]]] = {}
    for line in (tmp_path / "side.log").read_text().splitlines():
        rid, node, pid = line.split()
        executed.setdefault(rid, []).append((node, int(pid)))
    assert sorted(executed) == ids
    pids = {w.pid for w in workers}
    for rid, steps in executed.items():
        assert sorted(n for n, _ in steps) == ["s0", "s1", "s2"], (rid, steps)  # each step once
        assert len({p for _, p in steps}) == 1 and steps[0][1] in pids, (rid, steps)  # all in one worker
    per_worker = Counter(steps[0][1] for steps in executed.values())
    assert sum(per_worker.values()) == 200


# --- kill -9 ---------------------------------------------------------------------------------------
LONG_ROUNDS = 40  # long enough for several kills to land while it works
LONG = DURABLE.replace(f"max_iterations={ROUNDS}", f"max_iterations={LONG_ROUNDS}")
LONG_TASKS = ({("think", i) for i in range(LONG_ROUNDS)} | {("check", i) for i in range(LONG_ROUNDS)}
              | {(f"wide{i}", 0) for i in range(WIDE)} | {("total", 0)})


def durable_dir(tmp_path: Path, name: str, db: str | None = None) -> tuple[Smithers, Path, Path]:
    folder = tmp_path / name
    folder.mkdir()
    wf = folder / "durable.py"
    wf.write_text(LONG)
    return Smithers(folder, db or folder / "smithers.db"), wf, folder / "side.log"  # type: ignore[arg-type]


@pytest.mark.timeout(300)
async def test_workers_killed_at_random_moments_lose_nothing_and_rerun_no_finished_step(tmp_path, db):
    rng = random.Random(11)
    ref_cli, ref_wf, _ = durable_dir(tmp_path, "reference")
    done = ref_cli("run", ref_wf, "--run-id", "ref", "--quiet")
    assert done.returncode == 0, done.stderr
    reference = outputs(ref_cli.json("show", "ref"))

    cli, wf, side = durable_dir(tmp_path, "killed", db)
    queued = cli("run", wf, "--run-id", "dur", "--detach", "-q")
    assert queued.returncode == 0, queued.stderr
    workers = [WorkerProc(cli), WorkerProc(cli)]
    kills = 0
    async with await Store.open(db, readonly=True) as store:
        try:
            while kills < 6:
                run = await store.get_run("dur")
                if run.status == RunStatus.FINISHED:
                    break
                frame = run.frame
                # let the run make some progress, then kill its owner somewhere in the middle of a step
                await until(store, lambda frame=frame: _moved(store, "dur", frame + 2), "the run to make progress")
                time.sleep(rng.uniform(0.0, 0.15))
                owner = (await store.get_run("dur")).owner
                victim = next((w for w in workers if owner and w.pid == owner.pid), None)
                if victim is None:
                    continue
                victim.kill()
                kills += 1
                workers.remove(victim)
                workers.append(WorkerProc(cli, wait=False))  # the other one takes over at once; a fresh one joins
            await until(store, lambda: finished(store, ["dur"]), "the run to finish")
        finally:
            for w in workers:
                w.stop()
    assert kills >= 3, "the kills should land while the run works"
    rep = cli.json("show", "dur")
    assert outputs(rep) == reference  # the outputs equal the uninterrupted run's
    tasks = {(n["id"], n["iteration"]): n for n in rep["nodes"] if n["kind"] == "task"}
    assert set(tasks) == LONG_TASKS and all(n["state"] == "done" for n in tasks.values())
    # no step whose completion was committed ran again: after its "done" frame it never changes
    assert set(done_frames(cli.json("frames", "dur"))) >= LONG_TASKS
    # the side-effect log agrees: a step started twice only because a kill cut it short
    starts = Counter(k for w, k in side_log(side) if w == "start")
    events = [json.loads(line) for line in cli("logs", "dur", "--json").stdout.splitlines()]
    interrupted = Counter((e["node_id"], e["iteration"]) for e in events if e["type"] == "node_interrupted")
    for key, n in starts.items():
        assert n - 1 <= interrupted[key], (key, n, interrupted[key])
    assert sum(n - 1 for n in starts.values()) <= kills * 4


async def _moved(store, run_id: str, frame: int) -> bool:
    run = await store.get_run(run_id)
    return run.frame >= frame or run.status != RunStatus.RUNNING


async def test_kill_9_of_a_foreground_run_is_taken_over_by_a_worker(tmp_path, smithers):
    wf = tmp_path / "blocks.py"
    wf.write_text(blocks_once())
    worker = WorkerProc(smithers)
    owner = smithers.spawn("run", wf, "--run-id", "fg", "--quiet")
    try:
        async with await Store.open(smithers.db, readonly=True) as store:
            await until(store, lambda: _running(store, "fg", "block"), "the step to block")
            assert (await store.get_run("fg")).owner.pid == owner.pid
            owner.send_signal(signal.SIGKILL)
            owner.communicate()
            await until(store, lambda: finished(store, ["fg"]), "a worker to finish it")
    finally:
        worker.stop()
    rep = smithers.json("show", "fg")
    nodes = {n["id"]: n for n in rep["nodes"]}
    assert (nodes["block"]["attempts"], nodes["block"]["output"]) == (2, "attempt 2")
    assert worker.wait_line("run fg (blocks) taken")


async def _running(store, run_id: str, node: str) -> bool:
    recs = await store.node_records(run_id, node)
    return bool(recs) and recs[0].state == "running"


# --- decisions ----------------------------------------------------------------------------------------
async def test_approve_from_another_process_continues_the_run_without_resume(tmp_path, db, write_workflow):
    wf = write_workflow("gated.py", GATED)
    cli = cli_for(tmp_path, db)
    worker = WorkerProc(cli)
    try:
        assert cli("run", wf, "--run-id", "g1", "--detach").returncode == 0
        waiting = cli("logs", "g1", "--follow")
        assert waiting.returncode == 3, waiting.stderr  # it waits for a human; nobody holds it
        row = next(r for r in cli.json("ps") if r["run_id"] == "g1")
        assert (row["status"], row["owner"]) == ("waiting", None)
        approved = cli("approve", "g1", "--by", "ann")
        assert approved.returncode == 0 and "a worker continues the run" in approved.stdout
        follow = cli("logs", "g1", "--follow")
        assert follow.returncode == 0, follow.stderr
    finally:
        worker.stop()
    rep = cli.json("show", "g1")
    assert rep["status"] == "finished" and {n["id"]: n["output"] for n in rep["nodes"]}["after"] == "after the gate"
    assert len([ln for ln in worker.lines if "run g1 (gated) taken" in ln]) == 2  # queued, then decided


WAITS = """
from engine import Sequence, Signal, Task, Timer, workflow


def after(ctx):
    return {"signal": ctx.get("go"), "timer": ctx.get("nap") is not None}


@workflow
def waits(ctx):
    return Sequence(Task("before", value=1), Timer("nap", seconds=ctx.input["nap"]), Signal("go"),
                    Task("after", run=after))
"""


async def test_durable_waits_outlive_their_worker_and_move_on_when_due_or_signalled(tmp_path, smithers, write_workflow):
    """A run sleeping on a timer when its worker stops is held by nobody; another worker takes it when the
    timer is due. A signal sent while nobody holds the run: a worker takes it and goes on."""
    wf = write_workflow("waits.py", WAITS)
    first = WorkerProc(smithers)
    assert smithers("run", wf, "--run-id", "w1", "--input", '{"nap": 3}', "--detach").returncode == 0
    async with await Store.open(smithers.db, readonly=True) as store:
        await until(store, lambda: _timer_set(store, "w1"), "the run to sleep on its timer")
        assert first.stop() == 0  # graceful: nothing in flight, the run is given up as it is
        run = await store.get_run("w1")
        assert (run.status, run.owner) == (RunStatus.WAITING, None) and run.wake_at is not None
        second = WorkerProc(smithers)
        third: WorkerProc | None = None
        try:
            await until(store, lambda: _waiting_for_signal(store, "w1"), "the timer to fire in the second worker")
            assert (await store.get_run("w1")).owner.pid == second.pid
            assert second.stop() == 0  # it waits for a signal now: given up again, held by nobody
            assert (await store.get_run("w1")).owner is None
            sent = smithers("signal", "w1", "go", "--data", '{"n": 7}')
            assert sent.returncode == 0, sent.stderr
            third = WorkerProc(smithers)  # started after the signal: it finds the run by the claim rule
            await until(store, lambda: finished(store, ["w1"]), "a worker to take the signal and finish")
        finally:
            second.stop()
            if third is not None:
                third.stop()
    rep = smithers.json("show", "w1")
    assert {n["id"]: n["output"] for n in rep["nodes"]}["after"] == {"signal": {"n": 7}, "timer": True}


async def _timer_set(store, run_id: str) -> bool:
    run = await store.get_run(run_id)
    return run.status == RunStatus.WAITING and run.wake_at is not None


async def _waiting_for_signal(store, run_id: str) -> bool:
    recs = await store.node_records(run_id, "go")
    return bool(recs) and recs[0].state == "waiting"


# --- who owns what -------------------------------------------------------------------------------------
async def test_ps_and_status_show_the_worker_that_owns_a_run(tmp_path, smithers):
    wf = tmp_path / "blocks.py"
    wf.write_text(blocks_once(seconds=600))
    worker = WorkerProc(smithers)
    try:
        assert smithers("run", wf, "--run-id", "b1", "--detach").returncode == 0
        async with await Store.open(smithers.db, readonly=True) as store:
            await until(store, lambda: _running(store, "b1", "block"), "the worker to run the step")
        (row,) = smithers.json("ps")
        assert row["status"] == "running"
        assert row["owner"] == {"id": worker.id, "host": row["owner"]["host"], "pid": worker.pid, "alive": True,
                                "worker": True}
        text = smithers("ps").stdout
        assert f"{worker.id} {row['owner']['host']}:{worker.pid}" in text
        (w,) = smithers.json("status")["workers"]
        assert (w["id"], w["pid"], [r["run_id"] for r in w["runs"]]) == (worker.id, worker.pid, ["b1"])
        worker.kill()
        # nobody runs it now, and no worker is left to take it: shown as interrupted, never running
        (row,) = smithers.json("ps")
        assert (row["status"], row["owner"]["alive"]) == ("interrupted", False)
        assert "(gone)" in smithers("ps").stdout
        assert smithers.json("status")["workers"] == []
    finally:
        if worker.proc.poll() is None:
            worker.kill()


# --- bad input -----------------------------------------------------------------------------------------
def test_worker_on_a_read_only_sqlite_file_refuses_and_writes_nothing(tmp_path, smithers, write_workflow):
    wf = write_workflow("steps.py", STEPS)
    assert smithers("run", wf, "--input", '{"n": 1}', "--detach").returncode == 0
    smithers.db.chmod(0o444)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("smithers.db")}
    done = smithers("worker", timeout=60)
    assert done.returncode == 4, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "read-only" in lines[0] and "chmod" in lines[0]
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("smithers.db")}
    assert after == before
    os.chmod(smithers.db, 0o644)
    assert [r["status"] for r in smithers.json("ps")] == ["queued"]


def test_worker_on_a_database_of_a_newer_schema_refuses(tmp_path, smithers):
    newer_database(smithers.db)
    before = smithers.db.read_bytes()
    done = smithers("worker", timeout=60)
    assert done.returncode == 4
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "newer smithers" in lines[0]
    assert smithers.db.read_bytes() == before
