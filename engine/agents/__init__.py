"""Agents: one interface over LLMs (litellm), six coding-agent CLIs and offline demo agents.

Importing this package is cheap: litellm is only imported when an LLMAgent runs.
"""

from engine.agents.base import (Agent, AgentError, AgentEvent, AgentResult, AgentUnavailable, FallbackAgent,
                                OutputInvalid, ProviderError, Usage)
from engine.agents.cli import (AiderAgent, ClaudeCodeAgent, CLIAgent, CodexAgent, GeminiAgent, OpenCodeAgent,
                               PiAgent)
from engine.agents.demo import DemoAgent, ScriptedAgent
from engine.agents.llm import LLMAgent

__all__ = ["Agent", "AgentError", "AgentEvent", "AgentResult", "AgentUnavailable", "FallbackAgent", "OutputInvalid",
           "ProviderError", "Usage", "LLMAgent", "CLIAgent", "ClaudeCodeAgent", "CodexAgent", "GeminiAgent",
           "AiderAgent", "OpenCodeAgent", "PiAgent", "DemoAgent", "ScriptedAgent"]
