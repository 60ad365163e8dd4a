"""Nothing lost, nothing run twice, with real processes: concurrent writers on one file, a kill in
the window after a worktree is removed, a kill in the middle of a worktree step, fsyncs per commit,
past views, consistent reads, and runs whose owner died."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from engine import Loop, Task, workflow
from engine.runtime import Engine
from engine.store import Store
from tests.support import (MARK, ROOT, Smithers, blocks_once, clean_env, git_repo, ran, sh, stops_after, target_of,
                           wait_until)

LOOP = """
from engine import Loop, Task, workflow


async def noop(ctx):
    return ctx.iteration


@workflow
def many(ctx):
    return Loop("l", Task("s", run=noop), until=False, max_iterations={n})
"""

READER = """
import asyncio, sys
from pathlib import Path
from engine.runtime import Engine
from engine.store import Store

async def main(db, stop):
    reads = errors = 0
    while not Path(stop).exists():
        try:
            async with await Store.open(db, readonly=True) as store:
                eng = Engine(store)
                for r in await eng.runs():
                    await eng.report(r.run_id)
                    reads += 1
        except Exception as e:
            errors += 1
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
    print(reads)
    sys.exit(1 if errors else 0)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_sixteen_writers_and_four_readers_on_one_file_never_fail(tmp_path: Path) -> None:
    """Writers wait for each other (SQLite's lock), however many: none fails with 'database is locked'."""
    flow = tmp_path / "many.py"
    flow.write_text(LOOP.format(n=60))
    db = tmp_path / "c.db"
    cli = Smithers(tmp_path, db)
    assert cli("run", flow, "--run-id", "first", "-q").returncode == 0  # the file exists before readers open it
    stop = tmp_path / "stop"
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(db), str(stop)], cwd=ROOT, env=clean_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    writers = [cli.spawn("run", flow, "--run-id", f"w{i:02d}", "-q") for i in range(16)]
    try:
        results = [(w.wait(), w.communicate()) for w in writers]
    finally:
        stop.write_text("x")
    for code, (_out, err) in results:
        assert code == 0 and not err, err
    for r in readers:
        out, err = r.communicate()
        assert r.returncode == 0, err
        assert int(out) > 0
    runs = cli.json("ps")
    assert len(runs) == 17 and {r["status"] for r in runs} == {"finished"}


WT = MARK + """
from engine import Sequence, Task, Worktree, workflow


def write(ctx):
    Path(ctx.workdir, f"{ctx.node_id}.txt").write_text(ctx.node_id)
    return mark(ctx)


@workflow
def wt(ctx):
    return Sequence(Worktree("tree", Task("a", run=write), Task("b", run=write)), Task("after", run=mark))
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return git_repo(tmp_path / "repo", {"README.md": "hi\n"})


def test_a_kill_right_after_the_worktree_is_removed_leaves_a_run_that_resumes(tmp_path: Path, repo: Path) -> None:
    flow = tmp_path / "wt.py"
    flow.write_text(WT)
    marker = tmp_path / "removed"
    cli = Smithers(repo, tmp_path / "s.db")
    proc = subprocess.Popen([sys.executable, "-c", stops_after("engine.worktree:remove", marker),
                             "--db", str(cli.db), "run", str(flow), "--run-id", "w", "-q"], cwd=repo,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: marker.exists() or proc.poll() is not None, "the worktree's removal")
        assert proc.poll() is None, proc.communicate()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    wt_dir = repo / ".worktrees" / "w" / "tree"
    assert not wt_dir.exists()  # removed, and the process died before recording it
    assert cli.json("show", "w")["status"] == "interrupted"
    for _ in range(2):  # and every later resume too
        done = cli("resume", "w", "--json")
        assert done.returncode in (0, 4), done.stderr
        if done.returncode == 4:
            assert "finished" in done.stderr
    rep = cli.json("show", "w")
    assert rep["status"] == "finished"
    assert ran(tmp_path, "w") == Counter({("a", 0): 1, ("b", 0): 1, ("after", 0): 1})
    tree = next(n for n in rep["nodes"] if n["id"] == "tree")
    assert tree["worktree"]["removed"] is True and "removing" not in tree["worktree"]


HALF = MARK + """
from engine import Sequence, Task, Worktree, workflow

BLOCKED = Path(__file__).with_name("blocked-once")


def first(ctx):
    Path(ctx.workdir, "kept.txt").write_text("from a finished step")
    return mark(ctx)


def half(ctx):
    seen = sorted(p.name for p in Path(ctx.workdir).iterdir() if p.name != ".git")
    (Path(ctx.workdir) / "half.txt").write_text("written by an attempt that was killed")
    (Path(ctx.workdir) / "kept.txt").write_text("clobbered by an attempt that was killed")
    if not BLOCKED.exists():
        BLOCKED.write_text("x")
        time.sleep(3600)
    mark(ctx)
    return {"seen": seen, "kept": (Path(ctx.workdir) / "kept.txt").read_text()}


import time


@workflow
def halfway(ctx):
    return Worktree("tree", Task("first", run=first), Task("half", run=half), keep=True)
"""


def test_an_interrupted_worktree_step_reruns_on_the_files_of_the_last_committed_snapshot(
        tmp_path: Path, repo: Path) -> None:
    flow = tmp_path / "half.py"
    flow.write_text(HALF)
    cli = Smithers(repo, tmp_path / "s.db")
    proc = cli.spawn("run", flow, "--run-id", "h")
    try:
        wait_until(lambda: (tmp_path / "blocked-once").exists() or proc.poll() is not None, "the step to block")
        assert proc.poll() is None, proc.communicate()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    done = cli("resume", "h", "--json")
    assert done.returncode == 0, done.stderr
    out = {n["id"]: n for n in json.loads(done.stdout)["nodes"]}["half"]["output"]
    # what the re-run saw at its start: the snapshot after `first`, not the killed attempt's files
    assert out["seen"] == ["README.md", "kept.txt"]
    assert (repo / ".worktrees" / "h" / "tree" / "kept.txt").read_text() == "clobbered by an attempt that was killed"


def test_every_commit_is_fsynced_at_full_durability_and_not_at_normal(tmp_path: Path) -> None:
    """A finished step survives an OS crash: with durability full (the default) each commit reaches
    the disk (an fsync of the WAL) before the next step starts. strace counts the fsyncs."""
    flow = tmp_path / "many.py"
    flow.write_text(LOOP.format(n=50))
    counts = {}
    for mode in ("full", "normal"):
        db = tmp_path / f"{mode}.db"
        log = tmp_path / f"{mode}.strace"
        env = clean_env(SMITHERS_ENGINE__DURABILITY=mode)
        done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(log),
                               *Smithers(tmp_path, db).argv("run", flow, "--run-id", mode, "-q")],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        counts[mode] = sum(1 for line in log.read_text().splitlines() if "sync(" in line)
        frames = Smithers(tmp_path, db).json("show", mode)["last_frame"]
    assert counts["full"] >= frames + 1, counts  # every frame (and the run's creation)
    assert counts["normal"] < frames // 2, counts


GATE = """
from engine import Approval, Sequence, Task, workflow


@workflow
def gated(ctx):
    return Sequence(Task("a", value=1), Approval("ok", message="go?"), Task("b", value=2))
"""


def test_a_past_view_shows_decisions_made_after_it_as_undecided(tmp_path: Path) -> None:
    flow = tmp_path / "gated.py"
    flow.write_text(GATE)
    cli = Smithers(tmp_path, tmp_path / "s.db")
    assert cli("run", flow, "--run-id", "g", "-q").returncode == 3
    waiting_frame = cli.json("show", "g")["last_frame"]
    assert cli("approve", "g", "--by", "ann", "--note", "fine", "-q").returncode == 0
    decided = cli.json("show", "g")
    assert decided["approvals"][0]["decision"] == "approved"  # recorded, not yet acted on
    past = cli.json("show", "g", "--frame", str(waiting_frame))
    assert [(a["node_id"], a["decision"], a["decided_by"]) for a in past["approvals"]] == [("ok", None, None)]
    assert cli("resume", "g", "-q").returncode == 0
    end = cli.json("show", "g")
    assert cli.json("show", "g", "--frame", str(waiting_frame))["approvals"] == past["approvals"]
    after = cli.json("show", "g", "--frame", str(end["last_frame"]))
    assert [(a["decision"], a["decided_by"], a["note"]) for a in after["approvals"]] == [("approved", "ann", "fine")]
    assert cli.json("show", "g", "--frame", "0")["approvals"] == []


@workflow
def steady(ctx):
    return Loop("l", Task("s", run=_noop), until=False, max_iterations=400)


async def _noop(ctx):
    return None


async def test_a_report_reads_one_snapshot_while_the_run_moves(tmp_path: Path) -> None:
    """Frame f of a loop of one step per iteration has f - 1 steps done: a report that read the run
    and its nodes at different moments would say otherwise."""
    import asyncio

    db = tmp_path / "s.db"
    writer = await Store.open(db)
    reader = await Store.open(db, readonly=True)
    try:
        ex = await Engine(writer).start(steady, target_of(steady), None, run_id="s")
        task = asyncio.create_task(ex.execute())
        view = Engine(reader)
        checked = 0
        while not task.done():
            rep = await view.report("s")
            done = sum(1 for n in rep.nodes if n.kind == "task" and n.state == "done")
            if rep.status == "running" and rep.frame >= 1:
                assert done == rep.frame - 1, (rep.frame, done)
                checked += 1
            await asyncio.sleep(0)
        assert await task == "finished" and checked > 0
    finally:
        await reader.close()
        await writer.close()


def test_a_run_whose_owner_died_is_interrupted_and_logs_follow_ends(tmp_path: Path) -> None:
    flow = tmp_path / "blocks.py"
    flow.write_text(blocks_once())
    cli = Smithers(tmp_path, tmp_path / "s.db")
    owner = cli.spawn("run", flow, "--run-id", "o")
    try:
        wait_until(lambda: (tmp_path / "blocked-once").exists() or owner.poll() is not None, "the step to block")
        assert owner.poll() is None
        assert cli.json("ps")[0]["status"] == "running"
        follow = cli.spawn("logs", "o", "--follow")
        assert "run_started" in follow.stdout.readline()  # it follows the live run
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.communicate()
    out, err = follow.communicate(timeout=120)
    assert follow.returncode == 1, (out, err)
    assert "interrupted" in err and "smithers resume o" in err and err.count("\n") == 1
    ps = cli.json("ps")
    assert (ps[0]["status"], ps[0]["owner"]["alive"]) == ("interrupted", False)
    assert [r["run_id"] for r in cli.json("ps", "--status", "interrupted")] == ["o"]
    assert cli.json("ps", "--status", "running") == []
    assert cli("resume", "o", "-q").returncode == 0
    assert cli.json("ps")[0]["status"] == "finished"


def test_empty_folders_do_not_travel_with_frames(tmp_path: Path, repo: Path) -> None:
    """git holds files, not folders: a folder a step leaves empty is not in the step's snapshot (the
    README says so)."""
    from engine import git

    wt = repo / "w"
    git.create_worktree(repo, wt, "b", None)
    (wt / "empty").mkdir()
    (wt / "full").mkdir()
    (wt / "full" / "f.txt").write_text("x")
    sha = git.snapshot(wt, "refs/smithers/t/n/0")
    files = sh(repo, "ls-tree", "-r", "--name-only", sha).split()
    assert "full/f.txt" in files and not any(f.startswith("empty") for f in files)
