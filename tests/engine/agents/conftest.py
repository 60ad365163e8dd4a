"""Fixtures for agent tests: the fake LLM server, a real git repo, an event recorder, a clean env."""

from __future__ import annotations

import os
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


