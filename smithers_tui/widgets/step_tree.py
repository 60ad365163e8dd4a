"""The step tree: every node of a run with its state, grouped as the workflow nests them.

The nesting comes from the workflow's own tree (its outline, rendered by the engine from the run's
saved state), the states from the frame shown. Loops show one group per iteration (or one row per
iteration when the body is a single step); Parallel and Worktree nodes are groups. A row's label
is a pure function of its signature, so an update builds labels only for the rows that changed,
inserts and removes only the rows that appeared or went, and rebuilds only when the order of
rows that stay changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from engine.outline import OutlineNode

from engine.state import Key

from ..runmodel import Rec
from .fmt import NODE_STYLE, Clock, key_label, short_json

Skel = OutlineNode  # the workflow's shape: kind (an engine.outline.Shape), id, children, a loop's limit


@dataclass
class Row:
    path: str
    parent: str | None
    key: Key | None  # the node shown, for leaves and loops/worktrees
    group: bool
    sig: tuple[Any, ...]  # everything the label shows: the label is label_of(sig)
    name: str  # what `/` searches

    @property
    def label(self) -> Text:
        return label_of(self.sig)


def label_of(sig: tuple[Any, ...]) -> Text:
    kind, state, icon, name, extra, changed = sig
    g, c = NODE_STYLE.get(state, ("?", "white"))
    t = Text.assemble((g + " ", f"bold {c}"), (icon, "grey62"), (name, "bold" if kind == "group" or state == "running"
                                                                  else ""))
    if extra:
        t.append("  " + extra, style="grey58")
    if changed:
        t.append("  ◂ changed here", style="bold yellow")
    return t


# Leaves of the tree (one row each) and their icons; a sub-workflow's row holds its child run's rows.
LEAVES = ("task", "gate", "signal", "timer", "human", "subflow", "continue")
ICONS = {"gate": "◇ ", "signal": "⚑ ", "timer": "◷ ", "human": "✎ ", "subflow": "↳ ", "continue": "↻ ",
         "approval": "◇ ", "loop": "⟳ ", "worktree": "⎇ "}


def worst(states: Iterable[str]) -> str:
    s = set(states)
    for state in ("failed", "waiting_approval", "waiting", "running"):
        if state in s:
            return state
    if not s or s <= {"not_yet"}:
        return "not_yet"
    if s <= {"done", "skipped", "cancelled"}:
        return "done" if "done" in s else next(iter(s))
    return "pending" if "pending" in s or "not_yet" in s else "done"


Timing = Callable[[Key], tuple[float | None, float | None]]
LOOP_WINDOW = 200
WAITING_FOR = {"human": "waiting for an answer", "select": "waiting for a choice", "rank": "waiting for a ranking"}


@dataclass
class Extras:
    """What the workflow language adds to a run's rows, beyond its frame: the gates' modes (a choice,
    a ranking, an answer), the steps whose output came from the cache, and the sub-workflows' child
    runs (their nodes and shape, nested under the step that started them; `prefix` is set for the
    rows of a child run)."""

    modes: dict[Key, str] = field(default_factory=dict)
    cached: frozenset[Key] = frozenset()
    subs: dict[str, tuple[dict[Key, Rec], Skel | None]] = field(default_factory=dict)
    prefix: str = ""


class Layout:
    """Rows for the nodes of one frame: records by key, agents by key, when each step ran."""

    def __init__(self, nodes: dict[Key, Rec], agents: dict[Key, str], clock: Clock, timing: Timing,
                 changed: frozenset[Key] = frozenset(), until: float | None = None,
                 reuse: dict[Key, tuple[Any, ...]] | None = None, keep: set[Key] | None = None,
                 expanded: set[str] | None = None, iters: dict[str, set[int]] | None = None,
                 more: Extras | None = None) -> None:
        self.nodes, self.agents, self.clock, self.timing = nodes, agents, clock, timing
        self.changed = changed
        self.until = until  # the past: durations end at the shown frame
        # the leaf signatures of the last layout whose steps did not change since (scrubbing one frame
        # relabels what that frame changed, not the whole tree): the caller leaves out what changed
        self.reuse = reuse or {}
        self.sigs: dict[Key, tuple[Any, ...]] = {}
        # a loop of more than LOOP_WINDOW iterations shows its latest ones, those of the steps in
        # `keep` (chosen, changed at the frame shown, going, failed) and a row for the rest, unless
        # its path is in `expanded`: a tree of 10,000 iterations stays quick to scrub
        self.keep = keep or set()
        self.expanded = expanded or set()
        self.more = more or Extras()
        self.rows: list[Row] = []
        self.placed: set[Key] = set()
        self.folded: set[str] = set()  # node ids whose hidden iterations are accounted for (not "other steps")
        if iters is None:  # node id -> its iterations (the run model keeps this as the view moves)
            iters = {}
            for nid, it in nodes:
                iters.setdefault(nid, set()).add(it)
        self.iters = iters

    # --- labels --------------------------------------------------------------------------------
    def leaf_sig(self, key: Key, name: str, icon: str = "") -> tuple[Any, ...]:
        sig = self.reuse.get(key)
        if sig is None or sig[3] != name or sig[2] != icon:
            sig = self._leaf_sig(key, name, icon)
        self.sigs[key] = sig
        return sig

    def _leaf_sig(self, key: Key, name: str, icon: str) -> tuple[Any, ...]:
        n = self.nodes.get(key)
        state = n.state if n else "not_yet"
        bits = []
        if n and n.attempts > 1:
            bits.append(f"×{n.attempts}")
        if n is not None and key in self.agents:  # started (by the frame shown): its agent
            bits.append(self.agents[key])
        start, end = self.timing(key) if n else (None, None)
        if start:
            bits.append(self.clock.since(start, end or self.until))
        if n:
            bits += self.wait_bits(key, n)
        if n and n.state == "waiting_approval":
            bits.append(WAITING_FOR.get(self.more.modes.get(key, ""), "waiting for approval"))
        elif n and n.error and n.state in ("failed", "pending"):
            bits.append(short_json(n.error, 60))
        return ("leaf", state, icon, name, "  ".join(bits), key in self.changed)

    def wait_bits(self, key: Key, n: Rec) -> list[str]:
        """What a signal, timer, sub-workflow, cached or caught step adds to its row."""
        out: list[str] = []
        d = n.data or {}
        waiting = n.state == "waiting"
        if n.kind == "signal" and waiting:
            out.append(f"waits for signal {d.get('name', key[0])!r}")
        elif n.kind == "timer" and waiting and d.get("due"):
            out.append(f"sleeps until {self.clock.stamp(d['due'])}")
        if n.kind in ("signal", "timer") and d.get("timed_out"):
            out.append("timed out")
        if n.kind == "subflow" and d.get("child"):
            out.append(f"run {d['child']}" + ("  waits for a person" if waiting else ""))
        if key in self.more.cached:
            out.append("cached")
        if d.get("caught"):
            out.append(f"caught by {d['caught']}")
        return out

    def group_sig(self, name: str, icon: str, state: str, extra: str = "", key: Key | None = None) -> tuple[Any, ...]:
        return ("group", state, icon, name, extra, key in self.changed if key else False)

    def add(self, path: str, parent: str | None, sig: tuple[Any, ...], key: Key | None, group: bool) -> None:
        if self.more.prefix:  # a child run's row: shown, not inspected here (enter on the sub-workflow opens it)
            self.rows.append(Row(self.more.prefix + path, self.more.prefix + parent if parent is not None else None,
                                 None, group, sig, sig[3]))
            return
        self.rows.append(Row(path, parent, key, group, sig, sig[3]))

    # --- the walk ------------------------------------------------------------------------------
    def build(self, skel: Skel | None) -> list[Row]:
        if skel is not None:
            self.walk(skel, 0, None, "")
        rest = sorted((nid, it) for nid, its in self.iters.items() if nid not in self.folded
                      for it in its if (nid, it) not in self.placed and (nid, it) in self.nodes)
        if rest:
            parent = None
            if skel is not None:
                parent = "other"
                self.add("other", None, self.group_sig("other steps", "", worst(self.nodes[k].state for k in rest),
                                                       "not in the workflow's current shape"), None, True)
            for k in rest:
                kind = self.nodes[k].kind
                self.add(f"{parent or ''}/{k[0]}#{k[1]}", parent, self.leaf_sig(k, key_label(*k), ICONS.get(kind, "")),
                         k, False)
                self.placed.add(k)
        return self.rows

    def states_of(self, skel: Skel, it: int) -> list[str]:
        if skel.kind in LEAVES and skel.id is not None:
            n = self.nodes.get((skel.id, it))
            return [n.state if n else "not_yet"]
        if skel.kind in ("loop", "wt") and skel.id is not None:
            n = self.nodes.get((skel.id, it))
            if n is not None:
                return [n.state]
        out: list[str] = []
        for c in skel.children:
            out += self.states_of(c, it)
        return out or ["not_yet"]

    def walk(self, skel: Skel, it: int, parent: str | None, path: str, numbered: bool = False) -> None:
        kind, nid, kids = skel.kind, skel.id, skel.children
        if kind == "seq" or nid is None and kind in ("task", "gate", "loop", "wt"):
            for i, c in enumerate(kids):
                self.walk(c, it, parent, sub(path, i, c))
            return
        if kind in LEAVES and nid is not None:
            key = (nid, it)
            self.placed.add(key)
            name = f"{nid} #{it}" if it > 0 or (numbered and it >= 0) else nid
            p = f"{path}/{nid}#{it}"
            n = self.nodes.get(key)
            child = (n.data or {}).get("child") if n is not None and kind == "subflow" else None
            nested = child is not None and child in self.more.subs
            self.add(p, parent, self.leaf_sig(key, name, ICONS.get(kind, "")), key, nested)
            if child is not None and nested:
                self.child_rows(child, self.more.prefix + p)
            return
        if kind in ("try", "saga"):
            self.handling(skel, it, parent, path)
            return
        if kind == "par":
            p = f"{path}/par"
            self.add(p, parent, self.group_sig("parallel", "⇉ ", worst(self.states_of(skel, it)), f"{len(kids)} steps"),
                     None, True)
            for i, c in enumerate(kids):
                self.walk(c, it, p, sub(p, i, c))
            return
        if kind == "wt" and nid is not None:
            key = (nid, it)
            self.placed.add(key)
            n = self.nodes.get(key)
            p = f"{path}/{nid}#{it}"
            state = worst([n.state] if n else self.states_of(skel, it))
            where = str(((n.data if n else None) or {}).get("path", ""))
            self.add(p, parent, self.group_sig(nid, "⎇ ", state, where, key), key, True)
            for i, c in enumerate(kids):
                self.walk(c, it, p, sub(p, i, c))
            return
        if kind == "loop":
            self.loop(skel, it, parent, path)

    def child_rows(self, child: str, under: str) -> None:
        """A sub-workflow's child run, its rows nested under the step that started it."""
        nodes, skel = self.more.subs[child]
        inner = Layout(nodes, {}, self.clock, lambda _k: (None, None), until=self.until,
                       more=Extras(subs=self.more.subs, prefix=under + "/" + child))
        for r in inner.build(skel):
            self.rows.append(Row(r.path, r.parent or under, None, r.group, r.sig, r.name))

    def handling(self, skel: Skel, it: int, parent: str | None, path: str) -> None:
        """TryCatchFinally (parts try, catch, finally) and Saga (action, compensation pairs) as groups."""
        kind, nid, kids = skel.kind, skel.id, skel.children
        p = f"{path}/{kind}{'#' + nid if nid else ''}"
        key = (nid, it) if nid is not None else None
        n = self.nodes.get(key) if key is not None else None
        if key is not None:
            self.placed.add(key)
        states = [s for c in kids for s in self.states_of(c, it)]
        if kind == "saga":
            phase = str((n.data or {}).get("phase", "")) if n is not None else ""
            self.add(p, parent, self.group_sig(nid or "saga", "⇄ ", n.state if n else worst(states), phase, key),
                     key if n else None, True)
            for i, c in enumerate(kids):
                if c.kind == "seq" and not c.children:
                    continue  # no compensation for this action
                if i % 2:
                    cp = f"{p}/undo{i}"
                    self.add(cp, p, self.group_sig("compensation", "↺ ", worst(self.states_of(c, it))), None, True)
                    self.walk(c, it, cp, sub(cp, i, c))
                else:
                    self.walk(c, it, p, sub(p, i, c))
            return
        self.add(p, parent, self.group_sig(nid or "try", "⚠ ", worst(states), "try · catch · finally", key),
                 key if n else None, True)
        for i, (part, c) in enumerate(zip(("try", "catch", "finally"), kids)):
            if c.kind == "seq" and not c.children:
                continue
            pp = f"{p}/{part}"
            self.add(pp, p, self.group_sig(part, "", worst(self.states_of(c, it))), None, True)
            self.walk(c, it, pp, sub(pp, i, c))

    def members(self, kids: tuple[Skel, ...]) -> list[str]:
        out: list[str] = []
        for s in kids:
            if s.id is not None and (s.kind in LEAVES or s.kind in ("loop", "wt")):
                out.append(s.id)
            if s.kind not in LEAVES and s.kind != "loop":
                out += self.members(s.children)
        return out

    def loop(self, skel: Skel, it: int, parent: str | None, path: str) -> None:
        nid, kids = skel.id, skel.children
        assert nid is not None
        key = (nid, it)
        self.placed.add(key)
        n = self.nodes.get(key)
        cur = (n.data or {}).get("iteration") if n else None
        members = self.members(kids)
        its = sorted({k for m in members for k in self.iters.get(m, ())} | ({cur} if cur is not None else set()))
        instances = sorted(self.iters.get(nid, ()))
        if len(instances) > 1 and cur is not None:  # a nested loop: keep this instance's iterations
            lower = max(((self.nodes[(nid, i)].data or {}).get("iteration") or -1 for i in instances if i < it),
                        default=-1)
            its = [k for k in its if lower < k <= cur]
        p = f"{path}/{nid}#{it}"
        state = n.state if n else "not_yet"
        if state == "running" and self.states_of(skel, cur if cur is not None else it) == ["waiting_approval"]:
            state = "waiting_approval"
        if n is None:
            extra = "not started"
        else:
            extra = f"{len(its)} iteration{'s' if len(its) != 1 else ''}"
            if skel.limit and state not in ("done", "failed", "skipped", "cancelled"):
                extra += f" of at most {skel.limit}"
        self.add(p, parent, self.group_sig(nid, "⟳ ", state, extra, key), key, True)
        if not its:
            for i, c in enumerate(kids):
                self.walk(c, 0, p, sub(p, i, c))
            return
        single = len(kids) == 1 and kids[0].kind in LEAVES and kids[0].kind != "subflow"
        if len(its) > LOOP_WINDOW and p not in self.expanded:
            mine = set(members)
            wanted = set(its[-LOOP_WINDOW:]) | {k[1] for k in self.keep if k[0] in mine}
            hidden = len(its) - len(wanted & set(its))
            self.folded.update(members)  # their hidden iterations are not "other steps"
            self.placed.update(k for k in self.keep if k[0] in mine)
            its = sorted(wanted & set(its))
            if hidden:
                mp = self.more.prefix
                self.rows.append(Row(f"{mp}{p}/more", mp + p, None, False, (
                    "more", "hidden", "", f"{hidden:,} more iterations", "enter shows them all", False), "more"))
        for k in its:
            if single:
                self.walk(kids[0], k, p, p, numbered=True)
            else:
                ip = f"{p}/it{k}"
                self.add(ip, p, self.group_sig(f"iteration {k}", "", worst(s for c in kids for s in self.states_of(c, k))),
                         None, True)
                for i, c in enumerate(kids):
                    self.walk(c, k, ip, sub(ip, i, c))


def sub(path: str, i: int, child: Skel) -> str:
    """The path prefix for a child: named children are unique by id, unnamed ones by position."""
    return path if child.id is not None else f"{path}/{i}"


class StepTree(Tree[Row]):
    """A Tree of Rows; `show(rows)` relabels, inserts and removes in place, keeping folds and the cursor."""

    DEFAULT_CSS = "StepTree { scrollbar-size-vertical: 1; overflow-x: hidden; }"
    _patching = False  # rows being patched (show)...
    _patched = False  # ...and the tree changed meanwhile

    def __init__(self, **kw: Any) -> None:
        super().__init__("run", **kw)
        self.show_root = False
        self.guide_depth = 3
        self.auto_expand = False
        self._rows: list[Row] = []
        self._by_path: dict[str, TreeNode[Row]] = {}
        self.collapsed: set[str] = set()
        self.drawn_cursor = -1
        self._drawn_rows: dict[tuple[Any, ...], tuple[int, Strip]] = {}  # a row's drawing, the line it was drawn at
        self._base_style: Style | None = None

    def get_label_width(self, node: TreeNode[Row]) -> int:
        """Not measured: the tree never scrolls sideways (overflow-x hidden), and a width that follows
        its labels (a duration ticking, a step's note) would change its virtual size, and with it lay
        out the whole screen again, on every relabel."""
        return 1

    def _invalidate(self) -> None:
        """Rows added or removed: draw the tree again. Textual's Tree also lays out the whole screen
        here; the tree's box does not change with its rows (a change of its virtual size, when the
        number of rows changes, still asks for a layout itself), and on a long run scrubbed by a
        key held down that layout was most of the cost of following. Rows patched in one go
        (`show`) invalidate once, at the end."""
        if self._patching:
            self._patched = True
            return
        self._clear_line_cache()
        self._updates += 1
        self.root._reset()
        self.refresh()

    def on_tree_node_collapsed(self, event: Tree.NodeCollapsed[Row]) -> None:
        if event.node.data is not None:
            self.collapsed.add(event.node.data.path)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Row]) -> None:
        if event.node.data is not None:
            self.collapsed.discard(event.node.data.path)

    def render_lines(self, crop: Region) -> list[Strip]:
        self._base_style = self.rich_style  # once per repaint, not once per line
        try:
            lines = super().render_lines(crop)
        finally:
            self._base_style = None
        self.drawn_cursor = self.cursor_line  # the cursor as the screen shows it (the benchmark waits on it)
        return lines

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        return self._render_line(y + scroll_y, scroll_x, scroll_x + self.size.width, self._base_style or self.rich_style)

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        """A row drawn once while it shows the same: Textual's Tree forgets every drawn line when a
        row is added or removed, and a live loop adds rows a few times a second, moving every row
        below; here a row moved to another line is the same drawing, told its new line number
        (the mouse reads it), and only new or changed rows are drawn."""
        lines = self._tree_lines
        if y >= len(lines):
            return super()._render_line(y, x1, x2, base_style)
        line = lines[y]
        is_hover = self.hover_line >= 0 and any(n._hover for n in line.path)
        node = line.path[-1]  # its drawing: its own label and state, and of its ancestors what the guides show
        key = (node._id, node._updates, tuple((n._id, n._hover_, n._selected_, n.is_last) for n in line.path),
               line.last, is_hover, self.hover_line == y,
               self.cursor_line == y, x1, x2, self.virtual_size.width, self._pseudo_class_state, self.has_focus,
               self.guide_depth, self.show_root, self.show_guides, base_style)
        hit = self._drawn_rows.get(key)
        if hit is None:
            strip = super()._render_line(y, x1, x2, base_style)
            if len(self._drawn_rows) > 4096:
                self._drawn_rows.clear()
            self._drawn_rows[key] = (y, strip)
            return strip
        drawn_at, strip = hit
        if drawn_at == y:
            return strip
        return Strip(Segment.apply_style(strip, post_style=Style.from_meta({"line": y})), strip.cell_length)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._drawn_rows.clear()

    @property
    def rows(self) -> list[Row]:
        return self._rows

    @property
    def selected_row(self) -> Row | None:
        node = self.cursor_node
        return node.data if node is not None else None

    def show(self, rows: list[Row]) -> None:
        self._patching, self._patched = True, False
        try:
            self._show(rows)
        finally:
            self._patching = False
            if self._patched:
                self._invalidate()

    def _show(self, rows: list[Row]) -> None:
        old = {r.path: r for r in self._rows}
        if [r.path for r in rows] == [r.path for r in self._rows]:
            for new in rows:
                tn = self._by_path[new.path]
                if old[new.path].sig != new.sig:
                    tn.set_label(new.label)
                tn.data = new
            self._rows = rows
            return
        if not self._rows or not self._patch(rows, old):
            self._rebuild(rows)

    def _patch(self, rows: list[Row], old: dict[str, Row]) -> bool:
        """Remove the rows that went, insert the new ones where they belong, relabel the rest.
        False when rows that stay changed order or parent (then the caller rebuilds)."""
        new_paths = {r.path for r in rows}
        kids: dict[str | None, list[str]] = {}
        for r in rows:
            kids.setdefault(r.parent, []).append(r.path)
        for r in rows:
            o = old.get(r.path)
            if o is not None and o.parent != r.parent:
                return False
        for path, kept in kids.items():
            before = [p for p in (self._children_paths(path)) if p in new_paths]
            if [p for p in kept if p in old] != before:
                return False
        where: dict[str | None, dict[str, int]] = {}  # parent -> child path -> its position
        cursor = self.cursor_node
        for path in [p for p in old if p not in new_paths]:
            tn = self._by_path.pop(path, None)
            if tn is not None and tn.tree is self and tn.parent is not None:
                if tn is cursor:
                    cursor = tn.parent if tn.parent is not self.root else None
                tn.remove()
        for r in rows:
            tn = self._by_path.get(r.path)
            if tn is None:
                parent = self._by_path.get(r.parent) if r.parent else self.root
                if parent is None:
                    return False
                if r.parent not in where:
                    where[r.parent] = {p: i for i, p in enumerate(kids[r.parent])}
                index = where[r.parent][r.path]
                kw: dict[str, Any] = {"before": index} if index < len(parent.children) else {}
                if r.group:
                    tn = parent.add(r.label, data=r, expand=r.path not in self.collapsed, **kw)
                else:
                    tn = parent.add_leaf(r.label, data=r, **kw)
                self._by_path[r.path] = tn
            else:
                if old[r.path].sig != r.sig:
                    tn.set_label(r.label)
                tn.data = r
        self._rows = rows
        if cursor is not None and self.cursor_node is not cursor and cursor.tree is self:
            self.call_after_refresh(self.move_cursor, cursor)
        return True

    def _children_paths(self, parent: str | None) -> list[str]:
        node = self._by_path.get(parent) if parent else self.root
        return [c.data.path for c in node.children if c.data is not None] if node is not None else []

    def _rebuild(self, rows: list[Row]) -> None:
        cursor = self.selected_row.path if self.selected_row else None
        old_line = self.cursor_line
        self.clear()
        self._by_path = {}
        with self.app.batch_update():
            for r in rows:
                parent = self._by_path.get(r.parent) if r.parent else self.root
                if parent is None:
                    parent = self.root
                if r.group:
                    tn = parent.add(r.label, data=r, expand=r.path not in self.collapsed)
                else:
                    tn = parent.add_leaf(r.label, data=r)
                self._by_path[r.path] = tn
        self.root.expand()
        self._rows = rows
        target = self._by_path.get(cursor) if cursor else None
        if target is not None:
            self.call_after_refresh(self.move_cursor, target)
        elif old_line >= 0 and rows:
            self.call_after_refresh(self.move_cursor_to_line, min(old_line, len(rows) - 1))

    def node_of(self, key: Key) -> TreeNode[Row] | None:
        return next((tn for tn in self._by_path.values() if tn.data is not None and tn.data.key == key), None)

    def select_key(self, key: Key) -> bool:
        tn = self.node_of(key)
        if tn is None:
            return False
        self.select_node_of(tn)
        return True

    def select_node_of(self, tn: TreeNode[Row]) -> None:
        """Move the cursor to a node, unfolding its parents, and scroll it into view."""
        p = tn.parent
        while p is not None and p is not self.root:
            if not p.is_expanded:
                p.expand()
            p = p.parent
        self.move_cursor(tn)
        self.scroll_to_node(tn, animate=False)
