"""Agent steps: resolve the task's agent, render its prompt, run it in the step's working
directory, stream its events live, and record usage and cost with the attempt."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .errors import SmithersError
from .events import Event

if TYPE_CHECKING:
    from .agents.base import Agent
    from .procs import StepScope
    from .context import TaskCtx
    from .render import Ready
    from .run import RunExecutor

STORED_KINDS = ("tool_call", "tool_result", "message", "retry", "error")  # tokens are streamed, not stored


class AgentStepError(SmithersError):
    def __init__(self, message: str, retryable: bool = True, **attempt: Any) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.attempt = attempt


async def run_agent(ex: "RunExecutor", r: "Ready", tctx: "TaskCtx") -> Any:
    from .agents.base import AgentError, AgentUnavailable
    from .config import ConfigError, resolve_agent
    from .attempt import StepResult
    from . import procs
    from .secrets import redact, redact_data

    task = r.task
    try:
        settings = ex.engine.settings_for(ex.workdir, ex.agent_override)
        agent = resolve_agent(task.agent, settings)
    except (AgentUnavailable, ConfigError) as e:
        raise AgentStepError(str(e), retryable=False) from None
    ok, why = agent.available()
    if not ok:
        raise AgentStepError(f"agent {agent.name!r} cannot run: {why}", retryable=False)
    prompt = task.prompt(tctx) if callable(task.prompt) else task.prompt
    assert prompt is not None  # an agent task has one (checked when the Task is made)

    def emit(ev: Any) -> None:
        data = {"kind": ev.kind, "text": redact(ev.text), "agent": ev.agent or agent.name,
                **({"data": redact_data(ev.data)} if ev.data else {})}
        if ex.bus.has_subscribers:
            ex.bus.publish(Event(run_id=ex.run_id, frame=ex.frame, at=time.time(), type="agent", node_id=r.key[0],
                                 iteration=r.key[1], data=data))
        if ev.kind in STORED_KINDS:
            ex.emit("agent", r.key, {**data, "text": data["text"][:4000]})

    scope = step_scope(ex, r, settings, agent)

    def on_note(key: str, value: Any) -> None:
        if key == "sandbox":  # the OS sandbox is not used: said once per step
            ex.emit("agent", r.key, {"kind": "message", "text": value, "agent": agent.name, "data": {"sandbox": False}})
        elif key == "session":  # a CLI's session id, for `smithers hijack`
            ex.emit("agent", r.key, {"kind": "session", "text": f"session {value.get('id')}", "agent": agent.name,
                                     "data": value})

    scope.on_note = on_note
    await asyncio.to_thread(procs.end_leftovers, scope)  # what an interrupted attempt left running
    token = procs.STEP.set(scope)
    ex.emit("agent", r.key, {"kind": "prompt", "text": redact(prompt[:8000]), "agent": agent.name})
    try:
        result = await agent.run(prompt, output=task.output, workdir=r.workdir, emit=emit,
                                 tools=step_tools(task.tools))
    except AgentUnavailable as e:
        raise AgentStepError(str(e), retryable=False, agent=agent.name) from None
    except AgentError as e:
        raise AgentStepError(str(e), agent=agent.name) from None
    finally:
        procs.STEP.reset(token)
    u = result.usage
    return StepResult(redact_output(result.output), agent=u.agent or agent.name, model=u.model, tokens_in=u.input_tokens,
                      tokens_out=u.output_tokens, cost_usd=u.cost_usd, structured_mode=result.structured_mode)


def step_scope(ex: "RunExecutor", r: "Ready", settings: Any, agent: "Agent") -> "StepScope":
    """The step's identity and sandbox policy, visible to its agent and tools (engine/procs.py)."""
    from . import procs
    from .sandbox import Policy

    mode = agent.sandbox_mode or getattr(getattr(settings, "sandbox", None), "mode", None) or "auto"
    return procs.StepScope(ex.run_id, r.key[0], r.key[1], ex.workdir, sandbox=Policy(mode=mode,
                                                                                     network=agent.network or "none"))


def redact_output(value: Any) -> Any:
    """An agent's output with known secret values redacted (a model stays a model when it still validates)."""
    from pydantic import BaseModel, ValidationError
    from .secrets import redact_data

    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="json")
        clean = redact_data(dumped)
        if clean == dumped:
            return value
        try:
            return type(value).model_validate(clean)
        except ValidationError:
            return clean
    return redact_data(value)


def step_tools(spec: Any) -> Any:
    """A Task's `tools=`: None (the agent's own), "read_only", or a list of Tool."""
    if spec == "read_only":
        from .tools import READ_ONLY_TOOLS

        return list(READ_ONLY_TOOLS)
    return list(spec) if spec is not None else None
