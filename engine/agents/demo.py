"""Offline agents: DemoAgent (canned, schema-filling replies) and ScriptedAgent (replies from a list)."""

from __future__ import annotations

import datetime as dt
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

from pydantic import BaseModel, TypeAdapter, ValidationError

from engine.agents.base import Agent, AgentEvent, AgentResult, Emit, OutputInvalid, Usage
from engine.agents.structured import correction_message, schema_instructions, validate_answer

LABEL = "[demo agent]"


def _candidates(ann: Any, label: str, depth: int) -> list[Any]:
    """Plausible values for a type, best first."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _candidates(args[0], label, depth)
    if ann is Any or ann is None or ann is type(None):
        return [None] if ann is not Any else [f"{LABEL} {label}"]
    if origin is Literal:
        return list(args)
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for a in args:
            if a is not type(None):
                out += _candidates(a, label, depth)
        if type(None) not in args:
            return out
        return [None] + out if depth >= 1 else out + [None]  # nested optionals stay empty
    if origin in (list, set, frozenset, tuple) or ann in (list, set, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return [[_candidates(a, label, depth)[0] for a in args]]
        inner = args[0] if args else str
        return [[v] for v in _candidates(inner, label, depth)[:2]] + [[]]
    if origin is dict or ann is dict:
        val = args[1] if len(args) == 2 else str
        return [{"example": v} for v in _candidates(val, label, depth)[:1]] + [{}]
    if isinstance(ann, type):
        if issubclass(ann, BaseModel):
            if depth >= 4:
                return []
            try:
                return [build_instance(ann, depth + 1).model_dump()]
            except OutputInvalid:
                return []
        if issubclass(ann, enum.Enum):
            return [m.value for m in ann]
        if issubclass(ann, bool):
            return [True, False]
        if issubclass(ann, int):
            return [1, 0, 100]
        if issubclass(ann, float):
            return [1.0, 0.0, 0.5]
        if issubclass(ann, str):
            return [f"{LABEL} {label}", "demo", "x"]
        if issubclass(ann, (dt.datetime, dt.date)):
            return [dt.datetime(2024, 1, 1).isoformat()]
        if issubclass(ann, Path):
            return ["README.md"]
    return [f"{LABEL} {label}", 1, True, None]


def build_instance(model: type[BaseModel], depth: int = 0) -> BaseModel:
    """A valid instance of `model`, every field filled with a plausible labelled value."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        ann = field.rebuild_annotation() if hasattr(field, "rebuild_annotation") else field.annotation
        adapter: TypeAdapter[Any] = TypeAdapter(ann)  # type: ignore[arg-type]  # an annotation read at run time
        chosen, found = None, False
        for cand in _candidates(field.annotation, name.replace("_", " "), depth):
            try:
                chosen, found = adapter.validate_python(cand), True
                break
            except (ValidationError, TypeError, ValueError):
                continue
        if found:
            values[name] = chosen
    try:
        return model.model_validate(values)
    except ValidationError as e:
        raise OutputInvalid(f"demo agent cannot build a valid {model.__name__}: {e.errors()[0]['msg']}",
                            errors=str(e)) from e


def _stream(emit: Emit, agent: str, text: str) -> None:
    for i in range(0, len(text), 24):
        emit(AgentEvent(kind="token", text=text[i : i + 24], agent=agent))
    emit(AgentEvent(kind="message", text=text, agent=agent))


class DemoAgent(Agent):
    """Always available, never touches the network: canned replies and schema-valid outputs."""

    name = "demo"

    def __init__(self, name: str = "demo") -> None:
        self.name = name

    async def run(self, prompt: str, *, output: type[BaseModel] | None, workdir: Path, emit: Emit,
                  tools: Any = None) -> AgentResult:
        first = " ".join(prompt.split())[:80]
        if output is None:
            text = f"{LABEL} This is a canned reply; no model was called. Task: {first}"
            _stream(emit, self.name, text)
            return AgentResult(output=text, text=text, usage=Usage(model="demo", agent=self.name),
                               structured_mode="none", attempts=1)
        instance = build_instance(output)
        text = instance.model_dump_json(indent=1)
        emit(AgentEvent(kind="message", text=f"{LABEL} building a sample {output.__name__} for: {first}",
                        agent=self.name))
        _stream(emit, self.name, text)
        return AgentResult(output=instance, text=text, usage=Usage(model="demo", agent=self.name),
                           structured_mode="prompt_schema", attempts=1)


Reply = Union[str, dict[str, Any], BaseModel, Exception, Callable[[str], Any]]


class ScriptedAgent(Agent):
    """Answers from a list of replies, in order (str, dict/model -> JSON, an exception to raise,
    or a callable(prompt) -> any of those). Validates like a real agent, consuming one reply per
    corrective retry. `prompts` records what it was asked."""

    def __init__(self, replies: list[Reply], name: str = "scripted", max_validation_retries: int = 3) -> None:
        self.replies = list(replies)
        self.name = name
        self.max_validation_retries = max_validation_retries
        self.prompts: list[str] = []

    def _next(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.replies:
            raise OutputInvalid(f"{self.name}: no scripted reply left", errors="no reply")
        r = self.replies.pop(0)
        if callable(r) and not isinstance(r, type):
            r = r(prompt)
        if isinstance(r, Exception):
            raise r
        if isinstance(r, BaseModel):
            return r.model_dump_json()
        return r if isinstance(r, str) else json.dumps(r)

    async def run(self, prompt: str, *, output: type[BaseModel] | None, workdir: Path, emit: Emit,
                  tools: Any = None) -> AgentResult:
        ask = prompt + (schema_instructions(output) if output is not None else "")
        for attempt in range(1, self.max_validation_retries + 2):
            text = self._next(ask)
            _stream(emit, self.name, text)
            if output is None:
                return AgentResult(output=text, text=text, usage=Usage(model="scripted", agent=self.name),
                                   structured_mode="none", attempts=attempt)
            value, errors = validate_answer(output, text)
            if value is not None:
                return AgentResult(output=value, text=text, usage=Usage(model="scripted", agent=self.name),
                                   structured_mode="prompt_schema", attempts=attempt)
            if attempt > self.max_validation_retries:
                raise OutputInvalid(f"{self.name}: output still invalid after {attempt} attempts",
                                    errors=errors, text=text)
            emit(AgentEvent(kind="retry", agent=self.name, text=f"output invalid: {errors}",
                            data={"reason": "validation", "attempt": attempt, "errors": errors}))
            ask = correction_message(errors)
        raise AssertionError("unreachable")
