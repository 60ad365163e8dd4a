"""Benchmarks of the engine (`make bench`, i.e. `python -m bench`): per-step overhead, fan-out,
resume of a long run, disk use per step. Figures are printed next to their targets; this is not a
test and asserts nothing. The workflows measured live here so that a resumed run can find them
again (`module:bench:NAME`)."""
from __future__ import annotations

import asyncio

from engine import Approval, Loop, Parallel, Sequence, Task, workflow

PARAMS: dict[str, int] = {"n": 1000, "fan": 1000, "fan_limit": 50, "size": 2048}


async def noop(ctx):
    return None


def noop_sync(ctx):
    return None


async def wait_forever(ctx):
    await asyncio.Event().wait()


def blob(ctx):
    head = f"{ctx.iteration:08d}"
    return head + "x" * (PARAMS["size"] - len(head))


@workflow(name="bench-loop")
def loop_async(ctx):
    return Loop("l", Task("step", run=noop), max_iterations=PARAMS["n"])


@workflow(name="bench-loop-sync")
def loop_sync(ctx):
    return Loop("l", Task("step", run=noop_sync), max_iterations=PARAMS["n"])


@workflow(name="bench-fan-out")
def fan_out(ctx):
    return Parallel(*[Task(f"t{i}", run=noop) for i in range(PARAMS["fan"])], max_concurrency=PARAMS["fan_limit"])


@workflow(name="bench-resume")
def long_then_next(ctx):
    return Sequence(Loop("l", Task("step", run=noop), max_iterations=PARAMS["n"]), Task("next", run=wait_forever))


@workflow(name="bench-disk")
def disk(ctx):
    return Loop("l", Task("step", run=blob), max_iterations=PARAMS["n"])


# --- workers (bench/workers.py) -----------------------------------------------------------------
@workflow(name="bench-ten")
def ten(ctx):
    """10 no-op steps, one after another: a queued run for throughput."""
    return Sequence(*[Task(f"s{i}", run=noop) for i in range(10)])


@workflow(name="bench-gate")
def gate(ctx):
    """A gate, then a step: time from a decision to that step's start."""
    return Sequence(Approval("ok", message="go on?"), Task("next", run=noop))


@workflow(name="bench-hold")
def hold(ctx):
    """A step that never ends: its worker is killed, another takes the run over."""
    return Sequence(Task("first", run=noop), Task("hold", run=wait_forever))
