"""Shared fixtures: a database in tmp_path, an Engine on a real SQLite file, workflow files written
into tmp_path, and the `smithers` command run as a real subprocess (helpers in tests/support.py)."""

from __future__ import annotations

import ipaddress
import socket
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.runtime import Engine  # noqa: E402
from engine.store import Store  # noqa: E402
from tests.support import Smithers  # noqa: E402


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole session (a temporary cluster on a free port of
    127.0.0.1), stopped and removed at the end. Tests get databases with `pg_server.create_database()`."""
    from tests.pgserver import PgServer

    server = PgServer(fsync=False).init().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return pg_server.create_database()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "smithers.db"


@pytest.fixture
async def engine(db_path: Path):
    """(Engine, Store) on a real SQLite file in tmp_path."""
    store = await Store.open(db_path)
    eng = Engine(store, poll_interval=0.05)
    try:
        yield eng, store
    finally:
        await eng.close()
        await store.close()


@pytest.fixture
def write_workflow(tmp_path: Path) -> Callable[..., Path]:
    """write_workflow("name.py", source) -> the path of a workflow file in tmp_path (source dedented)."""

    def write(name: str, source: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
        return path

    return write


@pytest.fixture
def smithers(tmp_path: Path, db_path: Path) -> Smithers:
    """The `smithers` command, run in tmp_path against db_path."""
    return Smithers(tmp_path, db_path)


# --- no network: tests reach only loopback addresses (the fake model server runs there) -------------
def _local(host: object) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the network: only loopback addresses (and unix sockets) may be used."""
    real_connect, real_connect_ex, real_gai = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def check(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):  # type: ignore[index]
            raise ConnectionRefusedError(f"test tried to reach the network: {address}")

    def connect(self, address):  # type: ignore[no-untyped-def]
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):  # type: ignore[no-untyped-def]
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kw):  # type: ignore[no-untyped-def]
        if not _local(host.decode() if isinstance(host, bytes) else host):
            raise socket.gaierror(f"test tried to resolve {host!r}: no network in tests")
        return real_gai(host, *args, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
