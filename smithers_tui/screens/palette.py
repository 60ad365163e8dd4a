"""The command palette (ctrl+p or `:`): what fits the current screen first (with its key), then
jumps that work anywhere — launch a workflow, open a run, decide a waiting gate, the inbox."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content

from ..widgets.fmt import key_label

<<<<<<< HEAD
Command = tuple[str, str, Callable[[], Any]]  # title, help, callback
=======
if TYPE_CHECKING:
    from ..app import SmithersApp

# title, help, callback, and the key that does the same on this screen ("" when none)
Command = tuple[str, str, Callable[[], Any], str]


def with_key(title: Content | str, key: str) -> Content:
    """The command's title, and the key that does the same on this screen, dimmed."""
    t = Content(title) if isinstance(title, str) else title
    return Content.assemble(t, (f"   {key}", "dim")) if key else t
>>>>>>> app


class SmithersCommands(Provider):
    async def startup(self) -> None:
        from ..app import SmithersApp

        self.commands: list[Command] = []
        screen = self.screen
        app = self.app
        assert isinstance(app, SmithersApp)
        if hasattr(screen, "palette_commands"):
            self.commands += [(*c, "")[:4] for c in screen.palette_commands()]
        self.commands += await global_commands(app)

    async def discover(self) -> Hits:
        for title, help, cb, key in self.commands:
            yield DiscoveryHit(with_key(title, key), cb, text=title, help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help, cb, key in self.commands:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, with_key(matcher.highlight(title), key), cb, text=title, help=help)


async def global_commands(app: SmithersApp) -> list[Command]:
    host = app.host
    out: list[Command] = [
        ("New run", "pick a workflow and start it", app.action_new_run, ""),
        ("Approvals inbox", "every gate waiting for a decision, across runs", app.action_inbox, ""),
        ("Keys", "every key of this screen", app.action_help, "?"),
    ]
    if not host.ready.is_set():
        return out
    for g in await host.reader.approvals(open_only=True):
        gate = key_label(g.node_id, g.iteration)
        for verb, ok in (("Approve", True), ("Deny", False)):
            out.append((f"{verb} {gate} of run {g.run_id}", g.message,
                        partial(decide, app, g.run_id, g.node_id, g.iteration, ok), ""))
    for r in await host.view.runs(limit=40):
        out.append((f"Open run {r.run_id} ({r.workflow}, {r.status})", "jump to the run",
                    partial(app.open_run, r.run_id), ""))
    for name, (wf, _target) in sorted((await app.workflows()).items()):
        out.append((f"Launch {name}", wf.description or "start this workflow", partial(app.action_new_run, name), ""))
    return out


def decide(app: SmithersApp, run_id: str, node: str, iteration: int, approved: bool) -> None:
    async def go() -> None:
        app.notify(await app.host.decide(run_id, node, iteration, approved))

    app.run_worker(go(), group="palette-decide", exit_on_error=False)
