"""The agent interface: events, usage, results, errors, and the fallback chain."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from engine.tools import Tool

EventKind = Literal["token", "tool_call", "tool_result", "shell_output", "message", "retry", "error"]
StructuredMode = Literal["native_json_schema", "prompt_schema", "none"]


class AgentEvent(BaseModel):
    """One streamed step of an agent run (a token, a tool call, a retry...)."""

    kind: EventKind
    text: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    agent: str = ""


class Usage(BaseModel):
    """Tokens, cost and time of one run (or a total: `a + b`)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""
    agent: str = ""
    duration_s: float = 0.0

    def __add__(self, other: "Usage") -> "Usage":
        def join(a: str, b: str) -> str:
            names = [x for x in dict.fromkeys((a.split(",") if a else []) + (b.split(",") if b else []))]
            return ",".join(names)

        return Usage(input_tokens=self.input_tokens + other.input_tokens,
                     output_tokens=self.output_tokens + other.output_tokens,
                     cost_usd=self.cost_usd + other.cost_usd, model=join(self.model, other.model),
                     agent=join(self.agent, other.agent), duration_s=self.duration_s + other.duration_s)

    def plus(self, other: "Usage") -> "Usage":
        return self + other


class AgentResult(BaseModel):
    """What a run returns: the validated output (model instance, or text) plus its cost."""

    output: Any
    text: str
    usage: Usage
    structured_mode: StructuredMode
    attempts: int = 1


class AgentError(Exception):
    """An agent run failed; the message is one actionable line."""


class AgentUnavailable(AgentError):
    """The agent cannot run here (missing binary, key or configuration)."""


class ProviderError(AgentError):
    """The model provider kept failing (rate limits, server errors, timeouts)."""


class OutputInvalid(AgentError):
    """The final answer did not validate against the output model, even after corrections."""

    def __init__(self, message: str, errors: str = "", text: str = "") -> None:
        super().__init__(message)
        self.errors = errors
        self.text = text


Emit = Callable[[AgentEvent], None]


class Agent(abc.ABC):
    """Given a prompt, an output model, tools and a working directory: stream events, return a result."""

    name: str = "agent"
    # confinement of the processes it starts (set from its [agents.NAME] table; None: the defaults)
    network: Literal["none", "endpoint", "full"] | None = None  # see engine/sandbox.py
    sandbox_mode: Literal["auto", "bwrap", "off"] | None = None
    passthrough: list[str] = []  # environment variables its tools get besides the allowlist

    @abc.abstractmethod
    async def run(self, prompt: str, *, output: type[BaseModel] | None, workdir: Path, emit: Emit,
                  tools: "list[Tool] | None" = None) -> AgentResult:
        """Run once to completion. Raises AgentError (one-line message) on failure."""

    def available(self) -> tuple[bool, str]:
        """(usable here?, why not)."""
        return True, ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class FallbackAgent(Agent):
    """Tries each agent in order; moves on to the next when one raises AgentError."""

    def __init__(self, agents: list[Agent], name: str | None = None) -> None:
        if not agents:
            raise ValueError("FallbackAgent needs at least one agent")
        self.agents = list(agents)
        self.name = name or " | ".join(a.name for a in self.agents)

    def available(self) -> tuple[bool, str]:
        whys = []
        for a in self.agents:
            ok, why = a.available()
            if ok:
                return True, ""
            whys.append(f"{a.name}: {why}")
        return False, "; ".join(whys)

    async def run(self, prompt: str, *, output: type[BaseModel] | None, workdir: Path, emit: Emit,
                  tools: "list[Tool] | None" = None) -> AgentResult:
        failures: list[str] = []
        for i, agent in enumerate(self.agents):
            ok, why = agent.available()
            try:
                if not ok:
                    raise AgentUnavailable(why)
                return await agent.run(prompt, output=output, workdir=workdir, emit=emit, tools=tools)
            except AgentError as e:
                msg = str(e)
                failures.append(msg if msg.startswith(f"{agent.name}:") else f"{agent.name}: {msg}")
                if i + 1 < len(self.agents):
                    nxt = self.agents[i + 1].name
                    emit(AgentEvent(kind="retry", agent=agent.name, text=f"{agent.name} failed ({e}); trying {nxt}",
                                    data={"failed": agent.name, "next": nxt, "error": str(e)}))
        raise AgentError("all agents failed: " + "; ".join(failures))
