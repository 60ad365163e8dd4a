"""App speed figures (printed, not tests): cold start, ten agents streaming, a 5,000-node tree,
the engine inside the app against headless, keys while a run goes on, scrubbing 10,000 frames.

  cold start      a fresh interpreter: import, open the database, first painted runs screen
                  (target < 0.5 s; litellm must not be imported by then); the project's bytecode
                  compiled first, as `make run` has it
  streaming       ten agent panes, 2,000 agent events/s in total published on the engine bus,
                  for DURATION seconds (15 s here, not a minute): key press (tab, simulated) ->
                  handled -> next repaint, p95 (target < 50 ms); resident memory start and end
  big tree        a run of 5,000 steps: time to open its run screen, time per cursor step and
                  per page step
  engine in app   the same 2,000-step loop of no-op steps, headless (the engine alone, as
                  `smithers run` runs it) and started from the app with its run screen open,
                  median of 5 each, interleaved (target: inside <= 1.5x headless); then one more
                  run in the app with j / k pressed on its step tree every 50 ms: key -> handled
                  -> painted, p95 (target < 50 ms)
  scrubbing       a run of 10,000 frames open on its run screen, keys held down (30 a second):
                  `[` / `]` one frame, `{` ten: key -> the timeline and the head show that frame
                  -> painted, p95 (target < 30 ms); then how long the tree and the inspector take
                  to follow once the keys rest
"""
from __future__ import annotations

import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smithers_tui.prefs import Prefs  # noqa: E402  (bench/ runs as a script too)
DURATION = 15.0
RATE = 2000
RUNS = 5  # of the 2,000-step loop, headless and in the app

COLD = """
import time, sys
t0 = time.perf_counter()
import asyncio
from smithers_tui.app import SmithersApp
from smithers_tui.screens.runs import RunsScreen
async def main():
    app = SmithersApp(sys.argv[1], project=sys.argv[2])
    async with app.run_test(size=(120, 36)) as pilot:
        while not isinstance(app.screen, RunsScreen):
            await asyncio.sleep(0.001)
        painted = asyncio.Event()
        app.screen.call_after_refresh(painted.set)
        await painted.wait()
        first = time.perf_counter() - t0
        while not app.screen.loaded:
            await asyncio.sleep(0.001)
        await pilot.pause()
        print(f"{first:.3f} {time.perf_counter() - t0:.3f} {'litellm' in sys.modules}", flush=True)
asyncio.run(main())
"""


def line(label: str, value: str, target: str, ok: bool | None = None) -> None:
    mark = "" if ok is None else ("   ok" if ok else "   MISSED")
    print(f"{label:<38}{value:>14}   ({target}){mark}", flush=True)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cold_start(tmp: Path) -> None:
    # as `make run` starts it: the project's bytecode compiled (make's `bytecode` step)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "engine", "smithers_tui", "workflows"], cwd=ROOT,
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    litellm = False
    for i in range(3):
        db = tmp / f"cold{i}.db"
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD, str(db), str(tmp)], capture_output=True, text=True,
                             env=env, cwd=tmp, timeout=60)
        wall = time.perf_counter() - start
        if out.returncode:
            print(out.stderr[-2000:])
            raise SystemExit(1)
        first, listed, imported = out.stdout.split()
        times.append((float(first), float(listed), wall))
        litellm = litellm or imported == "True"
    best = min(times)
    line("cold start: first painted screen", f"{best[0]:.3f} s", "< 0.5 s, after interpreter start", best[0] < 0.5)
    line("cold start: runs listed (db open)", f"{best[1]:.3f} s", "info")
    line("cold start: whole process incl. exit", f"{best[2]:.3f} s", "info")
    line("litellm imported at start", "yes" if litellm else "no", "must be no", not litellm)


async def streaming(tmp: Path) -> None:
    from engine.events import Event
    from smithers_tui.app import SmithersApp
    from smithers_tui.screens.agents import AgentsScreen

    app = SmithersApp(tmp / "stream.db", project=tmp, prefs=Prefs(tmp / "prefs.json"))
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.2)
        bus = app.host.engine.bus
        keys = [f"agent-{i}" for i in range(10)]
        for k in keys:
            bus.publish(Event(run_id="bench", at=time.time(), type="agent", node_id=k, iteration=0,
                              data={"kind": "token", "text": "start ", "agent": "bench"}))
        app.push_screen(AgentsScreen("bench"))
        await pilot.pause(0.8)
        stop = asyncio.Event()
        sent = 0

        async def produce() -> None:
            nonlocal sent
            t0 = time.perf_counter()
            words = ["token ", "stream ", "of ", "words\n", "→ tool "]
            while not stop.is_set():
                due = int((time.perf_counter() - t0) * RATE)
                while sent < due:
                    k = keys[sent % 10]
                    kind = "tool_call" if sent % 50 == 0 else "token"
                    bus.publish(Event(run_id="bench", at=time.time(), type="agent", node_id=k, iteration=0,
                                      data={"kind": kind, "text": words[sent % 5], "agent": "bench"}))
                    sent += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(produce())
        mem0 = rss_mb()
        lat: list[float] = []
        t_end = time.perf_counter() + DURATION
        mems = []
        while time.perf_counter() < t_end:
            before = app.focused
            t = time.perf_counter()
            app.simulate_key("tab")
            while app.focused is before:
                await asyncio.sleep(0)
            pane = app.focused
            while not getattr(pane, "drawn_focus", True):  # the pane drew itself focused: on screen
                await asyncio.sleep(0)
            lat.append(time.perf_counter() - t)
            await asyncio.sleep(0.1)
            if len(lat) % 20 == 0:
                mems.append(rss_mb())
        stop.set()
        await task
        mem1 = rss_mb()
        rate = sent / DURATION
        p95 = statistics.quantiles(lat, n=20)[18] * 1000
        line("streaming: events published", f"{rate:,.0f}/s", f"{RATE:,}/s over 10 agents, {DURATION:.0f} s")
        line("streaming: key press latency p95", f"{p95:.1f} ms", "< 50 ms", p95 < 50)
        line("streaming: key press latency median", f"{statistics.median(lat) * 1000:.1f} ms", "info")
        grew = mem1 - (mems[len(mems) // 2] if mems else mem0)
        line("streaming: memory start -> end", f"{mem0:.0f} -> {mem1:.0f} MB", "flat")
        line("streaming: growth over the 2nd half", f"{grew:+.1f} MB", "~0", abs(grew) < 20)


async def big_tree(tmp: Path) -> None:
    from engine import Parallel, Task, workflow
    from smithers_tui.app import SmithersApp
    from smithers_tui.widgets.step_tree import StepTree

    @workflow(name="wide")
    def wide(ctx: Any) -> Any:
        return Parallel(*[Task(f"step-{i:04d}", value=i) for i in range(5000)])

    db = tmp / "tree.db"
    await run_to_end(db, wide, "module:bench.tui:wide", "wide", tmp)
    # `wide` lives in this function (not importable): its steps are shown flat, unnested
    app = SmithersApp(db, project=tmp, prefs=Prefs(tmp / "prefs.json"))
    async with app.run_test(size=(120, 36)) as pilot:
        opened = await open_timed(pilot, "wide")
        rows = len(app.screen.query_one(StepTree).rows)
        line("big tree: open a 5,000-step run", f"{opened * 1000:.0f} ms", f"{rows} rows; no visible lag",
             opened < 1.0)
        tree = app.screen.query_one(StepTree)
        for key, n in (("down", 100), ("pagedown", 30)):
            took = []
            for _ in range(n):
                before = tree.cursor_line
                t = time.perf_counter()
                app.simulate_key(key)
                while tree.cursor_line == before or tree.drawn_cursor != tree.cursor_line:
                    await asyncio.sleep(0)  # moved, and drawn where it now is: on screen
                took.append(time.perf_counter() - t)
                await asyncio.sleep(0.02)
            per = statistics.median(took)
            p95 = statistics.quantiles(took, n=20)[18]
            line(f"big tree: {key} to repaint, median/p95", f"{per * 1000:.1f}/{p95 * 1000:.1f} ms", "< 50 ms",
                 p95 < 0.05)


async def run_to_end(db: Path, wf: Any, target: str, run_id: str, tmp: Path) -> int:
    """Run a workflow to its end in `db` (the engine alone); returns its last frame."""
    from engine.runtime import Engine
    from engine.store import Store

    store = await Store.open(db)
    eng = Engine(store)
    ex = await eng.start(wf, target, run_id=run_id, workdir=tmp)
    await ex.execute()
    await eng.close()
    await store.close()
    return ex.frame


async def open_timed(pilot: Any, run_id: str) -> float:
    """Seconds from asking the app to open a run to its screen loaded and painted."""
    from smithers_tui.screens.run import RunScreen

    app = pilot.app
    await pilot.pause(0.2)
    t = time.perf_counter()
    app.open_run(run_id)
    while not (isinstance(app.screen, RunScreen) and app.screen.loaded):
        await asyncio.sleep(0.002)
    await painted(app)
    return time.perf_counter() - t


async def painted(app: Any) -> None:
    done = asyncio.Event()
    app.screen.call_after_refresh(done.set)
    await done.wait()


async def loop_headless(tmp: Path, n: int, i: int) -> float:
    import bench
    from engine.runtime import Engine
    from engine.store import Store

    bench.PARAMS["n"] = n
    store = await Store.open(tmp / f"headless-{i}.db")
    eng = Engine(store)
    t0 = time.perf_counter()
    ex = await eng.start(bench.loop_async, "module:bench:bench-loop", run_id=f"h{i}", workdir=tmp)
    status = await ex.execute()
    took = time.perf_counter() - t0
    assert status == "finished", status
    await eng.close()
    await store.close()
    return took


async def loop_in_app(tmp: Path, n: int, i: int, keys: list[float] | None = None) -> float:
    """Start the loop from the app, its run screen open and following it; with `keys`, press
    j / k on the step tree every 50 ms while it runs and record key -> painted."""
    import bench
    from smithers_tui.app import SmithersApp
    from smithers_tui.screens.run import RunScreen
    from smithers_tui.screens.runs import RunsScreen

    bench.PARAMS["n"] = n
    app = SmithersApp(tmp / f"app-{i}.db", project=tmp, prefs=Prefs(tmp / "prefs.json"))
    async with app.run_test(size=(120, 36)) as pilot:
        while not (isinstance(app.screen, RunsScreen) and app.screen.loaded):
            await asyncio.sleep(0.005)
        t0 = time.perf_counter()
        rid = await app.host.start(bench.loop_async, "module:bench:bench-loop", None, demo=False, run_id=f"a{i}")
        app.open_run(rid)
        presses = 0
        while app.host.executing(rid):
            screen = app.screen
            if keys is not None and isinstance(screen, RunScreen) and screen.loaded and screen.step_tree.rows:
                tree = screen.step_tree
                before = tree.cursor_line
                t = time.perf_counter()
                app.simulate_key("j" if presses % 2 == 0 else "k")
                while tree.cursor_line == before and app.host.executing(rid):
                    await asyncio.sleep(0)
                while tree.drawn_cursor != tree.cursor_line and app.host.executing(rid):
                    await asyncio.sleep(0)  # the tree drew the cursor where it now is: on screen
                if tree.cursor_line != before and tree.drawn_cursor == tree.cursor_line:
                    keys.append(time.perf_counter() - t)
                presses += 1
            await asyncio.sleep(0.05)
        took = time.perf_counter() - t0
        await pilot.pause()
    return took


async def engine_in_app(tmp: Path, n: int = 2000) -> None:
    await loop_headless(tmp, 200, 99)  # warm-up: imports, statement caches
    await loop_in_app(tmp, 200, 99)
    head: list[float] = []
    inside: list[float] = []
    keys: list[float] = []
    for i in range(RUNS):  # interleaved: the disk's fsync time (most of a step here) drifts
        head.append(await loop_headless(tmp, n, i))
        inside.append(await loop_in_app(tmp, n, i))
    await loop_in_app(tmp, n, RUNS, keys)  # one more, with someone pressing keys
    h, a = statistics.median(head), statistics.median(inside)
    line(f"engine: {n:,}-step loop headless", f"{h:.2f} s", f"runs {', '.join(f'{x:.2f}' for x in head)}")
    line("engine: the same loop in the app", f"{a:.2f} s", f"runs {', '.join(f'{x:.2f}' for x in inside)}")
    line("engine: in the app / headless", f"{a / h:.2f}x", "target <= 1.5x", a / h <= 1.5)
    if len(keys) >= 2:
        p95 = statistics.quantiles(keys, n=20)[18] * 1000 if len(keys) >= 20 else max(keys) * 1000
        line("keys while it runs: key to paint p95", f"{p95:.1f} ms", f"< 50 ms; {len(keys)} presses", p95 < 50)


async def scrubbing(tmp: Path, steps: int = 10_000) -> None:
    import bench
    from smithers_tui.app import SmithersApp

    bench.PARAMS["n"] = steps
    db = tmp / "scrub.db"
    frames = await run_to_end(db, bench.loop_async, "module:bench:bench-loop", "scrub", tmp)
    app = SmithersApp(db, project=tmp, prefs=Prefs(tmp / "prefs.json"))
    async with app.run_test(size=(120, 36)) as pilot:
        opened = await open_timed(pilot, "scrub")
        screen = app.screen
        line(f"scrub: open a run of {frames:,} frames", f"{opened * 1000:.0f} ms", "info")
        await pilot.press("left_square_bracket")  # into the past once, then hold keys down
        lat: list[float] = []

        issued: list[int] = []

        async def measure(t: float, i: int) -> None:
            # the timeline drew that frame (or one a later key asked for: two keys in one repaint), in
            # the same repaint as the run's head; a repaint is one synchronous call, so once this task
            # sees it drawn, it is on screen
            while screen.timeline.drawn not in issued[i:]:
                await asyncio.sleep(0)
            lat.append(time.perf_counter() - t)

        waits = []
        rest = []
        for key, n, step in (("left_square_bracket", 120, -1), ("right_square_bracket", 60, 1),
                             ("left_curly_bracket", 60, -10)):
            for _ in range(n):  # a key held down: 30 presses a second, whatever the screen does
                prev = issued[-1] if issued else screen.model.view_frame
                issued.append(max(0, min(screen.model.last, prev + step)))
                t = time.perf_counter()
                app.simulate_key(key)
                waits.append(asyncio.create_task(measure(t, len(issued) - 1)))
                await asyncio.sleep(1 / 30)
            t = time.perf_counter()  # the keys rest: the tree and the inspector follow
            while screen.shown_frame_full != screen.model.view_frame:
                await asyncio.sleep(0.001)
            await painted(app)
            rest.append(time.perf_counter() - t)
        await asyncio.gather(*waits)
        p95 = statistics.quantiles(lat, n=20)[18] * 1000
        line("scrub: key held, each frame to paint p95", f"{p95:.1f} ms",
             f"< 30 ms; median {statistics.median(lat) * 1000:.1f}; timeline and head", p95 < 30)
        line("scrub: tree and inspector after the keys rest", f"{max(rest) * 1000:.0f} ms", "at most; info")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="smithers-bench-tui-") as d:
        tmp = Path(d)
        cold_start(tmp)
        asyncio.run(engine_in_app(tmp))
        asyncio.run(scrubbing(tmp))
        asyncio.run(big_tree(tmp))
        gc.collect()  # the tree scenario's garbage is not the streaming scenario's: don't time its collection there
        asyncio.run(streaming(tmp))


if __name__ == "__main__":
    main()
