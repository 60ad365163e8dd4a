"""Finding workflows: from a file (`path.py` or `path.py:name`) or an importable module
(`module:name`, how the built-in pack is recorded). A run records its target and the source's
hash, so `resume RUN_ID` can load the same workflow again and notice when it changed."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .dsl import WorkflowDef
from .errors import WorkflowNotFound


def source_hash(path: Path | None) -> str | None:
    if path is None or not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _module_name(path: Path) -> str:
    """A stable module name per file, so output models defined there resolve after a restart."""
    return "smithers_workflow_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]


def load_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise WorkflowNotFound(f"no workflow file {path}: give a .py file, `path.py:name`, or a built-in "
                               "name (`smithers workflows` lists them)")
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise WorkflowNotFound(f"{path} is not a Python file: give a .py file holding an @workflow")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        sys.modules.pop(name, None)
        line = _line_in(e, path)
        raise WorkflowNotFound(f"{path}{line} failed to load: {type(e).__name__}: {e}") from None
    return mod


def _line_in(e: BaseException, path: Path) -> str:
    tb = e.__traceback__
    line = ""
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path:
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    if not line and isinstance(e, SyntaxError) and e.lineno:
        line = f":{e.lineno}"
    return line


def workflows_in(mod: ModuleType) -> dict[str, WorkflowDef]:
    return {v.name: v for v in vars(mod).values() if isinstance(v, WorkflowDef)}


def pick(found: dict[str, WorkflowDef], name: str | None, where: str) -> WorkflowDef:
    if name:
        if name in found:
            return found[name]
        by_attr = [w for w in found.values() if w.builder.__name__ == name]
        if len(by_attr) == 1:
            return by_attr[0]
        raise WorkflowNotFound(f"no workflow {name!r} in {where}; it has: {', '.join(sorted(found)) or 'none'}")
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise WorkflowNotFound(f"{where} has no @workflow: decorate a function `def build(ctx)` with @workflow")
    raise WorkflowNotFound(f"{where} has several workflows ({', '.join(sorted(found))}): "
                           f"name one as {where}:NAME")


def load_target(target: str) -> tuple[WorkflowDef, str]:
    """Load `file:PATH[:NAME]`, `module:MOD:NAME`, `path.py[:name]`. Returns (workflow, recorded target)."""
    if target.startswith("module:"):
        _, mod_name, name = target.split(":", 2)
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise WorkflowNotFound(f"cannot import {mod_name}: {e}") from None
        wf = pick(workflows_in(mod), name, mod_name)
        wf.source_path = wf.source_path or Path(mod.__file__ or "")
        return wf, f"module:{mod_name}:{wf.name}"
    if target.startswith("file:"):
        target = target[5:]
    path_s, wf_name = target, None
    if ":" in target and not target.endswith(".py"):
        path_s, wf_name = target.rsplit(":", 1)
    path = Path(path_s).expanduser().resolve()
    mod = load_file(path)
    wf = pick(workflows_in(mod), wf_name, str(path))
    wf.source_path = path
    return wf, f"file:{path}:{wf.name}"
