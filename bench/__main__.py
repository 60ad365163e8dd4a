"""python -m bench [--profile NAME]: engine figures next to their targets.

  engine overhead   a Loop of N iterations of one no-op step, N = 1,000 and 10,000 (async step;
                    the sync step, which runs in a thread, for information)
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
    print(f"{label:<38}{value:>14}   ({target}){mark}", flush=True)


async def timed_run(db: Path, wf: Any, **engine_kw: Any) -> tuple[float, str, int, str]:
    store = await Store.open(db)
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
async def overhead(tmp: Path, n: int, sync: bool = False) -> float:
    bench.PARAMS["n"] = n
    wf = bench.loop_sync if sync else bench.loop_async
    took, status, _, _ = await timed_run(tmp / f"overhead-{n}-{'sync' if sync else 'async'}-{time.monotonic_ns()}.db", wf)
    assert status == "finished", status
    return took / n * 1000


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
    """Time spent inside the store's transactions (in aiosqlite's thread), to tell the database's
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
    p.add_argument("--engine-only", action="store_true", help="skip the app's figures (about a minute)")
    args = p.parse_args(argv)
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
        small = asyncio.run(overhead(tmp, 1_000))
        large = asyncio.run(overhead(tmp, 10_000))
        line("engine overhead, N=1,000:", f"{small:.3f} ms/step", "target <= 0.2", small <= 0.2)
        line("engine overhead, N=10,000:", f"{large:.3f} ms/step", "target <= 0.2", large <= 0.2)
        ratio = large / small
        line("  ratio N=10,000 / N=1,000:", f"{ratio:.2f}x", "target <= 1.5x", ratio <= 1.5)
        with SqliteClock() as clock:
            again = asyncio.run(overhead(tmp, 10_000))
        if clock.count:
            in_db = clock.seconds / 10_000 * 1000
            line("  of which SQLite transactions:", f"{in_db:.3f} ms/step",
                 f"{clock.count:,} transactions; engine + thread hop {again - in_db:.3f} ms/step")
        sync = asyncio.run(overhead(tmp, 1_000, sync=True))
        line("  sync step (in a thread), N=1,000:", f"{sync:.3f} ms/step", "for information")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
