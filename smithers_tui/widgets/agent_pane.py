"""Agent output: a bounded buffer per agent step (fed by the engine's bus, cheap per event) and
a pane that drains it a few times a second, so many agents streaming at once stay cheap.

The pane is one widget drawn line by line (Textual's line API): it paints only the rows it shows,
from a bounded deque of finished lines, so streaming never changes its size, never grows a virtual
size or a scrollbar, and never asks for a layout; the screen's one timer drains every pane and
refreshes (repaints, no layout) only the panes that changed."""
from __future__ import annotations

from collections import deque
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from .fmt import NODE_STYLE, key_label

PaneKey = tuple[str, str, int]  # run id, node id, iteration
KEEP = 3000  # items kept per agent
SCROLLBACK = 2000  # finished lines kept per pane
REPAINT_S = 0.2  # a pane repaints at most 5 times a second


class AgentBuffer:
    """What one agent step said, bounded. `total` counts every item ever fed."""

    __slots__ = ("items", "total", "agent", "tool_calls", "last_at", "prompt")

    def __init__(self) -> None:
        self.items: deque[tuple[str, str]] = deque(maxlen=KEEP)
        self.total = 0
        self.agent = ""
        self.tool_calls = 0
        self.last_at = 0.0
        self.prompt = ""


class AgentHub:
    """Every agent buffer of this app, by (run, node, iteration)."""

    def __init__(self) -> None:
        self.buffers: dict[PaneKey, AgentBuffer] = {}

    def feed(self, ev: Any) -> None:
        if ev.node_id is None:
            return
        key = (ev.run_id, ev.node_id, ev.iteration or 0)
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = AgentBuffer()
        data = ev.data
        kind = data.get("kind", "message")
        if kind == "prompt":  # stored with the step's next frame, so it may come late: shown apart
            buf.prompt = data.get("text") or ""
            buf.agent = data.get("agent") or buf.agent
            return
        if kind == "tool_call":
            buf.tool_calls += 1
        buf.agent = data.get("agent") or buf.agent
        buf.last_at = ev.at
        buf.items.append((kind, data.get("text") or ""))
        buf.total += 1

    def for_run(self, run_id: str) -> list[PaneKey]:
        keys = [k for k in self.buffers if k[0] == run_id]
        return sorted(keys, key=lambda k: self.buffers[k].last_at)

    def seeded(self, key: PaneKey) -> bool:
        return key in self.buffers


STYLE = {"tool_call": "bold cyan", "tool_result": "grey62", "shell_output": "grey70", "message": "",
         "prompt": "italic grey58", "retry": "yellow", "error": "bold red"}
PREFIX = {"tool_call": "→ ", "tool_result": "  ← ", "shell_output": "  $ ", "prompt": "prompt: ", "retry": "retry: ",
          "error": "error: "}
MUTED = Style(color="grey58")
PROMPT = Style(color="grey58", italic=True)
RULE = Style(color="grey35")


def answer_lines(text: str) -> list[tuple[str, str]]:
    """A structured answer (a JSON object) as one `field: value` line per field; [] for plain text."""
    import json

    t = text.strip()
    if not (t.startswith("{") and t.endswith("}")):
        return []
    try:
        value = json.loads(t)
    except ValueError:
        return []
    if not isinstance(value, dict):
        return []
    out = [("answer:", "bold green3")]
    for k, v in value.items():
        shown = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        out.append((f"  {k}: {' '.join(str(shown).split())[:600]}", ""))
    return out


class AgentPane(Widget, can_focus=True):
    """One agent step's live output: a header row, the prompt row, the finished lines (newest at the
    bottom; the mouse wheel scrolls back through them) and the line being streamed."""

    DEFAULT_CSS = """
    AgentPane { border: round $panel-lighten-2; height: 1fr; width: 1fr; }
    AgentPane:focus { border: round $accent; }
    """

    def __init__(self, hub: AgentHub, key: PaneKey) -> None:
        super().__init__(id=None)
        self.hub, self.key = hub, key
        # finished lines, bounded: (text, style) pairs of strings, which the garbage collector does not track
        self.lines: deque[tuple[str, str]] = deque(maxlen=SCROLLBACK)
        self.seen = 0
        self.partial = ""
        self.streamed = False  # tokens came before the final message
        self.state = "running"
        self.back = 0  # finished lines scrolled back from the newest (0: follow the stream)
        self._prompt_seen = ""
        self._version = 0  # bumped on any change of what the pane shows
        self.drawn_focus = False  # the pane was last drawn focused
        self._strips: list[Strip] = []
        self._strips_for: tuple[int, int, int] | None = None
        self.border_title = key_label(key[1], key[2])

    def on_mount(self) -> None:
        self.drain()

    # -- feeding ----------------------------------------------------------------------------------

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._changed()

    def _changed(self) -> None:
        self._version += 1
        self.refresh()  # a repaint of this pane's region: its size never depends on its content

    def drain(self) -> bool:
        """Take what arrived since the last repaint (one repaint for any number of events).
        Returns whether the pane changed."""
        buf = self.hub.buffers.get(self.key)
        if buf is None or buf.total == self.seen:
            if buf is not None and buf.prompt and buf.prompt != self._prompt_seen:
                self._prompt_seen = buf.prompt
                self._changed()
                return True
            return False
        new = buf.total - self.seen
        items = list(buf.items)[-new:] if new < len(buf.items) else list(buf.items)
        self.seen = buf.total
        lines = self.lines
        before = len(lines)
        for kind, text in items:
            if kind == "token":
                self.partial += text
                self.streamed = True
                if "\n" in self.partial:
                    *done, self.partial = self.partial.split("\n")
                    lines.extend((d, "") for d in done)
                continue
            if self.partial:
                lines.append((self.partial, ""))
                self.partial = ""
            if kind == "message" and self.streamed:
                self.streamed = False  # already shown as it streamed
                lines.append(("─" * 8, "grey35"))
                lines.extend(answer_lines(text))
                continue
            if kind == "message":
                fields = answer_lines(text)
                if fields:
                    lines.extend(fields)
                    continue
            first = text if len(text) < 2000 else text[:2000] + " …"
            lines.append((PREFIX.get(kind, "") + first, STYLE.get(kind, "")))
        if len(self.partial) > 4000:  # a very long line without a newline: keep its end
            self.partial = self.partial[-2000:]
        if self.back:  # scrolled back: stay on the same lines while new ones arrive
            self.back = min(self.back + max(0, len(lines) - before), max(0, len(lines) - 1))
        self._prompt_seen = buf.prompt
        self._changed()
        return True

    def text(self) -> str:
        """Everything the pane holds, as plain text (finished lines and the line being streamed)."""
        return "\n".join([*(t for t, _style in self.lines), self.partial])

    # -- scrolling back ---------------------------------------------------------------------------

    def _scroll(self, d: int) -> None:
        back = max(0, min(self.back + d, len(self.lines) - 1))
        if back != self.back:
            self.back = back
            self._changed()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self._scroll(3)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self._scroll(-3)

    # -- painting (only the rows shown) -----------------------------------------------------------

    def _head(self, buf: AgentBuffer | None) -> Text:
        g, c = NODE_STYLE.get(self.state, ("?", "white"))
        head = Text.assemble((f"{g} {self.state}", c), "  ", (buf.agent if buf else "", "bold"),
                             f"  {buf.tool_calls if buf else 0} tool calls", style=MUTED)
        if self.back:
            head.append(f"  ↑ {self.back} back", style="yellow")
        return head

    def _build(self, width: int, height: int, base: Style) -> list[Strip]:
        console = self.app.console
        buf = self.hub.buffers.get(self.key)
        styles: dict[str, Style] = {}

        def strip(text: Text) -> Strip:  # one Strip per row: the text's style over the pane's, cropped/padded
            style = styles.get(str(text.style))
            if style is None:
                style = styles[str(text.style)] = base + console.get_style(text.style) if text.style else base
            segments = Segment.apply_style(text.render(console), style)
            return Strip(Segment.adjust_line_length(list(segments), width, style=base), width)

        def one(text: Text) -> Strip:
            text.truncate(width, overflow="ellipsis")
            return strip(text)

        blank = Strip.blank(width, base)
        rows = [one(self._head(buf))]
        prompt = " ".join(buf.prompt.split())[:300] if buf is not None and buf.prompt else ""
        rows.append(one(Text("prompt: " + prompt, style=PROMPT)) if prompt else blank)
        body = max(0, height - 3)
        end = len(self.lines) - self.back
        wrapped: list[Strip] = []
        i = end - 1
        while i >= 0 and len(wrapped) < body:  # wrap from the newest line back, only what fits
            line, style = self.lines[i]
            wrapped[:0] = [strip(p) for p in Text(line, style=style).wrap(console, width)]
            i -= 1
        wrapped = wrapped[-body:] if body else []
        if not wrapped and self.state == "running" and body:
            note = Text("waiting for its first words — a model client loads the first time it is used, which can "
                        "take a few seconds", style="grey50 italic")
            wrapped = [strip(p) for p in note.wrap(console, width)][:body]
        rows.extend(wrapped + [blank] * (body - len(wrapped)))  # a log: from the top down
        rows.append(one(Text(self.partial[-400:])) if not self.back else blank)
        return rows[:height]

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._version += 1  # colours changed (focus, theme): paint again

    def render_lines(self, crop: Region) -> list[Strip]:
        lines = super().render_lines(crop)
        self.drawn_focus = self.has_focus  # as the screen shows it (the benchmark waits on it)
        return lines

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        key = (width, height, self._version)
        if key != self._strips_for:  # built once per change, then each row is a lookup
            self._strips = self._build(width, height, self.rich_style) if width > 0 and height > 0 else []
            self._strips_for = key
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self.rich_style)
