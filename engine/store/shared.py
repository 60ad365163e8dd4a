"""A second connection to a database this process already has open.

`Store.open` first reads the file's header with a plain open()/close(). On POSIX, closing any
descriptor of a file drops every advisory lock this process holds on that file, including the
shared lock that SQLite's open connections keep on a WAL database. After that, another process
that closes its connection believes it was the last one, checkpoints and deletes the -wal and
-shm files under the live connections, which then fail with "disk I/O error".

`open_shared` makes the same kind of connection as `Store.open` (WAL, busy timeout, rows as
sqlite3.Row) without touching the file outside SQLite, so it is safe while other connections of
this process are open. The database must already exist and be migrated (open it once with
`Store.open` first).
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import aiosqlite

from ..errors import NotADatabase
from .sqlite import Store


async def open_shared(path: str | os.PathLike[str]) -> Store:
    path = Path(path)
    conn = await aiosqlite.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        await conn.execute("PRAGMA busy_timeout=10000")
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError as e:
        await conn.close()
        raise NotADatabase(f"{path} is not a usable smithers database ({e}): pass --db with another path") from None
    return Store(conn, path)
