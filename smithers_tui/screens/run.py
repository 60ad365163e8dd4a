"""Run: the live step tree, an inspector for the selected step, and the frame timeline.

Scrubbing the timeline back shows the run as of that frame (marked as the past); from the
shown frame `f` forks, `r` rewinds, `R` replays. A gate that waits opens the approval prompt.
"""
from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


from ..rows import record_row, run_row
from ..widgets.fmt import ACTIVE_RUN, RUN_STYLE, cost, key_label, tokens
from ..widgets.inspector import Inspector
from ..widgets.step_tree import Layout, StepTree
from ..widgets.timeline import FrameTimeline, describe

Key = tuple[str, int]


def budget_line(budgets: list[dict[str, Any]]) -> str:
    """Spend against each budget, for the run's head: `budget 72/200 tokens · review $0.41/$1.00`."""
    parts = []
    for b in budgets:
        name = "budget" if b["scope"] == "<run>" else b["scope"]
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


class RunScreen(Screen[None]):
    CSS_PATH = "run.tcss"
    HELP_TITLE = "Run"
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        Binding("left_square_bracket", "frame(-1)", "Earlier", id="run.earlier"),
        Binding("right_square_bracket", "frame(1)", "Later", id="run.later"),
        Binding("home", "jump('first')", "First frame", show=False, id="run.first", priority=True),
        Binding("end", "jump('last')", "Live", show=False, id="run.live", priority=True),
        Binding("f", "fork", "Fork", id="run.fork"),
        Binding("r", "rewind", "Rewind", id="run.rewind"),
        Binding("R", "replay", "Replay", id="run.replay"),
        Binding("g", "agents", "Agents", id="run.agents"),
        Binding("b", "board", "Board", id="run.board"),  # kanban runs only (check_action)
        Binding("d", "decide", "Decide gate", show=False, id="run.decide"),
        Binding("H", "hijack", "Hijack session", show=False, id="run.hijack"),
        Binding("p", "parent", "Parent run", show=False, id="run.parent"),
        Binding("L", "lineage", "Lineage", show=False, id="run.lineage"),
        Binding("c", "cancel", "Cancel run", show=False, id="run.cancel"),
        Binding("s", "resume", "Resume run", show=False, id="run.resume"),
    ]

    def __init__(self, run_id: str, focus: Key | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.focus_key = focus  # a step to select once the tree is shown (the board opens a ticket's)
        self.report: dict[str, Any] | None = None
        self.past: int | None = None  # the frame shown, when scrubbed back
        self.frame_at: dict[int, float] = {}
        self.skel: Any = None
        self.skel_ids: frozenset[str] | None = None
        self.info: dict[Key, dict[str, Any]] = {}
        self.children_runs: list[dict[str, Any]] = []
        self.subs: dict[str, tuple[dict[Key, dict[str, Any]], Any]] = {}  # sub-workflow runs: nodes, shape
        self.sub_shapes: dict[str, tuple[frozenset[str], Any]] = {}
        self.prompting: Key | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header(icon="◎")
        yield Static("", id="run-head")
        yield Static("", id="past-banner")
        with Horizontal(id="body"):
            yield RunTree(id="tree")
            yield Inspector(self.app.clock, id="inspector")  # type: ignore[attr-defined]
        yield FrameTimeline(self.app.clock, id="timeline")  # type: ignore[attr-defined]
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"run {self.run_id}"
        self.query_one("#past-banner").display = False
        self.query_one(RunTree).focus()
        self.reload()
        self.set_interval(1.0, self.tick)

    @property
    def host(self) -> Any:
        return self.app.host  # type: ignore[attr-defined]

    def tick(self) -> None:
        if self.report and self.report["status"] in ACTIVE_RUN and self.past is None:
            self.reload()

    def on_screen_resume(self) -> None:
        self.prompting = None
        self.reload()

    def on_store_changed(self, msg: Any) -> None:
        if not msg.events or self.run_id in msg.run_ids or any(c["id"] in msg.run_ids for c in self.children_runs):
            if self.past is None or not self.loaded:
                self.reload()
            else:
                self.load_frames()

    # --- loading -------------------------------------------------------------------------------
    @work(exclusive=True, group="run-load")
    async def reload(self) -> None:
        await self.app.host.ready.wait()  # type: ignore[attr-defined]
        reader = self.host.reader
        frame = self.past
        rep = await self.app.attempt(self.host.report(self.run_id, frame))  # type: ignore[attr-defined]
        if rep is None:
            return
        await self._frames()
        attempts = [record_row(a) for a in await reader.attempts(self.run_id)]
        cutoff = self.frame_at.get(frame) if frame is not None else None
        info: dict[Key, dict[str, Any]] = {}
        for a in attempts:
            if cutoff is not None and a["started_at"] > cutoff:
                continue
            k = (a["node_id"], a["iteration"])
            i = info.setdefault(k, {"attempts": []})
            i["attempts"].append(a)
            i["agent"], i["model"] = a.get("agent") or i.get("agent"), a.get("model") or i.get("model")
            i["started"] = a["started_at"]
            fin = a.get("finished_at")
            i["finished"] = fin if fin and (cutoff is None or fin <= cutoff) else cutoff
        self.info = info
        self.children_runs = [run_row(r) for r in await reader.child_runs(self.run_id)]
        self.subs = await self._subflows(rep) if frame is None else {}
        ids = frozenset(n["id"] for n in rep["nodes"])
        if self.skel_ids != ids:
            self.skel = await self._skeleton(rep)
            self.skel_ids = ids
        was_kanban = (self.report or {}).get("workflow") == "kanban"
        self.report = rep
        self.show()
        if was_kanban != (rep["workflow"] == "kanban"):
            self.refresh_bindings()
        if self.focus_key is not None:
            key, self.focus_key = self.focus_key, None
            tree = self.query_one(RunTree)
            tree.call_after_refresh(tree.select_key, key)
        self.loaded = True

    async def _frames(self) -> None:
        marks = []
        for f in await self.host.reader.frames(self.run_id, len(self.frame_at)):
            self.frame_at[f.frame] = f.at
            marks.append(describe(f.frame, f.at, f.delta))
        if marks and self.query(FrameTimeline):
            self.query_one(FrameTimeline).add_marks(marks)

    @work(exclusive=True, group="run-frames")
    async def load_frames(self) -> None:
        await self._frames()

    async def _subflows(self, rep: dict[str, Any], depth: int = 0) -> dict[str, tuple[dict[Key, dict[str, Any]], Any]]:
        """The child runs of the run's Subflow steps (and theirs): nodes and shape, to nest their rows."""
        out: dict[str, tuple[dict[Key, dict[str, Any]], Any]] = {}
        for n in rep["nodes"]:
            child = n.get("child_run_id")
            if not child or depth > 3:
                continue
            try:
                crep = await self.host.report(child)
            except Exception:  # not made yet, or made by another database
                continue
            ids = frozenset(x["id"] for x in crep["nodes"])
            known = self.sub_shapes.get(child)
            if known is None or known[0] != ids:
                found = await self.host.view.outline(child)
                known = self.sub_shapes[child] = (ids, found.root if found is not None else None)
            out[child] = ({(x["id"], x["iteration"]): x for x in crep["nodes"]}, known[1])
            out.update(await self._subflows(crep, depth + 1))
        return out

    async def _skeleton(self, rep: dict[str, Any]) -> Any:
        """The workflow's shape, rendered from the run's saved state (None when it cannot be loaded)."""
        found = await self.host.view.outline(self.run_id)
        return found.root if found is not None else None

    # --- showing -------------------------------------------------------------------------------
    def show(self) -> None:
        try:
            self._show()
        except NoMatches:  # the screen is closing
            pass

    def _show(self) -> None:
        rep = self.report
        if rep is None:
            return
        clock = self.app.clock  # type: ignore[attr-defined]
        nodes = {(n["id"], n["iteration"]): n for n in rep["nodes"]}
        gates = {(a["node_id"], a["iteration"]): a for a in rep.get("approvals", [])}
        rows = Layout(nodes, self.info, clock, past=self.past is not None, subs=self.subs, gates=gates).build(self.skel)
        tree = self.query_one(RunTree)
        tree.show(rows)
        if tree.cursor_line < 0 and rows:
            tree.move_cursor_to_line(0)
        self.show_head(nodes)
        banner = self.query_one("#past-banner", Static)
        banner.display = self.past is not None
        self.set_class(self.past is not None, "past")
        if self.past is not None:
            banner.update(Text.assemble(
                (" THE PAST ", "bold reverse yellow"),
                (f"  as of frame {self.past} of {rep['last_frame']} ({clock.stamp(self.frame_at.get(self.past))})", "bold"),
                ("  ·  f fork  ·  r rewind  ·  R replay from here  ·  end returns to live", "yellow")))
        self.inspect_selected()
        if self.past is None:
            self.maybe_prompt(nodes)

    def show_head(self, nodes: dict[Key, dict[str, Any]]) -> None:
        rep = self.report
        assert rep is not None
        clock = self.app.clock  # type: ignore[attr-defined]
        status = rep["status"]
        g, c = RUN_STYLE.get(status, ("?", "white"))
        steps = [n for n in rep["nodes"] if n["kind"] in ("task", "approval")]
        done = sum(n["state"] in ("done", "skipped") for n in steps)
        width = 16
        fill = round(width * done / len(steps)) if steps else 0
        owner = ""
        if self.past is None and status in ACTIVE_RUN:
            if self.host.executing(self.run_id):
                owner = "running in this app"
            elif rep.get("owner"):
                owner = f"run by pid {rep['owner']['pid']} on {rep['owner']['host']}"
            else:
                owner = "no process runs it: s resumes it here"
        usage = rep.get("usage") or {}
        tok = (usage.get("tokens_in") or 0) + (usage.get("tokens_out") or 0)
        line1 = Text.assemble((f" {g} {status} ", f"bold {c}"), (rep["workflow"], "bold"), ("  run ", "grey58"),
                              (rep["run_id"], "bold"), "   ", ("█" * fill, c), ("░" * (width - fill), "grey35"),
                              (f" {done}/{len(steps)} steps", ""),
                              (f"  ·  {clock.since(rep['created_at'], rep['finished_at'] or (None if status in ACTIVE_RUN else rep['updated_at']))}"
                               " elapsed", "grey58"),
                              (f"  ·  {tokens(tok)} tokens  {cost(usage.get('cost_usd'))}" if tok else "", "grey58"),
                              (f"  ·  {owner}" if owner else "", "grey58"))
        bits = []
        if rep.get("parent_run_id"):
            bits.append(f"{rep['kind']} of {rep['parent_run_id']} at frame {rep['parent_frame']} (p opens it)")
        if rep.get("successor_run_id"):
            bits.append(f"rewound: continued as {rep['successor_run_id']}")
        if self.children_runs:
            kids = ", ".join(f"{k['id']} ({k['kind']}@{k['parent_frame']})" for k in self.children_runs[:3])
            more = f" +{len(self.children_runs) - 3}" if len(self.children_runs) > 3 else ""
            bits.append(f"branches: {kids}{more}")
        if status == "failed" and rep.get("error"):
            bits.append(f"error: {rep['error']}")
        spend = budget_line(rep.get("budgets") or [])
        if spend:
            line1.append(f"  ·  {spend}", style="grey58")
        line2 = Text(" ⑂ " + "  ·  ".join(bits) + ("  (L lineage)" if bits else ""), style="magenta") if bits else Text("")
        if status == "failed" and rep.get("error"):
            line2.stylize("red1")
        self.query_one("#run-head", Static).update(Text("\n").join([line1, line2]) if bits else line1)

    def selected_key(self) -> Key | None:
        row = self.query_one(RunTree).selected_row
        return row.key if row is not None else None

    def on_tree_node_highlighted(self, _event: Any) -> None:
        self.inspect_selected()

    def on_tree_node_selected(self, _event: Any) -> None:
        """enter on a sub-workflow's step opens its child run."""
        key = self.selected_key()
        node = next((n for n in (self.report or {}).get("nodes", []) if (n["id"], n["iteration"]) == key), None)
        if node is not None and node.get("child_run_id"):
            self.app.open_run(node["child_run_id"])  # type: ignore[attr-defined]

    def inspect_selected(self) -> None:
        key = self.selected_key()
        insp = self.query_one(Inspector)
        if key is None or self.report is None:
            insp.show_text("select a step (a group has no details of its own)")
            return
        node = next((n for n in self.report["nodes"] if (n["id"], n["iteration"]) == key), None)
        if node is None:
            insp.show_text(f"{key_label(*key)} has not started" + (" at this frame" if self.past is not None else ""))
            return
        self.inspect(key, node)

    @work(exclusive=True, group="run-inspect")
    async def inspect(self, key: Key, node: dict[str, Any]) -> None:
        reader = self.host.reader
        events = await reader.events(self.run_id, node=key, limit=2000)
        if self.past is not None:
            events = [e for e in events if e.frame <= self.past]
        prompt = next((e.data.get("text") for e in reversed(events) if e.type == "agent" and e.data.get("kind") == "prompt"),
                      None)
        events = [e for e in events if not (e.type == "agent" and e.data.get("kind") == "prompt")]
        attempts = self.info.get(key, {}).get("attempts", [])
        gate = next((a for a in (self.report or {}).get("approvals", [])
                     if (a["node_id"], a["iteration"]) == key), None)
        diff = None
        sha = next((a["commit_sha"] for a in reversed(attempts) if a.get("commit_sha")), None)
        if sha:
            try:
                from engine import git

                run = await reader.get_run(self.run_id)
                diff = await asyncio.to_thread(git.diff, run.workdir, None, sha)
            except Exception as e:
                diff = f"(diff unavailable: {e})"
        if not self.query(Inspector):  # closing
            return
        self.query_one(Inspector).show({
            "node": node, "attempts": attempts, "events": events, "prompt": prompt, "gate": gate, "diff": diff,
            "input": (self.report or {}).get("input") if node["kind"] == "task" and not prompt else None,
            "past": self.past})

    # --- approvals -----------------------------------------------------------------------------
    def maybe_prompt(self, nodes: dict[Key, dict[str, Any]]) -> None:
        if self.prompting is not None or not self.is_current:
            return
        later = self.app.later  # type: ignore[attr-defined]
        waiting = [k for k, n in nodes.items() if n["state"] == "waiting_approval" and (self.run_id, *k) not in later]
        if waiting:
            self.open_prompt(waiting[0])

    def open_prompt(self, key: Key) -> None:
        from .approval import prompt_for

        self.prompting = key
        node = next((n for n in (self.report or {}).get("nodes", []) if (n["id"], n["iteration"]) == key), {})

        def closed(result: str | None) -> None:
            self.prompting = None
            if result == "later":
                self.app.later.add((self.run_id, *key))  # type: ignore[attr-defined]
            self.reload()

        self.app.push_screen(prompt_for(self.run_id, key[0], key[1], "human" if node.get("kind") == "human" else None),
                             closed)

    async def action_hijack(self) -> None:
        """Take over the selected step's CLI session (smithers_tui/hijack.py)."""
        from ..hijack import hijack_in_app

        key = self.selected_key()
        if key is None:
            self.notify("select an agent step first", severity="warning")
            return
        await hijack_in_app(self.app, self.run_id, key[0], key[1])

    def action_decide(self) -> None:
        nodes = (self.report or {}).get("nodes", [])
        waiting = [(n["id"], n["iteration"]) for n in nodes if n["state"] == "waiting_approval"]
        if not waiting:
            self.notify("no gate of this run is waiting")
            return
        sel = self.selected_key()
        key = sel if sel in waiting else waiting[0]
        self.app.later.discard((self.run_id, *key))  # type: ignore[attr-defined]
        self.open_prompt(key)

    # --- time travel ---------------------------------------------------------------------------
    def on_frame_timeline_scrubbed(self, event: FrameTimeline.Scrubbed) -> None:
        self.past = None if event.live else event.frame
        self.reload()

    def action_frame(self, d: int) -> None:
        self.query_one(FrameTimeline).action_step(d)

    def action_jump(self, where: str) -> None:
        self.query_one(FrameTimeline).action_jump(where)

    def shown_frame(self) -> int:
        return self.past if self.past is not None else (self.report or {}).get("last_frame", 0)

    def action_fork(self) -> None:
        from .fork import ForkScreen

        if self.report is None:
            return
        frame = self.shown_frame()
        ids = sorted({n["id"] for n in self.report["nodes"] if n["kind"] in ("task", "approval", "loop")})

        async def done(result: dict[str, Any] | None) -> None:
            if result is None:
                return
            info = await self.app.attempt(self.host.fork(self.run_id, frame, input=result["input"],  # type: ignore[attr-defined]
                                                         reset=result["reset"]))
            if info:
                self.notify(f"forked {self.run_id} at frame {frame} as {info['run_id']}: {info['carried']} outputs "
                            f"carried, {len(info['rerun'])} to run again")
                self.app.open_run(info["run_id"])  # type: ignore[attr-defined]

        self.app.push_screen(ForkScreen(self.run_id, frame, self.report["input"], ids), done)

    def action_rewind(self) -> None:
        from .confirm import ConfirmScreen

        frame = self.shown_frame()
        msg = (f"Rewind run {self.run_id} to frame {frame}? A new run continues from that frame and takes over; "
               f"this one is kept, read-only, marked rewound. Nothing is deleted.")

        async def done(ok: bool | None) -> None:
            if ok:
                info = await self.app.attempt(self.host.rewind(self.run_id, frame))  # type: ignore[attr-defined]
                if info:
                    self.notify(f"rewound {self.run_id} to frame {frame}: continuing as {info['run_id']}")
                    self.app.open_run(info["run_id"])  # type: ignore[attr-defined]

        self.app.push_screen(ConfirmScreen("Rewind", msg, yes="Rewind", purpose="rewind"), done)

    async def action_replay(self) -> None:
        frame = self.shown_frame()
        info = await self.app.attempt(self.host.replay(self.run_id, frame))  # type: ignore[attr-defined]
        if info:
            self.notify(f"replaying {self.run_id} from frame {frame} as {info['run_id']}")
            self.app.open_run(info["run_id"])  # type: ignore[attr-defined]

    # --- other actions -------------------------------------------------------------------------
    def action_back(self) -> None:
        if self.past is not None:
            self.query_one(FrameTimeline).action_jump("last")
            return
        self.app.pop_screen()

    def action_agents(self) -> None:
        from .agents import AgentsScreen

        self.app.push_screen(AgentsScreen(self.run_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "board":
            return (self.report or {}).get("workflow") == "kanban"
        return True

    def action_board(self) -> None:
        from .board import BoardScreen

        if (self.report or {}).get("workflow") == "kanban":
            self.app.push_screen(BoardScreen(self.run_id))

    def action_parent(self) -> None:
        parent = (self.report or {}).get("parent_run_id")
        if parent:
            self.app.open_run(parent)  # type: ignore[attr-defined]
        else:
            self.notify("this run has no parent (it was not forked, rewound or replayed)")

    def action_lineage(self) -> None:
        from .lineage import LineageScreen

        self.app.push_screen(LineageScreen(self.run_id))

    def action_cancel(self) -> None:
        from .confirm import ConfirmScreen

        async def done(ok: bool | None) -> None:
            if ok:
                said = await self.app.attempt(self.host.cancel(self.run_id))  # type: ignore[attr-defined]
                if said:
                    self.notify(f"run {self.run_id}: {said}")

        self.app.push_screen(ConfirmScreen("Cancel run", f"Cancel run {self.run_id}? Steps running now are stopped "
                                           "and the run ends cancelled (fork it to run it again).",
                                           yes="Cancel run", no="Keep it"), done)

    async def action_resume(self) -> None:
        if self.host.executing(self.run_id):
            self.notify(f"run {self.run_id} is already running here")
            return
        await self.app.attempt(self.host.resume(self.run_id))  # type: ignore[attr-defined]
        if self.host.executing(self.run_id):
            self.notify(f"run {self.run_id} resumed here")
        self.reload()

    def palette_commands(self) -> list[Any]:
        frame = self.shown_frame()
        out = [(f"Fork from frame {frame}", "a new run from this frame, with changed input or steps reset",
                self.action_fork),
               (f"Rewind to frame {frame}", "a new run takes over from this frame", self.action_rewind),
               (f"Replay from frame {frame}", "re-execute everything after this frame in a new run", self.action_replay),
               ("Agents", "live output of the agents of this run", self.action_agents),
               ("Lineage", "forks, rewinds and replays around this run", self.action_lineage),
               ("Cancel this run", "stop it for good", self.action_cancel),
               ("Resume this run", "continue it in this app", self.action_resume),
               ("Live", "return to the newest frame", lambda: self.action_jump("last"))]
        if (self.report or {}).get("parent_run_id"):
            out.append((f"Open parent run {self.report['parent_run_id']}", "", self.action_parent))  # type: ignore[index]
        for n in (self.report or {}).get("nodes", []):
            if n["state"] == "waiting_approval":
                out.append((f"Decide gate {key_label(n['id'], n['iteration'])}", "approve or deny", self.action_decide))
        return out

