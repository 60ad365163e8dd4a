"""python -m bench.workers: the figures of background workers, on SQLite and on PostgreSQL.

  throughput        1,000 detached runs of 10 no-op steps, with 1, 2, 4 and 8 worker processes
                    (4 runs at a time each): runs/s and steps/s, and the speed-up over 1 worker
  per step          one run of a loop of N no-op steps in this process, on PostgreSQL next to
                    SQLite, both at full durability (every commit durable before the next step)
  approve           with a worker running: from a decision recorded by another process to the
                    next step's start
  takeover          kill -9 of the worker that runs a run: until another worker on this host
                    has taken it and its interrupted step starts again

PostgreSQL is a throwaway server started here (tests/pgserver.py: initdb into a temporary
directory, a free port on 127.0.0.1), with fsync on: full durability, like SQLite's default.
"""
from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

import bench
from engine.runtime import Engine
from engine.state import RunStatus
from engine.store import Store

ROOT = Path(__file__).resolve().parents[1]
RUNS = 1000
WORKER_COUNTS = (1, 2, 4, 8)


def line(label: str, value: str, target: str, ok: bool | None = None) -> None:
    mark = "" if ok is None else ("   ok" if ok else "   MISSED")
    print(f"{label:<46}{value:>16}   ({target}){mark}", flush=True)


class Workers:
    """N `smithers worker` processes on one database, logging to files in `tmp`."""

    def __init__(self, db: str, n: int, tmp: Path, concurrency: int = 4) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        env.pop("SMITHERS_DB", None)
        self.logs = [tmp / f"worker-{time.monotonic_ns()}-{i}.log" for i in range(n)]
        self.procs = []
        for log in self.logs:
            with open(log, "wb") as f:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "smithers_tui", "--db", db, "worker", "--concurrency", str(concurrency)],
                    cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 120
        while not all("taking runs from" in log.read_text(errors="replace") for log in self.logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.kill()
                raise RuntimeError("workers did not start: " + " / ".join(log.read_text()[-300:] for log in self.logs))
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        for p in self.procs:
            p.wait()


async def wait_for(store: Store, done: Callable[[], Awaitable[bool]], timeout: float = 600) -> None:
    """Look again whenever the database changed, until done()."""
    deadline = time.monotonic() + timeout
    seen = None
    while not await done():
        while (version := await store.data_version()) == seen:
            if time.monotonic() > deadline:
                raise TimeoutError("the benchmark stalled")
            await asyncio.sleep(0.01)
        seen = version


# --- throughput ----------------------------------------------------------------------------------
async def throughput(db: str, n_workers: int, tmp: Path, runs: int = RUNS) -> float:
    """Seconds for `n_workers` to execute `runs` queued runs of 10 steps. The workers are started
    first and paused (SIGSTOP) while the runs are queued, so neither start-up nor queueing counts."""
    workers = Workers(db, n_workers, tmp)
    try:
        workers.signal(signal.SIGSTOP)
        async with await Store.open(db) as store:
            eng = Engine(store)
            for i in range(runs):
                await eng.queue(bench.ten, "module:bench:bench-ten", run_id=f"t{i:05d}", workdir=tmp)
        async with await Store.open(db, readonly=True) as store:
            t0 = time.perf_counter()
            workers.signal(signal.SIGCONT)

            async def all_done() -> bool:
                return len(await store.list_runs(RunStatus.FINISHED, limit=runs + 1)) >= runs

            await wait_for(store, all_done)
            took = time.perf_counter() - t0
            assert not await store.list_runs(RunStatus.FAILED, limit=1)
        return took
    finally:
        workers.kill()


# --- per step in one run ---------------------------------------------------------------------------
async def per_step(db: str, n: int = 1000) -> float:
    bench.PARAMS["n"] = n
    store = await Store.open(db)
    try:
        engine = Engine(store)
        t0 = time.perf_counter()
        ex = await engine.start(bench.loop_async, "module:bench:bench-loop")
        status = await ex.execute()
        took = time.perf_counter() - t0
        await engine.close()
        assert status == "finished", status
        return took / n * 1000
    finally:
        await store.close()


# --- approve -> next step ------------------------------------------------------------------------------
async def approve_latency(db: str, tmp: Path, rounds: int = 5) -> list[float]:
    """Seconds from a decision (recorded in this process, as `smithers approve` does) to the next
    step's start in the worker."""
    workers = Workers(db, 1, tmp)
    out = []
    try:
        async with await Store.open(db) as store:
            eng = Engine(store)
            for i in range(rounds):
                rid = (await eng.queue(bench.gate, "module:bench:bench-gate", run_id=f"g{i}", workdir=tmp)).run_id
                await wait_for(store, lambda rid=rid: _status(store, rid, RunStatus.WAITING))
                t0 = time.time()
                await eng.decide(rid, None, None, True, by="bench")
                await wait_for(store, lambda rid=rid: _started(store, rid, "next"))
                (ev,) = [e for e in await store.events(rid, types=["node_started"]) if e.node_id == "next"]
                out.append(ev.at - t0)
    finally:
        workers.kill()
    return out


async def _status(store: Store, run_id: str, status: RunStatus) -> bool:
    return (await store.get_run(run_id)).status == status


async def _started(store: Store, run_id: str, node: str, attempt: int = 1) -> bool:
    return any(e.node_id == node and e.data.get("attempt") == attempt
               for e in await store.events(run_id, types=["node_started"]))


# --- takeover after kill -9 ------------------------------------------------------------------------------
async def takeover(db: str, tmp: Path, rounds: int = 3) -> list[float]:
    """Seconds from kill -9 of the worker that runs a run to its interrupted step starting again in
    another worker on this host."""
    out = []
    for i in range(rounds):
        workers = Workers(db, 2, tmp)
        try:
            async with await Store.open(db) as store:
                eng = Engine(store)
                rid = (await eng.queue(bench.hold, "module:bench:bench-hold", run_id=f"k{i}", workdir=tmp)).run_id
                await wait_for(store, lambda rid=rid: _started(store, rid, "hold"))
                owner = (await store.get_run(rid)).owner
                assert owner is not None
                t0 = time.time()
                os.kill(owner.pid, signal.SIGKILL)
                await wait_for(store, lambda rid=rid: _started(store, rid, "hold", attempt=2))
                ev = [e for e in await store.events(rid, types=["node_started"]) if e.data.get("attempt") == 2]
                out.append(ev[0].at - t0)
        finally:
            workers.kill()
    return out


# --- all of it -----------------------------------------------------------------------------------------
def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests.pgserver import PgServer

    print(f"smithers worker benchmarks ({os.cpu_count()} cpus; PostgreSQL {PgServer(fsync=True).bindir.parent.name}, "
          "fsync on; SQLite at full durability)")
    with tempfile.TemporaryDirectory(prefix="smithers-bench-workers-") as d:
        tmp = Path(d)
        server = PgServer(fsync=True).init().start()
        try:
            dbs: dict[str, Callable[[str], str]] = {
                "SQLite": lambda name: str(tmp / f"{name}.db"),
                "PostgreSQL": lambda name: server.create_database(name),
            }
            sqlite_step = asyncio.run(per_step(dbs["SQLite"]("step")))
            pg_step = asyncio.run(per_step(dbs["PostgreSQL"]("step")))
            line("per step, one run, SQLite (full):", f"{sqlite_step:.3f} ms/step", "for comparison")
            line("per step, one run, PostgreSQL (full):", f"{pg_step:.3f} ms/step",
                 f"{pg_step / sqlite_step:.1f}x SQLite's; target <= 2x", pg_step <= 2 * sqlite_step)
            for store_name, make in dbs.items():
                base = None
                for n in WORKER_COUNTS:
                    took = asyncio.run(throughput(make(f"tp{n}"), n, tmp))
                    rate = RUNS / took
                    base = base or rate
                    line(f"throughput, {store_name}, {n} worker{'s' if n > 1 else ''}:",
                         f"{rate:,.0f} runs/s", f"{rate * 10:,.0f} steps/s; {rate / base:.2f}x 1 worker")
            for store_name, make in dbs.items():
                lat = asyncio.run(approve_latency(make("approve"), tmp))
                line(f"approve -> next step, {store_name}:", f"{statistics.median(lat):.3f} s",
                     f"median of {len(lat)}, max {max(lat):.3f} s; target < 0.5 s", max(lat) < 0.5)
            for store_name, make in dbs.items():
                tk = asyncio.run(takeover(make("takeover"), tmp))
                line(f"takeover after kill -9, {store_name}:", f"{statistics.median(tk):.3f} s",
                     f"median of {len(tk)}, max {max(tk):.3f} s; target < 2 s", max(tk) < 2)
        finally:
            server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
