"""The node types users write: Task, Sequence, Parallel, Branch, Loop, Approval, Worktree.

A workflow is a function of `ctx` that returns a tree of these nodes. The tree is rebuilt
after every transition, so nodes are cheap value objects; their ids must be stable across
renders (derive them from data, never from positions).
"""
from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel


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
                 "on_deny", "tools", "src", "has_value")

    def __init__(self, id: str, *, run: Callable[..., Any] | None = None, agent: Any = None,
                 prompt: str | Callable[..., str] | None = None, value: Any = ...,
                 output: type[BaseModel] | None = None, retries: int = 2, backoff: float = 0.5,
                 timeout: float | None = None, skip_if: bool = False, continue_on_fail: bool = False,
                 needs_approval: bool = False, approval_message: str | None = None,
                 on_deny: Literal["fail", "skip", "continue"] = "fail", tools: Any = None) -> None:
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
        if retries < 0:
            raise TypeError(f"Task {id!r} at {self.where()}: retries must be >= 0")
        self.id, self.run, self.agent, self.prompt = id, run, agent, prompt
        self.value = None if not self.has_value else value
        self.output, self.retries, self.backoff, self.timeout = output, retries, backoff, timeout
        self.skip_if, self.continue_on_fail = bool(skip_if), continue_on_fail
        self.needs_approval, self.approval_message, self.on_deny = needs_approval, approval_message, on_deny
        if tools is not None and tools != "read_only" and not isinstance(tools, (list, tuple)):
            raise TypeError(f"Task {id!r} at {self.where()}: tools is a list of engine.tools.Tool or 'read_only'")
        self.tools = tools  # for agent steps: None = the agent's own set

    @property
    def kind(self) -> str:
        return "agent" if self.agent is not None else "static" if self.has_value else "compute"


class Sequence(Node):
    __slots__ = ("items", "src")

    def __init__(self, *children: Node) -> None:
        self.src = _caller()
        self.items = _flatten(children, self)

    def children(self) -> tuple[Node, ...]:
        return self.items


class Parallel(Node):
    __slots__ = ("items", "max_concurrency", "src")

    def __init__(self, *children: Node, max_concurrency: int | None = None) -> None:
        self.src = _caller()
        if max_concurrency is not None and max_concurrency < 1:
            raise TypeError(f"Parallel at {self.where()}: max_concurrency must be >= 1")
        self.items = _flatten(children, self)
        self.max_concurrency = max_concurrency

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
    __slots__ = ("id", "items", "until", "max_iterations", "on_max", "src")

    def __init__(self, id: str, *children: Node, until: Any = False, max_iterations: int = 5,
                 on_max: Literal["return_last", "fail"] = "return_last") -> None:
        self.src = _caller()
        _check_id(id, self)
        if max_iterations < 1:
            raise TypeError(f"Loop {id!r} at {self.where()}: max_iterations must be >= 1")
        if on_max not in ("return_last", "fail"):
            raise TypeError(f"Loop {id!r} at {self.where()}: on_max is 'return_last' or 'fail'")
        self.id, self.items, self.until = id, _flatten(children, self), until
        self.max_iterations, self.on_max = max_iterations, on_max

    def children(self) -> tuple[Node, ...]:
        return self.items


class Approval(Node):
    """A gate: the run waits (as a database row) until someone approves or denies it."""

    id: str
    __slots__ = ("id", "message", "on_deny", "src")

    def __init__(self, id: str, *, message: str, on_deny: Literal["fail", "skip", "continue"] = "fail") -> None:
        self.src = _caller()
        _check_id(id, self)
        if on_deny not in ("fail", "skip", "continue"):
            raise TypeError(f"Approval {id!r} at {self.where()}: on_deny is 'fail', 'skip' or 'continue'")
        self.id, self.message, self.on_deny = id, message, on_deny


class Worktree(Node):
    """Runs its children in a git worktree of the repository holding the working directory."""

    id: str
    __slots__ = ("id", "items", "path", "branch", "base", "keep", "continue_on_fail", "src")

    def __init__(self, id: str, *children: Node, path: str | None = None, branch: str | None = None,
                 base: str | None = None, keep: bool = False, continue_on_fail: bool = False) -> None:
        self.src = _caller()
        _check_id(id, self)
        self.id, self.items = id, _flatten(children, self)
        self.path, self.branch, self.base, self.keep = path, branch, base, keep
        self.continue_on_fail = continue_on_fail  # a checkout that cannot be made fails only this part

    def children(self) -> tuple[Node, ...]:
        return self.items


def _check_id(id: Any, node: Node) -> None:
    if not isinstance(id, str) or not id or any(c in id for c in "#\n\0"):
        raise TypeError(f"{type(node).__name__} at {node.where()}: id must be a non-empty string without '#'")


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
             input: type[BaseModel] | None = None, description: str | None = None) -> Any:
    """Mark `def build(ctx) -> node` as a workflow. Usable bare (`@workflow`) or with arguments."""

    def wrap(f: Callable[[Any], Node]) -> WorkflowDef:
        doc = inspect.getdoc(f) or ""
        path = inspect.getsourcefile(f)
        return WorkflowDef(name=name or f.__name__.replace("_", "-"), builder=f, input=input,
                           description=description if description is not None else doc.split("\n")[0],
                           source_path=Path(path).resolve() if path else None)

    return wrap(fn) if fn is not None else wrap
