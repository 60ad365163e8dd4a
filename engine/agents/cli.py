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
RETRY_LINE = re.compile(r"\bretry(ing)?\b|\battempt \d+", re.I)


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
        if RETRY_LINE.search(line):
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
                    raise AgentError(f"{self.name}: timed out after {self.timeout:g}s; the process was killed") from None
                try:
                    raw = await asyncio.wait_for(proc.stdout.readline(), min(left, self.idle_timeout))
                except asyncio.TimeoutError:
                    if deadline - loop.time() <= 0:
                        raise AgentError(f"{self.name}: timed out after {self.timeout:g}s; the process was killed") from None
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
        for tail in err_tail[-5:]:
            if tail.strip():
                emit(AgentEvent(kind="message", text=tail, agent=self.name, data={"stream": "stderr"}))
        if rc != 0 or st.error:
            why = (error_summary([st.error]) or st.error) if st.error else (
                error_summary(err_tail) or error_summary(st.lines[-20:]))
            code = f"exit {rc}" if rc is not None else "stopped"
            raise AgentError(f"{self.name}: `{self.binary}` failed ({code}): {' '.join(why.split())[:300]}")


def json_line(line: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


# The six CLIs live in their own modules; re-exported here for `from engine.agents.cli import ...`.
from engine.agents.clis import (CLI_AGENTS, AiderAgent, ClaudeCodeAgent, CodexAgent, GeminiAgent,  # noqa: E402
                                OpenCodeAgent, PiAgent)

__all__ = ["CLIAgent", "RunState", "CLI_AGENTS", "AiderAgent", "ClaudeCodeAgent", "CodexAgent", "GeminiAgent",
           "OpenCodeAgent", "PiAgent", "find_binary", "local_bin_dirs", "plain", "error_summary"]
