"""Engine: the one façade the app, the CLI and the APIs use. It hosts runs in this process
(start, resume, cancel, decide, fork, rewind, replay) and answers about any run (report,
outline, frames, lineage, runs, diff). A behaviour lives here once and every face gets it."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from pydantic import BaseModel

from .attempt import StepResult, new_run_id, run_compute
from .context import TaskCtx
from .dsl import WorkflowDef
from .errors import BadInput, LeaseHeld, SmithersError, SourceChanged
from .events import EventBus
from .lease import WORKER_PREFIX, Owner, describe_owner, owner_alive, shown_status
from .loader import load_target, source_hash
from .outline import Outline, outline
from .records import ApprovalRecord, FrameRecord, NewRun, RunRecord
from .render import Ready
from .report import RunReport, build_report
from .run import RunExecutor
from .state import (FINAL_RUN_STATES, RUN_CANCELLED, RUN_FAILED, RUN_FINISHED, RUN_REWOUND, RUN_RUNNING, RunKind,
                    RunState, RunStatus)
from .store import Store
from .timetravel import ForkInfo, check_fork, plan_fork

StepRunner = Callable[[RunExecutor, Ready, TaskCtx], Awaitable[Any]]

__all__ = ["Decided", "Engine", "GateView", "Lineage", "OwnerSummary", "Queued", "RunExecutor", "RunSummary",
           "StepResult", "WorkerView", "new_run_id"]


class GateView(BaseModel):
    node_id: str
    iteration: int
    message: str


class OwnerSummary(BaseModel):
    id: str
    host: str | None
    pid: int | None
    alive: bool
    worker: bool = False  # held by a worker (`smithers worker` / `smithers up`)

    def label(self) -> str:
        """How `ps` and the app show who runs a run."""
        who = f"{self.id} " if self.worker else ""
        return f"{who}{self.host}:{self.pid}" + ("" if self.alive else " (gone)")


class RunSummary(BaseModel):
    """One run as `smithers ps --json` lists it."""

    run_id: str
    workflow: str
    status: str
    frame: int
    created_at: float
    updated_at: float
    finished_at: float | None
    error: str | None
    parent_run_id: str | None
    kind: str
    waiting: list[GateView]
    owner: OwnerSummary | None


class Lineage(BaseModel):
    """The tree of forks, rewinds and replays around a run."""

    run_id: str
    kind: str
    status: str
    parent_frame: int | None
    frames: int
    successor_run_id: str | None
    children: list["Lineage"]


class Queued(BaseModel):
    """A run recorded as queued for a worker (`smithers run --detach`): its id, and how many live
    workers may pick it up now (none: it waits for `smithers up`)."""

    run_id: str
    workers: int

    def json_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}


class RunBrief(BaseModel):
    run_id: str
    workflow: str
    status: str


class WorkerView(BaseModel):
    """A worker as `smithers status --json` shows it: where it runs and what it runs."""

    id: str
    host: str
    pid: int
    concurrency: int
    started_at: float
    heartbeat_at: float
    alive: bool
    runs: list[RunBrief]


@dataclass
class Decided:
    """A decision recorded, and what happens next: the owner goes on (`owner`), this process
    continues the run (`executor`, to be executed by the caller), or it waits for a resume."""

    gate: ApprovalRecord
    owner_alive: bool
    executor: RunExecutor | None = None

    def json_dict(self) -> dict[str, Any]:
        g = self.gate
        return {"run_id": g.run_id, "node_id": g.node_id, "iteration": g.iteration, "decision": g.decision,
                "by": g.decided_by, "note": g.note, "owner_alive": self.owner_alive}


class Engine:
    """Hosts runs in this process, and answers about any. One Store (one connection), one event
    bus, one owner id."""

    def __init__(self, store: Store, *, max_concurrency: int = 4, owner: Owner | None = None,
                 poll_interval: float = 0.25, settings: Any = None, agent_override: str | None = None) -> None:
        if max_concurrency < 1:
            raise BadInput(f"max_concurrency must be at least 1 (got {max_concurrency})")
        self.store = store
        self.bus = EventBus()
        self.owner = owner or Owner.me()
        self.max_concurrency = max_concurrency
        self.poll_interval = poll_interval
        self.settings = settings  # engine.config.Settings; loaded per project when None
        self.agent_override = agent_override
        self._settings: dict[tuple[Path, str | None], Any] = {}
        self._workflows: dict[tuple[str, str | None], tuple[WorkflowDef, str]] = {}
        self.active: dict[str, RunExecutor] = {}
        from .agent_step import run_agent
        from .worktree import run_worktree

        self.step_runners: dict[str, StepRunner] = {"compute": run_compute, "worktree": run_worktree,
                                                    "agent": run_agent}
        self._watcher: asyncio.Task[None] | None = None
        self.on_commit: Callable[[str, int, RunState], None] | None = None  # for tests

    def settings_for(self, project: Path, agent_override: str | None = None) -> Any:
        """Settings for agents: the ones given, else `.smithers/config.toml` of the run's directory;
        `agent_override` (the run's, e.g. "demo") replaces every agent."""
        override = self.agent_override or agent_override
        if self.settings is not None:
            return self.settings.model_copy(update={"agent_override": override}) if override else self.settings
        if (project, override) not in self._settings:
            from .config import load_settings

            self._settings[(project, override)] = load_settings(project, **({"agent_override": override}
                                                                              if override else {}))
        return self._settings[(project, override)]

    def workflow(self, target: str, source: str | None = None) -> tuple[WorkflowDef, str]:
        """The workflow a run recorded, loaded once per target and version of its source file (its
        module is executed again only when the file changed). Blocking: call it in a thread."""
        key = (target, source_hash(Path(source)) if source else None)
        if key not in self._workflows:
            self._workflows[key] = load_target(target)
        return self._workflows[key]

    # --- starting and resuming -----------------------------------------------------------------
    async def start(self, wf: WorkflowDef, target: str, input_data: Any = None, *, run_id: str | None = None,
                    workdir: Path | None = None, max_concurrency: int | None = None) -> RunExecutor:
        """Create a run (frame 0), take its lease, and return its executor (not yet running)."""
        new = await self._new_run(wf, target, input_data, run_id, workdir, max_concurrency)
        await self.store.create_run(new, self.owner, time.time())
        run = await self.store.get_run(new.id)
        return RunExecutor(self, run, wf, RunState())

    async def queue(self, wf: WorkflowDef, target: str, input_data: Any = None, *, run_id: str | None = None,
                    workdir: Path | None = None, max_concurrency: int | None = None) -> Queued:
        """Record a run as `queued` (frame 0) without running it: a worker picks it up (detached
        runs, from the CLI, the app and the APIs alike). Validated exactly as `start` validates."""
        new = await self._new_run(wf, target, input_data, run_id, workdir, max_concurrency)
        new.status = RunStatus.QUEUED
        await self.store.create_run(new, None, time.time())
        return Queued(run_id=new.id, workers=len(await self.workers()))

    async def _new_run(self, wf: WorkflowDef, target: str, input_data: Any, run_id: str | None,
                       workdir: Path | None, max_concurrency: int | None) -> NewRun:
        if max_concurrency is not None and max_concurrency < 1:
            raise BadInput(f"--max-concurrency must be at least 1 (got {max_concurrency})")
        inp = wf.check_input(input_data)
        run_id = run_id or new_run_id()
        if await self.store.run_exists(run_id):
            raise BadInput(f"a run {run_id!r} already exists: choose another --run-id or resume it")
        return NewRun(id=run_id, workflow=wf.name, target=target,
                      source_path=str(wf.source_path) if wf.source_path else None,
                      source_hash=source_hash(wf.source_path),
                      input=inp.model_dump(mode="json") if inp is not None else (input_data or {}),
                      workdir=str((workdir or Path.cwd()).resolve()),
                      meta={"max_concurrency": max_concurrency or self.max_concurrency,
                            **({"agent_override": self.agent_override} if self.agent_override else {})})

    async def load(self, run: RunRecord, *, accept_changes: bool = False,
                   workflow: WorkflowDef | None = None) -> tuple[WorkflowDef, str | None]:
        """The run's workflow (loaded once per source version), and its source hash now
        (SourceChanged unless accepted)."""
        wf = workflow or (await asyncio.to_thread(self.workflow, run.target, run.source_path))[0]
        now_hash = source_hash(wf.source_path)
        if run.source_hash and now_hash != run.source_hash and not accept_changes:
            raise SourceChanged(f"workflow {run.workflow!r} changed since run {run.id} started "
                                f"({run.source_path}): review the change, then resume with --accept-changes")
        return wf, now_hash

    async def resume(self, run_id: str, *, force: bool = False, accept_changes: bool = False,
                     workflow: WorkflowDef | None = None) -> RunExecutor:
        """Take over a run: its lease, its saved state; steps that were running run again.
        `workflow` overrides loading it from the recorded target (for workflows defined in memory)."""
        run = await self.store.get_run(run_id)
        if run.status == RUN_REWOUND:
            raise BadInput(f"run {run_id} was rewound; its successor is {run.successor_run_id}: resume that one")
        if run.status in (RUN_FINISHED, RUN_CANCELLED):
            raise BadInput(f"run {run_id} is {run.status}: nothing to resume (fork it to run it again: "
                           f"`smithers fork {run_id} --frame N`)")
        if run_id in self.active:
            return self.active[run_id]
        if run.owner and run.owner.id != self.owner.id and owner_alive(run.owner) and not force:
            raise LeaseHeld(f"run {run_id} is being run by {describe_owner(run.owner)}: wait for it, or "
                            f"`smithers resume {run_id} --force` if that process is stuck")
        wf, now_hash = await self.load(run, accept_changes=accept_changes, workflow=workflow)
        changes: dict[str, Any] = {"status": RUN_RUNNING, "error": None, "updated_at": time.time(),
                                   "cancel_requested": 0, "finished_at": None}
        if now_hash != run.source_hash:
            changes["source_hash"] = now_hash
        ex = await self._take(run, wf, changes)
        await self._recover(ex, was_failed=run.status == RUN_FAILED)
        return ex

    async def _recover(self, ex: RunExecutor, was_failed: bool) -> None:
        ex.recover(was_failed=was_failed)
        for d in await self.store.decided_unapplied(ex.run_id):  # decided while no process ran it
            ex.apply_decision(d)

    async def _take(self, run: RunRecord, wf: WorkflowDef | None, changes: dict[str, Any]) -> RunExecutor:
        """Lease the run to this process (atomically: LeaseHeld if another got it meanwhile) and load it."""
        token = await self.store.take_over(run.id, self.owner, run.owner.id if run.owner else None, changes,
                                           time.time())
        if token is None:
            fresh = await self.store.get_run(run.id)
            raise LeaseHeld(f"run {run.id} was taken over meanwhile by {describe_owner(fresh.owner)}")
        run = await self.store.get_run(run.id)
        ex = RunExecutor(self, run, wf, await self.store.load_state(run.id))
        ex.lease = token
        return ex

    # --- workers -------------------------------------------------------------------------------
    async def claim(self, limit: int) -> list[RunExecutor]:
        """Take up to `limit` runs a worker may run (Store.claim_runs: queued, orphaned, newly
        decided), each prepared as `resume` prepares one and ready to execute. A run whose workflow
        cannot be loaded here (missing, broken, or changed since the run started) is failed with the
        reason instead, in a frame like every transition: `smithers resume` retries it once fixed."""
        out = []
        for run in await self.store.claim_runs(self.owner, limit, time.time()):
            try:
                state = await self.store.load_state(run.id)
                try:
                    wf, _ = await self.load(run)
                except SmithersError as e:
                    await RunExecutor(self, run, None, state).fail(str(e))
                    continue
                ex = RunExecutor(self, run, wf, state)
                await self._recover(ex, was_failed=False)
            except BaseException:  # the database went away meanwhile: give the run back, whole
                await asyncio.shield(self._give_back(run))
                raise
            if run.cancel_requested:  # asked while its owner was gone: cancel it now
                ex.request_cancel()
            out.append(ex)
        return out

    async def _give_back(self, run: RunRecord) -> None:
        try:
            await self.store.release(run.id, self.owner.id, token=run.lease)
        except Exception:  # the database is away: this process's death (or its next try) frees it
            pass

    async def workers(self, *, dead: bool = False) -> list[WorkerView]:
        """Workers in the registry that are alive (with `dead`, also those gone without a word),
        each with the runs it holds."""
        found = await self.store.workers()
        runs = {rid: await self.store.get_run(rid) for w in found for rid in w.runs}
        out = []
        for w in found:
            alive = owner_alive(w.as_owner())
            if alive or dead:
                out.append(WorkerView(id=w.id, host=w.host, pid=w.pid, concurrency=w.concurrency,
                                      started_at=w.started_at, heartbeat_at=w.heartbeat_at, alive=alive,
                                      runs=[RunBrief(run_id=rid, workflow=runs[rid].workflow,
                                                     status=str(runs[rid].status)) for rid in w.runs if rid in runs]))
        return out

    # --- decisions from this process -----------------------------------------------------------
    async def cancel(self, run_id: str) -> str:
        """Cancel a run. Running here: it stops now ("cancelling"). Owned by a live process
        elsewhere: it is asked to, and notices within a poll interval ("requested"). Owned by
        nobody: this process takes it and cancels it, writing a frame like every transition
        ("cancelled")."""
        run = await self.store.get_run(run_id)
        if run.status in FINAL_RUN_STATES:
            raise BadInput(f"run {run_id} is already {run.status}: nothing to cancel")
        if run_id in self.active:
            self.active[run_id].request_cancel()
            return "cancelling"
        if owner_alive(run.owner):
            await self.store.request_cancel(run_id)
            return "requested"
        try:
            ex = await self._take(run, None, {"cancel_requested": 1})
        except LeaseHeld:  # a worker took it meanwhile: ask it
            await self.store.request_cancel(run_id)
            return "requested"
        ex.request_cancel()
        await ex.execute()
        return "cancelled"

    async def decide(self, run_id: str, node: str | None, iteration: int | None, approved: bool,
                     by: str | None = None, note: str | None = None, *, resume: bool = False,
                     workflow: WorkflowDef | None = None) -> Decided:
        """Approve or deny a gate. A run executing here goes on at once; one owned elsewhere is
        told through the database. With `resume`, a run nobody owns is taken over by this process:
        the returned `executor` is ready to execute."""
        from .approval import decide

        gate = await decide(self.store, run_id, node, iteration, approved, by, note)
        ex = self.active.get(run_id)
        if ex is not None:
            ex.apply_decision(gate)
            ex.wakeup()
            return Decided(gate, True, None)
        run = await self.store.get_run(run_id)
        alive = owner_alive(run.owner)
        if resume and not alive and run.status in (RunStatus.WAITING, RunStatus.RUNNING):
            return Decided(gate, False, await self.resume(run_id, workflow=workflow))
        return Decided(gate, alive, None)

    # --- time travel ---------------------------------------------------------------------------
    async def fork(self, run_id: str, frame: int | None, *, input: Any = None, reset: Any = (),
                   new_id: str | None = None, kind: RunKind = RunKind.FORK) -> ForkInfo:
        """A new run from a frame: every output valid there carried over, what the change affects
        to run again. Loads the workflow once; writes one transaction."""
        parent = await self.store.get_run(run_id)
        frame = check_fork(parent, frame, kind)
        new_id = new_id or new_run_id()
        if await self.store.run_exists(new_id):
            raise BadInput(f"a run {new_id!r} already exists: choose another --run-id")
        wf, target = await asyncio.to_thread(self.workflow, parent.target, parent.source_path)
        at = await self.store.state_at(run_id, frame)
        outputs = await self.store.outputs_at(run_id, frame)
        plan = await asyncio.to_thread(plan_fork, wf, target, parent, at, outputs, new_id, kind=kind, input=input,
                                       reset=reset)
        await self.store.insert_fork(plan, time.time())
        return plan.result()

    async def rewind(self, run_id: str, frame: int, *, new_id: str | None = None) -> ForkInfo:
        """A fork that takes over: the original is kept, read-only, as `rewound`."""
        if run_id in self.active:
            ex = self.active[run_id]
            ex.request_cancel()
            await asyncio.wait([ex.finished])
        return await self.fork(run_id, frame, new_id=new_id, kind=RunKind.REWIND)

    async def replay(self, run_id: str, frame: int = 0, *, new_id: str | None = None) -> ForkInfo:
        """Re-execute everything after `frame` in a new run, to compare."""
        return await self.fork(run_id, frame, new_id=new_id, kind=RunKind.REPLAY)

    # --- reading -------------------------------------------------------------------------------
    async def report(self, run_id: str, frame: int | None = None) -> RunReport:
        """The run (as of a frame: its past only), read in one consistent snapshot."""
        data = await self.store.report_data(run_id, frame)
        if frame is not None and not 0 <= frame <= data.run.frame:
            raise BadInput(f"run {run_id} has frames 0..{data.run.frame}: pick --frame in that range")
        return build_report(data, frame, executing_here=run_id in self.active)

    async def outline(self, run_id: str, frame: int | None = None) -> Outline | None:
        """The shape of the run's workflow tree, rendered from its state (as of a frame); None when
        the workflow cannot be loaded or its body raises."""
        run = await self.store.get_run(run_id)
        if frame is None:
            state = await self.store.load_state(run_id)
        else:
            at = await self.store.state_at(run_id, frame)
            outs = await self.store.outputs_at(run_id, frame)
            state = RunState.of(at.nodes, {k: (o.value, o.type) for k, o in outs.items()})
        try:
            wf = (await asyncio.to_thread(self.workflow, run.target, run.source_path))[0]
        except Exception:
            return None
        return await asyncio.to_thread(outline, wf, run.id, run.input, state, run.workdir)

    async def frames(self, run_id: str, since: int = 0) -> list[FrameRecord]:
        return await self.store.frames(run_id, since)

    async def runs(self, status: str | None = None, limit: int = 500) -> list[RunSummary]:
        """Runs, newest first, each with its waiting gates and who runs it. `status` may be a shown
        status (`interrupted`: running, but nobody alive runs it)."""
        stored = RunStatus.RUNNING if status == RunStatus.INTERRUPTED else status
        runs = await self.store.list_runs(stored, limit)
        gates: dict[str, list[GateView]] = {}
        for g in await self.store.approvals(None, open_only=True):
            gates.setdefault(g.run_id, []).append(GateView(node_id=g.node_id, iteration=g.iteration,
                                                           message=g.message))
        out = []
        for r in runs:
            shown = shown_status(r, r.id in self.active)
            if status is not None and shown != status:
                continue
            alive = r.id in self.active or owner_alive(r.owner)
            out.append(RunSummary(
                run_id=r.id, workflow=r.workflow, status=str(shown), frame=r.frame, created_at=r.created_at,
                updated_at=r.updated_at, finished_at=r.finished_at, error=r.error, parent_run_id=r.parent_run_id,
                kind=str(r.kind), waiting=gates.get(r.id, []),
                owner=OwnerSummary(id=r.owner.id, host=r.owner.host, pid=r.owner.pid, alive=alive,
                                   worker=r.owner.id.startswith(WORKER_PREFIX)) if r.owner else None))
        return out

    async def lineage(self, run_id: str) -> Lineage:
        """The tree of forks, rewinds and replays around a run: its root and every descendant."""
        root = await self.store.get_run(run_id)
        seen = {root.id}
        while root.parent_run_id and root.parent_run_id not in seen:
            seen.add(root.parent_run_id)
            root = await self.store.get_run(root.parent_run_id)

        async def node(run: RunRecord) -> Lineage:
            kids = await self.store.child_runs(run.id)
            return Lineage(run_id=run.id, kind=str(run.kind), status=str(run.status), parent_frame=run.parent_frame,
                           frames=run.frame, successor_run_id=run.successor_run_id,
                           children=[await node(k) for k in kids])

        return await node(root)

    async def diff(self, run_id: str, node: str, iteration: int | None = None) -> str:
        """What a step changed in its worktree, as a unified diff ("" when it changed nothing)."""
        from . import git

        recs = {it: r for it, r in (await self.store.node_records(run_id, node)).items()
                if r.data and r.data.get("commit") and (iteration is None or it == iteration)}
        if not recs:
            raise BadInput(f"step {node!r} of run {run_id} made no snapshot: only steps inside a Worktree have "
                           "file changes (`smithers show` lists the steps)")
        data = recs[max(recs)].data or {}
        if data.get("base") == data["commit"]:
            return ""
        run = await self.store.get_run(run_id)
        repo = await asyncio.to_thread(git.find_repo, run.workdir)
        return await asyncio.to_thread(git.diff, repo, data.get("base"), data["commit"])

    # --- watching other processes --------------------------------------------------------------
    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Notice decisions and cancel requests written by other processes: the store wakes this
        watcher (SQLite: its data version moved, one cheap query per poll interval; PostgreSQL: a
        NOTIFY naming the run), and each run concerned looks at what changed."""
        sub = await self.store.subscribe(self.poll_interval)
        try:
            while self.active:
                wake = await sub.wait(timeout=1.0)
                if wake is None:
                    continue
                for ex in list(self.active.values()):
                    if wake.concerns(ex.run_id):
                        try:
                            await ex.check_external()
                        except Exception:  # the watcher must outlive a transient database error
                            continue
        finally:
            sub.close()

    async def close(self) -> None:
        """Stop every run executing here, leaving each resumable (nothing is marked cancelled)."""
        runs = list(self.active.values())
        for ex in runs:
            ex.request_stop()
        if runs:
            await asyncio.wait([ex.finished for ex in runs], timeout=10)
        if self._watcher:
            self._watcher.cancel()

