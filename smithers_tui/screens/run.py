"""Run: the live step tree, an inspector for the selected step, and the timeline of every frame.

The screen holds the run as a `RunModel` built from its frames: it reads only the frames that
are new (a few times a second at most, however fast the run commits), and scrubbing moves the
model one frame's changes at a time, with no database read. Scrubbed back, the screen shows the
run as of that frame (marked as the past: steps, durations, attempts and gate decisions of that
moment only); from the shown frame `f` forks, `r` rewinds, `R` replays. A gate that waits opens
the approval prompt.
"""
from __future__ import annotations

import asyncio
import gc
import time
from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.timer import Timer
from textual.widgets import Header, Input, Static

from engine.budget import RUN_SCOPE
from engine.errors import SmithersError
from engine.state import Key

from ..app import StoreChanged
from ..base import LETTER_KEYS, AppScreen, background
from ..runmodel import Mark, Rec, RunModel
from ..widgets.filter import FilterBar
from ..widgets.fmt import ACTIVE_RUN, RUN_STYLE, cost, key_label, tokens
from ..widgets.footer import Footer
from ..widgets.inspector import Inspector, StepView
from ..widgets.step_tree import Extras, Layout, Row, Skel, StepTree
from ..widgets.timeline import FrameTimeline

if TYPE_CHECKING:
    from engine.records import ApprovalRecord, AttemptRecord, RunRecord

    from ..host import Forked

REFRESH_S = 0.5  # at most two reads of new frames a second however fast the run commits (a lone frame: at once)
REFRESH_MAX_S = 2.0  # and at least one every 2 s, however costly a refresh is
ATTEMPTS_S = 2.0  # the attempts (agents, usage) are read again at most every 2 s
INSPECT_S = 1.0  # the selected step, while it keeps changing, is read again at most once a second
SCRUB_REST_S = 0.12  # the tree shows the frame scrubbed to once the keys rest this long...
SCRUB_SHOW_S = 2.0  # ...and at least this often while a key is held (each costs a repaint of the tree)
KEYS_REST_S = 0.15  # a refresh waits until the keys moving the cursor rest this long...
KEYS_FIRST_S = 1.0  # ...but no longer than this
CURSOR_REST_S = 0.12  # the inspector reads the step under the cursor once the cursor rests this long


def spent(budgets: dict[str, dict[str, Any]], usage: dict[Key, dict[str, float]]) -> list[dict[str, Any]]:
    """Each budget of the run (its meta) with what its steps spent so far (usage per step)."""
    out = []
    for scope, b in budgets.items():
        ids = set(b.get("nodes") or ())
        mine = [u for k, u in usage.items() if scope == RUN_SCOPE or k[0] in ids]
        out.append({**b, "scope": scope, "spent_tokens": int(sum(u["tokens_in"] + u["tokens_out"] for u in mine)),
                    "spent_usd": sum(u["cost_usd"] for u in mine)})
    return out


def budget_line(budgets: list[dict[str, Any]]) -> str:
    """Spend against each budget, for the run's head: `budget 72/200 tokens · review $0.41/$1.00`."""
    parts = []
    for b in budgets:
        name = "budget" if b["scope"] == RUN_SCOPE else b["scope"]
        bits = []
        if b.get("tokens") is not None:
            bits.append(f"{tokens(b['spent_tokens'])}/{tokens(b['tokens'])} tokens")
        if b.get("usd") is not None:
            bits.append(f"{cost(b['spent_usd'])}/{cost(b['usd'])}")
        over = (b.get("tokens") is not None and b["spent_tokens"] >= b["tokens"]) or (
            b.get("usd") is not None and b["spent_usd"] >= b["usd"])
        parts.append(f"{name} {' '.join(bits)}" + (" (spent)" if over else ""))
    return "  ·  ".join(parts)


class RunTree(StepTree):
    BINDINGS = [Binding("j", "cursor_down", "Down", show=False, id="tree.down"),
                Binding("k", "cursor_up", "Up", show=False, id="tree.up")]


class RunScreen(AppScreen[None]):
    AUTO_FOCUS = "#tree"  # focused once the screen is up (never queried before its children exist)
    CSS_PATH = "run.tcss"
    HELP_TITLE = "Run"
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("left_square_bracket", "frame(-1)", "Earlier", id="run.earlier"),
        Binding("right_square_bracket", "frame(1)", "Later", id="run.later"),
        Binding("left_curly_bracket", "frame(-10)", "10 earlier", show=False, id="run.earlier10"),
        Binding("right_curly_bracket", "frame(10)", "10 later", show=False, id="run.later10"),
        Binding("left_parenthesis", "frame(-100)", "100 earlier", show=False, id="run.earlier100"),
        Binding("right_parenthesis", "frame(100)", "100 later", show=False, id="run.later100"),
        Binding("home", "jump('first')", "First frame", show=False, id="run.first", priority=True),
        Binding("end", "jump('last')", "Live", show=False, id="run.live", priority=True),
        Binding("e", "seek('fail', 1)", "Next failure", show=False, id="run.next_failure"),
        Binding("E", "seek('fail', -1)", "Previous failure", show=False, id="run.previous_failure"),
        Binding("v", "seek('gate', 1)", "Next gate", show=False, id="run.next_gate"),
        Binding("V", "seek('gate', -1)", "Previous gate", show=False, id="run.previous_gate"),
        Binding("w", "seek('step', 1)", "Next change of the step", show=False, id="run.next_change"),
        Binding("W", "seek('step', -1)", "Previous change of the step", show=False, id="run.previous_change"),
        Binding("m", "axis", "Time/frames axis", show=False, id="run.axis"),
        Binding("f", "fork", "Fork", id="run.fork"),
        Binding("r", "rewind", "Rewind", id="run.rewind"),
        Binding("R", "replay", "Replay", id="run.replay"),
        Binding("d", "decide", "Decide gate", id="run.decide"),
        Binding("H", "hijack", "Hijack session", show=False, id="run.hijack"),
        Binding("s", "resume", "Resume", id="run.resume"),
        Binding("c", "cancel", "Cancel run", show=False, id="run.cancel"),
        Binding("g", "agents", "Agents", id="run.agents"),
        Binding("b", "board", "Board", id="run.board"),
        Binding("D", "diff", "Diff", show=False, id="run.diff"),
        Binding("i", "run_info", "Run info", show=False, id="run.info"),
        Binding("slash", "search", "Search steps", show=False, id="run.search"),
        Binding("n", "match(1)", "Next match", show=False, id="run.next_match"),
        Binding("N", "match(-1)", "Previous match", show=False, id="run.previous_match"),
        Binding("full_stop", "running", "Running step", show=False, id="run.running"),
        Binding("exclamation_mark", "failed", "Failed step", show=False, id="run.failed"),
        Binding("p", "parent", "Parent run", show=False, id="run.parent"),
        Binding("L", "lineage", "Lineage", show=False, id="run.lineage"),
        *LETTER_KEYS,
    ]

    def __init__(self, run_id: str, focus: Key | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.focus_key = focus  # a step to select once the tree is shown (the board opens a ticket's)
        self.model = RunModel()
        self.run: RunRecord | None = None
        self.view = ""  # the status shown: the run's, or interrupted
        self.approvals: list[ApprovalRecord] = []
        self.children_runs: list[RunRecord] = []
        self.agents: dict[Key, str] = {}
        self.usage: dict[Key, dict[str, float]] = {}
        self.attempt_list: list[AttemptRecord] = []  # as last read (the past's attempts do not change)
        self.cache_hits: frozenset[Key] = frozenset()  # steps whose result came from the cache
        self.skel: Skel | None = None
        self.skel_ids: frozenset[str] | None = None
        self.subs: dict[str, tuple[dict[Key, Rec], Skel | None]] = {}  # sub-workflow runs: nodes, shape
        self.sub_shapes: dict[str, tuple[frozenset[str], Skel | None]] = {}
        self.prompting: Key | None = None
        self.follow = True  # keep the running step in view until the cursor moves
        self.run_info = False  # the inspector shows the run (i) rather than the selected step
        self.chosen: Key | None = None  # the step the user selected: kept selected while scrubbing
        self.expanded: set[str] = set()  # long loops shown whole (enter on their "more" row)
        self._user_moving = False
        self.loaded = False
        self._dirty = asyncio.Event()
        self._inspected: tuple[Any, ...] | None = None
        self._inspected_at = 0.0  # when the inspector last read its step (monotonic)
        self._inspect_timer: Timer | None = None
        self._head = Text("")
        self._busy = 0.0  # seconds of work on the event loop in the current refresh
        self._attempts_read = 0.0
        self._keys_for: tuple[Any, ...] | None = None
        self._scrub_timer: Timer | None = None
        self._gc_held = False  # the collector waits while keys scrub (hold_gc)
        self._keyed_at = 0.0  # when a key last moved the tree's cursor (keys_first)
        self._gates: tuple[int, list[Key]] = (-1, [])
        self._shown_at = 0.0  # when the tree last showed a frame (monotonic)
        self.shown_frame_full = -1  # the frame the tree and the inspector show
        self._sigs: dict[Key, tuple[Any, ...]] = {}  # the last layout's step labels, for the next one
        self._sigs_at: tuple[int, int, str] | None = None  # its frame, how many agents were known, the run's status
        self._head_lines = 0

    # --- the past ------------------------------------------------------------------------------
    @property
    def past(self) -> int | None:
        """The frame shown, when scrubbed back (None: live)."""
        return None if self.model.following else self.model.view_frame

    def compose(self) -> ComposeResult:
        yield Header(icon="◎")
        yield Static("", id="run-head")
        yield Static("", id="past-banner")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield FilterBar("search steps: a name, a state (failed, running)…", id="search")
                yield RunTree(id="tree")
            yield Inspector(self.app.clock, id="inspector")
        yield FrameTimeline(self.app.clock, self.model, axis=self.app.prefs.get("timeline.axis", "frames"),
                            id="timeline")
        yield Footer()

    @property
    def step_tree(self) -> RunTree:
        return self.query_one(RunTree)

    @property
    def timeline(self) -> FrameTimeline:
        return self.query_one(FrameTimeline)

    def on_mount(self) -> None:
        self.sub_title = f"run {self.run_id}"
        self.query_one("#past-banner").display = False
        self.refresher()
        self.set_interval(1.0, self.tick)

    def on_resize(self) -> None:
        self.timeline.set_class(self.size.height >= 30, "tall")
        if self.run is not None:
            self.show_head()

    def tick(self) -> None:
        """Durations of running steps move on; the owner of a run may have gone."""
        if self.run is not None and self.run.status in ACTIVE_RUN:
            self._dirty.set()

    def on_screen_suspend(self) -> None:
        self.hold_gc(False)

    def on_unmount(self) -> None:
        self.hold_gc(False)

    def on_screen_resume(self) -> None:
        self.prompting = None
        self._dirty.set()

    def on_store_changed(self, _msg: StoreChanged) -> None:
        self._dirty.set()

    # --- loading -------------------------------------------------------------------------------
    @background(group="run-refresh", exclusive=True)
    async def refresher(self) -> None:
        """Read what is new, show it, then wait for the next change (at most every REFRESH_S)."""
        host = self.app.host
        await host.ready.wait()
        await self.load_base()
        while True:
            self._dirty.clear()
            self._busy = 0.0
            await self.keys_first()
            await self.load_new()
            t0 = time.perf_counter()
            self.show()
            cost = self._busy + time.perf_counter() - t0
            await self._dirty.wait()
            # The work of a refresh on this event loop (not its reads, which wait in another thread)
            # may take a tenth of the time at most: on a huge run the screen updates less often,
            # and a run in this same event loop keeps its speed.
            await asyncio.sleep(min(REFRESH_MAX_S, max(REFRESH_S, 9 * cost)))

    async def keys_first(self) -> None:
        """While the user moves through the tree, keys come first: a refresh (on a fast run, a
        repaint of most of the tree) waits until they rest, for at most KEYS_FIRST_S."""
        start = time.monotonic()
        while (wait := self._keyed_at + KEYS_REST_S - time.monotonic()) > 0 and time.monotonic() - start < KEYS_FIRST_S:
            await asyncio.sleep(wait)

    async def load_base(self) -> None:
        at = await self.app.host.reader.state_at(self.run_id, 0)
        self.model = RunModel(base=dict(at.nodes))
        self.timeline.model = self.model

    async def load_new(self) -> None:
        from engine.lease import shown_status

        host = self.app.host
        reader = host.reader
        run = await reader.get_run(self.run_id)
        self.run, self.view = run, str(shown_status(run, host.executing(self.run_id)))  # together: keys depend on both
        frames = await reader.frames(self.run_id, since=len(self.model.marks))
        new: list[Mark] = []
        t0 = time.perf_counter()
        for f in frames:
            m = self.model.add(f.frame, f.at, f.delta)
            if m is not None:
                new.append(m)
        self._busy += time.perf_counter() - t0
        if new or not self.loaded:
            self.approvals = await reader.approvals(self.run_id, open_only=False)
            self.children_runs = await reader.child_runs(self.run_id)
            now = time.monotonic()
            if not self.loaded or (any(m.kinds & {"finish", "fail", "retry"} for m in new)
                                   and now - self._attempts_read > ATTEMPTS_S):
                self._attempts_read = now
                self.read_attempts(await reader.attempts(self.run_id))
        self.subs = await self.subflows(self.model.live)
        for key, buf in host.agents.buffers.items():  # agents streaming here right now
            if key[0] == self.run_id and buf.agent and (key[1], key[2]) not in self.agents:
                self.agents[(key[1], key[2])] = buf.agent
        ids = frozenset(k[0] for k in self.model.live)
        if self.skel_ids != ids:
            out = await host.view.outline(self.run_id)
            self.skel = out.root if out is not None else None
            self.skel_ids = ids
        if new:
            self.timeline.frames_added()
        self.timeline.set_forks(self.forks())
        self.loaded = True
        self.keys_may_have_changed()

    def keys_may_have_changed(self) -> None:
        """The keys offered depend on the run (cancel while active, resume when interrupted...): the
        footer is rebuilt when what they depend on changed."""
        state = (self.view, self.past is None, bool(self.waiting_gates()), self.run.parent_run_id if self.run else None,
                 self.run.workflow if self.run else None)
        if state != self._keys_for:
            self._keys_for = state
            self.refresh_bindings()

    def read_attempts(self, attempts: list[AttemptRecord]) -> None:
        """Agents and usage per step, from the attempts that ended."""
        self.attempt_list = attempts
        self.cache_hits = frozenset(a.key for a in attempts if a.extra.get("cache") == "hit")
        usage: dict[Key, dict[str, float]] = {}
        for a in attempts:
            if a.agent:
                self.agents[a.key] = a.agent + (f"/{a.model}" if a.model and a.model != a.agent else "")
            if a.tokens_in or a.tokens_out or a.cost_usd:
                u = usage.setdefault(a.key, {"tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0})
                u["tokens_in"] += a.tokens_in or 0
                u["tokens_out"] += a.tokens_out or 0
                u["cost_usd"] += a.cost_usd or 0.0
        self.usage = usage

    def forks(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for c in self.children_runs:
            if c.parent_frame is not None:
                out.setdefault(c.parent_frame, []).append(c.id)
        return out

    async def subflows(self, nodes: dict[Key, Rec], depth: int = 0) -> dict[str, tuple[dict[Key, Rec], Skel | None]]:
        """The child runs of the run's Subflow steps (and theirs): nodes and shape, to nest their rows.
        Read on every refresh while there are any: a child moves on without its parent's frames."""
        reader = self.app.host.reader
        out: dict[str, tuple[dict[Key, Rec], Skel | None]] = {}
        for rec in nodes.values():
            child = (rec.data or {}).get("child") if rec.kind == "subflow" else None
            if not child or depth > 3:
                continue
            try:
                run = await reader.get_run(child)
                at = await reader.state_at(child, run.frame)
            except SmithersError:  # not made yet, or made by another database
                continue
            kids = dict(at.nodes)
            ids = frozenset(k[0] for k in kids)
            known = self.sub_shapes.get(child)
            if known is None or known[0] != ids:
                found = await self.app.host.view.outline(child)
                known = self.sub_shapes[child] = (ids, found.root if found is not None else None)
            out[child] = (kids, known[1])
            out.update(await self.subflows(kids, depth + 1))
        return out

    # --- showing -------------------------------------------------------------------------------
    def show(self, inspect: bool = True) -> None:
        """Show the frame: tree, head, banner and, unless scrubbing goes on, the inspector."""
        self._shown_at = time.monotonic()
        self.shown_frame_full = self.model.view_frame
        try:
            self._show(inspect)
        except NoMatches:  # the screen is closing
            pass

    def shown_nodes(self) -> dict[Key, Rec]:
        """The nodes of the frame shown. A run cancelled while nobody ran it has no frame for that:
        its steps that were still going show as cancelled, as the database has them."""
        nodes = self.model.view
        if self.past is None and self.run is not None and self.run.status == "cancelled":
            nodes = {k: (r.but(state="cancelled")
                         if r.state in ("running", "pending", "waiting_approval", "waiting") else r) for k, r in nodes.items()}
        return nodes

    def _show(self, inspect: bool = True) -> None:
        if self.run is None or not self.model.marks:
            return
        past = self.past
        until = self.model.at(self.model.view_frame) if past is not None else None
        frame = self.model.view_frame
        nodes = self.shown_nodes()
        changed = self.model.changed_at(frame)
        keep = self.states_shown(nodes, "running", "waiting_approval", "waiting", "failed") | set(changed)
        if self.chosen is not None:
            keep.add(self.chosen)
        extras = Extras(modes={a.key: a.mode for a in self.approvals if a.mode != "approve"},
                        cached=self.cache_hits,
                        subs=self.subs if past is None else {})  # the past: the child runs as of now are not that
        layout = Layout(nodes, self.agents, self.app.clock, lambda k: self.model.timing(k, frame), changed, until,
                        self.reusable_sigs(nodes, frame), keep, self.expanded,
                        self.model.iters if nodes is self.model.view else None, extras)
        rows = layout.build(self.skel)
        self._sigs, self._sigs_at = layout.sigs, (frame, len(self.agents), self.run.status if self.run else "")
        tree = self.step_tree
        tree.show(rows)
        if self.focus_key is not None and tree.node_of(self.focus_key) is not None:
            key, self.focus_key = self.focus_key, None
            self.follow = False
            self.chosen = key
            tree.call_after_refresh(tree.select_key, key)
        elif self.chosen is not None and self.selected_key() != self.chosen:
            tn = tree.node_of(self.chosen)  # back on the chosen step once it exists again
            if tn is not None:
                tree.call_after_refresh(tree.select_node_of, tn)
        elif tree.cursor_line < 0 and rows:
            tree.move_cursor_to_line(0)
        if self.follow and past is None and self.view in ACTIVE_RUN:
            self.keep_running_in_view(rows)
        self.show_frame_head()
        if inspect:
            self.inspect_selected()
        if past is None:
            self.maybe_prompt()

    def states_shown(self, nodes: dict[Key, Rec], *states: str) -> set[Key]:
        """The nodes shown in any of `states`: the model keeps them for its view; others are scanned."""
        if nodes is self.model.view:
            return self.model.in_states(*states)
        return {k for k, r in nodes.items() if r.state in states}

    def reusable_sigs(self, nodes: dict[Key, Rec], frame: int) -> dict[Key, tuple[Any, ...]]:
        """The last layout's step labels that still hold: not for steps changed since (or marked as
        changed at either frame), nor those still going (their durations move on)."""
        if self._sigs_at is None:
            return {}
        was, agents, status = self._sigs_at
        if agents != len(self.agents) or status != (self.run.status if self.run else ""):
            return {}
        stale = self.model.changed_between(was, frame) | self.model.changed_at(was) | self.model.changed_at(frame)
        going = self.states_shown(nodes, "running", "waiting_approval", "waiting", "pending")
        return {k: sig for k, sig in self._sigs.items() if k not in stale and k not in going}

    def show_frame_head(self) -> None:
        """The head and the past's banner: cheap, shown at once on every scrub."""
        self.show_head()
        past, frame = self.past, self.model.view_frame
        banner = self.query_one("#past-banner", Static)
        banner.display = past is not None
        self.set_class(past is not None, "past")
        if past is not None:
            cur = self.model.marks[frame]
            banner.update(Text.assemble(
                (" THE PAST ", "bold reverse yellow"),
                (f"  as of frame {frame} of {self.model.last} ({self.app.clock.stamp(cur.at)})", "bold"),
                ("  ·  f fork  ·  r rewind  ·  R replay from here  ·  end returns to live", "yellow")), layout=False)

    def keep_running_in_view(self, rows: list[Row]) -> None:
        running = [r.key for r in rows if r.key is not None and not r.group and r.sig[1] == "running"]
        if running:
            tn = self.step_tree.node_of(running[-1])
            if tn is not None and tn.line >= 0:
                self.step_tree.scroll_to_line(tn.line, animate=False)

    def progress(self) -> tuple[int, int, int]:
        """Steps done, steps known, and at most how many more the loops still going may add."""
        more = loop_room(self.skel, self.model.view) if self.skel is not None else 0
        return self.model.done, self.model.steps, more

    def show_head(self) -> None:
        run = self.run
        if run is None:
            return
        clock = self.app.clock
        past = self.past
        status = self.view if past is None else self.model.status_at(self.model.view_frame)
        g, c = RUN_STYLE.get(status, ("?", "white"))
        done, known, more = self.progress()
        width = 12
        total = known + more
        fill = round(width * done / total) if total else 0
        end = run.finished_at or (None if status in ACTIVE_RUN else run.updated_at)
        if past is not None:
            end = self.model.at(self.model.view_frame)
        tok = sum((u.get("tokens_in") or 0) + (u.get("tokens_out") or 0) for u in self.usage.values())
        usd = sum(u.get("cost_usd") or 0 for u in self.usage.values())
        owner = ""
        if past is None:
            if self.app.host.executing(self.run_id):
                owner = "running in this app"
            elif status == "interrupted":
                owner = "no process runs it: s resumes it here"
            elif run.owner is not None and status in ACTIVE_RUN:
                owner = f"run by pid {run.owner.pid} on {run.owner.host}"
            elif status == "waiting" and any(a.decision and not a.applied for a in self.approvals):
                owner = "decided: s goes on with it here"
            elif status == "waiting":
                owner = "d decides the gate"
        steps = f" {done}/{known} steps" + (f" (+≤{more} in loops)" if more else "")
        pieces = [Text.assemble((f" {g} {status} ", f"bold {c}"), (run.workflow, "bold"), ("  run ", "grey58"),
                                (run.id, "bold")),
                  Text.assemble(("█" * fill, c), ("░" * (width - fill), "grey35"), steps),
                  Text(f"{clock.since(run.created_at, end)} elapsed", "grey58")]
        if tok or usd:
            pieces.append(Text(f"{tokens(tok)} tokens {cost(usd)}", "grey58"))
        spend = budget_line(spent(run.meta.get("budgets") or {}, self.usage)) if past is None else ""
        if spend:
            pieces.append(Text(spend, "grey58"))
        if owner:
            pieces.append(Text(owner, "grey58"))
        avail = max(20, self.size.width - 2)
        line1 = Text("")
        for i, p in enumerate(pieces):  # whole pieces only: the head never wraps
            sep = Text("  ·  ", "grey42") if i else Text("")
            if i and line1.cell_len + sep.cell_len + p.cell_len > avail:
                break
            line1 += sep + p
        bits: list[str] = []
        if run.parent_run_id:
            bits.append(f"{run.kind} of {run.parent_run_id} at frame {run.parent_frame} (p opens it)")
        if run.successor_run_id:
            bits.append(f"rewound: continued as {run.successor_run_id}")
        if self.children_runs:
            kids = ", ".join(f"{k.id} ({k.kind}@{k.parent_frame})" for k in self.children_runs[:3])
            more_kids = f" +{len(self.children_runs) - 3}" if len(self.children_runs) > 3 else ""
            bits.append(f"branches: {kids}{more_kids}")
        lines = [line1]
        if bits:
            lines.append(Text(" ⑂ " + "  ·  ".join(bits) + "  (L lineage)", style="magenta"))
        if status == "failed" and run.error and past is None:
            lines.append(Text(f" ✖ {' '.join(str(run.error).split())}", style="red1"))
        for ln in lines:
            ln.truncate(avail, overflow="ellipsis")
        head = self.query_one("#run-head", Static)
        text = Text("\n").join(lines)
        if text != self._head:
            head.update(text, layout=len(lines) != self._head_lines)
            self._head, self._head_lines = text, len(lines)

    # --- the selected step ---------------------------------------------------------------------
    def selected_key(self) -> Key | None:
        row = self.step_tree.selected_row
        return row.key if row is not None else None

    def on_tree_node_selected(self, event: Any) -> None:
        """enter on a long loop's "more" row shows it whole; on a sub-workflow's step, opens its child run."""
        row = event.node.data
        if row is not None and row.sig[0] == "more" and row.parent is not None:
            self.expanded.add(row.parent)
            self.show()
            return
        rec = self.shown_nodes().get(row.key) if row is not None and row.key is not None else None
        child = (rec.data or {}).get("child") if rec is not None and rec.kind == "subflow" else None
        if child:
            self.app.open_run(str(child))

    def on_tree_node_highlighted(self, _event: Any) -> None:
        """The cursor moved: the inspector follows once it rests (holding j reads nothing per row)."""
        self.run_info = False
        if self._user_moving:
            self._user_moving = False
            row = self.step_tree.selected_row
            self.chosen = row.key if row is not None else None
        if self._inspect_timer is not None:
            self._inspect_timer.stop()
        self._inspect_timer = self.set_timer(CURSOR_REST_S, self.inspect_selected)

    def inspect_selected(self) -> None:
        key = self.selected_key()
        insp = self.query_one(Inspector)
        if self.run_info:
            self._inspected = None
            self.show_run_summary(insp)
            return
        if key is None:
            self._inspected = None
            row = self.step_tree.selected_row
            if row is not None and row.group:
                self.show_group(insp, row)
            else:
                self.show_run_summary(insp)
            return
        rec = self.shown_nodes().get(key)
        if rec is None:
            self._inspected = None
            what = "has not started" + (" at this frame" if self.past is not None else " yet")
            insp.show_text(f"{key_label(*key) if key[1] >= 0 else key[0]} {what}", about=key)
            return
        stamp = (key, rec, self.past, self.approvals_of(key))
        if stamp == self._inspected:
            return
        now = time.monotonic()
        same_step = self._inspected is not None and self._inspected[0] == key and self.past is None
        if same_step and now - self._inspected_at < INSPECT_S:
            return  # the step shown changes as fast as the run commits: read it again at most once a second
        self._inspected, self._inspected_at = stamp, now
        self.inspect(key, rec)

    def approvals_of(self, key: Key) -> tuple[Any, ...]:
        return tuple((a.decision, a.decided_at) for a in self.approvals if a.key == key)

    def show_group(self, insp: Inspector, row: Row) -> None:
        """A group row (parallel, an iteration, other steps): what its steps are doing."""
        below = [r for r in self.step_tree.rows if r.path.startswith(row.path + "/") and not r.group]
        counts: dict[str, int] = {}
        for r in below:
            counts[r.sig[1]] = counts.get(r.sig[1], 0) + 1
        parts: list[Any] = [Text.assemble((row.name, "bold"), (f"  {row.sig[4]}", "grey58")),
                            Text(", ".join(f"{n} {state.replace('_', ' ').replace('not yet', 'not started')}"
                                           for state, n in sorted(counts.items())) or "no step yet", style="grey70"),
                            Text("\nselect a step inside it for its attempts, output and events; i shows the run",
                                 style="grey50")]
        insp.show_parts(parts)

    def action_run_info(self) -> None:
        """The run itself in the inspector (its input, error, lineage) until the cursor moves."""
        self.run_info = True
        self.inspect_selected()

    def show_run_summary(self, insp: Inspector) -> None:
        run = self.run
        if run is None:
            insp.show_text("loading…")
            return
        from ..widgets.inspector import section, value_view

        clock = self.app.clock
        parts: list[Any] = [Text.assemble((f"run {run.id}", "bold"), (f"  {run.workflow}  {self.view}", "grey58")),
                            Text(f"started {clock.stamp(run.created_at)}  ·  {self.model.last} frames  ·  in "
                                 f"{run.workdir}", style="grey58")]
        if run.error:
            parts.append(Text.assemble(("error: ", "bold red1"), (str(run.error), "red1")))
        if run.parent_run_id:
            parts.append(Text(f"{run.kind} of {run.parent_run_id} at frame {run.parent_frame}", "magenta"))
        parts.append(section("Input"))
        parts += value_view(run.input)
        parts.append(Text("\nselect a step to see its attempts, output and events", style="grey50"))
        insp.show_parts(parts)

    @background(group="run-inspect", exclusive=True)
    async def inspect(self, key: Key, rec: Rec) -> None:
        reader = self.app.host.reader
        past = self.past
        frame = self.model.view_frame
        until = self.model.at(frame) if past is not None else None
        events = await reader.events(self.run_id, node=key, limit=300, newest=True)
        if past is not None and until is not None:  # written by then: a decision recorded later is not that past
            events = [e for e in events if e.frame <= frame and e.at <= until]
        prompt = next((e.data.get("text") for e in reversed(events) if e.type == "agent" and e.data.get("kind") == "prompt"),
                      None)
        events = [e for e in events if not (e.type == "agent" and e.data.get("kind") == "prompt")]
        if past is not None:  # the attempts as last read: those started by then
            attempts = [a for a in self.attempt_list if a.key == key and until is not None and a.started_at <= until]
        else:
            attempts = await reader.attempts(self.run_id, node=key)
        output = ((await reader.outputs_at(self.run_id, frame, node=key)).get(key)
                  if rec.kind in ("task", "approval") else None)
        stat = None
        if (rec.data or {}).get("commit"):
            stat = diff_stat(await self.app.host.view.diff(self.run_id, key[0], key[1]))
        if not self.is_attached or self.selected_key() != key:
            return
        self.query_one(Inspector).show(StepView(
            key=key, rec=rec, output=output.value if output else None, has_output=output is not None,
            attempts=attempts, events=events, prompt=prompt, gate=self.gate_view(key, rec, past), diff_stat=stat,
            usage=self.usage.get(key) if past is None else None, past=past, until=until))

    def gate_view(self, key: Key, rec: Rec, past: int | None) -> dict[str, Any] | None:
        """The gate of a step as of the frame shown: in the past, decided only if the run had taken
        the decision in by then (a decision recorded later is not part of that past)."""
        gate = next((a for a in self.approvals if a.key == key), None)
        if gate is None:
            return None
        view = {"message": gate.message, "decision": gate.decision, "decided_by": gate.decided_by, "note": gate.note,
                "decided_at": gate.decided_at}
        if past is not None:
            d = (rec.data or {}).get("decision") or {}
            view.update(decision=("approved" if d.get("approved") else "denied") if d else None,
                        decided_by=d.get("by"), note=d.get("note"), decided_at=d.get("at"))
        return view

    # --- approvals -----------------------------------------------------------------------------
    def maybe_prompt(self) -> None:
        if self.prompting is not None or not self.on_top:
            return
        later = self.app.later
        decided = {a.key for a in self.approvals if a.decision}  # decided elsewhere, not taken in yet
        waiting = [k for k, r in self.model.live.items()
                   if r.state == "waiting_approval" and (self.run_id, *k) not in later and k not in decided]
        if waiting and self.run is not None and self.run.status in ACTIVE_RUN:
            self.open_prompt(waiting[0])

    def open_prompt(self, key: Key) -> None:
        from .approval import prompt_for

        self.prompting = key
        rec = self.model.live.get(key)

        def closed(result: str | None) -> None:
            self.prompting = None
            if result == "later":
                self.app.later.add((self.run_id, *key))
            self._dirty.set()

        self.app.push_screen(prompt_for(self.run_id, key[0], key[1], "human" if rec and rec.kind == "human" else None),
                             closed)

    def waiting_gates(self) -> list[Key]:
        """The gates waiting now (read again only when frames arrive)."""
        if self._gates[0] != len(self.model.marks):
            self._gates = (len(self.model.marks), [k for k, r in self.model.live.items()
                                                   if r.state == "waiting_approval"])
        return self._gates[1]

    def action_hijack(self) -> None:
        """Take over the selected step's agent session (smithers_tui/hijack.py)."""
        key = self.selected_key()
        if key is None:
            self.notify("select an agent step first", severity="warning")
            return
        self.do_hijack(key)

    @background(group="run-hijack", exclusive=True)
    async def do_hijack(self, key: Key) -> None:
        from ..hijack import hijack_in_app

        await hijack_in_app(self.app, self.run_id, key[0], key[1])

    def action_decide(self) -> None:
        waiting = self.waiting_gates()
        if not waiting:
            self.notify("no gate of this run is waiting")
            return
        sel = self.selected_key()
        key = sel if sel in waiting else waiting[0]
        self.app.later.discard((self.run_id, *key))
        self.open_prompt(key)

    # --- the timeline --------------------------------------------------------------------------
    def on_frame_timeline_scrubbed(self, event: FrameTimeline.Scrubbed) -> None:
        """The timeline and the head follow every key at once; the tree and the inspector follow
        once the scrubbing rests, and at least every SCRUB_SHOW_S while it goes on."""
        self.model.seek(None if event.live else event.frame)
        self.show_frame_head()
        self.keys_may_have_changed()
        if self._scrub_timer is not None:
            self._scrub_timer.stop()
        if time.monotonic() - self._shown_at > SCRUB_SHOW_S:
            # the tree keeps up (once this key is painted); the inspector waits for the keys to rest
            self._shown_at = time.monotonic()
            self.call_after_refresh(self.show, False)
        self.hold_gc(True)
        self._scrub_timer = self.set_timer(SCRUB_REST_S, self.scrub_rested)

    def scrub_rested(self) -> None:
        self.hold_gc(False)
        self.show()

    def hold_gc(self, hold: bool) -> None:
        """While a key is held on the timeline, the cyclic collector waits (as Textual's own smooth
        scrolling does): a pass over a long run's frames would stall the frames being scrubbed."""
        if hold and not self._gc_held and gc.isenabled():
            gc.disable()
            self._gc_held = True
        elif not hold and self._gc_held:
            self._gc_held = False
            gc.enable()

    def action_frame(self, d: int) -> None:
        self.timeline.action_step(d)

    def action_jump(self, where: str) -> None:
        self.timeline.action_jump(where)

    def action_seek(self, what: str, step: int) -> None:
        names = {"fail": "failure", "gate": "gate or decision", "step": "change of the selected step"}
        wanted: Callable[[Mark], bool]
        if what == "step":
            key = self.chosen or self.selected_key()
            if key is None:
                self.notify("select a step first: w jumps to the frames that changed it")
                return
            wanted = lambda m: key in m.keys  # noqa: E731
        elif what == "gate":
            wanted = lambda m: bool(m.kinds & {"gate", "decision"})  # noqa: E731
        else:
            wanted = lambda m: bool(m.kinds & {"fail", "retry"})  # noqa: E731
        if not self.timeline.seek_next(step, wanted):
            self.notify(f"no {'later' if step > 0 else 'earlier'} {names[what]}")

    def action_axis(self) -> None:
        axis = "time" if self.timeline.axis == "frames" else "frames"
        self.timeline.set_axis(axis)
        self.app.prefs.set("timeline.axis", axis)
        self.notify(f"timeline placed by {'time' if axis == 'time' else 'frame number'}")

    def shown_frame(self) -> int:
        return self.model.view_frame

    # --- the tree: search, running, failed -----------------------------------------------------
    def action_search(self) -> None:
        self.query_one("#search", FilterBar).open()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search" and event.value.strip():
            self.find_match(1, from_current=True)

    def on_filter_bar_done(self, _event: FilterBar.Done) -> None:
        self.step_tree.focus()

    def matching(self) -> list[Row]:
        words = self.query_one("#search", FilterBar).value.lower().split()
        if not words:
            return []
        out = []
        for r in self.step_tree.rows:
            hay = f"{r.name} {r.sig[1].replace('_', ' ')} {r.sig[4]}".lower()
            if all(w in hay for w in words):
                out.append(r)
        return out

    def find_match(self, step: int, from_current: bool = False) -> None:
        rows = self.step_tree.rows
        hits = self.matching()
        if not hits and self.reveal_match():
            return
        if not hits:
            if self.query_one("#search", FilterBar).value.strip():
                self.notify("no step matches", timeout=2)
            return
        paths = [r.path for r in rows]
        cur = self.step_tree.selected_row
        i = paths.index(cur.path) if cur is not None and cur.path in paths else -1
        order = [paths.index(h.path) for h in hits]
        if from_current and i in order:
            target = i
        elif step > 0:
            target = next((o for o in order if o > i), order[0])
        else:
            target = next((o for o in reversed(order) if o < i), order[-1])
        self.choose(rows[target])

    def reveal_match(self) -> bool:
        """A step that matches the search in the iterations a long loop does not show: chosen, so
        the tree shows it, and selected."""
        words = self.query_one("#search", FilterBar).value.lower().split()
        shown = {r.key for r in self.step_tree.rows}
        for key, rec in sorted(self.shown_nodes().items(), key=lambda kv: (kv[0][1], kv[0][0])):
            hay = f"{key[0]} #{key[1]} {key_label(*key)} {str(rec.state).replace('_', ' ')}".lower()
            if key not in shown and all(w in hay for w in words):
                self.chosen, self.follow = key, False
                self.show()
                self.step_tree.call_after_refresh(self.step_tree.select_key, key)
                return True
        return False

    def action_match(self, step: int) -> None:
        if not self.query_one("#search", FilterBar).value.strip():
            self.action_search()
            return
        self.find_match(step)

    def action_running(self) -> None:
        rows = [r for r in self.step_tree.rows if not r.group and r.sig[1] in ("running", "waiting_approval")]
        if not rows:
            self.notify("no step is running" + (" at this frame" if self.past is not None else ""))
            return
        self.choose(rows[-1])
        self.follow = True

    def action_failed(self) -> None:
        rows = [r for r in self.step_tree.rows if not r.group and r.sig[1] == "failed"]
        if not rows:
            self.notify("no step failed" + (" at this frame" if self.past is not None else ""))
            return
        paths = [r.path for r in rows]
        cur = self.step_tree.selected_row
        nxt = next((p for p in paths if cur is None or p > cur.path), paths[0])
        self.choose(rows[paths.index(nxt)])

    def on_key(self, event: Any) -> None:
        if event.key in ("up", "down", "j", "k", "pageup", "pagedown") and self.focused is self.step_tree:
            self._keyed_at = time.monotonic()
            self.follow = False
            self._user_moving = True  # the step the cursor lands on is the one chosen

    def choose(self, row: Row) -> None:
        """Select a step on purpose (search, jumps): it stays selected while scrubbing, even through
        frames where it does not exist yet, and w / W follow its changes."""
        self.follow = False
        self.chosen = row.key
        self.step_tree.select_node_of(self.step_tree._by_path[row.path])

    # --- time travel ---------------------------------------------------------------------------
    def action_fork(self) -> None:
        from .fork import ForkScreen

        if self.run is None:
            return
        frame = self.shown_frame()
        nodes = self.model.view if self.past is not None else self.model.live
        order = [r.key for r in self.step_tree.rows if r.key is not None]
        steps = fork_choices(nodes, order)
        not_started = list(dict.fromkeys(r.name for r in self.step_tree.rows
                                         if r.key is not None and not r.group and r.key not in nodes))

        def done(result: dict[str, Any] | None) -> None:
            if result is not None:
                self.do_fork(frame, result["input"], result["reset"])

        self.app.push_screen(ForkScreen(self.run_id, frame, self.run.input, steps, not_started), done)

    @background(group="run-fork")
    async def do_fork(self, frame: int, input: Any, reset: list[str]) -> None:
        info = await self.app.host.fork(self.run_id, frame, input=input, reset=reset)
        self.notify(f"forked {self.run_id} at frame {frame} as {info.run_id}: {fork_said(info)}")
        self.app.open_run(info.run_id)

    def action_rewind(self) -> None:
        from .confirm import ConfirmScreen

        frame = self.shown_frame()
        msg = (f"Rewind run {self.run_id} to frame {frame}? A new run continues from that frame and takes over; "
               f"this one is kept, read-only, marked rewound. Nothing is deleted.")

        def done(ok: bool | None) -> None:
            if ok:
                self.do_rewind(frame)

        self.app.push_screen(ConfirmScreen("Rewind", msg, yes="Rewind", purpose="rewind"), done)

    @background(group="run-rewind")
    async def do_rewind(self, frame: int) -> None:
        info = await self.app.host.rewind(self.run_id, frame)
        self.notify(f"rewound {self.run_id} to frame {frame}: continuing as {info.run_id}")
        self.app.open_run(info.run_id)

    def action_replay(self) -> None:
        from .confirm import ConfirmScreen

        live = self.past is None
        frame = 0 if live else self.shown_frame()
        what = ("the whole run, from frame 0" if live else
                f"everything after frame {frame} ({self.model.last - frame} frame(s) of this run)")
        msg = (f"Replay {what} in a new run, to compare? Steps re-execute (agents are called again); "
               f"this run is left as it is." + (" (Scrub back first to replay from a later frame.)" if live else ""))

        def done(ok: bool | None) -> None:
            if ok:
                self.do_replay(frame)

        self.app.push_screen(ConfirmScreen("Replay", msg, yes="Replay", purpose="replay"), done)

    @background(group="run-replay")
    async def do_replay(self, frame: int) -> None:
        info = await self.app.host.replay(self.run_id, frame)
        self.notify(f"replaying {self.run_id} from frame {frame} as {info.run_id}")
        self.app.open_run(info.run_id)

    # --- other actions -------------------------------------------------------------------------
    def action_back(self) -> None:
        if self.query_one("#search", FilterBar).value:
            self.query_one("#search", FilterBar).action_clear()
            return
        if self.past is not None:
            self.timeline.action_jump("last")
            return
        self.app.pop_screen()

    def action_agents(self) -> None:
        from .agents import AgentsScreen

        self.app.push_screen(AgentsScreen(self.run_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        run = self.run
        if action == "board":
            return run is not None and run.workflow == "kanban"
        if run is None:
            return True
        if self.past is not None and action in ("cancel", "resume", "decide"):
            return False  # they act on the run as it is now: the past shows f, r and R
        if action == "cancel":
            return self.view in ACTIVE_RUN
        if action == "resume":
            return self.view in ("interrupted", "failed") or (
                self.view == "waiting" and not self.app.host.executing(self.run_id))
        if action == "decide":
            return bool(self.waiting_gates()) and run.status in ACTIVE_RUN
        if action == "parent":
            return bool(run.parent_run_id)
        if action == "rewind":
            return run.status != "rewound"
        return True

    def action_board(self) -> None:
        from .board import BoardScreen

        if self.run is not None and self.run.workflow == "kanban":
            self.app.push_screen(BoardScreen(self.run_id))

    def action_parent(self) -> None:
        parent = self.run.parent_run_id if self.run else None
        if parent:
            self.app.open_run(parent)
        else:
            self.notify("this run has no parent (it was not forked, rewound or replayed)")

    def action_lineage(self) -> None:
        from .lineage import LineageScreen

        self.app.push_screen(LineageScreen(self.run_id))

    def action_diff(self) -> None:
        from .diff import DiffScreen

        key = self.selected_key()
        if key is None or self.run is None:
            self.notify("select a step that ran in a worktree")
            return
        self.app.push_screen(DiffScreen(self.run_id, key))

    def action_cancel(self) -> None:
        from .confirm import ConfirmScreen

        def done(ok: bool | None) -> None:
            if ok:
                self.do_cancel()

        self.app.push_screen(ConfirmScreen("Cancel run", f"Cancel run {self.run_id}? Steps running now are stopped "
                                           "and the run ends cancelled (f forks it to run it again).",
                                           yes="Cancel run", no="Keep it"), done)

    @background(group="run-cancel")
    async def do_cancel(self) -> None:
        said = await self.app.host.cancel(self.run_id)
        self.notify(f"run {self.run_id}: {said}")

    def action_resume(self) -> None:
        from .actions import resume

        if self.run is not None:
            resume(self, self.run_id, self.run.status, self._dirty.set)

    def palette_commands(self) -> list[Any]:
        frame = self.shown_frame()
        out: list[Any] = [
            (f"Fork from frame {frame}", "a new run from this frame, with changed input or steps reset",
             self.action_fork, "f")]
        if self.check_action("rewind", ()):
            out.append((f"Rewind to frame {frame}", "a new run takes over from this frame", self.action_rewind, "r"))
        out += [(f"Replay from frame {0 if self.past is None else frame}", "re-execute in a new run, to compare",
                 self.action_replay, "R"),
                ("Agents", "live output of the agents of this run", self.action_agents, "g"),
                ("Lineage", "forks, rewinds and replays around this run", self.action_lineage, "L"),
                ("Search steps", "jump to the steps whose name or state matches", self.action_search, "/"),
                ("Next failure on the timeline", "", lambda: self.action_seek("fail", 1), "e"),
                ("Next gate or decision on the timeline", "", lambda: self.action_seek("gate", 1), "v"),
                ("Toggle the timeline's axis (frames / time)", "", self.action_axis, "m")]
        if self.check_action("cancel", ()):
            out.append(("Cancel this run", "stop it for good", self.action_cancel, "c"))
        if self.check_action("resume", ()):
            out.append(("Resume this run", "continue it in this app", self.action_resume, "s"))
        if self.past is not None:
            out.append(("Live", "return to the newest frame", lambda: self.action_jump("last"), "end"))
        if self.run is not None and self.run.parent_run_id:
            out.append((f"Open parent run {self.run.parent_run_id}", "", self.action_parent, "p"))
        for k in self.waiting_gates():
            out.append((f"Decide gate {key_label(*k)}", "approve or deny", self.action_decide, "d"))
        return out


def fork_choices(nodes: dict[Key, Rec], order: list[Key]) -> list[tuple[str, str, bool]]:
    """The steps a fork can reset, in the workflow's order: (node id, what it was at the frame,
    whether it had finished there)."""
    seen: dict[str, dict[int, str]] = {}
    for key in order + sorted(nodes):
        rec = nodes.get(key)
        if rec is None or rec.kind not in ("task", "approval", "loop"):
            continue
        seen.setdefault(key[0], {})[key[1]] = rec.state
    out = []
    for nid, by_it in seen.items():
        states = list(by_it.values())
        done = sum(s in ("done", "skipped") for s in states)
        what = f"{done} of {len(states)} iterations done" if len(states) > 1 else states[0].replace("_", " ")
        out.append((nid, what, done > 0))
    return out


def fork_said(info: Forked) -> str:
    return (f"{info.carried} output(s) carried; {len(info.rerun)} carried step(s) run again"
            + ("; the input changed" if info.input_changed else "") + "; steps not done at that frame run now")


def loop_room(skel: Skel, nodes: dict[Key, Rec]) -> int:
    """At most how many more steps the loops still going may run (their bodies x rounds left)."""
    total = 0

    def body_steps(s: Skel) -> int:
        if s.kind in ("task", "gate"):
            return 1
        return sum(body_steps(k) for k in s.children)

    def walk(s: Skel) -> None:
        nonlocal total
        if s.kind == "loop" and s.id is not None and s.limit:
            rec = nodes.get((s.id, 0))
            if rec is None or rec.state not in ("done", "failed", "skipped", "cancelled"):
                cur = ((rec.data or {}).get("iteration") or 0) if rec else 0
                total += max(0, s.limit - cur - 1) * body_steps(Skel("seq", None, s.children))
        for k in s.children:
            walk(k)

    walk(skel)
    return total


def diff_stat(text: str) -> str:
    """Files a unified diff touches, with lines added and removed."""
    files: dict[str, list[int]] = {}
    cur = None
    for line in text.splitlines():
        if line.startswith("+++ "):
            cur = line[6:] if line.startswith("+++ b/") else line[4:]
            files.setdefault(cur, [0, 0])
        elif cur and line.startswith("+") and not line.startswith("+++"):
            files[cur][0] += 1
        elif cur and line.startswith("-") and not line.startswith("---"):
            files[cur][1] += 1
    if not files:
        return "no file changed"
    return "\n".join(f"{f}  +{a} -{d}" for f, (a, d) in files.items())
