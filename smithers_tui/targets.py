"""Finding a workflow from what the user typed: a built-in name, `path.py`, `path.py:name`, or a
file under `.smithers/workflows/` of the project."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.dsl import WorkflowDef
from engine.errors import WorkflowNotFound
from engine.loader import load_file, load_target, workflows_in


def project_folder(project: Path | None = None) -> Path:
    """Where a project's own workflows live: `.smithers/workflows/` (one or more @workflow per file)."""
    return (project or Path.cwd()) / ".smithers" / "workflows"


def project_files(project: Path | None = None) -> list[Path]:
    folder = project_folder(project)
    return sorted(folder.glob("*.py")) if folder.is_dir() else []


def scan_project(project: Path | None = None) -> tuple[dict[str, tuple[WorkflowDef, str]], dict[Path, str]]:
    """Workflows in `.smithers/workflows/*.py` of the project, and the files that failed to load
    (path -> the one-line error: a syntax error with its line, a failing import, no @workflow)."""
    found: dict[str, tuple[WorkflowDef, str]] = {}
    broken: dict[Path, str] = {}
    for path in project_files(project):
        try:
            mod = load_file(path)
        except WorkflowNotFound as e:
            broken[path.resolve()] = str(e)
            continue
        wfs = workflows_in(mod)
        if not wfs:
            broken[path.resolve()] = f"{path} has no @workflow: decorate a function `def build(ctx)` with @workflow"
        for name, wf in wfs.items():
            wf.source_path = path.resolve()
            found.setdefault(name, (wf, f"file:{path.resolve()}:{name}"))
    return found, broken


def discovered(project: Path | None = None) -> dict[str, tuple[WorkflowDef, str]]:
    """Workflows in `.smithers/workflows/*.py` of the project (broken files are left out)."""
    return scan_project(project)[0]


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
