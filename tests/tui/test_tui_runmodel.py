"""RunModel: the run the app holds, built from frames. For real runs, the nodes it shows at every
frame — reached forward, backward, by jumps — are exactly the store's rebuild of that frame."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from engine.frame import FrameDelta
from smithers_tui.runmodel import Rec, RunModel
from tests.tui.helpers import connect, seed


async def model_of(db: Path, run_id: str) -> tuple[RunModel, Any]:
    store = await connect(db)
    model = RunModel(base=dict((await store.state_at(run_id, 0)).nodes))
    for f in await store.frames(run_id):
        model.add(f.frame, f.at, f.delta)
    return model, store


async def test_every_frame_matches_the_stores_rebuild_whichever_way_it_is_reached(db: Path, project: Path) -> None:
    await seed(db, project, "r1", {"rounds": 6})  # a loop, parallel checks, a gate
    model, store = await model_of(db, "r1")
    try:
        last = model.last
        assert last >= 8
        truth = {}
        for f in range(last + 1):
            at = await store.state_at("r1", f)
            truth[f] = (at.nodes, at.status)
        for f in list(range(last, -1, -1)) + list(range(last + 1)):  # back one by one, then forth
            model.seek(f)
            assert model.view == truth[f][0], f"frame {f}"
            assert model.status_at(f) == truth[f][1]
        rnd = random.Random(7)
        for _ in range(60):  # jumps in both directions
            f = rnd.randrange(last + 1)
            model.seek(f)
            assert model.view == truth[f][0], f"jump to {f}"
        model.seek(None)
        assert model.following and model.view == model.live == truth[last][0]
    finally:
        await store.close()


async def test_marks_say_what_each_frame_did(db: Path, project: Path) -> None:
    await seed(db, project, "r1")
    model, store = await model_of(db, "r1")
    await store.close()
    kinds = [m.kinds for m in model.marks]
    assert any("start" in k for k in kinds) and any("finish" in k for k in kinds)
    gate = model.find(0, 1, lambda m: "gate" in m.kinds)
    assert gate is not None and "ship waits for approval" in model.marks[gate].what
    assert model.marks[gate].glyph == "◆"
    count1 = model.find(0, 1, lambda m: ("count", 1) in m.keys)
    assert count1 is not None
    start, end = model.timing(("count", 1), model.last)
    assert start is not None and end is not None and start <= end


def test_a_fork_starts_from_its_carried_nodes() -> None:
    carried = {("plan", 0): Rec("task", "done", 1)}
    model = RunModel(base=carried)
    model.add(0, 10.0, FrameDelta(fork={"kind": "fork", "from_run": "r1", "from_frame": 3, "carried": 1}))
    model.add(1, 11.0, FrameDelta(nodes={("build", 0): Rec("task", "running", 1)}))
    assert model.marks[0].cls == "fork" and "fork of r1 at frame 3" in model.marks[0].what
    model.seek(0)
    assert model.view == carried
    model.seek(1)
    assert model.view[("build", 0)].state == "running" and model.view[("plan", 0)].state == "done"
    assert model.status_at(1) == "running"


async def test_the_steps_counted_iterations_and_states_follow_the_view(db: Path, project: Path) -> None:
    await seed(db, project, "r1", {"rounds": 4})
    model, store = await model_of(db, "r1")
    await store.close()

    def counted() -> tuple[int, int]:
        steps = [r for r in model.view.values() if r.kind in ("task", "approval")]
        return sum(r.state in ("done", "skipped") for r in steps), len(steps)

    for f in [model.last, 0, 3, model.last - 1, 1, model.last]:
        model.seek(f)
        assert (model.done, model.steps) == counted(), f
        iters: dict[str, set[int]] = {}
        for nid, it in model.view:
            iters.setdefault(nid, set()).add(it)
        assert {k: v for k, v in model.iters.items() if v} == iters, f
        for state in ("running", "done", "waiting_approval", "failed", "pending"):
            assert model.in_states(state) == {k for k, r in model.view.items() if r.state == state}, (f, state)
