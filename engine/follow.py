"""Following a run's event log as it is written, by this process or any other.

Events written here are announced on the engine's bus; those written by other processes are
noticed through `Store.data_version()` (one cheap query per poll interval, nothing when nothing
changed). The run's status is read before its events, so the events of its final commit are
always delivered before the end."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncGenerator

from .events import Event, EventBus
from .store import Store


async def follow(store: Store, bus: EventBus, run_id: str, since: int = 0, *, poll: float = 0.25,
                 idle: float | None = None, until_final: bool = True) -> AsyncGenerator[Event, None]:
    """Stored events of a run with seq > `since`, in order, as they are written. Ends when the run
    has ended and every event is delivered (`until_final`), or after `idle` seconds without one."""
    woken = asyncio.Event()
    unsubscribe = bus.subscribe(lambda ev: woken.set(), run_id)
    try:
        seq = since
        while True:
            woken.clear()
            version = await store.data_version()
            final = (await store.get_run(run_id)).status.final
            events = await store.events(run_id, seq, 500)
            for ev in events:
                seq = ev.seq
                yield ev
            if events:
                continue
            if final and until_final:
                return
            if not await _changed(store, woken, version, poll, idle):
                return
    finally:
        unsubscribe()


async def _changed(store: Store, woken: asyncio.Event, version: int, poll: float, idle: float | None) -> bool:
    """Wait until this process publishes an event of the run or another process commits; False
    when `idle` seconds pass first."""
    deadline = None if idle is None else time.monotonic() + idle
    while True:
        wait = poll if deadline is None else min(poll, deadline - time.monotonic())
        if wait <= 0:
            return False
        try:
            await asyncio.wait_for(woken.wait(), wait)
            return True
        except asyncio.TimeoutError:
            pass
        if await store.data_version() != version:
            return True
