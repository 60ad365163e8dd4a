"""Agent output: a bounded buffer per agent step (fed by the engine's bus, cheap per event) and
a pane that drains it a few times a second, so many agents streaming at once stay cheap."""
from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import RichLog, Static

from .fmt import NODE_STYLE, key_label

PaneKey = tuple[str, str, int]  # run id, node id, iteration
KEEP = 3000  # items kept per agent
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


class AgentPane(Vertical, can_focus=True):
    """One agent step's live output: a header, the finished lines, and the line being streamed."""

    DEFAULT_CSS = """
    AgentPane { border: round $panel-lighten-2; height: 1fr; }
    AgentPane:focus { border: round $accent; }
    AgentPane > .pane-head { height: 1; color: $text-muted; }
    AgentPane > .pane-prompt { height: 1; color: $text-muted; text-style: italic; }
    AgentPane > RichLog { height: 1fr; background: transparent; scrollbar-size-vertical: 1; overflow-x: hidden; }
    AgentPane > .pane-tail { height: 1; color: $text; }
    """

    def __init__(self, hub: AgentHub, key: PaneKey) -> None:
        super().__init__(id=None)
        self.hub, self.key = hub, key
        self.seen = 0
        self.partial = ""
        self.streamed = False  # tokens came before the final message
        self.state = "running"
        self.prompt_shown = False
        self._head_seen: tuple[int, str] = (-1, "")
        self.border_title = key_label(key[1], key[2])

    def compose(self) -> ComposeResult:
        yield Static("", classes="pane-head")
        yield Static("", classes="pane-prompt")
        yield RichLog(max_lines=1000, wrap=True, markup=False, auto_scroll=True, min_width=10)
        yield Static("", classes="pane-tail")

    def on_mount(self) -> None:
        self.drain()
        self.set_interval(REPAINT_S, self.drain)

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._head()

    def _head(self) -> None:
        buf = self.hub.buffers.get(self.key)
        g, c = NODE_STYLE.get(self.state, ("?", "white"))
        head = Text.assemble((f"{g} {self.state}", c), "  ", (buf.agent if buf else "", "bold"),
                             f"  {buf.tool_calls if buf else 0} tool calls")
        for w in self.query(".pane-head"):
            w.update(head, layout=False)  # type: ignore[attr-defined]
        if buf is not None and buf.prompt:
            for w in self.query(".pane-prompt"):
                w.update(Text("prompt: " + " ".join(buf.prompt.split())[:300], no_wrap=True, overflow="ellipsis"),
                         layout=False)  # type: ignore[attr-defined]
                self.prompt_shown = True

    def drain(self) -> None:
        """Append what arrived since the last repaint (one repaint for any number of events)."""
        buf = self.hub.buffers.get(self.key)
        if buf is not None and buf.prompt and not self.prompt_shown:
            self._head()
        if buf is None or buf.total == self.seen:
            return
        new = buf.total - self.seen
        items = list(buf.items)[-new:] if new < len(buf.items) else list(buf.items)
        self.seen = buf.total
        log = self.query_one(RichLog)
        lines: list[Text] = []
        for kind, text in items:
            if kind == "token":
                self.partial += text
                self.streamed = True
                if "\n" in self.partial:
                    *done, self.partial = self.partial.split("\n")
                    lines.extend(Text(d) for d in done)
                continue
            if self.partial:
                lines.append(Text(self.partial))
                self.partial = ""
            if kind == "message" and self.streamed:
                self.streamed = False  # already shown as it streamed
                lines.append(Text("─" * 8, style="grey35"))
                continue
            first = text if len(text) < 2000 else text[:2000] + " …"
            lines.append(Text(PREFIX.get(kind, "") + first, style=STYLE.get(kind, "")))
        if lines:  # one write (one render) for everything since the last repaint
            log.write(Text("\n").join(lines[-400:]))
        tail = Text(self.partial[-400:], no_wrap=True, overflow="ellipsis")
        self.query_one(".pane-tail", Static).update(tail, layout=False)  # fixed height: no relayout
        if (buf.tool_calls, buf.agent) != self._head_seen:
            self._head_seen = (buf.tool_calls, buf.agent)
            self._head()
