"""Board: the tickets of a `kanban` run as cards in five columns, moving live.

Columns come from each ticket's nodes (ids in workflows/kanban.py): nothing started -> To do;
implement or check running -> In progress; a reviewer running, or the round's check passed with
reviews pending -> Review; `ticket-<slug>-result` done with status done -> Done; status
out_of_rounds / failed (or a failed lane) -> Failed. `enter` opens the run on that ticket's step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, Static


from ..widgets.fmt import ACTIVE_RUN, RUN_STYLE

Key = tuple[str, int]
COLUMNS = ["To do", "In progress", "Review", "Done", "Failed"]
from workflows.implement import DEFAULT_REVIEWERS  # noqa: E402  (the kanban's own default, not a copy)


@dataclass
class Card:
    slug: str
    title: str
    column: str = "To do"
    round: int = 0
    max_rounds: int = 3
    check: bool | None = None  # the latest finished check: passed?
    branch: str = ""
    merged: bool = False
    note: str = ""
    focus: Key | None = None  # the step `enter` opens
    nodes: list[Key] = field(default_factory=list)


def cards_of(rep: dict[str, Any]) -> list[Card]:
    """One card per ticket of a kanban run's report (engine.report.run_report)."""
    nodes = {(n["id"], n["iteration"]): n for n in rep["nodes"]}
    board = (nodes.get(("tickets", 0)) or {}).get("output") or {}
    inp = rep.get("input") or {}
    lenses = list(inp.get("reviewers") or DEFAULT_REVIEWERS)
    max_rounds = int(inp.get("max_rounds") or 3)
    summary = {r["slug"]: r for r in ((nodes.get(("summary", 0)) or {}).get("output") or {}).get("tickets", [])}
    merges = {m["slug"]: m for m in ((nodes.get(("merge", 0)) or {}).get("output") or {}).get("merges", [])}
    cards = []
    for tk in board.get("tickets", []):
        slug = tk["slug"]
        p = f"ticket-{slug}"
        c = Card(slug=slug, title=tk.get("title") or slug, max_rounds=max_rounds, branch=f"ticket/{slug}")
        per = {name: sorted((k[1], n) for k, n in nodes.items() if k[0] == f"{p}-{name}")
               for name in ["implement", "check", "result", "start", *[f"review-{x}" for x in lenses]]}
        lane = nodes.get((p, 0))
        mine = [k for k in nodes if k[0] == p or k[0] in {f"{p}-{name}" for name in per}]
        c.nodes = sorted(mine, key=lambda k: (k[1], k[0]))
        its = sorted({it for name in ("implement", "check") for it, _ in per[name]})
        c.round = len(its)
        latest = its[-1] if its else None
        checks = [n for _, n in per["check"] if n["state"] == "done" and n.get("output")]
        if checks:
            c.check = bool(checks[-1]["output"].get("passed"))
        res = per["result"][-1][1] if per["result"] else None
        out = (res or {}).get("output") or {}
        if out:
            c.max_rounds = out.get("max_rounds") or c.max_rounds
            c.round = out.get("rounds", c.round)
            c.branch = out.get("branch") or c.branch
        row, merge = summary.get(slug), merges.get(slug)
        c.merged = bool((row or {}).get("merged") or (merge or {}).get("merged"))
        running = {name for name, lst in per.items() if lst and lst[-1][1]["state"] == "running"}
        reviews = [n for name in per if name.startswith("review-") for it, n in per[name] if it == latest]
        chk_now = next((n for it, n in per["check"] if it == latest), None)
        if res is not None and res["state"] == "done" and out:
            c.column = "Done" if out.get("status") == "done" else "Failed"
            c.note = "" if out.get("status") == "done" else out.get("status", "").replace("_", " ")
        elif row is not None and row.get("status") != "not_run":
            c.column = "Done" if row["status"] == "done" else "Failed"
            c.note = "" if row["status"] == "done" else row["status"].replace("_", " ")
        elif (res is not None and res["state"] == "failed") or (lane is not None and lane["state"] == "failed"):
            c.column, c.note = "Failed", "failed"
        elif row is not None:
            c.column, c.note = "Failed", "did not run"
        elif any(r.startswith("review-") for r in running) or (
                chk_now is not None and chk_now["state"] == "done" and (chk_now.get("output") or {}).get("passed")
                and bool(lenses) and (not reviews or any(n["state"] not in ("done", "failed", "skipped")
                                                         for n in reviews))):
            c.column = "Review"
        elif lane is not None or mine:
            c.column = "In progress"
        if c.column == "Done" and not c.merged and (merge is not None or row is not None):
            c.note = "not merged"
        focus = [k for k in c.nodes if nodes[k]["state"] == "running"] or \
                [k for k in c.nodes if k[0] != p and nodes[k]["kind"] == "task"]
        c.focus = focus[-1] if focus else (f"{p}-implement", 0)
        if res is not None and res["state"] == "done":
            c.focus = (f"{p}-result", per["result"][-1][0])
        cards.append(c)
    return cards


def card_text(c: Card, selected: bool) -> Panel:
    check = (Text("– no check yet", "grey50") if c.check is None else
             Text("✔ check passed", "green3") if c.check else Text("✖ check failed", "red1"))
    lines = [Text(c.title, "bold"), Text(c.slug, "grey58"), Text(f"round {c.round} of {c.max_rounds}"), check,
             Text("⎇ " + c.branch, "grey70")]
    if c.merged:
        lines.append(Text("merged", "magenta"))
    if c.note:
        lines.append(Text(c.note, "yellow" if c.column == "Done" else "red1"))
    return Panel(Group(*lines), border_style="bold yellow" if selected else "grey42", padding=(0, 1), expand=True)


class Column(VerticalScroll, can_focus=False):
    pass


class BoardScreen(Screen[None]):
    CSS_PATH = "board.tcss"
    HELP_TITLE = "Board"
    BINDINGS = [
        Binding("escape", "back", "Back", id="board.back"),
        Binding("enter", "open", "Open steps", id="board.open"),
        Binding("left,h", "column(-1)", "Column left", show=False, id="board.left"),
        Binding("right,l", "column(1)", "Column right", show=False, id="board.right"),
        Binding("up,k", "card(-1)", "Card up", show=False, id="board.up"),
        Binding("down,j", "card(1)", "Card down", show=False, id="board.down"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.report: dict[str, Any] | None = None
        self.cards: list[Card] = []
        self.col = 0
        self.row = 0
        self.selected: str | None = None  # slug
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header(icon="◎")
        yield Static("", id="board-head")
        with Horizontal(id="columns"):
            for i, name in enumerate(COLUMNS):
                with Column(id=f"col-{i}", classes="column"):
                    yield Label(name, classes="column-title", id=f"title-{i}")
                    yield Static("", classes="cards", id=f"cards-{i}")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"board of run {self.run_id}"
        self.reload()
        self.set_interval(1.0, self.tick)

    @property
    def host(self) -> Any:
        return self.app.host  # type: ignore[attr-defined]

    def tick(self) -> None:
        if self.report and self.report["status"] in ACTIVE_RUN:
            self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    def on_store_changed(self, msg: Any) -> None:
        if not msg.events or self.run_id in msg.run_ids:
            self.reload()

    @work(exclusive=True, group="board-load")
    async def reload(self) -> None:
        await self.host.ready.wait()
        rep = await self.app.attempt(self.host.report(self.run_id))  # type: ignore[attr-defined]
        if rep is None:
            return
        self.report = rep
        self.cards = cards_of(rep)
        self.show()
        self.loaded = True

    # --- showing -------------------------------------------------------------------------------
    def column_cards(self, i: int) -> list[Card]:
        return [c for c in self.cards if c.column == COLUMNS[i]]

    def where(self, slug: str) -> tuple[int, int] | None:
        for i in range(len(COLUMNS)):
            for j, c in enumerate(self.column_cards(i)):
                if c.slug == slug:
                    return i, j
        return None

    def show(self) -> None:
        try:
            self._show()
        except NoMatches:  # closing
            pass

    def _show(self) -> None:
        rep = self.report
        assert rep is not None
        pos = self.where(self.selected) if self.selected else None  # the selected card follows its ticket
        if pos is not None:
            self.col, self.row = pos
        elif self.cards:
            if not self.column_cards(self.col):
                self.col = next(i for i in range(len(COLUMNS)) if self.column_cards(i))
            self.row = min(self.row, len(self.column_cards(self.col)) - 1)
        sel = self.current()
        self.selected = sel.slug if sel else None
        for i, name in enumerate(COLUMNS):
            cards = self.column_cards(i)
            self.query_one(f"#title-{i}", Label).update(f"{name} ({len(cards)})")
            body = self.query_one(f"#cards-{i}", Static)
            body.update(Group(*[card_text(c, c is sel) for c in cards]) if cards else Text("—", "grey42"))
            self.query_one(f"#col-{i}").set_class(i == self.col, "current")
        g, colour = RUN_STYLE.get(rep["status"], ("?", "white"))
        head = Text.assemble((f" {g} {rep['status']} ", f"bold {colour}"), ("kanban", "bold"), (" · run ", "grey58"),
                             (rep["run_id"], "bold"), ("  ·  ", "grey58"),
                             "  ".join(f"{name.lower()} {len(self.column_cards(i))}" for i, name in enumerate(COLUMNS)))
        if not self.cards:
            head.append("  ·  " + ("reading the tickets…" if rep["status"] in ACTIVE_RUN else "no tickets"), "grey58")
        self.query_one("#board-head", Static).update(head)
        if sel is not None:
            self.query_one(f"#col-{self.col}", Column).scroll_to(y=max(0, self.row * 6 - 2), animate=False)

    def current(self) -> Card | None:
        cards = self.column_cards(self.col)
        return cards[self.row] if 0 <= self.row < len(cards) else None

    # --- keys ----------------------------------------------------------------------------------
    def action_column(self, d: int) -> None:
        i = self.col + d
        while 0 <= i < len(COLUMNS) and not self.column_cards(i):
            i += d
        if not 0 <= i < len(COLUMNS):
            return
        self.col, self.row = i, min(self.row, len(self.column_cards(i)) - 1)
        cur = self.current()
        self.selected = cur.slug if cur else None
        self.show()

    def action_card(self, d: int) -> None:
        cards = self.column_cards(self.col)
        if not cards:
            return
        self.row = max(0, min(len(cards) - 1, self.row + d))
        self.selected = cards[self.row].slug
        self.show()

    def action_open(self) -> None:
        from .run import RunScreen

        card = self.current()
        if card is None:
            self.notify("no ticket selected")
            return
        self.app.push_screen(RunScreen(self.run_id, focus=card.focus))

    def action_back(self) -> None:
        self.app.pop_screen()
