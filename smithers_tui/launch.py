"""Checks before a launch: what would make a run start and then fail at once, said before it
starts, with what to do — a workflow that works in git worktrees outside a repository (or one
with no commit yet), `kanban` with no tickets, agent steps with no model configured and the demo
agent off.

What a workflow needs is read from its tree as rendered for the input (agent steps, worktrees),
and from its source for the steps that appear only later (a kanban run's lanes depend on the
tickets it reads first).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICKETS = Path(".smithers") / "tickets"


@dataclass(frozen=True)
class Needs:
    agents: bool
    git: bool
    tickets: bool


def walk(node: Any) -> list[Any]:
    out = [node]
    for c in node.children():
        out += walk(c)
    return out


def needs(wf: Any, data: Any, project: Path) -> Needs:
    """What the workflow needs (call from a thread: renders the workflow, reads its source)."""
    agents = git = False
    try:
        from engine import Ctx
        from engine.state import RunState

        inp = wf.validate_input(data) if wf.input else data
        for n in walk(wf.builder(Ctx("launch-check", inp, RunState(), {}, project))):
            kind = type(n).__name__
            agents = agents or (kind == "Task" and getattr(n, "agent", None) is not None)
            git = git or kind == "Worktree"
    except Exception:  # a body that needs outputs to render: the source says the rest
        pass
    try:
        source = inspect.getsource(inspect.getmodule(wf.builder) or wf.builder)
    except (OSError, TypeError):
        source = ""
    agents = agents or "agent=" in source
    git = git or "Worktree(" in source
    return Needs(agents=agents, git=git, tickets=wf.name == "kanban")


def git_problem(project: Path) -> str | None:
    import subprocess

    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=project, capture_output=True, text=True,
                             timeout=10)
        if top.returncode != 0:
            return (f"{project} is not a git repository, and this workflow works in git worktrees: "
                    "run `git init && git add -A && git commit -m start` there first")
        head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=project, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "the repository has no commit yet, and worktrees start from one: commit once (git commit) first"
    except (OSError, subprocess.SubprocessError) as e:
        return f"git cannot run here ({e}): install git, this workflow works in git worktrees"
    return None


def tickets_problem(project: Path) -> str | None:
    folder = project / TICKETS
    files = [p for p in folder.rglob("*.md")
             if not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts)] if folder.is_dir() else []
    if not files:
        return (f"no tickets in {TICKETS}/: add one .md file per change there (its first # heading is its "
                "title), or run the ticket-create workflow, or `smithers init` for an example")
    return None


def problems(wf: Any, data: Any, project: Path, *, demo: bool, model_configured: bool | None) -> list[str]:
    """Why a launch would fail at once (empty: go). Call from a thread."""
    need = needs(wf, data, project)
    out = []
    if need.git:
        p = git_problem(project)
        if p:
            out.append(p)
    if need.tickets:
        p = tickets_problem(project)
        if p:
            out.append(p)
    if need.agents and not demo and model_configured is False:
        out.append("no model is configured for its agent steps: set ANTHROPIC_API_KEY (or OPENAI_API_KEY / "
                   "GEMINI_API_KEY) or [agents.default] in .smithers/config.toml, or turn on the demo agent (ctrl+d)")
    return out
