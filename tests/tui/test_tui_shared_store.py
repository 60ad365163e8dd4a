"""engine.store.shared.open_shared: a second connection in this process that keeps SQLite's file
locks, so another process closing its connection does not delete the WAL under the app."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.store import Store
from engine.store.shared import open_shared
from tests.support import ROOT, clean_env

WRITE = """
import asyncio, sys
from engine.store import Store
async def main():
    s = await Store.open(sys.argv[1])
    await s.transact([("UPDATE runs SET status='waiting' WHERE 0", [()])])
    await s.close()
asyncio.run(main())
"""


async def test_second_connection_survives_another_process_closing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    first = await Store.open(db)
    second = await open_shared(db)
    try:
        await first.transact([("INSERT INTO events (run_id,frame,at,type) VALUES (?,?,?,?)", [("r", 0, 1.0, "log")])])
        done = subprocess.run([sys.executable, "-c", WRITE, str(db)], cwd=ROOT, env=clean_env(), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "s.db-wal").exists(), "the other process took this one's connections for gone"
        assert await second.last_event_seq() == 1
        await first.transact([("INSERT INTO events (run_id,frame,at,type) VALUES (?,?,?,?)", [("r", 0, 2.0, "log")])])
        assert await second.last_event_seq() == 2
        assert await second.changed() in (True, False)
    finally:
        await second.close()
        await first.close()


async def test_open_shared_refuses_a_missing_file(tmp_path: Path) -> None:
    import pytest

    from engine.errors import SmithersError

    with pytest.raises((SmithersError, Exception)):
        await open_shared(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
