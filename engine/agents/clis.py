"""The coding-agent CLIs by kind (the name used in `[agents.NAME] kind = ...`)."""

from __future__ import annotations

from engine.agents.aider import AiderAgent
from engine.agents.claude_code import ClaudeCodeAgent
from engine.agents.cli import CLIAgent
from engine.agents.codex import CodexAgent
from engine.agents.gemini import GeminiAgent
from engine.agents.opencode import OpenCodeAgent
from engine.agents.pi import PiAgent

CLI_AGENTS: dict[str, type[CLIAgent]] = {
    "claude-code": ClaudeCodeAgent, "codex": CodexAgent, "gemini": GeminiAgent, "aider": AiderAgent,
    "opencode": OpenCodeAgent, "pi": PiAgent,
}

__all__ = ["CLI_AGENTS", "AiderAgent", "ClaudeCodeAgent", "CodexAgent", "GeminiAgent", "OpenCodeAgent", "PiAgent"]
