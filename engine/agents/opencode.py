"""OpenCode, driven as a coding-agent CLI (the base: engine/agents/cli.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.agents.base import AgentEvent, Emit, Usage
from engine.agents.cli import CLIAgent, RunState, json_line


class OpenCodeAgent(CLIAgent):
    """`opencode run --format json`: JSON events per step (text, tool use, step finish with tokens
    and cost); the `plan` agent for read-only steps. With an endpoint configured, an
    OpenAI-compatible provider `smithers` in its opencode.json (its key from a variable)."""

    binary = "opencode"
    default_name = "opencode"
    install_hint = "run `make agent-clis` (or `npm install -g opencode-ai`)"
    supports_resume = True
    key_var = "SMITHERS_OPENCODE_KEY"
    own_vars = ("OPENCODE_CONFIG", "OPENCODE_CONFIG_CONTENT", "ANTHROPIC_API_KEY", "OPENAI_API_KEY",
                "GEMINI_API_KEY", "OPENROUTER_API_KEY")
    home_paths = (".config/opencode", ".local/share/opencode", ".local/state/opencode", ".cache/opencode")

    def model_ref(self) -> str | None:
        if self.api_base:
            return f"smithers/{self.model or 'default'}"
        return self.model

    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        cmd = [exe, "run", "--format", "json", "--dir", str(workdir), "--print-logs", "--log-level", "ERROR"]
        if st.read_only:
            cmd += ["--agent", "plan"]
        else:
            cmd += ["--auto"]
        if self.model_ref():
            cmd += ["-m", str(self.model_ref())]
        if resume:
            cmd += ["--session", resume]
        return cmd + self.extra_args + [prompt]

    def configure(self, home: Path) -> dict[str, str]:
        base = str(self.api_base).rstrip("/")
        config = {"$schema": "https://opencode.ai/config.json", "autoupdate": False, "share": "disabled",
                  "provider": {"smithers": {"npm": "@ai-sdk/openai-compatible", "name": "smithers",
                                            "options": {"baseURL": base if base.endswith("/v1") else base + "/v1",
                                                        "apiKey": "{env:SMITHERS_OPENCODE_KEY}",
                                                        "maxRetries": max(0, self.max_retries)},
                                            "models": {self.model or "default": {"name": self.model or "default"}}}}}
        d = home / ".config" / "opencode"
        d.mkdir(parents=True, exist_ok=True)
        (d / "opencode.json").write_text(json.dumps(config, indent=1))
        return {"OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
                "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_SHARE": "1",
                "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1", "OPENCODE_DISABLE_CLAUDE_CODE": "1",
                "SMITHERS_OPENCODE_KEY": self.api_key() or "none"}

    _STREAM_ERROR = re.compile(r'message="stream error".*small=false.*error\.error="([^"]*)"')

    def on_stderr(self, line: str, st: RunState, emit: Emit) -> None:
        if m := self._STREAM_ERROR.search(line):  # it retries a failing endpoint without end
            self.give_up(st, m.group(1), emit)

    def interactive(self, exe: str, session: str | None, workdir: Path) -> list[str]:
        return [exe, str(workdir), *(["--session", session] if session else []),
                *(["-m", str(self.model_ref())] if self.model_ref() else [])]

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        obj = json_line(line)
        if obj is None:
            return emit(AgentEvent(kind="message", text=line, agent=self.name))
        st.session_id = obj.get("sessionID") or st.session_id
        typ, part = obj.get("type"), obj.get("part") or {}
        if typ == "text":
            st.text = str(part.get("text") or "")
            emit(AgentEvent(kind="message", text=st.text, agent=self.name))
        elif typ == "tool_use":
            state = part.get("state") or {}
            emit(AgentEvent(kind="tool_call", agent=self.name, text=f"{part.get('tool')} "
                            f"{json.dumps(state.get('input'))[:300]}",
                            data={"id": part.get("callID"), "name": part.get("tool"), "arguments": state.get("input")}))
            emit(AgentEvent(kind="tool_result", agent=self.name, text=str(state.get("output") or state.get("error")
                                                                           or "")[:2000],
                            data={"id": part.get("callID"), "name": part.get("tool"),
                                  "ok": state.get("status") == "completed"}))
        elif typ == "step_finish":
            tokens = part.get("tokens") or {}
            st.usage = st.usage + Usage(input_tokens=int(tokens.get("input", 0) or 0),
                                        output_tokens=int(tokens.get("output", 0) or 0),
                                        cost_usd=float(part.get("cost") or 0.0))
        elif typ == "error":
            err = obj.get("error") or {}
            data = err.get("data") if isinstance(err, dict) else None
            st.error = str((data or {}).get("message") or (err.get("name") if isinstance(err, dict) else err))
            code = (data or {}).get("statusCode")
            if code:
                st.error = f"HTTP {code}: {st.error}"
