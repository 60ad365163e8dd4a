"""`smithers init`: set a project up for Smithers — `.smithers/` with a commented config.toml, a
`tickets/` folder with one example ticket for the kanban workflow — and say what to do next.

Idempotent: what already exists is left as it is (an edited config is never overwritten, the example
ticket is only added while the folder holds no ticket).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

CONFIG = """\
# Smithers settings for this project. SMITHERS_* environment variables override them,
# e.g. SMITHERS_AGENTS__DEFAULT__MODEL=openai/gpt-4.1 or SMITHERS_ENGINE__MAX_CONCURRENCY=8.
# `smithers agents` shows which agents are usable here and why not.

# The agent every step uses unless its role has its own table below. Any litellm model works.
# Without this table, the first provider key found in the environment picks the model
# (ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY, OPENROUTER_API_KEY, ...).
# [agents.default]
# model = "anthropic/claude-sonnet-4-5"
# api_key_env = "ANTHROPIC_API_KEY"     # where the key is read from (never write the key here)

# The built-in workflows use three roles; each falls back to [agents.default].
# [agents.planner]                       # plan, research, ticket-create
# model = "openai/gpt-4.1"
# [agents.implementer]                   # implement, debug, kanban, ... (edits files in a worktree)
# kind = "claude-code"                   # or "codex", "gemini", "aider": a coding-agent CLI
# [agents.reviewer]                      # the reviewers of every review step
# model = "gemini/gemini-2.5-pro"

# A local or self-hosted OpenAI-compatible server:
# [agents.local]
# model = "openai/qwen2.5-coder"
# api_base = "http://127.0.0.1:8000/v1"

# Try one agent, then the next when it fails:
# [agents.careful]
# fallback = ["claude-code", "default"]

# [engine]
# max_concurrency = 4                    # steps running at once
"""

EXAMPLE_TICKET = """\
---
# Optional per-ticket settings (delete what you do not need):
# test_command: python -m pytest -q tests/test_contributing.py
---
# Add a short CONTRIBUTING.md

This is an example ticket: replace it with your own. One Markdown file is one ticket; the first
`# heading` is its title and the file name is its id (this one becomes branch `ticket/example`).
The implementer agent reads the whole file, so say what to change, why, and where.

Write a CONTRIBUTING.md at the root of the repository explaining how to set up a development
environment, how to run the tests, and how to propose a change.

## Acceptance

- CONTRIBUTING.md exists and names the command that runs the tests.
- The project's tests still pass.
"""

GITIGNORE = "# Smithers' run database (kept out of git)\nsmithers.db\nsmithers.db-*\n"


def _git_path(root: Path, what: str) -> Path | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-path", what], cwd=root,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def _exclude_worktrees(root: Path) -> bool:
    """Keep `.worktrees/` (where kanban's worktrees live) out of `git status`, via .git/info/exclude
    so no tracked file changes. True when the line was added."""
    exclude = _git_path(root, "info/exclude")
    if exclude is None:
        return False
    text = exclude.read_text() if exclude.is_file() else ""
    if any(line.strip() in (".worktrees", ".worktrees/", "/.worktrees/") for line in text.splitlines()):
        return False
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text(text + ("" if not text or text.endswith("\n") else "\n") + ".worktrees/\n")
    return True


def init_project(path: Path) -> str:
    """Create `.smithers/` (config.toml, .gitignore, tickets/example.md) under `path`; return what to do next."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory: create it first or run `smithers init` inside it")
    home = root / ".smithers"
    tickets = home / "tickets"
    created: list[str] = []
    tickets.mkdir(parents=True, exist_ok=True)
    for file, text in ((home / "config.toml", CONFIG), (home / ".gitignore", GITIGNORE)):
        if not file.exists():
            file.write_text(text)
            created.append(str(file.relative_to(root)))
    if not any(tickets.rglob("*.md")):
        (tickets / "example.md").write_text(EXAMPLE_TICKET)
        created.append(str((tickets / "example.md").relative_to(root)))
    is_repo = _git_path(root, "info/exclude") is not None
    if is_repo and _exclude_worktrees(root):
        created.append(".worktrees/ in .git/info/exclude")

    done = (f"Created {', '.join(created)}." if created else "Nothing to do: .smithers/ is already set up.")
    steps = []
    if not is_repo:
        steps.append("Make this a git repository with a first commit (`git init && git add -A && git commit -m "
                     "init`): workflows work in git worktrees.")
    steps += [
        "Choose a model: export ANTHROPIC_API_KEY (or OPENAI_API_KEY, GEMINI_API_KEY...), or edit "
        ".smithers/config.toml; `smithers agents` shows what is usable.",
        "Write tickets: one Markdown file per change in .smithers/tickets/ (see example.md, then delete it).",
        "Commit your work (ticket branches start from HEAD), then `smithers run kanban`; add "
        "--input '{\"approve_merge\": true}' to approve before anything is merged.",
        "No model yet? `smithers run kanban --agent demo` walks through the steps with a stand-in agent.",
    ]
    return done + "\nNext:\n" + "\n".join(f"  {i}. {s}" for i, s in enumerate(steps, 1))
