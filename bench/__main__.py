"""python -m bench [--profile NAME]: engine figures next to their targets.

  engine overhead   a Loop of N iterations of one no-op step, N = 1,000 and 10,000, in this process,
                    at full durability (every commit fsynced: the default) and at normal (async
                    step; the sync step, which runs in a thread, for information)
  through the CLI   the same loop through `smithers run` (what users run), at both durabilities:
                    (time of N=2,200 - time of N=200) / 2,000, so start-up does not count; next to
                    one raw fsync'd SQLite commit on this disk, the floor for a step that must be
                    durable before the next one starts
  fan-out           a Parallel of 1,000 no-op steps, max_concurrency 50
  resume            a run of 10,000 frames: resume until its next step starts
  disk              a Loop of 2,000 steps each returning 2 KB: bytes on disk per step / 2 KB

Databases go to a temporary directory. `--profile overhead|fan-out|resume|disk` prints the top of
a cProfile of that measurement.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench
from engine.runtime import Engine
from engine.store import Store


def line(label: str, value: str, target: str, ok: bool | None = None) -> None:
    mark = "" if ok is None else ("   ok" if ok else "   MISSED")
    print(f"{label:<46}{value:>14}   ({target}){mark}", flush=True)


async def timed_run(db: Path, wf: Any, durability: str = "full", **engine_kw: Any) -> tuple[float, str, int, str]:
    store = await Store.open(db, durability=durability)
    try:
        engine = Engine(store, **engine_kw)
        t0 = time.perf_counter()
        ex = await engine.start(wf, f"module:bench:{wf.name}")
        status = await ex.execute()
        took = time.perf_counter() - t0
        await engine.close()
        return took, status, ex.frame, ex.run_id
    finally:
        await store.close()


# --- the measurements --------------------------------------------------------------------------
async def overhead(tmp: Path, n: int, sync: bool = False, durability: str = "full") -> float:
    bench.PARAMS["n"] = n
    wf = bench.loop_sync if sync else bench.loop_async
    db = tmp / f"overhead-{n}-{'sync' if sync else 'async'}-{durability}-{time.monotonic_ns()}.db"
    took, status, _, _ = await timed_run(db, wf, durability)
    assert status == "finished", status
    return took / n * 1000


CLI_LOOP = """
from engine import Loop, Task, workflow


async def noop(ctx):
    return None


@workflow
def loop(ctx):
    return Loop("l", Task("step", run=noop), until=False, max_iterations={n})
"""


def cli_per_step(tmp: Path, durability: str, small: int = 200, large: int = 2200) -> float:
    """ms per step through `smithers run`, start-up and the final report excluded by difference."""
    took = {}
    for n in (small, large):
        flow = tmp / f"cli-{n}.py"
        flow.write_text(CLI_LOOP.format(n=n))
        db = tmp / f"cli-{durability}-{n}-{time.monotonic_ns()}.db"
        env = {**os.environ, "SMITHERS_ENGINE__DURABILITY": durability}
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "smithers_tui", "--db", str(db), "run", str(flow), "-q"],
                              env=env, capture_output=True, text=True)
        took[n] = time.perf_counter() - t0
        assert done.returncode == 0, done.stderr
    return (took[large] - took[small]) / (large - small) * 1000


def raw_commit(tmp: Path, n: int = 2000) -> float:
    """One fsync'd SQLite commit of one small row (WAL, synchronous=FULL), in ms."""
    db = tmp / f"raw-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
        t0 = time.perf_counter()
        for _ in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (b) VALUES (?)", ("x" * 200,))
            conn.execute("COMMIT")
        return (time.perf_counter() - t0) / n * 1000
    finally:
        conn.close()


async def fan_out(tmp: Path, fan: int = 1000, limit: int = 50) -> tuple[float, int]:
    bench.PARAMS.update(fan=fan, fan_limit=limit)
    db = tmp / "fan-out.db"
    took, status, frames, run_id = await timed_run(db, bench.fan_out, max_concurrency=limit)
    assert status == "finished", status
    conn = sqlite3.connect(db)
    try:
        (done,) = conn.execute("SELECT count(*) FROM nodes WHERE run_id=? AND state='done'", (run_id,)).fetchone()
    finally:
        conn.close()
    assert done == fan, (done, fan)
    return took, frames


class SqliteClock:
    """Time spent inside the store's transactions (in the store's thread), to tell the database's
    share of a step from the engine's own."""

    def __init__(self) -> None:
        import engine.store.sqlite as sqlite_store

        self.mod = sqlite_store
        self.orig = getattr(sqlite_store, "_apply", None)
        self.seconds = 0.0
        self.count = 0

    def __enter__(self) -> "SqliteClock":
        if self.orig is not None:
            orig = self.orig

            def timed(conn: Any, ops: Any, *rest: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return orig(conn, ops, *rest)
                finally:
                    self.seconds += time.perf_counter() - t0
                    self.count += 1

            self.mod._apply = timed
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.orig is not None:
            self.mod._apply = self.orig


async def resume_long_run(tmp: Path, frames: int = 10_000) -> tuple[float, int]:
    """Build a run of `frames` frames whose next step is running, stop it (as a crash would leave
    it), then in a fresh Store + Engine time resume() + execute until that step starts again."""
    bench.PARAMS["n"] = frames
    db = tmp / "resume.db"
    store = await Store.open(db)
    engine = Engine(store)
    ex = await engine.start(bench.long_then_next, "module:bench:bench-resume")
    started = asyncio.Event()
    engine.bus.subscribe(lambda ev: started.set() if ev.type == "node_started" and ev.node_id == "next" else None)
    task = asyncio.create_task(ex.execute())
    await started.wait()
    built = ex.frame
    task.cancel()  # the loop dies mid-step, like a killed process (the lease is released)
    try:
        await task
    except asyncio.CancelledError:
        pass
    await engine.close()
    await store.close()

    t0 = time.perf_counter()
    store = await Store.open(db)
    engine = Engine(store)
    again = asyncio.Event()
    engine.bus.subscribe(lambda ev: again.set() if ev.type == "node_started" and ev.node_id == "next" else None)
    ex = await engine.resume(ex.run_id)
    task = asyncio.create_task(ex.execute())
    await again.wait()
    took = time.perf_counter() - t0
    await engine.close()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    await store.close()
    return took, built


async def disk(tmp: Path, n: int = 2000, size: int = 2048) -> tuple[float, int]:
    bench.PARAMS.update(n=n, size=size)
    db = tmp / "disk.db"
    _, status, _, _ = await timed_run(db, bench.disk)
    assert status == "finished", status
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    total = sum(p.stat().st_size for p in db.parent.iterdir() if p.name.startswith("disk.db"))
    return total / n / size, total


def profiled(coro_fn: Any, *args: Any) -> Any:
    prof = cProfile.Profile()
    prof.enable()
    result = asyncio.run(coro_fn(*args))
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(35)
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=["overhead", "fan-out", "resume", "disk"])
    p.add_argument("--engine-only", action="store_true",
                   help="skip the app's figures (about a minute) and the workers' (several minutes)")
    p.add_argument("--workers-only", action="store_true", help="only the workers' figures (bench/workers.py)")
    args = p.parse_args(argv)
    if args.workers_only:
        from bench import workers

        return workers.main()
    with tempfile.TemporaryDirectory(prefix="smithers-bench-") as d:
        tmp = Path(d)
        if args.profile:
            fn, fargs = {"overhead": (overhead, (tmp, 10_000)), "fan-out": (fan_out, (tmp,)),
                         "resume": (resume_long_run, (tmp,)), "disk": (disk, (tmp,))}[args.profile]
            print(profiled(fn, *fargs))
            return 0
        print(f"smithers engine benchmarks (python {sys.version.split()[0]}, {os.cpu_count()} cpus, db in {tmp}; "
              "after a discarded warm-up run)")
        asyncio.run(overhead(tmp, 300))  # warm-up, discarded: first-run imports and statement caches
        raw = raw_commit(tmp)
        line("one raw fsync'd SQLite commit:", f"{raw:.3f} ms", "this disk's floor for a durable step")
        full_cli = cli_per_step(tmp, "full")
        line("per step via `smithers run`, full:", f"{full_cli:.3f} ms/step",
             "target <= 0.25 (LangGraph's SQLite saver, fsync'd: ~1 ms)", full_cli <= 0.25)
        normal_cli = cli_per_step(tmp, "normal")
        line("per step via `smithers run`, normal:", f"{normal_cli:.3f} ms/step", "for information (no fsync per commit)")
        small = asyncio.run(overhead(tmp, 1_000))
        large = asyncio.run(overhead(tmp, 10_000))
        line("engine overhead in-process, full, N=1,000:", f"{small:.3f} ms/step", "for information")
        line("engine overhead in-process, full, N=10,000:", f"{large:.3f} ms/step", "for information")
        ratio = large / small
        line("  ratio N=10,000 / N=1,000:", f"{ratio:.2f}x", "target <= 1.5x", ratio <= 1.5)
        normal = asyncio.run(overhead(tmp, 10_000, durability="normal"))
        line("engine overhead in-process, normal, N=10,000:", f"{normal:.3f} ms/step", "target <= 0.2", normal <= 0.2)
        with SqliteClock() as clock:
            again = asyncio.run(overhead(tmp, 10_000, durability="normal"))
        if clock.count:
            in_db = clock.seconds / 10_000 * 1000
            line("  of which SQLite transactions:", f"{in_db:.3f} ms/step",
                 f"{clock.count:,} transactions; engine + thread hop {again - in_db:.3f} ms/step")
        sync = asyncio.run(overhead(tmp, 1_000, sync=True, durability="normal"))
        line("  sync step (in a thread), normal, N=1,000:", f"{sync:.3f} ms/step", "for information")
        fan, fan_frames = asyncio.run(fan_out(tmp))
        line("fan-out, 1,000 steps, 50 at once:", f"{fan:.2f} s", f"target < 2 s; {fan_frames} frames", fan < 2)
        took, frames = asyncio.run(resume_long_run(tmp))
        line(f"resume after {frames:,} frames:", f"{took:.3f} s", "target < 0.25 s, to the next step's start",
             took < 0.25)
        per, total = asyncio.run(disk(tmp))
        line("disk, 2,000 steps x 2 KB output:", f"{per:.2f}x", f"target <= 3x; {total / 1e6:.1f} MB in all", per <= 3)
    if not args.engine_only:
        print()
        from bench import tui

        tui.main()
        print()
        from bench import workers

        workers.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
