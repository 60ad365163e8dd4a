"""The step tree: every node of a run with its state, grouped as the workflow nests them.

The nesting comes from the workflow's own tree (rendered once from the run's saved state, see
`skeleton`), the states from the run report. Loops show one group per iteration (or one row
per iteration when the body is a single step); Parallel and Worktree nodes are groups. Updates
only relabel rows unless the set of rows changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from .fmt import NODE_STYLE, Clock, short_json

Key = tuple[str, int]
Skel = tuple[str, "str | None", tuple]  # kind (task|gate|loop|par|wt|seq), id, children


def skeleton(node: Any) -> Skel:
    """The shape of a rendered workflow tree (engine.dsl nodes)."""
    name = type(node).__name__
    if name == "Branch":
        chosen = node.chosen()
        return skeleton(chosen) if chosen is not None else ("seq", None, ())
    kind = {"Task": "task", "Approval": "gate", "Loop": "loop", "Parallel": "par", "Worktree": "wt", "Signal": "signal",
            "Timer": "timer", "HumanTask": "human", "Subflow": "subflow", "ContinueAsNew": "continue"}.get(name, "seq")
    return kind, getattr(node, "id", None), tuple(skeleton(c) for c in node.children())


@dataclass
class Row:
    path: str
    parent: str | None
    label: Text
    key: Key | None  # the node shown, for leaves and loops/worktrees
    group: bool
    sig: tuple  # what the label depends on


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


class Layout:
    """Rows for a report: node dicts by key, attempt info by key."""

    def __init__(self, nodes: dict[Key, dict[str, Any]], info: dict[Key, dict[str, Any]], clock: Clock,
                 past: bool = False, subs: dict[str, tuple[dict[Key, dict[str, Any]], Any]] | None = None,
                 prefix: str = "", gates: dict[Key, dict[str, Any]] | None = None) -> None:
        self.nodes, self.info, self.clock, self.past = nodes, info, clock, past
        self.subs = subs or {}  # a sub-workflow's child run id -> (its nodes, its shape)
        self.prefix = prefix  # rows of a child run live under their parent's row
        self.gates = gates or {}  # key -> the gate (its mode) as the report has it
        self.rows: list[Row] = []
        self.placed: set[Key] = set()
        self.iters: dict[str, list[int]] = {}
        for nid, it in nodes:
            self.iters.setdefault(nid, []).append(it)

    # --- labels --------------------------------------------------------------------------------
    def leaf_label(self, key: Key, name: str, icon: str = "") -> tuple[Text, tuple]:
        n = self.nodes.get(key)
        state = n["state"] if n else "not_yet"
        g, c = NODE_STYLE.get(state, ("?", "white"))
        info = self.info.get(key, {})
        t = Text.assemble((g + " ", f"bold {c}"), (icon, "grey62"), (name, "bold" if state == "running" else ""))
        bits = []
        if n and n["attempts"] > 1:
            bits.append(f"×{n['attempts']}")
        if info.get("agent"):
            bits.append(info["agent"] + (f"/{info['model']}" if info.get("model") and info["model"] != info["agent"]
                                         else ""))
        if info.get("started"):
            bits.append(self.clock.since(info["started"], info.get("finished")))
        if n:
            bits += self.wait_bits(key, n)
        if n and n["state"] == "waiting_approval":
            mode = (self.gates.get(key) or {}).get("mode")
            bits.append({"human": "waiting for an answer", "select": "waiting for a choice",
                         "rank": "waiting for a ranking"}.get(mode or "", "waiting for approval"))
        elif n and n.get("error") and n["state"] in ("failed", "pending"):
            bits.append(short_json(n["error"], 50))
        if bits:
            t.append("  " + "  ".join(bits), style="grey58")
        sig = (state, n["attempts"] if n else 0, tuple(bits))
        return t, sig

    def wait_bits(self, key: Key, n: dict[str, Any]) -> list[str]:
        """What a signal, timer, sub-workflow, cached or caught step adds to its row."""
        out: list[str] = []
        wait = n.get("wait") or {}
        if n["kind"] == "signal" and n["state"] == "waiting":
            out.append(f"waits for signal {wait.get('name', key[0])!r}")
        elif n["kind"] == "timer" and n["state"] == "waiting" and wait.get("due"):
            out.append(f"sleeps until {self.clock.stamp(wait['due'])}")
        if wait.get("timed_out"):
            out.append("timed out")
        if n.get("child_run_id"):
            out.append(f"run {n['child_run_id']}" + ("  waits for a person" if n["state"] == "waiting" else ""))
        if n.get("cache") == "hit":
            out.append("cached")
        if n.get("caught"):
            out.append(f"caught by {n['caught']}")
        return out

    def group_label(self, name: str, icon: str, state: str, extra: str = "") -> tuple[Text, tuple]:
        g, c = NODE_STYLE.get(state, ("?", "white"))
        t = Text.assemble((g + " ", f"bold {c}"), (icon, "grey62"), (name, "bold"))
        if extra:
            t.append("  " + extra, style="grey58")
        return t, (state, extra)

    def add(self, path: str, parent: str | None, label: tuple[Text, tuple], key: Key | None, group: bool) -> None:
        if self.prefix:  # a child run's row: shown, not inspected here (enter on the sub-workflow opens it)
            self.rows.append(Row(self.prefix + path, self.prefix + parent if parent is not None else None, label[0],
                                 None, group, label[1]))
            return
        self.rows.append(Row(path, parent, label[0], key, group, label[1]))

    # --- the walk ------------------------------------------------------------------------------
    def build(self, skel: Skel | None) -> list[Row]:
        if skel is not None:
            self.walk(skel, 0, None, "")
        rest = sorted((k for k in self.nodes if k not in self.placed), key=lambda k: (k[0], k[1]))
        if rest:
            parent = None
            if skel is not None:
                parent = "other"
                self.add("other", None, self.group_label("other steps", "", worst(self.nodes[k]["state"] for k in rest),
                                                         "not in the workflow's current shape"), None, True)
            for k in rest:
                kind = self.nodes[k]["kind"]
                icon = ICONS.get(kind, "")
                name = f"{k[0]} #{k[1]}" if len(self.iters.get(k[0], ())) > 1 or k[1] else k[0]
                self.add(f"{parent or ''}/{k[0]}#{k[1]}", parent, self.leaf_label(k, name, icon), k, False)
                self.placed.add(k)
        return self.rows

    def states_of(self, skel: Skel, it: int) -> list[str]:
        kind, nid, kids = skel
        if kind in LEAVES:
            n = self.nodes.get((nid, it))  # type: ignore[arg-type]
            return [n["state"] if n else "not_yet"]
        if kind in ("loop", "wt") and nid is not None:
            n = self.nodes.get((nid, it))
            if n is not None:
                return [n["state"]]
        out: list[str] = []
        for c in kids:
            out += self.states_of(c, it)
        return out or ["not_yet"]

    def walk(self, skel: Skel, it: int, parent: str | None, path: str, numbered: bool = False) -> None:
        kind, nid, kids = skel
        if kind == "seq":
            for i, c in enumerate(kids):
                self.walk(c, it, parent, sub(path, i, c))
            return
        if kind in LEAVES:
            key = (nid, it)
            self.placed.add(key)  # type: ignore[arg-type]
            name = f"{nid} #{it}" if it > 0 or (numbered and it >= 0) else nid
            p = f"{path}/{nid}#{it}"
            n = self.nodes.get(key)  # type: ignore[arg-type]
            child = (n or {}).get("child_run_id")
            nested = kind == "subflow" and child in self.subs
            self.add(p, parent, self.leaf_label(key, name, ICONS.get(kind, "")), key, nested)  # type: ignore[arg-type]
            if nested:
                self.child_rows(child, self.prefix + p)
            return
        if kind in ("try", "saga"):
            self.handling(skel, it, parent, path)
            return
        if kind == "par":
            p = f"{path}/par"
            self.add(p, parent, self.group_label("parallel", "⇉ ", worst(self.states_of(skel, it)), f"{len(kids)} steps"),
                     None, True)
            for i, c in enumerate(kids):
                self.walk(c, it, p, sub(p, i, c))
            return
        if kind == "wt":
            key = (nid, it)
            self.placed.add(key)  # type: ignore[arg-type]
            n = self.nodes.get(key)  # type: ignore[arg-type]
            p = f"{path}/{nid}#{it}"
            state = worst([n["state"]] if n else self.states_of(skel, it))
            where = ((n or {}).get("worktree") or {}).get("path", "")
            self.add(p, parent, self.group_label(nid or "", "⎇ ", state, where), key, True)  # type: ignore[arg-type]
            for i, c in enumerate(kids):
                self.walk(c, it, p, sub(p, i, c))
            return
        if kind == "loop":
            self.loop(skel, it, parent, path)

    def child_rows(self, child: str, under: str) -> None:
        """A sub-workflow's child run, its rows nested under the step that started it."""
        nodes, skel = self.subs[child]
        inner = Layout(nodes, {}, self.clock, self.past, self.subs, prefix=under + "/" + child)
        for r in inner.build(skel):
            self.rows.append(Row(r.path, r.parent or under, r.label, None, r.group, r.sig))

    def handling(self, skel: Skel, it: int, parent: str | None, path: str) -> None:
        """TryCatchFinally (parts try, catch, finally) and Saga (action, compensation pairs) as groups."""
        kind, nid, kids = skel
        p = f"{path}/{kind}{'#' + nid if nid else ''}"
        if kind == "saga":
            n = self.nodes.get((nid, it))  # type: ignore[arg-type]
            phase = ((n or {}).get("saga") or {}).get("phase", "")
            state = n["state"] if n else worst(s for c in kids for s in self.states_of(c, it))
            self.add(p, parent, self.group_label(nid or "saga", "⇄ ", state, phase), (nid, it) if n else None, True)  # type: ignore[arg-type]
            for i, c in enumerate(kids):
                if c[0] == "seq" and not c[2]:
                    continue  # no compensation for this action
                if i % 2:
                    cp = f"{p}/undo{i}"
                    self.add(cp, p, self.group_label("compensation", "↺ ", worst(self.states_of(c, it))), None, True)
                    self.walk(c, it, cp, sub(cp, i, c))
                else:
                    self.walk(c, it, p, sub(p, i, c))
            return
        states = [s for c in kids for s in self.states_of(c, it)]
        self.add(p, parent, self.group_label(nid or "try", "⚠ ", worst(states), "try · catch · finally"), None, True)
        for i, (part, c) in enumerate(zip(("try", "catch", "finally"), kids)):
            if c[0] == "seq" and not c[2]:
                continue
            pp = f"{p}/{part}"
            self.add(pp, p, self.group_label(part, "", worst(self.states_of(c, it))), None, True)
            self.walk(c, it, pp, sub(pp, i, c))

    def members(self, kids: tuple) -> list[str]:
        out: list[str] = []
        for kind, nid, sub in kids:
            if nid is not None and (kind in LEAVES or kind in ("loop", "wt")):
                out.append(nid)
            if kind not in LEAVES and kind != "loop":
                out += self.members(sub)
        return out

    def loop(self, skel: Skel, it: int, parent: str | None, path: str) -> None:
        _, nid, kids = skel
        key = (nid, it)
        self.placed.add(key)  # type: ignore[arg-type]
        n = self.nodes.get(key)  # type: ignore[arg-type]
        cur = n.get("loop_iteration") if n else None
        members = self.members(kids)
        its = sorted({k for m in members for k in self.iters.get(m, ())} | ({cur} if cur is not None else set()))
        instances = sorted(k[1] for k in self.nodes if k[0] == nid and self.nodes[k]["kind"] == "loop")
        if len(instances) > 1 and cur is not None:  # a nested loop: keep this instance's iterations
            lower = max((self.nodes[(nid, i)].get("loop_iteration") or -1 for i in instances if i < it), default=-1)
            its = [k for k in its if lower < k <= cur]
        p = f"{path}/{nid}#{it}"
        state = n["state"] if n else "not_yet"
        if state == "running" and self.states_of(skel, cur if cur is not None else it) == ["waiting_approval"]:
            state = "waiting_approval"
        extra = f"{len(its)} iteration{'s' if len(its) != 1 else ''}" if n else "not started"
        self.add(p, parent, self.group_label(nid or "", "⟳ ", state, extra), key, True)  # type: ignore[arg-type]
        if not its:
            for i, c in enumerate(kids):
                self.walk(c, -1 if n is None else it, p, sub(p, i, c))
            return
        single = len(kids) == 1 and kids[0][0] in LEAVES and kids[0][0] != "subflow"
        for k in its:
            if single:
                self.walk(kids[0], k, p, p, numbered=True)
            else:
                ip = f"{p}/it{k}"
                self.add(ip, p, self.group_label(f"iteration {k}", "", worst(s for c in kids for s in self.states_of(c, k))),
                         None, True)
                for i, c in enumerate(kids):
                    self.walk(c, k, ip, sub(ip, i, c))


def sub(path: str, i: int, child: Skel) -> str:
    """The path prefix for a child: named children are unique by id, unnamed ones by position."""
    return path if child[1] is not None else f"{path}/{i}"


class StepTree(Tree[Any]):
    """A Tree of Rows; `show(rows)` relabels in place, or rebuilds keeping folds and the cursor."""

    DEFAULT_CSS = "StepTree { scrollbar-size-vertical: 1; }"

    def __init__(self, **kw: Any) -> None:
        super().__init__("run", **kw)
        self.show_root = False
        self.guide_depth = 3
        self.auto_expand = False
        self._rows: list[Row] = []
        self._by_path: dict[str, TreeNode[Any]] = {}
        self.collapsed: set[str] = set()

    def on_tree_node_collapsed(self, event: Tree.NodeCollapsed[Any]) -> None:
        if event.node.data is not None:
            self.collapsed.add(event.node.data.path)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Any]) -> None:
        if event.node.data is not None:
            self.collapsed.discard(event.node.data.path)

    @property
    def selected_row(self) -> Row | None:
        node = self.cursor_node
        return node.data if node is not None else None

    def show(self, rows: list[Row]) -> None:
        if [r.path for r in rows] == [r.path for r in self._rows]:
            for old, new in zip(self._rows, rows):
                if old.sig != new.sig:
                    tn = self._by_path[new.path]
                    tn.data = new
                    tn.set_label(new.label)
                else:
                    self._by_path[new.path].data = new
            self._rows = rows
            return
        self._rebuild(rows)

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

    def select_key(self, key: Key) -> bool:
        for tn in self._by_path.values():
            if tn.data is not None and tn.data.key == key:
                self.move_cursor(tn)
                return True
        return False
