"""The CLI's contract at its edges: bad flags, a limit below 1, a newer database left alone, an owner
displaced by --force. (Each test once exposed a bug; its docstring says which.)"""
from __future__ import annotations


import pytest

from tests.support import blocks_once, newer_database


@pytest.mark.parametrize("args", [["run", "hello", "--bogus"], ["ps", "--status", "bogus"], ["no-such-command"]])
def test_a_bad_flag_is_one_line_and_exit_4(smithers, db_path, args):
    """smithers_tui/cli.py:27 build_parser: argparse reports a bad flag / choice / command with exit
    code 2 (which the contract reserves for "cancelled") and two lines (usage + error). DESIGN:
    "4 bad input (unknown workflow or run, invalid input, bad flag)", one line. Fix: an
    ArgumentParser subclass whose error(message) prints `smithers: {message} (see smithers
    {cmd} --help)` on one line and exits 4 (pass it as parser_class to add_subparsers too)."""
    done = smithers(*args)
    assert done.returncode == 4, (done.returncode, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not db_path.exists()


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_concurrency_below_1_is_refused(smithers, db_path, value):
    """smithers_tui/cli.py:45 and :250 cmd_run: `--max-concurrency 0` silently becomes 4 (`args.max_concurrency
    or 4`), and `--max-concurrency -1` is stored as the run's limit, so RunExecutor._loop computes
    room = -1 - 0 < 0, never starts a step and waits forever (the process hangs). Fix: refuse
    values < 1 as bad input (exit 4) in the CLI, and raise BadInput in Engine.start /
    Engine.__init__ for max_concurrency < 1."""
    done = smithers("run", "hello", "--max-concurrency", value, timeout=8)
    assert done.returncode == 4, (done.returncode, done.stderr)
    assert "concurrency" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not db_path.exists()


def test_cli_leaves_a_newer_database_byte_identical(smithers, tmp_path):
    """Same root cause as test_a_database_from_a_newer_schema_is_not_modified (Store.open sets WAL
    before reading user_version), seen through `smithers run`: the contract says bad input writes
    nothing, but the file header is rewritten and -wal/-shm files appear."""
    newer = newer_database(tmp_path / "newer.db")
    before = newer.read_bytes()
    done = smithers("run", "hello", db=newer)
    assert done.returncode == 4
    assert newer.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newer.db"]




def test_an_owner_displaced_by_force_stops_with_one_line_and_writes_nothing(smithers, write_workflow, tmp_path):
    """engine/run.py RunExecutor.commit + engine/store/sqlite.py:200 commit_ops: commits are not fenced by the lease (`UPDATE runs SET
    ... WHERE id=?` without `AND owner_id=?`). After `resume --force`, the old owner's next commit
    only fails by accident, on the frames primary key (sqlite3.IntegrityError: UNIQUE constraint
    failed: frames.run_id, frames.frame), and the old process dies with a raw traceback and exit 1.
    If the old owner commits between the new owner's lease update and its first frame, the old
    owner's frame wins and the new owner is the one that crashes, with stale state. Fix: add
    `AND owner_id=?` to the runs UPDATE in commit_ops, check its rowcount in commit (rollback
    when 0) and stop the executor with a one-line LeaseLost error ("run X was taken over by pid
    N; this process stops") and exit 4, without publishing anything."""
    import signal as _signal
    import time as _time

    path = write_workflow("blocks.py", blocks_once(2))
    old = smithers.spawn("run", path, "--run-id", "fence", "--quiet")
    try:
        deadline = _time.monotonic() + 20
        while not (tmp_path / "blocked-once").exists() and old.poll() is None and _time.monotonic() < deadline:
            _time.sleep(0.02)
        assert old.poll() is None
        done = smithers("resume", "fence", "--force", "--quiet")
        assert done.returncode == 0, done.stderr
        frames_after_takeover = smithers.json("frames", "fence")
        _, err = old.communicate(timeout=20)
    finally:
        if old.poll() is None:
            old.send_signal(_signal.SIGKILL)
            old.communicate()
    assert smithers.json("frames", "fence") == frames_after_takeover
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "taken over" in err, err
