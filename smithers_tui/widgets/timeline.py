"""The timeline: a scrubber over every frame of a run.

    ▌LIVE frame 412/2000 · 12:00:31 · +41.2s · review-security started; build[3] done
     0        250        500        750       1000      1250      1500      1750    2000   ⑂
     ▸✔✔✔✔✔✔◆◈✔✔✔✔↻✔✔✔✔✔✔✔✔✖✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔✔
                  ▲
     …✔▸✔▸✔▸✔▸✔▸[✔]▸✔▸✔▸✔▸✔▸…     (one cell per frame around the cursor, when there is room)

The overview places every frame by number or by time (`m` toggles), one glyph per column for the
most telling thing in it (a failure, a gate, a decision, a fork, a retry, a finish, a start); forks
taken from this run are marked on the axis. The cursor moves by 1, 10 or 100 frames, to the
next or previous failure, gate or decision, or change of the step selected in the tree. A click
jumps to a frame; the mouse over a column says what happened there.
"""
from __future__ import annotations

import bisect
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from ..runmodel import CLASSES, ORDER, Mark, RunModel
from .fmt import Clock

LEGEND = [("fail", "failed"), ("gate", "gate"), ("decision", "decided"), ("fork", "fork"), ("retry", "retry"),
          ("finish", "done"), ("start", "started")]
RANK = {c: i for i, c in enumerate(ORDER)}


class FrameTimeline(Widget, can_focus=True):
    """Shows the run's frames; `frame` is the one shown, `live` when following the newest."""

    DEFAULT_CSS = """
    FrameTimeline { height: 5; border-top: solid $panel-lighten-2; padding: 0 1; }
    FrameTimeline.tall { height: 7; }
    FrameTimeline:focus { border-top: solid $accent; }
    """
    BINDINGS = [
        Binding("left", "step(-1)", "Earlier", show=False, id="timeline.earlier"),
        Binding("right", "step(1)", "Later", show=False, id="timeline.later"),
        Binding("shift+left", "step(-10)", "10 earlier", show=False, id="timeline.earlier10"),
        Binding("shift+right", "step(10)", "10 later", show=False, id="timeline.later10"),
        Binding("ctrl+left", "step(-100)", "100 earlier", show=False, id="timeline.earlier100"),
        Binding("ctrl+right", "step(100)", "100 later", show=False, id="timeline.later100"),
        Binding("home", "jump('first')", "First frame", show=False, id="timeline.first"),
        Binding("end", "jump('last')", "Live", show=False, id="timeline.last"),
    ]

    frame: reactive[int] = reactive(0, always_update=True)

    class Scrubbed(Message):
        def __init__(self, frame: int, live: bool) -> None:
            super().__init__()
            self.frame, self.live = frame, live

    def __init__(self, clock: Clock, model: RunModel | None = None, *, axis: str = "frames", **kw: Any) -> None:
        super().__init__(**kw)
        self.clock = clock
        self.model = model or RunModel()
        self.axis = axis if axis in ("frames", "time") else "frames"
        self.live = True
        self.forks: dict[int, list[str]] = {}  # frame -> runs forked, rewound or replayed from it
        self._columns: tuple[tuple[Any, ...], list[tuple[str, int]]] | None = None  # cache key, columns
        self._strips: dict[int, tuple[Any, Strip]] = {}  # line -> what it showed, its drawing
        self.drawn = -1  # the frame the timeline last drew
        self._cells: tuple[Any, list[tuple[Segment, Segment]]] | None = None  # the overview's cells, plain and cursor

    # --- the model -----------------------------------------------------------------------------
    @property
    def last(self) -> int:
        return self.model.last

    @property
    def marks(self) -> list[Mark]:
        return self.model.marks

    def frames_added(self) -> None:
        """The model has new frames: follow them when live."""
        if self.live:
            self.frame = max(0, self.last)
        self.refresh()

    def set_forks(self, forks: dict[int, list[str]]) -> None:
        if forks != self.forks:
            self.forks = forks
            self._columns = None
            self.refresh()

    def set_axis(self, axis: str) -> None:
        self.axis = axis
        self._columns = None
        self.refresh()

    # --- moving --------------------------------------------------------------------------------
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

    def seek_next(self, step: int, wanted: Any) -> bool:
        """Move to the next (step=1) or previous (step=-1) frame whose mark is wanted."""
        f = self.model.find(self.frame, step, wanted)
        if f is None:
            return False
        self.go(f)
        return True

    def watch_frame(self) -> None:
        self.refresh()

    # --- placing frames ------------------------------------------------------------------------
    def span(self) -> tuple[float, float]:
        m = self.marks
        return (m[0].at, m[-1].at) if m else (0.0, 0.0)

    def column_of(self, frame: int, width: int) -> int:
        n = len(self.marks)
        if n <= 1 or width <= 1:
            return 0
        if self.axis == "time":
            t0, t1 = self.span()
            if t1 > t0:
                return round((self.marks[frame].at - t0) / (t1 - t0) * (width - 1))
        return round(frame * (width - 1) / (n - 1))

    def frame_at_column(self, x: int, width: int) -> int:
        n = len(self.marks)
        if n <= 1 or width <= 1:
            return 0
        x = max(0, min(width - 1, x))
        if self.axis == "time":
            t0, t1 = self.span()
            if t1 > t0:
                t = t0 + (t1 - t0) * x / (width - 1)
                i = bisect.bisect_left([m.at for m in self.marks], t)
                i = min(n - 1, i)
                if i > 0 and abs(self.marks[i - 1].at - t) <= abs(self.marks[i].at - t):
                    i -= 1
                return i
        return round(x * (n - 1) / (width - 1))

    def columns(self, width: int) -> list[tuple[str, int]]:
        """Per column: the most telling class of the frames placed there, and one of those frames
        (-1: no frame). Recomputed only when frames arrive, the width or the axis changes."""
        key = (width, len(self.marks), self.axis)
        if self._columns is not None and self._columns[0] == key:
            return self._columns[1]
        cols: list[tuple[str, int]] = [("", -1)] * width
        for m in self.marks:
            x = self.column_of(m.frame, width)
            cur, f = cols[x]
            if f < 0 or RANK[m.cls] < RANK[cur]:
                cols[x] = (m.cls, m.frame)
        self._columns = (key, cols)
        return cols

    # --- drawing -------------------------------------------------------------------------------
    def info_line(self, width: int) -> Text:
        if not self.marks:
            return Text("no frames yet", style="grey50")
        cur = self.marks[min(self.frame, self.last)]
        t0 = self.marks[0].at
        head = Text.assemble((" LIVE " if self.live else " PAST ", "bold reverse green3" if self.live
                              else "bold reverse yellow"),
                             (f" frame {cur.frame}/{self.last} ", "bold"),
                             (f"{self.clock.stamp(cur.at)} · +{self.clock.span(cur.at - t0)} ", "grey58"),
                             (f"{CLASSES[cur.cls][0]} ", CLASSES[cur.cls][1]), cur.what)
        head.truncate(width, overflow="ellipsis")
        return head

    def axis_line(self, width: int) -> Text:
        line = [" "] * width
        n = len(self.marks)
        if n > 1:
            labels: list[tuple[int, str]] = []
            if self.axis == "time":
                t0, t1 = self.span()
                for i in range(6):
                    x = round(i * (width - 1) / 5)
                    labels.append((x, "+" + self.clock.span((t1 - t0) * i / 5)))
            else:  # up to six frame numbers, each once, over the column its frame is drawn in
                for f in sorted({round(i * (n - 1) / 5) for i in range(6)}):
                    labels.append((self.column_of(f, width), str(f)))
            for x, label in labels:
                start = max(0, min(width - len(label), x - (len(label) if x == width - 1 else 0)))
                if all(c == " " for c in line[max(0, start - 1):start + len(label) + 1]):
                    line[start:start + len(label)] = list(label)
        t = Text("".join(line), style="grey46")
        for f in self.forks:
            if 0 <= f <= self.last:
                x = self.column_of(f, width)
                t = Text.assemble(t[:x], ("⑂", "bold magenta"), t[x + 1:])
        return t

    def strip(self, width: int) -> list[Segment]:
        """The overview: one glyph per column, the cursor's reversed. Its cells are drawn once per
        shape (width, frames, axis); a key held down swaps the cursor's cell, nothing else."""
        base = self.rich_style
        key = (width, len(self.marks), self.axis, base)
        if self._cells is None or self._cells[0] != key:
            style = Style.parse  # cached by Rich
            cells: list[tuple[Segment, Segment]] = []
            for cls, f in self.columns(width):
                if f < 0:
                    cells.append((Segment("─", base + style("grey30")), Segment("┼", base + style("bold"))))
                    continue
                glyph, colour = CLASSES[cls]
                cells.append((Segment(glyph, base + style(colour)), Segment(glyph, base + style(f"bold reverse {colour}"))))
            self._cells = (key, cells)
        cells = self._cells[1]
        cursor = self.column_of(min(self.frame, max(0, self.last)), width) if self.marks else -1
        return [cell[1] if x == cursor else cell[0] for x, cell in enumerate(cells)]

    def cursor_line(self, width: int) -> Text:
        if not self.marks:
            return Text("")
        x = self.column_of(self.frame, width)
        return Text(" " * x + "▲", style="bold yellow" if not self.live else "bold green3")

    def detail(self, width: int) -> Text:
        """One cell per frame around the cursor: every frame, even on a run of 10,000."""
        n = len(self.marks)
        half = width // 2
        start = max(0, min(self.frame - half, n - width))
        out = Text("…" if start > 0 else " ", "grey42")
        for f in range(start + (1 if start > 0 else 0), min(n, start + width - 1)):
            m = self.marks[f]
            out.append(m.glyph, f"bold reverse {m.colour}" if f == self.frame else m.colour)
        if start + width - 1 < n:
            out.append("…", "grey42")
        return out

    def legend(self, width: int) -> Text:
        t = Text()
        for cls, label in LEGEND:
            g, c = CLASSES[cls]
            t.append(g, c)
            t.append(f" {label}  ", "grey58")
        keys = "  [ ] ±1  { } ±10  ( ) ±100  e/E failure  v/V gate  w/W this step  m axis"
        if cell_len(t.plain) + len(keys) <= width:
            t.append(keys, "grey50")
        t.truncate(width, overflow="ellipsis")
        return t

    def line_makers(self, width: int, height: int) -> list[tuple[Any, Any]]:
        """The lines shown, each with what it depends on (its cache key) and how it is drawn."""
        n, frame = len(self.marks), min(self.frame, max(0, self.last))
        cursor = self.column_of(frame, width) if self.marks else -1
        shape = (width, n, self.axis)
        lines: list[tuple[Any, Any]] = [
            (("info", width, frame, self.last, self.live), self.info_line),
            (("axis", shape, tuple(self.forks)), self.axis_line),
            (("strip", shape, cursor), self.strip),
            (("cursor", width, cursor, self.live, n > 0), self.cursor_line),
        ]
        if height >= 5 and self.marks:
            lines.append((("detail", width, frame, n), self.detail))
        if height >= 6:
            lines.append((("legend", width), self.legend))
        return lines[:max(1, height)]

    def render_line(self, y: int) -> Strip:
        """One line, drawn again only when what it shows changed: a key held down redraws the
        info line, the cursor and the cells around it, not the whole overview."""
        width, height = self.size
        makers = self.line_makers(max(10, width), height)
        if y >= len(makers):
            return Strip.blank(width, self.rich_style)
        key, make = makers[y]
        if y == 0:
            self.drawn = self.frame  # what the screen shows now (the benchmark waits on it)
        hit = self._strips.get(y)
        if hit is not None and hit[0] == key:
            return hit[1]
        drawn = make(max(10, width))
        if isinstance(drawn, Text):  # Text.render leaves out the text's own style: under the spans
            base = self.rich_style + (Style.parse(drawn.style) if isinstance(drawn.style, str) else drawn.style)
            strip = Strip(Segment.apply_style(drawn.render(self.app.console, end=""), base)).simplify()
        else:  # segments already styled
            strip = Strip(drawn)
        self._strips[y] = (key, strip)
        return strip

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()  # a new theme: every line drawn again
        self._cells = None

    # --- the mouse -----------------------------------------------------------------------------
    def on_click(self, event: events.Click) -> None:
        if event.y in (1, 2, 3) and self.marks:
            self.go(self.frame_at_column(event.x - self.gutter.left, self.content_region.width))

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if event.y in (1, 2, 3) and self.marks:
            m = self.marks[self.frame_at_column(event.x - self.gutter.left, self.content_region.width)]
            self.tooltip = f"frame {m.frame} · {self.clock.stamp(m.at)} · {m.what}"
        else:
            self.tooltip = None
