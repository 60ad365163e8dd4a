"""Fixtures for the app's tests: a project folder holding the test workflows, its database."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.tui.helpers import FLOW, PROVIDER_VARS


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in PROVIDER_VARS + [k for k in os.environ if k.startswith("SMITHERS_")]:
        monkeypatch.delenv(var, raising=False)
    wf_dir = tmp_path / ".smithers" / "workflows"
    wf_dir.mkdir(parents=True)
    (wf_dir / "flow.py").write_text(textwrap.dedent(FLOW).lstrip())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def db(project: Path) -> Path:
    return project / ".smithers" / "smithers.db"


