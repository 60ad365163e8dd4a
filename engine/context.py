"""Ctx: what a workflow body and a task can read."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from .errors import OutputMissing
from .state import Key, RunState


def type_name(model: type | None) -> str | None:
    """A resolvable name for an output model, stored beside the output."""
    if model is None or "<locals>" in model.__qualname__:
        return None
    return f"{model.__module__}:{model.__qualname__}"


def resolve_type(name: str | None) -> type[BaseModel] | None:
    if not name:
        return None
    mod_name, _, qual = name.partition(":")
    mod = sys.modules.get(mod_name)
    if mod is None:
        try:
            mod = importlib.import_module(mod_name)
        except Exception:
            return None
    obj: Any = mod
    for part in qual.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseModel) else None


class Ctx:
    """Read-only view of a run for the workflow body: input and outputs so far."""

    def __init__(self, run_id: str, input: Any, state: RunState, models: dict[str, type[BaseModel] | None],
                 workdir: Path) -> None:
        self.run_id = run_id
        self._input = input
        self._state = state
        self._models = models  # node id -> output model, learned from the rendered tree
        self._cache: dict[Key, Any] = {}
        self._workdir = workdir

    def _value(self, key: Key) -> Any:
        try:
            return self._cache[key]
        except KeyError:
            pass
        raw = self._state.outputs[key]
        model = self._models.get(key[0]) or resolve_type(self._state.output_types.get(key))
        value = model.model_validate(raw) if model is not None and raw is not None else raw
        self._cache[key] = value
        return value

    @property
    def input(self) -> Any:
        """The run's input, validated against the workflow's input model."""
        return self._input

    def forget(self, key: Key) -> None:
        self._cache.pop(key, None)

    def get(self, id: str, iteration: int | None = None) -> Any:
        """The output of node `id` (at `iteration`, else the latest), or None if there is none."""
        if iteration is None:
            its = self._state.by_id.get(id)
            if not its:
                return None
            iteration = its[-1]
        key = (id, iteration)
        return self._value(key) if key in self._state.outputs else None

    def output(self, id: str, iteration: int | None = None) -> Any:
        """Like get(), but raises a clear error when the output does not exist."""
        if iteration is None:
            if not self._state.by_id.get(id):
                raise OutputMissing(f"no output for node {id!r} yet: use ctx.get({id!r}) where it may be missing")
        elif (id, iteration) not in self._state.outputs:
            raise OutputMissing(f"no output for node {id!r} at iteration {iteration}: "
                                f"it has {self.iterations(id) or 'none'}; use ctx.get() where it may be missing")
        return self.get(id, iteration)

    def latest(self, id: str) -> Any:
        """The output of the highest iteration of `id`, or None."""
        return self.get(id)

    def iterations(self, id: str) -> list[int]:
        """The iterations of `id` that have an output, ascending."""
        return list(self._state.by_id.get(id, ()))

    def status(self, id: str, iteration: int | None = None) -> str | None:
        """A node's state (pending, running, waiting_approval, done, failed, skipped, cancelled) at
        `iteration` (else its latest), or None if it never started. Tells a step that failed under
        continue_on_fail from one that has not run."""
        rec = self._record(id, iteration)
        return rec.state if rec is not None else None

    def error(self, id: str, iteration: int | None = None) -> str | None:
        """The one-line error of a node's last failed attempt, or None."""
        rec = self._record(id, iteration)
        return rec.error if rec is not None else None

    def _record(self, id: str, iteration: int | None) -> Any:
        if iteration is not None:
            return self._state.nodes.get((id, iteration))
        found = [k for k in self._state.nodes if k[0] == id]
        return self._state.nodes[max(found, key=lambda k: k[1])] if found else None

    @property
    def workdir(self) -> Path:
        return self._workdir


class TaskCtx(Ctx):
    """What a task's `run` callable receives: the run's view plus its own iteration and workdir."""

    def __init__(self, parent: Ctx, node_id: str, iteration: int, attempt: int, workdir: Path,
                 emit: Callable[[str, dict[str, Any]], None]) -> None:
        super().__init__(parent.run_id, parent._input, parent._state, parent._models, workdir)
        self._cache = parent._cache
        self.node_id, self.iteration, self.attempt = node_id, iteration, attempt
        self._emit = emit
        self.read_input = False  # what the step read, so a fork knows what a change affects
        self.reads: set[str] = set()

    @property
    def input(self) -> Any:
        self.read_input = True
        return self._input

    def get(self, id: str, iteration: int | None = None) -> Any:
        if iteration is None:
            its = self._state.by_id.get(id)
            self.reads.add(f"{id}#*")  # "the latest": changes when a loop that makes `id` moves
            if its:
                self.reads.add(f"{id}#{its[-1]}")
        elif (id, iteration) in self._state.outputs:
            self.reads.add(f"{id}#{iteration}")
        return super().get(id, iteration)

    def deps(self, fp: str) -> dict[str, Any]:
        return {"fp": fp, "input": self.read_input, "reads": sorted(self.reads)}

    def log(self, message: str, **data: Any) -> None:
        """Record a line in the run's event log (shown by `smithers logs` and the app)."""
        self._emit("log", {"message": str(message), **data})
