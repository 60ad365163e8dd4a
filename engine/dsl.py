"""The node types users write: Task, Sequence, Parallel, Branch, Loop, Approval, Worktree, and the
durable waits and error handling: Signal, Timer, HumanTask, Subflow, TryCatchFinally, Saga,
ContinueAsNew.

A workflow is a function of `ctx` that returns a tree of these nodes. The tree is rebuilt
after every transition, so nodes are cheap value objects; their ids must be stable across
renders (derive them from data, never from positions).
"""
from __future__ import annotations

import datetime as _dt
import inspect
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel

from .budget import Budget
from .cache import Cache
from .retry import Retry


def _caller() -> tuple[str, int]:
    """Where the node was written, to name it in errors (file, line)."""
    frame = sys._getframe(2)
    return frame.f_code.co_filename, frame.f_lineno


class Node:
    """Base class of every step. `id` is None for purely structural nodes."""

    id: str | None = None
    src: tuple[str, int] = ("?", 0)

    def children(self) -> tuple["Node", ...]:
        return ()

    def where(self) -> str:
        return f"{self.src[0]}:{self.src[1]}"


class Task(Node):
    """One unit of work: `run=` a callable (compute), `agent=` + `prompt=` (agent), or `value=` (static)."""

    id: str
    __slots__ = ("id", "run", "agent", "prompt", "value", "output", "retries", "backoff",
                 "timeout", "skip_if", "continue_on_fail", "needs_approval", "approval_message",
                 "on_deny", "tools", "src", "has_value", "retry", "cache", "budget")

    def __init__(self, id: str, *, run: Callable[..., Any] | None = None, agent: Any = None,
                 prompt: str | Callable[..., str] | None = None, value: Any = ...,
                 output: type[BaseModel] | None = None, retries: int | None = None, backoff: float | None = None,
                 timeout: float | None = None, skip_if: bool = False, continue_on_fail: bool = False,
                 needs_approval: bool = False, approval_message: str | None = None,
                 on_deny: Literal["fail", "skip", "continue"] = "fail", tools: Any = None,
                 retry: Retry | None = None, cache: Cache | None = None, budget: Budget | None = None) -> None:
        self.src = _caller()
        _check_id(id, self)
        self.has_value = value is not ...
        kinds = sum([run is not None, agent is not None, self.has_value])
        if kinds != 1:
            raise TypeError(f"Task {id!r} at {self.where()}: give exactly one of run=, agent= (with prompt=) or value=")
        if agent is not None and prompt is None:
            raise TypeError(f"Task {id!r} at {self.where()}: an agent task needs prompt=")
        if on_deny not in ("fail", "skip", "continue"):
            raise TypeError(f"Task {id!r} at {self.where()}: on_deny is 'fail', 'skip' or 'continue'")
        if retry is not None and (retries is not None or backoff is not None):
            raise TypeError(f"Task {id!r} at {self.where()}: give retry=Retry...(...) or retries=/backoff=, not both")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"Task {id!r} at {self.where()}: retry is a Retry policy (Retry.fixed, .linear, "
                            ".exponential)")
        try:
            self.retry = retry or _retry(retries, backoff)
        except TypeError as e:
            raise TypeError(f"Task {id!r} at {self.where()}: {e}") from None
        if cache is not None or budget is not None:
            _check_type(cache, Cache, "cache", "Cache(key=..., version=...)", self)
            _check_type(budget, Budget, "budget", "Budget(tokens=..., usd=...)", self)
            if cache is not None and not (agent is not None or run is not None):
                raise TypeError(f"Task {id!r} at {self.where()}: only a step that runs (run= or agent=) can be cached")
        self.id, self.run, self.agent, self.prompt = id, run, agent, prompt
        self.value = None if not self.has_value else value
        self.output, self.timeout = output, timeout
        self.retries, self.backoff = self.retry.retries, self.retry.delay
        self.cache, self.budget = cache, budget
        self.skip_if, self.continue_on_fail = bool(skip_if), continue_on_fail
        self.needs_approval, self.approval_message, self.on_deny = needs_approval, approval_message, on_deny
        if tools is not None and tools != "read_only" and not isinstance(tools, (list, tuple)):
            raise TypeError(f"Task {id!r} at {self.where()}: tools is a list of engine.tools.Tool or 'read_only'")
        self.tools = tools  # for agent steps: None = the agent's own set

    @property
    def kind(self) -> str:
        return "agent" if self.agent is not None else "static" if self.has_value else "compute"


class Sequence(Node):
    __slots__ = ("id", "items", "budget", "src")

    def __init__(self, *children: Node, id: str | None = None, budget: Budget | None = None) -> None:
        self.src = _caller()
        self.items = _flatten(children, self)
        self.id, self.budget = _scope(id, budget, self)

    def children(self) -> tuple[Node, ...]:
        return self.items


class Parallel(Node):
    __slots__ = ("id", "items", "max_concurrency", "budget", "src")

    def __init__(self, *children: Node, max_concurrency: int | None = None, id: str | None = None,
                 budget: Budget | None = None) -> None:
        self.src = _caller()
        if max_concurrency is not None and max_concurrency < 1:
            raise TypeError(f"Parallel at {self.where()}: max_concurrency must be >= 1")
        self.items = _flatten(children, self)
        self.max_concurrency = max_concurrency
        self.id, self.budget = _scope(id, budget, self)

    def children(self) -> tuple[Node, ...]:
        return self.items


class Branch(Node):
    __slots__ = ("condition", "then", "else_", "src")

    def __init__(self, condition: Any, then: Node, else_: Node | None = None) -> None:
        self.src = _caller()
        self.condition = bool(condition)
        self.then, self.else_ = then, else_

    def children(self) -> tuple[Node, ...]:
        return tuple(n for n in (self.then, self.else_) if n is not None)

    def chosen(self) -> Node | None:
        return self.then if self.condition else self.else_


class Loop(Node):
    """Runs its body at least once, then again until `until` holds or `max_iterations` is reached.

    `until` is evaluated by the workflow body at each render (so it reads the latest outputs);
    it may also be a callable taking ctx. Tasks inside see the loop's iteration in `ctx.iteration`.
    """

    id: str
    __slots__ = ("id", "items", "until", "max_iterations", "on_max", "budget", "src")

    def __init__(self, id: str, *children: Node, until: Any = False, max_iterations: int = 5,
                 on_max: Literal["return_last", "fail"] = "return_last", budget: Budget | None = None) -> None:
        self.src = _caller()
        _check_id(id, self)
        if max_iterations < 1:
            raise TypeError(f"Loop {id!r} at {self.where()}: max_iterations must be >= 1")
        if on_max not in ("return_last", "fail"):
            raise TypeError(f"Loop {id!r} at {self.where()}: on_max is 'return_last' or 'fail'")
        self.id, self.items, self.until = id, _flatten(children, self), until
        self.max_iterations, self.on_max = max_iterations, on_max
        if budget is not None:
            _check_type(budget, Budget, "budget", "Budget(tokens=..., usd=...)", self)
        self.budget = budget

    def children(self) -> tuple[Node, ...]:
        return self.items


class Approval(Node):
    """A gate: the run waits (as a database row) until someone decides. `mode="approve"` approves or
    denies; `"select"` chooses one of `options`; `"rank"` orders all of them. The decision is the
    output (engine.approval.Decision: approved, by, note, at, choice, ranking, timed_out).
    `timeout` (seconds) + `on_timeout` ("fail", "deny", "approve", "skip": approving a select picks
    the first option, a rank keeps the given order) decide for nobody; `allowed` names who may."""

    id: str
    __slots__ = ("id", "message", "on_deny", "mode", "options", "timeout", "on_timeout", "allowed", "src")

    def __init__(self, id: str, *, message: str, on_deny: Literal["fail", "skip", "continue"] = "fail",
                 mode: Literal["approve", "select", "rank"] = "approve", options: Any = None,
                 timeout: float | _dt.timedelta | None = None,
                 on_timeout: Literal["fail", "deny", "approve", "skip"] = "fail",
                 allowed: Any = None) -> None:
        self.src = _caller()
        _check_id(id, self)
        if on_deny not in ("fail", "skip", "continue"):
            raise TypeError(f"Approval {id!r} at {self.where()}: on_deny is 'fail', 'skip' or 'continue'")
        if mode not in ("approve", "select", "rank"):
            raise TypeError(f"Approval {id!r} at {self.where()}: mode is 'approve', 'select' or 'rank'")
        opts = [str(o) for o in options] if options is not None else []
        if mode == "approve" and opts:
            raise TypeError(f"Approval {id!r} at {self.where()}: options go with mode='select' or mode='rank'")
        if mode != "approve" and (len(opts) < 2 or len(set(opts)) != len(opts) or not all(opts)):
            raise TypeError(f"Approval {id!r} at {self.where()}: mode={mode!r} needs at least two distinct, "
                            "non-empty options")
        if on_timeout not in ("fail", "deny", "approve", "skip"):
            raise TypeError(f"Approval {id!r} at {self.where()}: on_timeout is 'fail', 'deny', 'approve' or 'skip'")
        self.id, self.message, self.on_deny = id, message, on_deny
        self.mode, self.options, self.on_timeout = mode, opts, on_timeout
        self.timeout = _seconds(timeout, "timeout", self)
        self.allowed = _names(allowed, self)


class Signal(Node):
    """A durable wait for an event from outside: `smithers signal RUN NAME --data JSON` (or the
    API) delivers a payload that must validate against `output`; the payload is the output. Signals
    sent before the run reaches this step are kept, first in first out per name. `timeout`
    (seconds) + `on_timeout` ("fail" or "skip") bound the wait."""

    id: str
    __slots__ = ("id", "name", "output", "timeout", "on_timeout", "src")

    def __init__(self, id: str, *, name: str | None = None, output: type[BaseModel] | None = None,
                 timeout: float | _dt.timedelta | None = None, on_timeout: Literal["fail", "skip"] = "fail") -> None:
        self.src = _caller()
        _check_id(id, self)
        name = id if name is None else name
        if not isinstance(name, str) or not name or any(c in name for c in "\n\0"):
            raise TypeError(f"Signal {id!r} at {self.where()}: name must be a non-empty string")
        if on_timeout not in ("fail", "skip"):
            raise TypeError(f"Signal {id!r} at {self.where()}: on_timeout is 'fail' or 'skip'")
        _check_model(output, self)
        self.id, self.name, self.output, self.on_timeout = id, name, output, on_timeout
        self.timeout = _seconds(timeout, "timeout", self)


class Timer(Node):
    """A durable sleep: `seconds=` from when the run reaches it, or `until=` a datetime (naive means
    local time), or a callable of the current datetime returning one ("next Monday 9:00"), evaluated
    once when the run reaches it. The due time is saved, so a restart sleeps only what is left."""

    id: str
    __slots__ = ("id", "until", "seconds", "src")

    def __init__(self, id: str, *, until: Any = None, seconds: float | _dt.timedelta | None = None) -> None:
        self.src = _caller()
        _check_id(id, self)
        if (until is None) == (seconds is None):
            raise TypeError(f"Timer {id!r} at {self.where()}: give exactly one of until= or seconds=")
        if until is not None and not (isinstance(until, _dt.datetime) or callable(until)):
            raise TypeError(f"Timer {id!r} at {self.where()}: until is a datetime or a callable returning one")
        self.id, self.until = id, until
        self.seconds = _seconds(seconds, "seconds", self, allow_zero=True)

    def due(self, now: float) -> float:
        """The wall-clock time (epoch seconds) this timer fires, decided when the run reaches it."""
        if self.seconds is not None:
            return now + self.seconds
        until = self.until(_dt.datetime.fromtimestamp(now).astimezone()) if callable(self.until) else self.until
        if not isinstance(until, _dt.datetime):
            raise TypeError(f"Timer {self.id!r}: until returned {until!r}, not a datetime")
        return until.timestamp()


class HumanTask(Node):
    """A person answers with structured data: `smithers answer RUN NODE --data JSON`, the API, or a
    form in the app generated from `output`. The answer, validated, is the output."""

    id: str
    __slots__ = ("id", "prompt", "output", "timeout", "on_timeout", "allowed", "on_deny", "src")

    def __init__(self, id: str, *, prompt: str, output: type[BaseModel], timeout: float | _dt.timedelta | None = None,
                 on_timeout: Literal["fail", "skip"] = "fail", allowed: Any = None,
                 on_deny: Literal["fail", "skip", "continue"] = "fail") -> None:
        self.src = _caller()
        _check_id(id, self)
        if not (isinstance(output, type) and issubclass(output, BaseModel)):
            raise TypeError(f"HumanTask {id!r} at {self.where()}: output is the pydantic model of the answer")
        if on_timeout not in ("fail", "skip"):
            raise TypeError(f"HumanTask {id!r} at {self.where()}: on_timeout is 'fail' or 'skip'")
        if on_deny not in ("fail", "skip", "continue"):
            raise TypeError(f"HumanTask {id!r} at {self.where()}: on_deny is 'fail', 'skip' or 'continue'")
        self.id, self.prompt, self.output, self.on_timeout, self.on_deny = id, prompt, output, on_timeout, on_deny
        self.timeout = _seconds(timeout, "timeout", self)
        self.allowed = _names(allowed, self)


class Subflow(Node):
    """Another workflow as one step: a child run with its own frames, linked to this step. `workflow`
    is a @workflow function or a workflow's name; `input` its input. The child's result (the output
    of its last step) is this step's output. Cancelling the parent cancels the child; a failed child
    fails this step (`continue_on_fail` lets the parent go on)."""

    id: str
    __slots__ = ("id", "workflow", "input", "output", "budget", "continue_on_fail", "retries", "src")

    def __init__(self, id: str, workflow: Any, *, input: Any = None, output: type[BaseModel] | None = None,
                 budget: Budget | None = None, continue_on_fail: bool = False, retries: int = 0) -> None:
        self.src = _caller()
        _check_id(id, self)
        if not (isinstance(workflow, (str, WorkflowDef)) and workflow):
            raise TypeError(f"Subflow {id!r} at {self.where()}: workflow is a @workflow function or a workflow's name")
        _check_model(output, self)
        _check_type(budget, Budget, "budget", "Budget(tokens=..., usd=...)", self)
        if not isinstance(retries, int) or not 0 <= retries <= 1000:
            raise TypeError(f"Subflow {id!r} at {self.where()}: retries must be a whole number from 0 to 1000")
        self.id, self.workflow, self.input, self.output = id, workflow, input, output
        self.budget, self.continue_on_fail, self.retries = budget, continue_on_fail, retries

    @property
    def kind(self) -> str:
        return "subflow"

    @property
    def timeout(self) -> None:
        return None

    @property
    def retry(self) -> Retry:
        return Retry.fixed(0.0, retries=self.retries)


class TryCatchFinally(Node):
    """`try_` runs; if it fails, `catch` runs (the failure is handled when catch succeeds; read it
    with ctx.error(id)); `finally_` runs after either. Without catch, the failure goes on after
    finally. Steps already running in try_ when it failed finish; nothing new starts there."""

    __slots__ = ("id", "try_", "catch", "finally_", "budget", "src")

    def __init__(self, try_: Node, catch: Node | None = None, finally_: Node | None = None, *, id: str | None = None,
                 budget: Budget | None = None) -> None:
        self.src = _caller()
        for name, part in (("try_", try_), ("catch", catch), ("finally_", finally_)):
            if part is not None and not isinstance(part, Node):
                raise TypeError(f"TryCatchFinally at {self.where()}: {name} must be a step, not {part!r}")
        if try_ is None:
            raise TypeError(f"TryCatchFinally at {self.where()}: try_ is required")
        self.try_, self.catch, self.finally_ = try_, catch, finally_
        self.id, self.budget = _scope(id, budget, self)

    def children(self) -> tuple[Node, ...]:
        return tuple(n for n in (self.try_, self.catch, self.finally_) if n is not None)


class Saga(Node):
    """Actions in order, each with an optional compensation: when an action fails, the
    compensations of the actions that finished run in reverse order, durably (a crash while
    compensating goes on compensating after resume), then the saga fails (`continue_on_fail`
    lets the run go on)."""

    id: str
    __slots__ = ("id", "steps", "continue_on_fail", "budget", "src")

    def __init__(self, id: str, steps: Any, *, continue_on_fail: bool = False, budget: Budget | None = None) -> None:
        self.src = _caller()
        _check_id(id, self)
        pairs: list[tuple[Node, Node | None]] = []
        for item in steps or ():
            if isinstance(item, Node):
                pairs.append((item, None))
                continue
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], Node)
                    and (item[1] is None or isinstance(item[1], Node))):
                raise TypeError(f"Saga {id!r} at {self.where()}: steps are (action, compensation) pairs of steps "
                                f"(compensation may be None), not {item!r}")
            pairs.append((item[0], item[1]))
        if not pairs:
            raise TypeError(f"Saga {id!r} at {self.where()}: give at least one (action, compensation) step")
        _check_type(budget, Budget, "budget", "Budget(tokens=..., usd=...)", self)
        self.id, self.steps, self.continue_on_fail, self.budget = id, tuple(pairs), continue_on_fail, budget

    def children(self) -> tuple[Node, ...]:
        return tuple(n for pair in self.steps for n in pair if n is not None)


class ContinueAsNew(Node):
    """Ends this run and hands `input` to a fresh run of the same workflow (linked as its
    successor), so a loop that runs for months does not grow one run without bound. It takes
    effect when reached and nothing else is running."""

    id: str
    __slots__ = ("id", "input", "src")

    def __init__(self, input: Any = None, *, id: str = "continue-as-new") -> None:
        self.src = _caller()
        _check_id(id, self)
        self.id, self.input = id, input


class Worktree(Node):
    """Runs its children in a git worktree of the repository holding the working directory."""

    id: str
    __slots__ = ("id", "items", "path", "branch", "base", "keep", "continue_on_fail", "budget", "src")

    def __init__(self, id: str, *children: Node, path: str | None = None, branch: str | None = None,
                 base: str | None = None, keep: bool = False, continue_on_fail: bool = False,
                 budget: Budget | None = None) -> None:
        self.src = _caller()
        _check_id(id, self)
        _check_type(budget, Budget, "budget", "Budget(tokens=..., usd=...)", self)
        self.budget = budget
        self.id, self.items = id, _flatten(children, self)
        self.path, self.branch, self.base, self.keep = path, branch, base, keep
        self.continue_on_fail = continue_on_fail  # a checkout that cannot be made fails only this part

    def children(self) -> tuple[Node, ...]:
        return self.items


def _check_id(id: Any, node: Node) -> None:
    if not isinstance(id, str) or not id or any(c in id for c in "#\n\0"):
        raise TypeError(f"{type(node).__name__} at {node.where()}: id must be a non-empty string without '#'")


@lru_cache(maxsize=256)
def _retry(retries: int | None, backoff: float | None) -> Retry:
    """The policy of `retries=`/`backoff=` (shared: a workflow body builds its tasks at every render)."""
    return Retry.exponential(0.5 if backoff is None else backoff, retries=2 if retries is None else retries)


def _check_type(value: Any, typ: type, name: str, how: str, node: Node) -> None:
    if value is not None and not isinstance(value, typ):
        raise TypeError(f"{type(node).__name__} {getattr(node, 'id', None)!r} at {node.where()}: {name} is {how}")


def _check_model(model: Any, node: Node) -> None:
    if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{type(node).__name__} {node.id!r} at {node.where()}: output is a pydantic model class")


def _scope(id: Any, budget: Any, node: Node) -> tuple[str | None, Budget | None]:
    """The optional id and budget of a structural node (a budget needs an id to report spend against)."""
    if id is not None:
        _check_id(id, node)
    _check_type(budget, Budget, "budget", "Budget(tokens=..., usd=...)", node)
    if budget is not None and id is None:
        raise TypeError(f"{type(node).__name__} at {node.where()}: a budget needs an id to report spend against, "
                        f"e.g. {type(node).__name__}(..., id=\"build\", budget=Budget(usd=2))")
    return id, budget


def _seconds(value: Any, name: str, node: Node, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise TypeError(f"{type(node).__name__} {node.id!r} at {node.where()}: {name} is a number of seconds "
                        f"(or a timedelta) > 0, not {value!r}")
    return float(value)


def _names(value: Any, node: Node) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value) or not value:
        raise TypeError(f"{type(node).__name__} {node.id!r} at {node.where()}: allowed is a list of user names")
    return list(value)


def _flatten(children: tuple[Any, ...], parent: Node) -> tuple[Node, ...]:
    """Accept nodes, lists of nodes (from comprehensions) and None (from conditionals)."""
    out: list[Node] = []
    for c in children:
        if c is None or c is False:
            continue
        if isinstance(c, (list, tuple)):
            out.extend(_flatten(tuple(c), parent))
        elif isinstance(c, Node):
            out.append(c)
        else:
            raise TypeError(f"{type(parent).__name__} at {parent.where()}: {c!r} is not a step")
    return tuple(out)


@dataclass
class WorkflowDef:
    """What @workflow makes of a function: a name, a description, an input model, a builder."""

    name: str
    builder: Callable[[Any], Node]
    input: type[BaseModel] | None = None
    description: str = ""
    source_path: Path | None = None
    budget: Budget | None = None  # the whole run's budget

    def __call__(self, ctx: Any) -> Node:
        return self.builder(ctx)

    def validate_input(self, data: Any) -> BaseModel | None:
        if self.input is None:
            return None
        return self.input.model_validate(data or {})

    def check_input(self, data: Any) -> BaseModel | None:
        """validate_input, with a bad input as InputInvalid: one line naming the field."""
        from pydantic import ValidationError

        from .errors import InputInvalid, one_line_validation

        try:
            return self.validate_input(data)
        except ValidationError as e:
            raise InputInvalid(f"invalid input for workflow {self.name!r}: {one_line_validation(e)}; "
                               "`smithers workflows --json` shows its input schema") from None

    def input_schema(self) -> dict[str, Any]:
        return self.input.model_json_schema() if self.input else {"type": "object", "properties": {}}


def workflow(fn: Callable[[Any], Node] | None = None, *, name: str | None = None,
             input: type[BaseModel] | None = None, description: str | None = None,
             budget: Budget | None = None) -> Any:
    """Mark `def build(ctx) -> node` as a workflow. Usable bare (`@workflow`) or with arguments.
    `budget` bounds what one run of it may spend (tokens and/or USD)."""
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError("@workflow budget is Budget(tokens=..., usd=...)")

    def wrap(f: Callable[[Any], Node]) -> WorkflowDef:
        doc = inspect.getdoc(f) or ""
        path = inspect.getsourcefile(f)
        return WorkflowDef(name=name or f.__name__.replace("_", "-"), builder=f, input=input,
                           description=description if description is not None else doc.split("\n")[0],
                           source_path=Path(path).resolve() if path else None, budget=budget)

    return wrap(fn) if fn is not None else wrap
