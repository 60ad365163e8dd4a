"""A run's result: what it produced, for a parent's Subflow step (its output), `smithers show` and
the APIs. It is the output of the workflow's last step: a Sequence's last child, a Loop's body at
its last iteration, a Parallel's named children as {id: result}, the branch a Branch took, a
Worktree's or a Saga's last step, a TryCatchFinally's try part (or its catch, when it caught)."""
from __future__ import annotations

from typing import Any

from .dsl import (Approval, Branch, ContinueAsNew, HumanTask, Loop, Node, Parallel, Saga, Sequence, Signal, Subflow,
                  Task, Timer, TryCatchFinally, Worktree)
from .state import FAILED, RunState

_LEAVES = (Task, Approval, Signal, Timer, HumanTask, Subflow)


def run_result(root: Node, state: RunState) -> Any:
    return _result(root, state, 0)


def _result(node: Node, state: RunState, it: int) -> Any:
    t = type(node)
    if t in _LEAVES:
        return state.outputs.get((node.id, it))  # type: ignore[arg-type]
    if t is Branch:
        chosen = node.chosen()  # type: ignore[attr-defined]
        return None if chosen is None else _result(chosen, state, it)
    if t is Loop:
        rec = state.nodes.get((node.id, it))  # type: ignore[arg-type]
        cur = rec.data["iteration"] if rec is not None and rec.data else it
        return _result(node.items[-1], state, cur) if node.items else None  # type: ignore[attr-defined]
    if t is Parallel:
        return {c.id: _result(c, state, it) for c in node.items if c.id is not None}  # type: ignore[attr-defined]
    if t is TryCatchFinally:
        if node.catch is not None and _failed_inside(node.try_, state, it):  # type: ignore[attr-defined]
            return _result(node.catch, state, it)  # type: ignore[attr-defined]
        return _result(node.try_, state, it)  # type: ignore[attr-defined]
    if t is Saga:
        return _result(node.steps[-1][0], state, it)  # type: ignore[attr-defined]
    if t is ContinueAsNew:
        return None
    if t in (Sequence, Worktree):
        kids = [c for c in node.children() if type(c) is not ContinueAsNew]
        return _result(kids[-1], state, it) if kids else None
    return None


def _failed_inside(node: Node, state: RunState, it: int) -> bool:
    if node.id is not None:
        rec = state.nodes.get((node.id, it))
        if rec is not None and rec.state == FAILED:
            return True
    return any(_failed_inside(c, state, it) for c in node.children())
