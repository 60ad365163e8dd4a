"""Lineage: the tree of forks, rewinds and replays around a run. enter opens the run."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, Static, Tree

from ..base import AppModal, background
from ..widgets.fmt import RUN_STYLE

if TYPE_CHECKING:
    from engine.runtime import Lineage


class LineageScreen(AppModal[None]):
    CSS_PATH = "lineage.tcss"
    HELP_TITLE = "Lineage"
    BINDINGS = [Binding("escape", "close", "Close", id="lineage.close"),
                Binding("j", "down", "Down", show=False, id="lineage.down"),
                Binding("k", "up", "Up", show=False, id="lineage.up")]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("⑂ Lineage — enter opens a run", id="title")
            yield Tree("runs", id="lineage")
            yield Static("fork: a new run from a frame · rewind: takes over, the original kept as rewound · "
                         "replay: re-executes after a frame", id="hint", markup=False)

    def on_mount(self) -> None:
        t = self.query_one(Tree)
        t.show_root = False
        t.focus()
        self.load()

    @background(group="lineage-load", exclusive=True)
    async def load(self) -> None:
        tree_data = await self.app.host.view.lineage(self.run_id)
        t = self.query_one(Tree)

        def add(parent: Any, node: Lineage) -> None:
            g, c = RUN_STYLE.get(node.status, ("?", "white"))
            label = Text.assemble((g + " ", c), (node.run_id, "bold underline" if node.run_id == self.run_id
                                                 else "bold"),
                                  (f"  {node.kind}" + (f" at frame {node.parent_frame}"
                                                      if node.parent_frame is not None else ""), "magenta"),
                                  (f"  {node.status}, {node.frames} frames", "grey58"))
            me = parent.add(label, data=node.run_id, expand=True)
            for kid in node.children:
                add(me, kid)
            if node.run_id == self.run_id:
                self.call_after_refresh(t.move_cursor, me)

        add(t.root, tree_data)
        t.root.expand()

    def on_tree_node_selected(self, event: Tree.NodeSelected[Any]) -> None:
        rid = event.node.data
        if rid:
            self.dismiss(None)
            if rid != self.run_id:
                self.app.open_run(rid)

    def action_down(self) -> None:
        self.query_one(Tree).action_cursor_down()

    def action_up(self) -> None:
        self.query_one(Tree).action_cursor_up()

    def action_close(self) -> None:
        self.dismiss(None)
