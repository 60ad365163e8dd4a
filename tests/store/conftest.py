"""Every Store implementation runs the same conformance suite (test_conformance.py).

`make_store` opens a fresh, empty database of the parametrized kind; a second call in one test
opens another connection to the same database (as a second process would). Add an
implementation by adding its name to STORES and a branch to `_open`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from engine.store import Store

STORES = ["sqlite", "postgres"]

OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=STORES)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    opened: list[Store] = []
    kind = request.param

    url: str | None = None

    async def _open(**kw: Any) -> Store:
        nonlocal url
        if kind == "sqlite":
            store = await Store.open(tmp_path / "conformance.db", **kw)
        elif kind == "postgres":
            url = url or request.getfixturevalue("pg_server").create_database()
            store = await Store.open(url, **kw)
        else:  # pragma: no cover - each implementation adds its branch
            raise AssertionError(f"no store {kind}")
        opened.append(store)
        return store

    yield _open
    for s in opened:
        await s.close()
