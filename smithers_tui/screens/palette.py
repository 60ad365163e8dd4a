"""The command palette (ctrl+p or `:`): what fits the current screen first, then jumps that work
anywhere — launch a workflow, open a run, decide a waiting gate, the inbox."""
from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from ..widgets.fmt import key_label

Command = tuple[str, str, Callable[[], Any]]  # title, help, callback


class SmithersCommands(Provider):
    async def startup(self) -> None:
        self.commands: list[Command] = []
        screen = self.screen
        app: Any = self.app
        if hasattr(screen, "palette_commands"):
            self.commands += list(screen.palette_commands())
        self.commands += await global_commands(app)

    async def discover(self) -> Hits:
        for title, help, cb in self.commands:
            yield DiscoveryHit(title, cb, help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help, cb in self.commands:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), cb, help=help)


async def global_commands(app: Any) -> list[Command]:
    host = app.host
    out: list[Command] = [
        ("New run", "pick a workflow and start it", app.action_new_run),
        ("Approvals inbox", "every gate waiting for a decision, across runs", app.action_inbox),
        ("Keys", "every key of this screen", app.action_help),
    ]
    if host.reader is None:
        return out
    for g in await host.reader.approvals(open_only=True):
        gate = key_label(g.node_id, g.iteration)
        for verb, ok in (("Approve", True), ("Deny", False)):
            out.append((f"{verb} {gate} of run {g.run_id}", g.message,
                        partial(app.decide_from_palette, g.run_id, g.node_id, g.iteration, ok)))
    for r in await host.reader.list_runs(limit=40):
        out.append((f"Open run {r.id} ({r.workflow}, {r.status})", "jump to the run", partial(app.open_run, r.id)))
    for name, desc in (await asyncio.to_thread(app.workflow_names)):
        out.append((f"Launch {name}", desc or "start this workflow", partial(app.action_new_run, name)))
    return out
