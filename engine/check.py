"""Checking a workflow's source before anyone saves or runs it: it must import, hold exactly one
@workflow, accept the sample input, and render — its body is called over an empty run until the
first steps are ready, twice, and must give the same step ids both times. Nothing runs (no task
is called, no agent asked) and nothing is written.

Every failure is one line naming the file and, where there is one, the line (`path:LINE`).
"""
from __future__ import annotations

import sys
import types
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .attempt import user_frame
from .context import Ctx
from .dsl import Node, WorkflowDef
from .errors import RenderError, WorkflowInvalid, one_line_validation
from .frame import Delta
from .render import S_FAILED, index_tree, render
from .state import RunState, key_label

MAX_RENDERS = 1000


class CheckedWorkflow(BaseModel):
    """What a check found: the workflow, its input schema, the steps its first render shows, and
    the steps that would start first."""

    workflow: str
    description: str
    input_schema: dict[str, Any]
    steps: list[str]
    first_steps: list[str]


def check_source(source: str, filename: str | Path, sample_input: Any = None,
                 workdir: Path | None = None) -> tuple[WorkflowDef, CheckedWorkflow]:
    """Import `source` as if it were the file `filename` (which need not exist), find its one
    @workflow and render it with `sample_input`. WorkflowInvalid (one line) when any of it fails."""
    filename = str(filename)
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise WorkflowInvalid(f"{filename}:{e.lineno}: SyntaxError: {e.msg}: fix that line") from None
    except ValueError as e:  # source with NUL bytes
        raise WorkflowInvalid(f"{filename}: not Python source ({e})") from None
    name = "smithers_check_" + uuid.uuid4().hex[:12]
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module  # pydantic resolves the module's own models through it while importing
    try:
        try:
            exec(code, module.__dict__)
        except Exception as e:
            raise WorkflowInvalid(f"{_where(e, filename)}: importing it raised {_exc(e)}") from None
        wf = _one_workflow(module, filename)
        return wf, check_workflow(wf, sample_input, workdir or Path.cwd(), filename)
    finally:
        sys.modules.pop(name, None)


def _one_workflow(module: types.ModuleType, filename: str) -> WorkflowDef:
    found = [v for v in vars(module).values()
             if isinstance(v, WorkflowDef) and getattr(v.builder, "__module__", None) == module.__name__]
    if not found:
        raise WorkflowInvalid(f"{filename}: no @workflow in it: decorate one function `def build(ctx)` with "
                              "@workflow (from engine import workflow)")
    if len(found) > 1:
        lines = ", ".join(f"{w.name} (line {w.builder.__code__.co_firstlineno})" for w in found)
        raise WorkflowInvalid(f"{filename}: {len(found)} workflows in one file ({lines}): keep one per file")
    return found[0]


def check_workflow(wf: WorkflowDef, sample_input: Any = None, workdir: Path | None = None,
                   filename: str | None = None) -> CheckedWorkflow:
    """Render a loaded workflow with a sample input, as check_source does after importing it."""
    filename = filename or str(wf.source_path or wf.name)
    workdir = workdir or Path.cwd()
    line = wf.builder.__code__.co_firstlineno
    try:
        inp = wf.validate_input(sample_input)
    except ValidationError as e:
        raise WorkflowInvalid(f"{filename}:{line}: the sample input does not fit the input model of workflow "
                              f"{wf.name!r}: {one_line_validation(e)}") from None
    state = RunState()
    ctx = Ctx("check", inp if inp is not None else (sample_input or {}), state, {}, workdir)
    delta = Delta()
    for _ in range(MAX_RENDERS):
        tree = _build(wf, ctx, filename)
        try:
            plan = render(tree, state, delta, ctx, {}, workdir)
        except RenderError as e:
            raise WorkflowInvalid(f"{filename}: {e}") from None
        except Exception as e:  # an `until=` callable or a prompt that raises
            raise WorkflowInvalid(f"{_where(e, filename)}: rendering raised {_exc(e)}") from None
        if not plan.dirty:
            break
    else:
        raise WorkflowInvalid(f"{filename}:{line}: workflow {wf.name!r} never settles: each render adds new steps "
                              "with outputs; derive step ids from data, never from clocks or randomness")
    if plan.status == S_FAILED and plan.failed is not None:
        rec = state.nodes.get(plan.failed)
        raise WorkflowInvalid(f"{filename}: step {key_label(*plan.failed)!r} fails before anything runs: "
                              f"{rec.error if rec else 'failed'}")
    first, again = _ids(tree), _ids(_build(wf, ctx, filename))
    if first != again:
        only = sorted(set(first) ^ set(again))
        raise WorkflowInvalid(f"{filename}:{line}: two renders of the same state gave different step ids "
                              f"({', '.join(only) or 'in another order'}): derive ids from data, and keep clocks, "
                              "randomness and I/O out of the workflow body")
    return CheckedWorkflow(workflow=wf.name, description=wf.description, input_schema=wf.input_schema(),
                           steps=first, first_steps=list(dict.fromkeys(
                               [key_label(*r.key) for r in plan.ready] + [key_label(*k) for k, _ in plan.waits])))


def _build(wf: WorkflowDef, ctx: Ctx, filename: str) -> Node:
    try:
        tree = wf.builder(ctx)
    except Exception as e:
        raise WorkflowInvalid(f"{_where(e, filename)}: the workflow body raised {_exc(e)}") from None
    if not isinstance(tree, Node):
        raise WorkflowInvalid(f"{filename}:{wf.builder.__code__.co_firstlineno}: workflow {wf.name!r} returned "
                              f"{type(tree).__name__}, not a step: return a Task, Sequence, Parallel, Branch, Loop, "
                              "Approval or Worktree")
    try:
        ctx._models = index_tree(tree)
    except RenderError as e:
        raise WorkflowInvalid(f"{filename}: {e}") from None
    return tree


def _ids(root: Node) -> list[str]:
    """Step ids in the order the tree shows them (depth first)."""
    out: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.id is not None:
            out.append(node.id)
        stack.extend(reversed(node.children()))
    return out


def _where(e: BaseException, filename: str) -> str:
    fs = user_frame(e, filename)
    if fs is not None and fs.filename == filename:
        return f"{filename}:{fs.lineno}"
    if isinstance(e, SyntaxError) and e.lineno:
        return f"{filename}:{e.lineno}"
    return filename


def _exc(e: BaseException) -> str:
    if isinstance(e, ValidationError):
        return f"ValidationError: {one_line_validation(e)}"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
