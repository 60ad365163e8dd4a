"""Worktree steps: a real git worktree per Worktree node, and a snapshot of its files to a hidden
ref after every task that ran inside it, so each frame knows exactly which files it had."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import git
from .dsl import Worktree
from .errors import SmithersError

if TYPE_CHECKING:
    from .context import TaskCtx
    from .render import Ready
    from .run import RunExecutor


def _suffix(it: int) -> str:
    return f"-{it}" if it else ""


async def run_worktree(ex: "RunExecutor", r: "Ready", tctx: "TaskCtx") -> dict[str, Any]:
    """Make (or, for a fork, restore) the worktree; returns the node's data."""
    node = r.node
    assert isinstance(node, Worktree)
    rec = ex.state.nodes[r.key]
    restore = (rec.data or {}).get("restore")
    try:
        repo = await asyncio.to_thread(git.find_repo, ex.workdir)
    except git.GitError as e:
        raise SmithersError(f"worktree {node.id!r}: {e}") from None
    name = node.id + _suffix(r.key[1])
    default_path = repo / ".worktrees" / ex.run_id / name
    default_branch = f"smithers/{ex.run_id}/{name}"
    try:
        forked = ex.run.parent_run_id is not None
        base = (rec.data or {}).get("base")
        if restore:  # a fork: its own checkout holding exactly the files of the frame it came from
            path, branch = default_path, default_branch
            await asyncio.to_thread(git.restore_worktree, repo, path, branch, restore)
            head = restore
        else:  # explicit path and branch belong to the original run; forks always get their own
            path = (repo / node.path) if node.path and not forked else default_path
            branch = node.branch if node.branch and not forked else default_branch
            await asyncio.to_thread(git.create_worktree, repo, path, branch, node.base)
            head = await asyncio.to_thread(git.head, path)
            base = head
    except git.GitError as e:
        raise SmithersError(f"worktree {node.id!r}: {e}") from None
    return {"path": str(path), "branch": branch, "repo": str(repo), "head": head, "keep": node.keep,
            "base": base or head, **({"restored_from": restore} if restore else {})}


async def snapshot(ex: "RunExecutor", key: tuple[str, int], worktree: tuple[str, int]) -> str | None:
    """Commit the worktree's files after a step to refs/smithers/<run>/<node>/<iteration>."""
    rec = ex.state.nodes.get(worktree)
    if rec is None or not rec.data or not rec.data.get("path"):
        return None
    ref = f"refs/smithers/{ex.run_id}/{key[0]}/{key[1]}"
    try:
        return await asyncio.to_thread(git.snapshot, rec.data["path"], ref)
    except git.GitError as e:
        ex.emit("log", key, {"message": f"snapshot failed: {e}"})
        return None


def _to_remove(ex: "RunExecutor") -> list[tuple[tuple[str, int], dict[str, Any]]]:
    return [(key, rec.data) for key, rec in ex.state.nodes.items()
            if rec.kind == "worktree" and rec.data and rec.data.get("path") and not rec.data.get("keep")
            and not rec.data.get("removed")]


def mark_removing(ex: "RunExecutor", state: str | None = None) -> bool:
    """Record in the pending frame that the run's worktrees are to go (keep=True ones stay); `state`
    also sets the worktree nodes' state. False when there is nothing to remove."""
    todo = _to_remove(ex)
    for key, data in todo:
        rec = ex.state.nodes[key]
        if not data.get("removing"):
            ex.set_node(key, rec.kind, state or rec.state, {**data, "removing": True})
    return bool(todo)


async def remove_worktrees(ex: "RunExecutor") -> None:
    """Remove the worktrees marked for removal (idempotent: one already gone is just pruned); the
    next commit records them as removed. Branches and snapshots stay."""
    for key, data in _to_remove(ex):
        if not data.get("removing"):
            continue
        try:
            await asyncio.to_thread(remove, data)
        except git.GitError as e:
            ex.emit("log", key, {"message": f"could not remove worktree: {e}"})
            continue
        rec = ex.state.nodes[key]
        done = {k: v for k, v in data.items() if k != "removing"}
        ex.set_node(key, rec.kind, rec.state, {**done, "removed": True})
        ex.emit("worktree_removed", key, {"path": data["path"], "branch": data["branch"]})


async def restore_files(ex: "RunExecutor", worktree: tuple[str, int]) -> None:
    """Before a step cut short by a crash runs again: its worktree's files go back to the last
    committed snapshot, so the re-run sees exactly what the first attempt saw."""
    rec = ex.state.nodes.get(worktree)
    data = rec.data if rec is not None else None
    if not data or not data.get("path") or not data.get("head") or data.get("removed"):
        return
    try:
        await asyncio.to_thread(git.restore_files, data["repo"], data["path"], data["branch"], data["head"])
    except git.GitError as e:
        raise SmithersError(f"worktree {worktree[0]!r}: cannot restore its files to snapshot "
                            f"{data['head'][:12]}: {e}") from None


def remove(data: dict[str, Any]) -> None:
    """Remove one worktree (by its node data), and its run's folder under .worktrees/ if now empty."""
    git.remove_worktree(data["repo"], data["path"])
    parent = Path(data["path"]).parent
    if parent.name != ".worktrees" and parent.parent.name == ".worktrees":
        try:
            parent.rmdir()
        except OSError:
            pass
