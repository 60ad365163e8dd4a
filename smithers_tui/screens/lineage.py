"""Lineage: the tree of forks, rewinds and replays around a run. enter opens the run."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from .modal import Modal
from textual.widgets import Label, Static, Tree


from ..widgets.fmt import RUN_STYLE


class LineageScreen(Modal[None]):
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

    @work
    async def load(self) -> None:
        app: Any = self.app
        found = await app.attempt(app.host.view.lineage(self.run_id))
        if found is None:
            return
        tree_data = found.model_dump()
        t = self.query_one(Tree)

        def add(parent: Any, node: dict[str, Any]) -> None:
            g, c = RUN_STYLE.get(node["status"], ("?", "white"))
            label = Text.assemble((g + " ", c), (node["run_id"], "bold underline" if node["run_id"] == self.run_id
                                                 else "bold"),
                                  (f"  {node['kind']}" + (f" at frame {node['parent_frame']}"
                                                         if node["parent_frame"] is not None else ""), "magenta"),
                                  (f"  {node['status']}, {node['frames']} frames", "grey58"))
            me = parent.add(label, data=node["run_id"], expand=True)
            for kid in node["children"]:
                add(me, kid)
            if node["run_id"] == self.run_id:
                self.call_after_refresh(t.move_cursor, me)

        add(t.root, tree_data)
        t.root.expand()

    def on_tree_node_selected(self, event: Tree.NodeSelected[Any]) -> None:
        rid = event.node.data
        if rid:
            self.dismiss(None)
            if rid != self.run_id:
                self.app.open_run(rid)  # type: ignore[attr-defined]

    def action_down(self) -> None:
        self.query_one(Tree).action_cursor_down()

    def action_up(self) -> None:
        self.query_one(Tree).action_cursor_up()

    def action_close(self) -> None:
        self.dismiss(None)
