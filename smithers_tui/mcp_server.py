"""`smithers mcp`: a Model Context Protocol server over stdio (the official `mcp` SDK), so a coding
agent can write a workflow, start it, watch it, approve and rewind it.

Every tool is one line over `Operations` (shared with the HTTP API); its name is a contract that
agents' configurations rely on. A tool error reaches the model as one clear line (bad arguments
name the field), never a traceback. Resources: the runs (`smithers://runs`,
`smithers://runs/{run_id}`) and the workflow-writing guide (`smithers://guide`, also the prompt
`write_workflow`). Runs started here go to the workers when one is running, else are hosted by this process.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError, UnexpectedToolError
from pydantic import Field, ValidationError

from engine.errors import RunNotFound, SmithersError, one_line_validation

from .guide import guide_text
from .operations import Operations

log = logging.getLogger("smithers.mcp")

INSTRUCTIONS = """Smithers runs durable workflows for AI agents: Python files under .smithers/workflows/ whose
@workflow function returns a tree of steps (Task, Sequence, Parallel, Branch, Loop, Approval, Worktree).
Read the resource smithers://guide (or the prompt write_workflow) before writing one. Typical use:
validate_workflow -> write_workflow -> start_run -> get_events(wait=...) until the run waits or ends ->
approve/deny its gate -> get_run for outputs. fork/rewind/replay go back to any frame (list_frames)."""

RunId = Annotated[str, Field(description="the run's id (an unambiguous prefix is enough)")]
Node = Annotated[str | None, Field(description="the gate's step id; leave out when exactly one gate waits")]
Iteration = Annotated[int | None, Field(description="the gate's loop iteration, when it waits in several")]
Frame = Annotated[int, Field(description="a frame number (list_frames lists them; 0 is the start)", ge=0)]
RunNow = Annotated[bool, Field(description="start the new run at once (else it waits for resume)")]
Source = Annotated[str, Field(description="the whole Python source of the workflow file")]
Sample = Annotated[dict[str, Any] | None, Field(
    description="an input to render the workflow with, as start_run would pass it (default {})")]


class SmithersMCP(MCPServer):
    """MCPServer whose tool errors are one line a model can act on."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            raise ToolError(tool_error(name, e)) from None


def tool_error(name: str, e: ToolError) -> str:
    cause = e.__cause__
    while isinstance(cause, ToolError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, ValidationError):
        return f"{name}: bad arguments: {one_line_validation(cause)} (the tool's input schema says what it takes)"
    if isinstance(cause, SmithersError):
        return f"{name}: {cause}"
    if isinstance(e, UnexpectedToolError) and cause is not None:
        log.error("tool %s failed", name, exc_info=cause)
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        return f"{name} failed: {type(cause).__name__}{': ' + text if text else ''}"
    return str(e)


def build_server(ops: Operations) -> SmithersMCP:
    """The server, its tools bound to `ops`. Add a tool: one function here over one Operations method."""
    server = SmithersMCP("smithers", instructions=INSTRUCTIONS, version=_version(), log_level="WARNING")

    # --- workflows -------------------------------------------------------------------------------
    @server.tool(name="list_workflows")
    async def list_workflows() -> dict[str, Any]:
        """List the workflows this project can run (built-in and .smithers/workflows/*.py), each with its
        name, description and JSON input schema."""
        return {"workflows": await ops.list_workflows()}

    @server.tool(name="describe_workflow")
    async def describe_workflow(name: Annotated[str, Field(description="a workflow name from list_workflows")]
                                ) -> dict[str, Any]:
        """Describe one workflow: description, input schema, source file, and its step ids."""
        return await ops.describe_workflow(name)

    @server.tool(name="validate_workflow")
    async def validate_workflow(source: Source, sample_input: Sample = None,
                                file: Annotated[str | None, Field(description="the file name it will have")] = None
                                ) -> dict[str, Any]:
        """Check a workflow's source without saving it: it must import, hold exactly one @workflow, accept
        sample_input and render. Returns its name, input schema, step ids and the steps that start first;
        on failure one line with the file's line number."""
        return await ops.validate_workflow(source, sample_input, file)

    @server.tool(name="write_workflow")
    async def write_workflow(
            file: Annotated[str, Field(description="file name under .smithers/workflows/, e.g. \"fix_tests\"")],
            source: Source, sample_input: Sample = None,
            overwrite: Annotated[bool, Field(description="replace the file if it exists")] = False
    ) -> dict[str, Any]:
        """Check a workflow (as validate_workflow) and save it as .smithers/workflows/<file>.py. Nothing is
        saved when the check fails. Read the resource smithers://guide first."""
        return await ops.write_workflow(file, source, sample_input, overwrite)

    # --- runs ------------------------------------------------------------------------------------
    @server.tool(name="start_run")
    async def start_run(
            workflow: Annotated[str, Field(description="a workflow name, or path/to/file.py[:name]")],
            input: Annotated[dict[str, Any] | None, Field(description="the input, matching the input schema")] = None,
            agent: Annotated[str | None, Field(description="run every agent step with this agent, e.g. \"demo\" "
                                                           "(canned answers, no model)")] = None) -> dict[str, Any]:
        """Start a run of a workflow; returns its run_id at once. Follow it with get_events."""
        return await ops.start_run(workflow, input, agent)

    @server.tool(name="get_run")
    async def get_run(run_id: RunId, frame: Annotated[int | None, Field(
            description="show the run as of this frame (default: now)")] = None) -> dict[str, Any]:
        """A run: status (queued, running, waiting, finished, failed, cancelled, rewound, interrupted), input,
        error, usage (tokens, cost), approvals (decision null = waiting for a decision) and every step
        (id, iteration, state, attempts, error, output)."""
        return await ops.get_run(run_id, frame)

    @server.tool(name="list_runs")
    async def list_runs(status: Annotated[str | None, Field(
            description="only runs with this status, e.g. waiting")] = None) -> dict[str, Any]:
        """List runs, newest first, each with its status, waiting gates and owner."""
        return {"runs": await ops.list_runs(status)}

    @server.tool(name="get_events")
    async def get_events(run_id: RunId,
                         since: Annotated[int, Field(description="return events after this seq (0: all)", ge=0)] = 0,
                         wait: Annotated[float, Field(description="if none is new, wait up to this many seconds "
                                                                  "for the next one (0..60)", ge=0, le=60)] = 0,
                         limit: Annotated[int, Field(description="at most this many events", ge=1, le=1000)] = 200
                         ) -> dict[str, Any]:
        """A run's events after `since` (steps started/finished/failed, gates requested/decided, logs...),
        its status and waiting gates. Pass next_since back as since to continue (more=true: the limit cut
        the answer short, ask again at once); use wait to block until something happens instead of
        polling. Every event up to the status given is in the answer or, with more, the next ones."""
        return await ops.get_events(run_id, since, wait, limit)

    @server.tool(name="approve")
    async def approve(run_id: RunId, node: Node = None, iteration: Iteration = None,
                      note: Annotated[str | None, Field(description="a note kept with the decision")] = None,
                      choice: Annotated[str | None, Field(description="a select gate: the option chosen")] = None,
                      rank: Annotated[list[str] | None, Field(description="a rank gate: every option, best first")]
                      = None) -> dict[str, Any]:
        """Approve a waiting gate; the run goes on. A select gate needs `choice` (one of its options), a
        rank gate `rank` (all its options, best first). The first decision wins: a gate already decided
        is refused, saying by whom."""
        return await ops.decide(run_id, True, node, iteration, note, None, choice, rank)

    @server.tool(name="answer")
    async def answer(run_id: RunId, data: Annotated[Any, Field(description="the answer: JSON fitting the human "
                                                                           "task's output model")],
                     node: Node = None, iteration: Iteration = None,
                     note: Annotated[str | None, Field(description="a note kept with the answer")] = None
                     ) -> dict[str, Any]:
        """Answer a HumanTask step that waits for a person's structured answer; the run goes on. An
        answer that does not fit the model is refused naming the field; a task answers once."""
        return await ops.answer(run_id, data, node, iteration, note)

    @server.tool(name="signal")
    async def signal(run_id: RunId, name: Annotated[str, Field(description="the signal's name (a Signal step's name=)")],
                     data: Annotated[Any, Field(description="the payload, fitting the Signal step's output model")]
                     = None) -> dict[str, Any]:
        """Send a signal to a queued, running or waiting run (e.g. "CI finished"); a Signal step waiting
        for this name goes on. A signal no step waits for yet is kept, first in first out."""
        return await ops.signal(run_id, name, data)

    @server.tool(name="deny")
    async def deny(run_id: RunId, node: Node = None, iteration: Iteration = None,
                   note: Annotated[str | None, Field(description="why, kept with the decision")] = None
                   ) -> dict[str, Any]:
        """Deny a waiting gate; the gate's on_deny decides what follows (fail the run, skip, continue)."""
        return await ops.decide(run_id, False, node, iteration, note)

    @server.tool(name="cancel")
    async def cancel(run_id: RunId) -> dict[str, Any]:
        """Cancel a run (running steps are stopped; it ends cancelled)."""
        return await ops.cancel(run_id)

    @server.tool(name="resume")
    async def resume(run_id: RunId, force: Annotated[bool, Field(
            description="take over even if its owner looks alive")] = False,
                     accept_changes: Annotated[bool, Field(
                         description="continue although the workflow's source changed since it started")] = False
                     ) -> dict[str, Any]:
        """Continue an interrupted, failed or waiting run from its last saved frame; finished steps never
        run again, failed ones are retried."""
        return await ops.resume(run_id, force, accept_changes)

    @server.tool(name="fork")
    async def fork(run_id: RunId, frame: Frame,
                   input: Annotated[dict[str, Any] | None, Field(
                       description="input changes, merged into the run's input")] = None,
                   reset: Annotated[list[str] | None, Field(description="step ids to run again")] = None,
                   run: RunNow = False) -> dict[str, Any]:
        """A new run from a frame of this one, carrying every output valid there; steps the change affects
        (and those in reset) run again. The original is untouched."""
        return await ops.fork(run_id, frame, input, reset, run)

    @server.tool(name="rewind")
    async def rewind(run_id: RunId, frame: Frame, run: RunNow = False) -> dict[str, Any]:
        """Go back to a frame: a new run takes over from there; the original is kept, read-only, as rewound."""
        return await ops.rewind(run_id, frame, run)

    @server.tool(name="replay")
    async def replay(run_id: RunId, frame: Annotated[int, Field(
            description="the frame to replay from (default 0)", ge=0)] = 0, run: RunNow = False) -> dict[str, Any]:
        """Re-execute everything after a frame in a new run, to compare with the original."""
        return await ops.replay(run_id, frame, run)

    @server.tool(name="list_frames")
    async def list_frames(run_id: RunId) -> dict[str, Any]:
        """Every frame (state transition) of a run and what changed in it: the points fork, rewind and
        replay start from."""
        return {"frames": await ops.list_frames(run_id)}

    @server.tool(name="diff")
    async def diff(run_id: RunId, node: Annotated[str, Field(description="a step id inside a Worktree")],
                   iteration: Annotated[int | None, Field(description="default: the latest")] = None
                   ) -> dict[str, Any]:
        """What a step changed in its worktree's files, as a unified diff."""
        return await ops.diff(run_id, node, iteration)

    # --- resources and the prompt ----------------------------------------------------------------
    @server.resource("smithers://guide", name="guide", title="How to write a Smithers workflow",
                     mime_type="text/markdown")
    def guide() -> str:
        """The guide to writing workflows: node types, ctx, purity, ids, output models, agents, an example."""
        return guide_text()

    @server.resource("smithers://runs", name="runs", title="Runs", mime_type="application/json")
    async def runs() -> str:
        """Every run (as list_runs)."""
        return json.dumps(await ops.list_runs(), indent=1)

    @server.resource("smithers://runs/{run_id}", name="run", title="A run", mime_type="application/json")
    async def run(run_id: str) -> str:
        """One run (as get_run)."""
        try:
            return json.dumps(await ops.get_run(run_id), indent=1)
        except RunNotFound as e:
            raise ResourceNotFoundError(str(e)) from None
        except SmithersError as e:
            raise ResourceError(str(e)) from None

    @server.prompt(name="write_workflow", title="Write a Smithers workflow")
    def write_workflow_prompt(goal: str) -> str:
        """The guide, and the steps to write, check and start a workflow for a goal."""
        return (f"{guide_text()}\n\n---\n\nWrite a Smithers workflow for this goal:\n\n{goal}\n\n"
                "Check it with the tool validate_workflow (with a sample input), save it with write_workflow, "
                "then start it with start_run and follow it with get_events.")

    return server


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("smithers-tui")
    except PackageNotFoundError:
        return "0"


async def serve_stdio(db: str, project: Path | None = None) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin; runs hosted here are then stopped,
    left resumable."""
    from engine.project import durability
    from engine.runtime import Engine
    from engine.store import open_store

    logging.basicConfig(level=logging.WARNING, format="smithers mcp: %(message)s")
    async with await open_store(db, create=True, durability=durability()) as store:
        engine = Engine(store)
        try:
            await build_server(Operations(engine, project)).run_stdio_async()
        finally:
            await engine.close()
