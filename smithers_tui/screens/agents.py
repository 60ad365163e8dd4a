"""Agent panes: one pane per agent step of the run, streaming tokens, tool calls and shell output
as they happen; a grid when several run at once. tab cycles, z maximises one pane."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import Header, Static

from ..app import StoreChanged
from ..base import LETTER_KEYS, AppScreen, background
from ..widgets.agent_pane import REPAINT_S, AgentHub, AgentPane, PaneKey
from ..widgets.footer import Footer

MAX_PANES = 12


def grid_shape(n: int) -> tuple[int, int]:
    cols = 1 if n <= 1 else 2 if n <= 4 else 3 if n <= 9 else 4
    return cols, max(1, -(-n // cols))


class AgentsScreen(AppScreen[None]):
    CSS_PATH = "agents.tcss"
    HELP_TITLE = "Agents"
    BINDINGS = [
        Binding("tab", "cycle(1)", "Next pane", id="agents.next"),
        Binding("shift+tab", "cycle(-1)", "Previous pane", show=False, id="agents.previous"),
        Binding("z", "maximise", "Maximise", id="agents.maximise"),
        Binding("enter", "open_step", "Open step", id="agents.open_step"),
        Binding("H", "hijack", "Hijack session", id="agents.hijack"),
        Binding("escape", "back", "Back", id="back"),
        *LETTER_KEYS,
    ]

    def __init__(self, run_id: str, only: list[PaneKey] | None = None, title: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.only = only
        self.title_text = title
        self.panes: dict[PaneKey, AgentPane] = {}
        self.states: dict[tuple[str, int], str] = {}
        self.agent_steps: list[PaneKey] = []
        self._started_seq = 0
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header(icon="◎")
        yield Static("", id="agents-head")
        yield Grid(id="grid")
        yield Static("No agent has run in this run yet. Agent steps stream here as they work.", id="empty")
        yield Footer()

    @property
    def hub(self) -> AgentHub:
        return self.app.host.agents

    def on_mount(self) -> None:
        self.sub_title = f"agents of run {self.run_id}"
        self.seed()
        self.set_interval(0.5, self.refresh_panes)
        self.set_interval(REPAINT_S, self.drain_panes)  # one timer for every pane

    def drain_panes(self) -> None:
        """Every pane takes what its agent said since the last tick; only changed panes repaint."""
        for pane in self.panes.values():
            pane.drain()

    @background(group="agents-seed")
    async def seed(self) -> None:
        """Agent events stored before this screen opened (tool calls, messages, prompts)."""
        await self.app.host.ready.wait()
        reader = self.app.host.reader
        fresh: dict[PaneKey, list[Any]] = {}
        for ev in await reader.events(self.run_id, types=["agent"], limit=20000):
            key = (ev.run_id, ev.node_id or "", ev.iteration or 0)
            if not self.hub.seeded(key) or key in fresh:
                fresh.setdefault(key, []).append(ev)
        for evs in fresh.values():
            for ev in evs:
                self.hub.feed(ev)
        await self.load_states()
        self.refresh_panes()
        self.loaded = True

    def on_screen_resume(self) -> None:
        self.reload_states()

    def on_store_changed(self, _msg: StoreChanged) -> None:
        if self.on_top:
            self.reload_states()

    @background(group="agents-states", exclusive=True)
    async def reload_states(self) -> None:
        await self.load_states()

    async def load_states(self) -> None:
        reader = self.app.host.reader
        self.states = {k: str(rec.state) for k, rec in (await reader.load_state(self.run_id)).nodes.items()}
        # every agent step that started, even before it said anything (a run executed in another
        # process stores its agents' first words only with its next frame)
        started = await reader.events(self.run_id, after=self._started_seq, types=["node_started"], limit=20000)
        for ev in started:
            self._started_seq = max(self._started_seq, ev.seq)
            key = (self.run_id, ev.node_id or "", ev.iteration or 0)
            if ev.data.get("kind") == "agent" and key not in self.agent_steps:
                self.agent_steps.append(key)
        for key, pane in self.panes.items():
            pane.set_state(self.states.get((key[1], key[2]), "running"))

    def wanted(self) -> list[PaneKey]:
        if self.only is not None:
            keys = self.only
        else:
            keys = self.hub.for_run(self.run_id)
            keys = [k for k in self.agent_steps if k not in keys and self.states.get((k[1], k[2])) == "running"] + keys
        running = [k for k in keys if self.states.get((k[1], k[2]), "running") == "running"]
        rest = [k for k in reversed(keys) if k not in running]
        return (running + rest)[:MAX_PANES]

    def refresh_panes(self) -> None:
        want = self.wanted()
        grid = self.query_one("#grid", Grid)
        new = [k for k in want if k not in self.panes]
        if new:
            for k in new:
                pane = AgentPane(self.hub, k)
                self.panes[k] = pane
                grid.mount(pane)
                pane.set_state(self.states.get((k[1], k[2]), "running"))
        cols, rows = grid_shape(len(self.panes))
        if (grid.styles.grid_size_columns, grid.styles.grid_size_rows) != (cols, rows):
            grid.styles.grid_size_columns = cols
            grid.styles.grid_size_rows = rows
        self.query_one("#empty").display = not self.panes
        running = sum(1 for k in self.panes if self.states.get((k[1], k[2]), "running") == "running")
        self.query_one("#agents-head", Static).update(layout=False, content=Text.assemble(
            (f" {self.title_text or 'run ' + self.run_id}", "bold"), f"  ·  {len(self.panes)} agent pane(s)  ·  ",
            (f"{running} running", "bold dodger_blue1" if running else "grey58"),
            ("  ·  tab next  ·  z maximise  ·  enter open the step", "grey58")))
        if self.panes and not isinstance(self.focused, AgentPane):
            next(iter(self.panes.values())).focus()

    def action_cycle(self, d: int) -> None:
        panes = list(self.panes.values())
        if not panes:
            return
        cur = panes.index(self.focused) if self.focused in panes else -1
        target = panes[(cur + d) % len(panes)]
        if self.maximized is not None:
            self.minimize()
            target.focus()
            self.maximize(target, container=False)
        else:
            target.focus()

    def action_maximise(self) -> None:
        if self.maximized is not None:
            self.minimize()
        elif isinstance(self.focused, AgentPane):
            self.maximize(self.focused, container=False)

    def action_hijack(self) -> None:
        """Take over the focused pane's CLI session (smithers_tui/hijack.py)."""
        pane = self.focused
        if isinstance(pane, AgentPane):
            self.do_hijack(pane.key)

    @background(group="agents-hijack", exclusive=True)
    async def do_hijack(self, key: PaneKey) -> None:
        from ..hijack import hijack_in_app

        await hijack_in_app(self.app, *key)

    def action_open_step(self) -> None:
        from .run import RunScreen

        pane = self.focused
        if not isinstance(pane, AgentPane):
            return
        _run, node, it = pane.key

        def select(screen: Any) -> None:
            screen.query_one("#tree").select_key((node, it))

        under = self.app.screen_stack[-2] if len(self.app.screen_stack) > 1 else None
        if isinstance(under, RunScreen) and under.run_id == pane.key[0]:
            self.app.pop_screen()
            select(under)
        else:
            self.app.open_run(pane.key[0], focus=(node, it))

    def action_back(self) -> None:
        if self.maximized is not None:
            self.minimize()
            return
        self.app.pop_screen()


