"""Coding-agent CLIs (Claude Code, Codex, Gemini CLI, Aider) run as subprocesses in the workdir.

Each streams its stdout as events; the final answer is validated like an LLM's (schema in the
prompt, corrective retries). Binaries are looked up on PATH, then in tools/node_modules/.bin.
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

from engine.agents.base import (Agent, AgentError, AgentEvent, AgentResult, AgentUnavailable, Emit, OutputInvalid,
                                Usage)
from engine.agents.structured import correction_message, schema_instructions, validate_answer

_ROOT = Path(__file__).resolve().parents[2]


def local_bin_dirs(project_dir: Path | None = None) -> list[Path]:
    """Project-local folders searched after PATH."""
    dirs = [Path(project_dir) if project_dir else Path.cwd(), _ROOT]
    return list(dict.fromkeys(d / "tools" / "node_modules" / ".bin" for d in dirs))


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


@dataclass
class RunState:
    """What one CLI invocation produced."""

    lines: list[str] = field(default_factory=list)
    text: str | None = None  # the final answer, when the CLI reports one explicitly
    usage: Usage = field(default_factory=Usage)
    session_id: str | None = None
    error: str | None = None
    read_only: bool = False  # the step's tools cannot write: ask the CLI for its read-only mode


class CLIAgent(Agent):
    """Base for CLI agents: subclasses give the command line and how to read its output."""

    binary = ""
    install_hint = ""
    default_name = ""

    def __init__(self, *, name: str | None = None, model: str | None = None, binary: str | None = None,
                 timeout: float = 1800.0, idle_timeout: float = 300.0, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, max_validation_retries: int = 3,
                 search_dirs: list[Path] | None = None) -> None:
        self.name = name or self.default_name
        self.model = model
        self.binary = binary or self.binary
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.max_validation_retries = max_validation_retries
        self.search_dirs = search_dirs

    def path(self) -> str | None:
        return find_binary(self.binary, self.search_dirs)

    def available(self) -> tuple[bool, str]:
        if self.path():
            return True, ""
        return False, f"`{self.binary}` not found on PATH or in tools/node_modules/.bin: {self.install_hint}"

    # -- subclass hooks ------------------------------------------------------------------
    @abc.abstractmethod
    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        """The argv of one invocation."""

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        emit(AgentEvent(kind="message", text=line, agent=self.name))

    def finish(self, st: RunState) -> str:
        """The final answer text once the process has exited."""
        return st.text if st.text is not None else "\n".join(st.lines)

    def stdin_text(self, prompt: str) -> str | None:
        return None

    supports_resume = False

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

    async def _exec(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState, emit: Emit) -> None:
        cmd = self.command(exe, prompt, workdir, resume, st)
        stdin = self.stdin_text(prompt)
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=str(workdir), env={**os.environ, **self.env}, start_new_session=True, limit=64 * 1024 * 1024,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        err_tail: list[str] = []

        async def drain_stderr() -> None:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                err_tail.append(raw.decode("utf-8", "replace").rstrip())
                del err_tail[:-20]

        err_task = asyncio.create_task(drain_stderr())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            if stdin is not None and proc.stdin is not None:
                proc.stdin.write(stdin.encode())
                await proc.stdin.drain()
                proc.stdin.close()
            assert proc.stdout is not None
            while True:
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
                line = raw.decode("utf-8", "replace").rstrip("\n")
                st.lines.append(line)
                if line.strip():
                    self.on_line(line, st, emit)
            rc = await asyncio.wait_for(proc.wait(), max(1.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise AgentError(f"{self.name}: timed out after {self.timeout:g}s; the process was killed") from None
        finally:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                await proc.wait()
            try:
                await asyncio.wait_for(err_task, 2)
            except asyncio.TimeoutError:
                err_task.cancel()
        for e in err_tail[-5:]:
            if e.strip():
                emit(AgentEvent(kind="message", text=e, agent=self.name, data={"stream": "stderr"}))
        if rc != 0 or st.error:
            why = st.error or next((e for e in reversed(err_tail) if e.strip()), "") or (st.lines[-1] if st.lines else "")
            raise AgentError(f"{self.name}: `{self.binary}` failed (exit {rc}): {' '.join(why.split())[:300]}")


def _json_line(line: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class ClaudeCodeAgent(CLIAgent):
    """`claude -p` with stream-json output; usage and total_cost_usd come from its result line."""

    binary = "claude"
    default_name = "claude-code"
    install_hint = "run `npm install -g @anthropic-ai/claude-code` (or `make agent-clis`)"
    supports_resume = True
    allowed_tools = "Read,Edit,Write,MultiEdit,Bash,Glob,Grep,LS"

    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        cmd = [exe, "-p", "--output-format", "stream-json", "--verbose", "--permission-mode",
               "default" if st.read_only else "acceptEdits",
               "--allowedTools", "Read,Glob,Grep,LS" if st.read_only else self.allowed_tools]
        if self.model:
            cmd += ["--model", self.model]
        if resume:
            cmd += ["--resume", resume]
        return cmd + self.extra_args

    def stdin_text(self, prompt: str) -> str | None:
        return prompt  # via stdin: no argv length limit

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        obj = _json_line(line)
        if obj is None:
            return emit(AgentEvent(kind="message", text=line, agent=self.name))
        kind = obj.get("type")
        st.session_id = obj.get("session_id") or st.session_id
        content = (obj.get("message") or {}).get("content") or []
        if kind == "assistant":
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
    """`codex exec --json`; the last agent message is the answer."""

    binary = "codex"
    default_name = "codex"
    install_hint = "run `npm install -g @openai/codex` (or `make agent-clis`)"

    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        cmd = [exe, "exec", "--json", "--skip-git-repo-check", "--sandbox",
               "read-only" if st.read_only else "workspace-write", "-C", str(workdir)]
        if self.model:
            cmd += ["-m", self.model]
        return cmd + self.extra_args + [prompt]

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        obj = _json_line(line)
        if obj is None:
            return emit(AgentEvent(kind="message", text=line, agent=self.name))
        item = obj.get("item") or obj.get("msg") or {}
        itype = item.get("type") or item.get("item_type")
        if itype == "agent_message":
            st.text = item.get("text") or item.get("message") or ""
            emit(AgentEvent(kind="message", text=st.text, agent=self.name))
        elif itype in ("command_execution", "exec_command_begin") and obj.get("type") != "item.completed":
            emit(AgentEvent(kind="tool_call", agent=self.name, text=str(item.get("command")),
                            data={"name": "shell", "arguments": item.get("command")}))
        elif itype in ("command_execution", "exec_command_end"):
            emit(AgentEvent(kind="tool_result", agent=self.name, text=str(item.get("aggregated_output", ""))[:2000],
                            data={"name": "shell", "ok": item.get("exit_code") in (0, None)}))
        u = obj.get("usage") if obj.get("type") == "turn.completed" else None
        if u:
            st.usage = st.usage + Usage(input_tokens=int(u.get("input_tokens", 0) or 0),
                                        output_tokens=int(u.get("output_tokens", 0) or 0))
        if obj.get("type") in ("turn.failed", "error"):
            st.error = str((obj.get("error") or {}).get("message") if isinstance(obj.get("error"), dict)
                           else obj.get("message") or obj.get("error"))


class GeminiAgent(CLIAgent):
    """`gemini -p` with JSON output ({"response": ..., "stats": ...})."""

    binary = "gemini"
    default_name = "gemini-cli"
    install_hint = "run `npm install -g @google/gemini-cli` (or `make agent-clis`)"

    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        cmd = [exe, "-p", prompt, "--output-format", "json", "--yolo"]
        if self.model:
            cmd += ["-m", self.model]
        return cmd + self.extra_args

    def finish(self, st: RunState) -> str:
        whole = "\n".join(st.lines)
        start = whole.find("{")
        obj = _json_line(whole[start:]) if start >= 0 else None
        if obj is None or "response" not in obj:
            return whole
        for m in ((obj.get("stats") or {}).get("models") or {}).values():
            t = m.get("tokens") or {}
            st.usage = st.usage + Usage(input_tokens=int(t.get("prompt", 0) or 0),
                                        output_tokens=int(t.get("candidates", 0) or 0))
        return str(obj.get("response") or "")


class AiderAgent(CLIAgent):
    """`aider --message ... --yes`; the whole chat output is the answer; cost read from its report."""

    binary = "aider"
    default_name = "aider"
    install_hint = "run `python -m pip install aider-install && aider-install` (or `pipx install aider-chat`)"
    _COST = re.compile(r"Cost:\s*\$([0-9.]+)\s*message")
    _TOKENS = re.compile(r"Tokens:\s*([0-9.]+)(k?)\s*sent,\s*([0-9.]+)(k?)\s*received")

    def command(self, exe: str, prompt: str, workdir: Path, resume: str | None, st: RunState) -> list[str]:
        cmd = [exe, "--message", prompt, "--yes", "--no-auto-commits", "--no-pretty", "--no-stream",
               "--no-check-update", "--no-show-model-warnings", "--analytics-disable"]
        if self.model:
            cmd += ["--model", self.model]
        return cmd + self.extra_args

    def on_line(self, line: str, st: RunState, emit: Emit) -> None:
        emit(AgentEvent(kind="message", text=line, agent=self.name))
        if m := self._COST.search(line):
            st.usage = st.usage + Usage(cost_usd=float(m.group(1)))
        if m := self._TOKENS.search(line):
            def n(v: str, k: str) -> int:
                return int(float(v) * (1000 if k else 1))
            st.usage = st.usage + Usage(input_tokens=n(m.group(1), m.group(2)), output_tokens=n(m.group(3), m.group(4)))


CLI_AGENTS: dict[str, type[CLIAgent]] = {
    "claude-code": ClaudeCodeAgent, "codex": CodexAgent, "gemini": GeminiAgent, "aider": AiderAgent,
}
