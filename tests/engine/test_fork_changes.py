"""Forks with changed input: loops that stop earlier or go on, readers of a loop's latest output, callables
that close over the input. (Each test once exposed a bug; its docstring says which.)"""
from __future__ import annotations

import json


from tests.support import MARK, ran, task_outputs, write_source as write


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
