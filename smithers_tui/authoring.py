"""Project workflows written by an agent: checked (engine.check) before a file is saved under
`.smithers/workflows/`, so a workflow that is there imports, holds one @workflow and renders.
A failed check saves nothing; a save is atomic (a temporary file renamed over the target)."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from engine.check import CheckedWorkflow, check_source
from engine.errors import BadInput, WorkflowInvalid

FILE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def workflows_dir(project: Path) -> Path:
    return project / ".smithers" / "workflows"


def file_for(project: Path, file: str) -> Path:
    """`.smithers/workflows/<file>.py` for a file name like `review_loop` (or `review_loop.py`)."""
    stem = file[:-3] if file.endswith(".py") else file
    if not FILE_RE.match(stem):
        raise BadInput(f"file {file!r} is not a workflow file name: use lowercase letters, digits and _ "
                       "(a Python module name), e.g. \"review_loop\"")
    return workflows_dir(project) / f"{stem}.py"


def validate(project: Path, source: str, sample_input: Any = None, file: str | None = None) -> CheckedWorkflow:
    """Check a workflow's source as if saved as `file` (default `.smithers/workflows/draft.py`)."""
    path = file_for(project, file or "draft")
    return check_source(source, _shown(project, path), sample_input, project)[1]


def write(project: Path, file: str, source: str, sample_input: Any = None,
          overwrite: bool = False) -> tuple[Path, CheckedWorkflow]:
    """Check, then save under `.smithers/workflows/`. Refuses a name another workflow has (a built-in
    one, or one in another project file) and an existing file unless `overwrite`."""
    path = file_for(project, file)
    shown = _shown(project, path)
    if path.exists() and not overwrite:
        raise BadInput(f"{shown} exists: pass overwrite=true to replace it, or choose another file name")
    wf, checked = check_source(source, shown, sample_input, project)
    taken = _taken_names(project, path)
    if wf.name in taken:
        raise WorkflowInvalid(f"{shown}:{wf.builder.__code__.co_firstlineno}: the name {wf.name!r} is taken by "
                              f"{taken[wf.name]}: name it otherwise, e.g. @workflow(name=\"{wf.name}-2\")")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, checked


def _taken_names(project: Path, path: Path) -> dict[str, str]:
    """Workflow name -> who has it: the built-in pack and the project's other workflow files."""
    from workflows import builtin

    from .targets import discovered

    taken = {name: "a built-in workflow" for name in builtin()}
    for name, (wf, _) in discovered(project).items():
        if wf.source_path is not None and wf.source_path.resolve() != path.resolve():
            taken.setdefault(name, f"{_shown(project, wf.source_path)}")
    return taken


def _shown(project: Path, path: Path) -> str:
    """The path as the user knows it: relative to the project when inside it."""
    try:
        return str(path.resolve().relative_to(project.resolve()))
    except ValueError:
        return str(path)
