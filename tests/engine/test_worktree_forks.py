"""Worktrees under time travel: diffs, resets, named worktrees, cancelled runs. (Each test once
exposed a bug; its docstring says which.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import Smithers, git_repo, sh, task_outputs, write_source as write


WT = """
from pathlib import Path

from engine import Loop, Sequence, Task, Worktree, workflow
from engine.git import file_digest


def edit(ctx):
    wd = Path(ctx.workdir)
    (wd / f"f{ctx.iteration}.txt").write_text(f"iteration {ctx.iteration}\\n")
    (wd / "common.txt").write_text(f"last {ctx.iteration}\\n")
    return file_digest(wd)


def noop(ctx):
    return "changed nothing"


@workflow
def wt(ctx):
    return Worktree("wt", Task("first_noop", run=noop), Loop("l", Task("edit", run=edit), max_iterations=3),
                    Task("noop", run=noop))
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = git_repo(tmp_path / "repo", {"README": "hello\n"})
    (r / "users_last_change.txt").write_text("the user's own work\n")
    sh(r, "add", "-A")
    sh(r, "commit", "-q", "-m", "the user's last commit")
    return r


def test_diff_of_a_step_that_changed_nothing(tmp_path, repo):
    """engine/git.py:304 (snapshot) returns the parent's sha when nothing changed, and
    smithers_tui/cli.py:573 (cmd_diff) diffs that commit against ITS parent: `smithers diff RUN
    noop` shows the previous step's changes (edit#2's), and for a first step that changed nothing
    it shows the user's own last commit. Fix: record the worktree's head before the step (e.g. a
    `base_sha` in the attempt row, or the worktree node's previous head) and diff base..commit;
    when they are equal print "changed no files"."""
    cli = Smithers(repo, tmp_path / "smithers.db")
    wf = write(tmp_path, "wt.py", WT)
    done = cli("run", wf, "--run-id", "d", "-q")
    assert done.returncode == 0, done.stderr
    for node in ("first_noop", "noop"):
        done = cli("diff", "d", node)
        assert done.returncode == 0, done.stderr
        assert "changed no files" in done.stdout, f"diff of {node}:\n{done.stdout}"
        assert "common.txt" not in done.stdout and "users_last_change.txt" not in done.stdout


def test_fork_with_reset_of_a_step_in_a_worktree_restores_the_files_from_before_it(tmp_path, repo):
    """engine/timetravel.py carry (line 118: commit = data.get("head") ...) restores a worktree to its
    head at frame N even when invalidate() then drops steps inside it (--reset, input change). The
    reset step runs again on top of files it (and later steps) already wrote: re-running edit#0 from
    the last frame sees f0, f1, f2 and leaves them all, so the fork's edit/0 snapshot holds files
    the original edit#0 never produced — database rewound, files not ("half-rewound"). Fix: after
    invalidate, for each worktree containing a dropped step, restore it to the commit the worktree
    had when the earliest dropped step started (its attempt's parent snapshot, or the worktree head
    recorded in the frame before that step started)."""
    cli = Smithers(repo, tmp_path / "smithers.db")
    wf = write(tmp_path, "wt.py", WT)
    assert cli("run", wf, "--run-id", "o", "-q").returncode == 0
    last = cli.json("show", "o")["last_frame"]
    done = cli("fork", "o", "--frame", str(last), "--reset", "edit", "--run-id", "rs", "--run", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    parent = cli.json("show", "o")
    assert task_outputs(rep)[("edit", 0)] == task_outputs(parent)[("edit", 0)]  # same files after the step
    files = {r: sorted(sh(repo, "ls-tree", "-r", "--name-only", f"refs/smithers/{r}/edit/0").split())
             for r in ("o", "rs")}
    assert files["rs"] == files["o"]


def test_reset_of_a_worktree_is_not_silently_ignored(tmp_path, repo):
    """engine/timetravel.py invalidate: `--reset` acts on tasks, approvals and loops only. A Worktree
    id passes the "no such node" check (it is a node at that frame) and then nothing happens:
    `smithers fork RUN --frame N --reset wt` reports rerun [] and the fork re-runs nothing — a revert
    that silently does nothing. Fix: resetting a Worktree re-runs everything inside it from a fresh
    checkout (drop its carried `restore` and every carried step whose key is inside it, transitively
    their readers), or refuse with a one-line BadInput naming what can be reset."""
    cli = Smithers(repo, tmp_path / "smithers.db")
    wf = write(tmp_path, "wt.py", WT)
    assert cli("run", wf, "--run-id", "o", "-q").returncode == 0
    last = cli.json("show", "o")["last_frame"]
    done = cli("fork", "o", "--frame", str(last), "--reset", "wt", "--run-id", "rw", "--json")
    assert done.returncode != 0 or json.loads(done.stdout)["rerun"], "--reset wt did nothing and said nothing"


WT_PATH = """
from pathlib import Path

from engine import Sequence, Task, Worktree, workflow
from engine.git import file_digest


def edit(ctx):
    wd = Path(ctx.workdir)
    seen = sorted(file_digest(wd))
    (wd / f"{ctx.node_id}.txt").write_text(ctx.node_id)
    return seen


@workflow
def wt_path(ctx):
    return Worktree("wt", Task("e1", run=edit), Task("e2", run=edit), path="wt-dir", branch="feature", keep=True)
"""


def test_a_fork_from_before_a_named_worktree_existed_does_not_reuse_the_originals(tmp_path, repo):
    """engine/worktree.py run_worktree (the `else` branch: path = repo / node.path, branch =
    node.branch) + engine/git.py create_worktree (reuses a healthy worktree on the same branch "as
    is"): a fork from a frame before the Worktree(path="wt-dir", branch="feature") was made is not
    carried (no head yet), so it creates the worktree again at the SAME path and branch as the
    original — and reuses the original's kept worktree with all its later files. The fork's e1 sees
    e1.txt and e2.txt (the original's e1 saw only README), and the fork writes into the original's
    worktree. Fix: a run whose kind is fork/rewind/replay (or any run, when path/branch belong to
    another run) gets its own checkout, e.g. the default `.worktrees/<run>/<id>` path and
    `smithers/<run>/<id>` branch, created from the base commit the original recorded."""
    cli = Smithers(repo, tmp_path / "smithers.db")
    wf = write(tmp_path, "wt_path.py", WT_PATH)
    done = cli("run", wf, "--run-id", "o", "--json")
    assert done.returncode == 0, done.stderr
    original = task_outputs(json.loads(done.stdout))
    assert original[("e1", 0)] == ["README", "users_last_change.txt"]
    kept = repo / "wt-dir"
    kept_files = sorted(p.name for p in kept.iterdir() if p.name != ".git")
    done = cli("fork", "o", "--frame", "1", "--run-id", "f", "--run", "--json")
    assert done.returncode == 0, done.stderr
    assert task_outputs(json.loads(done.stdout))[("e1", 0)] == original[("e1", 0)]
    assert sorted(p.name for p in kept.iterdir() if p.name != ".git") == kept_files


WT_GATE = """
from pathlib import Path

from engine import Approval, Task, Worktree, workflow


def edit(ctx):
    (Path(ctx.workdir) / "x.txt").write_text("x")
    return 1


@workflow
def wt_gate(ctx):
    return Worktree("wt", Task("e1", run=edit), Approval("ok", message="merge?"))
"""


def test_a_cancelled_runs_worktree_is_removed(tmp_path, repo):
    """engine/run.py _finish_cancel (and Engine.cancel for a run nobody owns) never remove worktrees;
    only engine/worktree.py remove_finished does, for finished runs. A cancelled run can never be
    resumed, so its checkout under .worktrees/<run>/ stays forever ("worktrees never cleaned up").
    Fix: remove non-keep worktrees when a run ends cancelled (branch and snapshot refs stay), in
    _finish_cancel and in Engine.cancel's direct path."""
    cli = Smithers(repo, tmp_path / "smithers.db")
    wf = write(tmp_path, "wt_gate.py", WT_GATE)
    assert cli("run", wf, "--run-id", "g", "-q").returncode == 3
    path = repo / ".worktrees" / "g" / "wt"
    assert path.is_dir()
    assert cli("cancel", "g").returncode == 0
    assert not path.exists()
    assert "refs/heads/smithers/g/wt" in sh(repo, "for-each-ref", "refs/heads")
