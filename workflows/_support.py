"""Helpers shared by the built-in workflows: prompt texts, slugs, test-command detection, running a
command as a real subprocess, and the few git reads the workflows need.

Nothing here runs while a workflow body renders: prompts are read once at import, everything else
is called from compute tasks (which may do I/O).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import field_validator

PROMPT_DIR = Path(__file__).parent / "prompts"


def _load_prompts() -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(PROMPT_DIR.glob("*.md"))}


PROMPTS: dict[str, str] = _load_prompts()


def prompt_text(name: str, **values: Any) -> str:
    """The prompt `prompts/<name>.md` with its {placeholders} filled in."""
    try:
        template = PROMPTS[name]
    except KeyError:
        raise KeyError(f"no prompt {name!r} in {PROMPT_DIR}: add {name}.md there") from None
    return template.format_map({k: ("" if v is None else v) for k, v in values.items()}).strip() + "\n"


# -- text -----------------------------------------------------------------------------------

def one_agent_prompt(template: str, key: str, text: str, context: str = "") -> Callable[[Any], str]:
    """The prompt of a one-step agent workflow (plan, research): the template, the goal or
    question under `key`, and an optional context section."""
    def make(t: Any) -> str:
        extra = f"\n## Context\n\n{context.strip()}\n" if context.strip() else ""
        return prompt_text(template, **{key: text.strip()}, context=extra)
    return make


def slugify(text: str, fallback: str = "item", limit: int = 48) -> str:
    """A lowercase [a-z0-9-] slug, usable in node ids, branch names and paths."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    s = s[:limit].rstrip("-")
    return s or fallback


def truncate_middle(text: str, limit: int = 8000, head: int | None = None) -> str:
    """Keep the start and the end of a long text (failures are usually at the end)."""
    if len(text) <= limit:
        return text
    head = limit // 4 if head is None else head
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut ...]\n{text[-tail:]}"


def first_lines(text: str, n: int = 3, width: int = 240) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    out = " / ".join(lines[:n])
    return out if len(out) <= width else out[: width - 1] + "…"


def failure_excerpt(output: str, width: int = 300) -> str:
    """The most telling lines of a failed test run, for a one-line reason."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    keys = ("FAILED", "Error", "error", "assert", "failed", "panicked", "FAIL")
    picked = [line for line in lines if any(k in line for k in keys)]
    text = " / ".join((picked or lines[-3:])[-3:])
    return text if len(text) <= width else text[: width - 1] + "…"


# -- commands -------------------------------------------------------------------------------

@dataclass
class CommandRun:
    command: str
    exit_code: int | None  # None when it timed out or could not start
    output: str  # stdout and stderr together, the middle cut when long
    timed_out: bool
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def command_env() -> dict[str, str]:
    """The environment for a project's own commands: ours, minus Smithers settings and pytest's
    per-test marker, and without writing .pyc files into the worktree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_") and k != "PYTEST_CURRENT_TEST"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


async def run_command(command: str, cwd: Path, timeout: float = 600.0, keep: int = 12000) -> CommandRun:
    """Run a shell command in `cwd` as a real subprocess in its own process group.

    The group is killed on timeout and when the step is cancelled, so nothing is left running.
    """
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_shell(
            command, cwd=str(cwd), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True, env=command_env())
    except OSError as e:
        return CommandRun(command, None, f"could not start `{command}`: {e}", False, 0.0)
    head, tail, total = bytearray(), bytearray(), 0
    head_cap, tail_cap = keep // 4, keep - keep // 4

    async def pump() -> None:
        nonlocal total
        assert proc.stdout is not None
        while True:
            chunk = await proc.stdout.read(65536)
            if not chunk:
                break
            total += len(chunk)
            room = head_cap - len(head)
            if room > 0:
                head.extend(chunk[:room])
                chunk = chunk[room:]
            tail.extend(chunk)
            if len(tail) > tail_cap:
                del tail[: len(tail) - tail_cap]
        await proc.wait()

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    timed_out = False
    try:
        await asyncio.wait_for(pump(), timeout)
    except asyncio.TimeoutError:
        timed_out = True
        kill()
        await proc.wait()
    except BaseException:
        kill()
        raise
    kept = len(head) + len(tail)
    text = head.decode("utf-8", "replace")
    if total > kept:
        text += f"\n[... {total - kept} bytes cut ...]\n"
    text += tail.decode("utf-8", "replace")
    if timed_out:
        text += f"\n[timed out after {timeout:g}s: the command was killed]"
    return CommandRun(command, None if timed_out else proc.returncode, text, timed_out,
                      round(time.monotonic() - started, 3))


def _has_pytest_config(root: Path) -> bool:
    if (root / "pytest.ini").is_file() or (root / "conftest.py").is_file():
        return True
    for name, marker in (("pyproject.toml", "[tool.pytest"), ("setup.cfg", "[tool:pytest]"), ("tox.ini", "[pytest]")):
        p = root / name
        if p.is_file() and marker in p.read_text(errors="replace"):
            return True
    return False


def _has_python_tests(root: Path) -> bool:
    if _has_pytest_config(root):
        return True
    for d in ("tests", "test"):
        if (root / d).is_dir() and any((root / d).rglob("test*.py")):
            return True
    return any(root.glob("test_*.py")) or any(root.glob("*_test.py"))


def _python_for(root: Path) -> str:
    """The project's own interpreter when it has a virtualenv (in the worktree or the main checkout);
    else `python3` as the project's shell finds it — never Smithers' own interpreter, whose
    virtual environment holds Smithers' packages, not the project's."""
    for base in (root, main_checkout(root)):
        if base is None:
            continue
        for rel in (".venv/bin/python", "venv/bin/python", ".venv/Scripts/python.exe"):
            if (base / rel).is_file():
                return shlex.quote(str(base / rel))
    return "python3"


def detect_test_command(root: Path) -> str | None:
    """The project's test command, guessed from the files at `root`; None when there is none."""
    root = Path(root)
    pkg = root / "package.json"
    if pkg.is_file():
        try:
            script = (json.loads(pkg.read_text()).get("scripts") or {}).get("test", "")
        except ValueError:
            script = ""
        if script and "no test specified" not in script:
            return "npm test"
    if _has_python_tests(root):
        return f"{_python_for(root)} -m pytest -q -p no:cacheprovider"
    if (root / "Cargo.toml").is_file():
        return "cargo test"
    if (root / "go.mod").is_file():
        return "go test ./..."
    mk = root / "Makefile"
    if mk.is_file() and re.search(r"^test\s*:", mk.read_text(errors="replace"), re.M):
        return "make test"
    return None


# -- git ------------------------------------------------------------------------------------

class GitFailed(RuntimeError):
    pass


def git(cwd: Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    """`git *args` in `cwd`; its stdout. Raises GitFailed with git's own reason otherwise."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "smithers"),
           "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "smithers@localhost"),
           "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "smithers"),
           "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "smithers@localhost")}
    try:
        done = subprocess.run(["git", "-c", "core.quotepath=off", *args], cwd=str(cwd), capture_output=True,
                              text=True, errors="replace", env=env, timeout=120)
    except FileNotFoundError:
        raise GitFailed("git is not installed: install git and try again") from None
    if done.returncode not in ok:
        reason = first_lines(done.stderr or done.stdout, 2) or f"exit {done.returncode}"
        raise GitFailed(f"git {args[0]} failed in {cwd}: {reason}")
    return done.stdout


def repo_root(path: Path) -> Path:
    try:
        return Path(git(path, "rev-parse", "--show-toplevel").strip()).resolve()
    except GitFailed:
        raise GitFailed(f"{path} is not inside a git repository: run `git init` and make a first commit") from None


def main_checkout(path: Path) -> Path | None:
    """The repository's main worktree (where .venv and .smithers usually live), or None."""
    try:
        common = Path(git(path, "rev-parse", "--path-format=absolute", "--git-common-dir").strip())
    except (GitFailed, OSError):
        return None
    return common.parent if common.name == ".git" else None


def head_commit(path: Path) -> str:
    try:
        return git(path, "rev-parse", "--verify", "HEAD^{commit}").strip()
    except GitFailed:
        raise GitFailed(f"the repository at {path} has no commits yet: make a first commit") from None


def current_branch(path: Path) -> str | None:
    out = subprocess.run(["git", "symbolic-ref", "--short", "-q", "HEAD"], cwd=str(path), capture_output=True,
                         text=True).stdout.strip()
    return out or None


# Smithers' own folders are never part of a change under review.
NOT_CHANGES = ("--", ".", ":(exclude).smithers", ":(exclude).worktrees")


def untracked_files(path: Path) -> list[str]:
    out = git(path, "ls-files", "--others", "--exclude-standard", "-z", *NOT_CHANGES)
    return sorted(p for p in out.split("\0") if p and not p.endswith("/"))


def changes_since(path: Path, base: str, limit: int = 30000, max_new_files: int = 40) -> tuple[str, list[str]]:
    """(unified diff, changed paths) from commit `base` to the files in `path` now, new files included.

    The index is not touched; commits made in the meantime are included (the diff is against `base`).
    """
    diff = git(path, "diff", "--no-color", "--no-ext-diff", "-M", base, *NOT_CHANGES)
    files = [p for p in git(path, "diff", "--name-only", "-z", "--no-renames", base, *NOT_CHANGES).split("\0") if p]
    new = untracked_files(path)
    parts = [diff]
    for rel in new[:max_new_files]:
        parts.append(git(path, "diff", "--no-color", "--no-index", "--", "/dev/null", rel, ok=(0, 1)))
    if len(new) > max_new_files:
        parts.append(f"[... {len(new) - max_new_files} more new files not shown ...]\n")
    return truncate_middle("".join(parts), limit, head=limit * 3 // 4), sorted(set(files) | set(new))


def not_blank(field: str, why: str) -> Any:
    """A validator for a workflow's input model: `field` must hold more than whitespace; `why`
    says what to write instead (the one-line error the CLI and the form show)."""
    def check(cls: Any, v: str) -> str:
        if not v.strip():
            raise ValueError(why)
        return v
    return field_validator(field)(check)
