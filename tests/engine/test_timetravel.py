"""Time travel: fork, rewind and replay, checked with a side-effect log (every compute step appends
"<run> <node>#<iteration>" to a file when it really runs).

- a fork from EVERY frame of a run with a Sequence, a Loop of 3 iterations and a Parallel of 3 re-runs
  nothing that was done at that frame and everything else exactly once, carries exactly the outputs
  that were valid at that frame (compared value by value with the parent's), and ends with the same
  outputs as the parent; a parallel step that was running at the frame runs again and its later
  output from the parent is not carried;
- a fork with changed input re-runs the steps that read the input (and their readers), keeps the
  others, and a loop whose `until` depends on the input goes on;
- `--reset NODE` re-runs the node and, transitively, its readers;
- rewind keeps the original with all its outputs, marks it rewound and links its successor;
- replay re-executes from frame 0 by default; `timeline --json` and `show --json` show the lineage.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from engine.errors import BadInput
from engine.loader import load_target
from tests.support import ran, report, task_outputs

TT = """
import time
from pathlib import Path

from pydantic import BaseModel

from engine import Loop, Parallel, Sequence, Task, workflow

SIDE = Path(__file__).with_name("side.log")


class Input(BaseModel):
    x: int = 1
    rounds: int = 3


def mark(ctx):
    with open(SIDE, "a") as f:
        f.write(f"{ctx.run_id} {ctx.node_id}#{ctx.iteration}\\n")


def prep(ctx):  # reads nothing
    mark(ctx)
    return "prep"


def scale(ctx):  # reads the input
    mark(ctx)
    return ctx.input.x * 10


def step(ctx):  # reads prep and its previous iteration
    mark(ctx)
    prev = ctx.get("step", ctx.iteration - 1) if ctx.iteration else 0
    return prev + len(ctx.get("prep"))


def par(ctx):  # reads the loop's last step; the three finish one after another
    mark(ctx)
    i = int(ctx.node_id[1:])
    time.sleep(0.08 * i)
    return f"{ctx.node_id}:{ctx.get('step')}"


def final(ctx):  # reads scale and the three parallel steps
    mark(ctx)
    return [ctx.get("scale"), *[ctx.get(f"p{i}") for i in range(3)]]


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

ALL_TASKS = {("prep", 0), ("scale", 0), ("step", 0), ("step", 1), ("step", 2), ("p0", 0), ("p1", 0), ("p2", 0),
             ("final", 0)}
EXPECTED = {("prep", 0): "prep", ("scale", 0): 10, ("step", 0): 4, ("step", 1): 8, ("step", 2): 12,
            ("p0", 0): "p0:12", ("p1", 0): "p1:12", ("p2", 0): "p2:12", ("final", 0): [10, "p0:12", "p1:12", "p2:12"]}






@pytest.fixture
def tt_file(tmp_path: Path) -> Path:
    path = tmp_path / "tt.py"
    path.write_text(TT)
    return path


async def start(eng, path: Path, run_id: str, input=None) -> str:
    wf, target = load_target(str(path))
    ex = await eng.start(wf, target, input, run_id=run_id, workdir=path.parent)
    assert await ex.execute() == "finished"
    return run_id


async def run_fork(eng, new_id: str) -> str:
    ex = await eng.resume(new_id)
    return await ex.execute()


# --- every frame ---------------------------------------------------------------------------------
async def test_fork_from_every_frame_reruns_exactly_what_was_not_done_and_carries_the_rest(tmp_path, tt_file, engine):
    eng, store = engine
    await start(eng, tt_file, "orig")
    parent = await report(store, "orig")
    assert task_outputs(parent) == EXPECTED
    assert ran(tmp_path, "orig") == Counter({k: 1 for k in ALL_TASKS})
    last = parent["last_frame"]
    assert last >= 8

    spanning = 0  # frames where one parallel step was done while another still ran
    for n in range(last + 1):
        nodes_at, outputs_at, _ = await store.state_at("orig", n)
        done_at = {k for k, r in nodes_at.items() if r.kind == "task" and r.state == "done"}
        running_at = {k for k, r in nodes_at.items() if r.kind == "task" and r.state == "running"}
        pars = {k for k in ALL_TASKS if k[0].startswith("p")}
        if done_at & pars and running_at & pars:
            spanning += 1

        fid = f"fork{n}"
        info = await eng.fork("orig", n, new_id=fid)
        assert (info.from_run, info.from_frame, info.kind, info.rerun) == ("orig", n, "fork", [])
        assert info.carried == len(done_at)

        # the fork's frame 0 holds exactly the outputs done at frame n, equal to the parent's there
        f_nodes0, f_outputs0, _ = await store.state_at(fid, 0)
        carried = {k: v for k, v in f_outputs0.items() if f_nodes0[k].kind == "task"}
        assert set(carried) == done_at, n
        assert carried == {k: outputs_at[k] for k in done_at}, n
        assert all(f_nodes0[k].state == "done" for k in done_at)
        assert not running_at & set(f_nodes0), n  # steps in flight at n are not carried

        assert await run_fork(eng, fid) == "finished"
        # nothing done at n ran again; everything else ran exactly once
        assert ran(tmp_path, fid) == Counter({k: 1 for k in ALL_TASKS - done_at}), n
        rep = await report(store, fid)
        assert task_outputs(rep) == EXPECTED, n
        assert (rep["parent_run_id"], rep["parent_frame"], rep["kind"]) == ("orig", n, "fork")
        # outputs produced by the fork itself are recorded after its frame 0; carried ones at frame 0
        for key, out in (await store.outputs_at(fid, 10**9)).items():
            if key in ALL_TASKS:
                assert (out.frame == 0) == (key in done_at), (n, key, out.frame)

    assert spanning >= 1, "the parallel steps should finish in different frames"
    # the parent was never touched
    assert await report(store, "orig") == parent
    assert ran(tmp_path, "orig") == Counter({k: 1 for k in ALL_TASKS})


async def test_a_parallel_step_running_at_the_frame_runs_again_in_a_rewind_and_its_later_output_is_dropped(
        tmp_path, tt_file, engine):
    eng, store = engine
    await start(eng, tt_file, "orig")
    last = (await store.get_run("orig")).frame
    target = None
    for n in range(last + 1):
        nodes_at, _, _ = await store.state_at("orig", n)
        states = {k[0]: r.state for k, r in nodes_at.items() if k[0] in ("p0", "p1", "p2")}
        if states.get("p0") == "done" and "running" in (states.get("p1"), states.get("p2")):
            target, spanning = n, {k for k, s in states.items() if s == "running"}
            break
    assert target is not None
    parent_outputs = {k[0]: out.frame for k, out in (await store.outputs_at("orig", 10**9)).items()}
    assert all(parent_outputs[p] > target for p in spanning)  # the parent has them, from later frames

    info = await eng.rewind("orig", target, new_id="rw")
    assert info.kind == "rewind"
    _, outs0, _ = await store.state_at("rw", 0)
    assert not spanning & {k[0] for k in outs0}
    assert ("p0", 0) in outs0
    assert await run_fork(eng, "rw") == "finished"
    assert set(ran(tmp_path, "rw")) == {(p, 0) for p in spanning} | {("final", 0)}
    assert task_outputs(await report(store, "rw")) == EXPECTED


# --- input changes, resets -----------------------------------------------------------------------
def test_fork_with_changed_input_reruns_only_the_readers_of_the_input(tmp_path, tt_file, smithers):
    assert smithers("run", tt_file, "--run-id", "o", "-q").returncode == 0
    last = smithers.json("show", "o")["last_frame"]
    done = smithers("fork", "o", "--frame", str(last), "--input", '{"x": 2}', "--run-id", "fx", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["input_changed"] is True and sorted(info["rerun"]) == ["final#0", "scale#0"]
    done = smithers("resume", "fx", "-q")
    assert done.returncode == 0, done.stderr
    assert ran(tmp_path, "fx") == Counter({("scale", 0): 1, ("final", 0): 1})
    rep = smithers.json("show", "fx")
    assert rep["input"] == {"x": 2, "rounds": 3}
    out = task_outputs(rep)
    assert out[("scale", 0)] == 20 and out[("final", 0)] == [20, "p0:12", "p1:12", "p2:12"]
    assert {k: v for k, v in out.items() if k not in {("scale", 0), ("final", 0)}} == {
        k: v for k, v in EXPECTED.items() if k not in {("scale", 0), ("final", 0)}}
    assert smithers.json("show", "o")["input"] == {"x": 1, "rounds": 3}  # the original keeps its input


def test_fork_with_changed_input_lets_a_finished_loop_go_on(tmp_path, tt_file, smithers):
    assert smithers("run", tt_file, "--run-id", "o", "-q").returncode == 0
    last = smithers.json("show", "o")["last_frame"]
    done = smithers("fork", "o", "--frame", str(last), "--input", '{"rounds": 5}', "--run-id", "fr", "--run",
                    "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["status"] == "finished"
    runs = ran(tmp_path, "fr")
    assert runs[("step", 3)] == 1 and runs[("step", 4)] == 1
    assert not any(runs[("step", i)] for i in range(3)) and not runs[("prep", 0)]
    out = task_outputs(rep)
    assert [out[("step", i)] for i in range(5)] == [4, 8, 12, 16, 20]
    loop = next(n for n in rep["nodes"] if n["id"] == "loop")
    assert loop["state"] == "done" and loop["loop_iteration"] == 4


@pytest.mark.parametrize("reset, expected", [
    (["p1"], {("p1", 0), ("final", 0)}),
    (["scale"], {("scale", 0), ("final", 0)}),
    (["prep"], ALL_TASKS - {("scale", 0)}),  # every step reads prep, the rest read the steps
    (["step"], ALL_TASKS - {("scale", 0), ("prep", 0)}),
])
def test_reset_reruns_the_node_and_its_readers(tmp_path, tt_file, smithers, reset, expected):
    assert smithers("run", tt_file, "--run-id", "o", "-q").returncode == 0
    last = smithers.json("show", "o")["last_frame"]
    done = smithers("fork", "o", "--frame", str(last), "--reset", *reset, "--run-id", "rs", "--run", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert rep["status"] == "finished"
    assert ran(tmp_path, "rs") == Counter({k: 1 for k in expected})
    assert task_outputs(rep) == EXPECTED


def test_reset_of_an_unknown_node_is_bad_input_and_writes_nothing(tmp_path, tt_file, smithers):
    assert smithers("run", tt_file, "--run-id", "o", "-q").returncode == 0
    done = smithers("fork", "o", "--frame", "1", "--reset", "nosuch", "--run-id", "bad")
    assert done.returncode == 4
    assert "nosuch" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert [r["run_id"] for r in smithers.json("ps")] == ["o"]
    done = smithers("fork", "o", "--frame", "999")
    assert done.returncode == 4 and "frames 0.." in done.stderr


# --- rewind, replay, lineage ---------------------------------------------------------------------
def test_rewind_keeps_the_original_marks_it_rewound_and_links_its_successor(tmp_path, tt_file, smithers):
    assert smithers("run", tt_file, "--run-id", "o", "-q").returncode == 0
    before = smithers.json("show", "o")
    frames_before = smithers.json("frames", "o")
    n = next(f["frame"] for f in frames_before if "step#0 done" in f["changes"])

    past = {f: smithers.json("show", "o", "--frame", str(f)) for f in (0, n, before["last_frame"])}

    done = smithers("rewind", "o", "--frame", str(n), "--run-id", "rw", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (info["run_id"], info["kind"], info["from_frame"]) == ("rw", "rewind", n)

    after = smithers.json("show", "o")
    assert after["status"] == "rewound" and after["successor_run_id"] == "rw"
    assert after["nodes"] == before["nodes"]  # every output and state kept
    assert smithers.json("frames", "o") == frames_before  # nothing deleted
    for f, rep in past.items():  # and past frames still read the same
        assert smithers.json("show", "o", "--frame", str(f))["nodes"] == rep["nodes"]
    assert [r["run_id"] for r in smithers.json("ps", "--status", "rewound")] == ["o"]

    rep = smithers.json("show", "rw")
    assert (rep["parent_run_id"], rep["parent_frame"], rep["kind"], rep["status"]) == ("o", n, "rewind", "queued")

    done = smithers("resume", "o")
    assert done.returncode == 4 and "rw" in done.stderr and "rewound" in done.stderr
    done = smithers("rewind", "o", "--frame", "1")
    assert done.returncode == 4 and "already rewound" in done.stderr

    done = smithers("resume", "rw", "--json")
    assert done.returncode == 0, done.stderr
    assert task_outputs(json.loads(done.stdout)) == EXPECTED
    assert ran(tmp_path, "rw") == Counter({k: 1 for k in ALL_TASKS - {("prep", 0), ("scale", 0), ("step", 0)}})


def test_replay_reexecutes_from_frame_0_by_default(tmp_path, tt_file, smithers):
    assert smithers("run", tt_file, "--run-id", "o", "-q").returncode == 0
    done = smithers("replay", "o", "--run-id", "rp", "--run", "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    assert (rep["kind"], rep["parent_run_id"], rep["parent_frame"], rep["status"]) == ("replay", "o", 0, "finished")
    assert ran(tmp_path, "rp") == Counter({k: 1 for k in ALL_TASKS})
    assert task_outputs(rep) == EXPECTED
    assert smithers.json("show", "o")["status"] == "finished"  # a replay leaves the original alone

    frames = smithers.json("frames", "o")
    n = next(f["frame"] for f in frames if "step#2 done" in f["changes"])
    done = smithers("replay", "o", "--frame", str(n), "--run-id", "rp2", "--run", "-q")
    assert done.returncode == 0, done.stderr
    assert set(ran(tmp_path, "rp2")) == {("p0", 0), ("p1", 0), ("p2", 0), ("final", 0)}


def test_timeline_shows_the_lineage_tree_and_show_the_parent(tmp_path, tt_file, smithers):
    assert smithers("run", tt_file, "--run-id", "root", "-q").returncode == 0
    assert smithers("fork", "root", "--frame", "2", "--run-id", "a", "-q").returncode == 0
    assert smithers("fork", "root", "--frame", "4", "--run-id", "b", "--run", "-q").returncode == 0
    assert smithers("fork", "b", "--frame", "1", "--run-id", "b1", "-q").returncode == 0
    assert smithers("replay", "a", "--run-id", "a1", "-q").returncode == 0

    for rid in ("root", "a", "b1"):  # from anywhere in the tree, the whole tree from its root
        tl = smithers.json("timeline", rid)
        assert tl["run_id"] == rid
        tree = tl["lineage"]
        assert tree["run_id"] == "root" and tree["parent_frame"] is None and tree["kind"] == "run"
        kids = {c["run_id"]: c for c in tree["children"]}
        assert set(kids) == {"a", "b"}
        assert (kids["a"]["parent_frame"], kids["b"]["parent_frame"]) == (2, 4)
        assert [(c["run_id"], c["kind"], c["parent_frame"]) for c in kids["a"]["children"]] == [("a1", "replay", 0)]
        assert [(c["run_id"], c["kind"], c["parent_frame"]) for c in kids["b"]["children"]] == [("b1", "fork", 1)]
        assert kids["b"]["status"] == "finished" and kids["a"]["status"] == "queued"  # made, not run yet
    tl = smithers.json("timeline", "root")
    assert [f["frame"] for f in tl["frames"]] == list(range(smithers.json("show", "root")["last_frame"] + 1))

    for rid, parent, frame in (("a", "root", 2), ("b", "root", 4), ("b1", "b", 1), ("a1", "a", 0)):
        rep = smithers.json("show", rid)
        assert (rep["parent_run_id"], rep["parent_frame"]) == (parent, frame)
    assert smithers.json("show", "root")["parent_run_id"] is None


async def test_rewind_of_a_run_owned_elsewhere_is_refused_and_a_fork_is_allowed(tmp_path, tt_file, engine):
    """In this process: rewind of a run executing here cancels it first; a run owned by another live
    process is refused with a clear error."""
    eng, store = engine
    await start(eng, tt_file, "o")
    # pretend a live process (this one, under another owner id) holds the run
    import os

    from engine.lease import _proc_start

    from engine.lease import Owner

    run = await store.get_run("o")
    someone = Owner("someone", __import__("socket").gethostname(), os.getpid(), _proc_start(os.getpid()))
    assert await store.take_over("o", someone, run.owner.id if run.owner else None, {}, time.time())
    with pytest.raises(BadInput, match="cancel it first"):
        await eng.rewind("o", 2, new_id="nope")
    assert (await store.get_run("o")).status == "finished"
    assert not await store.run_exists("nope")
    info = await eng.fork("o", 2, new_id="yes")
    assert info.kind == "fork"


COUNTED = """
from pathlib import Path

from engine import Sequence, Task, workflow

with open(Path(__file__).with_name("loads.log"), "a") as f:
    f.write("loaded\\n")


@workflow
def counted(ctx):
    return Sequence(Task("a", value=ctx.input.get("x", 1) if isinstance(ctx.input, dict) else 1),
                    Task("b", value=2))
"""


async def test_a_fork_loads_the_workflow_module_once(tmp_path, engine):
    eng, store = engine
    path = tmp_path / "counted.py"
    path.write_text(COUNTED)
    wf, target = load_target(str(path))
    ex = await eng.start(wf, target, {"x": 1}, run_id="o", workdir=tmp_path)
    assert await ex.execute() == "finished"
    log = tmp_path / "loads.log"
    log.write_text("")
    info = await eng.fork("o", 0, input={"x": 5}, new_id="f1")
    assert info.run_id == "f1"
    await eng.fork("o", 1, new_id="f2")
    child = await eng.resume("f1")
    assert await child.execute() == "finished"
    assert log.read_text().count("loaded") == 1  # one engine, one unchanged file: executed once


def test_plan_fork_is_pure_and_says_what_it_carries_and_what_runs_again(tmp_path):
    """plan_fork decides a fork from a frame's state alone: no database, nothing written."""
    from engine.records import FrameState, OutputRecord, RunRecord
    from engine.state import DONE, RUNNING, NodeRecord, RunKind, RunStatus
    from engine.timetravel import plan_fork

    path = tmp_path / "tt.py"
    path.write_text(TT)
    wf, target = load_target(str(path))
    parent = RunRecord(id="p", workflow=wf.name, target=target, source_path=str(path), source_hash=None,
                       input={"x": 1, "rounds": 3}, status=RunStatus.FINISHED, error=None, workdir=str(tmp_path),
                       kind=RunKind.RUN, parent_run_id=None, parent_frame=None, successor_run_id=None, owner=None,
                       cancel_requested=False, frame=9, created_at=1.0, updated_at=2.0, finished_at=2.0)
    done = NodeRecord("task", DONE, 1, None, None)
    at = FrameState(3, {("prep", 0): done, ("scale", 0): done, ("step", 0): NodeRecord("task", RUNNING, 1)},
                    {("prep", 0): "prep", ("scale", 0): 10}, RunStatus.RUNNING)
    outputs = {("prep", 0): OutputRecord("prep", None, {"fp": "?", "input": False, "reads": []}, 1),
               ("scale", 0): OutputRecord(10, None, {"fp": "?", "input": True, "reads": []}, 2)}
    same = plan_fork(wf, target, parent, at, outputs, "f")
    assert (same.run.id, same.run.parent_run_id, same.frame, same.run.status) == ("f", "p", 3, RunStatus.QUEUED)
    assert set(same.outputs) == {("prep", 0), ("scale", 0)} and ("step", 0) not in same.nodes  # in flight: again
    changed = plan_fork(wf, target, parent, at, outputs, "g", input={"x": 2})
    assert changed.input_changed and ("scale", 0) in changed.rerun and ("prep", 0) not in changed.rerun
    assert set(changed.outputs) == {("prep", 0)} and changed.run.input == {"x": 2, "rounds": 3}
    assert changed.result().carried == 1
