"""A project folder with a gated workflow, and `smithers serve` running on it as a real
subprocess (uvicorn on 127.0.0.1, a free port), with its token."""
from __future__ import annotations

import re
import signal
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.support import Smithers, clean_env

GATED = """
from pydantic import BaseModel
from engine import Approval, Sequence, Task, workflow


class Input(BaseModel):
    n: int = 2


def prepare(ctx):
    ctx.log("preparing")
    return {"n": ctx.input.n * 10}


@workflow(input=Input)
def gated(ctx):
    \"\"\"Prepares, waits for a human, then ships.\"\"\"
    return Sequence(Task("prepare", run=prepare), Approval("ship", message="Ship it?"),
                    Task("after", value="shipped"))
"""

STEPS = """
from pydantic import BaseModel
from engine import Loop, Sequence, Task, workflow


class Input(BaseModel):
    rounds: int = 3


def count(ctx):
    ctx.log(f"round {ctx.iteration}")
    return ctx.iteration


@workflow(input=Input)
def steps(ctx):
    \"\"\"Counts in a loop.\"\"\"
    return Sequence(Loop("loop", Task("count", run=count), max_iterations=ctx.input.rounds), Task("done", value="ok"))
"""


WAITS = """
from pydantic import BaseModel
from engine import Approval, HumanTask, Sequence, Signal, Task, workflow


class CI(BaseModel):
    passed: bool


class Review(BaseModel):
    verdict: str
    score: int


@workflow
def waits(ctx):
    \"\"\"Waits for CI, a person's review, and a choice.\"\"\"
    return Sequence(Signal("ci", output=CI), HumanTask("review", prompt="How is it?", output=Review),
                    Approval("pick", message="Which one?", mode="select", options=["A", "B"]),
                    Task("end", value="done"))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    wf = tmp_path / ".smithers" / "workflows"
    wf.mkdir(parents=True)
    (wf / "gated.py").write_text(textwrap.dedent(GATED).lstrip())
    (wf / "steps.py").write_text(textwrap.dedent(STEPS).lstrip())
    (wf / "waits.py").write_text(textwrap.dedent(WAITS).lstrip())
    return tmp_path


@dataclass
class Server:
    url: str
    token: str
    proc: subprocess.Popen
    project: Path
    db: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def start_server(smithers: Smithers, *args: str) -> subprocess.Popen:
    return smithers.spawn("serve", "--port", "0", *args, env=clean_env())


@pytest.fixture
def server(project: Path) -> Iterator[Server]:
    db = project / ".smithers" / "smithers.db"
    proc = start_server(Smithers(project, db))
    line = proc.stdout.readline()  # printed once the socket listens
    m = re.search(r"http://[\d.]+:\d+", line)
    if not m:
        proc.kill()
        raise AssertionError(f"smithers serve did not start: {line!r} {proc.communicate()[1]}")
    token = (project / ".smithers" / "api-token").read_text().strip()
    try:
        yield Server(m.group(0), token, proc, project, db)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
