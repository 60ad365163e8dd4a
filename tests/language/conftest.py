"""Helpers for the language tests: run an executor in the background and wait for its events
(never for the clock)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


class Watch:
    """Collects the events of an engine's bus; `await watch.until(type, node)` waits for one."""

    def __init__(self, eng: Any) -> None:
        self.events: list[Any] = []
        self._waiters: list[tuple[Any, asyncio.Future]] = []
        eng.bus.subscribe(self._on)

    def _on(self, ev: Any) -> None:
        self.events.append(ev)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(ev):
                fut.set_result(ev)

    async def until(self, type: str, node: str | None = None, run_id: str | None = None, timeout: float = 30) -> Any:
        def pred(ev: Any) -> bool:
            return ev.type == type and (node is None or ev.node_id == node) and (run_id is None or ev.run_id == run_id)

        for ev in self.events:
            if pred(ev):
                return ev
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        return await asyncio.wait_for(fut, timeout)

    def types(self, run_id: str | None = None) -> list[str]:
        return [e.type for e in self.events if run_id is None or e.run_id == run_id]


@pytest.fixture
def watch(engine):
    eng, _ = engine
    return Watch(eng)
