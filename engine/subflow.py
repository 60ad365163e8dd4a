"""Sub-workflows: a Subflow step runs another workflow as a child run, in this process, driven by
its parent's executor.

- The child run's id is derived from the parent's (`<parent>.<step>`), and the child records the
  parent step that started it (`parent_run_id`, kind `subflow`, `meta.parent_step`): starting the
  step again (after a crash, a retry, a resume) finds the same child and goes on with it.
- The child runs with its own frames and lease (the same owner as its parent). Its result (the
  output of its last step) is the step's output; its spend is the step's usage.
- A child that waits only for people is "parked": when its parent would stop too (a foreground
  `smithers run`), the child stops first (resumable) and the Subflow step waits; resuming the
  parent drives the child again. Resuming the child directly continues its parent instead.
- Cancelling the parent cancels the child; cancelling the child fails the step; a failed child
  fails the step (a retry of the step resumes the child, which retries its failed steps).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .attempt import StepResult
from .dsl import Subflow, WorkflowDef
from .errors import SmithersError
from .state import RunStatus

if TYPE_CHECKING:
    from .context import TaskCtx
    from .render import Ready
    from .run import RunExecutor


class SubflowError(SmithersError):
    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


async def run_subflow(ex: "RunExecutor", r: "Ready", tctx: "TaskCtx") -> Any:
    from .run import Parked, child_run_id

    node = r.node
    assert isinstance(node, Subflow)
    engine, store = ex.engine, ex.store
    cid = child_run_id(ex.run_id, r.key)
    if not await store.run_exists(cid):
        wf, target = engine.resolve_workflow(node.workflow, ex.wf)
        data = node.input(tctx) if callable(node.input) else node.input
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        try:
            child = await engine.start(wf, target, data, run_id=cid, workdir=ex.workdir, max_concurrency=ex.max_concurrency,
                                       parent=(ex.run_id, r.key, ex.frame), budget=ex.budget_left(r),
                                       agent_override=ex.agent_override)
        except SmithersError as e:
            raise SubflowError(f"sub-workflow {node.id!r}: {e}", retryable=False) from None
        ex.emit("subflow_started", r.key, {"child": cid, "workflow": wf.name})
    else:
        run = await _latest(store, cid)
        if run.status == RunStatus.FINISHED:
            return await _result(ex, r, run.id)
        if run.status in (RunStatus.CANCELLED, RunStatus.REWOUND):
            raise SubflowError(f"sub-workflow run {run.id} was {run.status}", retryable=False)
        child = engine.active.get(run.id) or await engine.resume(run.id, nested=True)
    ex.children[r.key] = child
    child.parent_ex = ex
    driving = asyncio.ensure_future(engine.execute(child, stop_when_waiting=False,
                                                   on_next=lambda nxt: _adopt(ex, r, nxt)))
    try:
        status, child = await asyncio.shield(driving)  # the child's loop is its own task: it ends its own way
    except asyncio.CancelledError:
        # the parent is cancelling (the child is cancelled too) or stopping (the child stops, resumable)
        current = ex.children.get(r.key, child)
        current.request_cancel() if ex._cancel else current.request_stop()
        await asyncio.wait([driving])
        raise
    finally:
        ex.children.pop(r.key, None)
    if status == RunStatus.FINISHED:
        return await _result(ex, r, child.run_id)
    if status == RunStatus.WAITING:
        return Parked(cid)
    run = await store.get_run(child.run_id)
    if status == RunStatus.FAILED:
        raise SubflowError(f"sub-workflow run {child.run_id} failed: {run.error}")
    raise SubflowError(f"sub-workflow run {child.run_id} was {status}", retryable=False)


def _adopt(ex: "RunExecutor", r: "Ready", child: "RunExecutor") -> None:
    """A child that continued as a new run: the parent drives (and may park) the new one."""
    ex.children[r.key] = child
    child.parent_ex = ex


async def _latest(store: Any, run_id: str) -> Any:
    """The run, or the run it continued as (ContinueAsNew), to the last of the chain."""
    run = await store.get_run(run_id)
    seen = {run.id}
    while run.successor_run_id and run.status in (RunStatus.FINISHED, RunStatus.REWOUND) \
            and run.successor_run_id not in seen:
        seen.add(run.successor_run_id)
        run = await store.get_run(run.successor_run_id)
    return run


async def _result(ex: "RunExecutor", r: "Ready", child_id: str) -> StepResult:
    """The child's result and what the whole chain of its runs spent."""
    store = ex.store
    run = await _latest(store, child_id)
    ids, cur = [child_id], await store.get_run(child_id)
    while cur.successor_run_id and cur.id != run.id:
        ids.append(cur.successor_run_id)
        cur = await store.get_run(cur.successor_run_id)
    ex.emit("subflow_finished", r.key, {"child": run.id})
    stats = await store.run_stats(ids)
    tokens = sum(s.tokens for s in stats.values())
    cost = sum(s.cost_usd for s in stats.values())
    extra: dict[str, Any] = {"child": run.id, "agent": "subflow"}
    if tokens or cost:
        extra.update({"tokens_in": tokens, "tokens_out": 0, "cost_usd": cost})
    return StepResult(run.result, **extra)


def workflow_target(wf: WorkflowDef) -> str:
    """The target recorded for a workflow object, so any process can load it again."""
    import sys

    mod = wf.builder.__module__
    if not mod.startswith("smithers_workflow_") and mod != "__main__" and mod in sys.modules:
        return f"module:{mod}:{wf.name}"
    if wf.source_path is None:
        raise SmithersError(f"workflow {wf.name!r} has no source file to load it from in another process")
    return f"file:{wf.source_path}:{wf.name}"
