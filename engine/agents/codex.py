"""Codex, driven as a coding-agent CLI (the base: engine/agents/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.agents.base import AgentEvent, Emit, Usage
from engine.agents.cli import CLIAgent, RunState, json_line, RETRY_LINE, error_summary


class CodexAgent(CLIAgent):
    """`codex exec --json`; the last agent message is the answer. With an endpoint configured, a
    custom provider in CODEX_HOME/config.toml (`wire_api = "responses"`, the retry budget)."""

    binary = "codex"
    default_name = "codex"
    install_hint = "run `make agent-clis` (or `npm install -g @openai/codex`)"
    key_var = "OPENAI_API_KEY"
    own_vars = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME", "CODEX_API_KEY")
    home_paths = (".codex",)

    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        # inside the OS sandbox (which enforces read-only itself) codex's own bwrap cannot nest
        mode = "danger-full-access" if st.sandboxed else "read-only" if st.read_only else "workspace-write"
        cmd = [exe, "exec", "--json", "--skip-git-repo-check", "--sandbox", mode, "-C", str(workdir)]
        if self.model:
            cmd += ["-m", self.model]
        return cmd + self.extra_args + [prompt]

    def configure(self, home: Path) -> dict[str, str]:
        codex_home = home / ".codex"
        codex_home.mkdir(parents=True, exist_ok=True)
        base = str(self.api_base).rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        retries = max(0, self.max_retries)
        (codex_home / "config.toml").write_text(
            (f"model = {json.dumps(self.model)}\n" if self.model else "")
            + 'model_provider = "smithers"\n'
            + "[model_providers.smithers]\n"
            + 'name = "smithers"\n'
            + f"base_url = {json.dumps(base)}\n"
            + f"env_key = {json.dumps(self.key_var)}\n"
            + 'wire_api = "responses"\n'
            + f"request_max_retries = {retries}\n"
            + f"stream_max_retries = {retries}\n"
            + f"stream_idle_timeout_ms = {int(self.idle_timeout * 1000)}\n"
            # no plugin sync from GitHub at start (seconds of waiting where the network is closed), no
            # reconnecting without end: the retry budget above is the whole of it
            + "[features]\nplugins = false\nremote_plugin = false\nunbounded_connection_retries = false\n"
            + "[analytics]\nenabled = false\n")  # no metrics export (another 5 s at exit when it cannot)
        return {"CODEX_HOME": str(codex_home)}

    def interactive(self, exe: str, session: str | None, workdir: Path) -> list[str]:
        return [exe, "resume", *([session] if session else ["--last"]), "-C", str(workdir)]

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        obj = json_line(line)
        if obj is None:
            return emit(AgentEvent(kind="message", text=line, agent=self.name))
        typ = obj.get("type")
        if typ == "thread.started":
            st.session_id = obj.get("thread_id") or st.session_id
        item = obj.get("item") or obj.get("msg") or {}
        itype = item.get("type") or item.get("item_type")
        if itype == "agent_message":
            st.text = item.get("text") or item.get("message") or ""
            emit(AgentEvent(kind="message", text=st.text, agent=self.name))
        elif itype in ("command_execution", "exec_command_begin") and typ != "item.completed":
            emit(AgentEvent(kind="tool_call", agent=self.name, text=str(item.get("command")),
                            data={"name": "shell", "arguments": item.get("command")}))
        elif itype in ("command_execution", "exec_command_end"):
            emit(AgentEvent(kind="tool_result", agent=self.name, text=str(item.get("aggregated_output", ""))[:2000],
                            data={"name": "shell", "ok": item.get("exit_code") in (0, None)}))
        elif itype == "file_change" and typ == "item.completed":
            changes = item.get("changes") or []
            emit(AgentEvent(kind="tool_result", agent=self.name, data={"name": "apply_patch", "ok": True},
                            text=", ".join(f"{c.get('kind')} {c.get('path')}" for c in changes if isinstance(c, dict))))
        elif itype == "error" and item.get("message"):
            msg = str(item.get("message"))
            if RETRY_LINE.search(msg):
                emit(AgentEvent(kind="retry", agent=self.name, text=msg[:300], data={"reason": "provider"}))
        u = obj.get("usage") if typ == "turn.completed" else None
        if u:
            st.usage = st.usage + Usage(input_tokens=int(u.get("input_tokens", 0) or 0),
                                        output_tokens=int(u.get("output_tokens", 0) or 0))
        if typ in ("turn.failed", "error"):
            err = obj.get("error")
            st.error = str(err.get("message") if isinstance(err, dict) else obj.get("message") or err)
            st.error = error_summary([st.error]) or st.error
