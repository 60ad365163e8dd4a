"""Engine: hosts runs in this process — start, resume, cancel, decide, fork, rewind, replay."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from pydantic import ValidationError

from .attempt import StepResult, new_run_id, run_compute
from .dsl import WorkflowDef
from .errors import BadInput, InputInvalid, LeaseHeld, SourceChanged
from .lease import Owner, describe_owner, owner_alive
from .loader import load_target, source_hash
from .render import Ready, one_line_validation
from .context import TaskCtx
from .run import RunExecutor
from .events import EventBus
from .state import (CANCELLED, PENDING, RUN_CANCELLED, RUN_FAILED, RUN_FINISHED, RUN_REWOUND, RUN_RUNNING,
                    RUNNING, WAITING_APPROVAL, RunState)
from .store import Store, dumps

StepRunner = Callable[[RunExecutor, Ready, TaskCtx], Awaitable[Any]]

__all__ = ["Engine", "RunExecutor", "StepResult", "new_run_id"]


class Engine:
    """Hosts runs in this process. One Store (one connection), one event bus, one owner id."""

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

    # --- starting and resuming -----------------------------------------------------------------
    async def start(self, wf: WorkflowDef, target: str, input_data: Any = None, *, run_id: str | None = None,
                    workdir: Path | None = None, max_concurrency: int | None = None,
                    agent_override: str | None = None) -> "RunExecutor":
        """Create a run (frame 0), take its lease, and return its executor (not yet running).
        `agent_override` (e.g. "demo") replaces every agent of this run, here and on resume elsewhere."""
        if max_concurrency is not None and max_concurrency < 1:
            raise BadInput(f"--max-concurrency must be at least 1 (got {max_concurrency})")
        try:
            inp = wf.validate_input(input_data)
        except ValidationError as e:
            raise InputInvalid(f"invalid input for workflow {wf.name!r}: {one_line_validation(e)}; "
                               f"`smithers workflows --json` shows its input schema") from None
        run_id = run_id or new_run_id()
        if await self.store.fetchone("SELECT id FROM runs WHERE id=?", (run_id,)):
            raise BadInput(f"a run {run_id!r} already exists: choose another --run-id or resume it")
        now = time.time()
        override = self.agent_override or agent_override
        row = {"id": run_id, "workflow": wf.name, "target": target,
               "source_path": str(wf.source_path) if wf.source_path else None,
               "source_hash": source_hash(wf.source_path),
               "input": dumps(inp.model_dump(mode="json") if inp is not None else (input_data or {})),
               "status": RUN_RUNNING, "workdir": str((workdir or Path.cwd()).resolve()),
               "created_at": now, "updated_at": now, "frame": 0,
               "meta": dumps({"max_concurrency": max_concurrency or self.max_concurrency,
                              **({"agent_override": override} if override else {})}),
               **self.owner.columns(now)}
        ops = self.store.insert_run_ops(row)
        ops += Store.keyframe_ops(run_id, 0, RunState(), RUN_RUNNING)
        ops += [("INSERT INTO frames (run_id, frame, at, delta) VALUES (?,?,?,?)", [(run_id, 0, now, "{}")]),
                ("INSERT INTO events (run_id,frame,at,type,data) VALUES (?,?,?,?,?)",
                 [(run_id, 0, now, "run_started", dumps({"workflow": wf.name, "input": json.loads(row["input"])}))])]
        await self.store.transact(ops)
        return RunExecutor(self, row, wf, RunState())

    async def load(self, run_id: str, *, accept_changes: bool = False,
                   workflow: WorkflowDef | None = None) -> tuple[dict[str, Any], WorkflowDef]:
        run = await self.store.get_run(run_id)
        wf = workflow or load_target(run["target"])[0]
        now_hash = source_hash(wf.source_path)
        if run["source_hash"] and now_hash != run["source_hash"] and not accept_changes:
            raise SourceChanged(f"workflow {run['workflow']!r} changed since run {run_id} started "
                                f"({run['source_path']}): review the change, then resume with --accept-changes")
        run["_new_hash"] = now_hash
        return run, wf

    async def resume(self, run_id: str, *, force: bool = False, accept_changes: bool = False,
                     workflow: WorkflowDef | None = None) -> "RunExecutor":
        """Take over a run: its lease, its saved state; steps that were running run again.
        `workflow` overrides loading it from the recorded target (for workflows defined in memory)."""
        run = await self.store.get_run(run_id)
        if run["status"] == RUN_REWOUND:
            raise BadInput(f"run {run_id} was rewound; its successor is {run['successor_run_id']}: resume that one")
        if run["status"] in (RUN_FINISHED, RUN_CANCELLED):
            raise BadInput(f"run {run_id} is {run['status']}: nothing to resume (fork it to run it again: "
                           f"`smithers fork {run_id} --frame N`)")
        if run_id in self.active:
            return self.active[run_id]
        if run["owner_id"] and run["owner_id"] != self.owner.id and owner_alive(run) and not force:
            raise LeaseHeld(f"run {run_id} is being run by {describe_owner(run)}: wait for it, or "
                            f"`smithers resume {run_id} --force` if that process is stuck")
        run, wf = await self.load(run_id, accept_changes=accept_changes, workflow=workflow)
        now = time.time()
        cols = self.owner.columns(now)
        changes = {**cols, "status": RUN_RUNNING, "error": None, "updated_at": now, "cancel_requested": 0,
                   "finished_at": None}
        if run["_new_hash"] != run["source_hash"]:
            changes["source_hash"] = run["_new_hash"]
        sets = ",".join(f"{c}=?" for c in changes)
        counts = await self.store.transact([(f"UPDATE runs SET {sets} WHERE id=? AND owner_id IS ?",
                                             [(*changes.values(), run_id, run["owner_id"])])])
        if counts[0] != 1:
            fresh = await self.store.get_run(run_id)
            raise LeaseHeld(f"run {run_id} was taken over meanwhile by {describe_owner(fresh)}")
        was_failed = run["status"] == RUN_FAILED
        run.update(changes)
        state = await self.store.load_state(run_id)
        ex = RunExecutor(self, run, wf, state)
        ex.recover(was_failed=was_failed)
        for d in await self.store.decided_unapplied(run_id):  # decided while no process ran it
            ex.apply_decision(d)
        return ex

    async def _remove_worktrees(self, run_id: str) -> None:
        """A cancelled run nobody runs: remove its worktrees (keep=True ones stay)."""
        from . import git
        from .worktree import remove

        rows = await self.store.fetchall("SELECT node_id, iteration, data FROM nodes WHERE run_id=? AND kind='worktree'",
                                         (run_id,))
        for row in rows:
            data = json.loads(row["data"] or "{}")
            if data.get("path") and not data.get("keep") and not data.get("removed"):
                try:
                    await asyncio.to_thread(remove, data)
                except git.GitError:
                    continue
                data["removed"] = True
                await self.store.transact([("UPDATE nodes SET data=? WHERE run_id=? AND node_id=? AND iteration=?",
                                            [(dumps(data), run_id, row["node_id"], row["iteration"])])])

    # --- decisions from this process -----------------------------------------------------------
    async def cancel(self, run_id: str) -> str:
        """Ask a run to stop. Running here: it stops now. Elsewhere: its owner notices within a
        poll interval. Owned by nobody: it is marked cancelled directly."""
        run = await self.store.get_run(run_id)
        if run["status"] in (RUN_FINISHED, RUN_CANCELLED, RUN_FAILED, RUN_REWOUND):
            raise BadInput(f"run {run_id} is already {run['status']}: nothing to cancel")
        if run_id in self.active:
            self.active[run_id].request_cancel()
            return "cancelling"
        if run["owner_id"] and owner_alive(run):
            await self.store.transact([("UPDATE runs SET cancel_requested=1 WHERE id=?", [(run_id,)])])
            return "requested"
        now = time.time()
        await self._remove_worktrees(run_id)
        await self.store.transact([
            ("UPDATE runs SET status=?, cancel_requested=1, finished_at=?, updated_at=?, owner_id=NULL WHERE id=?",
             [(RUN_CANCELLED, now, now, run_id)]),
            ("UPDATE nodes SET state=? WHERE run_id=? AND state IN (?,?,?)",
             [(CANCELLED, run_id, RUNNING, PENDING, WAITING_APPROVAL)]),
            ("INSERT INTO events (run_id,frame,at,type,data) VALUES (?,?,?,?,?)",
             [(run_id, run["frame"], now, "run_cancelled", dumps({"by": "cancel"}))])])
        return "cancelled"

    async def decide(self, run_id: str, node: str | None, iteration: int | None, approved: bool,
                     by: str | None = None, note: str | None = None) -> dict[str, Any]:
        """Approve or deny a gate; a run executing here goes on at once."""
        from .approval import decide

        row = await decide(self.store, run_id, node, iteration, approved, by, note)
        ex = self.active.get(run_id)
        if ex is not None:
            ex.apply_decision(row)
            ex.wakeup()
        return row

    async def fork(self, run_id: str, frame: int | None, *, input: Any = None, reset: Any = (),
                   new_id: str | None = None) -> dict[str, Any]:
        from .timetravel import fork

        return await fork(self.store, run_id, frame, input=input, reset=reset, new_id=new_id)

    async def rewind(self, run_id: str, frame: int, *, new_id: str | None = None) -> dict[str, Any]:
        """A fork that takes over: the original is kept, read-only, as `rewound`."""
        from .timetravel import fork

        if run_id in self.active:
            ex = self.active[run_id]
            ex.request_cancel()
            await asyncio.wait([ex.finished])
        return await fork(self.store, run_id, frame, new_id=new_id, kind="rewind")

    async def replay(self, run_id: str, frame: int = 0, *, new_id: str | None = None) -> dict[str, Any]:
        """Re-execute everything after `frame` in a new run, to compare."""
        from .timetravel import fork

        return await fork(self.store, run_id, frame, new_id=new_id, kind="replay")

    # --- watching other processes --------------------------------------------------------------
    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Notice decisions and cancel requests written by other processes (PRAGMA data_version:
        one cheap query per poll interval, nothing when nothing changed)."""
        seen = await self.store.data_version()
        while self.active:
            await asyncio.sleep(self.poll_interval)
            try:
                version = await self.store.data_version()
                if version == seen:
                    continue
                seen = version
                for ex in list(self.active.values()):
                    await ex.check_external()
            except Exception:  # the watcher must outlive a transient database error
                continue

    async def close(self) -> None:
        """Stop every run executing here, leaving each resumable (nothing is marked cancelled)."""
        runs = list(self.active.values())
        for ex in runs:
            ex.request_stop()
        if runs:
            await asyncio.wait([ex.finished for ex in runs], timeout=10)
        if self._watcher:
            self._watcher.cancel()
