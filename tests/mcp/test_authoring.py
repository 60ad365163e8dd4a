"""Writing project workflows: the check (engine.check) catches what would fail at run time, with
one line naming the file and line; a failed check saves nothing; a name taken by a built-in or
another file, an existing file without overwrite, a bad file name are refused; the check runs no
task."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.check import check_source
from engine.errors import BadInput, WorkflowInvalid
from smithers_tui import authoring

GOOD = textwrap.dedent('''
    from pathlib import Path
    from engine import Sequence, Task, workflow


    def touch(ctx):
        Path(ctx.workdir, "ran").write_text("x")
        return 1


    @workflow(name="NAME")
    def build(ctx):
        return Sequence(Task("touch", run=touch), Task("two", value=2))
''').lstrip()


def src(name: str = "mine") -> str:
    return GOOD.replace("NAME", name)


def test_a_check_renders_but_runs_no_task(tmp_path: Path):
    wf, checked = check_source(src(), "flow.py", None, tmp_path)
    assert (wf.name, checked.steps, checked.first_steps) == ("mine", ["touch", "two"], ["touch"])
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("body,line_of,words", [
    ("return Sequence(Task('a', value=1), Task('a', value=2))", None, "duplicate node id 'a'"),
    ("import uuid\n    return Task(f'step-{uuid.uuid4().hex}', run=len)", "@workflow", "different step ids"),
    ("import uuid\n    return Task(f'step-{uuid.uuid4().hex}', value=1)", "@workflow", "never settles"),
    ("return [Task('a', value=1)]", "@workflow", "returned list, not a step"),
    ("return Task('a')", "return Task", "give exactly one of run="),
    ("return Task('a', value=ctx.output('b'))", "return Task", "OutputMissing: no output for node 'b'"),
    ("x = 1 / 0", "x = 1 / 0", "ZeroDivisionError"),
])
def test_what_would_fail_at_run_time_fails_the_check_naming_the_line(tmp_path, body, line_of, words):
    source = f"from engine import Sequence, Task, workflow\n\n\n@workflow\ndef build(ctx):\n    {body}\n"
    with pytest.raises(WorkflowInvalid) as e:
        check_source(source, ".smithers/workflows/f.py", None, tmp_path)
    msg = str(e.value)
    assert words in msg and "\n" not in msg, msg
    if line_of:
        line = next(i for i, t in enumerate(source.splitlines(), 1) if line_of in t)
        assert msg.startswith(f".smithers/workflows/f.py:{line}:"), msg


def test_files_with_no_or_two_workflows_are_refused(tmp_path):
    with pytest.raises(WorkflowInvalid, match="no @workflow"):
        check_source("from engine import workflow\nfrom workflows.hello import hello\n", "f.py", None, tmp_path)
    two = src("one") + "\n\n@workflow(name='two')\ndef other(ctx):\n    return Task('x', value=1)\n"
    with pytest.raises(WorkflowInvalid, match=r"2 workflows in one file \(one \(line 10\), two \(line 15\)\)"):
        check_source(two, "f.py", None, tmp_path)


def test_write_saves_only_checked_files_and_refuses_taken_names(tmp_path):
    path, checked = authoring.write(tmp_path, "mine", src())
    assert path == tmp_path / ".smithers" / "workflows" / "mine.py" and path.read_text() == src()
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(BadInput, match="exists: pass overwrite=true"):
        authoring.write(tmp_path, "mine", src())
    authoring.write(tmp_path, "mine", src().replace("value=2", "value=3"), overwrite=True)
    assert "value=3" in path.read_text()
    with pytest.raises(WorkflowInvalid, match="'hello' is taken by a built-in workflow"):
        authoring.write(tmp_path, "greeter", src("hello"))
    with pytest.raises(WorkflowInvalid, match=r"'mine' is taken by \.smithers/workflows/mine\.py"):
        authoring.write(tmp_path, "copy", src("mine"))
    with pytest.raises(WorkflowInvalid):
        authoring.write(tmp_path, "broken", "def f(:\n")
    for bad in ("../x", "Caps", "a b", "", "x" * 80):
        with pytest.raises(BadInput, match="not a workflow file name"):
            authoring.write(tmp_path, bad, src("z"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["mine.py"]
