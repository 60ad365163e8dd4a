"""PostgreSQL for many machines, against a real server: workers of two "hosts" (distinct host ids)
on one database — a stale lease from the other host is taken over, a fresh one is not; a server
restarted in the middle of a run — the workers reconnect and go on, nothing lost or run twice;
bad URLs, a wrong password and a database of a newer schema — one line, exit 4, nothing written."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from engine.lease import STALE_AFTER_S, Owner
from engine.loader import load_target
from engine.runtime import Engine
from engine.state import RunStatus
from engine.store import Store
from tests.pgserver import PgServer, free_port
from tests.support import Smithers, WorkerProc, clean_env, until

LOOP = """
import asyncio
import os
from pathlib import Path

from engine import Loop, Task, workflow

SIDE = Path(__file__).with_name("side.log")


async def step(ctx):
    await asyncio.sleep(0.02)
    fd = os.open(SIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.run_id} {ctx.iteration}\\n".encode())
    finally:
        os.close(fd)
    return ctx.iteration * 2


@workflow
def looped(ctx):
    return Loop("l", Task("step", run=step), max_iterations=ctx.input["n"])
"""


def side_counts(path: Path, run_id: str) -> Counter:
    if not path.exists():
        return Counter()
    return Counter(int(it) for rid, it in (ln.split() for ln in path.read_text().splitlines()) if rid == run_id)


async def _status(store, run_id: str, status: RunStatus) -> bool:
    return (await store.get_run(run_id)).status == status


async def test_a_stale_lease_of_another_host_is_taken_over_and_a_fresh_one_is_not(tmp_path, pg_url, write_workflow):
    wf, target = load_target(str(write_workflow("looped.py", LOOP)))
    host_a = Owner("owner-on-host-a", "host-a", 4242, None)  # a process on another machine
    async with await Store.open(pg_url) as store:
        eng = Engine(store)
        for rid, beat in (("stale", time.time() - STALE_AFTER_S - 10), ("fresh", time.time())):
            ex = await eng.start(wf, target, {"n": 3}, run_id=rid, workdir=tmp_path)
            assert await store.take_over(rid, host_a, ex.run.owner.id, {}, beat)
        # host b: same machine here, but its own host id, so host a's leases are judged by their heartbeat
        cli = Smithers(tmp_path, pg_url)  # type: ignore[arg-type]
        worker = WorkerProc(cli, env=clean_env(SMITHERS_HOST_ID="host-b"))
        try:
            await until(store, lambda: _status(store, "stale", RunStatus.FINISHED), "host b to finish the stale run")
            # a run queued after both: claims go oldest first, so once it has run, the fresh one was passed over
            await eng.queue(wf, target, {"n": 1}, run_id="later", workdir=tmp_path)
            await until(store, lambda: _status(store, "later", RunStatus.FINISHED), "the later run")
        finally:
            assert worker.stop() == 0
        fresh = await store.get_run("fresh")
        assert (fresh.status, fresh.owner.id, fresh.owner.host, fresh.frame) == (RunStatus.RUNNING, host_a.id,
                                                                                  "host-a", 0)
        stale = await eng.report("stale")
        assert [e.data["owner"] for e in await store.events("stale", types=["run_resumed"])] == [worker.id]
        assert [n.output for n in stale.nodes if n.id == "step"] == [0, 2, 4]
    assert side_counts(tmp_path / "side.log", "fresh") == Counter()


@pytest.fixture
def own_server():
    """A server of this test's own, to restart."""
    server = PgServer(fsync=False).init().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.mark.timeout(300)
async def test_a_server_restarted_in_the_middle_of_a_run_loses_nothing_and_runs_nothing_twice(
        tmp_path, own_server, write_workflow):
    url = own_server.create_database()
    wf, target = load_target(str(write_workflow("looped.py", LOOP)))
    n = 60
    async with await Store.open(url) as store:
        await Engine(store).queue(wf, target, {"n": n}, run_id="long", workdir=tmp_path)
    cli = Smithers(tmp_path, url)  # type: ignore[arg-type]
    workers = [WorkerProc(cli), WorkerProc(cli)]
    side = tmp_path / "side.log"
    try:
        async with await Store.open(url, readonly=True) as store:
            await until(store, lambda: _past(store, "long", 10), "the run to get going")
        own_server.restart()  # every connection is cut; the server comes back on the same port
        async with await Store.open(url, readonly=True) as store:
            before = (await store.get_run("long")).frame
            assert before < 3 * n, "the run ended before the restart: nothing was tested"
            await until(store, lambda: _status(store, "long", RunStatus.FINISHED), "the run to finish")
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]
    assert any("reconnecting" in ln for w in workers for ln in w.lines), "no worker noticed the restart"
    counts = side_counts(side, "long")
    assert counts == Counter({i: 1 for i in range(n)}), [w.lines[-8:] for w in workers]
    rep = cli.json("show", "long")
    assert rep["status"] == "finished"
    assert {n_["iteration"]: n_["output"] for n_ in rep["nodes"] if n_["id"] == "step"} == {i: 2 * i for i in range(n)}
    assert all(n_["attempts"] == 1 for n_ in rep["nodes"] if n_["id"] == "step")


async def _past(store, run_id: str, frame: int) -> bool:
    return (await store.get_run(run_id)).frame >= frame


# --- bad input ---------------------------------------------------------------------------------------
def test_an_unreachable_url_is_one_line_and_exit_4(tmp_path):
    url = f"postgresql://smithers:pw@127.0.0.1:{free_port()}/smithers"
    cli = Smithers(tmp_path, url)  # type: ignore[arg-type]
    for args in (["worker"], ["ps"], ["run", "hello", "--detach"]):
        done = cli(*args, timeout=60)
        assert done.returncode == 4, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot reach PostgreSQL" in lines[0] and ":pw@" not in lines[0], lines


def test_a_wrong_password_is_one_line_and_exit_4(tmp_path, pg_server):
    url = pg_server.url(pg_server.create_database().rsplit("/", 1)[1], password="not-the-password")
    done = Smithers(tmp_path, url)("worker", timeout=60)  # type: ignore[arg-type]
    assert done.returncode == 4
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the password" in lines[0] and "not-the-password" not in lines[0]


async def test_a_database_of_a_newer_schema_is_refused_and_left_alone(tmp_path, pg_server, pg_url):
    async with await Store.open(pg_url) as store:
        await store.list_runs()  # the schema exists
    db = pg_url.rsplit("/", 1)[1]
    pg_server.psql("UPDATE smithers.schema_version SET version = version + 1", db)
    before = pg_server.psql("SELECT version FROM smithers.schema_version; SELECT count(*) FROM smithers.runs", db)
    cli = Smithers(tmp_path, pg_url)  # type: ignore[arg-type]
    for args in (["worker"], ["run", "hello", "--detach"], ["ps"]):
        done = cli(*args, timeout=60)
        assert done.returncode == 4, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "newer smithers" in lines[0]
    after = pg_server.psql("SELECT version FROM smithers.schema_version; SELECT count(*) FROM smithers.runs", db)
    assert after == before
