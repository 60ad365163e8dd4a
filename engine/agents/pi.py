"""Pi, driven as a coding-agent CLI (the base: engine/agents/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.agents.base import AgentEvent, Emit, Usage
from engine.agents.cli import CLIAgent, RunState, json_line


class PiAgent(CLIAgent):
    """`pi -p --mode json`: session header, message deltas, tool executions, usage per message;
    only read-only tools (read, grep, find, ls) for read-only steps. With an endpoint configured, a
    provider `smithers` in its models.json (OpenAI Chat Completions)."""

    binary = "pi"
    default_name = "pi"
    install_hint = "run `make agent-clis` (or `npm install -g @mariozechner/pi-coding-agent`)"
    supports_resume = True
    key_var = "SMITHERS_PI_KEY"
    own_vars = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY",
                "PI_CODING_AGENT_DIR")
    home_paths = (".pi",)

    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        cmd = [exe, "-p", "--mode", "json", "--offline", "--no-extensions", "--no-skills",
               "--no-prompt-templates", "--no-themes"]
        if st.read_only:
            cmd += ["--tools", "read,grep,find,ls"]
        if self.api_base:
            cmd += ["--provider", "smithers"]
        if self.model:
            cmd += ["--model", self.model]
        if resume:
            cmd += ["--session", resume]
        return cmd + self.extra_args + [prompt]

    def configure(self, home: Path) -> dict[str, str]:
        d = home / ".pi" / "agent"
        d.mkdir(parents=True, exist_ok=True)
        base = str(self.api_base).rstrip("/")
        (d / "models.json").write_text(json.dumps({"providers": {"smithers": {
            "baseUrl": base if base.endswith("/v1") else base + "/v1", "api": "openai-completions",
            "apiKey": "SMITHERS_PI_KEY", "compat": {"supportsDeveloperRole": False},
            "models": [{"id": self.model or "default"}]}}}, indent=1))
        (d / "settings.json").write_text(json.dumps({"retry": {"enabled": self.max_retries > 0,
                                                               "maxRetries": max(1, self.max_retries)}}))
        return {"SMITHERS_PI_KEY": self.api_key() or "none", "PI_OFFLINE": "1"}

    def interactive(self, exe: str, session: str | None, workdir: Path) -> list[str]:
        return [exe, *(["--session", session] if session else ["--continue"]),
                *(["--provider", "smithers"] if self.api_base else []), *(["--model", self.model] if self.model else [])]

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        obj = json_line(line)
        if obj is None:
            return emit(AgentEvent(kind="message", text=line, agent=self.name))
        typ = obj.get("type")
        if typ == "session":
            st.session_id = obj.get("id") or st.session_id
        elif typ == "message_update":
            ev = obj.get("assistantMessageEvent") or {}
            if ev.get("type") == "text_delta":
                emit(AgentEvent(kind="token", text=str(ev.get("delta") or ""), agent=self.name))
        elif typ == "message_end":
            msg = obj.get("message") or {}
            if msg.get("role") == "assistant":
                texts = [c.get("text", "") for c in msg.get("content") or [] if c.get("type") == "text"]
                if texts:
                    st.text = "".join(texts)
                    emit(AgentEvent(kind="message", text=st.text, agent=self.name))
                u = msg.get("usage") or {}
                st.usage = st.usage + Usage(input_tokens=int(u.get("input", 0) or 0),
                                            output_tokens=int(u.get("output", 0) or 0),
                                            cost_usd=float((u.get("cost") or {}).get("total", 0) or 0))
                if msg.get("stopReason") == "error" or msg.get("errorMessage"):
                    st.error = str(msg.get("errorMessage") or "the model call failed")
        elif typ == "tool_execution_start":
            emit(AgentEvent(kind="tool_call", agent=self.name, text=f"{obj.get('toolName')} "
                            f"{json.dumps(obj.get('args'))[:300]}",
                            data={"id": obj.get("toolCallId"), "name": obj.get("toolName"), "arguments": obj.get("args")}))
        elif typ == "tool_execution_end":
            res = obj.get("result") or {}
            text = res if isinstance(res, str) else " ".join(
                str(c.get("text", "")) for c in (res.get("content") or []) if isinstance(c, dict))
            emit(AgentEvent(kind="tool_result", agent=self.name, text=text[:2000],
                            data={"id": obj.get("toolCallId"), "name": obj.get("toolName"), "ok": not obj.get("isError")}))
        elif typ == "auto_retry_start":
            emit(AgentEvent(kind="retry", agent=self.name, data={"reason": "provider", "attempt": obj.get("attempt")},
                            text=f"pi retries ({obj.get('attempt')}/{obj.get('maxAttempts')}): {obj.get('errorMessage')}"))
