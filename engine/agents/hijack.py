"""Hijack, engine side: find a step's saved CLI session, build the command that reopens it in the
CLI's interactive mode, and measure what the person changed (a tree-to-tree diff of the worktree,
tracked and untracked files, taken with a private git index so nothing of the repository moves).

The faces (`smithers hijack`, the app's `H` key) live in smithers_tui/hijack.py.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.agents.base import AgentError
from engine.agents.cli import CLIAgent

WRAPPER_VAR = "SMITHERS_HIJACK_WRAPPER"  # tests: a stand-in for the interactive program, given the argv


@dataclass
class Session:
    """One saved CLI session of a step, ready to reopen."""

    run_id: str
    node_id: str
    iteration: int
    cli: str
    agent: str
    session_id: str | None
    workdir: Path
    argv: list[str]
    env: dict[str, str]


def session_events(events: list[Any], node_id: str, iteration: int | None) -> list[dict[str, Any]]:
    """The `session` notes a step's attempts recorded (latest last)."""
    out = []
    for ev in events:
        data = ev.data if hasattr(ev, "data") else ev
        if getattr(ev, "type", "agent") != "agent" or getattr(ev, "node_id", node_id) != node_id:
            continue
        if iteration is not None and getattr(ev, "iteration", iteration) not in (iteration, None):
            continue
        if data.get("kind") == "session" and isinstance(data.get("data"), dict):
            out.append({**data["data"], "iteration": getattr(ev, "iteration", 0) or 0})
    return out


def open_session(run_id: str, node_id: str, note: dict[str, Any], agent: Any) -> Session:
    """The interactive command for a recorded session, with the agent's environment (managed home)."""
    if not isinstance(agent, CLIAgent):
        raise AgentError(f"step {node_id!r} ran agent {getattr(agent, 'name', agent)!r}, not a coding-agent CLI: "
                         "hijack it from the app, where it opens a chat")
    workdir = Path(note["workdir"])
    if not workdir.is_dir():
        raise AgentError(f"the step's worktree {workdir} is gone (removed when the run ended); "
                         "fork the run to get it back, then hijack the fork")
    exe = agent.path() or note.get("binary")
    if not exe:
        raise AgentError(f"{agent.name}: {agent.available()[1]}")
    home = Path(note["home"]) if note.get("home") else agent.managed_home()
    argv = agent.interactive(exe, note.get("id"), workdir)
    wrapper = os.environ.get(WRAPPER_VAR)
    if wrapper:
        argv = shlex.split(wrapper) + argv
    return Session(run_id, node_id, int(note.get("iteration") or 0), str(note.get("cli")), agent.name,
                   note.get("id"), workdir, argv, agent.hijack_env(home))


def tree_of(workdir: Path) -> str | None:
    """A git tree of the worktree as it is now (tracked and untracked, .gitignore respected),
    written with a private index: HEAD, the index and the files are left alone."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        try:
            subprocess.run(["git", "add", "-A", "."], cwd=workdir, env=env, check=True, capture_output=True)
            out = subprocess.run(["git", "write-tree"], cwd=workdir, env=env, check=True, capture_output=True,
                                 text=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return out.stdout.strip() or None


def tree_diff(workdir: Path, before: str | None, after: str | None) -> str:
    if not before or not after or before == after:
        return ""
    out = subprocess.run(["git", "diff", before, after], cwd=workdir, capture_output=True, text=True)
    return out.stdout
