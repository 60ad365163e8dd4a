"""How things look: state glyphs and colours, times and durations (through an injectable clock)."""
from __future__ import annotations

import json
import time
from typing import Any

from rich.text import Text

RUN_STYLE = {  # run status -> (glyph, colour)
    "running": ("▶", "dodger_blue1"),
    "waiting": ("◆", "yellow"),
    "finished": ("✔", "green3"),
    "failed": ("✖", "red1"),
    "cancelled": ("⊘", "grey58"),
    "rewound": ("↺", "magenta"),
    "interrupted": ("‖", "orange3"),
    "queued": ("…", "grey70"),
}
NODE_STYLE = {  # node state -> (glyph, colour)
    "pending": ("·", "grey50"),
    "running": ("●", "dodger_blue1"),
    "waiting_approval": ("◆", "yellow"),
    "waiting": ("◇", "yellow"),
    "done": ("✔", "green3"),
    "failed": ("✖", "red1"),
    "skipped": ("↷", "grey58"),
    "cancelled": ("⊘", "grey58"),
    "not_yet": ("○", "grey35"),
    "hidden": ("⋯", "grey50"),  # iterations of a long loop not shown
}
ACTIVE_RUN = ("running", "waiting", "queued")


def run_glyph(status: str) -> Text:
    g, c = RUN_STYLE.get(status, ("?", "white"))
    return Text(g, style=f"bold {c}")


def run_status(status: str) -> Text:
    g, c = RUN_STYLE.get(status, ("?", "white"))
    return Text(f"{g} {status}", style=c)


def node_glyph(state: str) -> Text:
    g, c = NODE_STYLE.get(state, ("?", "white"))
    return Text(g, style=f"bold {c}")


def key_label(node_id: str, iteration: int) -> str:
    """engine.state.key_label, without importing the engine before the first paint."""
    return f"{node_id}[{iteration}]" if iteration else node_id


def short_json(v: Any, n: int = 60) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def tokens(n: float | int | None) -> str:
    n = int(n or 0)
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return str(n)


def cost(usd: float | None) -> str:
    if not usd:
        return "-"
    return f"${usd:.2f}" if usd >= 0.01 else f"${usd:.4f}"


class Clock:
    """Time as the app shows it. Tests inject a FrozenClock so screens render the same every time."""

    def now(self) -> float:
        return time.time()

    def stamp(self, ts: float | None) -> str:
        if not ts:
            return "-"
        if self.now() - ts > 20 * 3600:
            return time.strftime("%m-%d %H:%M", time.localtime(ts))
        return time.strftime("%H:%M:%S", time.localtime(ts))

    def span(self, seconds: float | None) -> str:
        if seconds is None:
            return "-"
        s = max(0.0, seconds)
        if s < 10:
            return f"{s:.1f}s"
        s = int(s)
        if s < 3600:
            return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
        return f"{s // 3600}h{s % 3600 // 60:02d}m"

    def since(self, start: float | None, end: float | None = None) -> str:
        if not start:
            return "-"
        return self.span((end or self.now()) - start)


class FrozenClock(Clock):
    """Every time and duration reads the same: for snapshots."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self._now = now

    def now(self) -> float:
        return self._now

    def stamp(self, ts: float | None) -> str:
        return "12:00:00" if ts else "-"

    def span(self, seconds: float | None) -> str:
        return "1.0s" if seconds is not None else "-"
