"""Git worktrees and per-frame file snapshots, over gitpython's git runner.

Synchronous on purpose: the runtime calls these through ``asyncio.to_thread``.

* Isolation: ``create_worktree`` gives a task its own ``git worktree`` on a new branch;
  ``merge_branch`` brings the result back with a real ``git merge --no-ff``.
* Time travel: ``snapshot`` commits a worktree's complete file tree (untracked files
  included, ignored files not) to a hidden ref such as ``refs/smithers/<run>/<node>/<i>``
  through a temporary index, so the user's branches, HEAD, index and files are untouched;
  ``restore_worktree`` puts exactly those files into a new worktree on a new branch.

Every commit made here carries the ``smithers <smithers@localhost>`` identity through
environment variables, so nothing depends on a configured ``user.name``/``user.email``.
Every failure is a ``GitError`` whose message is one actionable line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IDENTITY = {
    "GIT_AUTHOR_NAME": "smithers",
    "GIT_AUTHOR_EMAIL": "smithers@localhost",
    "GIT_COMMITTER_NAME": "smithers",
    "GIT_COMMITTER_EMAIL": "smithers@localhost",
}
# Per-worktree ref (git keeps refs/worktree/* private to each worktree): the last snapshot
# taken of that worktree, the parent of the next one.
LAST_SNAPSHOT_REF = "refs/worktree/smithers/last-snapshot"

_NO_GIT = "git is not installed: install git (apt-get install git)"


class GitError(Exception):
    """A git operation failed; the message says what to do next."""


@dataclass(frozen=True)
class MergeResult:
    merged: bool
    conflicts: list[str] = field(default_factory=list)
    commit: str | None = None
    message: str = ""


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _gitpython() -> Any:
    try:
        import git  # gitpython: imported lazily, and it raises ImportError without a git binary
    except ModuleNotFoundError as exc:
        raise GitError("gitpython is not installed: pip install gitpython") from exc
    except ImportError as exc:
        raise GitError(_NO_GIT) from exc
    return git


def _run(cwd: Path, *args: str, env: dict[str, str] | None = None, strip: bool = True) -> tuple[int, str, str]:
    """Run ``git *args`` in ``cwd``; return (status, stdout, stderr) without raising on failure."""
    gp = _gitpython()
    if not Path(cwd).is_dir():
        raise GitError(f"directory not found: {cwd}: check the path")
    command = [gp.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
    try:
        return gp.Git(str(cwd)).execute(  # type: ignore[no-any-return]  # gitpython is untyped
            command, with_extended_output=True, with_exceptions=False,
            env={**IDENTITY, **(env or {})}, strip_newline_in_stdout=strip,
        )
    except gp.GitCommandNotFound as exc:
        raise GitError(_NO_GIT) from exc


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None, strip: bool = True) -> str:
    status, out, err = _run(cwd, *args, env=env, strip=strip)
    if status != 0:
        raise GitError(f"git {args[0]} failed in {cwd}: {_reason(err or out)}")
    return out


def _reason(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[0] if lines else "no output from git"


def _rev(cwd: Path, rev: str) -> str | None:
    """The object name ``rev`` resolves to, or None."""
    status, out, _ = _run(cwd, "rev-parse", "--verify", "-q", rev)
    return out.strip() if status == 0 and out.strip() else None


def _commit(cwd: Path, rev: str) -> str:
    sha = _rev(cwd, f"{rev}^{{commit}}")
    if sha is None:
        if rev == "HEAD" and _rev(cwd, "HEAD") is None:
            raise GitError(f"the repository at {cwd} has no commits yet: make a first commit")
        raise GitError(f"unknown commit {rev!r} in {cwd}: check the name")
    return sha


def head(path: str | os.PathLike[str]) -> str:
    """The commit checked out at ``path``."""
    return _commit(Path(path), "HEAD")


def find_repo(path: str | os.PathLike[str]) -> Path:
    """The top-level directory of the repository (or worktree) holding ``path``."""
    start = Path(path).expanduser().resolve()
    while not start.is_dir() and start != start.parent:
        start = start.parent
    status, out, err = _run(start, "rev-parse", "--show-toplevel")
    if status != 0:
        if "not a git repository" in err:
            raise GitError(
                f"not inside a git repository: run `git init` in {start} or run the workflow from a repository"
            )
        raise GitError(f"cannot use the repository at {start}: {_reason(err)}")
    return Path(out.strip()).resolve()


@dataclass
class _Worktree:
    path: Path
    head: str | None = None
    branch: str | None = None
    locked: str | None = None
    prunable: bool = False


def _worktrees(cwd: Path) -> list[_Worktree]:
    items: list[_Worktree] = []
    for line in _git(cwd, "worktree", "list", "--porcelain").splitlines():
        key, _, value = line.partition(" ")
        if key == "worktree":
            items.append(_Worktree(Path(value).resolve()))
        elif key == "HEAD":
            items[-1].head = value
        elif key == "branch":
            items[-1].branch = value.removeprefix("refs/heads/")
        elif key == "locked":
            items[-1].locked = value
        elif key == "prunable":
            items[-1].prunable = True
    return items


def _healthy(wt: _Worktree) -> bool:
    """False for stale registrations and for a ``git worktree add`` that died half way."""
    return (not wt.prunable and wt.locked != "initializing" and (wt.path / ".git").is_file()
            and wt.head is not None)


def _prepare_path(main: Path, path: Path, entry: _Worktree | None) -> None:
    """Clear what a crashed or abandoned attempt left at ``path`` so ``worktree add`` can run."""
    if entry is not None:
        if entry.path.exists():
            _run(main, "worktree", "remove", "--force", "--force", str(path))
        _git(main, "worktree", "prune")
    if path.exists():
        dotgit = path / ".git"
        common = (main / _git(main, "rev-parse", "--git-common-dir")).resolve()
        pointer = dotgit.read_text(errors="replace").strip() if dotgit.is_file() else ""
        ours = pointer.startswith("gitdir:") and (path / pointer[7:].strip()).resolve().is_relative_to(common)
        if ours and not any(e.path == path for e in _worktrees(main)):
            shutil.rmtree(path)  # a leftover worktree directory that git no longer knows
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        else:
            raise GitError(f"{path} already exists and is not a worktree of {main}: remove it or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)


def _open_worktree(repo: str | os.PathLike[str], path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(main worktree of ``repo``, resolved ``path``)."""
    main = _worktrees(find_repo(repo))[0].path
    target = Path(path).expanduser().resolve()
    if target == main:
        raise GitError(f"{target} is the repository's main worktree: choose a path for a new worktree")
    return main, target


def _entry(main: Path, target: Path) -> _Worktree | None:
    return next((w for w in _worktrees(main) if w.path == target), None)


def create_worktree(repo: str | os.PathLike[str], path: str | os.PathLike[str], branch: str,
                    base: str | None = None) -> Path:
    """``git worktree add`` of ``repo`` at ``path`` on a new branch ``branch`` from ``base`` (default HEAD).

    Idempotent: an existing healthy worktree at ``path`` on ``branch`` is reused as it is
    (work in progress kept); a stale or half-created one is pruned and created again. If
    ``branch`` already exists (a crash after the branch was made) it is checked out as is.
    """
    main, target = _open_worktree(repo, path)
    with _lock(f"repo:{main}"):
        entry = _entry(main, target)
        if entry is not None and _healthy(entry):
            if entry.branch == branch:
                return target
            raise GitError(f"{target} is already a worktree on {entry.branch or 'a detached HEAD'}: "
                           "remove it or choose another path")
        start = None if _rev(main, f"refs/heads/{branch}") else _commit(find_repo(repo), base or "HEAD")
        _prepare_path(main, target, entry)
        if start is None:
            _git(main, "worktree", "add", str(target), branch)
        else:
            _git(main, "worktree", "add", "-b", branch, str(target), start)
    return target


def restore_worktree(repo: str | os.PathLike[str], path: str | os.PathLike[str], branch: str,
                     commit: str) -> Path:
    """A new worktree at ``path`` on a new branch ``branch`` pointing at snapshot ``commit``.

    Its files are exactly the snapshot's files. Safe to call again after a crash: a
    worktree already at ``path`` on ``branch`` at ``commit`` is reset and cleaned back to the
    snapshot (changes made in it since are discarded); a half-created one is redone.
    """
    main, target = _open_worktree(repo, path)
    with _lock(f"repo:{main}"):
        entry = _entry(main, target)
        sha = _commit(main, commit)
        if entry is not None and _healthy(entry):
            if entry.branch != branch or entry.head != sha:
                raise GitError(f"{target} is already a worktree on {entry.branch or 'a detached HEAD'} at "
                               f"{(entry.head or '?')[:12]}: remove it or choose another path")
            _git(target, "reset", "-q", "--hard", sha)
            _git(target, "clean", "-q", "-ffdx")
            return target
        existing = _rev(main, f"refs/heads/{branch}")
        if existing not in (None, sha):
            raise GitError(f"branch {branch} already exists at another commit: choose a new branch name")
        _prepare_path(main, target, entry)
        if existing is None:
            _git(main, "worktree", "add", "-b", branch, str(target), sha)
        else:
            _git(main, "worktree", "add", str(target), branch)
    return target


def restore_files(repo: str | os.PathLike[str], path: str | os.PathLike[str], branch: str, commit: str) -> Path:
    """Put back exactly the files of snapshot ``commit`` in the worktree at ``path`` (tracked and
    untracked files alike; ignored files stay), without moving its HEAD or branch: what a step that
    was cut short wrote is undone, so its re-run sees what its first attempt saw. A worktree whose
    folder is gone is checked out again on ``branch`` first."""
    main, target = _open_worktree(repo, path)
    with _lock(f"repo:{main}"):
        sha = _commit(main, commit)
        entry = _entry(main, target)
        if entry is None or not _healthy(entry):
            _prepare_path(main, target, entry)
            if _rev(main, f"refs/heads/{branch}") is None:
                _git(main, "worktree", "add", "-b", branch, str(target), sha)
            else:
                _git(main, "worktree", "add", str(target), branch)
        scratch = tempfile.mkdtemp(prefix="smithers-index-")
        try:
            env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            _git(target, "read-tree", sha, env=env)
            _git(target, "checkout-index", "-a", "-f", env=env)
            extra = _git(target, "ls-files", "-z", "--others", "--exclude-standard", env=env, strip=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for rel in filter(None, extra.split("\0")):
            p = target / rel
            if p.is_file() or p.is_symlink():
                p.unlink()  # (empty folders stay: git holds files, not folders)
    return target


def remove_worktree(repo: str | os.PathLike[str], path: str | os.PathLike[str], force: bool = True) -> None:
    """Remove the worktree at ``path`` and prune; its branch stays. Nothing to do if already gone."""
    main, target = _open_worktree(repo, path)
    with _lock(f"repo:{main}"):
        entry = _entry(main, target)
        if entry is not None and entry.path.exists():
            _git(main, "worktree", "remove", *(["--force", "--force"] if force else []), str(target))
        _git(main, "worktree", "prune")


def commit_all(worktree: str | os.PathLike[str], message: str) -> str | None:
    """Commit every change in ``worktree`` onto its branch (so it can be merged); None if clean."""
    top = find_repo(worktree)
    _git(top, "add", "-A")
    if not _git(top, "status", "--porcelain"):
        return None
    _git(top, "commit", "-q", "--no-verify", "-m", message)
    return _commit(top, "HEAD")


def snapshot(worktree: str | os.PathLike[str], ref: str) -> str:
    """Commit the complete current file tree of ``worktree`` to the hidden ref ``ref``.

    Untracked files are included, ignored files are not, deleted files are absent. The
    worktree's HEAD, branches, index and files are not touched (a temporary index is used).
    The parent is this worktree's previous snapshot, else its HEAD. Returns the commit sha;
    when nothing changed since that parent no new commit is made: ``ref`` is pointed at the
    parent and the parent's sha is returned (so equal files give equal shas and tree hashes).
    """
    if not ref.startswith("refs/") or ref.startswith(("refs/heads/", "refs/worktree/")):
        raise GitError(f"snapshot ref {ref!r} must be a hidden ref: use refs/smithers/<run>/<node>/<iteration>")
    top = find_repo(worktree)
    with _lock(f"snapshot:{top}"):
        parent = _rev(top, f"{LAST_SNAPSHOT_REF}^{{commit}}") or _rev(top, "HEAD^{commit}")
        real_index = (top / _git(top, "rev-parse", "--git-path", "index")).resolve()
        scratch = tempfile.mkdtemp(prefix="smithers-index-")
        try:
            index = Path(scratch) / "index"
            if real_index.is_file():
                # Its stat data spares re-hashing unchanged files. copy2 keeps the index's
                # mtime, which git's racy-entry check needs to catch same-size edits.
                shutil.copy2(real_index, index)
            env = {"GIT_INDEX_FILE": str(index)}
            _git(top, "add", "-A", env=env)
            tree = _git(top, "write-tree", env=env).strip()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if parent is not None and _rev(top, f"{parent}^{{tree}}") == tree:
            sha = parent
        else:
            sha = _git(top, "commit-tree", tree, *(["-p", parent] if parent else []),
                       "-m", f"smithers snapshot {ref}").strip()
        _git(top, "update-ref", "-m", "smithers snapshot", ref, sha)
        _git(top, "update-ref", LAST_SNAPSHOT_REF, sha)
    return sha


def tree_hash(repo: str | os.PathLike[str], commit: str) -> str:
    """The tree object name of ``commit``: equal file trees give equal hashes."""
    return _git(find_repo(repo), "rev-parse", f"{commit}^{{tree}}").strip()


def file_digest(path: str | os.PathLike[str]) -> dict[str, str]:
    """Relative posix path -> sha256 of the contents, for every file under ``path`` (no .git)."""
    root = Path(path)
    digests: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):  # symlinked dirs are listed, not entered
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d != ".git" and d not in links]
        for name in [*filenames, *links]:
            if name == ".git":
                continue
            full = Path(dirpath, name)
            data = ("symlink:" + os.readlink(full)).encode() if full.is_symlink() else full.read_bytes()
            digests[full.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return digests


def _pair(top: Path, a: str | None, b: str) -> tuple[str, str]:
    new = _commit(top, b)
    if a is not None:
        return _commit(top, a), new
    return _rev(top, f"{new}^1") or _git(top, "hash-object", "-t", "tree", os.devnull).strip(), new


def diff(repo: str | os.PathLike[str], a: str | None, b: str) -> str:
    """Unified diff from ``a`` to ``b``; ``a=None`` means b's first parent (empty tree for a root)."""
    top = find_repo(repo)
    return _git(top, "diff", "--no-color", "--no-ext-diff", "--binary", "-M", *_pair(top, a, b), strip=False)


def changed_files(repo: str | os.PathLike[str], a: str | None, b: str) -> list[str]:
    """Paths added, modified or deleted from ``a`` to ``b`` (renames as delete + add), sorted."""
    top = find_repo(repo)
    out = _git(top, "diff", "--name-only", "-z", "--no-renames", *_pair(top, a, b), strip=False)
    return sorted(p for p in out.split("\0") if p)


def merge_branch(repo: str | os.PathLike[str], branch: str, into: str | None = None) -> MergeResult:
    """``git merge --no-ff branch`` into the branch checked out in ``repo`` (after checking out ``into``).

    On conflict the merge is aborted and the conflicted paths are returned with merged=False:
    the repository is left as it was. Refuses to start with uncommitted changes to tracked files.
    """
    top = find_repo(repo)
    with _lock(f"repo:{_worktrees(top)[0].path}"):
        _commit(top, "HEAD")
        _commit(top, branch)
        if _git(top, "status", "--porcelain", "--untracked-files=no"):
            raise GitError(f"{top} has uncommitted changes: commit or stash them before merging {branch}")
        if into:
            _git(top, "checkout", "-q", into)
        target = _run(top, "symbolic-ref", "--short", "-q", "HEAD")[1].strip() or "HEAD"
        before = _commit(top, "HEAD")
        status, out, err = _run(top, "merge", "--no-ff", "--no-edit", "-m",
                                f"Merge branch '{branch}' into {target}", branch)
        if status == 0:
            after = _commit(top, "HEAD")
            note = f"{target} already contains {branch}" if after == before else f"merged {branch} into {target}"
            return MergeResult(merged=True, conflicts=[], commit=after, message=note)
        conflicts = sorted(p for p in _git(top, "diff", "--name-only", "-z", "--diff-filter=U", strip=False)
                           .split("\0") if p)
        if _rev(top, "MERGE_HEAD"):
            _git(top, "merge", "--abort")
        if not conflicts:
            raise GitError(f"git merge of {branch} failed in {top}: {_reason(err or out)}")
        return MergeResult(
            merged=False, conflicts=conflicts, commit=None,
            message=f"merging {branch} into {target} conflicts in {', '.join(conflicts)}: "
                    f"nothing was changed; resolve them on {branch} and merge again",
        )
