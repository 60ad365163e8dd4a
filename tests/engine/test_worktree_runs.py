"""Worktree steps in real git repositories: a Worktree holding a Loop whose step writes files in
ctx.workdir. After each step its files are committed to refs/smithers/<run>/<node>/<iteration> while
the user's branches, index, HEAD and files stay as they were; `smithers diff` shows what a step
changed; finished runs remove their worktrees (branches stay) unless keep=True; a fork from EVERY
frame restores exactly the files that frame had (compared file by file, against what the steps
themselves saw on disk); a clear one-line failure outside a git repository."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from engine import git
from engine.loader import load_target
from tests.support import Smithers, git_repo, report, sh

WT = """
from pathlib import Path

from engine import Loop, Sequence, Task, Worktree, workflow
from engine.git import file_digest

SIDE = Path(__file__).with_name("side.log")


def mark(ctx):
    with open(SIDE, "a") as f:
        f.write(f"{ctx.run_id} {ctx.node_id}#{ctx.iteration}\\n")


def edit(ctx):
    mark(ctx)
    wd = Path(ctx.workdir)
    before = file_digest(wd)
    (wd / f"f{ctx.iteration}.txt").write_text(f"iteration {ctx.iteration}\\n")
    (wd / "common.txt").write_text(f"last {ctx.iteration}\\n")
    if ctx.iteration == 1:
        (wd / "f0.txt").unlink()
        (wd / "sub").mkdir()
        (wd / "sub" / "deep.txt").write_text("deep\\n")
    return {"before": before, "after": file_digest(wd), "workdir": str(wd)}


def pre(ctx):
    mark(ctx)
    return str(ctx.workdir)


@workflow
def wt(ctx):
    return Sequence(
        Task("pre", run=pre),
        Worktree("wt", Loop("l", Task("edit", run=edit), max_iterations=3), keep=KEEP),
        Task("post", value="done"),
    )
"""




@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A user's repository: one commit on main, plus a staged file and an unstaged edit."""
    r = git_repo(tmp_path / "repo", {"README": "hello\n", "lib/code.py": "x = 1\n"})
    (r / "staged.txt").write_text("staged\n")
    sh(r, "add", "staged.txt")
    (r / "README").write_text("hello, edited but not staged\n")
    return r


def user_state(r: Path) -> dict:
    """Everything of the user's that a run must leave alone."""
    return {
        "head": sh(r, "rev-parse", "HEAD"),
        "symbolic": sh(r, "symbolic-ref", "HEAD"),
        "branches": [b for b in sh(r, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads").splitlines()
                     if not b.startswith("refs/heads/smithers/")],
        "index": sh(r, "ls-files", "-s"),
        "status": sh(r, "status", "--porcelain", "--untracked-files=no"),
        "files": {k: v for k, v in git.file_digest(r).items() if not k.startswith(".worktrees/")},
    }


def wf_file(tmp_path: Path, keep: bool) -> Path:
    path = tmp_path / "wt.py"
    path.write_text(f"KEEP = {keep}\n" + WT)
    return path


def commit_digest(r: Path, rev: str) -> dict[str, str]:
    """What engine.git.file_digest would say of a checkout of `rev`: path -> sha256 of contents."""
    out: dict[str, str] = {}
    for line in sh(r, "ls-tree", "-r", "-z", rev).split("\0"):
        if not line:
            continue
        meta, path = line.split("\t", 1)
        mode, _, obj = meta.split(" ")
        data = subprocess.run(["git", "cat-file", "blob", obj], cwd=r, capture_output=True, check=True).stdout
        if mode == "120000":
            data = b"symlink:" + data
        out[path] = hashlib.sha256(data).hexdigest()
    return out


def smithers_refs(r: Path, run_id: str) -> dict[str, str]:
    lines = sh(r, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/smithers/{run_id}/").splitlines()
    return {name.removeprefix(f"refs/smithers/{run_id}/"): sha for name, sha in (ln.split(" ") for ln in lines)}


def base_files(r: Path) -> dict[str, str]:
    return commit_digest(r, "HEAD")


# --- a run --------------------------------------------------------------------------------------
def test_each_step_is_snapshotted_and_the_users_repo_is_untouched(tmp_path, repo):
    cli = Smithers(repo, tmp_path / "smithers.db")
    before = user_state(repo)
    done = cli("run", wf_file(tmp_path, keep=False), "--run-id", "w1", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["status"] == "finished"
    outs = {(n["id"], n["iteration"]): n["output"] for n in rep["nodes"]}
    assert outs[("pre", 0)] == str(repo)  # outside the worktree: the run's directory

    refs = smithers_refs(repo, "w1")
    assert set(refs) == {"edit/0", "edit/1", "edit/2"}
    # every snapshot holds exactly what the step left on disk
    for i in range(3):
        assert commit_digest(repo, refs[f"edit/{i}"]) == outs[("edit", i)]["after"], i
    assert set(commit_digest(repo, refs["edit/1"])) == {"README", "lib/code.py", "f1.txt", "common.txt",
                                                        "sub/deep.txt"}
    # the worktree started from HEAD: committed files only, nothing staged or edited by the user
    assert outs[("edit", 0)]["before"] == base_files(repo)
    assert "staged.txt" not in outs[("edit", 0)]["before"]
    # each step saw what the previous one left
    assert outs[("edit", 1)]["before"] == outs[("edit", 0)]["after"]
    assert outs[("edit", 2)]["before"] == outs[("edit", 1)]["after"]
    # snapshots chain, from HEAD
    assert sh(repo, "rev-parse", refs["edit/0"] + "^").strip() == before["head"].strip()
    assert sh(repo, "rev-parse", refs["edit/1"] + "^").strip() == refs["edit/0"]
    # the attempt rows and the worktree node record the commits
    wt = next(n for n in rep["nodes"] if n["id"] == "wt")
    assert wt["worktree"]["head"] == refs["edit/2"] and wt["worktree"]["branch"] == "smithers/w1/wt"

    # the user's HEAD, branches, index, working files are as they were
    assert user_state(repo) == before
    # finished: the worktree is gone, its branch stays
    path = Path(wt["worktree"]["path"])
    assert not path.exists() and wt["worktree"]["removed"] is True
    assert str(path) not in sh(repo, "worktree", "list", "--porcelain")
    assert sh(repo, "rev-parse", "refs/heads/smithers/w1/wt").strip() == before["head"].strip()
    events = [json.loads(line)["type"] for line in cli("logs", "w1", "--json").stdout.splitlines()]
    assert events.count("worktree_created") == 1 and events.count("worktree_removed") == 1
    assert events.count("snapshot") == 3


def test_keep_leaves_the_worktree_with_the_last_files(tmp_path, repo):
    cli = Smithers(repo, tmp_path / "smithers.db")
    done = cli("run", wf_file(tmp_path, keep=True), "--run-id", "k", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    wt = next(n for n in rep["nodes"] if n["id"] == "wt")["worktree"]
    last = next(n for n in rep["nodes"] if (n["id"], n["iteration"]) == ("edit", 2))["output"]
    assert Path(wt["path"]).is_dir() and not wt.get("removed")
    assert git.file_digest(wt["path"]) == last["after"]
    assert "branch refs/heads/smithers/k/wt" in sh(repo, "worktree", "list", "--porcelain")


def test_diff_shows_what_a_step_changed(tmp_path, repo):
    cli = Smithers(repo, tmp_path / "smithers.db")
    assert cli("run", wf_file(tmp_path, keep=False), "--run-id", "d", "-q").returncode == 0
    done = cli("diff", "d", "edit")  # the latest iteration
    assert done.returncode == 0, done.stderr
    assert "-last 1" in done.stdout and "+last 2" in done.stdout and "b/f2.txt" in done.stdout
    assert "f1.txt" not in done.stdout and "README" not in done.stdout
    done = cli("diff", "d", "edit", "--iteration", "1")
    assert done.returncode == 0, done.stderr
    assert "deleted file" in done.stdout and "a/f0.txt" in done.stdout
    assert "b/f1.txt" in done.stdout and "b/sub/deep.txt" in done.stdout and "+last 1" in done.stdout
    done = cli("diff", "d", "edit", "--iteration", "0")
    assert "new file" in done.stdout and "b/f0.txt" in done.stdout and "lib/code.py" not in done.stdout
    done = cli("diff", "d", "pre")  # ran outside any worktree
    assert done.returncode == 4 and "no snapshot" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_not_inside_a_git_repository_fails_the_run_with_one_line(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    cli = Smithers(plain, tmp_path / "smithers.db")
    done = cli("run", wf_file(tmp_path, keep=False), "--run-id", "ng")
    assert done.returncode == 1
    final = done.stdout.strip().splitlines()[-1]
    assert "run ng failed" in final and "not inside a git repository" in final and "git init" in final
    rep = cli.json("show", "ng")
    assert rep["status"] == "failed"
    assert "\n" not in rep["error"] and "'wt'" in rep["error"] and "not inside a git repository" in rep["error"]
    n = {x["id"]: x for x in rep["nodes"]}
    assert n["pre"]["state"] == "done" and n["wt"]["state"] == "failed" and "edit" not in n
    assert not (plain / ".worktrees").exists()


# --- forks restore the files of their frame -----------------------------------------------------
async def test_a_fork_from_every_frame_restores_exactly_that_frames_files(tmp_path, repo, engine):
    eng, store = engine
    path = wf_file(tmp_path, keep=False)
    wf, target = load_target(str(path))
    before = user_state(repo)
    ex = await eng.start(wf, target, None, run_id="p", workdir=repo)
    assert await ex.execute() == "finished"
    parent_refs = smithers_refs(repo, "p")
    parent_outs = {(x["id"], x["iteration"]): x["output"] for x in (await report(store, "p"))["nodes"]}
    last = (await store.get_run("p")).frame

    seen: dict[str, dict[str, str]] = {}  # fork run -> files in its worktree right after it was made
    make_worktree = eng.step_runners["worktree"]

    async def recording(ex, r, tctx):
        data = await make_worktree(ex, r, tctx)
        seen[ex.run_id] = git.file_digest(data["path"])
        return data

    eng.step_runners["worktree"] = recording
    restored_some = 0
    for n in range(last + 1):
        nodes_at, outputs_at, _ = await store.state_at("p", n)
        edits_done = sorted(k[1] for k, r in nodes_at.items() if k[0] == "edit" and r.state == "done")
        # what the files were at frame n, by what the steps themselves saw on disk
        expected = outputs_at[("edit", edits_done[-1])]["after"] if edits_done else base_files(repo)
        wt_at = nodes_at.get(("wt", 0))
        head_at = (wt_at.data or {}).get("head") if wt_at else None

        fid = f"f{n}"
        await eng.fork("p", n, new_id=fid)
        assert not (repo / ".worktrees" / fid).exists()  # nothing on disk until the fork runs
        ex = await eng.resume(fid)
        assert await ex.execute() == "finished"

        assert seen[fid] == expected, n
        rep = await report(store, fid)
        wt = next(x for x in rep["nodes"] if x["id"] == "wt")["worktree"]
        if head_at:
            restored_some += 1
            assert wt["restored_from"] == head_at
            assert commit_digest(repo, head_at) == expected, n
            assert git.tree_hash(repo, wt["branch"]) == git.tree_hash(repo, head_at)
        # the steps that ran again saw the same files as in the parent and left the same
        outs = {(x["id"], x["iteration"]): x["output"] for x in rep["nodes"]}
        for i in range(3):
            mine, theirs = outs[("edit", i)], parent_outs[("edit", i)]
            assert (mine["before"], mine["after"]) == (theirs["before"], theirs["after"]), (n, i)
        fork_refs = smithers_refs(repo, fid)
        assert set(fork_refs) == {f"edit/{i}" for i in range(3) if i not in edits_done}, n
        for name, sha in fork_refs.items():
            assert commit_digest(repo, sha) == commit_digest(repo, parent_refs[name]), (n, name)
        assert not Path(wt["path"]).exists()  # removed when the fork finished
    assert restored_some >= 3
    assert user_state(repo) == before


def test_a_fork_worktree_appears_only_when_the_fork_runs_and_rewind_restores_files(tmp_path, repo):
    cli = Smithers(repo, tmp_path / "smithers.db")
    assert cli("run", wf_file(tmp_path, keep=True), "--run-id", "o", "-q").returncode == 0
    frames = cli.json("frames", "o")
    n = next(f["frame"] for f in frames if "edit#1 done" in f["changes"])
    at_n = cli.json("show", "o", "--frame", str(n))
    after1 = next(x for x in at_n["nodes"] if (x["id"], x["iteration"]) == ("edit", 1))["output"]["after"]

    done = cli("rewind", "o", "--frame", str(n), "--run-id", "rw", "-q")
    assert done.returncode == 0, done.stderr
    assert not (repo / ".worktrees" / "rw").exists()
    assert "smithers/rw/" not in sh(repo, "for-each-ref", "refs/heads")
    # the original's kept worktree is untouched by the rewind
    orig_wt = next(x for x in cli.json("show", "o")["nodes"] if x["id"] == "wt")["worktree"]
    orig_files = git.file_digest(orig_wt["path"])

    done = cli("resume", "rw", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    outs = {(x["id"], x["iteration"]): x["output"] for x in rep["nodes"]}
    assert outs[("edit", 2)]["before"] == after1  # the rewound worktree held frame n's files
    wt = next(x for x in rep["nodes"] if x["id"] == "wt")["worktree"]
    assert Path(wt["path"]).is_dir() and wt["branch"] == "smithers/rw/wt"
    assert git.file_digest(wt["path"]) == orig_files  # and ended where the original ended
    assert git.file_digest(orig_wt["path"]) == orig_files
    assert set(smithers_refs(repo, "rw")) == {"edit/2"}
