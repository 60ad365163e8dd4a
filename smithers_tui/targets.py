"""Finding a workflow from what the user typed: a built-in name, `path.py`, `path.py:name`, or a
file under `.smithers/workflows/` of the project."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.dsl import WorkflowDef
from engine.errors import WorkflowNotFound
from engine.loader import load_file, load_target, workflows_in


def discovered(project: Path | None = None) -> dict[str, tuple[WorkflowDef, str]]:
    """Workflows in `.smithers/workflows/*.py` of the project (broken files are skipped)."""
    folder = (project or Path.cwd()) / ".smithers" / "workflows"
    found: dict[str, tuple[WorkflowDef, str]] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*.py")):
            try:
                mod = load_file(path)
            except WorkflowNotFound:
                continue
            for name, wf in workflows_in(mod).items():
                wf.source_path = path.resolve()
                found.setdefault(name, (wf, f"file:{path.resolve()}:{name}"))
    return found


def all_workflows(project: Path | None = None) -> dict[str, tuple[WorkflowDef, str]]:
    from workflows import builtin

    return {**discovered(project), **builtin()}


def resolve(target: str) -> tuple[WorkflowDef, str]:
    """A workflow and the target string recorded with the run (so resume can find it again)."""
    looks_like_file = target.endswith(".py") or ".py:" in target or "/" in target
    if not looks_like_file:
        found = all_workflows()
        if target in found:
            return found[target]
        names = ", ".join(sorted(found)) or "none"
        raise WorkflowNotFound(f"unknown workflow {target!r}: built-in and project workflows are {names}; "
                               "or give path/to/file.py[:name]")
    return load_target(target)


def describe(wf: WorkflowDef, target: str) -> dict[str, Any]:
    return {"name": wf.name, "description": wf.description, "target": target,
            "builtin": target.startswith("module:"), "input_schema": wf.input_schema()}
