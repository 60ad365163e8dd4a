"""Launcher: pick a built-in or project workflow, fill its input (a form generated from its
input model), choose the demo agent when no model is configured, start it here."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Label, OptionList, Static, Switch
from textual.widgets.option_list import Option

from ..widgets.input_form import InputForm


class WorkflowList(OptionList):
    BINDINGS = [Binding("j", "cursor_down", "Down", show=False, id="launcher.down"),
                Binding("k", "cursor_up", "Up", show=False, id="launcher.up")]


class LauncherScreen(Screen[None]):
    CSS_PATH = "launcher.tcss"
    HELP_TITLE = "New run"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start run", id="launcher.start", priority=True),
        Binding("escape", "back", "Back", id="back"),
        Binding("ctrl+d", "toggle_demo", "Demo agent", id="launcher.demo"),
        Binding("ctrl+b", "start_detached", "Start in background", show=False, id="launcher.detach"),
    ]

    def __init__(self, preselect: str | None = None) -> None:
        super().__init__()
        self.preselect = preselect
        self.found: dict[str, tuple[Any, str]] = {}
        self.names: list[str] = []
        self.chosen: str | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header(icon="◎")
        with Horizontal():
            with Vertical(id="left"):
                yield Label("Workflows", classes="heading")
                yield WorkflowList(id="workflows")
            with Vertical(id="right"):
                yield Static("", id="wf-title")
                yield Static("", id="wf-desc")
                yield Label("Input", classes="heading")
                yield VerticalScroll(id="form-holder")
                with Vertical(id="agent-box"):
                    yield Static("", id="agent-note")
                    with Horizontal(id="demo-row"):
                        yield Switch(value=False, id="demo")
                        yield Label("use the demo agent for every agent step (canned replies, no model is called)")
                with Horizontal(id="actions"):
                    yield Button("Start run  ctrl+s", variant="success", id="start")
                    yield Static("", id="start-status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "new run"
        self.query_one("#workflows").focus()
        self.load()

    @work(group="launcher-load")
    async def load(self) -> None:
        import asyncio

        app: Any = self.app
        try:
            self.found = await asyncio.to_thread(app.workflows)
        except Exception as e:
            self.notify(f"could not list workflows: {e}", severity="error")
            self.found = {}
        if app.host.model_configured is None:
            await asyncio.to_thread(app.host.check_model)
        self.names = sorted(self.found)
        ol = self.query_one(WorkflowList)
        ol.clear_options()
        for name in self.names:
            wf, target = self.found[name]
            where = "built-in" if target.startswith("module:") else "project"
            ol.add_option(Option(Text.assemble((name, "bold"), (f"  {where}", "grey50"), "\n",
                                               (short(wf.description or ""), "grey62")), id=name))
        self.agent_note()
        if self.names:
            pick = self.preselect if self.preselect in self.names else self.names[0]
            ol.highlighted = self.names.index(pick)
            await self.choose(pick)
            if self.preselect in self.names:
                self.query_one(InputForm).focus()
        self.loaded = True

    def agent_note(self) -> None:
        host: Any = self.app.host  # type: ignore[attr-defined]
        demo = self.query_one("#demo", Switch)
        if host.agent_override == "demo":
            text = Text("The app was started with the demo agent: agent steps get canned replies.", style="yellow")
            demo.value = True
        elif host.model_configured:
            text = Text(f"Model configured: {host.model_hint}.", style="green3")
            demo.value = False
        else:
            text = Text.assemble(("No model is configured", "bold yellow"),
                                 (" — agent steps will use the demo agent (canned replies; no model is called). "
                                  "To use a real model, set ANTHROPIC_API_KEY (or OPENAI_API_KEY / GEMINI_API_KEY) or "
                                  "add [agents.default] to .smithers/config.toml.", "yellow"))
            demo.value = True
        self.query_one("#agent-note", Static).update(text)

    async def choose(self, name: str) -> None:
        if name == self.chosen:
            return
        self.chosen = name
        wf, target = self.found[name]
        self.query_one("#wf-title", Static).update(Text(wf.name, style="bold"))
        where = "built-in workflow" if target.startswith("module:") else f"from {self.relative(target.split(':')[1])}"
        self.query_one("#wf-desc", Static).update(Text.assemble((wf.description or "no description", ""),
                                                                (f"\n{where}", "grey50")))
        holder = self.query_one("#form-holder")
        await holder.remove_children()
        await holder.mount(InputForm(wf.input))
        self.query_one("#start-status", Static).update("")

    async def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            await self.choose(event.option.id)

    def relative(self, path: str) -> str:
        from pathlib import Path

        project = self.app.project  # type: ignore[attr-defined]
        p = Path(path)
        return str(p.relative_to(project)) if p.is_relative_to(project) else path

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        form = self.query(InputForm)
        if form:
            inputs = form.first().query("Input, Switch, Select")
            (inputs.first() if inputs else self.query_one("#start")).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()

    def action_toggle_demo(self) -> None:
        sw = self.query_one("#demo", Switch)
        sw.value = not sw.value

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_start(self, detach: bool = False) -> None:
        if self.chosen is None:
            return
        data = self.query_one(InputForm).validated()
        status = self.query_one("#start-status", Static)
        if data is None:
            status.update(Text("fix the fields marked ✖", style="red1"))
            return
        self.start(self.chosen, data, detach)

    def action_start_detached(self) -> None:
        """Queue the run for a background worker (`smithers up`) instead of running it in the app."""
        self.action_start(detach=True)

    @work(exclusive=True, group="launcher-start")
    async def start(self, name: str, data: dict[str, Any], detach: bool = False) -> None:
        app: Any = self.app
        wf, target = self.found[name]
        demo = self.query_one("#demo", Switch).value
        self.query_one("#start-status", Static).update(Text("starting…", style="grey58"))
        if detach:
            q = await app.attempt(app.host.queue(wf, target, data, demo=demo))
            run_id = q.run_id if q else None
            if q and not q.workers:
                app.notify(f"run {q.run_id} is queued; no worker is running: `smithers up` starts workers",
                           severity="warning", timeout=8)
        else:
            run_id = await app.attempt(app.host.start(wf, target, data, demo=demo))
        if run_id:
            app.open_run(run_id, replace=True)
        else:
            self.query_one("#start-status", Static).update("")

    def palette_commands(self) -> list[Any]:
        return [("Start run", "start the chosen workflow with this input", self.action_start),
                ("Start in background", "queue the run for a worker (`smithers up`)", self.action_start_detached),
                ("Toggle demo agent", "canned replies instead of a model", self.action_toggle_demo)]


def short(text: str, n: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
