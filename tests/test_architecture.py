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
