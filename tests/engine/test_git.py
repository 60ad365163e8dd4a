"""engine.git against real repositories, with no git identity configured anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from engine import git as eg
from engine.git import GitError

SETUP_ID = ["-c", "user.name=Test User", "-c", "user.email=test@example.com"]


def sh(cwd: Path, *args: str) -> str:
    """Run git for test setup and inspection (setup commits bring their own identity)."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def no_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "gitconfig").write_text("[user]\n\tuseConfigOnly = true\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
                 "EMAIL", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    sh(root, "init", "-q")
    (root / "README.md").write_text("hello\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('v1')\n")
    (root / ".gitignore").write_text("*.log\n")
    sh(root, "add", "-A")
    sh(root, *SETUP_ID, "commit", "-q", "-m", "first")
    return root.resolve()


def state(path: Path) -> dict[str, object]:
    """Everything a snapshot must leave alone."""
    return {
        "head": sh(path, "rev-parse", "HEAD"),
        "symbolic": sh(path, "symbolic-ref", "-q", "HEAD"),
        "branches": sh(path, "for-each-ref", "refs/heads"),
        "index": sh(path, "ls-files", "-s"),
        "status": sh(path, "status", "--porcelain", "--untracked-files=all"),
        "files": eg.file_digest(path),
    }


def tree_files(repo: Path, commit: str) -> list[str]:
    return sorted(sh(repo, "ls-tree", "-r", "--name-only", commit).splitlines())


# --- finding the repository, and errors ---------------------------------------------------


def test_the_environment_really_has_no_identity(repo: Path) -> None:
    done = subprocess.run(["git", "commit", "--allow-empty", "-m", "x"], cwd=repo, capture_output=True)
    assert done.returncode != 0  # so everything below proves engine.git brings its own


def test_find_repo_from_a_subdirectory_and_a_missing_file(repo: Path) -> None:
    assert eg.find_repo(repo / "src") == repo
    assert eg.find_repo(repo / "src" / "not-yet" / "file.py") == repo


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match=r"not inside a git repository: run `git init` in .*plain"):
        eg.find_repo(plain)


def test_no_commits_yet(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    sh(empty, "init", "-q")
    with pytest.raises(GitError, match="no commits yet: make a first commit"):
        eg.create_worktree(empty, tmp_path / "wt", "smithers/r1/a")


def test_git_not_installed(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import git

    monkeypatch.setattr(git.Git, "GIT_PYTHON_GIT_EXECUTABLE", "/nonexistent/bin/git")
    with pytest.raises(GitError, match=r"git is not installed: install git"):
        eg.find_repo(repo)


def test_unknown_base_and_ref_outside_hidden_space(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="unknown commit 'nope'"):
        eg.create_worktree(repo, tmp_path / "wt", "smithers/r1/a", base="nope")
    with pytest.raises(GitError, match="hidden ref"):
        eg.snapshot(repo, "refs/heads/main")


def test_git_failures_become_one_line_errors(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError, match=r"^git worktree failed in .*: fatal: .*not a valid branch name") as info:
        eg.create_worktree(repo, tmp_path / "wt", "bad..name")
    assert "\n" not in str(info.value)
    with pytest.raises(GitError, match="main worktree: choose a path"):
        eg.create_worktree(repo, repo, "smithers/run1/a")


# --- worktrees ----------------------------------------------------------------------------


def test_create_worktree_on_a_new_branch(repo: Path, tmp_path: Path) -> None:
    path = eg.create_worktree(repo, tmp_path / "wts" / "run1" / "a", "smithers/run1/a")
    assert path == (tmp_path / "wts" / "run1" / "a").resolve()
    assert (path / "src" / "app.py").read_text() == "print('v1')\n"
    assert sh(path, "symbolic-ref", "--short", "HEAD") == "smithers/run1/a"
    assert sh(path, "rev-parse", "HEAD") == sh(repo, "rev-parse", "HEAD")
    assert sh(repo, "symbolic-ref", "--short", "HEAD") == "main"

    ticket = eg.create_worktree(repo, tmp_path / "wts" / "ticket", "ticket/fix-login", base="HEAD")
    assert sh(ticket, "symbolic-ref", "--short", "HEAD") == "ticket/fix-login"


def test_create_worktree_is_reused_with_work_in_progress(repo: Path, tmp_path: Path) -> None:
    path = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    (path / "wip.txt").write_text("half done\n")
    assert eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a") == path
    assert (path / "wip.txt").read_text() == "half done\n"
    with pytest.raises(GitError, match="already a worktree on smithers/run1/a"):
        eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/other")


def test_create_worktree_after_crash_with_directory_gone(repo: Path, tmp_path: Path) -> None:
    path = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    shutil.rmtree(path)  # registration is now stale, the branch still exists
    again = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    assert (again / "README.md").read_text() == "hello\n"
    assert sh(again, "symbolic-ref", "--short", "HEAD") == "smithers/run1/a"


def test_create_worktree_after_a_half_finished_add(repo: Path, tmp_path: Path) -> None:
    path = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    # What `git worktree add` leaves when killed during checkout: still locked, files missing.
    sh(repo, "worktree", "lock", "--reason", "initializing", str(path))
    (path / "README.md").unlink()
    again = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    assert eg.file_digest(again) == eg.file_digest(repo)


def test_create_worktree_over_a_leftover_directory_git_forgot(repo: Path, tmp_path: Path) -> None:
    path = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    admin = Path(sh(path, "rev-parse", "--absolute-git-dir"))
    shutil.rmtree(admin)  # registration gone, directory with its .git file left behind
    (path / "stray.txt").write_text("from the crashed attempt\n")
    again = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    assert eg.file_digest(again) == eg.file_digest(repo)


def test_create_worktree_refuses_a_foreign_directory(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("user data\n")
    with pytest.raises(GitError, match="already exists and is not a worktree"):
        eg.create_worktree(repo, tmp_path / "busy", "smithers/run1/a")
    assert (tmp_path / "busy" / "mine.txt").exists()


def test_concurrent_worktree_creation(repo: Path, tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def make(i: int) -> None:
        try:
            eg.create_worktree(repo, tmp_path / "wts" / f"t{i}", f"smithers/run1/t{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(sh(repo, "worktree", "list").splitlines()) == 7


def test_remove_worktree_keeps_the_branch(repo: Path, tmp_path: Path) -> None:
    path = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    (path / "dirty.txt").write_text("x")
    eg.remove_worktree(repo, path)
    assert not path.exists()
    assert sh(repo, "rev-parse", "--verify", "refs/heads/smithers/run1/a")
    assert str(path) not in sh(repo, "worktree", "list")
    eg.remove_worktree(repo, path)  # already gone: no error


# --- snapshots ----------------------------------------------------------------------------


def test_snapshot_leaves_head_branches_index_and_files_alone(repo: Path, tmp_path: Path) -> None:
    wt = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    for place in (repo, wt):
        (place / "src" / "app.py").write_text("print('v2')\n")  # modified, unstaged
        (place / "staged.txt").write_text("staged\n")
        sh(place, "add", "staged.txt")  # staged only
        (place / "new" / "deep").mkdir(parents=True)
        (place / "new" / "deep" / "file.txt").write_text("untracked\n")
        (place / "README.md").unlink()  # deleted
        (place / "debug.log").write_text("ignored\n")
        before = state(place)
        sha = eg.snapshot(place, f"refs/smithers/run1/{place.name}/0")
        assert state(place) == before
        assert sh(place, "rev-parse", f"refs/smithers/run1/{place.name}/0") == sha
        assert tree_files(place, sha) == [".gitignore", "new/deep/file.txt", "src/app.py", "staged.txt"]
        assert sh(place, "show", f"{sha}:src/app.py") == "print('v2')"
        assert sh(place, "log", "-1", "--format=%an <%ae>", sha) == "smithers <smithers@localhost>"
        assert sh(place, "rev-parse", f"{sha}^") == sh(place, "rev-parse", "HEAD")


def test_snapshot_sees_a_same_size_edit_within_the_index_timestamp(repo: Path, tmp_path: Path) -> None:
    """Racy git: an edit keeping size and mtime is only caught by comparing with the index's mtime."""
    wt = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    sh(wt, "config", "core.trustctime", "false")
    app = wt / "src" / "app.py"
    stamp = app.stat().st_mtime_ns - 10**10  # ten seconds ago, so the refreshed entry is not smudged
    os.utime(app, ns=(stamp, stamp))
    sh(wt, "update-index", "--refresh")
    app.write_text("print('v2')\n")  # same size as v1
    os.utime(app, ns=(stamp, stamp))
    os.utime(Path(sh(wt, "rev-parse", "--path-format=absolute", "--git-path", "index")), ns=(stamp, stamp))
    sha = eg.snapshot(wt, "refs/smithers/run1/a/0")
    assert sh(wt, "show", f"{sha}:src/app.py") == "print('v2')"


def test_snapshot_with_nothing_changed_returns_the_parent(repo: Path, tmp_path: Path) -> None:
    wt = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    head = sh(wt, "rev-parse", "HEAD")
    assert eg.snapshot(wt, "refs/smithers/run1/a/0") == head  # clean worktree: HEAD itself
    (wt / "a.txt").write_text("a\n")
    first = eg.snapshot(wt, "refs/smithers/run1/a/1")
    assert first != head
    assert eg.snapshot(wt, "refs/smithers/run1/a/2") == first
    assert sh(wt, "rev-parse", "refs/smithers/run1/a/2") == first
    (wt / "a.txt").write_text("b\n")
    second = eg.snapshot(wt, "refs/smithers/run1/a/3")
    assert sh(wt, "rev-parse", f"{second}^") == first  # chained to the previous snapshot
    (wt / "a.txt").write_text("a\n")
    third = eg.snapshot(wt, "refs/smithers/run1/a/4")
    assert third != first and eg.tree_hash(wt, third) == eg.tree_hash(wt, first)


def test_restore_reproduces_every_snapshot_exactly(repo: Path, tmp_path: Path) -> None:
    wt = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    steps = [
        lambda: (wt / "notes.txt").write_text("one\n"),
        lambda: (wt / "src" / "app.py").write_text("print('v2')\n"),
        lambda: (wt / "README.md").unlink(),
        lambda: ((wt / "pkg" / "sub").mkdir(parents=True), (wt / "pkg" / "sub" / "x.bin").write_bytes(bytes(range(256)))),
        lambda: ((wt / "notes.txt").unlink(), (wt / "link").symlink_to("src/app.py")),
    ]
    frames: list[tuple[str, dict[str, str]]] = []
    for n, step in enumerate(steps):
        step()
        frames.append((eg.snapshot(wt, f"refs/smithers/run1/a/{n}"), eg.file_digest(wt)))
    assert len({digest["src/app.py"] if "src/app.py" in digest else "" for _, digest in frames}) == 2
    for n, (sha, digest) in enumerate(frames):
        restored = eg.restore_worktree(repo, tmp_path / "forks" / f"f{n}", f"smithers/fork{n}/a", sha)
        assert eg.file_digest(restored) == digest, f"frame {n}"
        assert eg.tree_hash(repo, sh(restored, "rev-parse", "HEAD")) == eg.tree_hash(repo, sha)
        assert sh(restored, "symbolic-ref", "--short", "HEAD") == f"smithers/fork{n}/a"
    assert eg.file_digest(wt) == frames[-1][1]  # the original worktree is untouched


def test_restore_is_idempotent_after_partial_attempts(repo: Path, tmp_path: Path) -> None:
    wt = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    (wt / "feature.py").write_text("x = 1\n")
    sha = eg.snapshot(wt, "refs/smithers/run1/a/0")
    want = eg.file_digest(wt)
    target = tmp_path / "fork"

    restored = eg.restore_worktree(repo, target, "smithers/fork/a", sha)
    (restored / "feature.py").write_text("damaged\n")  # a half-written checkout...
    (restored / "README.md").unlink()
    (restored / "junk.log").write_text("leftover\n")
    assert eg.restore_worktree(repo, target, "smithers/fork/a", sha) == restored
    assert eg.file_digest(restored) == want

    sh(repo, "worktree", "lock", "--reason", "initializing", str(restored))  # died inside `worktree add`
    (restored / "feature.py").unlink()
    eg.restore_worktree(repo, target, "smithers/fork/a", sha)
    assert eg.file_digest(restored) == want

    shutil.rmtree(restored)  # directory lost, registration stale, branch already made
    eg.restore_worktree(repo, target, "smithers/fork/a", sha)
    assert eg.file_digest(restored) == want

    sh(repo, "branch", "smithers/fork2/a", sha)  # crashed after creating only the branch
    eg.restore_worktree(repo, tmp_path / "fork2", "smithers/fork2/a", sha)
    assert eg.file_digest(tmp_path / "fork2") == want

    with pytest.raises(GitError, match="already exists at another commit"):
        eg.restore_worktree(repo, tmp_path / "fork3", "main", sha)


def test_concurrent_snapshots_do_not_interfere(repo: Path, tmp_path: Path) -> None:
    worktrees = [eg.create_worktree(repo, tmp_path / "wts" / f"t{i}", f"smithers/run1/t{i}") for i in range(5)]
    results: dict[tuple[int, int], tuple[str, dict[str, str]]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(worktrees))

    def work(i: int, wt: Path) -> None:
        try:
            barrier.wait()
            for k in range(3):
                for j in range(20):
                    (wt / f"t{i}" / f"f{j}.txt").parent.mkdir(exist_ok=True)
                    (wt / f"t{i}" / f"f{j}.txt").write_text(f"{i}-{k}-{j}\n")
                results[(i, k)] = (eg.snapshot(wt, f"refs/smithers/run1/t{i}/{k}"), eg.file_digest(wt))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, wt)) for i, wt in enumerate(worktrees)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for (i, k), (sha, digest) in results.items():
        assert sh(repo, "rev-parse", f"refs/smithers/run1/t{i}/{k}") == sha
        assert tree_files(repo, sha) == sorted(digest)
        assert sh(repo, "show", f"{sha}:t{i}/f7.txt") == f"{i}-{k}-7"
    assert sh(repo, "fsck", "--no-dangling") == ""


# --- diff and merge -----------------------------------------------------------------------


def test_diff_and_changed_files(repo: Path, tmp_path: Path) -> None:
    wt = eg.create_worktree(repo, tmp_path / "wt", "smithers/run1/a")
    base = sh(wt, "rev-parse", "HEAD")
    (wt / "src" / "app.py").write_text("print('v2')\n")
    (wt / "added.txt").write_text("new line\n")
    (wt / "README.md").unlink()
    one = eg.snapshot(wt, "refs/smithers/run1/a/0")
    assert eg.changed_files(wt, base, one) == ["README.md", "added.txt", "src/app.py"]
    assert eg.changed_files(repo, None, one) == ["README.md", "added.txt", "src/app.py"]
    text = eg.diff(repo, None, one)
    assert "+new line" in text and "-print('v1')" in text and "+print('v2')" in text
    assert text == eg.diff(repo, base, one)
    (wt / "added.txt").write_text("new line\nsecond\n")
    two = eg.snapshot(wt, "refs/smithers/run1/a/1")
    assert eg.changed_files(repo, None, two) == ["added.txt"]
    assert eg.changed_files(repo, one, one) == [] and eg.diff(repo, one, one) == ""
    root = sh(repo, "rev-list", "--max-parents=0", "HEAD")
    assert eg.changed_files(repo, None, root) == [".gitignore", "README.md", "src/app.py"]


def test_merge_branches_back(repo: Path, tmp_path: Path) -> None:
    a = eg.create_worktree(repo, tmp_path / "a", "ticket/a")
    b = eg.create_worktree(repo, tmp_path / "b", "ticket/b")
    (a / "a.txt").write_text("from a\n")
    (b / "src" / "app.py").write_text("print('from b')\n")
    assert eg.commit_all(a, "work a") and eg.commit_all(b, "work b")
    assert eg.commit_all(a, "nothing") is None
    first = eg.merge_branch(repo, "ticket/a")
    second = eg.merge_branch(repo, "ticket/b")
    assert first.merged and second.merged and first.conflicts == []
    assert second.commit == sh(repo, "rev-parse", "HEAD")
    assert len(sh(repo, "rev-list", "--parents", "-n", "1", "HEAD").split()) == 3  # --no-ff merge commit
    assert (repo / "a.txt").read_text() == "from a\n"
    assert (repo / "src" / "app.py").read_text() == "print('from b')\n"
    again = eg.merge_branch(repo, "ticket/a")
    assert again.merged and again.commit == second.commit and "already contains" in again.message


def test_merge_into_another_branch(repo: Path, tmp_path: Path) -> None:
    sh(repo, "branch", "release")
    wt = eg.create_worktree(repo, tmp_path / "wt", "ticket/x")
    (wt / "x.txt").write_text("x\n")
    eg.commit_all(wt, "x")
    result = eg.merge_branch(repo, "ticket/x", into="release")
    assert result.merged and "into release" in result.message
    assert sh(repo, "symbolic-ref", "--short", "HEAD") == "release"
    assert sh(repo, "show", "main:README.md") == "hello" and not sh(repo, "ls-tree", "main", "x.txt")


def test_merge_conflict_is_reported_and_aborted(repo: Path, tmp_path: Path) -> None:
    a = eg.create_worktree(repo, tmp_path / "a", "ticket/a")
    b = eg.create_worktree(repo, tmp_path / "b", "ticket/b")
    for wt, text in ((a, "A"), (b, "B")):
        (wt / "README.md").write_text(f"{text}\n")
        (wt / "src" / "app.py").write_text(f"print('{text}')\n")
        (wt / f"only-{text}.txt").write_text(text)
        eg.commit_all(wt, f"work {text}")
    assert eg.merge_branch(repo, "ticket/a").merged
    head = sh(repo, "rev-parse", "HEAD")
    files = eg.file_digest(repo)
    result = eg.merge_branch(repo, "ticket/b")
    assert not result.merged and result.commit is None
    assert result.conflicts == ["README.md", "src/app.py"]
    assert "README.md" in result.message
    assert sh(repo, "rev-parse", "HEAD") == head
    assert sh(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert eg.file_digest(repo) == files
    assert not (repo / ".git" / "MERGE_HEAD").exists()
    assert sh(repo, "show", "ticket/b:README.md") == "B"  # the branch keeps its work


def test_merge_refuses_uncommitted_changes(repo: Path, tmp_path: Path) -> None:
    wt = eg.create_worktree(repo, tmp_path / "wt", "ticket/x")
    (wt / "x.txt").write_text("x\n")
    eg.commit_all(wt, "x")
    (repo / "README.md").write_text("local edit\n")
    with pytest.raises(GitError, match="uncommitted changes: commit or stash them"):
        eg.merge_branch(repo, "ticket/x")
    assert (repo / "README.md").read_text() == "local edit\n"
