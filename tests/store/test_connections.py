"""Several connections to one SQLite file in one process (the app: the engine's and a read-only
reader): another process opening and closing the database must not delete the WAL under them
(on POSIX, closing any descriptor of a file drops the process's locks on it, so the store touches
the file only through SQLite)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine import Task, workflow
from engine.errors import SmithersError
from engine.runtime import Engine
from engine.store import Store
from tests.support import ROOT, clean_env, target_of

OPEN_CLOSE = """
import asyncio, sys
from engine.store import Store
async def main():
    s = await Store.open(sys.argv[1])
    await s.close()
asyncio.run(main())
"""


@workflow
def two(ctx):
    return Task("a", value=1)


async def test_a_reader_survives_another_process_closing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    first = await Store.open(db)
    second = await Store.open(db, readonly=True)
    try:
        ex = await Engine(first).start(two, target_of(two), None, run_id="r")
        assert await second.last_event_seq() == 1  # run_started
        done = subprocess.run([sys.executable, "-c", OPEN_CLOSE, str(db)], cwd=ROOT, env=clean_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "s.db-wal").exists(), "the other process took this one's connections for gone"
        before = await second.data_version()
        assert await ex.execute() == "finished"
        assert await second.data_version() != before
        assert [e.type for e in await second.events("r")][-1] == "run_finished"
    finally:
        await second.close()
        await first.close()


async def test_a_read_only_open_of_a_missing_file_refuses_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(SmithersError, match="no database"):
        await Store.open(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()
