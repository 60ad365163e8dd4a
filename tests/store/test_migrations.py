"""Schema migrations on both stores: a database written by the previous schema (v2, before workers)
is upgraded in place when opened for writing — its runs kept, leasable, claimable — and refused
(one line, nothing written) when opened read-only; both stores know the same versions."""
from __future__ import annotations

import json
import sqlite3
import time

import pytest

from engine.errors import BadInput
from engine.lease import Owner
from engine.store import SCHEMA_VERSION, Store
from engine.store.postgres_schema import BOOTSTRAP, PG_MIGRATIONS, PG_SCHEMA_VERSION, SCHEMA
from engine.store.schema import MIGRATIONS

PREVIOUS = 2  # the schema before workers
ME = Owner("worker-mig", "h", 1, None)
RUN_V2 = ("old", "wf", "module:m:wf", json.dumps({"x": 1}), "queued", "/tmp", 1.0, 1.0, json.dumps({}))


def test_both_stores_know_the_same_versions():
    assert SCHEMA_VERSION == len(MIGRATIONS) == PG_SCHEMA_VERSION == len(PG_MIGRATIONS) > PREVIOUS


def sqlite_v2(path) -> None:
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:PREVIOUS]:
        conn.executescript(script)
    conn.execute("INSERT INTO runs (id, workflow, target, input, status, workdir, created_at, updated_at, meta) "
                 "VALUES (?,?,?,?,?,?,?,?,?)", RUN_V2)
    conn.execute(f"PRAGMA user_version={PREVIOUS}")
    conn.commit()
    conn.close()


def postgres_v2(pg_server, url: str) -> None:
    db = url.rsplit("/", 1)[1]
    body = "".join(f"SET search_path = {SCHEMA};\n{m}\n" for m in PG_MIGRATIONS[:PREVIOUS])
    pg_server.psql(BOOTSTRAP + body + f"INSERT INTO {SCHEMA}.schema_version VALUES ({PREVIOUS});"
                   f"INSERT INTO {SCHEMA}.runs (id, workflow, target, input, status, workdir, created_at, updated_at, "
                   "meta) VALUES ('old', 'wf', 'module:m:wf', '{\"x\": 1}', 'queued', '/tmp', 1.0, 1.0, '{}')", db)


@pytest.fixture(params=["sqlite", "postgres"])
def old_db(request, tmp_path):
    if request.param == "sqlite":
        path = tmp_path / "old.db"
        sqlite_v2(path)
        return str(path)
    pg_server = request.getfixturevalue("pg_server")
    url = pg_server.create_database()
    postgres_v2(pg_server, url)
    return url


async def test_an_older_database_is_refused_read_only_and_upgraded_for_writing(old_db):
    with pytest.raises(BadInput, match="older smithers.*smithers migrate"):
        await Store.open(old_db, readonly=True)
    async with await Store.open(old_db) as store:  # upgraded in place
        run = await store.get_run("old")
        assert (run.input, run.status, run.lease, run.owner) == ({"x": 1}, "queued", 0, None)
        (claimed,) = await store.claim_runs(ME, 5, time.time())
        assert (claimed.id, claimed.lease, claimed.owner.id) == ("old", 1, ME.id)
        assert await store.workers() == []
    async with await Store.open(old_db, readonly=True) as reader:  # and now readable as it is
        assert (await reader.get_run("old")).lease == 1
