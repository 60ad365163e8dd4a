"""New run: pick a built-in or project workflow (`.smithers/workflows/*.py`, re-read when a file
changes; a file that does not load is listed with its error), fill its input (a form generated
from its input model), and start it here — after checking what would make it fail at once (not a
git repository, no tickets, no model for agent steps), said with what to do.

Nothing typed here is a command: letters go to the form (`q` never quits here; ctrl+q does).
`tab` goes from the list to the first field of the form, never to a container."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Checkbox, Header, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..base import AppScreen, background
from ..catalog import Entry, Listing
from ..widgets.filter import FilterBar
from ..widgets.footer import Footer
from ..widgets.input_form import InputForm


class WorkflowList(OptionList):
    """The workflows (its keys are acted on by the screen as they arrive: `take_key`)."""

    BINDINGS = [Binding("j", "cursor_down", "Down", show=False, id="launcher.down"),
                Binding("k", "cursor_up", "Up", show=False, id="launcher.up"),
                Binding("slash", "screen.filter", "Filter", show=False, id="launcher.filter"),
                Binding("tab", "screen.focus_form", "To the form", show=False, id="launcher.to_form")]


class FormHolder(VerticalScroll, can_focus=False):
    """Scrolls the form; never takes the focus itself (tab goes to the first field)."""


class LauncherScreen(AppScreen[None]):
    AUTO_FOCUS = "#workflows"  # focused once the screen is up (never queried before its children exist)
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
        self.listing: Listing | None = None
        self.shown: list[Entry] = []
        self.chosen: str | None = None
        self.problems: list[str] = []
        self.loaded = False
        self.form_for: str | None = None  # the workflow whose form is shown
        self.checked_for: str | None = None  # the workflow whose launch checks are done
        self.focus_form_when_ready = False  # tab came before the form was there
        self.typed_ahead: list[events.Key] = []  # letters typed after that tab: the first field gets them
        self.early_keys: list[events.Key] = []  # keys that came before the list was there
        self.choosing = asyncio.Lock()  # one form built at a time

    @property
    def found(self) -> dict[str, tuple[Any, str]]:
        return self.listing.usable() if self.listing else {}

    def compose(self) -> ComposeResult:
        yield Header(icon="◎")
        with Horizontal():
            with Vertical(id="left"):
                yield Label("Workflows", classes="heading")
                yield FilterBar("filter workflows…", id="filter")
                yield WorkflowList(id="workflows")
                yield Static("", id="where")
            with Vertical(id="right"):
                yield Static("", id="wf-title")
                yield Static("", id="wf-desc")
                yield Label("Input", classes="heading")
                yield FormHolder(id="form-holder")
                yield Static("", id="checks")
                with Vertical(id="agent-box"):
                    yield Static("", id="agent-note")
                    yield Checkbox("use the demo agent for every agent step (canned replies; no model is called)  "
                                   "ctrl+d", value=False, id="demo", compact=True)
                with Horizontal(id="actions"):
                    yield Button("Start run  ctrl+s", variant="success", id="start", compact=True)
                    yield Static("", id="start-status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "new run"
        self.query_one("#agent-box").display = False
        rel = self.relative(str(self.app.project / ".smithers" / "workflows"))
        self.query_one("#where", Static).update(Text(f"project workflows: {rel}/*.py", style="grey50"))
        catalog = self.app.catalog
        if catalog.listing is not None and not catalog.stale():  # read at start-up: the list is there at once
            self.listing = catalog.listing
            self.show_list()
        self.load()
        self.set_interval(1.0, self.watch_files)

    def watch_files(self) -> None:
        if self.loaded and self.app.catalog.stale():
            self.load()

    @background(group="launcher-load", exclusive=True)
    async def load(self) -> None:
        host = self.app.host
        first = not self.loaded
        self.listing = await asyncio.to_thread(self.app.catalog.load)
        if host.model_configured is None:
            await asyncio.to_thread(host.check_model)
        self.show_list()
        self.agent_note()
        names = [e.name for e in self.shown if e.wf is not None]
        ol = self.query_one(WorkflowList)
        moved = ol.highlighted_option.id if ol.highlighted_option is not None else None
        if first and names:
            pick = self.preselect if self.preselect in names else moved if moved in names else names[0]
            await self.choose(pick)
            if self.preselect in names:
                self.focus_form()
        elif self.chosen is not None and self.listing.get(self.chosen) is not None:
            entry = self.listing.get(self.chosen)
            if entry is not None and entry.wf is not None and not entry.builtin:
                self.chosen = None  # re-read from its changed file: build the form again
                await self.choose(entry.name)
        self.loaded = True

    def show_list(self) -> None:
        assert self.listing is not None
        words = self.query_one(FilterBar).value.lower().split()
        self.shown = [e for e in self.listing.entries
                      if all(w in f"{e.name} {e.wf.description if e.wf else e.error}".lower() for w in words)]
        ol = self.query_one(WorkflowList)
        highlighted = ol.highlighted_option.id if ol.highlighted_option else self.chosen
        ol.clear_options()
        for e in self.shown:
            if e.wf is None:
                label = Text.assemble((e.name, "bold red1"), ("  project · does not load", "red1"), "\n",
                                      (short(self.relative_text(e.error or ""), 70), "grey62"))
            else:
                where = "built-in" if e.builtin else "project"
                label = Text.assemble((e.name, "bold"), (f"  {where}", "grey50"), "\n",
                                      (short(e.wf.description or "", 70), "grey62"))
            ol.add_option(Option(label, id=e.name))
        ids = [e.name for e in self.shown]
        if highlighted in ids:
            ol.highlighted = ids.index(highlighted)
        elif ids:  # the first one (or the one asked for) is highlighted at once, so ↓ moves to the second
            ol.highlighted = ids.index(self.preselect) if self.preselect in ids else 0
        if self.early_keys:
            self.call_later(self.keys_waiting)

    def agent_note(self) -> None:
        host = self.app.host
        demo = self.query_one("#demo", Checkbox)
        if host.agent_override == "demo":
            text = Text("The app was started with the demo agent: agent steps get canned replies.", style="yellow")
            demo.value = True
        elif host.model_configured:
            text = Text(f"Model configured: {host.model_hint}.", style="green3")
            demo.value = False
        else:
            text = Text.assemble(("No model is configured", "bold yellow"),
                                 (": agent steps get the demo agent's canned replies. For a real model set "
                                  "ANTHROPIC_API_KEY (or OPENAI_/GEMINI_API_KEY) or [agents.default] in "
                                  ".smithers/config.toml.", "yellow"))
            demo.value = True
        self.query_one("#agent-note", Static).update(text)

    async def choose(self, name: str) -> None:
        """Show the form of `name`: one build at a time, ending on the workflow the list highlights
        by then (arrow keys and a reload's pick may ask for others meanwhile)."""
        async with self.choosing:
            while self.listing is not None:
                ol = self.query_one(WorkflowList)
                now = ol.highlighted_option.id if ol.highlighted_option is not None else None
                target = now if now and self.listing.get(now) is not None else name
                if target == self.chosen == self.form_for:
                    break
                if not await self.show_form(target):
                    return
            if self.focus_form_when_ready:
                self.focus_form()
            self.check()

    async def show_form(self, name: str) -> bool:
        assert self.listing is not None
        entry = self.listing.get(name)
        if entry is None:
            return False
        self.chosen = name
        self.problems, self.checked_for, self.form_for = [], None, None
        self.query_one("#checks", Static).update("")
        self.query_one("#start-status", Static).update("")
        holder = self.query_one(FormHolder)
        await holder.remove_children()
        if entry.wf is None:
            self.query_one("#wf-title", Static).update(Text(f"{name}: does not load", style="bold red1"))
            self.query_one("#wf-desc", Static).update(Text.assemble(
                (self.relative_text(entry.error or ""), "red1"), (f"\n{self.relative(str(entry.path))} — fix it and save: the list "
                                               "updates by itself", "grey50")))
            self.query_one("#agent-box").display = False
            self.form_for = name
            return True
        wf = entry.wf
        self.query_one("#wf-title", Static).update(Text(wf.name, style="bold"))
        where = "built-in workflow" if entry.builtin else f"from {self.relative(str(entry.path))}"
        self.query_one("#wf-desc", Static).update(Text.assemble((wf.description or "no description", ""),
                                                                (f"\n{where}", "grey50")))
        await holder.mount(InputForm(wf.input))
        self.form_for = name
        return True

    def focus_form(self) -> None:
        """The first field of the form (the Start button when the workflow takes no input), with the
        letters typed since `tab`; once the form of the workflow highlighted now is there."""
        ol = self.query_one(WorkflowList)
        wanted = ol.highlighted_option.id if ol.highlighted_option is not None else self.chosen
        if self.form_for is None or self.form_for != self.chosen or (wanted and wanted != self.chosen):
            self.focus_form_when_ready = True  # the form is being built: focus it once it is there
            return
        self.focus_form_when_ready = False
        fields = self.query(InputForm).first().query("Input, Checkbox, Select") if self.query(InputForm) else None
        target = fields.first() if fields else self.query_one("#start")
        typed, self.typed_ahead = self.typed_ahead, []
        if typed and isinstance(target, Input):  # what was typed replaces the default, as typing into it would
            target.select_on_focus = False
            target.value = "".join(k.character or "" for k in typed)
            target.cursor_position = len(target.value)
        self.set_focus(target)

    # --- keys as they arrive ----------------------------------------------------------------------
    async def take_key(self, key: events.Key) -> bool:
        """Called by the app for each key as it arrives, before Textual routes it. A terminal
        delivers `n ↓ ↓ tab` and a sentence in one read; routed the usual way, the arrows reach the
        list only after it has options, `tab` is judged against a form that is about to change, and
        the letters land on the list. Here they are acted on in the order typed: keys that come
        before the list is there wait for it; the list's keys act at once; letters after `tab` are
        kept for the first field of the form the arrows chose. True when the key was taken."""
        if self.listing is None or not self.query(WorkflowList):  # the list is not there yet
            if key.is_printable or key.key in self.list_keys():  # (escape, ctrl+q... act at once)
                self.early_keys.append(key)
                return True
            return False
        if self.early_keys:  # behind the keys that came before the list, in order
            self.early_keys.append(key)
            return True
        return await self.act_on_key(key)

    @staticmethod
    def list_keys() -> set[str]:
        """The keys the list acts on (arrows, tab, enter, j/k...)."""
        merged = WorkflowList._merged_bindings
        return set(merged.key_to_bindings) if merged is not None else set()

    async def act_on_key(self, key: events.Key) -> bool:
        ol = self.query_one(WorkflowList)
        if self.focus_form_when_ready:
            if key.is_printable:
                self.typed_ahead.append(key)
                return True
            return False
        if self.focused not in (None, ol):
            return False
        bindings = ol._bindings.key_to_bindings.get(key.key)
        if not bindings:
            return False
        if self.focused is None:
            self.set_focus(ol)
        await ol.run_action(bindings[0].action)
        return True

    async def keys_waiting(self) -> None:
        """The list is there: the keys that came before it act now, in order."""
        while self.early_keys:
            key = self.early_keys.pop(0)
            if not await self.act_on_key(key) and not key.is_printable:
                self.app.post_message(events.Key(key.key, key.character))  # escape, ctrl+s...: as usual

    def action_focus_form(self) -> None:
        self.focus_form()

    async def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            await self.choose(event.option.id)

    def relative_text(self, text: str) -> str:
        """Paths under the project said relative to it (a message fits where it is shown)."""
        return text.replace(f"{self.app.project}/", "")

    def relative(self, path: str) -> str:
        project = self.app.project
        p = Path(path)
        return str(p.relative_to(project)) if p.is_relative_to(project) else path

    def on_option_list_option_selected(self, _event: OptionList.OptionSelected) -> None:
        self.focus_form()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()

    # --- checks --------------------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        if isinstance(event.input, FilterBar):
            self.show_list()
        else:
            self.check()

    def on_filter_bar_done(self, _event: FilterBar.Done) -> None:
        self.query_one(WorkflowList).focus()

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "demo":
            self.check()

    def form_data(self) -> dict[str, Any] | None:
        forms = self.query(InputForm)
        return forms.first().validated(quiet=True) if forms else None

    def check(self) -> None:
        if self.chosen is not None and self.chosen in self.found:
            self.run_checks(self.chosen, self.form_data(), self.query_one("#demo", Checkbox).value)

    @background(group="launcher-check", exclusive=True)
    async def run_checks(self, name: str, data: dict[str, Any] | None, demo: bool) -> None:
        from ..launch import needs, problems

        wf, _target = self.found[name]
        host = self.app.host
        need = await asyncio.to_thread(needs, wf, data, self.app.project)
        found = await asyncio.to_thread(problems, wf, data, self.app.project, demo=demo,
                                        model_configured=host.model_configured)
        if name != self.chosen:
            return
        self.query_one("#agent-box").display = need.agents
        self.problems = found
        self.checked_for = name
        self.query_one("#checks", Static).update(
            Text("\n").join(Text.assemble(("✖ ", "bold red1"), (p, "red1")) for p in found) if found else "")

    # --- starting ------------------------------------------------------------------------------
    def action_toggle_demo(self) -> None:
        sw = self.query_one("#demo", Checkbox)
        sw.value = not sw.value

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_start(self, detach: bool = False) -> None:
        if self.chosen is None or self.chosen not in self.found:
            self.notify("pick a workflow that loads first")
            return
        forms = self.query(InputForm)
        data = forms.first().validated() if forms else None
        status = self.query_one("#start-status", Static)
        if data is None:
            status.update(Text("fix the fields marked ✖", style="red1"))
            return
        self.start(self.chosen, data, self.query_one("#demo", Checkbox).value, detach)

    def action_start_detached(self) -> None:
        """Queue the run for a background worker (`smithers up`) instead of running it in the app."""
        self.action_start(detach=True)

    @background(group="launcher-start", exclusive=True)
    async def start(self, name: str, data: dict[str, Any], demo: bool, detach: bool = False) -> None:
        from ..launch import problems

        wf, target = self.found[name]
        status = self.query_one("#start-status", Static)
        status.update(Text("checking…", style="grey58"))
        found = await asyncio.to_thread(problems, wf, data, self.app.project, demo=demo,
                                        model_configured=self.app.host.model_configured)
        if found:
            self.problems = found
            self.query_one("#checks", Static).update(
                Text("\n").join(Text.assemble(("✖ ", "bold red1"), (p, "red1")) for p in found))
            status.update(Text("not started: fix what is marked ✖ above", style="red1"))
            return
        status.update(Text("queueing…" if detach else "starting…", style="grey58"))
        try:
            if detach:
                q = await self.app.host.queue(wf, target, data, demo=demo)
                run_id = q.run_id
                if not q.workers:
                    self.notify(f"run {q.run_id} is queued; no worker is running: `smithers up` starts workers",
                                severity="warning", timeout=8)
            else:
                run_id = await self.app.host.start(wf, target, data, demo=demo)
        except BaseException:
            status.update("")
            raise
        self.app.open_run(run_id, replace=True)

    def palette_commands(self) -> list[Any]:
        return [("Start run", "start the chosen workflow with this input", self.action_start, "ctrl+s"),
                ("Start in background", "queue the run for a worker (`smithers up`)", self.action_start_detached,
                 "ctrl+b"),
                ("Toggle demo agent", "canned replies instead of a model", self.action_toggle_demo, "ctrl+d"),
                ("Filter workflows", "", self.action_filter, "/")]


def short(text: str, n: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
