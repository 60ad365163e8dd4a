"""What a coding agent can do, written once for every agent-facing face: the MCP tools
(mcp_server.py) and the HTTP routes (api.py) are each a thin line over one method here, and every
method is a thin line over the Engine façade. Results are the CLI's `--json` shapes:
`show --json` (RunReport.json_dict), `ps --json` (RunSummary), `fork --json` (ForkInfo),
`approve --json` (Decided.json_dict), `workflows --json`, `frames --json`, `logs --json` (Event).

When a worker is running (`smithers up`), runs started here are queued for the workers and
decisions, answers and signals leave the run to them, so a run outlives the agent's session.
Without one, runs are hosted by this process (Engine.host) until they end; waiting for a human
costs nothing and a decision from anywhere wakes them. `_workers_up` and `_launch` are the one
place that decides where a run goes on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.check import check_workflow
from engine.errors import BadInput, WorkflowNotFound
from engine.runtime import Engine, RunExecutor
from engine.state import RunStatus

from . import authoring

MAX_WAIT_S = 60.0


class Operations:
    def __init__(self, engine: Engine, project: Path | None = None, *, decided_by: str | None = None) -> None:
        self.engine = engine
        self.project = (project or Path.cwd()).resolve()
        self.decided_by = decided_by  # who decides gates when the caller does not say (default: the OS user)

    # --- workflows -------------------------------------------------------------------------------
    async def list_workflows(self) -> list[dict[str, Any]]:
        """`smithers workflows --json`: built-in and project workflows with their input schemas."""
        from .targets import all_workflows, describe

        return [describe(wf, target) for wf, target in all_workflows(self.project).values()]

    async def describe_workflow(self, name: str) -> dict[str, Any]:
        """One workflow: what `workflows --json` says of it, its source file, and the steps its first
        render shows when its input has defaults enough to render."""
        from .targets import all_workflows, describe

        found = all_workflows(self.project)
        if name not in found:
            raise WorkflowNotFound(f"unknown workflow {name!r}: list_workflows shows the built-in and project "
                                   f"workflows ({', '.join(sorted(found)) or 'none'})")
        wf, target = found[name]
        out = describe(wf, target)
        out["source_path"] = str(wf.source_path) if wf.source_path else None
        try:
            out["steps"] = check_workflow(wf, None, self.project).steps
        except BadInput:  # its input has required fields: nothing to render it with
            out["steps"] = None
        return out

    async def validate_workflow(self, source: str, sample_input: Any = None,
                                file: str | None = None) -> dict[str, Any]:
        """Check a workflow's source without saving it."""
        checked = authoring.validate(self.project, source, sample_input, file)
        return {"valid": True, **checked.model_dump()}

    async def write_workflow(self, file: str, source: str, sample_input: Any = None,
                             overwrite: bool = False) -> dict[str, Any]:
        """Check, then save as `.smithers/workflows/<file>.py`; nothing is saved when the check fails."""
        path, checked = authoring.write(self.project, file, source, sample_input, overwrite)
        return {"path": str(path.relative_to(self.project)), **checked.model_dump()}

    # --- runs ------------------------------------------------------------------------------------
    async def start_run(self, workflow: str, input: Any = None, agent: str | None = None) -> dict[str, Any]:
        """Start a workflow (a name from list_workflows, or path/to/file.py[:name]) with its input."""
        from .targets import resolve

        if input is not None and not isinstance(input, dict):
            raise BadInput(f"input must be a JSON object (got {type(input).__name__}): "
                           "describe_workflow shows the input schema")
        wf, target = resolve(workflow)
        if await self._workers_up():
            queued = await self.engine.queue(wf, target, input, workdir=self.project, agent=agent)
            return {"run_id": queued.run_id, "workflow": wf.name, "hosted": "worker", "workers": queued.workers}
        ex = await self.engine.start(wf, target, input, workdir=self.project, agent=agent)
        return {"run_id": ex.run_id, "workflow": wf.name, **self._launch(ex)}

    async def get_run(self, run_id: str, frame: int | None = None) -> dict[str, Any]:
        """`smithers show --json`: status, input, usage, gates (decision null = waiting), every step."""
        rid = await self.find_run(run_id)
        return (await self.engine.report(rid, frame)).json_dict()

    async def list_runs(self, status: str | None = None) -> list[dict[str, Any]]:
        """`smithers ps --json`: runs, newest first, each with its waiting gates and owner."""
        if status is not None and status not in set(RunStatus):
            raise BadInput(f"unknown status {status!r}: one of {', '.join(RunStatus)}")
        return [r.json_dict() for r in await self.engine.runs(status)]

    async def get_events(self, run_id: str, since: int = 0, wait: float = 0, limit: int = 200) -> dict[str, Any]:
        """Events with seq > since (`logs --json` items). With `wait` > 0 and nothing new yet, waits up
        to that many seconds for the next event. `next_since` is the seq to ask from next time; `more`
        says the limit cut the answer short. Every event up to the `status` given is in the answer
        (or, with `more`, in the next ones)."""
        rid = await self.find_run(run_id)
        if not 1 <= limit <= 1000:
            raise BadInput(f"limit must be 1..1000 (got {limit})")
        if wait < 0 or wait > MAX_WAIT_S:
            raise BadInput(f"wait must be 0..{MAX_WAIT_S:.0f} seconds (got {wait})")
        events = await self.engine.events(rid, since, limit)
        if not events and wait:
            follower = self.engine.follow(rid, since, idle=wait)
            try:
                async for _ in follower:
                    break
            finally:
                await follower.aclose()
        # the status first, then the events: every event up to that status is in the answer, so a
        # client that reads until the run waits or ends misses nothing
        report = await self.engine.report(rid)
        events = await self.engine.events(rid, since, limit)
        return {"run_id": rid, "status": report.status,
                "waiting": [{"node_id": g.node_id, "iteration": g.iteration, "message": g.message}
                            for g in report.waiting_gates()],
                "events": [e.model_dump(mode="json") for e in events],
                "next_since": events[-1].seq if events else since,
                "more": len(events) == limit}  # the limit was reached: ask again from next_since

    async def decide(self, run_id: str, approved: bool, node: str | None = None, iteration: int | None = None,
                     note: str | None = None, by: str | None = None, choice: str | None = None,
                     rank: list[str] | None = None) -> dict[str, Any]:
        """Approve or deny a waiting gate (node may be left out when exactly one waits); a select gate
        takes its `choice`, a rank gate its `rank`. The first decision wins; a later one is refused
        saying who decided. A run nobody runs goes on here."""
        rid = await self.find_run(run_id)
        d = await self.engine.decide(rid, node, iteration, approved, by or self.decided_by, note, resume=not await self._workers_up(),
                                     choice=choice, rank=rank)
        return self._went_on(d, d.json_dict())

    async def answer(self, run_id: str, data: Any, node: str | None = None, iteration: int | None = None,
                     note: str | None = None, by: str | None = None) -> dict[str, Any]:
        """Answer a human task with data fitting its model (`smithers answer --json`). Recorded once;
        a bad answer is refused naming the field, writing nothing."""
        rid = await self.find_run(run_id)
        d = await self.engine.answer(rid, node, iteration, data, by or self.decided_by, note, resume=not await self._workers_up())
        return self._went_on(d, d.json_dict())

    async def signal(self, run_id: str, name: str, data: Any = None, by: str | None = None) -> dict[str, Any]:
        """Send a signal to a queued, running or waiting run (`smithers signal --json`): a payload a
        Signal step waits for must fit its model; a name no step waits for yet is kept for later."""
        rid = await self.find_run(run_id)
        sent = await self.engine.signal(rid, name, data, by or self.decided_by, resume=not await self._workers_up())
        return self._went_on(sent, sent.json_dict())

    def _went_on(self, result: Any, out: dict[str, Any]) -> dict[str, Any]:
        """A run nobody ran that this decision (answer, signal) moves on goes on in this process."""
        if result.executor is not None:
            self._launch(result.executor)
            out["owner_alive"] = True  # this process runs it now
        return out

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """`smithers cancel --json`: {"run_id", "result"}: cancelled, or requested when its owner (another
        process) has not confirmed within a few seconds."""
        rid = await self.find_run(run_id)
        here = self.engine.active.get(rid)
        what = await self.engine.cancel(rid)
        if what == "cancelling" and here is not None:
            await here.finished
            what = "cancelled"
        elif what == "requested":
            follower = self.engine.follow(rid, idle=5.0)
            try:
                async for _ in follower:
                    pass
            finally:
                await follower.aclose()
            if (await self.engine.report(rid)).status == RunStatus.CANCELLED:
                what = "cancelled"
        return {"run_id": rid, "result": what}

    async def resume(self, run_id: str, force: bool = False, accept_changes: bool = False) -> dict[str, Any]:
        """Continue a run from its last saved frame (finished steps never run again)."""
        rid = await self.find_run(run_id)
        ex = await self.engine.resume(rid, force=force, accept_changes=accept_changes)
        return {"run_id": rid, "from_frame": ex.frame, **self._launch(ex)}

    async def fork(self, run_id: str, frame: int, input: Any = None, reset: list[str] | None = None,
                   run: bool = False) -> dict[str, Any]:
        """`smithers fork --json`: a new run from a frame, carrying every output valid there."""
        rid = await self.find_run(run_id)
        return await self._then(await self.engine.fork(rid, frame, input=input, reset=reset or ()), run)

    async def rewind(self, run_id: str, frame: int, run: bool = False) -> dict[str, Any]:
        """`smithers rewind --json`: a fork that takes over; the original is kept, read-only, rewound."""
        rid = await self.find_run(run_id)
        return await self._then(await self.engine.rewind(rid, frame), run)

    async def replay(self, run_id: str, frame: int = 0, run: bool = False) -> dict[str, Any]:
        """`smithers replay --json`: re-execute everything after a frame in a new run."""
        rid = await self.find_run(run_id)
        return await self._then(await self.engine.replay(rid, frame), run)

    async def list_frames(self, run_id: str, since: int = 0) -> list[dict[str, Any]]:
        """`smithers frames --json`: every frame (state transition) and what changed in it."""
        from .cli import _frame_items

        rid = await self.find_run(run_id)
        return _frame_items(await self.engine.frames(rid, since))

    async def diff(self, run_id: str, node: str, iteration: int | None = None) -> dict[str, Any]:
        """What a step inside a Worktree changed in its files, as a unified diff."""
        rid = await self.find_run(run_id)
        return {"run_id": rid, "node": node, "iteration": iteration,
                "diff": await self.engine.diff(rid, node, iteration)}

    # --- helpers ---------------------------------------------------------------------------------
    async def _workers_up(self) -> bool:
        """A live worker takes queued runs and runs a decision moved on (the claim rule)."""
        return bool(await self.engine.workers())

    def _launch(self, ex: RunExecutor) -> dict[str, Any]:
        """Where a run this process took (started, resumed, decided) goes on: hosted here until it ends."""
        self.engine.host(ex)
        return {"hosted": "here"}

    async def _then(self, info: Any, run: bool) -> dict[str, Any]:
        """A fork, rewind or replay is queued; with `run` it goes on here unless a worker takes it.
        The answer is `fork --json`'s shape either way."""
        if run and not await self._workers_up():
            self._launch(await self.engine.resume(info.run_id))
        out: dict[str, Any] = info.model_dump()
        return out

    async def find_run(self, run_id: str) -> str:
        if not isinstance(run_id, str) or not run_id.strip():
            raise BadInput("run_id is empty: list_runs shows the runs")
        return await self.engine.store.find_run(run_id.strip())
