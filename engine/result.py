"""A run's result: what it produced, for a parent's Subflow step (its output), `smithers show` and
the APIs. It is the output of the workflow's last step: a Sequence's last child, a Loop's body at
its last iteration, a Parallel's named children as {id: result}, the branch a Branch took, a
Worktree's or a Saga's last step, a TryCatchFinally's try part (or its catch, when it caught)."""
from __future__ import annotations

from typing import Any

from .dsl import (Approval, Branch, ContinueAsNew, HumanTask, Loop, Node, Parallel, Saga, Signal, Subflow, Task,
                  Timer, TryCatchFinally)
from .state import FAILED, RunState


def run_result(root: Node, state: RunState) -> Any:
    return _result(root, state, 0)


def _result(node: Node, state: RunState, it: int) -> Any:
    if isinstance(node, (Task, Approval, Signal, Timer, HumanTask, Subflow)):
        return state.outputs.get((node.id, it))
    if isinstance(node, Branch):
        chosen = node.chosen()
        return None if chosen is None else _result(chosen, state, it)
    if isinstance(node, Loop):
        rec = state.nodes.get((node.id, it))
        cur = rec.data["iteration"] if rec is not None and rec.data else it
        return _result(node.items[-1], state, cur) if node.items else None
    if isinstance(node, Parallel):
        return {c.id: _result(c, state, it) for c in node.items if c.id is not None}
    if isinstance(node, TryCatchFinally):
        if node.catch is not None and _failed_inside(node.try_, state, it):
            return _result(node.catch, state, it)
        return _result(node.try_, state, it)
    if isinstance(node, Saga):
        return _result(node.steps[-1][0], state, it)
    if isinstance(node, ContinueAsNew):
        return None
    kids = [c for c in node.children() if not isinstance(c, ContinueAsNew)]  # a Sequence, a Worktree
    return _result(kids[-1], state, it) if kids else None


def _failed_inside(node: Node, state: RunState, it: int) -> bool:
    if node.id is not None:
        rec = state.nodes.get((node.id, it))
        if rec is not None and rec.state == FAILED:
            return True
    return any(_failed_inside(c, state, it) for c in node.children())
