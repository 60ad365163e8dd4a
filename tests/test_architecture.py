"""Imports flow one way (smithers_tui -> workflows -> engine), checked by import-linter against the
contracts in pyproject.toml; and the engine and the CLI load without litellm or textual."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support import ROOT, clean_env


def contracts() -> list[dict]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def test_pyproject_declares_the_layering_contracts():
    by_source = {tuple(c["source_modules"]): set(c["forbidden_modules"]) for c in contracts() if c["type"] == "forbidden"}
    assert {"workflows", "smithers_tui", "textual"} <= by_source[("engine",)]
    assert {"smithers_tui", "textual"} <= by_source[("workflows",)]


def test_import_linter_contracts_are_kept(tmp_path):
    lint = Path(sys.executable).with_name("lint-imports")
    argv = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    done = subprocess.run([*argv, "--no-cache"], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=120)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    m = re.search(r"Contracts: (\d+) kept, (\d+) broken", report)
    assert m, report
    kept, broken = int(m.group(1)), int(m.group(2))
    assert broken == 0 and kept == len(contracts()), report


def test_engine_and_cli_import_without_litellm_or_textual():
    code = ("import json, sys\n"
            "import engine, engine.runtime, engine.store, engine.report, smithers_tui.cli, workflows\n"
            "heavy = ('litellm', 'textual')\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy})))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(name)
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", name]
    return subprocess.run([*argv, *args], cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=600)


def test_ruff_passes():
    done = _tool("ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_passes_on_the_engine_and_the_faces():
    done = _tool("mypy")  # strict, on engine/ and smithers_tui/ (pyproject.toml [tool.mypy])
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_type_ignore_says_why_on_its_line():
    bare = []
    for folder in ("engine", "workflows", "smithers_tui"):
        for path in (ROOT / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if "type: ignore" in line and not re.search(r"type: ignore\[[\w,-]+\]\s+#\s*\S", line):
                    bare.append(f"{path.relative_to(ROOT)}:{n}")
    assert not bare, "type: ignore without a reason: " + ", ".join(bare[:20])


def test_sql_lives_only_in_the_store():
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b")
    found = [f"{p.relative_to(ROOT)}:{n}" for folder in ("engine", "smithers_tui", "workflows")
             for p in (ROOT / folder).rglob("*.py") if "store" not in p.relative_to(ROOT / folder).parts[:1]
             for n, line in enumerate(p.read_text().splitlines(), 1) if sql.search(line)]
    assert not found, found
