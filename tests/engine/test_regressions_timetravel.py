"""Regressions from testing approvals, time travel and worktree runs: each test exposed a bug (now
fixed); its docstring says where it was and what the fix was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import MARK, Smithers, ran, sh, task_outputs


GATED = MARK + """
from engine import Approval, Sequence, Task, workflow


@workflow
def gated(ctx):
    return Sequence(Task("before", run=mark), Approval("ok", message="ship it?", on_deny="fail"),
                    Task("after", run=mark))
"""

GATED_TASK = MARK + """
from engine import Sequence, Task, workflow


@workflow
def gated_task(ctx):
    return Sequence(Task("before", run=mark),
                    Task("deploy", run=mark, needs_approval=True, approval_message="deploy?", on_deny="fail"),
                    Task("after", run=mark))
"""

LOOP_GATE = MARK + """
from engine import Approval, Loop, Task, workflow


@workflow
def loop_gate(ctx):
    return Loop("rounds", Task("work", run=mark), Approval("review", message="round ok?"), max_iterations=2)
"""

TT = MARK + """
import time

from pydantic import BaseModel

from engine import Loop, Parallel, Sequence, Task, workflow


class Input(BaseModel):
    x: int = 1
    rounds: int = 3


def prep(ctx):
    return mark(ctx, "prep")


def scale(ctx):
    return mark(ctx, ctx.input.x * 10)


def step(ctx):
    prev = ctx.get("step", ctx.iteration - 1) if ctx.iteration else 0
    return mark(ctx, prev + len(ctx.get("prep")))


def par(ctx):
    time.sleep(0.04 * int(ctx.node_id[1:]))
    return mark(ctx, f"{ctx.node_id}:{ctx.get('step')}")


def final(ctx):
    return mark(ctx, [ctx.get("scale"), *[ctx.get(f"p{i}") for i in range(3)]])


@workflow(input=Input)
def tt(ctx):
    return Sequence(
        Task("prep", run=prep),
        Task("scale", run=scale),
        Loop("loop", Task("step", run=step), until=len(ctx.iterations("step")) >= ctx.input.rounds,
             max_iterations=10),
        Parallel(*[Task(f"p{i}", run=par) for i in range(3)]),
        Task("final", run=final),
    )
"""

CLOSURE = """
from pydantic import BaseModel

from engine import Sequence, Task, workflow


class Input(BaseModel):
    n: int = 1


@workflow(input=Input)
def closure(ctx):
    n = ctx.input.n  # read by the workflow body, used by the step through its closure
    return Sequence(Task("double", run=lambda c: n * 2), Task("end", value="end"))
"""

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


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(source)
    return path








@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    sh(r, "init", "-q", "-b", "main")
    (r / "README").write_text("hello\n")
    sh(r, "add", "-A")
    sh(r, "commit", "-q", "-m", "init")
    (r / "users_last_change.txt").write_text("the user's own work\n")
    sh(r, "add", "-A")
    sh(r, "commit", "-q", "-m", "the user's last commit")
    return r


# --- approvals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("source, gate", [(GATED, "ok"), (GATED_TASK, "deploy")], ids=["approval", "task"])
def test_a_denied_gate_asked_again_on_resume_can_be_approved(tmp_path, smithers, source, gate):
    """engine/store/sqlite.py:202 (commit_ops) writes a gate request with `INSERT OR IGNORE INTO
    approvals`. When a run failed because a gate was denied (on_deny="fail") and is resumed, the
    gate is asked again (node `waiting_approval`, run `waiting`, exit 3), but the approvals row keeps
    the old denial, so: `ps --status waiting` lists no gate, and `smithers approve RUN` answers
    "already denied by bob" — a gate shown in the tree that the approve command cannot find, and a
    run that can never go on. Fix: when render.request_approval (engine/render.py:233) asks again
    for a key whose row is decided and applied, reset the row (UPDATE approvals SET decision=NULL,
    decided_by=NULL, note=NULL, decided_at=NULL, applied=0, requested_at=?, frame=? ...), e.g. an
    upsert `INSERT ... ON CONFLICT DO UPDATE ... WHERE applied=1`; keep the old decision in the event log."""
    wf = write(tmp_path, "gated.py", source)
    assert smithers("run", wf, "--run-id", "r", "-q").returncode == 3
    assert smithers("deny", "r", "--by", "bob", "--resume", "-q").returncode == 1
    done = smithers("resume", "r", "-q")
    assert done.returncode == 3, done.stdout + done.stderr  # asked again
    rep = smithers.json("show", "r")
    assert {n["id"]: n["state"] for n in rep["nodes"]}[gate] == "waiting_approval"
    assert smithers.json("ps", "--status", "waiting")[0]["waiting"] != [], "the waiting gate is not listed"
    done = smithers("approve", "r", "--by", "alice")
    assert done.returncode == 0, done.stderr
    done = smithers("resume", "r", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "finished"


def test_a_resumed_run_is_not_reported_as_finished(tmp_path, smithers):
    """engine/runtime.py Engine.resume: the `changes` written when a run is taken over reset status
    and error but not `finished_at`. A failed run that is resumed (and then runs, or waits at a gate)
    keeps the `finished_at` of its failure: `show --json` and `ps` report it finished at that time
    and `ps` computes "took" from it. Fix: add "finished_at": None to `changes` in Engine.resume."""
    wf = write(tmp_path, "gated.py", GATED)
    assert smithers("run", wf, "--run-id", "r", "-q").returncode == 3
    assert smithers("deny", "r", "--resume", "-q").returncode == 1
    assert smithers.json("show", "r")["finished_at"] is not None
    smithers("resume", "r", "-q")
    rep = smithers.json("show", "r")
    assert rep["status"] in ("waiting", "running")
    assert rep["finished_at"] is None


def test_iteration_without_node_is_not_ignored(tmp_path, smithers):
    """engine/approval.py:34-47 (find_gate): --iteration is applied only when NODE is given. With
    the loop's second gate waiting, `smithers approve RUN --iteration 0` (meaning the first round)
    silently approves iteration 1. Fix: filter `gates` by iteration whenever it is given, and say
    "no gate waits at iteration 0" when none does."""
    wf = write(tmp_path, "loop.py", LOOP_GATE)
    assert smithers("run", wf, "--run-id", "lp", "-q").returncode == 3
    assert smithers("approve", "lp", "--resume", "-q").returncode == 3  # round 0 approved; round 1 waits
    done = smithers("approve", "lp", "--iteration", "0", "--by", "x")
    assert done.returncode != 0, "approved another iteration than the one asked for"
    rows = {a["iteration"]: a["decision"] for a in smithers.json("show", "lp")["approvals"]}
    assert rows[1] is None


def test_waiting_line_lists_only_the_open_gates(tmp_path, smithers):
    """smithers_tui/cli.py final_line (`gates = ... for a in s.get("approvals", [])`): the line
    printed when a run waits names every gate ever requested, decided ones included ("waits for
    approval (review: round ok?, review: round ok?)"), so a user cannot tell what to approve.
    Fix: list only approvals whose decision is None (with their iteration when it is not 0)."""
    wf = write(tmp_path, "loop.py", LOOP_GATE)
    assert smithers("run", wf, "--run-id", "lp", "-q").returncode == 3
    done = smithers("approve", "lp", "--resume", "-q")
    assert done.returncode == 3
    line = done.stdout.strip().splitlines()[-1]
    assert "waits for approval" in line
    assert line.count("round ok?") == 1, line


def test_task_on_deny_is_checked_like_an_approvals(tmp_path):
    """engine/dsl.py Task.__init__ (on_deny: Literal["fail", "skip"]) does not check on_deny, while
    Approval does. A typo such as on_deny="skipp" is accepted and a denial then fails the whole run
    (apply_decision treats anything unknown as "fail"). Fix: raise TypeError as Approval does, for
    anything but "fail", "skip" or "continue" (apply_decision already handles "continue" like skip)."""
    from engine import Task

    with pytest.raises(TypeError, match="on_deny"):
        Task("t", run=lambda c: 1, needs_approval=True, on_deny="skipp")


# --- time travel --------------------------------------------------------------------------------
def test_fork_with_input_that_makes_a_running_loop_stop_earlier(tmp_path, smithers):
    """engine/timetravel.py invalidate/_reopen_loops (line 172): a loop that FINISHED and whose
    `until` no longer holds with the new input goes on, but the mirror case is not handled: at the
    fork's frame the loop had moved on to iteration 2 (step#2 in flight) because `until` was false
    with the old input; with the new input `until` holds after iteration 1, yet the fork still runs
    step#2 and everything after reads it — a result no run with that input produces. Fix: in
    invalidate, for a RUNNING loop whose current iteration has nothing carried, evaluate `until` with
    the new input over the carried iterations (the render `now` already computes it: base says
    ("until", False), now says ("until", True)) and mark the loop done at the previous iteration."""
    wf = write(tmp_path, "tt.py", TT)
    assert smithers("run", wf, "--run-id", "o", "--input", '{"rounds": 4}', "-q").returncode == 0
    frames = smithers.json("frames", "o")
    n = next(f["frame"] for f in frames if "step#1 done" in f["changes"])
    done = smithers("fork", "o", "--frame", str(n), "--input", '{"rounds": 2}', "--run-id", "fe", "--run", "--json")
    assert done.returncode == 0, done.stderr
    out = task_outputs(json.loads(done.stdout))
    assert [k for k in out if k[0] == "step"] == [("step", 0), ("step", 1)]
    assert ("step", 2) not in ran(tmp_path, "fe")
    assert out[("p0", 0)] == "p0:8"


def test_fork_where_a_loop_goes_on_reruns_the_readers_of_its_latest_output(tmp_path, smithers):
    """engine/timetravel.py invalidate: when a changed input lets a finished loop go on
    (_reopen_loops), the steps after the loop that read its latest output (ctx.get("step"), recorded
    in deps as "step#2") are carried, because step#2 itself stays valid. After the loop runs steps 3
    and 4 those carried outputs are stale ("p0:12" though the last step is now 20), and `final` mixes
    them with fresh ones. Fix: record in deps whether a read was "latest" (ctx.get(id) without an
    iteration), and invalidate those readers when a loop owning `id` is reopened or rewound (or,
    simpler, invalidate every carried reader of any node of a reopened loop's body)."""
    wf = write(tmp_path, "tt.py", TT)
    assert smithers("run", wf, "--run-id", "o", "-q").returncode == 0
    last = smithers.json("show", "o")["last_frame"]
    done = smithers("fork", "o", "--frame", str(last), "--input", '{"rounds": 5}', "--run-id", "fr", "--run",
                    "--json")
    assert done.returncode == 0, done.stderr
    out = task_outputs(json.loads(done.stdout))
    assert out[("step", 4)] == 20
    assert [out[(f"p{i}", 0)] for i in range(3)] == ["p0:20", "p1:20", "p2:20"]
    assert out[("final", 0)] == [10, "p0:20", "p1:20", "p2:20"]


def test_fork_with_changed_input_reruns_a_step_whose_callable_closes_over_the_input(tmp_path, smithers):
    """engine/render.py fingerprint (the `for fn in (task.run, task.prompt)` loop): a callable is
    fingerprinted by module + __qualname__ only, so `Task("double", run=lambda c: n * 2)` with
    `n = ctx.input.n` read by the workflow body has the same fingerprint whatever n is, and the step
    never read ctx.input itself (its ctx is not the one the body read). A fork with n=5 carries
    double=2. Fix: include the closure's cell values and __defaults__ (repr/JSON, falling back to
    "changed") in the fingerprint, or treat every closure over the body's ctx as input-dependent."""
    wf = write(tmp_path, "closure.py", CLOSURE)
    assert smithers("run", wf, "--run-id", "c", "-q").returncode == 0
    last = smithers.json("show", "c")["last_frame"]
    done = smithers("fork", "c", "--frame", str(last), "--input", '{"n": 5}', "--run-id", "c5", "--run", "--json")
    assert done.returncode == 0, done.stderr
    assert task_outputs(json.loads(done.stdout))[("double", 0)] == 10


# --- worktrees ----------------------------------------------------------------------------------
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


@pytest.mark.parametrize("end", ["rewind", "cancel"])
def test_approving_a_rewound_or_cancelled_run_is_refused(tmp_path, smithers, end):
    """engine/approval.py find_gate (line 33) takes every undecided approvals row, whatever the run's
    status. After `smithers rewind` (or `cancel`) of a waiting run its gate row stays undecided, so
    `smithers approve ORIG` "succeeds" and says "`smithers resume ORIG` continues the run" — which
    then refuses (rewound / cancelled): the decision went to a read-only run while the successor's
    gate still waits. Fix: in find_gate (or Engine.decide) refuse runs that are not waiting/running
    with a one-line BadInput; for a rewound run name its successor ("approve it in RUN2")."""
    wf = write(tmp_path, "gated.py", GATED)
    assert smithers("run", wf, "--run-id", "o", "-q").returncode == 3
    if end == "rewind":
        assert smithers("rewind", "o", "--frame", "1", "--run-id", "o2", "-q").returncode == 0
    else:
        assert smithers("cancel", "o").returncode == 0
    done = smithers("approve", "o", "--by", "alice")
    assert done.returncode == 4, done.stdout
    if end == "rewind":
        assert "o2" in done.stderr
    assert all(a["decision"] is None for a in smithers.json("show", "o")["approvals"])


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


def test_the_loser_is_told_who_decided_even_when_the_run_has_moved_on(tmp_path, smithers):
    """engine/approval.py find_gate (`if decided and run["status"] in ("waiting", "running")`): with
    NODE left out, a decision that arrives after the winner's was applied and the run ended (an
    engine owning the run applies it at once; seen in the approve/deny race against a live owner)
    gets "run R (failed) has no gate waiting for a decision" (exit 4) instead of "gate 'ok' of run R
    was already denied by bob". Fix: raise ApprovalConflict(_already(...)) for the latest decided
    gate whatever the run's status (BadInput only when the run never had a gate)."""
    wf = write(tmp_path, "gated.py", GATED)
    assert smithers("run", wf, "--run-id", "r", "-q").returncode == 3
    assert smithers("deny", "r", "--by", "bob", "--resume", "-q").returncode == 1  # applied: the run failed
    done = smithers("approve", "r", "--by", "alice")
    assert done.returncode == 1
    assert "already denied by bob" in done.stderr
