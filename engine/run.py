"""Run: executes one run in this process — the render -> plan -> execute -> persist loop.

Each pass gathers every transition since the last commit (finished steps, retries, skips, loop
advances, gates, the steps about to start) into one Delta and commits it as one frame before
any new step runs, so a step whose side effects happen twice was, by construction, in flight
when the process died.
"""
from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .attempt import StepResult, error_line, user_frame
from .budget import RUN_SCOPE, Budget
from .context import Ctx, TaskCtx, type_name
from .dsl import ContinueAsNew, Node, Subflow, Task, WorkflowDef, Worktree
from .errors import RenderError, SmithersError, TaskTimeout
from .events import Event
from .frame import Delta, keyframe
from .lease import HEARTBEAT_S
from .errors import one_line_validation
from .records import ApprovalRecord, NewRun, RunRecord
from .render import S_DONE, S_FAILED, S_WAITING, Plan, Ready, coerce_output, fingerprint, index_tree, render
from .state import (CANCELLED, DONE, FAILED, FINAL_NODE_STATES, PENDING, RUN_CANCELLED, RUN_FAILED, RUN_FINISHED,
                    RUN_RUNNING, RUN_WAITING, RUNNING, SKIPPED, WAITING, WAITING_APPROVAL, Key, NodeRecord,
                    RunKind, RunState, RunStatus, key_str)
from .store import dumps
from .secrets import redact_data

if TYPE_CHECKING:
    from .runtime import Engine


class RunExecutor:
    """Executes one run in this process. Holds its live state; the store mirrors it."""

    def __init__(self, engine: "Engine", run: RunRecord, wf: WorkflowDef | None, state: RunState) -> None:
        self.engine, self.store, self.bus = engine, engine.store, engine.bus
        self.run_id: str = run.id
        self.run = run
        self.wf = wf  # None only for an executor that cancels a run nobody runs (it renders nothing)
        self.state = state
        self.workdir = Path(run.workdir)
        self.max_concurrency: int = run.max_concurrency or engine.max_concurrency
        self.agent_override: str | None = run.agent_override  # e.g. a run started with --agent demo
        inp = wf.validate_input(run.input) if wf is not None and wf.input else run.input
        self.ctx = Ctx(self.run_id, inp, state, {}, self.workdir)
        self.frame: int = run.frame
        self.lease: int = run.lease  # the fencing token every write of this lease carries
        self.delta = Delta()
        self.running: dict[asyncio.Task[Any], Ready] = {}
        self.running_keys: set[Key] = set()
        self.backoff: dict[Key, float] = {}
        self.attempt_rows: dict[Key, dict[str, Any]] = {}
        self.step_ctx: dict[Key, TaskCtx] = {}
        self.snapshots: dict[Key, str] = {}
        self.failing: Key | None = None
        self.status: RunStatus = RUN_RUNNING
        self.error: str | None = None
        self.restore: set[Key] = set()  # interrupted steps: their worktree's files go back before they re-run
        self.tree: Node | None = None  # the last tree rendered
        self.signals_stale = True  # read pending signals again before matching them to waits
        self.taken: set[int] = set()  # signals taken by this executor (committed or about to be)
        self.signal_seen: set[Key] = set()  # signal waits already matched against the pending signals
        self.wake_at: float | None = run.wake_at
        self.rng = random.Random()
        self.parent_ex: RunExecutor | None = None  # the run whose Subflow step drives this one
        self.children: dict[Key, RunExecutor] = {}  # the runs this one's Subflow steps drive now
        self.parked_now = False  # a child run: it waits only for people (its parent may stop then)
        self.continued_as: str | None = None  # the run a ContinueAsNew handed over to
        self.result: Any = None
        self.cache_keys: dict[Key, str] = {}  # cached steps that missed: their key, to store the output
        self.usage: dict[Key, list[float]] = {}  # tokens and USD per step, for budgets
        self.spent = [0, 0.0]  # the run's total
        self.budget_meta: dict[str, Any] | None = run.meta.get("budgets")
        self.run_budget: Budget | None = Budget.of(run.meta.get("budget"))
        self._budgets: dict[str, Budget] = {}  # the last plan's budget scopes and their members
        self._members: dict[str, set[str]] = {}
        if wf is not None and wf.budget is not None:
            self.run_budget = wf.budget.tighter(self.run_budget)
        self._cancel: bool = False
        self._stop: bool = False
        self._drain: bool = False
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        self._since_keyframe = 0
        self._last_commit = time.monotonic()
        self._loop_ref = asyncio.get_running_loop()
        self.finished = self._loop_ref.create_future()

    # --- recovery ------------------------------------------------------------------------------
    def recover(self, was_failed: bool) -> None:
        """After a crash: steps that were running run again; a failed run retries its failed steps."""
        for key, rec in list(self.state.nodes.items()):
            if rec.state == RUNNING and rec.kind in ("task", "worktree", "subflow") and not (
                    rec.kind == "worktree" and rec.data and rec.data.get("path")):
                self._set(key, NodeRecord(rec.kind, PENDING, rec.attempts, "interrupted", rec.data))
                self.delta.event("node_interrupted", key, attempt=rec.attempts)
                self.delta.interrupted.append(key)  # its attempt row, started when the node was marked running
                self.restore.add(key)
            elif rec.state == WAITING and rec.kind == "subflow":  # parked: drive its child again
                self._set(key, NodeRecord(rec.kind, PENDING, rec.attempts, None, rec.data))
            elif was_failed and rec.state == FAILED and (rec.kind == "saga" or (rec.data and rec.data.get("caught"))):
                continue  # handled by a TryCatchFinally or a Saga: not retried (a compensated saga stays failed)
            elif was_failed and rec.state == FAILED:
                data = rec.data
                if rec.kind == "loop" and data:  # a loop that hit max_iterations (on_max="fail") gets one more round
                    data = {**data, "start": data["iteration"] + 1, "iteration": data["iteration"] + 1}
                    self.state.note_loop(key[0], NodeRecord("loop", RUNNING, 0, None, data))
                self._set(key, NodeRecord(rec.kind, PENDING if rec.kind != "loop" else RUNNING, 0, None, data))
                self.delta.event("node_retrying", key, reason="resume of a failed run")
        self.delta.event("run_resumed", None, owner=self.engine.owner.id, pid=self.engine.owner.pid)
        self.delta.run["status"] = RUN_RUNNING

    # --- the loop ------------------------------------------------------------------------------
    async def execute(self, *, stop_when_waiting: bool = True) -> str:
        """Run until finished, failed, cancelled, or (if stop_when_waiting) waiting for a human."""
        self.engine.active[self.run_id] = self
        self.engine._ensure_watcher()
        beat = asyncio.create_task(self._heartbeat())
        try:
            status = await self._loop(stop_when_waiting)
        except BaseException as e:
            await self._abort(e)
            raise
        finally:
            beat.cancel()
            self.engine.active.pop(self.run_id, None)
        if not self.finished.done():
            self.finished.set_result(status)
        return status

    async def _loop(self, stop_when_waiting: bool) -> str:
        from .waits import next_due, person_waits_only, settle

        announced_wait = self.status == RUN_WAITING
        while True:
            if self._cancel:
                return await self._finish_cancel()
            if self._stop:
                return await self._detach()
            self._expire_backoff()
            try:
                plan = self._render()
                while plan.waits and await settle(self, plan):  # a wait moved on: render again (it may start others)
                    plan = self._render()
            except RenderError as e:
                self.error = str(e)
                self.failing = self.failing or ("<render>", 0)
                plan = None
            status = S_FAILED if plan is None else plan.status
            starts: list[Ready] = []
            final: RunStatus | None = None
            parked = self._parked_children() if self.children else []
            busy = len(self.running) - len(parked)  # steps that are really moving
            if status == S_FAILED or self.failing or plan is None:
                if plan is not None and plan.failed and not self.failing:
                    self.failing = plan.failed
                if not self.running:
                    final = RUN_FAILED
                elif busy == 0 and parked:  # only parked sub-workflows left: they end with the run
                    await self._stop_children(parked, cancel=True)
                    continue
            else:
                assert plan is not None
                if plan.budgets or self.run_budget is not None or self.budget_meta is not None:
                    self._note_budgets(plan)
                room = self.max_concurrency - busy
                if room > 0 and not self._drain:
                    starts = [r for r in plan.ready if r.key not in self.running_keys][:room]
                    if (self._budgets or self.run_budget is not None) and [r for r in starts if self._over_budget(r)]:
                        continue  # a step failed on its budget: render again before starting anything
                if status == S_DONE and not self.running:
                    final = RUN_FINISHED
                elif plan.continue_as is not None and not self.running and not starts:
                    if self._continue_as_new(*plan.continue_as):
                        final = RUN_FINISHED
                    else:
                        continue
                elif status == S_WAITING and busy == 0 and not starts and not self.backoff:
                    people = person_waits_only(plan, self)
                    if self.parent_ex is not None and people != self.parked_now:
                        self.parked_now = people
                        self.parent_ex.wakeup()
                    if stop_when_waiting and people:
                        if parked:  # the sub-workflows stop first (resumable), then this run waits
                            await self._stop_children(parked, cancel=False)
                            continue
                        final = RUN_WAITING
                    elif not announced_wait:
                        self._set_status(RUN_WAITING)
                        announced_wait = True
                if plan.waits or self.wake_at is not None:
                    due = next_due(plan, self) if final != RUN_FINISHED else None
                    if due != self.wake_at:
                        self.wake_at = due
                        self.delta.run["wake_at"] = due
            if starts and announced_wait:
                self._set_status(RUN_RUNNING)
                announced_wait = False
            if starts and self.parked_now and self.parent_ex is not None:
                self.parked_now = False
                self.parent_ex.wakeup()
            for r in starts:
                self._mark_started(r)
            if final == RUN_FINISHED:
                await self._remove_worktrees()
            if final:
                self._finalize(final)
            await self.commit()
            if final:
                return final
            if self._drain and busy == 0:  # nothing in flight but parked sub-workflows: they stop too
                return await self._detach()
            for r in starts:
                t = asyncio.create_task(self._step(r))
                t.add_done_callback(self.wakeup)
                self.running[t] = r
                self.running_keys.add(r.key)
            await self._wait()
            self._collect()

    async def _remove_worktrees(self, state: str | None = None) -> None:
        """The run's worktrees go when it ends (branches and snapshots stay) unless keep=True. Their
        removal is committed as wanted first, then done, so a kill in between leaves a run whose next
        resume removes them again (idempotently) instead of re-running a step in a missing folder."""
        from .worktree import mark_removing, remove_worktrees

        if mark_removing(self, state):
            await self.commit()
            await remove_worktrees(self)

    def _render(self) -> Plan:
        assert self.wf is not None
        parked = frozenset(r.key for r in self._parked_children()) if self.children else NONE_PARKED
        for _ in range(100000):
            tree = self._build()
            plan = render(tree, self.state, self.delta, self.ctx, self.backoff, self.workdir, parked)
            if not plan.dirty:
                self.tree = tree
                return plan
        raise RenderError(f"workflow {self.wf.name!r} never settles: it keeps adding outputs while rendering")

    def _build(self) -> Node:
        assert self.wf is not None
        try:
            tree = self.wf.builder(self.ctx)
        except RenderError:
            raise
        except Exception as e:
            fs = user_frame(e, str(self.wf.source_path) if self.wf.source_path else None)
            where = f" at {fs.filename}:{fs.lineno}" if fs else ""
            raise RenderError(f"workflow {self.wf.name!r} raised{where}: {type(e).__name__}: {e}") from None
        if not isinstance(tree, Node):
            raise RenderError(f"workflow {self.wf.name!r} returned {type(tree).__name__}, not a step: "
                              "return a Task, Sequence, Parallel, Branch, Loop, Approval, Worktree or another step")
        self.ctx._models = index_tree(tree)
        return tree

    async def _wait(self) -> None:
        """Sleep until a step finishes, a retry's backoff ends, a timer or timeout comes due, or
        someone calls wakeup()."""
        if not self._woken:
            timeout = max(0.0, min(self.backoff.values()) - time.monotonic()) if self.backoff else None
            if self.wake_at is not None:
                due = max(0.0, self.wake_at - time.time()) + 0.001
                timeout = due if timeout is None else min(timeout, due)
            fut = self._waiter = self._loop_ref.create_future()
            timer = self._loop_ref.call_later(timeout, self.wakeup) if timeout is not None else None
            try:
                await fut
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        self._woken = False

    def wakeup(self, *_: Any) -> None:
        self._woken = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _expire_backoff(self) -> None:
        if self.backoff:
            now = time.monotonic()
            for k in [k for k, t in self.backoff.items() if t <= now]:
                del self.backoff[k]

    # --- transitions ---------------------------------------------------------------------------
    def _set(self, key: Key, rec: NodeRecord) -> None:
        self.state.nodes[key] = rec
        self.delta.nodes[key] = rec

    def _set_status(self, status: RunStatus) -> None:
        self.status = status
        self.delta.run["status"] = status
        self.delta.event("run_waiting" if status == RUN_WAITING else "run_resumed", None)

    def _mark_started(self, r: Ready) -> None:
        rec = self.state.nodes.get(r.key)
        attempts = (rec.attempts if rec else 0) + 1
        kind = "worktree" if isinstance(r.node, Worktree) else "subflow" if isinstance(r.node, Subflow) else "task"
        data = rec.data if rec else None
        if kind == "subflow" and not (data and data.get("child")):
            data = {**(data or {}), "child": child_run_id(self.run_id, r.key)}
        self._set(r.key, NodeRecord(kind, RUNNING, attempts, None, data))
        row = {"run_id": self.run_id, "node_id": r.key[0], "iteration": r.key[1], "attempt": attempts,
               "started_at": time.time()}
        self.attempt_rows[r.key] = row  # written when the attempt ends (recover() records interrupted ones)
        self.delta.event("node_started", r.key, attempt=attempts,
                         kind=r.node.kind if isinstance(r.node, (Task, Subflow)) else "worktree")

    async def _step(self, r: Ready) -> Any:
        node = r.node
        attempt = self.state.nodes[r.key].attempts
        tctx = TaskCtx(self.ctx, r.key[0], r.key[1], attempt, r.workdir, lambda typ, data: self.emit(typ, r.key, data))
        kind = node.kind if isinstance(node, (Task, Subflow)) else "worktree"
        if isinstance(node, Task) and node.cache is not None:
            from .attempt import cached

            hit = await cached(self, r, tctx)
            if hit is not None:
                return hit
        runner = self.engine.step_runners.get(kind)
        if runner is None:
            raise SmithersError(f"no runner for {kind} steps in this engine")
        self.step_ctx[r.key] = tctx
        timeout = node.timeout if isinstance(node, Task) else None
        if r.key in self.restore:  # it was cut short: end what it left running, then put its files back
            self.restore.discard(r.key)
            from . import procs

            await asyncio.to_thread(procs.end_leftovers, procs.StepScope(self.run_id, r.key[0], r.key[1], self.workdir))
            if r.worktree is not None:
                from .worktree import restore_files

                await restore_files(self, r.worktree)
        try:
            if timeout:
                try:
                    return await asyncio.wait_for(runner(self, r, tctx), timeout)
                except asyncio.TimeoutError:
                    raise TaskTimeout(f"timed out after {timeout:g}s") from None
            return await runner(self, r, tctx)
        finally:
            if r.worktree is not None:
                from .worktree import snapshot

                sha = await asyncio.shield(snapshot(self, r.key, r.worktree))
                if sha:
                    self.snapshots[r.key] = sha

    def emit(self, typ: str, key: Key | None, data: dict[str, Any]) -> None:
        """A live event from a running step (logs, agent output): stored with the next commit.
        Safe to call from a step's worker thread."""
        data = redact_data(data)  # agents' redaction hook (engine/secrets.py): keep in merges
        try:
            running = asyncio.get_running_loop() is self._loop_ref
        except RuntimeError:
            running = False
        if running:
            self.delta.event(typ, key, **data)
        else:
            self._loop_ref.call_soon_threadsafe(lambda: self.delta.event(typ, key, **data))

    def _collect(self) -> None:
        for t in [t for t in self.running if t.done()]:
            r = self.running.pop(t)
            self.running_keys.discard(r.key)
            self._note_snapshot(r)
            if t.cancelled():
                self._finish_attempt(r, CANCELLED, "cancelled")
                continue
            exc = t.exception()
            if exc is None:
                result = t.result()
                if isinstance(result, Parked):
                    self._park(r, result)
                else:
                    self._succeed(r, result)
            else:
                self._fail_attempt(r, exc)

    def _note_snapshot(self, r: Ready) -> None:
        sha = self.snapshots.pop(r.key, None)
        if sha is None or r.worktree is None:
            return
        row = self.attempt_rows.get(r.key)
        if row is not None:
            row["commit_sha"] = sha
        wt = self.state.nodes[r.worktree]
        before = (wt.data or {}).get("head")
        if wt.data and before != sha:
            self._set(r.worktree, NodeRecord(wt.kind, wt.state, wt.attempts, wt.error, {**wt.data, "head": sha}))
        rec = self.state.nodes[r.key]
        self._set(r.key, NodeRecord(rec.kind, rec.state, rec.attempts, rec.error,
                                    {**(rec.data or {}), "commit": sha, "base": before}))
        self.delta.event("snapshot", r.key, commit=sha, worktree=r.worktree[0])

    def set_node(self, key: Key, kind: str, state: str, data: dict[str, Any] | None, *, error: str | None = None
                 ) -> None:
        rec = self.state.nodes.get(key)
        self._set(key, NodeRecord(kind, state, rec.attempts if rec else 0, error if error is not None
                                  else rec.error if rec else None, data))

    def put_output(self, key: Key, value: Any, tname: str | None, deps: dict[str, Any] | None = None) -> None:
        self.state.set_output(key, value, tname)
        self.ctx.forget(key)
        self.delta.outputs[key] = (value, tname, deps)

    def _park(self, r: Ready, parked: "Parked") -> None:
        """A Subflow step whose child stopped waiting for people: the step waits too (no attempt is
        used up; resuming this run drives the child again)."""
        self.attempt_rows.pop(r.key, None)
        self.step_ctx.pop(r.key, None)
        rec = self.state.nodes[r.key]
        self._set(r.key, NodeRecord("subflow", WAITING, rec.attempts - 1, None, {**(rec.data or {}),
                                                                                "child": parked.child}))
        self.delta.event("wait_started", r.key, kind="subflow", child=parked.child)

    def _parked_children(self) -> list[Ready]:
        return [r for r in self.running.values() if r.key in self.children and self.children[r.key].parked_now]

    async def _stop_children(self, parked: list[Ready], *, cancel: bool) -> None:
        """Stop the child runs of parked Subflow steps (resumable) or cancel them, and collect."""
        for r in parked:
            child = self.children.get(r.key)
            if child is not None:
                child.request_cancel() if cancel else child.request_stop()
        keys = {r.key for r in parked}
        tasks = [t for t, r in self.running.items() if r.key in keys]
        if tasks:
            await asyncio.wait(tasks)
        self._collect()

    # --- budgets -------------------------------------------------------------------------------
    def count_usage(self, key: Key, extra: dict[str, Any]) -> None:
        tokens = int((extra.get("tokens_in") or 0) + (extra.get("tokens_out") or 0))
        usd = float(extra.get("cost_usd") or 0.0)
        if tokens or usd:
            u = self.usage.setdefault(key, [0, 0.0])
            u[0] += tokens
            u[1] += usd
            self.spent[0] += tokens
            self.spent[1] += usd

    def _spend(self, ids: set[str]) -> tuple[int, float]:
        t, u = 0, 0.0
        for k, (kt, ku) in self.usage.items():
            if k[0] in ids:
                t += int(kt)
                u += ku
        return t, u

    def _scope_left(self, r: Ready) -> list[tuple[str, Budget, tuple[int, float]]]:
        """Each budget around a step, with what it has spent: the run's, its scopes', its own."""
        out: list[tuple[str, Budget, tuple[int, float]]] = []
        if self.run_budget is not None:
            out.append((RUN_SCOPE, self.run_budget, (int(self.spent[0]), self.spent[1])))
        plan_budgets = self._budgets
        for scope in r.scopes:
            b = plan_budgets.get(scope)
            if b is None:
                continue
            if scope == r.key[0]:  # the step's own budget: this step (this iteration) only
                kt, ku = self.usage.get(r.key, (0, 0.0))
                out.append((scope, b, (int(kt), ku)))
            else:
                out.append((scope, b, self._spend(self._members.get(scope, set()))))
        return out

    def _over_budget(self, r: Ready) -> bool:
        """Fail a step that can spend (an agent step, a sub-workflow) before it starts when a budget
        around it is used up. True when it did."""
        node = r.node
        if not ((isinstance(node, Task) and node.kind == "agent") or isinstance(node, Subflow)):
            return False
        for scope, budget, (tokens, usd) in self._scope_left(r):
            why = budget.spent_all(tokens, usd)
            if why is not None:
                what = "the run's budget" if scope == RUN_SCOPE else (
                    "its budget" if scope == r.key[0] else f"the budget of {scope!r}")
                err = f"{what} is spent ({why}): the step did not start"
                rec = self.state.nodes.get(r.key)
                self._set(r.key, NodeRecord(rec.kind if rec else "task", FAILED, rec.attempts if rec else 0, err,
                                            rec.data if rec else None))
                self.delta.event("budget_exceeded", r.key, scope=scope, error=err)
                self.delta.event("node_failed", r.key, error=err, continue_on_fail=getattr(node, "continue_on_fail",
                                                                                           False))
                return True
        return False

    def budget_left(self, r: Ready) -> Budget | None:
        """The tightest of what is left of every budget around a step (a sub-workflow's own budget)."""
        left: Budget | None = None
        for _scope, budget, (tokens, usd) in self._scope_left(r):
            rest = budget.left(tokens, usd)
            left = rest.tighter(left)
        return left

    def _note_budgets(self, plan: Plan) -> None:
        """Keep the plan's budget scopes; record them (and the run's) in the run's meta when they
        change, so reports show spend against each budget."""
        self._budgets, self._members = plan.budgets, plan.members
        if not plan.budgets and self.run_budget is None and self.budget_meta is None:
            return
        meta: dict[str, Any] = {}
        if self.run_budget is not None:
            meta[RUN_SCOPE] = {**self.run_budget.as_dict(), "nodes": None}
        for scope, b in plan.budgets.items():
            meta[scope] = {**b.as_dict(), "nodes": sorted(plan.members.get(scope, ()))}
        if meta != self.budget_meta:
            self.budget_meta = meta
            self.run.meta = {**self.run.meta, "budgets": meta}
            self.delta.run["meta"] = self.run.meta

    # --- ContinueAsNew -------------------------------------------------------------------------
    def _continue_as_new(self, key: Key, node: ContinueAsNew) -> bool:
        """End this run, handing `node.input` to a fresh run of the same workflow made in the same
        commit. False (the step failed) when the input does not fit the workflow."""
        from .attempt import new_run_id

        assert self.wf is not None
        data = node.input.model_dump(mode="json") if hasattr(node.input, "model_dump") else node.input
        try:
            model = self.wf.validate_input(data)
        except ValidationError as e:
            err = f"the input handed to the next run does not fit {self.wf.name!r}: {one_line_validation(e)}"
            self._set(key, NodeRecord("continue", FAILED, 0, err))
            self.delta.event("node_failed", key, error=err)
            return False
        if model is not None:
            data = model.model_dump(mode="json")
        new_id = new_run_id()
        meta = {k: v for k, v in self.run.meta.items() if k not in ("reset", "budgets")}
        meta["generation"] = int(self.run.meta.get("generation", 0)) + 1
        new = NewRun(id=new_id, workflow=self.run.workflow, target=self.run.target, source_path=self.run.source_path,
                     source_hash=self.run.source_hash, input=data, workdir=self.run.workdir, status=RUN_RUNNING,
                     kind=RunKind.CONTINUE, meta=meta, parent_run_id=self.run_id, parent_frame=self.frame + 1)
        self.delta.new_runs.append((new, self.engine.owner))
        self._set(key, NodeRecord("continue", DONE, 0, None, {"run": new_id}))
        self.delta.run["successor_run_id"] = new_id
        self.delta.event("run_continued", key, successor=new_id)
        self.continued_as = new_id
        self.result = {"continued_as": new_id}
        return True

    def _finish_attempt(self, r: Ready, state: str, error: str | None, extra: dict[str, Any] | None = None) -> None:
        row = self.attempt_rows.pop(r.key, None)
        if row is not None:
            row.update({"finished_at": time.time(), "outcome": state, "error": error, **(extra or {})})
            self.delta.attempts.append(row)
        rec = self.state.nodes[r.key]
        self._set(r.key, NodeRecord(rec.kind, state, rec.attempts, error, rec.data))

    def _succeed(self, r: Ready, result: Any) -> None:
        node = r.node
        extra: dict[str, Any] = {}
        if isinstance(result, StepResult):
            extra, result = result.attempt, result.value
        if isinstance(node, Worktree):
            rec = self.state.nodes[r.key]
            self._set(r.key, NodeRecord("worktree", RUNNING, rec.attempts, None, result))
            row = self.attempt_rows.pop(r.key, None)
            if row:
                row.update({"finished_at": time.time(), "outcome": "done"})
                self.delta.attempts.append(row)
            self.delta.event("worktree_created", r.key, **result)
            return
        task = node  # a Task or a Subflow
        try:
            value, tname = coerce_output(task, result)
            dumps(value)
        except (ValidationError, TypeError, ValueError) as e:
            msg = (f"output does not fit {task.output.__name__}: {one_line_validation(e)}"
                   if isinstance(e, ValidationError) and task.output else f"output is not JSON: {e}")
            self._fail_attempt(r, SmithersError(msg))
            return
        if extra:
            self.count_usage(r.key, extra)
        self._finish_attempt(r, DONE, None, extra)
        tctx = self.step_ctx.pop(r.key, None)
        deps = tctx.deps(fingerprint(task)) if tctx is not None else None
        self.put_output(r.key, value, tname, deps)
        cache_key = self.cache_keys.pop(r.key, None)
        if cache_key is not None and isinstance(task, Task) and task.cache is not None:
            self.delta.cache.append({"node_id": task.id, "key": cache_key, "version": str(task.cache.version),
                                     "value": value, "type": tname, "iteration": r.key[1]})
        self.delta.event("node_finished", r.key, attempt=self.state.nodes[r.key].attempts,
                         **({k: extra[k] for k in ("tokens_in", "tokens_out", "cost_usd", "cache", "child")
                             if k in extra}))

    def _fail_attempt(self, r: Ready, exc: BaseException) -> None:
        self.step_ctx.pop(r.key, None)
        node = r.node
        fn = node.run if isinstance(node, Task) else None
        err = error_line(exc, getattr(getattr(fn, "__code__", None), "co_filename", None))
        rec = self.state.nodes[r.key]
        policy = node.retry if isinstance(node, (Task, Subflow)) else None
        retries = policy.retries if policy is not None else 1
        extra = getattr(exc, "attempt", None) or {}
        self.count_usage(r.key, extra)
        if rec.attempts <= retries and not self._cancel and getattr(exc, "retryable", True):
            row = self.attempt_rows.pop(r.key, None)
            if row is not None:
                row.update({"finished_at": time.time(), "outcome": "failed", "error": err, **extra})
                self.delta.attempts.append(row)
            delay = policy.delay_for(rec.attempts, self.rng) if policy is not None else 0.5 * 2 ** (rec.attempts - 1)
            self.backoff[r.key] = time.monotonic() + delay
            self._set(r.key, NodeRecord(rec.kind, PENDING, rec.attempts, err, rec.data))
            self.delta.event("node_retrying", r.key, attempt=rec.attempts, error=err, delay=round(delay, 3))
            return
        self._finish_attempt(r, FAILED, err, extra)
        cont = getattr(node, "continue_on_fail", False)
        self.delta.event("node_failed", r.key, attempt=rec.attempts, error=err, continue_on_fail=cont)
        # the next render decides whether this fails the run (a TryCatchFinally or Saga may handle it)

    def _finalize(self, status: RunStatus) -> None:
        now = time.time()
        self.status = status
        if status == RUN_FAILED:
            self.error = self.error or self._failure_text()
        self.delta.run.update({"status": status, "error": self.error if status == RUN_FAILED else None,
                               "owner_id": None, "heartbeat_at": None})
        if status != RUN_WAITING:
            self.delta.run["finished_at"] = now
            if self.wake_at is not None:
                self.wake_at = self.delta.run["wake_at"] = None
        if status == RUN_FINISHED:
            if self.continued_as is None and self.tree is not None:
                from .result import run_result

                self.result = run_result(self.tree, self.state)
            self.delta.run["result"] = self.result
        typ = {RUN_FINISHED: "run_finished", RUN_FAILED: "run_failed", RUN_WAITING: "run_waiting",
               RUN_CANCELLED: "run_cancelled"}[status]
        data: dict[str, Any] = {"error": self.error} if status == RUN_FAILED else {}
        if status == RUN_WAITING:
            data["gates"] = [key_str(k) for k, rec in self.state.nodes.items() if rec.state == WAITING_APPROVAL]
            subflows = [rec.data["child"] for rec in self.state.nodes.values()
                        if rec.kind == "subflow" and rec.state == WAITING and rec.data]
            if subflows:
                data["subflows"] = subflows
        if self.continued_as:
            data["successor"] = self.continued_as
        self.delta.event(typ, None, **data)

    def _failure_text(self) -> str:
        key = self.failing
        if key is None or key[0] == "<render>":
            return self.error or "failed"
        rec = self.state.nodes.get(key)
        return f"step {key[0]!r}" + (f" (iteration {key[1]})" if key[1] else "") + f" failed: {rec.error if rec else ''}"

    async def commit(self) -> None:
        """One transaction, one frame: everything in the pending delta."""
        delta = self.delta
        if not delta:
            return
        self.delta = Delta()
        self.frame += 1
        now = time.time()
        if self.status not in (RUN_FINISHED, RUN_FAILED, RUN_CANCELLED) and "owner_id" not in delta.run:
            delta.run["heartbeat_at"] = now
        self._since_keyframe += 24 * (len(delta.nodes) + len(delta.outputs)) + 16
        kf = None
        if self._since_keyframe >= 64 + 40 * len(self.state.nodes):  # deltas since outweigh the state
            kf = keyframe(self.state.nodes, self.status)
            self._since_keyframe = 0
        last = await self.store.commit(self.run_id, self.engine.owner.id, self.frame, delta, now, kf, token=self.lease)
        self._last_commit = time.monotonic()
        if self.engine.on_commit:
            self.engine.on_commit(self.run_id, self.frame, self.state)
        if delta.events and self.bus.has_subscribers:
            first = last - len(delta.events) + 1
            for i, (typ, k, data) in enumerate(delta.events):
                self.bus.publish(Event(seq=first + i, run_id=self.run_id, frame=self.frame, at=now,
                                       type=typ, node_id=k[0] if k else None,
                                       iteration=k[1] if k else None, data=data))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if time.monotonic() - self._last_commit >= HEARTBEAT_S:
                try:
                    await self.store.heartbeat(self.run_id, self.engine.owner.id, time.time(), token=self.lease)
                    self._last_commit = time.monotonic()
                except Exception:  # a transient database error: the next beat tries again
                    pass

    # --- outside requests ----------------------------------------------------------------------
    def request_cancel(self) -> None:
        """Cancel the run: running steps are cancelled and the run ends `cancelled`."""
        self._cancel = True
        self.wakeup()

    def request_stop(self) -> None:
        """Stop executing here but leave the run resumable (quitting the app): running steps are
        interrupted exactly as by a crash, and the lease is released."""
        self._stop = True
        self.wakeup()

    def request_drain(self) -> None:
        """Stop executing here once the steps in flight have finished (a worker shutting down):
        no new step starts; then the lease is released and the run stays resumable."""
        self._drain = True
        self.wakeup()

    async def fail(self, error: str) -> None:
        """End the run as failed without executing anything (its workflow cannot be loaded here):
        one frame, the lease released; `smithers resume` retries once the cause is fixed."""
        self.error = error
        self._finalize(RUN_FAILED)
        await self.commit()

    async def _detach(self) -> str:
        for t in list(self.running):
            t.cancel()
        if self.running:
            await asyncio.wait(list(self.running))
        self.running.clear()
        self.running_keys.clear()
        self.delta.run.update({"owner_id": None, "heartbeat_at": None})
        self.delta.event("run_stopped", None, owner=self.engine.owner.id)
        await self.commit()
        return self.status

    async def check_external(self) -> None:
        """Called when the database changed: decisions and cancel requests from other processes."""
        if await self.store.cancel_requested(self.run_id):
            self.request_cancel()
            return
        decided = await self.store.decided_unapplied(self.run_id)
        if decided:
            for d in decided:
                self.apply_decision(d)
            self.wakeup()
        if any(rec.kind == "signal" and rec.state == WAITING for rec in self.state.nodes.values()):
            self.signals_stale = True  # a signal may have arrived: the loop reads them again
            self.wakeup()

    def apply_decision(self, d: ApprovalRecord) -> None:
        """Act on a decision recorded for a gate or a human task of this run (from any process, or a
        timeout): the gated task runs or not, the gate's Decision or the task's answer is the output."""
        key = d.key
        rec = self.state.nodes.get(key)
        if rec is None or rec.state != WAITING_APPROVAL:
            return
        decision, request = d.decision or "denied", d.request or {}
        timed_out = decision == "timed_out"
        on_deny = (rec.data or {}).get("on_deny", "fail")
        approved = decision in ("approved", "answered")
        if timed_out:
            on_timeout = request.get("on_timeout", "fail")
            approved = on_timeout == "approve"
            if on_timeout in ("fail", "skip"):
                on_deny = on_timeout
        self.delta.approvals.append({"key": key, "message": d.message, "on_deny": on_deny, "applied": True})
        decision_out: dict[str, Any] = {"approved": approved, "by": d.decided_by, "note": d.note, "at": d.decided_at}
        options = list(request.get("options") or [])
        if d.mode == "select":
            decision_out["choice"] = d.answer if d.answer is not None else (options[0] if approved and options else None)
        elif d.mode == "rank":
            decision_out["ranking"] = d.answer if d.answer is not None else (options if approved else None)
        if timed_out:
            decision_out["timed_out"] = True
        data = {**(rec.data or {}), "approved": approved, "decision": decision_out}
        why = (f"no decision within {request.get('due', 0) - d.requested_at:g}s" if timed_out else _denied(d))
        if timed_out:
            self.delta.event("wait_timed_out", key, on_timeout=request.get("on_timeout", "fail"), error=why)
        if rec.kind == "task":  # a gated task: approved -> it runs; denied -> skipped or failed
            if approved:
                self._set(key, NodeRecord("task", PENDING, rec.attempts, None, data))
            elif on_deny in ("skip", "continue"):
                self._set(key, NodeRecord("task", SKIPPED, rec.attempts, why if timed_out else f"denied by {d.decided_by}",
                                          data))
            else:
                self._set(key, NodeRecord("task", FAILED, rec.attempts, why, data))
            return
        if rec.kind == "human":
            self._apply_answer(key, rec, d, approved, on_deny, why, data)
            return
        self.put_output(key, decision_out, "engine.approval:Decision")
        if approved or on_deny == "continue":
            self._set(key, NodeRecord("approval", DONE, 0, None, data))
        elif on_deny == "skip":
            self._set(key, NodeRecord("approval", SKIPPED, 0, None, data))
        else:
            self._set(key, NodeRecord("approval", FAILED, 0, why, data))

    def _apply_answer(self, key: Key, rec: NodeRecord, d: ApprovalRecord, answered: bool, on_deny: str, why: str,
                      data: dict[str, Any]) -> None:
        data = {k: v for k, v in data.items() if k not in ("approved", "decision")}
        data.update({"by": d.decided_by, "at": d.decided_at})
        if answered:
            model = self.ctx._models.get(key[0])
            try:
                value, tname = (model.model_validate(d.answer).model_dump(mode="json"), type_name(model)) if model \
                    else (d.answer, d.request.get("output"))
            except ValidationError as e:
                err = (f"the answer by {d.decided_by} does not fit {model.__name__ if model else 'its model'}: "
                       f"{one_line_validation(e)}")
                self._set(key, NodeRecord("human", FAILED, rec.attempts, err, data))
                self.delta.event("node_failed", key, error=err)
                return
            self.put_output(key, value, tname)
            self._set(key, NodeRecord("human", DONE, rec.attempts, None, data))
            self.delta.event("node_finished", key, by=d.decided_by)
        elif on_deny == "continue":
            self._set(key, NodeRecord("human", DONE, rec.attempts, None, {**data, "declined": True}))
        elif on_deny == "skip":
            self._set(key, NodeRecord("human", SKIPPED, rec.attempts, why, data))
        else:
            self._set(key, NodeRecord("human", FAILED, rec.attempts, why, data))

    async def _finish_cancel(self) -> str:
        for t in list(self.running):
            t.cancel()
        if self.running:
            await asyncio.wait(list(self.running))
        handled = {r.key for r in self.running.values()}  # their runners cancelled their child runs
        for r in list(self.running.values()):
            self.running_keys.discard(r.key)
            self._finish_attempt(r, CANCELLED, "cancelled")
        self.running.clear()
        for key, rec in list(self.state.nodes.items()):
            if rec.state not in FINAL_NODE_STATES:
                if rec.kind == "subflow" and key not in handled and rec.data and rec.data.get("child"):
                    await self._cancel_child(rec.data["child"])
                self._set(key, NodeRecord(rec.kind, CANCELLED, rec.attempts, "cancelled", rec.data))
        await self._remove_worktrees()
        self._finalize(RUN_CANCELLED)
        self.delta.run["cancel_requested"] = 1
        await self.commit()
        return RUN_CANCELLED

    async def _cancel_child(self, child: str) -> None:
        """Cancel a parked sub-workflow's run with its parent (it may have ended meanwhile)."""
        try:
            await self.engine.cancel(child)
        except SmithersError:
            pass

    async def _abort(self, e: BaseException) -> None:
        """The loop itself died (a bug, or the task was cancelled): stop the steps, keep the lease
        released so the run can be resumed."""
        for t in list(self.running):
            t.cancel()
        try:
            await asyncio.shield(self.store.release(self.run_id, self.engine.owner.id, token=self.lease))
        except BaseException:  # the database itself may be what failed: the dead owner frees it anyway
            pass
        if not self.finished.done():
            self.finished.set_result(self.status)  # waiters only need to know it stopped; execute() raises


NONE_PARKED: frozenset[Key] = frozenset()


class Parked:
    """What a Subflow step returns when its child stopped waiting for people."""

    def __init__(self, child: str) -> None:
        self.child = child


def child_run_id(run_id: str, key: Key) -> str:
    """A sub-workflow's run id: derived from its parent's, so starting it again finds the same run."""
    return f"{run_id}.{key[0]}" + (f".{key[1]}" if key[1] else "")


def _denied(d: ApprovalRecord) -> str:
    note = f": {d.note}" if d.note else ""
    return f"denied by {d.decided_by or 'someone'}{note}"
