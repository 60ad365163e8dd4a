"""Run: executes one run in this process — the render -> plan -> execute -> persist loop.

Each pass gathers every transition since the last commit (finished steps, retries, skips, loop
advances, gates, the steps about to start) into one Delta and commits it as one frame before
any new step runs, so a step whose side effects happen twice was, by construction, in flight
when the process died.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .attempt import StepResult, error_line, user_frame
from .context import Ctx, TaskCtx
from .dsl import Node, Task, WorkflowDef, Worktree
from .errors import RenderError, SmithersError, TaskTimeout
from .events import Event
from .frame import Delta, keyframe
from .lease import HEARTBEAT_S
from .records import ApprovalRecord, RunRecord
from .errors import one_line_validation
from .render import S_DONE, S_FAILED, S_WAITING, Plan, Ready, coerce_output, fingerprint, index_tree, render
from .state import (CANCELLED, DONE, FAILED, FINAL_NODE_STATES, PENDING, RUN_CANCELLED, RUN_FAILED, RUN_FINISHED,
                    RUN_RUNNING, RUN_WAITING, RUNNING, SKIPPED, WAITING_APPROVAL, Key, NodeRecord, RunState,
                    RunStatus, key_str)
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
            if rec.state == RUNNING and rec.kind in ("task", "worktree") and not (rec.kind == "worktree" and rec.data
                                                                                   and rec.data.get("path")):
                self._set(key, NodeRecord(rec.kind, PENDING, rec.attempts, "interrupted", rec.data))
                self.delta.event("node_interrupted", key, attempt=rec.attempts)
                self.delta.interrupted.append(key)  # its attempt row, started when the node was marked running
                self.restore.add(key)
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
        announced_wait = False
        while True:
            if self._cancel:
                return await self._finish_cancel()
            if self._stop:
                return await self._detach()
            self._expire_backoff()
            try:
                plan = self._render()
            except RenderError as e:
                self.error = str(e)
                self.failing = self.failing or ("<render>", 0)
                plan = None
            status = S_FAILED if plan is None else plan.status
            starts: list[Ready] = []
            final: RunStatus | None = None
            if status == S_FAILED or self.failing or plan is None:
                if plan is not None and plan.failed and not self.failing:
                    self.failing = plan.failed
                if not self.running:
                    final = RUN_FAILED
            else:
                room = self.max_concurrency - len(self.running)
                if room > 0 and not self._drain:
                    starts = [r for r in plan.ready if r.key not in self.running_keys][:room]
                if status == S_DONE and not self.running:
                    final = RUN_FINISHED
                elif status == S_WAITING and not self.running and not starts and not self.backoff:
                    if stop_when_waiting:
                        final = RUN_WAITING
                    elif not announced_wait:
                        self._set_status(RUN_WAITING)
                        announced_wait = True
            if starts and announced_wait:
                self._set_status(RUN_RUNNING)
                announced_wait = False
            for r in starts:
                self._mark_started(r)
            if final == RUN_FINISHED:
                await self._remove_worktrees()
            if final:
                self._finalize(final)
            await self.commit()
            if final:
                return final
            if self._drain and not self.running:
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
        for _ in range(100000):
            tree = self._build()
            plan = render(tree, self.state, self.delta, self.ctx, self.backoff, self.workdir)
            if not plan.dirty:
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
                              "return a Task, Sequence, Parallel, Branch, Loop, Approval or Worktree")
        self.ctx._models = index_tree(tree)
        return tree

    async def _wait(self) -> None:
        """Sleep until a step finishes, a retry's backoff ends, or someone calls wakeup()."""
        if not self._woken:
            timeout = max(0.0, min(self.backoff.values()) - time.monotonic()) if self.backoff else None
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
        kind = "worktree" if isinstance(r.node, Worktree) else "task"
        self._set(r.key, NodeRecord(kind, RUNNING, attempts, None, rec.data if rec else None))
        row = {"run_id": self.run_id, "node_id": r.key[0], "iteration": r.key[1], "attempt": attempts,
               "started_at": time.time()}
        self.attempt_rows[r.key] = row  # written when the attempt ends (recover() records interrupted ones)
        self.delta.event("node_started", r.key, attempt=attempts,
                         kind=r.node.kind if isinstance(r.node, Task) else "worktree")

    async def _step(self, r: Ready) -> Any:
        node = r.node
        attempt = self.state.nodes[r.key].attempts
        tctx = TaskCtx(self.ctx, r.key[0], r.key[1], attempt, r.workdir, lambda typ, data: self.emit(typ, r.key, data))
        kind = node.kind if isinstance(node, Task) else "worktree"
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
                self._succeed(r, t.result())
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

    def set_node(self, key: Key, kind: str, state: str, data: dict[str, Any] | None) -> None:
        rec = self.state.nodes.get(key)
        self._set(key, NodeRecord(kind, state, rec.attempts if rec else 0, rec.error if rec else None, data))

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
        task = r.task
        try:
            value, tname = coerce_output(task, result)
            dumps(value)
        except (ValidationError, TypeError, ValueError) as e:
            msg = (f"output does not fit {task.output.__name__}: {one_line_validation(e)}"
                   if isinstance(e, ValidationError) and task.output else f"output is not JSON: {e}")
            self._fail_attempt(r, SmithersError(msg))
            return
        self._finish_attempt(r, DONE, None, extra)
        tctx = self.step_ctx.pop(r.key, None)
        deps = tctx.deps(fingerprint(task)) if tctx is not None else None
        self.state.set_output(r.key, value, tname)
        self.ctx.forget(r.key)
        self.delta.outputs[r.key] = (value, tname, deps)
        self.delta.event("node_finished", r.key, attempt=self.state.nodes[r.key].attempts,
                         **({k: extra[k] for k in ("tokens_in", "tokens_out", "cost_usd") if k in extra}))

    def _fail_attempt(self, r: Ready, exc: BaseException) -> None:
        self.step_ctx.pop(r.key, None)
        node = r.node
        fn = node.run if isinstance(node, Task) else None
        err = error_line(exc, getattr(getattr(fn, "__code__", None), "co_filename", None))
        rec = self.state.nodes[r.key]
        retries = node.retries if isinstance(node, Task) else 1
        extra = getattr(exc, "attempt", None) or {}
        if rec.attempts <= retries and not self._cancel and getattr(exc, "retryable", True):
            row = self.attempt_rows.pop(r.key, None)
            if row is not None:
                row.update({"finished_at": time.time(), "outcome": "failed", "error": err, **extra})
                self.delta.attempts.append(row)
            base = node.backoff if isinstance(node, Task) else 0.5
            delay = base * (2 ** (rec.attempts - 1))
            self.backoff[r.key] = time.monotonic() + delay
            self._set(r.key, NodeRecord(rec.kind, PENDING, rec.attempts, err, rec.data))
            self.delta.event("node_retrying", r.key, attempt=rec.attempts, error=err, delay=round(delay, 3))
            return
        self._finish_attempt(r, FAILED, err, extra)
        cont = getattr(node, "continue_on_fail", False)
        self.delta.event("node_failed", r.key, attempt=rec.attempts, error=err, continue_on_fail=cont)
        if not cont:
            self.failing = self.failing or r.key

    def _finalize(self, status: RunStatus) -> None:
        now = time.time()
        self.status = status
        if status == RUN_FAILED:
            self.error = self.error or self._failure_text()
        self.delta.run.update({"status": status, "error": self.error if status == RUN_FAILED else None,
                               "owner_id": None, "heartbeat_at": None})
        if status != RUN_WAITING:
            self.delta.run["finished_at"] = now
        typ = {RUN_FINISHED: "run_finished", RUN_FAILED: "run_failed", RUN_WAITING: "run_waiting",
               RUN_CANCELLED: "run_cancelled"}[status]
        data: dict[str, Any] = {"error": self.error} if status == RUN_FAILED else {}
        if status == RUN_WAITING:
            data["gates"] = [key_str(k) for k, rec in self.state.nodes.items() if rec.state == WAITING_APPROVAL]
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
                                       type=typ, node_id=k[0] if k else None,  # type: ignore[arg-type]  # EventType
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

    def apply_decision(self, d: ApprovalRecord) -> None:
        key = d.key
        rec = self.state.nodes.get(key)
        if rec is None or rec.state != WAITING_APPROVAL:
            return
        approved = d.decision == "approved"
        decision = {"approved": approved, "by": d.decided_by, "note": d.note, "at": d.decided_at}
        on_deny = (rec.data or {}).get("on_deny", "fail")
        self.delta.approvals.append({"key": key, "message": d.message, "on_deny": on_deny, "applied": True})
        data = {**(rec.data or {}), "approved": approved, "decision": decision}
        if rec.kind == "task":  # a gated task: approved -> it runs; denied -> skipped or failed
            if approved:
                self._set(key, NodeRecord("task", PENDING, rec.attempts, None, data))
            elif on_deny in ("skip", "continue"):
                self._set(key, NodeRecord("task", SKIPPED, rec.attempts, f"denied by {d.decided_by}", data))
            else:
                self._set(key, NodeRecord("task", FAILED, rec.attempts, _denied(d), data))
                self.failing = self.failing or key
            return
        value = decision
        self.state.set_output(key, value, "engine.approval:Decision")
        self.ctx.forget(key)
        self.delta.outputs[key] = (value, "engine.approval:Decision", None)
        if approved or on_deny == "continue":
            self._set(key, NodeRecord("approval", DONE, 0, None, data))
        elif on_deny == "skip":
            self._set(key, NodeRecord("approval", SKIPPED, 0, None, data))
        else:
            self._set(key, NodeRecord("approval", FAILED, 0, _denied(d), data))
            self.failing = self.failing or key

    async def _finish_cancel(self) -> str:
        for t in list(self.running):
            t.cancel()
        if self.running:
            await asyncio.wait(list(self.running))
        for r in list(self.running.values()):
            self.running_keys.discard(r.key)
            self._finish_attempt(r, CANCELLED, "cancelled")
        self.running.clear()
        for key, rec in list(self.state.nodes.items()):
            if rec.state not in FINAL_NODE_STATES:
                self._set(key, NodeRecord(rec.kind, CANCELLED, rec.attempts, "cancelled", rec.data))
        await self._remove_worktrees()
        self._finalize(RUN_CANCELLED)
        self.delta.run["cancel_requested"] = 1
        await self.commit()
        return RUN_CANCELLED

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


def _denied(d: ApprovalRecord) -> str:
    note = f": {d.note}" if d.note else ""
    return f"denied by {d.decided_by or 'someone'}{note}"
