"""Aider, driven as a coding-agent CLI (the base: engine/agents/cli.py)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from engine.agents.base import AgentEvent, Emit, Usage
from engine.agents.cli import CLIAgent, RunState


class AiderAgent(CLIAgent):
    """`aider --message ...`: the chat output is the answer; cost read from its report. `--dry-run`
    for read-only steps; `--no-gitignore` and no repo map, so it leaves the worktree as it found it;
    its chat history goes to its state folder (the session `smithers hijack` reopens). Aider prints
    API errors and exits 0: those lines fail the attempt (after `max_retries` of its own retries)."""

    binary = "aider"
    default_name = "aider"
    install_hint = "run `make agent-clis` (installs aider-chat in tools/aider-venv)"
    key_var = "OPENAI_API_KEY"
    own_vars = ("OPENAI_API_KEY", "OPENAI_API_BASE", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "AIDER_MODEL")
    home_paths = (".aider",)
    _COST = re.compile(r"Cost:\s*\$([0-9.]+)\s*message")
    _TOKENS = re.compile(r"Tokens:\s*([0-9.]+)(k?)\s*sent,\s*([0-9.]+)(k?)\s*received")
    _API_ERROR = re.compile(r"litellm\.(\w+Error)|API provider|AuthenticationError|InternalServerError|"
                            r"RateLimitError|APIConnectionError|NotFoundError|BadRequestError")
    _RETRYING = re.compile(r"Retrying in [0-9.]+ seconds", re.I)

    def process_env(self, home: Path | None) -> dict[str, str]:
        env = super().process_env(home)
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list at start
        return env

    def model_name(self) -> str | None:
        if self.model and self.api_base and "/" not in self.model:
            return f"openai/{self.model}"  # an OpenAI-compatible endpoint
        return self.model

    def _files(self, st_home: Path | None, workdir: Path) -> list[str]:
        d = (self.state_dir or Path(tempfile.gettempdir()) / f"smithers-{self.name}") / "history"  # never the worktree
        d.mkdir(parents=True, exist_ok=True)
        return ["--chat-history-file", str(d / "chat.md"), "--input-history-file", str(d / "input"),
                "--llm-history-file", str(d / "llm.log")]

    def common(self, workdir: Path) -> list[str]:
        cmd = ["--no-git", "--no-auto-commits", "--no-gitignore", "--no-check-update", "--no-show-model-warnings",
               "--analytics-disable", "--no-pretty", "--map-tokens", "0", "--no-show-release-notes",
               *self._files(None, workdir)]
        if self.api_base:
            cmd += ["--openai-api-base", str(self.api_base).rstrip("/") + ("" if str(self.api_base).rstrip("/")
                                                                           .endswith("/v1") else "/v1")]
        if self.model_name():
            cmd += ["--model", str(self.model_name())]
        return cmd

    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        st.session_id = str(Path(self._files(None, workdir)[1]))
        return [exe, "--message", prompt, "--yes-always", "--no-stream", *(["--dry-run"] if st.read_only else []),
                *self.common(workdir), *self.extra_args]

    def interactive(self, exe: str, session: str | None, workdir: Path) -> list[str]:
        return [exe, "--restore-chat-history", *self.common(workdir)]

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        if self._RETRYING.search(line):
            return self.give_up(st, st.error or line, emit)
        emit(AgentEvent(kind="message", text=line, agent=self.name))
        if self._API_ERROR.search(line):
            st.error = line
        if m := self._COST.search(line):
            st.usage = st.usage + Usage(cost_usd=float(m.group(1)))
        if m := self._TOKENS.search(line):
            def n(v: str, k: str) -> int:
                return int(float(v) * (1000 if k else 1))
            st.usage = st.usage + Usage(input_tokens=n(m.group(1), m.group(2)), output_tokens=n(m.group(3), m.group(4)))
