"""The agents' guide (`smithers guide`, the MCP resource): every Python example in it imports,
holds one @workflow and renders with the sample input its first line gives; the worked example
(implement -> check -> review in a loop, behind an approval) runs to its gate and finishes."""
from __future__ import annotations

import json
import re

import pytest

from engine.check import check_source
from engine.loader import load_target
from smithers_tui.guide import GUIDE, guide_text, python_blocks
from tests.support import Smithers, sh

HEADER = re.compile(r"^# (\.smithers/workflows/[a-z_]+\.py)(?: — sample input: (\{.*\}))?$")


def examples() -> list[tuple[str, dict | None, str]]:
    out = []
    for block in python_blocks():
        m = HEADER.match(block.splitlines()[0])
        assert m, f"a guide example must start with '# .smithers/workflows/NAME.py': {block.splitlines()[0]!r}"
        out.append((m.group(1), json.loads(m.group(2)) if m.group(2) else None, block))
    return out


def test_the_guide_covers_what_an_agent_needs():
    text = guide_text()
    for words in ("pure", "stable", "output=", "ctx.get", "Loop(", "Approval(", "Worktree(", "Parallel(",
                  "Branch(", "agent=", "implementer", "reviewer", "validate_workflow", "write_workflow",
                  "start_run", "get_events", "approve"):
        assert words in text, words
    assert len(examples()) >= 3


@pytest.mark.parametrize("path,sample,block", examples(), ids=[e[0] for e in examples()])
def test_every_example_in_the_guide_renders(path, sample, block, tmp_path):
    wf, checked = check_source(block, path, sample, tmp_path)
    assert checked.steps and checked.first_steps
    assert wf.description


def test_smithers_guide_prints_it(tmp_path):
    done = Smithers(tmp_path, None)("guide")
    assert done.returncode == 0 and done.stdout == GUIDE.read_text()


async def test_the_worked_example_runs_to_its_gate_and_finishes(engine, tmp_path):
    eng, store = engine
    path, _, block = next(e for e in examples() if "Worktree(" in e[2] and "Approval(" in e[2])
    repo = tmp_path / "repo"
    repo.mkdir()
    sh(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("hello\n")
    sh(repo, "add", "-A")
    sh(repo, "commit", "-q", "-m", "start")
    file = repo / path
    file.parent.mkdir(parents=True)
    file.write_text(block)
    wf, target = load_target(str(file))
    ex = await eng.start(wf, target, {"goal": "add a greeting", "test_command": "true"}, workdir=repo, agent="demo")
    assert await ex.execute() == "waiting"
    rep = (await eng.report(ex.run_id)).json_dict()
    nodes = {n["id"]: n for n in rep["nodes"]}
    assert nodes["check"]["output"]["passed"] is True and nodes["review"]["output"]["approved"] is True
    assert nodes["implement"]["state"] == "done" and rep["approvals"][0]["node_id"] == "ship"
    d = await eng.decide(ex.run_id, None, None, True, "test", None, resume=True)
    assert await d.executor.execute() == "finished"
