"""The storage boundary. `Store` is the interface; `open_store` picks the implementation from a
path (SQLite, the embedded default) or a URL (PostgreSQL, for workers on many hosts). Nothing
outside this package speaks SQL."""
from __future__ import annotations

import os
from pathlib import Path

from .base import Store
from .schema import SCHEMA_VERSION
from .sqlite import SQLiteStore, dumps

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "Store", "dumps", "is_postgres_url", "is_url", "open_store"]


def is_postgres_url(where: str) -> bool:
    return where.startswith(("postgresql://", "postgres://"))


def is_url(where: str) -> bool:
    """A database named by URL rather than by a file path."""
    return "://" in where


async def open_store(where: str | os.PathLike[str], *, create: bool = True, readonly: bool = False,
                     durability: str = "full", inline: bool = False) -> Store:
    """Open the database at `where`: a file path (SQLite), a `sqlite:///path` URL, or a
    `postgresql://USER:PASSWORD@HOST:PORT/DB` URL (PostgreSQL, for workers on many hosts).

    `readonly` opens it for commands that only read: nothing is written, not even the schema.
    `durability` is "full" (every commit survives an OS crash: the default) or "normal". `inline`
    runs the database's work on the caller's thread (a process with one run in the foreground;
    SQLite only)."""
    text = os.fspath(where)
    if is_postgres_url(text):
        from .postgres import PostgresStore  # asyncpg only when used

        return await PostgresStore.open(text, create=create, readonly=readonly, durability=durability)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite://"):]
    return await SQLiteStore.open(Path(text), create=create, readonly=readonly, durability=durability, inline=inline)
