"""Engine: the one façade the app, the CLI and the APIs use. It hosts runs in this process
(start, resume, cancel, decide, fork, rewind, replay) and answers about any run (report,
outline, frames, lineage, runs, diff). A behaviour lives here once and every face gets it."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncGenerator, Awaitable, Callable

from pydantic import BaseModel, ValidationError

from .attempt import StepResult, new_run_id, run_compute
from .budget import Budget
from .context import TaskCtx, resolve_type
from .dsl import Signal, WorkflowDef
from .errors import (ApprovalConflict, BadInput, LeaseHeld, SmithersError, SourceChanged, WorkflowNotFound,
                     one_line_validation)
from .events import Event, EventBus
from .lease import WORKER_PREFIX, Owner, describe_owner, owner_alive, shown_status
from .loader import load_target, source_hash
from .metrics import Metrics, collect
from .outline import Outline, outline
from .records import ApprovalRecord, FrameRecord, NewRun, RunRecord, SignalRecord
from .render import Ready
from .report import RunReport, build_report
from .run import RunExecutor
from .state import (FINAL_RUN_STATES, RUN_CANCELLED, RUN_FAILED, RUN_FINISHED, RUN_REWOUND, RUN_RUNNING, WAITING,
                    Key, RunKind, RunState, RunStatus, key_label)
from .store import Store
from .timetravel import ForkInfo, check_fork, plan_fork

StepRunner = Callable[[RunExecutor, Ready, TaskCtx], Awaitable[Any]]

__all__ = ["Decided", "Engine", "GateView", "Lineage", "OwnerSummary", "Queued", "RunExecutor", "RunSummary",
           "SignalSent", "StepResult", "WorkerView", "new_run_id"]


class GateView(BaseModel):
    node_id: str
    iteration: int
    message: str
    mode: str = "approve"  # approve | select | rank | human (a human task)


class WaitView(BaseModel):
    """A step of a run in a durable wait that needs no person: a signal, a timer, a parked sub-workflow."""

    node_id: str
    iteration: int
    kind: str  # signal | timer | subflow
    name: str | None = None  # the signal's name
    due: float | None = None  # the timer's (or the timeout's) due time
    child: str | None = None  # the sub-workflow's run


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
    waits: list[WaitView] = []  # present only when the run has some

    def json_dict(self) -> dict[str, Any]:
        """The `ps --json` shape (a gate's mode, waits: only where they apply)."""
        return self.model_dump(mode="json", exclude_unset=True)


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
class SignalSent:
    """A signal recorded for a run; whether a Signal step of its workflow has that name (`matched`)
    and waits for it now (`waiting`); who will take it (the owner, this process, or a resume)."""

    signal: SignalRecord
    matched: bool
    waiting: bool
    owner_alive: bool
    executor: RunExecutor | None = None

    def json_dict(self) -> dict[str, Any]:
        s = self.signal
        return {"run_id": s.run_id, "name": s.name, "seq": s.seq, "by": s.sent_by, "matched": self.matched,
                "waiting": self.waiting, "owner_alive": self.owner_alive}


@dataclass
class Decided:
    """A decision recorded, and what happens next: the owner goes on (`owner`), this process
    continues the run (`executor`, to be executed by the caller), or it waits for a resume."""

    gate: ApprovalRecord
    owner_alive: bool
    executor: RunExecutor | None = None

    def json_dict(self) -> dict[str, Any]:
        g = self.gate
        out = {"run_id": g.run_id, "node_id": g.node_id, "iteration": g.iteration, "decision": g.decision,
               "by": g.decided_by, "note": g.note, "owner_alive": self.owner_alive}
        if g.answer is not None:
            out["answer"] = g.answer
        return out


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
        from .subflow import run_subflow
        from .worktree import run_worktree

        self.step_runners: dict[str, StepRunner] = {"compute": run_compute, "worktree": run_worktree,
                                                    "agent": run_agent, "subflow": run_subflow}
        # How a Subflow's workflow given by name is found (beyond the parent's own module): the CLI
        # and the app set it to their resolver (built-in pack and project workflows).
        self.resolver: Callable[[str], tuple[WorkflowDef, str]] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._hosted: set[asyncio.Task[str]] = set()
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

    def resolve_workflow(self, ref: Any, parent: WorkflowDef | None = None) -> tuple[WorkflowDef, str]:
        """A Subflow's workflow: a @workflow object, a target (`file.py[:name]`, `module:M:name`), or
        a name: a workflow of the parent's own module first, then the engine's resolver."""
        import sys

        from .loader import load_target, workflows_in
        from .subflow import workflow_target

        if isinstance(ref, WorkflowDef):
            return ref, workflow_target(ref)
        if ref.startswith(("module:", "file:")) or ref.endswith(".py") or ".py:" in ref:
            return load_target(ref)
        if parent is not None:
            mod = sys.modules.get(parent.builder.__module__)
            found = workflows_in(mod) if mod is not None else {}
            if ref in found:
                wf = found[ref]
                wf.source_path = wf.source_path or parent.source_path
                return wf, workflow_target(wf)
        if self.resolver is not None:
            return self.resolver(ref)
        raise WorkflowNotFound(f"no workflow named {ref!r} beside the parent workflow: pass the @workflow function, "
                               "or a target such as path/to/file.py:name")

    # --- starting and resuming -----------------------------------------------------------------
    async def start(self, wf: WorkflowDef, target: str, input_data: Any = None, *, run_id: str | None = None,
                    workdir: Path | None = None, max_concurrency: int | None = None,
                    parent: tuple[str, Key, int] | None = None, budget: Budget | None = None,
                    agent_override: str | None = None, agent: str | None = None) -> RunExecutor:
        """Create a run (frame 0), take its lease, and return its executor (not yet running).
        `parent` (run id, step, frame) makes it a sub-workflow's run; `budget` bounds its spend;
        `agent_override` (or `agent`, e.g. "demo") replaces every agent of this run, as `--agent` does."""
        new = await self._new_run(wf, target, input_data, run_id, workdir, max_concurrency, parent, budget,
                                  agent_override or agent)
        await self.store.create_run(new, self.owner, time.time())
        run = await self.store.get_run(new.id)
        return RunExecutor(self, run, wf, RunState())

    async def queue(self, wf: WorkflowDef, target: str, input_data: Any = None, *, run_id: str | None = None,
                    workdir: Path | None = None, max_concurrency: int | None = None, budget: Budget | None = None,
                    agent_override: str | None = None, agent: str | None = None) -> Queued:
        """Record a run as `queued` (frame 0) without running it: a worker picks it up (detached
        runs, from the CLI, the app and the APIs alike). Validated exactly as `start` validates."""
        new = await self._new_run(wf, target, input_data, run_id, workdir, max_concurrency, None, budget,
                                  agent_override or agent)
        new.status = RunStatus.QUEUED
        await self.store.create_run(new, None, time.time())
        return Queued(run_id=new.id, workers=len(await self.workers()))

    async def _new_run(self, wf: WorkflowDef, target: str, input_data: Any, run_id: str | None,
                       workdir: Path | None, max_concurrency: int | None, parent: tuple[str, Key, int] | None,
                       budget: Budget | None, agent_override: str | None) -> NewRun:
        if max_concurrency is not None and max_concurrency < 1:
            raise BadInput(f"--max-concurrency must be at least 1 (got {max_concurrency})")
        inp = wf.check_input(input_data)
        run_id = run_id or new_run_id()
        if await self.store.run_exists(run_id):
            raise BadInput(f"a run {run_id!r} already exists: choose another --run-id or resume it")
        override = agent_override or self.agent_override
        meta: dict[str, Any] = {"max_concurrency": max_concurrency or self.max_concurrency,
                                **({"agent_override": override} if override else {})}
        if budget is not None:
            meta["budget"] = budget.as_dict()
        if parent is not None:
            meta["parent_step"] = [parent[1][0], parent[1][1]]
        return NewRun(id=run_id, workflow=wf.name, target=target,
                      source_path=str(wf.source_path) if wf.source_path else None,
                      source_hash=source_hash(wf.source_path),
                      input=inp.model_dump(mode="json") if inp is not None else (input_data or {}),
                      workdir=str((workdir or Path.cwd()).resolve()), meta=meta,
                      kind=RunKind.SUBFLOW if parent else RunKind.RUN,
                      parent_run_id=parent[0] if parent else None, parent_frame=parent[2] if parent else None)

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
                     workflow: WorkflowDef | None = None, nested: bool = False) -> RunExecutor:
        """Take over a run: its lease, its saved state; steps that were running run again.
        `workflow` overrides loading it from the recorded target (for workflows defined in memory).
        A sub-workflow's run whose parent waits on it (and nobody runs the parent) is continued by
        resuming the parent, which drives it (`nested`: the parent's own Subflow step asks)."""
        run = await self.store.get_run(run_id)
        if not nested and run.kind == RunKind.SUBFLOW and run.parent_run_id and run_id not in self.active:
            parent = await self.store.get_run(run.parent_run_id)
            if parent.status in (RunStatus.RUNNING, RunStatus.WAITING) and parent.id not in self.active \
                    and not owner_alive(parent.owner):
                return await self.resume(parent.id, force=force, accept_changes=accept_changes)
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
        """After a take-over: steps in flight run again, decisions made while no process ran the run
        are applied, spend so far counts against budgets."""
        ex.recover(was_failed=was_failed)
        try:
            ex._build()  # the models of human tasks, to validate answers decided while no process ran it
        except Exception:
            pass  # the loop reports a broken workflow body
        for d in await self.store.decided_unapplied(ex.run_id):  # decided while no process ran it
            ex.apply_decision(d)
        if ex.budget_meta is not None or ex.run_budget is not None:
            for key, (tokens, usd) in (await self.store.usage_by_node(ex.run_id)).items():
                ex.count_usage(key, {"tokens_in": tokens, "cost_usd": usd})

    async def execute(self, ex: RunExecutor, *, stop_when_waiting: bool = True,
                      on_next: Callable[[RunExecutor], None] | None = None) -> tuple[str, RunExecutor]:
        """Execute a run, and the runs it continued as (ContinueAsNew), here: (last status, last executor)."""
        while True:
            status = await ex.execute(stop_when_waiting=stop_when_waiting)
            if ex.continued_as is None or status != RUN_FINISHED:
                return status, ex
            ex = await self.resume(ex.continued_as, nested=True)
            if on_next is not None:
                on_next(ex)

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

    def host(self, ex: RunExecutor) -> "asyncio.Task[str]":
        """Execute a run in the background of this process until it ends. Waiting for a human does
        not end it: a decision from anywhere (this process, the CLI, the app) wakes it."""
        task = asyncio.create_task(ex.execute(stop_when_waiting=False), name=f"run {ex.run_id}")
        self._hosted.add(task)
        task.add_done_callback(self._hosted_done)
        return task

    def _hosted_done(self, task: "asyncio.Task[str]") -> None:
        self._hosted.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the run's outcome is in the store (a lost lease, a stop...)

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
                     workflow: WorkflowDef | None = None, choice: str | None = None,
                     rank: list[str] | None = None) -> Decided:
        """Approve or deny a gate (a select gate with its `choice`, a rank gate with its `rank`). A
        run executing here goes on at once; one owned elsewhere is told through the database. With
        `resume`, a run nobody owns is taken over by this process: the returned `executor` is ready
        to execute."""
        from .approval import decide

        gate = await decide(self.store, run_id, node, iteration, approved, by, note, choice=choice, rank=rank)
        return await self._after_decision(gate, resume, workflow)

    async def answer(self, run_id: str, node: str | None, iteration: int | None, data: Any, by: str | None = None,
                     note: str | None = None, *, resume: bool = False, workflow: WorkflowDef | None = None) -> Decided:
        """Answer a human task with data that must fit its model (BadInput naming the field, writing
        nothing, otherwise). Recorded once, like a decision; a node that is not waiting for an answer
        (unknown, not a human task, already answered) is BadInput."""
        from .approval import check_allowed, default_user, find_gate

        try:
            gate = await find_gate(self.store, run_id, node, iteration, human=True)
        except ApprovalConflict as e:
            raise BadInput(f"{e}: it waits for no answer; nothing was written") from None
        what = key_label(gate.node_id, gate.iteration)
        if gate.mode != "human":
            raise BadInput(f"{what!r} of run {run_id} is a gate, not a human task: decide it with "
                           f"`smithers approve {run_id} {gate.node_id}` or `smithers deny`")
        by = by or default_user()
        check_allowed(run_id, gate, by)
        model = await self.answer_model(run_id, gate.node_id, workflow)
        try:
            value = model.model_validate(data).model_dump(mode="json")
        except ValidationError as e:
            raise BadInput(f"the answer to {what!r} of run {run_id} does not fit {model.__name__}: "
                           f"{one_line_validation(e)}; nothing was written") from None
        won, row = await self.store.decide(run_id, gate.node_id, gate.iteration, True, by, note, time.time(),
                                           answer=value, decision="answered")
        if not won:
            from .approval import _already

            raise BadInput(f"{_already(run_id, row)}: the first answer counts; nothing was written")
        return await self._after_decision(row, resume, workflow)

    async def answer_model(self, run_id: str, node_id: str, workflow: WorkflowDef | None = None) -> type[BaseModel]:
        """The pydantic model a human task's answer must fit (for a form in the app, or checking an
        answer); BadInput when neither its recorded type nor its workflow can be loaded here."""
        gate = next((g for g in await self.store.approvals(run_id, open_only=False) if g.node_id == node_id
                     and g.mode == "human"), None)
        model = resolve_type(gate.request.get("output") if gate is not None else None)
        if model is not None:
            return model
        found = await self._outline_now(run_id, workflow)
        model = getattr(found.nodes.get(node_id) if found is not None else None, "output", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise BadInput(f"cannot check an answer to {node_id!r} of run {run_id}: its workflow cannot be loaded "
                           "here (`smithers show` says where it lives)")
        return model

    async def _outline_now(self, run_id: str, workflow: WorkflowDef | None = None) -> Outline | None:
        """The run's workflow rendered over its state now (None when it cannot be loaded here)."""
        run = await self.store.get_run(run_id)
        try:
            wf = workflow or (await asyncio.to_thread(self.workflow, run.target, run.source_path))[0]
        except Exception:
            return None
        state = await self.store.load_state(run_id)
        return await asyncio.to_thread(outline, wf, run.id, run.input, state, run.workdir)

    async def _after_decision(self, gate: ApprovalRecord, resume: bool, workflow: WorkflowDef | None) -> Decided:
        run_id = gate.run_id
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

    # --- signals -------------------------------------------------------------------------------
    async def signal(self, run_id: str, name: str, payload: Any, by: str | None = None, *, resume: bool = False,
                     workflow: WorkflowDef | None = None) -> SignalSent:
        """Send a signal to a run that is queued, running or waiting. When a Signal step of its
        workflow has this name, the payload must fit its model (BadInput naming the field, writing
        nothing). A live run accepts any name: a signal no step waits for yet is kept, first in
        first out, for the step that asks for it later."""
        run = await self.store.get_run(run_id)
        if not run.status.active:
            raise BadInput(f"run {run_id} is {run.status}: it takes no more signals (only queued, running or waiting "
                           "runs do); nothing was sent")
        if not name or "\n" in name:
            raise BadInput("a signal's name is a non-empty line: `smithers signal RUN NAME --data JSON`")
        node = await self._signal_node(run_id, name, workflow)
        if isinstance(node, Signal) and node.output is not None:
            try:
                node.output.model_validate(payload)
            except ValidationError as e:
                raise BadInput(f"signal {name!r} of run {run_id}: the payload does not fit {node.output.__name__}: "
                               f"{one_line_validation(e)}; nothing was sent") from None
        sent = await self.store.send_signal(run_id, name, payload, by, time.time())
        waiting = any(rec.kind == "signal" and rec.state == WAITING and (rec.data or {}).get("name") == name
                      for rec in (await self.store.load_state(run_id)).nodes.values())
        ex = self.active.get(run_id)
        if ex is not None:
            ex.signals_stale = True
            ex.wakeup()
            return SignalSent(sent, node is not None, waiting, True, None)
        run = await self.store.get_run(run_id)
        alive = owner_alive(run.owner)
        executor = None
        if resume and not alive and run.status in (RunStatus.WAITING, RunStatus.RUNNING, RunStatus.QUEUED):
            executor = await self.resume(run_id, workflow=workflow)
        return SignalSent(sent, node is not None, waiting, alive, executor)

    async def _signal_node(self, run_id: str, name: str, workflow: WorkflowDef | None) -> Signal | None:
        """The Signal step with this name in the run's workflow as rendered now (None: none yet)."""
        found = await self._outline_now(run_id, workflow)
        nodes = found.nodes.values() if found is not None else ()
        return next((n for n in nodes if isinstance(n, Signal) and n.name == name), None)

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
        info = await self.fork(run_id, frame, new_id=new_id, kind=RunKind.REWIND)
        for child in await self.store.child_runs(run_id):  # the original's sub-workflows end with it
            if child.kind == RunKind.SUBFLOW and not child.status.final:
                try:
                    await self.cancel(child.id)
                except BadInput:
                    pass
        return info

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

    async def events(self, run_id: str, since: int = 0, limit: int = 1000) -> list[Event]:
        """Stored events of a run with seq > since, in order (at most `limit`)."""
        await self.store.get_run(run_id)  # RunNotFound for an unknown run, not an empty list
        return await self.store.events(run_id, since, limit)

    def follow(self, run_id: str, since: int = 0, *, idle: float | None = None,
               until_final: bool = True) -> AsyncGenerator[Event, None]:
        """Events of a run with seq > since as they are written, here or by any other process, until
        the run ends (or `idle` seconds pass without one): engine.follow.follow."""
        from .follow import follow

        return follow(self.store, self.bus, run_id, since, poll=self.poll_interval, idle=idle,
                      until_final=until_final)

    async def metrics(self) -> Metrics:
        """Runs by status, steps, attempts, usage, queue depth and waiting gates, over every run."""
        return await collect(self.store, set(self.active))

    async def runs(self, status: str | None = None, limit: int = 500) -> list[RunSummary]:
        """Runs, newest first, each with its waiting gates and who runs it. `status` may be a shown
        status (`interrupted`: running, but nobody alive runs it)."""
        stored = RunStatus.RUNNING if status == RunStatus.INTERRUPTED else status
        runs = await self.store.list_runs(stored, limit)
        gates: dict[str, list[GateView]] = {}
        for g in await self.store.approvals(None, open_only=True):
            gates.setdefault(g.run_id, []).append(GateView(node_id=g.node_id, iteration=g.iteration,
                                                           message=g.message,
                                                           **({"mode": g.mode} if g.mode != "approve" else {})))
        waits: dict[str, list[WaitView]] = {}
        for w in await self.store.open_waits():
            waits.setdefault(w.run_id, []).append(WaitView(node_id=w.node_id, iteration=w.iteration, kind=w.kind,
                                                           **{k: w.data[k] for k in ("name", "due", "child")
                                                              if w.data.get(k) is not None}))
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
                                   worker=r.owner.id.startswith(WORKER_PREFIX)) if r.owner else None,
                **({"waits": waits[r.id]} if r.id in waits else {})))
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
        hosted = list(self._hosted)
        for ex in runs:
            ex.request_stop()
        if runs:
            await asyncio.wait([ex.finished for ex in runs], timeout=10)
        if hosted:
            await asyncio.wait(hosted, timeout=10)
        if self._watcher:
            self._watcher.cancel()

