"""render: the node tree + the saved state -> the plan (ready tasks, immediate transitions, status).

Immediate transitions (skips, static values, loop advances, gate requests) are applied to the
state while walking and recorded in the Delta. A transition that adds an output changes what
the workflow body can read, so the walk stops deciding and the caller renders again.
"""
from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .context import Ctx, type_name
from .dsl import Approval, Branch, Loop, Node, Parallel, Sequence, Task, Worktree
from .errors import RenderError, one_line_validation
from .frame import Delta
from .state import (DONE, FAILED, PENDING, RUNNING, SKIPPED, WAITING_APPROVAL, Key, NodeRecord,
                    RunState)

# Walk results, ordered so that max() combines siblings of a Parallel.
S_DONE, S_WAITING, S_ACTIVE, S_FAILED = 0, 1, 2, 3


@dataclass
class Ready:
    node: "Task | Worktree"  # a Task, or a Worktree whose checkout must be made
    key: Key
    workdir: Path
    worktree: Key | None = None  # the enclosing Worktree node, whose files are snapshotted after the step

    @property
    def task(self) -> Task:
        """The task to run (step runners of tasks are only handed tasks)."""
        assert isinstance(self.node, Task), self.node
        return self.node


def fingerprint(task: Task) -> str:
    """What the render of a task looks like, to tell whether a fork with other input changes it."""
    if task.kind == "compute" and not getattr(task.run, "__closure__", None):  # the common case: cached
        return _fingerprint_compute(task.run, task.output)
    return _fingerprint(task)


@lru_cache(maxsize=4096)
def _fingerprint_compute(fn: Any, output: Any) -> str:
    return _digest(["compute", type_name(output), _callable(fn)])


def _callable(fn: Any) -> Any:
    """A callable's name and what it closes over (a lambda over a value the body read from ctx)."""
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    cells = [_stable(c.cell_contents) for c in (getattr(fn, "__closure__", None) or ()) if _filled(c)]
    defaults = [_stable(d) for d in (getattr(fn, "__defaults__", None) or ())]
    return [name, cells, defaults] if cells or defaults else name


def _filled(cell: Any) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:
        return False
    return True


def _stable(v: Any, depth: int = 0) -> Any:
    """A value as it matters to a render, without object identities (which differ every render)."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if depth > 3:
        return type(v).__name__
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_stable(x, depth + 1) for x in list(v)[:100]]
    if isinstance(v, dict):
        return {str(k): _stable(x, depth + 1) for k, x in list(v.items())[:100]}
    if callable(v):
        return getattr(v, "__qualname__", type(v).__name__)
    return type(v).__name__


def _digest(parts: list[Any]) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def _fingerprint(task: Task) -> str:
    parts: list[Any] = [task.kind, type_name(task.output)]
    if task.has_value:
        parts.append(json.dumps(task.value, sort_keys=True, default=str))
    for fn in (task.run, task.prompt):
        if callable(fn):
            parts.append(_callable(fn))
        elif fn is not None:
            parts.append(fn)
    if task.agent is not None:
        agent = task.agent
        parts.append(agent if isinstance(agent, str) else [getattr(a, "name", repr(a)) for a in agent]
                     if isinstance(agent, list) else getattr(agent, "name", type(agent).__name__))
    return _digest(parts)


@dataclass
class Plan:
    status: int
    ready: list[Ready] = field(default_factory=list)
    dirty: bool = False  # an output was added: render again before deciding more
    failed: Key | None = None  # first failed node, for the run's error


def index_tree(root: Node) -> dict[str, type[BaseModel] | None]:
    """Check ids are unique in this render; return node id -> output model."""
    models: dict[str, type[BaseModel] | None] = {}
    where: dict[str, Node] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        nid = node.id
        if nid is not None:
            if nid in where:
                other = where[nid]
                raise RenderError(f"duplicate node id {nid!r} at {node.where()} and {other.where()}: "
                                  "ids must be unique; derive them from data, e.g. f\"review-{{name}}\"")
            where[nid] = node
            if type(node) is Task:
                models[nid] = node.output
        stack.extend(node.children())
    return models


def coerce_output(task: Task, value: Any) -> tuple[Any, str | None]:
    """Validate a task's result against its output model; return (JSON value, type name)."""
    model = task.output
    if model is not None:
        inst = value if isinstance(value, model) else model.model_validate(
            value.model_dump() if isinstance(value, BaseModel) else value)
        return inst.model_dump(mode="json"), type_name(model)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json"), type_name(type(value))
    return value, None


class Walker:
    def __init__(self, state: RunState, delta: Delta, ctx: Ctx, backoff: dict[Key, float]) -> None:
        self.state, self.delta, self.ctx, self.backoff = state, delta, ctx, backoff
        self.ready: list[Ready] = []
        self.dirty = False
        self.failed: Key | None = None
        self.now = time.monotonic()
        self.worktree_of: dict[Path, Key] = {}

    # --- helpers -------------------------------------------------------------------------------
    def set(self, key: Key, rec: NodeRecord) -> None:
        self.state.nodes[key] = rec
        self.delta.nodes[key] = rec

    def output(self, key: Key, value: Any, tname: str | None, deps: dict[str, Any] | None = None) -> None:
        self.state.set_output(key, value, tname)
        self.ctx.forget(key)
        self.delta.outputs[key] = (value, tname, deps)
        self.dirty = True

    def fail(self, key: Key, kind: str, error: str, attempts: int = 0) -> int:
        self.set(key, NodeRecord(kind, FAILED, attempts, error))
        self.delta.event("node_failed", key, error=error)
        self.failed = self.failed or key
        return S_FAILED

    def started(self, node: Node, it: int) -> bool:
        if node.id is not None:
            rec = self.state.nodes.get((node.id, it))
            if rec is not None and (rec.state != PENDING or rec.attempts):
                return True
            if type(node) is not Loop and type(node) is not Worktree:
                return False
        return any(self.started(c, it) for c in node.children())

    # --- the walk ------------------------------------------------------------------------------
    def walk(self, node: Node, it: int, wd: Path) -> int:
        t = type(node)
        if t is Task:
            return self.task(node, it, wd)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        if t is Sequence:
            return self.seq(node.items, it, wd)  # type: ignore[attr-defined]  # narrowed by `type(node) is`, faster than isinstance
        if t is Parallel:
            return self.parallel(node, it, wd)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        if t is Branch:
            chosen = node.chosen()  # type: ignore[attr-defined]  # narrowed by `type(node) is`, faster than isinstance
            return S_DONE if chosen is None else self.walk(chosen, it, wd)
        if t is Loop:
            return self.loop(node, it, wd)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        if t is Approval:
            return self.approval(node, it)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        if t is Worktree:
            return self.worktree(node, it, wd)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        raise RenderError(f"{node!r} is not a step")

    def seq(self, items: tuple[Node, ...], it: int, wd: Path) -> int:
        for child in items:
            s = self.walk(child, it, wd)
            if s != S_DONE:
                return s
        return S_DONE

    def parallel(self, node: Parallel, it: int, wd: Path) -> int:
        limit = node.max_concurrency
        active = 0
        result = S_DONE
        for child in node.items:
            if limit is not None and active >= limit and not self.started(child, it):
                result = max(result, S_ACTIVE)
                continue
            s = self.walk(child, it, wd)
            if s == S_ACTIVE or s == S_WAITING:
                active += 1
            result = max(result, s)
        return result

    def task(self, task: Task, it: int, wd: Path) -> int:
        key = (task.id, it)
        rec = self.state.nodes.get(key)
        st = rec.state if rec is not None else PENDING
        if st == DONE or st == SKIPPED:
            return S_DONE
        if st == RUNNING:
            return S_ACTIVE
        if st == FAILED:
            return S_DONE if task.continue_on_fail else self._failed(key)
        if st == WAITING_APPROVAL:
            return S_WAITING
        if st != PENDING:  # cancelled
            return self._failed(key)
        if key in self.backoff and self.backoff[key] > self.now:
            return S_ACTIVE
        if self.dirty:
            return S_ACTIVE
        attempts = rec.attempts if rec is not None else 0
        if task.skip_if:
            self.set(key, NodeRecord("task", SKIPPED, attempts))
            self.delta.event("node_skipped", key, reason="skip_if")
            return S_DONE
        if task.needs_approval and not (rec is not None and rec.data and rec.data.get("approved")):
            return self.request_approval(key, "task", task.approval_message
                                         or f"Run step {task.id!r}?", task.on_deny, task)
        if task.has_value:
            try:
                value, tname = coerce_output(task, task.value)
            except ValidationError as e:
                err = f"value does not fit {task.output.__name__ if task.output else 'its output'}: {one_line_validation(e)}"
                if task.continue_on_fail:
                    self.set(key, NodeRecord("task", FAILED, attempts, err))
                    self.delta.event("node_failed", key, error=err, continue_on_fail=True)
                    return S_DONE
                return self.fail(key, "task", err, attempts)
            self.set(key, NodeRecord("task", DONE, attempts, None, rec.data if rec else None))
            self.output(key, value, tname, {"fp": fingerprint(task), "input": False, "reads": []})
            self.delta.event("node_finished", key, static=True)
            return S_DONE
        self.ready.append(Ready(task, key, wd, self.worktree_of.get(wd)))
        return S_ACTIVE

    def _failed(self, key: Key) -> int:
        self.failed = self.failed or key
        return S_FAILED

    def request_approval(self, key: Key, kind: str, message: str, on_deny: str, node: Node) -> int:
        rec = self.state.nodes.get(key)
        self.set(key, NodeRecord(kind, WAITING_APPROVAL, rec.attempts if rec else 0, None,
                                 {"message": message, "on_deny": on_deny}))
        self.delta.approvals.append({"key": key, "message": message, "on_deny": on_deny})
        self.delta.event("approval_requested", key, message=message)
        return S_WAITING

    def approval(self, node: Approval, it: int) -> int:
        key = (node.id, it)
        rec = self.state.nodes.get(key)
        if rec is None or rec.state == PENDING:
            if self.dirty:
                return S_ACTIVE
            return self.request_approval(key, "approval", node.message, node.on_deny, node)
        if rec.state == WAITING_APPROVAL:
            return S_WAITING
        if rec.state == FAILED:
            return self._failed(key)
        return S_DONE

    def loop(self, node: Loop, it: int, wd: Path) -> int:
        key = (node.id, it)
        rec = self.state.nodes.get(key)
        if rec is None:
            if self.dirty:
                return S_ACTIVE
            start = self.state.loop_next.get(node.id, 0)
            rec = NodeRecord("loop", RUNNING, 0, None, {"iteration": start, "start": start})
            self.set(key, rec)
            self.state.note_loop(node.id, rec)
            self.delta.event("loop_iteration", key, iteration=start)
        elif rec.state == DONE:
            return S_DONE
        elif rec.state == FAILED:
            return self._failed(key)
        while True:
            data = rec.data or {}
            cur, start = data["iteration"], data["start"]
            s = self.seq(node.items, cur, wd)
            if s != S_DONE or self.dirty:
                return S_ACTIVE if s == S_DONE else s
            until = node.until(self.ctx) if callable(node.until) else node.until
            if until:
                self.set(key, NodeRecord("loop", DONE, 0, None, rec.data))
                self.delta.event("loop_finished", key, iterations=cur - start + 1, reason="until")
                return S_DONE
            if cur - start + 1 >= node.max_iterations:
                if node.on_max == "fail":
                    self.set(key, NodeRecord("loop", FAILED, 0, None, rec.data))
                    err = (f"loop {node.id!r} ran {node.max_iterations} iterations and its until "
                           "condition never held (on_max='fail')")
                    return self.fail(key, "loop", err)
                self.set(key, NodeRecord("loop", DONE, 0, None, {**data, "exhausted": True}))
                self.delta.event("loop_finished", key, iterations=cur - start + 1, reason="max_iterations")
                return S_DONE
            rec = NodeRecord("loop", RUNNING, 0, None, {"iteration": cur + 1, "start": start})
            self.set(key, rec)
            self.state.note_loop(node.id, rec)
            self.delta.event("loop_iteration", key, iteration=cur + 1)

    def worktree(self, node: Worktree, it: int, wd: Path) -> int:
        key = (node.id, it)
        rec = self.state.nodes.get(key)
        if rec is None or rec.state == PENDING:
            if self.dirty:
                return S_ACTIVE
            if key in self.backoff and self.backoff[key] > self.now:
                return S_ACTIVE
            self.ready.append(Ready(node, key, wd))
            return S_ACTIVE
        if rec.state == FAILED:
            return S_DONE if node.continue_on_fail else self._failed(key)
        if rec.state == RUNNING and not (rec.data and rec.data.get("path")):
            return S_ACTIVE  # the checkout is being made
        data = rec.data or {}
        path = Path(data["path"])
        self.worktree_of[path] = key
        s = self.seq(node.items, it, path)
        if s == S_DONE and rec.state != DONE and not self.dirty:
            self.set(key, NodeRecord("worktree", DONE, rec.attempts, None, rec.data))
            self.delta.event("worktree_finished", key, path=data["path"])
        return s


def render(root: Node, state: RunState, delta: Delta, ctx: Ctx, backoff: dict[Key, float],
           workdir: Path) -> Plan:
    w = Walker(state, delta, ctx, backoff)
    status = w.walk(root, 0, workdir)
    if w.dirty:
        return Plan(S_ACTIVE, [], True, w.failed)
    return Plan(status, w.ready, False, w.failed)
