"""Coding-agent CLIs (Claude Code, Codex, Gemini CLI, Aider, OpenCode, Pi) run as subprocesses.

Each streams its stdout as events; the final answer is validated like an LLM's (schema in the
prompt, corrective retries). Binaries are looked up on PATH, then in tools/node_modules/.bin and
tools/aider-venv/bin (`make agent-clis`).

When the agent's settings give an endpoint (`api_base`), the engine manages the CLI's home: a
folder under `.smithers/agents/NAME/home` where it writes the CLI's own configuration (endpoint,
key variable, retry budget) and where the CLI keeps its sessions, so `smithers hijack` can resume
them. Without `api_base` the CLI uses the user's own configuration and login.

Every CLI runs under the process guard and, where the OS allows, in the bubblewrap sandbox with
the step's worktree and the CLI's state folder the only writable paths, and the network limited
to its endpoint when one is configured (engine/sandbox.py, engine/procs.py). Its environment is
the allowlist plus its own variables (keys, endpoint) — not the engine's whole environment.
"""

from __future__ import annotations

import abc
import asyncio
import json
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from engine import procs
from engine.agents.base import (Agent, AgentError, AgentEvent, AgentResult, AgentUnavailable, Emit, OutputInvalid,
                                Usage)
from engine.agents.structured import correction_message, schema_instructions, validate_answer
from engine.secrets import tool_env

_ROOT = Path(__file__).resolve().parents[2]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*(\x07|\x1b\\)")
_RETRY_LINE = re.compile(r"\bretry(ing)?\b|\battempt \d+", re.I)


def local_bin_dirs(project_dir: Path | None = None) -> list[Path]:
    """Project-local folders searched after PATH."""
    dirs = [Path(project_dir) if project_dir else Path.cwd(), _ROOT]
    return list(dict.fromkeys(d / "tools" / sub for d in dirs for sub in ("node_modules/.bin", "aider-venv/bin")))


def find_binary(binary: str, extra_dirs: list[Path] | None = None) -> str | None:
    if os.sep in binary:
        return binary if os.access(binary, os.X_OK) else None
    found = shutil.which(binary)
    if found:
        return found
    for d in extra_dirs or local_bin_dirs():
        cand = d / binary
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return None


def plain(text: str) -> str:
    """Text without ANSI colour and cursor codes."""
    return _ANSI.sub("", text)


def error_summary(lines: list[str]) -> str:
    """One line from what a CLI printed when it failed: the `message` of a JSON error object if it
    printed one (even over several lines), else the last line that says something."""
    whole = plain("\n".join(lines))
    code = re.search(r'"(?:code|status|status_code)"\s*:\s*(4\d\d|5\d\d)\b', whole)
    prefix = f"HTTP {code.group(1)}: " if code else ""
    for m in reversed(list(re.finditer(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"', whole))):
        try:
            msg = json.loads(f'"{m.group(1)}"')
        except ValueError:
            msg = m.group(1)
        inner = re.search(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"', msg)  # an error nested as text
        if inner:
            msg = inner.group(1)
        if msg.strip():
            return prefix + " ".join(msg.split())
    for line in reversed(whole.splitlines()):
        if re.search(r"[A-Za-z0-9]", line) and not line.strip().startswith("at "):
            return " ".join(line.split())
    return ""


@dataclass
class RunState:
    """What one CLI invocation produced."""

    lines: list[str] = field(default_factory=list)
    text: str | None = None  # the final answer, when the CLI reports one explicitly
    usage: Usage = field(default_factory=Usage)
    session_id: str | None = None
    error: str | None = None
    fatal: bool = False  # stop the process now: it reported an error it would only retry or hide
    read_only: bool = False  # the step's tools cannot write: ask the CLI for its read-only mode
    home: Path | None = None  # the engine-managed home, when an endpoint is configured
    retries: int = 0  # endpoint retries the CLI reported
    sandboxed: bool = False  # the OS sandbox confines it (then a CLI's own sandbox is redundant)


class CLIAgent(Agent):
    """Base for CLI agents: subclasses give the command line and how to read its output."""

    binary = ""
    install_hint = ""
    default_name = ""
    key_var = ""  # the variable the CLI reads its API key from
    own_vars: tuple[str, ...] = ()  # variables of its own passed through (keys, endpoints, options)
    home_paths: tuple[str, ...] = ()  # its state under the user's HOME (writable in the sandbox)

    def __init__(self, *, name: str | None = None, model: str | None = None, binary: str | None = None,
                 timeout: float = 1800.0, idle_timeout: float = 300.0, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, max_validation_retries: int = 3,
                 search_dirs: list[Path] | None = None, api_base: str | None = None, api_key_env: str | None = None,
                 max_retries: int | None = None, state_dir: Path | None = None) -> None:
        self.name = name or self.default_name
        self.model = model
        self.binary = binary or self.binary
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.max_validation_retries = max_validation_retries
        self.search_dirs = search_dirs
        self.api_base = api_base  # the model endpoint, configured into the CLI (engine-managed home)
        self.api_key_env = api_key_env  # where its key is read from (else the CLI's usual variable)
        self.max_retries = 1 if max_retries is None else max_retries  # the CLI's own retries of a failing endpoint
        self.state_dir = Path(state_dir) if state_dir else None

    def path(self) -> str | None:
        return find_binary(self.binary, self.search_dirs)

    def available(self) -> tuple[bool, str]:
        if self.path():
            return True, ""
        return False, f"`{self.binary}` not found on PATH or in tools/: {self.install_hint}"

    # -- subclass hooks ------------------------------------------------------------------
    @abc.abstractmethod
    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        """The argv of one invocation."""

    def interactive(self, exe: str, session: str | None, workdir: Path) -> list[str]:
        """The argv that opens the CLI's interactive mode on a saved session (for hijack)."""
        raise AgentError(f"{self.name}: hijacking a session is not supported for this CLI")

    def configure(self, home: Path) -> dict[str, str]:
        """Write the CLI's own configuration for the managed endpoint under `home`; returns variables."""
        return {}

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        emit(AgentEvent(kind="message", text=line, agent=self.name))

    def on_stderr(self, line: str, st: RunState, emit: Emit) -> None:
        """A line on stderr: by default, retries are said live (the app shows what a CLI is doing)."""
        if _RETRY_LINE.search(line):
            emit(AgentEvent(kind="retry", agent=self.name, text=line[:300], data={"reason": "provider",
                                                                                  "stream": "stderr"}))

    def give_up(self, st: RunState, error: str, emit: Emit) -> None:
        """The endpoint failed once more: retry (said live) within `max_retries`, then stop the CLI."""
        st.retries += 1
        if st.retries > self.max_retries:
            st.error, st.fatal = st.error or error, True
        else:
            emit(AgentEvent(kind="retry", agent=self.name, text=f"the endpoint failed ({error[:200]}); "
                            f"{self.name} retries ({st.retries}/{self.max_retries})",
                            data={"reason": "provider", "attempt": st.retries}))

    def finish(self, st: RunState) -> str:
        """The final answer text once the process has exited."""
        return st.text if st.text is not None else "\n".join(st.lines)

    def stdin_text(self, prompt: str) -> str | None:
        return None

    supports_resume = False

    # -- environment, home and sandbox ---------------------------------------------------
    def api_key(self) -> str | None:
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return os.environ.get(self.key_var) if self.key_var else None

    def managed_home(self) -> Path | None:
        """The engine-managed home (when an endpoint is configured and a state folder known)."""
        if not (self.api_base and self.state_dir):
            return None
        home = self.state_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        return home

    def process_env(self, home: Path | None) -> dict[str, str]:
        """Allowlist + the CLI's own variables + the managed configuration + `env` from settings."""
        env = tool_env([*self.passthrough, *self.own_vars, *([self.api_key_env] if self.api_key_env else [])])
        key = self.api_key()
        if key and self.key_var:
            env[self.key_var] = key
        if home is not None:
            env["HOME"] = str(home)
            env.update(self.configure(home))
        env.update(self.env)
        return env

    def policy(self, home: Path | None, env: dict[str, str]) -> Any:
        from engine.sandbox import Policy

        scope = procs.current()
        base = scope.sandbox if scope is not None and scope.sandbox is not None else Policy()
        mode = self.sandbox_mode or base.mode
        network = self.network or ("endpoint" if self.api_base else "full")
        user_home = Path(env.get("HOME") or os.path.expanduser("~"))
        writable = [home] if home is not None else []
        for rel in self.home_paths if home is None else ():
            p = user_home / rel
            if not p.exists() and not p.suffix:
                p.mkdir(parents=True, exist_ok=True)  # so the sandbox can bind it writable
            if p.exists():
                writable.append(p)
        return Policy(mode=mode, network=network, endpoints=[self.api_base] if self.api_base else [],
                      writable=writable)

    def hijack_env(self, home: Path | None) -> dict[str, str]:
        """The environment of an interactive session (the person's terminal variables kept)."""
        env = {**os.environ, **self.process_env(home)}
        return env

    # -- the run -----------------------------------------------------------------------
    async def run(self, prompt: str, *, output: type[BaseModel] | None, workdir: Path, emit: Emit,
                  tools: Any = None) -> AgentResult:
        from engine.tools import is_read_only

        try:
            return await self._run(prompt, output, Path(workdir), emit, is_read_only(tools))
        except AgentError as e:
            emit(AgentEvent(kind="error", text=str(e), agent=self.name, data={"type": type(e).__name__}))
            raise

    async def _run(self, prompt: str, output: type[BaseModel] | None, workdir: Path, emit: Emit,
                   read_only: bool = False) -> AgentResult:
        exe = self.path()
        if not exe:
            raise AgentUnavailable(f"{self.name}: {self.available()[1]}")
        started = time.monotonic()
        base = prompt + (schema_instructions(output) if output is not None else "")
        ask, resume = base, None
        usage = Usage(model=self.model or "", agent=self.name)
        for attempt in range(1, self.max_validation_retries + 2):
            st = RunState(usage=Usage(model=self.model or "", agent=self.name), read_only=read_only)
            await self._exec(exe, ask, Path(workdir), resume, st, emit)
            text = self.finish(st).strip()
            usage = usage + st.usage
            if output is None:
                return self._result(text, text, usage, started, "none", attempt)
            value, errors = validate_answer(output, text)
            if value is not None:
                return self._result(value, text, usage, started, "prompt_schema", attempt)
            if attempt > self.max_validation_retries:
                raise OutputInvalid(f"{self.name}: output still invalid after {attempt} attempts: "
                                    f"{' '.join(errors.split())[:300]}", errors=errors, text=text)
            emit(AgentEvent(kind="retry", agent=self.name, text=f"output invalid; asking for a correction: {errors}",
                            data={"reason": "validation", "attempt": attempt, "errors": errors}))
            if self.supports_resume and st.session_id:
                ask, resume = correction_message(errors, output), st.session_id
            else:
                ask = f"{base}\n\nYour previous answer was:\n{text[-4000:]}\n\n{correction_message(errors)}"
        raise AssertionError("unreachable")

    def _result(self, output: Any, text: str, usage: Usage, started: float, mode: Any, attempts: int) -> AgentResult:
        usage = usage.model_copy(update={"duration_s": time.monotonic() - started})
        return AgentResult(output=output, text=text, usage=usage, structured_mode=mode, attempts=attempts)

    def session_note(self, st: RunState, exe: str, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
        """What `smithers hijack` needs to reopen this attempt's session."""
        return {"id": st.session_id, "cli": self.kind(), "agent": self.name, "binary": exe, "workdir": str(workdir),
                "home": str(st.home) if st.home else None}

    @classmethod
    def kind(cls) -> str:
        return next((k for k, c in CLI_AGENTS.items() if c is cls), cls.default_name)

    async def _exec(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState, emit: Emit) -> None:
        from engine.sandbox import SandboxUnavailable, wrap

        st.home = self.managed_home()
        env = self.process_env(st.home)
        policy = self.policy(st.home, env)
        policy.read_only = st.read_only
        st.sandboxed = policy.active()
        cmd = self.command(exe, prompt, workdir, resume, st)
        stdin = self.stdin_text(prompt)
        scope = procs.current()
        if scope is not None:
            env[procs.TAG_VAR] = scope.tag
        try:
            wrapped = await wrap(cmd, workdir, policy)
        except SandboxUnavailable as e:
            raise AgentUnavailable(f"{self.name}: {e}") from None
        if wrapped.note and scope is not None:
            scope.note("sandbox", wrapped.note)
        try:
            proc = await asyncio.create_subprocess_exec(
                *wrapped.argv, cwd=str(workdir), env=env, limit=64 * 1024 * 1024,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, **procs.spawn_kwargs())
        except BaseException:
            await wrapped.close()
            raise
        procs.record(scope, proc.pid, self.name)
        err_tail: list[str] = []

        async def drain_stderr() -> None:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                line = plain(raw.decode("utf-8", "replace").rstrip())
                err_tail.append(line)
                del err_tail[:-40]
                if line.strip():
                    self.on_stderr(line, st, emit)
                    if st.fatal and proc.returncode is None:  # stop a CLI that would retry forever
                        try:
                            os.kill(proc.pid, signal.SIGTERM)
                        except ProcessLookupError:
                            pass

        err_task = asyncio.create_task(drain_stderr())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        rc: int | None = None
        try:
            if stdin is not None and proc.stdin is not None:
                proc.stdin.write(stdin.encode())
                await proc.stdin.drain()
                proc.stdin.close()
            assert proc.stdout is not None
            while not st.fatal:
                left = deadline - loop.time()
                if left <= 0:
                    raise AgentError(f"{self.name}: timed out after {self.timeout:g}s; the process was killed")
                try:
                    raw = await asyncio.wait_for(proc.stdout.readline(), min(left, self.idle_timeout))
                except asyncio.TimeoutError:
                    if deadline - loop.time() <= 0:
                        raise AgentError(f"{self.name}: timed out after {self.timeout:g}s; the process was killed")
                    raise AgentError(f"{self.name}: no output for {self.idle_timeout:g}s (idle timeout); "
                                     "the process was killed") from None
                if not raw:
                    break
                line = plain(raw.decode("utf-8", "replace").rstrip("\n"))
                st.lines.append(line)
                if line.strip():
                    self.on_line(line, st, emit)
            if not st.fatal:
                rc = await asyncio.wait_for(proc.wait(), max(1.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise AgentError(f"{self.name}: timed out after {self.timeout:g}s; the process was killed") from None
        finally:
            if proc.returncode is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)  # the guard ends the CLI and all it started
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 5)
                except (ProcessLookupError, asyncio.TimeoutError):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    await proc.wait()
            try:
                await asyncio.wait_for(err_task, 2)
            except asyncio.TimeoutError:
                err_task.cancel()
            procs.forget(scope, proc.pid)
            await wrapped.close()
            if scope is not None and st.session_id:
                scope.note("session", self.session_note(st, exe, workdir, env))
        for e in err_tail[-5:]:
            if e.strip():
                emit(AgentEvent(kind="message", text=e, agent=self.name, data={"stream": "stderr"}))
        if rc != 0 or st.error:
            why = (error_summary([st.error]) or st.error) if st.error else (
                error_summary(err_tail) or error_summary(st.lines[-20:]))
            code = f"exit {rc}" if rc is not None else "stopped"
            raise AgentError(f"{self.name}: `{self.binary}` failed ({code}): {' '.join(why.split())[:300]}")


def _json_line(line: str) -> dict | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


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
        obj = _json_line(line)
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
        obj = _json_line(line)
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
            if _RETRY_LINE.search(msg):
                emit(AgentEvent(kind="retry", agent=self.name, text=msg[:300], data={"reason": "provider"}))
        u = obj.get("usage") if typ == "turn.completed" else None
        if u:
            st.usage = st.usage + Usage(input_tokens=int(u.get("input_tokens", 0) or 0),
                                        output_tokens=int(u.get("output_tokens", 0) or 0))
        if typ in ("turn.failed", "error"):
            err = obj.get("error")
            st.error = str(err.get("message") if isinstance(err, dict) else obj.get("message") or err)
            st.error = error_summary([st.error]) or st.error


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
        obj = _json_line(line)
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
            kind = "retry" if _RETRY_LINE.search(msg) else "message"
            emit(AgentEvent(kind=kind, agent=self.name, text=msg[:300], data={"severity": obj.get("severity")}))
        elif typ == "result":
            stats = obj.get("stats") or {}
            st.usage = st.usage + Usage(input_tokens=int(stats.get("input_tokens", 0) or 0),
                                        output_tokens=int(stats.get("output_tokens", 0) or 0))
            if obj.get("status") != "success":
                err = obj.get("error") or {}
                st.error = str(err.get("message") if isinstance(err, dict) else err) or "failed"


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
        obj = _json_line(line)
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
        obj = _json_line(line)
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


CLI_AGENTS: dict[str, type[CLIAgent]] = {
    "claude-code": ClaudeCodeAgent, "codex": CodexAgent, "gemini": GeminiAgent, "aider": AiderAgent,
    "opencode": OpenCodeAgent, "pi": PiAgent,
}
