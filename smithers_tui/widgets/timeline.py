"""The frame timeline: one mark per frame, coloured by what happened in it; a cursor to scrub."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from engine.frame import FrameDelta
from engine.state import key_label

from .fmt import Clock

LEGEND = [("finished", "green3"), ("started", "dodger_blue1"), ("gate", "yellow"), ("failed", "red1"),
          ("fork", "magenta"), ("other", "grey50")]


@dataclass
class Mark:
    frame: int
    at: float
    colour: str
    what: str


def describe(frame: int, at: float, delta: FrameDelta) -> Mark:
    """Colour and a one-line summary of what a frame changed."""
    if delta.fork is not None:
        f = delta.fork
        return Mark(frame, at, "magenta", f"{f.get('kind', 'fork')} of {f.get('from_run')} at frame {f.get('from_frame')}: "
                    f"{f.get('carried', 0)} outputs carried")
    by_state: dict[str, list[str]] = {}
    for (nid, it), rec in delta.nodes.items():
        if rec.kind == "loop":
            continue
        by_state.setdefault(rec.state, []).append(key_label(nid, it))
    status = delta.status
    parts = []
    for state, verb in (("failed", "failed"), ("waiting_approval", "waits for approval"), ("done", "done"),
                        ("running", "started"), ("skipped", "skipped"), ("pending", "pending"), ("cancelled", "cancelled")):
        names = by_state.get(state)
        if names:
            shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
            parts.append(f"{shown} {verb}")
    if status:
        parts.append(f"run {status}")
    what = "; ".join(parts) or ("run started" if frame == 0 else "bookkeeping")
    if "failed" in by_state or status == "failed":
        colour = "red1"
    elif "waiting_approval" in by_state or status == "waiting":
        colour = "yellow"
    elif "done" in by_state or delta.outputs:
        colour = "green3"
    elif "running" in by_state:
        colour = "dodger_blue1"
    else:
        colour = "grey50"
    return Mark(frame, at, colour, what)


class FrameTimeline(Widget, can_focus=True):
    """Shows frame `frame` of `last`; `live` when following the newest frame."""

    DEFAULT_CSS = """
    FrameTimeline { height: 4; border-top: solid $panel-lighten-2; padding: 0 1; }
    FrameTimeline:focus { border-top: solid $accent; }
    """
    BINDINGS = [
        Binding("left", "step(-1)", "Earlier", show=False, id="timeline.earlier"),
        Binding("right", "step(1)", "Later", show=False, id="timeline.later"),
        Binding("home", "jump('first')", "First frame", show=False, id="timeline.first"),
        Binding("end", "jump('last')", "Live", show=False, id="timeline.last"),
    ]

    frame: reactive[int] = reactive(0)

    class Scrubbed(Message):
        def __init__(self, frame: int, live: bool) -> None:
            super().__init__()
            self.frame, self.live = frame, live

    def __init__(self, clock: Clock, **kw: Any) -> None:
        super().__init__(**kw)
        self.clock = clock
        self.marks: list[Mark] = []
        self.live = True

    @property
    def last(self) -> int:
        return self.marks[-1].frame if self.marks else 0

    def add_marks(self, marks: list[Mark]) -> None:
        known = len(self.marks)
        self.marks.extend(m for m in marks if m.frame >= known)
        if self.live:
            self.frame = self.last
        self.refresh()

    def reset(self) -> None:
        self.marks = []
        self.live = True
        self.frame = 0

    def go(self, frame: int) -> None:
        if not self.marks:
            return
        frame = max(0, min(self.last, frame))
        live = frame == self.last
        if frame == self.frame and live == self.live:
            return
        self.live = live
        self.frame = frame
        self.post_message(self.Scrubbed(frame, live))

    def action_step(self, d: int) -> None:
        self.go(self.frame + d)

    def action_jump(self, where: str) -> None:
        self.go(0 if where == "first" else self.last)

    def watch_frame(self) -> None:
        self.refresh()

    def render(self) -> Text:
        width = max(10, self.size.width)
        n = len(self.marks)
        if not n:
            return Text("no frames yet", style="grey50")
        start = 0
        if n > width:
            start = max(0, min(n - width, self.frame - width // 2))
        shown = self.marks[start:start + width]
        cursor = Text(" " * (self.frame - start) + "▼", style="bold")
        strip = Text()
        for m in shown:
            strip.append("█" if m.frame == self.frame else "▮", style=f"bold {m.colour}" if m.frame == self.frame
                         else m.colour)
        cur = self.marks[min(self.frame, n - 1)]
        head = "live" if self.live else "PAST"
        info = Text.assemble((f" {head} ", "bold reverse green3" if self.live else "bold reverse yellow"),
                             (f" frame {cur.frame}/{self.last} ", "bold"), (self.clock.stamp(cur.at) + "  ", "grey58"),
                             (cur.what, ""))
        info.truncate(width)
        return Text("\n").join([cursor, strip, info])
