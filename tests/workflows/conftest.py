"""Fixtures for the workflow pack: a real git repository holding a small Python project, the fake
LLM server scripted per test (routed by the prompt, so parallel agents get their own replies), and
an engine in this process whose agents reach the fake server through `.smithers/config.toml`."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.fakes.openai_server import FakeLLMServer, Recorded, Reply

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}
PY = shlex.quote(sys.executable)
# A real pytest run in a subprocess; plugins of this environment are not loaded, for speed.
PYTEST = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {PY} -m pytest -q -p no:cacheprovider"


def git(cwd: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))


CALC = '''
def add(a, b):
    return a - b


def mul(a, b):
    return None


def greet(name):
    return "hi"
'''

CALC_TESTS = {
    "tests/test_add.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "tests/test_mul.py": "from calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n",
    "tests/test_greet.py": "from calc import greet\n\n\ndef test_greet():\n    assert greet('Ann') == 'hello, Ann'\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository (branch main) with calc.py and three failing tests, committed."""
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, {"calc.py": CALC, ".gitignore": "__pycache__/\n.pytest_cache/\n", **CALC_TESTS})
    git(root, "add", "-A")
    git(root, "commit", "-qm", "calc with failing tests")
    return root


# -- the scripted model ----------------------------------------------------------------------------

@dataclass
class Call:
    kind: str  # implement | review:<lens> | plan | research | ralph | tickets
    title: str
    round: int | None
    prompt: str


Handler = Callable[[int | None, int, str], Reply]  # (round, turn in the conversation, prompt) -> reply


@dataclass
class Script:
    """Answers each request from a handler chosen by the prompt's first line (kind and title).

    A handler sees the round (implement prompts), the turn (assistant messages so far in this
    conversation) and the prompt, so parallel conversations never take each other's replies.
    """

    handlers: dict[tuple[str, str | None], Handler] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, kind: str, title: str | None, handler: Handler) -> None:
        self.handlers[(kind, title)] = handler

    def prompts(self, kind: str, title: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.kind == kind and (title is None or c.title == title)]

    def route(self, rec: Recorded) -> Reply:
        msgs = rec.body.get("messages") or []
        user = next((m.get("content") for m in msgs if m.get("role") == "user"), "") or ""
        if isinstance(user, list):
            user = "".join(p.get("text", "") for p in user if isinstance(p, dict))
        turn = sum(1 for m in msgs if m.get("role") == "assistant")
        head = user.splitlines()[0] if user else ""
        rnd = None
        if m := re.match(r"# Implement: (.*)", head):
            kind, title = "implement", m.group(1).strip()
            rnd = int(re.search(r"## Round (\d+) of", user).group(1))  # type: ignore[union-attr]
        elif m := re.match(r"# Review \(([^)]*)\): (.*)", head):
            kind, title = f"review:{m.group(1)}", m.group(2).strip()
        elif m := re.match(r"# Resolve: (.*)", head):
            kind, title = "resolve", m.group(1).strip()
        elif m := re.match(r"# (\w+)", head):
            kind, title = m.group(1).lower(), ""
        else:
            kind, title = "?", head
        if turn == 0:
            with self.lock:
                self.calls.append(Call(kind, title, rnd, user))
        handler = (self.handlers.get((kind, title)) or self.handlers.get((kind, None))
                   or self.handlers.get((kind.split(":")[0], None)))
        if handler is None:
            return Reply.error(400, text=f"test script has no reply for {kind!r} {title!r}")
        return handler(rnd, turn, user)


def say(obj: Any) -> Reply:
    return Reply.say(obj if isinstance(obj, str) else json.dumps(obj))


def edits(*calls: tuple[str, dict], summary: str = "done") -> Handler:
    """An implementer that makes these tool calls, then answers its summary."""
    def handle(rnd: int | None, turn: int, prompt: str) -> Reply:
        if turn == 0 and calls:
            return Reply.tools(*calls)
        return say({"summary": summary, "files_changed": sorted({c[1].get("path", "") for c in calls}), "notes": ""})
    return handle


def approve(rnd: int | None = None, turn: int = 0, prompt: str = "") -> Reply:
    return say({"approved": True, "feedback": "looks right", "issues": []})


def edit(path: str, search: str, replace: str) -> tuple[str, dict]:
    return ("edit_file", {"path": path, "search": search, "replace": replace})


# -- environment, server, engine -----------------------------------------------------------------

@pytest.fixture(autouse=True)
def workflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SMITHERS_* settings leaking in; a git identity for the workflows' commits; the fake key.
    (The network guard is suite-wide, in tests/conftest.py.)"""
    for var in list(os.environ):
        if var.startswith("SMITHERS_"):
            monkeypatch.delenv(var)
    for var, val in GIT_ENV.items():  # commits made by the workflows need an identity
        monkeypatch.setenv(var, val)
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-fake")


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def llm(script: Script):
    """The fake OpenAI-compatible server, answering through `script`."""
    with FakeLLMServer() as server:
        server.route = script.route
        yield server


def use_fake_model(project: Path, server: FakeLLMServer) -> None:
    """Point every agent role of `project` at the fake server, the way a user would: config.toml."""
    cfg = project / ".smithers" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(textwrap.dedent(f"""
        [agents.default]
        model = "openai/fake-model"
        api_base = "{server.openai_base}"
        api_key_env = "FAKE_LLM_KEY"
        max_provider_retries = 0
        timeout = 20
    """))


async def run(eng: Any, name: str, data: Any, workdir: Path) -> tuple[str, Any]:
    """Start built-in workflow `name` in `workdir` and execute it to its end (or a gate)."""
    from workflows import builtin

    wf, target = builtin()[name]
    ex = await eng.start(wf, target, data, workdir=workdir)
    return await ex.execute(), ex


async def outputs(store: Any, run_id: str) -> dict[tuple[str, int], Any]:
    from tests.support import nodes_of

    return {k: n.get("output") for k, n in (await nodes_of(store, run_id)).items()}


async def states(store: Any, run_id: str) -> dict[tuple[str, int], str]:
    from tests.support import nodes_of

    return {k: n["state"] for k, n in (await nodes_of(store, run_id)).items()}


def worktrees(root: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in git(root, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


def run_tests(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(f"{PYTEST} {' '.join(args)}", shell=True, cwd=root, capture_output=True, text=True)
