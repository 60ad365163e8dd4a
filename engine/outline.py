"""The outline of a run: the shape of its workflow's tree, rendered once from a saved state.

One function, `outline()`, used by time travel (what a fork changes), the app's step tree and
run screen (how steps nest), and the APIs. Rendering is pure: the workflow body is called with
a ctx over the given state; nothing runs and nothing is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel

from .context import Ctx
from .dsl import (Approval, Branch, ContinueAsNew, HumanTask, Loop, Node, Parallel, Saga, Signal, Subflow, Task, Timer,
                  TryCatchFinally, WorkflowDef, Worktree)
from .render import fingerprint
from .state import RunState


class Shape(StrEnum):
    TASK = "task"
    GATE = "gate"
    LOOP = "loop"
    PARALLEL = "par"
    WORKTREE = "wt"
    SEQUENCE = "seq"
    SIGNAL = "signal"
    TIMER = "timer"
    HUMAN = "human"
    SUBFLOW = "subflow"
    TRY = "try"  # children: try, catch, finally (each a part; a missing one is an empty seq)
    SAGA = "saga"  # children: action 1, compensation 1, action 2, ... (a missing compensation is an empty seq)
    CONTINUE = "continue"


class OutlineNode(NamedTuple):
    """One node of the tree: its shape, id (None for purely structural nodes), children, and for a
    loop the most iterations it may run (so a view can say how much may still come)."""

    kind: str  # a Shape
    id: str | None
    children: tuple["OutlineNode", ...]
    limit: int | None = None


@dataclass
class Outline:
    root: OutlineNode
    fingerprints: dict[str, str] = field(default_factory=dict)  # task id -> what its render looks like
    untils: dict[str, bool] = field(default_factory=dict)  # loop id -> its until condition, now
    groups: dict[str, set[str]] = field(default_factory=dict)  # node id -> ids of the loops/worktrees around it
    nodes: dict[str, Node] = field(default_factory=dict)  # node id -> the node (its model, signal name, options)

    def ids(self) -> set[str]:
        return set(self.groups)


_SHAPES: dict[type, Shape] = {Task: Shape.TASK, Approval: Shape.GATE, Loop: Shape.LOOP, Parallel: Shape.PARALLEL,
                              Worktree: Shape.WORKTREE, Signal: Shape.SIGNAL, Timer: Shape.TIMER, HumanTask: Shape.HUMAN,
                              Subflow: Shape.SUBFLOW, TryCatchFinally: Shape.TRY, Saga: Shape.SAGA,
                              ContinueAsNew: Shape.CONTINUE}
_EMPTY = OutlineNode(Shape.SEQUENCE, None, ())


def outline(wf: WorkflowDef, run_id: str, input: Any, state: RunState, workdir: Path | str) -> Outline | None:
    """Render `wf` once over `state` (None when the body raises: a broken or changed workflow)."""
    try:
        if wf.input is not None and not isinstance(input, BaseModel):
            input = wf.validate_input(input)
        ctx = Ctx(run_id, input, state, {}, Path(workdir))
        tree = wf.builder(ctx)
    except Exception:
        return None
    if not isinstance(tree, Node):
        return None
    out = Outline(OutlineNode(Shape.SEQUENCE, None, ()))
    out.root = _walk(tree, frozenset(), out, ctx)
    return out


def _walk(node: Node, around: frozenset[str], out: Outline, ctx: Ctx) -> OutlineNode:
    """Record what a fork needs to know of every node (the arm a Branch did not take included: a
    fork with other input may take it), and return the shape of what the tree shows."""
    if isinstance(node, (Task, Subflow)):
        out.fingerprints[node.id] = fingerprint(node)
    if node.id is not None:
        out.groups[node.id] = set(around)
        out.nodes[node.id] = node
    if isinstance(node, Loop):
        try:
            out.untils[node.id] = bool(node.until(ctx) if callable(node.until) else node.until)
        except Exception:  # an until that cannot be evaluated yet (it reads an output not made)
            pass
    inner = around | {node.id} if isinstance(node, (Loop, Worktree)) and node.id is not None else around
    if isinstance(node, TryCatchFinally):  # fixed places: try, catch, finally
        parts = (node.try_, node.catch, node.finally_)
        return OutlineNode(Shape.TRY, node.id, tuple(_walk(p, inner, out, ctx) if p is not None else _EMPTY
                                                     for p in parts))
    if isinstance(node, Saga):  # action, compensation, action, compensation...
        return OutlineNode(Shape.SAGA, node.id, tuple(_walk(p, inner, out, ctx) if p is not None else _EMPTY
                                                      for pair in node.steps for p in pair))
    kids = tuple(_walk(c, inner, out, ctx) for c in node.children())
    if isinstance(node, Branch):
        chosen = node.chosen()
        return kids[node.children().index(chosen)] if chosen is not None else OutlineNode(Shape.SEQUENCE, None, ())
    return OutlineNode(_SHAPES.get(type(node), Shape.SEQUENCE), node.id, kids,
                       node.max_iterations if isinstance(node, Loop) else None)
