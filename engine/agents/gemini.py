"""Gemini CLI, driven as a coding-agent CLI (the base: engine/agents/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.agents.base import AgentEvent, Emit, Usage
from engine.agents.cli import CLIAgent, RunState, json_line, RETRY_LINE


class GeminiAgent(CLIAgent):
    """`gemini -p --output-format stream-json --skip-trust`: tool use, results, deltas and a final
    result streamed; `--approval-mode plan` for read-only steps. With an endpoint configured, its
    settings select API-key auth (a base URL alone is rejected by its own auth check) and its retry
    budget."""

    binary = "gemini"
    default_name = "gemini-cli"
    install_hint = "run `make agent-clis` (or `npm install -g @google/gemini-cli`)"
    key_var = "GEMINI_API_KEY"
    own_vars = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_CLOUD_PROJECT",
                "GOOGLE_APPLICATION_CREDENTIALS", "GEMINI_CLI_HOME")
    home_paths = (".gemini",)

    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        cmd = [exe, "-p", prompt, "--output-format", "stream-json", "--skip-trust",
               "--approval-mode", "plan" if st.read_only else "yolo"]
        if self.model:
            cmd += ["-m", self.model]
        return cmd + self.extra_args

    def configure(self, home: Path) -> dict[str, str]:
        d = home / ".gemini"
        d.mkdir(parents=True, exist_ok=True)
        settings_file = d / "settings.json"
        try:
            settings = json.loads(settings_file.read_text())
        except (OSError, ValueError):
            settings = {}
        settings.setdefault("security", {}).setdefault("auth", {})["selectedType"] = "gemini-api-key"
        settings.setdefault("general", {})["maxAttempts"] = max(1, self.max_retries + 1)
        settings.setdefault("privacy", {})["usageStatisticsEnabled"] = False
        settings_file.write_text(json.dumps(settings, indent=1))
        return {"GOOGLE_GEMINI_BASE_URL": str(self.api_base).rstrip("/")}

    def interactive(self, exe: str, session: str | None, workdir: Path) -> list[str]:
        return [exe, *(["--resume", session] if session else []), "--skip-trust"]

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        obj = json_line(line)
        if obj is None:
            return emit(AgentEvent(kind="message", text=line, agent=self.name))
        typ = obj.get("type")
        if typ == "init":
            st.session_id = obj.get("session_id") or st.session_id
        elif typ == "message" and obj.get("role") == "assistant":
            text = str(obj.get("content") or "")
            st.text = (st.text or "") + text if obj.get("delta") else text
            emit(AgentEvent(kind="token" if obj.get("delta") else "message", text=text, agent=self.name))
        elif typ == "tool_use":
            st.text = None  # the answer is what comes after the last tool call
            args = obj.get("parameters")
            emit(AgentEvent(kind="tool_call", agent=self.name, text=f"{obj.get('tool_name')} {json.dumps(args)[:300]}",
                            data={"id": obj.get("tool_id"), "name": obj.get("tool_name"), "arguments": args}))
        elif typ == "tool_result":
            out = obj.get("output") if obj.get("output") is not None else (obj.get("error") or {}).get("message", "")
            emit(AgentEvent(kind="tool_result", agent=self.name, text=str(out)[:2000],
                            data={"id": obj.get("tool_id"), "ok": obj.get("status") == "success"}))
        elif typ == "error":
            msg = str(obj.get("message") or "")
            emit(AgentEvent(kind="retry" if RETRY_LINE.search(msg) else "message", agent=self.name, text=msg[:300], data={"severity": obj.get("severity")}))
        elif typ == "result":
            stats = obj.get("stats") or {}
            st.usage = st.usage + Usage(input_tokens=int(stats.get("input_tokens", 0) or 0),
                                        output_tokens=int(stats.get("output_tokens", 0) or 0))
            if obj.get("status") != "success":
                err = obj.get("error") or {}
                st.error = str(err.get("message") if isinstance(err, dict) else err) or "failed"
