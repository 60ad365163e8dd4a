"""Claude Code, driven as a coding-agent CLI (the base: engine/agents/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.agents.base import AgentEvent, Emit, Usage
from engine.agents.cli import CLIAgent, RunState, json_line


class ClaudeCodeAgent(CLIAgent):
    """`claude -p` with stream-json output; usage and total_cost_usd come from its result line."""

    binary = "claude"
    default_name = "claude-code"
    install_hint = "run `make agent-clis` (or `npm install -g @anthropic-ai/claude-code`)"
    supports_resume = True
    key_var = "ANTHROPIC_API_KEY"
    own_vars = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL",
                "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX")
    home_paths = (".claude", ".claude.json")
    allowed_tools = "Read,Edit,Write,MultiEdit,Bash,Glob,Grep,LS"
    read_tools = "Read,Glob,Grep,LS"

    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        cmd = [exe, "-p", "--output-format", "stream-json", "--verbose", "--permission-mode",
               "default" if st.read_only else "acceptEdits",
               "--allowedTools", self.read_tools if st.read_only else self.allowed_tools]
        if st.read_only:
            cmd += ["--disallowedTools", "Edit,Write,MultiEdit,NotebookEdit,Bash"]
        if self.model:
            cmd += ["--model", self.model]
        if resume:
            cmd += ["--resume", resume]
        return cmd + self.extra_args

    def process_env(self, home: Path | None) -> dict[str, str]:
        env = super().process_env(home)
        env.setdefault("CLAUDE_CODE_MAX_RETRIES", str(self.max_retries))  # its default of 10 takes minutes
        return env

    def configure(self, home: Path) -> dict[str, str]:
        return {"ANTHROPIC_BASE_URL": str(self.api_base), "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1"}

    def interactive(self, exe: str, session: str | None, workdir: Path) -> list[str]:
        return [exe, *(["--resume", session] if session else []), *(["--model", self.model] if self.model else [])]

    def stdin_text(self, prompt: str) -> str | None:
        return prompt  # via stdin: no argv length limit

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        obj = json_line(line)
        if obj is None:
            return emit(AgentEvent(kind="message", text=line, agent=self.name))
        kind = obj.get("type")
        st.session_id = obj.get("session_id") or st.session_id
        content = (obj.get("message") or {}).get("content") or []
        if kind == "system" and obj.get("subtype") == "api_retry":
            st.retries += 1
            emit(AgentEvent(kind="retry", agent=self.name, data={"reason": "provider", **{
                k: obj.get(k) for k in ("attempt", "max_retries", "retry_delay_ms", "error_status", "error")}},
                text=f"the endpoint failed ({obj.get('error_status') or obj.get('error')}); "
                     f"claude retries ({obj.get('attempt')}/{obj.get('max_retries')})"))
        elif kind == "assistant":
            for block in content if isinstance(content, list) else []:
                if block.get("type") == "text" and block.get("text"):
                    emit(AgentEvent(kind="message", text=block["text"], agent=self.name))
                elif block.get("type") == "tool_use":
                    emit(AgentEvent(kind="tool_call", agent=self.name,
                                    text=f"{block.get('name')} {json.dumps(block.get('input'))[:300]}",
                                    data={"id": block.get("id"), "name": block.get("name"),
                                          "arguments": block.get("input")}))
        elif kind == "user":
            for block in content if isinstance(content, list) else []:
                if block.get("type") == "tool_result":
                    body = block.get("content")
                    if isinstance(body, list):
                        body = "\n".join(str(b.get("text", "")) for b in body if isinstance(b, dict))
                    emit(AgentEvent(kind="tool_result", agent=self.name, text=str(body)[:2000],
                                    data={"id": block.get("tool_use_id"), "ok": not block.get("is_error")}))
        elif kind == "result":
            st.text = str(obj.get("result") or "")
            u = obj.get("usage") or {}
            st.usage = Usage(
                input_tokens=int(u.get("input_tokens", 0)) + int(u.get("cache_creation_input_tokens", 0) or 0)
                + int(u.get("cache_read_input_tokens", 0) or 0),
                output_tokens=int(u.get("output_tokens", 0) or 0), cost_usd=float(obj.get("total_cost_usd") or 0.0),
                model=self.model or "", agent=self.name)
            if obj.get("is_error"):
                st.error = st.text or str(obj.get("subtype") or "error")
