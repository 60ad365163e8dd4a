"""Fixtures for agent tests: the fake LLM server, a real git repo, an event recorder, a clean env."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.openai_server import FakeLLMServer  # noqa: E402

from engine.agents.base import AgentEvent  # noqa: E402

PROVIDER_VARS = ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENROUTER_API_KEY",
                 "DEEPSEEK_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY", "XAI_API_KEY"]


@pytest.fixture
def server():
    with FakeLLMServer() as s:
        yield s


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git repository with one committed file."""
    path = tmp_path / "repo"
    path.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    (path / "app.py").write_text('def greet():\n    return "hello"\n')
    subprocess.run(["git", "add", "app.py"], cwd=path, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=path, check=True, env=env)
    return path


class Recorder(list):
    """Collects AgentEvents; call it as the `emit` callback."""

    def __call__(self, event: AgentEvent) -> None:
        assert isinstance(event, AgentEvent)
        self.append(event)

    def kinds(self, collapse_tokens: bool = True) -> list[str]:
        out: list[str] = []
        for e in self:
            if collapse_tokens and e.kind == "token" and out and out[-1] == "token":
                continue
            out.append(e.kind)
        return out

    def text(self, kind: str) -> str:
        return "".join(e.text for e in self if e.kind == kind)


@pytest.fixture
def events() -> Recorder:
    return Recorder()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No provider keys and no SMITHERS_* settings in the environment."""
    for var in PROVIDER_VARS:
        monkeypatch.delenv(var, raising=False)
    for var in list(os.environ):
        if var.startswith("SMITHERS_"):
            monkeypatch.delenv(var, raising=False)
    return monkeypatch


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
