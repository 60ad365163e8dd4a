"""Durability end to end: `smithers run` is SIGKILLed at random moments, `smithers resume` (also
killed at random) until the run finishes. Every step finishes exactly once in the database; a step
ran twice only if it was in flight at a kill; a step whose completion was committed never runs
again; the outputs equal an uninterrupted run's. And the lease: resume refuses a live owner, takes
over at once from a killed one, and --force takes over anyway."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support import Smithers, blocks_once, done_frames, wait_until as wait_for

MAX_CONCURRENCY = 4  # the engine's default, which `smithers run` uses
ROUNDS = 15
WIDE = 5

DURABLE = f"""
import asyncio
import os
import time
from pathlib import Path

from engine import Loop, Parallel, Sequence, Task, workflow

SIDE = Path(__file__).with_name("side.log")


def mark(what, ctx):
    fd = os.open(SIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{{what}} {{ctx.node_id}}#{{ctx.iteration}}\\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def think(ctx):
    mark("start", ctx)
    await asyncio.sleep(0.03)
    prev = ctx.get("check", ctx.iteration - 1) if ctx.iteration else 0
    out = {{"round": ctx.iteration, "value": (prev or 0) + ctx.iteration + 1}}
    mark("end", ctx)
    return out


async def check(ctx):
    mark("start", ctx)
    await asyncio.sleep(0.02)
    out = ctx.output("think", ctx.iteration)["value"] * 2
    mark("end", ctx)
    return out


def wide(ctx):
    mark("start", ctx)
    time.sleep(0.08)
    total = sum(ctx.get("check", i) for i in ctx.iterations("check"))
    mark("end", ctx)
    return f"{{ctx.node_id}}:{{total}}"


@workflow
def durable(ctx):
    return Sequence(
        Loop("rounds", Task("think", run=think), Task("check", run=check), max_iterations={ROUNDS}),
        Parallel(*[Task(f"wide{{i}}", run=wide) for i in range({WIDE})]),
        Task("total", value=[ctx.get(f"wide{{i}}") for i in range({WIDE})]),
    )
"""


EXPECTED_TASKS = ({("think", i) for i in range(ROUNDS)} | {("check", i) for i in range(ROUNDS)}
                  | {(f"wide{i}", 0) for i in range(WIDE)} | {("total", 0)})


def side_log(path: Path) -> list[tuple[str, tuple[str, int]]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, key = line.split(" ")
        nid, it = key.rsplit("#", 1)
        out.append((what, (nid, int(it))))
    return out



def outputs(rep: dict) -> dict[tuple[str, int], object]:
    return {(n["id"], n["iteration"]): n["output"] for n in rep["nodes"] if n["kind"] == "task"}


def setup_run_dir(tmp_path: Path, name: str) -> tuple[Smithers, Path, Path]:
    folder = tmp_path / name
    folder.mkdir()
    wf = folder / "durable.py"
    wf.write_text(DURABLE)
    return Smithers(folder, folder / "smithers.db"), wf, folder / "side.log"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [7, 2024])
def test_kill_and_resume_until_finished_runs_every_step_once(tmp_path, seed):
    rng = random.Random(seed)

    # the reference: one uninterrupted run
    ref_cli, ref_wf, ref_side = setup_run_dir(tmp_path, "reference")
    done = ref_cli("run", ref_wf, "--run-id", "ref", "--quiet")
    assert done.returncode == 0, done.stderr
    reference = outputs(ref_cli.json("show", "ref"))
    assert set(reference) == EXPECTED_TASKS
    assert Counter(w for w, _ in side_log(ref_side)) == {"start": len(EXPECTED_TASKS) - 1,
                                                          "end": len(EXPECTED_TASKS) - 1}

    cli, wf, side = setup_run_dir(tmp_path, "killed")
    kills, processes = 0, 0
    args: list = ["run", wf, "--run-id", "dur", "--quiet"]
    while True:
        assert processes < 40, "the run never finished"
        lines_before = len(side_log(side))
        proc = cli.spawn(*args)
        processes += 1
        if kills < 6:
            try:  # let it make some progress, then kill it somewhere in the middle of a step
                wait_for(lambda lb=lines_before, p=proc: len(side_log(side)) > lb or p.poll() is not None,
                         what="the process to run a step")
                time.sleep(rng.uniform(0.0, 0.25))
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
        out, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, err)
        args = ["resume", "dur", "--quiet"]
    assert kills >= 3, "the kills should land while the run works"

    rep = cli.json("show", "dur")
    assert rep["status"] == "finished"
    tasks = {(n["id"], n["iteration"]): n for n in rep["nodes"] if n["kind"] == "task"}
    assert set(tasks) == EXPECTED_TASKS
    assert all(n["state"] == "done" for n in tasks.values())

    # the outputs equal the uninterrupted run's
    assert outputs(rep) == reference

    # every step finished exactly once in the database; every execution was committed as started first
    conn = sqlite3.connect(f"file:{cli.db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT node_id, iteration, attempt, outcome FROM attempts WHERE run_id='dur'").fetchall()
    finally:
        conn.close()
    attempts: dict[tuple[str, int], dict[int, str | None]] = {}
    for nid, it, attempt, outcome in rows:
        attempts.setdefault((nid, it), {})[attempt] = outcome
    starts = Counter(k for w, k in side_log(side) if w == "start")
    ends = Counter(k for w, k in side_log(side) if w == "end")
    for key in EXPECTED_TASKS - {("total", 0)}:
        its = attempts[key]
        assert sorted(its) == list(range(1, len(its) + 1)), (key, its)
        assert [a for a, o in its.items() if o == "done"] == [max(its)], (key, its)
        assert tasks[key]["attempts"] == max(its)
        assert 1 <= starts[key] <= len(its), (key, starts[key], its)
        assert ends[key] >= 1, key
    # a step ran again only because it was in flight at a kill: bounded by kills x concurrency
    duplicates = sum(n - 1 for n in starts.values())
    assert duplicates <= kills * MAX_CONCURRENCY, (duplicates, kills)
    reruns = sum(len(its) - 1 for its in attempts.values())
    assert reruns <= kills * MAX_CONCURRENCY, (reruns, kills)

    # no step whose completion was committed ran again: after its "done" frame it is never running
    assert set(done_frames(cli.json("frames", "dur"))) >= EXPECTED_TASKS

    # and the side-effect log agrees: no "start" of a step after an "end" of it was committed
    events = [json.loads(line) for line in cli("logs", "dur", "--json").stdout.splitlines()]
    interrupted = Counter((e["node_id"], e["iteration"]) for e in events if e["type"] == "node_interrupted")
    for key, n in starts.items():
        if n > 1:
            assert interrupted[key] >= n - 1, (key, n, interrupted[key])


def spawn_blocking(tmp_path: Path, run_id: str):
    cli = Smithers(tmp_path, tmp_path / "smithers.db")
    wf = tmp_path / "blocks.py"
    wf.write_text(blocks_once())
    proc = cli.spawn("run", wf, "--run-id", run_id, "--quiet")
    wait_for(lambda: (tmp_path / "blocked-once").exists() or proc.poll() is not None, what="the step to block")
    assert proc.poll() is None, proc.communicate()
    return cli, proc


def test_resume_refuses_a_live_owner_and_force_takes_over(tmp_path):
    cli, owner = spawn_blocking(tmp_path, "lease")
    try:
        done = cli("resume", "lease")
        assert done.returncode == 4
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {owner.pid}" in lines[0] and "--force" in lines[0]
        assert cli.json("show", "lease")["owner"]["pid"] == owner.pid
        done = cli("resume", "lease", "--force", "--json", timeout=30)
        assert done.returncode == 0, done.stderr
        rep = json.loads(done.stdout)
        nodes = {n["id"]: n for n in rep["nodes"]}
        assert rep["status"] == "finished" and nodes["block"]["output"] == "attempt 2"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.communicate()


def test_resume_takes_over_at_once_from_a_killed_owner(tmp_path):
    cli, owner = spawn_blocking(tmp_path, "dead")
    owner.send_signal(signal.SIGKILL)
    owner.communicate()
    rep = cli.json("show", "dead")
    assert rep["status"] == "interrupted" and rep["owner"]["pid"] == owner.pid  # the lease was never released
    done = cli("resume", "dead", "--json", timeout=20)  # well under the 30 s after which a lease goes stale
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    nodes = {n["id"]: n for n in rep["nodes"]}
    assert rep["status"] == "finished"
    assert (nodes["first"]["attempts"], nodes["block"]["attempts"], nodes["block"]["output"]) == (0, 2, "attempt 2")
