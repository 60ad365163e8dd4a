"""render: the node tree + the saved state -> the plan (ready tasks, immediate transitions, status).

Immediate transitions (skips, static values, loop advances, gate requests, waits starting, a
failure caught, a saga turning to its compensations) are applied to the state while walking and
recorded in the Delta. A transition that adds an output changes what the workflow body can read,
so the walk stops deciding and the caller renders again.

Durable waits (Signal, Timer, HumanTask, gates with a timeout, parked sub-workflows) are listed in
the plan: the executor moves them on (a signal taken, a timer fired, a timeout applied) outside
the walk, because that needs the clock or the database.
"""
from __future__ import annotations

import hashlib
import json
import time
from functools import cached_property, lru_cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from .budget import Budget
from .context import Ctx, type_name
from .dsl import (Approval, Branch, ContinueAsNew, HumanTask, Loop, Node, Parallel, Saga, Sequence, Signal, Subflow,
                  Task, Timer, TryCatchFinally, Worktree)
from .errors import RenderError, one_line_validation
from .frame import Delta
from .state import (DONE, FAILED, PENDING, RUNNING, SKIPPED, WAITING, WAITING_APPROVAL, Key, NodeRecord,
                    RunState)

# Walk results, ordered so that max() combines siblings of a Parallel.
S_DONE, S_WAITING, S_ACTIVE, S_FAILED = 0, 1, 2, 3


@dataclass
class Ready:
    node: "Task | Subflow | Worktree"  # a Task, a Subflow, or a Worktree whose checkout must be made
    key: Key
    workdir: Path
    worktree: Key | None = None  # the enclosing Worktree node, whose files are snapshotted after the step
    scopes: tuple[str, ...] = ()  # the budget scopes around the step, outermost first

    @property
    def task(self) -> Task:
        """The task to run (step runners of tasks are only handed tasks)."""
        assert isinstance(self.node, Task), self.node
        return self.node


# Nodes with a record of their own; the leaves among them have no children to look into.
RECORDED = (Task, Approval, Loop, Worktree, Signal, Timer, HumanTask, Subflow, Saga, ContinueAsNew)
LEAVES = (Task, Approval, Signal, Timer, HumanTask, Subflow, ContinueAsNew)


def fingerprint(task: Task | Subflow) -> str:
    """What the render of a task looks like, to tell whether a fork with other input changes it."""
    if isinstance(task, Subflow):
        wf = task.workflow if isinstance(task.workflow, str) else task.workflow.name
        return _digest(["subflow", wf, type_name(task.output), _stable(task.input)])
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
    waits: list[tuple[Key, Node]] = field(default_factory=list)  # steps in a durable wait
    continue_as: tuple[Key, ContinueAsNew] | None = None  # a ContinueAsNew reached
    budgets: dict[str, Budget] = field(default_factory=dict)  # budget scope -> its budget
    members: dict[str, set[str]] = field(default_factory=dict)  # budget scope -> node ids that spend in it


OUTPUT_NODES = (Task, Signal, HumanTask, Subflow)


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
            if type(node) in OUTPUT_NODES:
                models[nid] = node.output  # type: ignore[attr-defined]  # every OUTPUT_NODES type has one
        stack.extend(node.children())
    return models


def coerce_output(task: Task | Subflow, value: Any) -> tuple[Any, str | None]:
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
    def __init__(self, state: RunState, delta: Delta, ctx: Ctx, backoff: dict[Key, float],
                 parked: frozenset[Key] = frozenset()) -> None:
        self.state, self.delta, self.ctx, self.backoff = state, delta, ctx, backoff
        self.parked = parked  # running Subflow steps whose child waits only for people
        self.ready: list[Ready] = []
        self.dirty = False
        self.failed: Key | None = None
        self.fail_log: list[Key] = []  # every failure met, for TryCatchFinally and Saga to catch
        self.now = time.monotonic()
        self.worktree_of: dict[Path, Key] = {}
        self.waits: list[tuple[Key, Node]] = []
        self.continue_as: tuple[Key, ContinueAsNew] | None = None
        self.scopes: list[str] = []
        self.budgets: dict[str, Budget] = {}
        self.members: dict[str, set[str]] = {}

    @cached_property
    def wall(self) -> float:
        """The wall clock, read once per render and only when a wait begins (it is saved with it)."""
        return time.time()

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
        self.fail_log.append(key)
        return S_FAILED

    def started(self, node: Node, it: int) -> bool:
        t = type(node)
        if node.id is not None and t in RECORDED:
            rec = self.state.nodes.get((node.id, it))
            if rec is not None and (rec.state != PENDING or rec.attempts):
                return True
            if t in LEAVES:
                return False
        return any(self.started(c, it) for c in node.children())

    # --- the walk ------------------------------------------------------------------------------
    def walk(self, node: Node, it: int, wd: Path) -> int:
        t = type(node)
        if t is Task:
            if node.budget is not None or self.scopes:  # type: ignore[attr-defined]  # narrowed by `type(node) is`, faster than isinstance
                return self.scoped(node, it, wd, self.task)
            return self.task(node, it, wd)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        if t is Sequence:
            if node.budget is not None:  # type: ignore[attr-defined]  # narrowed by `type(node) is`, faster than isinstance
                return self.scoped(node, it, wd, lambda n, i, w: self.seq(n.items, i, w))
            return self.seq(node.items, it, wd)  # type: ignore[attr-defined]  # narrowed by `type(node) is`, faster than isinstance
        if t is Parallel:
            return self.scoped(node, it, wd, self.parallel)
        if t is Branch:
            chosen = node.chosen()  # type: ignore[attr-defined]  # narrowed by `type(node) is`, faster than isinstance
            return S_DONE if chosen is None else self.walk(chosen, it, wd)
        if t is Loop:
            return self.scoped(node, it, wd, self.loop)
        if t is Approval:
            return self.approval(node, it)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        if t is Worktree:
            return self.scoped(node, it, wd, self.worktree)
        if t is Signal:
            return self.signal(node, it)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        if t is Timer:
            return self.timer(node, it)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        if t is HumanTask:
            return self.human(node, it)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        if t is Subflow:
            return self.scoped(node, it, wd, self.subflow)
        if t is TryCatchFinally:
            return self.scoped(node, it, wd, self.trycatch)
        if t is Saga:
            return self.scoped(node, it, wd, self.saga)
        if t is ContinueAsNew:
            return self.continue_as_new(node, it)  # type: ignore[arg-type]  # narrowed by `type(node) is`, faster than isinstance
        raise RenderError(f"{node!r} is not a step")

    def scoped(self, node: Any, it: int, wd: Path, fn: Callable[[Any, int, Path], int]) -> int:
        """Walk a node inside its budget scope (if it has a budget); steps that can spend record
        that they belong to every scope around them."""
        budget = getattr(node, "budget", None)
        if budget is None:
            return fn(node, it, wd)
        self.budgets[node.id] = budget
        self.members.setdefault(node.id, set())
        self.scopes.append(node.id)
        try:
            return fn(node, it, wd)
        finally:
            self.scopes.pop()

    def ready_step(self, node: Task | Subflow, key: Key, wd: Path) -> None:
        for scope in self.scopes:
            self.members[scope].add(key[0])
        self.ready.append(Ready(node, key, wd, self.worktree_of.get(wd), tuple(self.scopes)))

    def note_member(self, node_id: str) -> None:
        for scope in self.scopes:
            self.members[scope].add(node_id)

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
        if self.scopes:
            self.note_member(task.id)
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
        self.ready_step(task, key, wd)
        return S_ACTIVE

    def _failed(self, key: Key) -> int:
        self.failed = self.failed or key
        self.fail_log.append(key)
        return S_FAILED

    def request_approval(self, key: Key, kind: str, message: str, on_deny: str, node: Node, mode: str = "approve",
                         request: dict[str, Any] | None = None) -> int:
        """A gate or a human task asks a person: its node waits and a row in approvals says what for."""
        rec = self.state.nodes.get(key)
        request = {k: v for k, v in (request or {}).items() if v is not None}
        timeout = getattr(node, "timeout", None)
        if timeout:
            request["due"] = self.wall + timeout
            request["on_timeout"] = node.on_timeout  # type: ignore[attr-defined]  # nodes with a timeout have one
        data: dict[str, Any] = {"message": message, "on_deny": on_deny}
        if mode != "approve":
            data["mode"] = mode
        if "due" in request:
            data["due"] = request["due"]
        self.set(key, NodeRecord(kind, WAITING_APPROVAL, rec.attempts if rec else 0, None, data))
        self.delta.approvals.append({"key": key, "message": message, "on_deny": on_deny, "mode": mode,
                                     "request": request})
        self.delta.event("approval_requested", key, message=message, **({"mode": mode} if mode != "approve" else {}))
        if timeout:
            self.waits.append((key, node))
        return S_WAITING

    def approval(self, node: Approval, it: int) -> int:
        key = (node.id, it)
        rec = self.state.nodes.get(key)
        if rec is None or rec.state == PENDING:
            if self.dirty:
                return S_ACTIVE
            return self.request_approval(key, "approval", node.message, node.on_deny, node, node.mode,
                                         {"options": node.options or None, "allowed": node.allowed})
        if rec.state == WAITING_APPROVAL:
            if node.timeout:
                self.waits.append((key, node))
            return S_WAITING
        if rec.state == FAILED:
            return self._failed(key)
        return S_DONE

    # --- durable waits -------------------------------------------------------------------------
    def _wait_state(self, key: Key, rec: NodeRecord | None, node: Node) -> int | None:
        """The walk result of a wait that has begun (None: it has not)."""
        if rec is None or rec.state == PENDING:
            return None
        st = rec.state
        if st == WAITING or st == WAITING_APPROVAL:
            self.waits.append((key, node))
            return S_WAITING
        if st == DONE or st == SKIPPED:
            return S_DONE
        return self._failed(key)  # failed (timed out) or cancelled

    def signal(self, node: Signal, it: int) -> int:
        data: dict[str, Any] = {"name": node.name}
        return self.wait(node, it, "signal", lambda now: {**data, **({"due": now + node.timeout} if node.timeout
                                                                      else {})})

    def timer(self, node: Timer, it: int) -> int:
        return self.wait(node, it, "timer", lambda now: {"due": node.due(now)})

    def wait(self, node: Signal | Timer, it: int, kind: str, begin: Callable[[float], dict[str, Any]]) -> int:
        """A signal or timer wait: once begun (its data saved: name, due, since), it is a row that waits."""
        key = (node.id, it)
        rec = self.state.nodes.get(key)
        s = self._wait_state(key, rec, node)
        if s is not None:
            return s
        if self.dirty:
            return S_ACTIVE
        try:
            data = {**begin(self.wall), "since": self.wall}
        except Exception as e:  # a Timer's until= callable that raised or returned no datetime
            return self.fail(key, kind, f"{kind} {node.id!r}: {type(e).__name__}: {e}")
        self.set(key, NodeRecord(kind, WAITING, rec.attempts if rec else 0, None, data))
        self.delta.event("wait_started", key, kind=kind, **{k: data[k] for k in ("name", "due") if k in data})
        self.waits.append((key, node))
        return S_WAITING

    def human(self, node: HumanTask, it: int) -> int:
        key = (node.id, it)
        rec = self.state.nodes.get(key)
        s = self._wait_state(key, rec, node)
        if s is not None:
            if s == S_WAITING and not node.timeout:
                self.waits.pop()  # a person answers it; nothing to time out
            return s
        if self.dirty:
            return S_ACTIVE
        return self.request_approval(key, "human", node.prompt, node.on_deny, node, "human",
                                     {"output": type_name(node.output), "schema": node.output.model_json_schema(),
                                      "allowed": node.allowed})

    def subflow(self, node: Subflow, it: int, wd: Path) -> int:
        key = (node.id, it)
        self.note_member(node.id)
        rec = self.state.nodes.get(key)
        st = rec.state if rec is not None else PENDING
        if st == DONE or st == SKIPPED:
            return S_DONE
        if st == RUNNING:
            if key in self.parked:
                self.waits.append((key, node))
                return S_WAITING
            return S_ACTIVE
        if st == WAITING:  # parked: its child waits for people and no process drives it
            self.waits.append((key, node))
            return S_WAITING
        if st == FAILED:
            return S_DONE if node.continue_on_fail else self._failed(key)
        if st != PENDING:
            return self._failed(key)
        if (key in self.backoff and self.backoff[key] > self.now) or self.dirty:
            return S_ACTIVE
        self.ready_step(node, key, wd)
        return S_ACTIVE

    def continue_as_new(self, node: ContinueAsNew, it: int) -> int:
        key = (node.id, it)
        rec = self.state.nodes.get(key)
        if rec is not None and rec.state == DONE:
            return S_DONE
        if rec is not None and rec.state == FAILED:
            return self._failed(key)
        if self.dirty:
            return S_ACTIVE
        if self.continue_as is None:
            self.continue_as = (key, node)
        return S_WAITING

    # --- error handling ------------------------------------------------------------------------
    def catch(self, mark: int, saved: Key | None, ready_mark: int, by: str | None) -> Key:
        """Failures met since `mark` stop the part they happened in: nothing new starts there. With
        `by` they are handled there: they no longer fail the run and their records say so (a fork
        keeps them; a resume of a failed run does not retry them). Returns the first of them."""
        caught = self.fail_log[mark:]
        del self.fail_log[mark:]
        del self.ready[ready_mark:]
        self.failed = saved
        for key in caught if by is not None else ():
            rec = self.state.nodes.get(key)
            if rec is not None and rec.state == FAILED and not (rec.data and rec.data.get("caught")):
                self.set(key, rec.but(data={**(rec.data or {}), "caught": by}))
                self.delta.event("failure_caught", key, by=by, error=rec.error)
        return caught[0]

    def trycatch(self, node: TryCatchFinally, it: int, wd: Path) -> int:
        mark, saved, ready_mark = len(self.fail_log), self.failed, len(self.ready)
        s = self.walk(node.try_, it, wd)
        failure: Key | None = None
        if s == S_FAILED:
            failure = self.catch(mark, saved, ready_mark, (node.id or "try") if node.catch is not None else None)
            if node.catch is not None:
                s = self.walk(node.catch, it, wd)
                failure = None
        if node.finally_ is not None and (s == S_DONE or s == S_FAILED):
            f = self.walk(node.finally_, it, wd)
            if f != S_DONE:
                return f
        if failure is not None:  # no catch: the failure goes on, after finally
            self.failed = self.failed or failure
            self.fail_log.append(failure)
            return S_FAILED
        return s

    def saga(self, node: Saga, it: int, wd: Path) -> int:
        key = (node.id, it)
        rec = self.state.nodes.get(key)
        if rec is None or rec.state == PENDING:
            if self.dirty:
                return S_ACTIVE
            rec = NodeRecord("saga", RUNNING, 0, None, {"phase": "forward"})
            self.set(key, rec)
        if rec.state == DONE:
            return S_DONE
        if rec.state == FAILED:
            return S_DONE if node.continue_on_fail else self._failed(key)
        data = rec.data or {"phase": "forward"}
        if data.get("phase") == "forward":
            for i, (action, _comp) in enumerate(node.steps):
                mark, saved, ready_mark = len(self.fail_log), self.failed, len(self.ready)
                s = self.walk(action, it, wd)
                if s == S_FAILED:
                    failed = self.catch(mark, saved, ready_mark, node.id)
                    frec = self.state.nodes.get(failed)
                    data = {"phase": "compensating", "failed_at": i, "failed": list(failed),
                            "error": frec.error if frec else None}
                    self.set(key, NodeRecord("saga", RUNNING, 0, None, data))
                    self.delta.event("compensation_started", key, failed=failed[0], error=data["error"])
                    break
                if s != S_DONE:
                    return s
            else:
                if self.dirty:
                    return S_ACTIVE
                self.set(key, NodeRecord("saga", DONE, 0, None, {"phase": "done"}))
                self.delta.event("saga_finished", key)
                return S_DONE
        done: list[str] = []
        for j in range(data["failed_at"] - 1, -1, -1):
            comp = node.steps[j][1]
            if comp is None:
                continue
            s = self.walk(comp, it, wd)
            if s == S_FAILED:  # a compensation that fails is not caught: the saga fails at once
                return s
            if s != S_DONE:
                return s
            if comp.id is not None:
                done.append(comp.id)
        if self.dirty:
            return S_ACTIVE
        failed_id = data["failed"][0]
        err = (f"saga {node.id!r}: step {failed_id!r} failed ({data.get('error') or 'failed'}); "
               + (f"compensated: {', '.join(done)}" if done else "nothing to compensate"))
        self.set(key, NodeRecord("saga", FAILED, 0, err, {**data, "phase": "compensated", "compensated": done}))
        self.delta.event("saga_compensated", key, compensated=done, error=data.get("error"))
        return S_DONE if node.continue_on_fail else self._failed(key)

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
            self.ready.append(Ready(node, key, wd, None, tuple(self.scopes)))
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
           workdir: Path, parked: frozenset[Key] = frozenset()) -> Plan:
    w = Walker(state, delta, ctx, backoff, parked)
    status = w.walk(root, 0, workdir)
    if w.dirty:
        return Plan(S_ACTIVE, [], True, w.failed)
    return Plan(status, w.ready, False, w.failed, w.waits, w.continue_as, w.budgets, w.members)
