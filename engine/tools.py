"""Tools for LLM agents, sandboxed to a working directory.

Every path is resolved inside the working directory; anything else (absolute paths, `..`
escapes, symlinks leading out, a file swapped for a symlink between check and use) is
refused with a message the model can act on, and nothing under a `.git` (folder or file) anywhere
in it may be written. Tool failures are returned as the tool's text result, never raised into the
agent loop. File tools run in worker threads, never on the event loop; grep uses RE2 (linear
time). run_shell gets an allowlisted environment, runs under the process guard (every descendant
ends with it) and, where the OS allows, inside the bubblewrap sandbox (engine/sandbox.py).
Everything a tool returns has known secret values redacted.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import json
import os
import signal
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import re2
from pydantic import BaseModel, ConfigDict

from . import procs
from .sandbox import Policy, SandboxUnavailable, wrap
from .secrets import is_secret_name, redact, tool_env

OUTPUT_CAP = 200_000  # bytes of shell output / characters of a file kept
SHELL_TIMEOUT = 120.0
GREP_TIME_LIMIT = 30.0  # seconds of searching before grep stops and says so


class ToolError(Exception):
    """A tool refused or failed; the message is shown to the model as the tool result."""


class SandboxError(ToolError):
    """A path would leave the working directory."""


@dataclass
class ToolContext:
    """What a tool call may touch: the working directory and shell settings."""

    workdir: Path
    emit: Callable[[str, str, dict[str, Any]], None] | None = None  # (kind, text, data) for shell output
    shell_timeout: float = SHELL_TIMEOUT
    output_cap: int = OUTPUT_CAP
    pass_secrets: bool = False
    env: dict[str, str] = field(default_factory=dict)  # extra variables for run_shell
    passthrough: list[str] = field(default_factory=list)  # variables passed to run_shell besides the allowlist
    sandbox: Policy | None = None  # None: the running step's policy, else the default ("auto")
    scope: procs.StepScope | None = field(default_factory=procs.current)  # the step, for tagging processes


class Tool(BaseModel):
    """A callable tool: name, description, JSON-schema parameters and an async function."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Awaitable[str] | str]  # plain functions run in a worker thread

    def spec(self) -> dict[str, Any]:
        """The OpenAI `tools` entry for this tool."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def openai_tool_specs(tools: list[Tool]) -> list[dict[str, Any]]:
    return [t.spec() for t in tools]


async def call_tool(tools: list[Tool], name: str, arguments: str | dict[str, Any], ctx: ToolContext) -> tuple[bool, str]:
    """Run one tool call; returns (ok, text). Never raises for tool-level failures."""
    tool = next((t for t in tools if t.name == name), None)
    if tool is None:
        return False, f"error: unknown tool {name!r}; available: {', '.join(t.name for t in tools)}"
    try:
        args = json.loads(arguments or "{}") if isinstance(arguments, str) else dict(arguments)
        if not isinstance(args, dict):
            raise ValueError("expected a JSON object")
    except ValueError as e:
        return False, f"error: arguments for {name} were not a valid JSON object ({e}); send them again"
    missing = [k for k in tool.parameters.get("required", []) if k not in args]
    if missing:
        return False, f"error: {name} needs argument(s) {', '.join(missing)}"
    known = set(tool.parameters.get("properties", {}))
    kwargs = {k: v for k, v in args.items() if k in known}
    try:
        if inspect.iscoroutinefunction(tool.fn):
            out = await tool.fn(ctx, **kwargs)
        else:  # file work never blocks the event loop
            out = await asyncio.to_thread(tool.fn, ctx, **kwargs)
        return True, redact(out)
    except ToolError as e:
        return False, redact(f"error: {e}")
    except (OSError, TypeError, ValueError, UnicodeError) as e:
        return False, redact(f"error: {name} failed: {e}")


# -- path sandbox ------------------------------------------------------------------------

def resolve_inside(workdir: Path, path: str) -> tuple[str, str]:
    """Check `path` (relative) lies inside `workdir`; returns (real root, resolved relative path).

    The relative path has symlinks resolved, so opening it must meet no symlink at all.
    """
    root = os.path.realpath(workdir)
    p = (path or ".").strip()
    if p.startswith("~") or os.path.isabs(p):
        raise SandboxError(f"{path!r} is an absolute path; use a path relative to the working directory, e.g. 'src/main.py'")
    norm = os.path.normpath(p)
    if norm == ".." or norm.startswith(".." + os.sep):
        raise SandboxError(f"{path!r} goes outside the working directory ('..'); use a path inside it")
    real = os.path.realpath(os.path.join(root, norm))
    if real != root and not real.startswith(root + os.sep):
        raise SandboxError(f"{path!r} is a symlink (or under one) that leads outside the working directory; refused")
    return root, os.path.relpath(real, root)


def refuse_git(path: str, rel: str) -> None:
    """Writes under `.git` (a repository's folder, or a worktree's `.git` file) anywhere in the
    working directory are refused: `.git/config` or a hook would run commands at the next git call."""
    if any(part.casefold() == ".git" for part in Path(rel).parts):
        raise SandboxError(f"{path!r} is inside .git; writing there is refused (git config and hooks can run "
                           "commands). Change the working tree, not the repository's metadata")


def _walk_open(root: str, rel: str, flags: int, mode: int = 0o644, make_dirs: bool = False) -> int:
    """Open root/rel component by component, refusing any symlink met on the way."""
    parts = [] if rel == "." else rel.split(os.sep)
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                if last:
                    return os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
                try:
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                except FileNotFoundError:
                    if not make_dirs:
                        raise
                    os.mkdir(part, 0o755, dir_fd=dfd)
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(os.path.join(root, *parts[: i + 1])):
                    raise SandboxError(f"{rel!r} changed into a symlink while being used; refused") from None
                raise
            os.close(dfd)
            dfd = nfd
        return os.dup(dfd)
    finally:
        os.close(dfd)


def _check_fd(root: str, fd: int, rel: str) -> None:
    """After opening, confirm the descriptor really points inside root (Linux /proc check)."""
    link = f"/proc/self/fd/{fd}"
    if os.path.exists(link):
        real = os.path.realpath(link)
        if real != root and not real.startswith(root + os.sep):
            os.close(fd)
            raise SandboxError(f"{rel!r} resolved outside the working directory while being used; refused")


def open_inside(workdir: Path, path: str, flags: int, mode: int = 0o644, make_dirs: bool = False) -> tuple[int, str]:
    """Resolve and open a path inside workdir safely; returns (fd, relative path). Opening for
    writing anything under a `.git` is refused."""
    root, rel = resolve_inside(workdir, path)
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC):
        refuse_git(path, rel)
        refuse_git(path, os.path.normpath(path.strip()))  # the name as given, before symlinks resolve
    try:
        fd = _walk_open(root, rel, flags, mode, make_dirs)
    except FileNotFoundError:
        raise ToolError(f"{path!r} does not exist; use list_dir to see what is there") from None
    except IsADirectoryError:
        raise ToolError(f"{path!r} is a directory; use list_dir") from None
    _check_fd(root, fd, rel)
    return fd, rel


def _looks_binary(data: bytes) -> bool:
    if b"\x00" in data[:8192]:
        return True
    try:
        data[:8192].decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(data[:8192]) - 4  # a multibyte char cut at the boundary is fine
    return False


def _require_regular(fd: int, path: str) -> None:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a directory; use list_dir" if stat.S_ISDIR(mode) else "not a regular file"
        raise ToolError(f"{path!r} is {what}")


def _read_all(fd: int, cap: int) -> tuple[bytes, int]:
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return f.read(cap + 1), size


# -- the tools ---------------------------------------------------------------------------

def read_file(ctx: ToolContext, path: str, start_line: int = 1, max_lines: int = 2000) -> str:
    fd, rel = open_inside(ctx.workdir, path, os.O_RDONLY | os.O_NONBLOCK)
    _require_regular(fd, path)
    data, size = _read_all(fd, ctx.output_cap)
    if _looks_binary(data):
        return f"{rel} is a binary file ({size} bytes); its contents are not shown"
    text = data[: ctx.output_cap].decode("utf-8", "replace")
    lines = text.splitlines(keepends=True)
    start = max(1, int(start_line))
    chunk = lines[start - 1 : start - 1 + int(max_lines)]
    out = "".join(chunk)
    notes = []
    if size > ctx.output_cap:
        notes.append(f"[file truncated: showing the first {ctx.output_cap} of {size} bytes]")
    if start > 1 or start - 1 + len(chunk) < len(lines):
        notes.append(f"[lines {start}-{start - 1 + len(chunk)} of {len(lines)}; use start_line to see more]")
    return out + ("\n" + "\n".join(notes) if notes else "") if out or notes else f"{rel} is empty"


def write_file(ctx: ToolContext, path: str, content: str) -> str:
    fd, rel = open_inside(ctx.workdir, path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, make_dirs=True)
    _require_regular(fd, path)
    os.ftruncate(fd, 0)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    return f"wrote {len(content.encode())} bytes to {rel}"


def edit_file(ctx: ToolContext, path: str, search: str, replace: str) -> str:
    if not search:
        raise ToolError("search text is empty; give the exact text to replace (use write_file for new files)")
    fd, rel = open_inside(ctx.workdir, path, os.O_RDWR | os.O_NONBLOCK)
    _require_regular(fd, path)
    with os.fdopen(fd, "r+b") as f:
        data = f.read()
        if _looks_binary(data):
            raise ToolError(f"{rel} is a binary file; it cannot be edited as text")
        text = data.decode("utf-8")
        n = text.count(search)
        if n == 0:
            raise ToolError(f"search text not found in {rel}; read_file it and copy the exact text, including whitespace")
        if n > 1:
            raise ToolError(f"search text occurs {n} times in {rel}; include more surrounding lines so it is unique")
        new = text.replace(search, replace, 1).encode("utf-8")
        f.seek(0)
        f.write(new)
        f.truncate()
    return f"edited {rel}: replaced 1 occurrence"


def list_dir(ctx: ToolContext, path: str = ".") -> str:
    fd, rel = open_inside(ctx.workdir, path, os.O_RDONLY | os.O_DIRECTORY)
    root = os.path.realpath(ctx.workdir)
    try:
        names = sorted(os.listdir(fd))
    finally:
        os.close(fd)
    out = []
    for name in names:
        full = os.path.join(root, rel, name)
        if os.path.islink(full):
            target = os.path.realpath(full)
            inside = target == root or target.startswith(root + os.sep)
            out.append(f"{name} -> {'(link inside)' if inside else '(link outside the working directory; refused)'}")
        elif os.path.isdir(full):
            out.append(name + "/")
        else:
            out.append(f"{name} ({os.path.getsize(full)} bytes)")
    return "\n".join(out) if out else f"{rel} is empty"


def grep(ctx: ToolContext, pattern: str, path: str = ".", max_results: int = 200) -> str:
    """RE2 syntax (linear time whatever the pattern: no backreferences or lookaround)."""
    try:
        rx = re2.compile(pattern)
    except re2.error as e:
        raise ToolError(f"invalid regular expression {pattern!r} for RE2 ({e}); backreferences and lookaround "
                        "are not supported") from None
    deadline = time.monotonic() + GREP_TIME_LIMIT
    root, rel = resolve_inside(ctx.workdir, path)
    start = os.path.join(root, rel)
    files = [start] if os.path.isfile(start) else []
    for dirpath, dirnames, filenames in os.walk(start) if not files else []:
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", "node_modules", ".venv", "__pycache__"))
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    hits: list[str] = []
    for full in files:
        if time.monotonic() > deadline:
            hits.append(f"[stopped after {GREP_TIME_LIMIT:g}s; narrow the path or the pattern]")
            break
        try:  # never follow links while searching, and stay inside
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            _check_fd(root, fd, full)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                continue
            with os.fdopen(fd, "rb") as f:
                data = f.read(ctx.output_cap)
        except (OSError, SandboxError):
            continue
        if _looks_binary(data):
            continue
        for no, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if rx.search(line):
                hits.append(f"{os.path.relpath(full, root)}:{no}: {line[:300]}")
                if len(hits) >= max_results:
                    return "\n".join(hits) + f"\n[stopped at {max_results} matches; narrow the pattern or path]"
    return "\n".join(hits) if hits else f"no match for {pattern!r}"


def shell_env(pass_secrets: bool = False, extra: dict[str, str] | None = None,
              passthrough: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """The environment for run_shell: the allowlist (PATH, HOME, LANG, TERM, ...), the configured
    pass-through names, and with `pass_secrets` the secret-named variables too; then `extra`."""
    names = list(passthrough) + ([k for k in os.environ if is_secret_name(k)] if pass_secrets else [])
    return tool_env(names, extra)


async def run_shell(ctx: ToolContext, command: str, timeout: float | None = None) -> str:
    limit = min(float(timeout or ctx.shell_timeout), max(ctx.shell_timeout, 600.0))
    scope = ctx.scope
    policy = ctx.sandbox or (scope.sandbox if scope is not None else None)
    root = os.path.realpath(ctx.workdir)
    try:
        wrapped = await wrap(["/bin/sh", "-c", command], Path(root), policy)
    except SandboxUnavailable as e:
        raise ToolError(str(e)) from None
    if wrapped.note and scope is not None:
        scope.note("sandbox", wrapped.note)
    env = shell_env(ctx.pass_secrets, ctx.env, ctx.passthrough)
    if scope is not None:
        env[procs.TAG_VAR] = scope.tag
    try:
        proc = await asyncio.create_subprocess_exec(
            *wrapped.argv, cwd=root, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, **procs.spawn_kwargs())
    except BaseException:
        await wrapped.close()
        raise
    procs.record(scope, proc.pid, "run_shell")
    kept = bytearray()
    total = 0

    async def pump() -> None:
        nonlocal total
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            total += len(chunk)
            room = ctx.output_cap - len(kept)
            if room > 0:
                kept.extend(chunk[:room])
                if ctx.emit:
                    ctx.emit("shell_output", redact(chunk[:room].decode("utf-8", "replace")), {"command": command})

    reader = asyncio.create_task(pump())
    timed_out = False
    try:  # the guard exits once the command and everything it started are gone
        await asyncio.wait_for(proc.wait(), limit)
    except asyncio.TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)  # the guard kills its whole tree, then exits
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), 5)
            except asyncio.TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        try:
            await asyncio.wait_for(reader, 5)
        except asyncio.TimeoutError:
            reader.cancel()
        procs.forget(scope, proc.pid)
        await wrapped.close()
    out = kept.decode("utf-8", "replace")
    notes = []
    if total > len(kept):
        notes.append(f"[output truncated: showed {len(kept)} of {total} bytes]")
    if timed_out:
        notes.append(f"[timed out after {limit:g}s; the command and its children were killed]")
    else:
        notes.append(f"[exit code {proc.returncode}]")
    return (out + ("\n" if out and not out.endswith("\n") else "") + "\n".join(notes)).strip()


def _schema(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required}


_P = {"type": "string", "description": "path relative to the working directory"}

READ_FILE = Tool(name="read_file", description="Read a text file.", fn=read_file, parameters=_schema(
    {"path": _P, "start_line": {"type": "integer", "description": "first line (1-based)"},
     "max_lines": {"type": "integer"}}, ["path"]))
WRITE_FILE = Tool(name="write_file", description="Create or overwrite a file with content.", fn=write_file,
                  parameters=_schema({"path": _P, "content": {"type": "string"}}, ["path", "content"]))
EDIT_FILE = Tool(name="edit_file", fn=edit_file,
                 description="Replace one exact, unique occurrence of `search` with `replace` in a file.",
                 parameters=_schema({"path": _P, "search": {"type": "string"}, "replace": {"type": "string"}},
                                    ["path", "search", "replace"]))
LIST_DIR = Tool(name="list_dir", description="List a directory.", fn=list_dir,
                parameters=_schema({"path": _P}, []))
GREP = Tool(name="grep", description="Search files for a regular expression; prints path:line: text.", fn=grep,
            parameters=_schema({"pattern": {"type": "string"}, "path": _P}, ["pattern"]))
RUN_SHELL = Tool(name="run_shell", fn=run_shell,
                 description="Run a shell command in the working directory; returns output and exit code.",
                 parameters=_schema({"command": {"type": "string"},
                                     "timeout": {"type": "number", "description": "seconds (default 120)"}},
                                    ["command"]))

DEFAULT_TOOLS: list[Tool] = [READ_FILE, WRITE_FILE, EDIT_FILE, LIST_DIR, GREP, RUN_SHELL]
READ_ONLY_TOOLS: list[Tool] = [READ_FILE, LIST_DIR, GREP]  # reviewers and planners: look, don't touch
WRITING_TOOL_NAMES = frozenset({"write_file", "edit_file", "run_shell"})


def is_read_only(tools: list[Tool] | None) -> bool:
    """True when a tool list was given and nothing in it can change files or run commands."""
    return tools is not None and not any(t.name in WRITING_TOOL_NAMES for t in tools)
