"""kill -9 during fork and rewind. `smithers fork` / `smithers rewind` of a large run (big outputs, so
the fork's transaction takes a little while) are SIGKILLed at seeded random early moments, and also
deterministically in the middle of the fork's transaction (after each of its statements). After every
kill the database holds either the old state (no new run; the original untouched, not rewound) or the
new one (the new run with its frame 0 and every carried output equal to the original's at that frame;
for a rewind the original rewound with its successor) — never a mix. A fork's worktree appears only
when it runs; after a resume it holds the files of the frame it came from, even when the process that
was restoring it was killed."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from engine import git
from engine.store import Store
from tests.support import Smithers, clean_env, smithers_argv

N_BIG = 120

BIG = f"""
from pathlib import Path

from engine import Parallel, Sequence, Task, Worktree, workflow
from engine.git import file_digest


def write(ctx):
    wd = Path(ctx.workdir)
    (wd / f"{{ctx.node_id}}.txt").write_text(ctx.node_id * 10)
    return file_digest(wd)


def big(ctx):
    return {{"id": ctx.node_id, "blob": (ctx.node_id + "-") * 8000}}


@workflow
def big_run(ctx):
    return Sequence(
        Worktree("wt", Task("w1", run=write), Task("w2", run=write), keep=True),
        Parallel(*[Task(f"b{{i:03d}}", run=big) for i in range({N_BIG})]),
        Task("end", value="end"),
    )
"""

# Runs the real CLI, but pauses inside the fork's transaction after AFTER statements (and says so in
# MARK), so that the test can kill it exactly there. Only the transaction is wrapped: the SQL is the
# engine's own.
PAUSING = """
import os
import sys
import time
from pathlib import Path

import engine.store.sqlite as sq

AFTER = int(os.environ["PAUSE_AFTER"])
MARK = Path(os.environ["PAUSE_MARK"])
real_apply = sq._apply


class Pausing:
    def __init__(self, conn):
        self.conn, self.n = conn, 0

    def _count(self, sql):
        if sql.split()[0].upper() in ("INSERT", "UPDATE", "DELETE", "SELECT"):
            self.n += 1
            if self.n == AFTER:
                MARK.write_text(str(self.n))
                time.sleep(60)

    def execute(self, sql, *args):
        cur = self.conn.execute(sql, *args)
        self._count(sql)
        return cur

    def executemany(self, sql, rows):
        cur = self.conn.executemany(sql, rows)
        self._count(sql)
        return cur


def pausing_apply(conn, *args, **kwargs):
    return real_apply(Pausing(conn), *args, **kwargs)


sq._apply = pausing_apply
from smithers_tui.cli import main

sys.argv[0] = "smithers"
main()
"""

TABLES = ("runs", "nodes", "outputs", "attempts", "frames", "keyframes", "events", "approvals")


def sh(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=Test User", "-c", "user.email=test@example.com", *args],
                          cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def dump(db: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}
    finally:
        conn.close()


def without_run(d: dict[str, list[tuple]], run_id: str) -> dict[str, list[tuple]]:
    """Every row not belonging to run_id (column 0 is id/run_id in every table but events)."""
    out = {}
    for t, rows in d.items():
        col = 1 if t == "events" else 0
        out[t] = [r for r in rows if r[col] != run_id]
    return out


class World:
    """A repository, a finished large run in a pristine database, and what it looked like at each frame."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.repo = tmp_path / "repo"
        self.repo.mkdir()
        sh(self.repo, "init", "-q", "-b", "main")
        (self.repo / "README").write_text("hello\n")
        sh(self.repo, "add", "-A")
        sh(self.repo, "commit", "-q", "-m", "init")
        self.wf = tmp_path / "big.py"
        self.wf.write_text(BIG)
        self.pristine = tmp_path / "pristine.db"
        cli = Smithers(self.repo, self.pristine)
        done = cli("run", self.wf, "--run-id", "orig", "--max-concurrency", "16", "-q")
        assert done.returncode == 0, done.stderr
        self.last = cli.json("show", "orig")["last_frame"]
        self.base_files = git.file_digest(self.repo)
        self.pristine_dump = dump(self.pristine)
        self.at: dict[int, tuple[dict, dict]] = asyncio.run(self._frames())
        self.rounds = 0

    async def _frames(self) -> dict[int, tuple[dict, dict]]:
        store = await Store.open(self.pristine, create=False)
        try:
            out = {}
            for n in range(self.last + 1):
                nodes, outputs, _ = await store.state_at("orig", n)
                out[n] = (nodes, outputs)
            return out
        finally:
            await store.close()

    def fresh_db(self) -> Path:
        self.rounds += 1
        db = self.tmp / f"round{self.rounds}.db"
        for suffix in ("", "-wal"):
            src = Path(f"{self.pristine}{suffix}")
            if src.exists():
                shutil.copyfile(src, f"{db}{suffix}")
        return db

    def done_at(self, n: int) -> set[tuple[str, int]]:
        nodes, _ = self.at[n]
        return {k for k, r in nodes.items() if r.kind == "task" and r.state in ("done", "skipped")}

    def files_at(self, n: int) -> dict[str, str]:
        """The worktree's files at frame n, as the steps themselves saw them on disk."""
        nodes, outputs = self.at[n]
        for step in ("w2", "w1"):
            if (step, 0) in outputs and nodes[(step, 0)].state == "done":
                return outputs[(step, 0)]
        return self.base_files

    def check(self, db: Path, kind: str, n: int, new_id: str) -> bool:
        """The database is entirely the old state or entirely the new one. Returns whether the new
        run exists."""
        after = dump(db)
        new_rows = {t: [r for r in rows if r[1 if t == "events" else 0] == new_id] for t, rows in after.items()}
        if not any(new_rows.values()):  # the old state, exactly
            assert after == self.pristine_dump, f"{kind} round without a new run changed the database"
            return False
        # the new state: the original's history is intact ...
        orig_before = [r for r in self.pristine_dump["runs"] if r[0] == "orig"][0]
        orig_after = [r for r in after["runs"] if r[0] == "orig"][0]
        rest_after, rest_before = without_run(after, new_id), without_run(self.pristine_dump, new_id)
        rest_after["runs"] = [r for r in rest_after["runs"] if r[0] != "orig"]
        rest_before["runs"] = [r for r in rest_before["runs"] if r[0] != "orig"]
        if kind == "rewind":
            rewound = [r for r in rest_after["events"] if r[4] == "run_rewound"]
            assert len(rewound) == 1 and rewound[0][1] == "orig"
            rest_after["events"] = [r for r in rest_after["events"] if r[4] != "run_rewound"]
        assert rest_after == rest_before
        cols = [c[1] for c in sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("PRAGMA table_info(runs)")]
        o_before, o_after = dict(zip(cols, orig_before)), dict(zip(cols, orig_after))
        if kind == "rewind":
            assert (o_after["status"], o_after["successor_run_id"]) == ("rewound", new_id)
            changed = {c for c in cols if o_before[c] != o_after[c]}
            assert changed <= {"status", "successor_run_id", "updated_at", "owner_id"}, changed
        else:
            assert o_after == o_before
        # ... and the new run is complete: its row, frame 0, keyframe 0, nodes, every carried output
        row = dict(zip(cols, new_rows["runs"][0]))
        assert (row["parent_run_id"], row["parent_frame"], row["kind"], row["frame"]) == ("orig", n, kind, 0)
        assert [r[1] for r in new_rows["frames"]] == [0] and [r[1] for r in new_rows["keyframes"]] == [0]
        assert row["status"] == "queued" and row["owner_id"] is None  # made, waiting to be run
        _, outputs_at = self.at[n]
        done = self.done_at(n)
        carried = {(r[1], r[2]): json.loads(r[3]) for r in new_rows["outputs"] if r[5] == 0}
        assert set(carried) == done, (n, sorted(set(carried) ^ done)[:5])
        assert all(carried[k] == outputs_at[k] for k in done)
        node_states = {(r[1], r[2]): r[4] for r in new_rows["nodes"]}
        assert all(node_states.get(k) in ("done", "skipped") for k in done)
        assert not {k for k, st in node_states.items() if st == "running"}
        assert [r[4] for r in new_rows["events"] if r[2] == 0][0] == "run_forked"
        return True

    def no_worktree_yet(self, new_id: str) -> None:
        assert not (self.repo / ".worktrees" / new_id).exists()
        assert f"refs/heads/smithers/{new_id}/" not in sh(self.repo, "for-each-ref", "refs/heads")

    def resume_and_check_files(self, db: Path, new_id: str, n: int) -> None:
        """Resume the new run to its end: its worktree first holds frame n's files (seen by the step
        that runs first in it, or, when all ran before n, at the end), then the original's last files."""
        cli = Smithers(self.repo, db)
        done = cli("resume", new_id, "--json", timeout=120)
        assert done.returncode == 0, done.stderr
        rep = json.loads(done.stdout)
        outs = {(x["id"], x["iteration"]): x["output"] for x in rep["nodes"]}
        _, final_outputs = self.at[self.last]
        assert {k: v for k, v in outs.items() if k in final_outputs} == final_outputs
        wt = next(x for x in rep["nodes"] if x["id"] == "wt")["worktree"]
        assert wt["path"].endswith(f"/.worktrees/{new_id}/wt") and wt["branch"] == f"smithers/{new_id}/wt"
        assert git.file_digest(wt["path"]) == final_outputs[("w2", 0)]
        files_n = self.files_at(n)
        restored = wt.get("restored_from")
        if restored:
            assert git.tree_hash(self.repo, restored) == git.tree_hash(self.repo, self.head_at(n))
            assert digest_of(self.repo, restored) == files_n

    def head_at(self, n: int) -> str:
        nodes, _ = self.at[n]
        return nodes[("wt", 0)].data["head"]


def digest_of(repo: Path, rev: str) -> dict[str, str]:
    import hashlib

    out = {}
    for line in sh(repo, "ls-tree", "-r", "-z", rev).split("\0"):
        if line:
            meta, path = line.split("\t", 1)
            blob = subprocess.run(["git", "cat-file", "blob", meta.split(" ")[2]], cwd=repo, capture_output=True,
                                  check=True).stdout
            out[path] = hashlib.sha256(blob).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("kill_tt"))


def argv(kind: str, db: Path, n: int, new_id: str, *extra: str) -> list[str]:
    return [*smithers_argv(), "--db", str(db), kind, "orig", "--frame", str(n), "--run-id", new_id, *extra]


def test_the_world_is_as_expected(world):
    assert world.last >= 6
    assert world.done_at(world.last) >= {(f"b{i:03d}", 0) for i in range(N_BIG)}
    assert world.files_at(world.last) != world.base_files
    first = min(n for n in world.at if ("w1", 0) in world.done_at(n))
    assert world.files_at(first - 1) == world.base_files


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["fork", "rewind"])
def test_kill_at_random_early_moments(world, kind):
    rng = random.Random(f"kill-{kind}")
    # how long an unkilled one takes, to spread the kills over its whole life
    db = world.fresh_db()
    t0 = time.monotonic()
    done = subprocess.run(argv(kind, db, world.last, "probe"), cwd=world.repo, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert world.check(db, kind, world.last, "probe")

    outcomes = {True: 0, False: 0}
    resumed = 0
    for i in range(12):
        n = rng.choice([0, 1, 2, 3, world.last // 2, world.last, rng.randint(0, world.last)])
        new_id = f"{kind}{i}"
        db = world.fresh_db()
        proc = subprocess.Popen(argv(kind, db, n, new_id), cwd=world.repo, env=clean_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(0.3, 1.05) * took if i % 4 else rng.uniform(0.0, 0.3) * took
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), (proc.returncode, err)
        exists = world.check(db, kind, n, new_id)
        if proc.returncode == 0:
            assert exists, "a fork that reported success must exist"
        outcomes[exists] += 1
        world.no_worktree_yet(new_id)
        if exists and resumed < 2 and ("w1", 0) in world.done_at(n):
            world.resume_and_check_files(db, new_id, n)
            resumed += 1
    assert sum(outcomes.values()) == 12


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["fork", "rewind"])
def test_kill_inside_the_transaction_after_each_statement(world, kind, tmp_path):
    script = tmp_path / "pausing.py"
    script.write_text(PAUSING)
    n = world.last // 2
    after = 1
    total = None
    while total is None or after <= total:
        db = world.fresh_db()
        mark = tmp_path / f"mark{after}"
        new_id = f"{kind}-mid{after}"
        env = clean_env(PAUSE_AFTER=str(after), PAUSE_MARK=str(mark))
        proc = subprocess.Popen([smithers_argv()[0], str(script), "--db", str(db), kind, "orig", "--frame", str(n),
                                 "--run-id", new_id], cwd=world.repo, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not mark.exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "never reached the statement"
            time.sleep(0.005)
        if proc.poll() is not None:  # ran past the last statement: the transaction is done
            out, err = proc.communicate()
            assert proc.returncode == 0, err
            assert world.check(db, kind, n, new_id)
            total = after - 1
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert not world.check(db, kind, n, new_id), f"killed after statement {after}: a partial fork is visible"
        world.no_worktree_yet(new_id)
        after += 1
    assert total is not None and total >= 5  # run, nodes, outputs, keyframe, frame, events...


@pytest.mark.timeout(120)
def test_kill_fork_run_while_it_restores_files_then_resume(world):
    """`smithers fork --run` killed at random moments (also while git restores the worktree); a
    resume always ends with the original's files and outputs, and a worktree made from frame n."""
    rng = random.Random("fork-run")
    n = min(k for k in world.at if ("w2", 0) in world.done_at(k))  # the worktree is restored, its steps carried
    for i in range(4):
        db = world.fresh_db()
        new_id = f"fr{i}"
        proc = subprocess.Popen(argv("fork", db, n, new_id, "--run", "-q"), cwd=world.repo, env=clean_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.15, 0.45))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            exists = conn.execute("SELECT count(*) FROM runs WHERE id=?", (new_id,)).fetchone()[0] == 1
            status = conn.execute("SELECT status FROM runs WHERE id=?", (new_id,)).fetchone()
        finally:
            conn.close()
        if not exists:
            assert dump(db) == world.pristine_dump
            world.no_worktree_yet(new_id)
            continue
        if status[0] != "finished":
            world.resume_and_check_files(db, new_id, n)
        wt = Path(world.repo / ".worktrees" / new_id / "wt")
        assert git.file_digest(wt) == world.files_at(world.last)
