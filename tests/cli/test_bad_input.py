"""Bad input and faults: one line on stderr that says what to do, exit 4 (a failed run: 1), nothing
already saved lost, and reads never write."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import Smithers, clean_env, smithers_argv, wait_until

LOOP = """
from engine import Loop, Task, workflow


def step(ctx):
    return "x" * 300


@workflow
def many(ctx):
    return Loop("l", Task("s", run=step), until=False, max_iterations={n})
"""


def one_line(done: subprocess.CompletedProcess) -> str:
    err = done.stderr.strip()
    assert err and "\n" not in err and "Traceback" not in err, done.stderr
    return err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    p = tmp_path / "many.py"
    p.write_text(LOOP.format(n=30))
    return p


# --- 13: a full disk ------------------------------------------------------------------------------
# The database may grow to LIMIT pages only: SQLite answers SQLITE_FULL exactly as for a full disk.
FULL_DISK = """
import os, sys
import engine.store.sqlite as sq

real = sq._prepare
LIMIT = int(os.environ["PAGE_LIMIT"])


def prepare(conn, *args):
    version = real(conn, *args)
    conn.execute(f"PRAGMA max_page_count={LIMIT}").close()
    return version


sq._prepare = prepare
from smithers_tui.cli import main

sys.argv[0] = "smithers"
main()
"""


def test_a_full_disk_is_one_line_and_the_run_resumes_when_space_returns(tmp_path: Path) -> None:
    flow = tmp_path / "big.py"
    flow.write_text(LOOP.format(n=400))
    cli = Smithers(tmp_path, tmp_path / "s.db")
    assert cli("run", flow, "--run-id", "seed", "-q").returncode == 0  # the schema and a first run
    pages = sqlite3.connect(cli.db).execute("PRAGMA page_count").fetchone()[0]
    done = subprocess.run([sys.executable, "-c", FULL_DISK, "--db", str(cli.db), "run", str(flow), "--run-id", "f",
                           "-q"], cwd=tmp_path, env=clean_env(PAGE_LIMIT=str(pages + 30)), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 4, done.stderr
    line = one_line(done)
    assert "full" in line and "free some space" in line
    rep = cli.json("show", "f")
    assert rep["status"] == "interrupted" and 0 < rep["last_frame"] < 400
    assert cli.json("show", "seed")["status"] == "finished"  # nothing saved before was lost
    done = cli("resume", "f", "--json")  # space is back
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "finished"


# --- 14: a damaged database ----------------------------------------------------------------------
def test_a_damaged_database_is_one_line_and_gets_no_new_run(tmp_path: Path, flow: Path) -> None:
    cli = Smithers(tmp_path, tmp_path / "s.db")
    for i in range(3):
        assert cli("run", flow, "--run-id", f"r{i}", "-q").returncode == 0
    con = sqlite3.connect(cli.db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    size = cli.db.stat().st_size
    with open(cli.db, "r+b") as f:
        f.seek((size // 2) // 4096 * 4096)
        f.write(os.urandom(4096))
    before = digest(cli.db)
    for args in (["show", "r1"], ["ps"], ["frames", "r2"], ["logs", "r0"]):
        done = cli(*args)
        assert done.returncode in (0, 4), done.stderr
        if done.returncode == 4:
            assert "damaged" in one_line(done)
    done = cli("run", flow, "--run-id", "new", "-q")
    assert done.returncode == 4
    assert "damaged" in one_line(done) and "backup" in done.stderr
    assert digest(cli.db) == before  # nothing was written into it


# --- 15, 16, 17: input that is not what it should be -------------------------------------------------
def test_input_that_is_not_utf8_is_one_line(tmp_path: Path, flow: Path) -> None:
    cli = Smithers(tmp_path, tmp_path / "s.db")
    bad = tmp_path / "in.json"
    bad.write_bytes(b'{"x": "\xff\xfe"}')
    done = cli("run", flow, "--input-file", bad)
    assert done.returncode == 4 and "UTF-8" in one_line(done)
    argv = [a.encode() for a in cli.argv("run", str(flow), "--input")] + [b'{"x": "\xff"}']
    done = subprocess.run(argv, cwd=tmp_path, env=clean_env(), capture_output=True, timeout=60)
    err = done.stderr.decode(errors="replace").strip()
    assert done.returncode == 4 and "UTF-8" in err and "\n" not in err and "Traceback" not in err
    assert not cli.db.exists()


def test_a_db_that_is_a_folder_is_one_line(tmp_path: Path, flow: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for args in (["run", str(flow)], ["show", "x"], ["ps"], ["resume", "x"]):
        done = Smithers(tmp_path, folder)(*args)
        assert done.returncode == 4, (args, done.stderr)
        assert "directory" in one_line(done) and "Event loop" not in done.stderr


def test_an_absurd_run_id_is_one_line(tmp_path: Path, flow: Path) -> None:
    cli = Smithers(tmp_path, tmp_path / "s.db")
    assert cli("run", flow, "--run-id", "r", "-q").returncode == 0
    huge = "r" * 100_000
    for args in (["show", huge], ["resume", huge], ["approve", huge], ["logs", huge]):
        done = cli(*args)
        assert done.returncode == 4, done.stderr
        assert "no run" in one_line(done) and len(done.stderr) < 500


# --- 18, 19: reads never write --------------------------------------------------------------------
def test_reading_an_empty_file_writes_nothing_into_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    for args in (["show", "x"], ["ps"], ["frames", "x"], ["logs", "x"], ["timeline", "x"]):
        done = Smithers(tmp_path, empty)(*args)
        assert done.returncode == 4, (args, done.stderr)
        assert "not a smithers database" in one_line(done)
    assert empty.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_a_read_only_database_can_be_read_but_not_written(tmp_path: Path, flow: Path) -> None:
    """A database file nobody may write: commands that read work, a command that writes says why.
    (As root, file modes do not stop writes: the file is made immutable instead.)"""
    db = tmp_path / "ro.db"
    cli = Smithers(tmp_path, db)
    assert cli("run", flow, "--run-id", "r", "-q").returncode == 0
    os.chmod(db, 0o444)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(db)], check=True)
    try:
        before = digest(db)
        for args in (["show", "r"], ["ps"], ["frames", "r"], ["logs", "r"], ["timeline", "r"]):
            done = cli(*args)
            assert done.returncode == 0, (args, done.stderr)
        assert json.loads(cli("show", "r", "--json").stdout)["status"] == "finished"
        done = cli("run", flow, "--run-id", "w")
        assert done.returncode == 4 and "read-only" in one_line(done)
        assert digest(db) == before
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(db)], check=False)


# --- 20: clocks and signals -------------------------------------------------------------------------
def test_a_clock_moved_back_never_makes_a_negative_duration(tmp_path: Path, flow: Path) -> None:
    cli = Smithers(tmp_path, tmp_path / "s.db")
    assert cli("run", flow, "--run-id", "r", "-q").returncode == 0
    con = sqlite3.connect(cli.db)
    with con:  # as if the clock had been an hour ahead when the run started
        con.execute("UPDATE runs SET created_at=created_at+3600")
    con.close()
    out = cli("ps").stdout
    took = out.splitlines()[1].split()[-1]
    assert took == "0s", out
    assert cli.json("show", "r")["status"] == "finished"


def test_a_sigint_after_the_run_ended_keeps_its_result(tmp_path: Path) -> None:
    """The run finished; ^C while its report is still being printed must not say "interrupted"."""
    flow = tmp_path / "big.py"
    flow.write_text(LOOP.format(n=300))  # a --json report far larger than a pipe's buffer
    db = tmp_path / "s.db"
    proc = subprocess.Popen([*smithers_argv(), "--db", str(db), "run", str(flow), "--run-id", "r", "--json"],
                            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finished() -> bool:
        if not db.exists():
            return False
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                row = con.execute("SELECT status FROM runs WHERE id='r'").fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return False
        return bool(row and row[0] == "finished")

    wait_until(finished, "the run to finish")
    assert proc.poll() is None  # still writing its report into the full pipe
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"interrupted" not in err and json.loads(out)["status"] == "finished"
