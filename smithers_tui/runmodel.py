"""A run as the app holds it: every frame's changes, the node states at the live frame and at the
frame shown, and when each step started and ended — built from the frames themselves, one frame
at a time, so following a long run costs what the new frames cost, and scrubbing one frame back
or forth costs what that frame changed (each frame keeps the records it replaced).

Pure: no I/O, no Textual. The run screen feeds it the frames the store reads (`add`) and moves
the shown frame (`seek`).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from engine.state import Key, NodeRecord

if TYPE_CHECKING:
    from engine.frame import FrameDelta

Rec = NodeRecord  # a node's record in a frame: kind, state, attempts, error, data (loop counters, worktree)

FINAL = ("done", "failed", "skipped", "cancelled")

# What a frame did, most telling first: its timeline glyph and colour.
CLASSES: dict[str, tuple[str, str]] = {
    "fail": ("✖", "red1"),
    "gate": ("◆", "yellow"),
    "decision": ("◈", "gold1"),
    "fork": ("⑂", "magenta"),
    "retry": ("↻", "orange3"),
    "cancel": ("⊘", "grey58"),
    "finish": ("✔", "green3"),
    "start": ("▸", "dodger_blue1"),
    "other": ("·", "grey42"),
}
ORDER = list(CLASSES)


@dataclass(slots=True)
class Mark:
    """One frame on the timeline."""

    frame: int
    at: float
    cls: str  # a key of CLASSES
    kinds: frozenset[str]  # every class this frame belongs to
    what: str  # one line: what changed
    keys: tuple[Key, ...] = ()  # the nodes it changed

    @property
    def glyph(self) -> str:
        return CLASSES[self.cls][0]

    @property
    def colour(self) -> str:
        return CLASSES[self.cls][1]


def name_of(key: Key) -> str:
    return key[0] if key[1] == 0 else f"{key[0]}[{key[1]}]"


def classify(frame: int, at: float, delta: FrameDelta, changes: dict[Key, Rec],
             prev: dict[Key, Rec | None]) -> Mark:
    kinds: set[str] = set()
    by_state: dict[str, list[str]] = {}
    for key, rec in changes.items():
        if rec.kind == "loop":
            continue
        old = prev.get(key)
        by_state.setdefault(rec.state, []).append(name_of(key))
        if rec.state == "failed":
            kinds.add("fail")
        elif rec.state == "waiting_approval":
            kinds.add("gate")
        elif rec.state == "running":
            kinds.add("retry" if rec.attempts > 1 else "start")
        elif rec.state == "pending" and old is not None and old.state == "running" and rec.error:
            kinds.add("retry")
        elif rec.state in ("done", "skipped"):
            kinds.add("finish")
        elif rec.state == "cancelled":
            kinds.add("cancel")
        if old is not None and old.state == "waiting_approval" and rec.state != "waiting_approval":
            kinds.add("decision")
    status = delta.status
    parts = []
    if delta.fork is not None:
        f = delta.fork
        kinds.add("fork")
        parts.append(f"{f.get('kind', 'fork')} of {f.get('from_run')} at frame {f.get('from_frame')}: "
                     f"{f.get('carried', 0)} outputs carried")
    if status == "failed":
        kinds.add("fail")
    elif status == "cancelled":
        kinds.add("cancel")
    for state, verb in (("failed", "failed"), ("waiting_approval", "waits for approval"), ("done", "done"),
                        ("running", "started"), ("skipped", "skipped"), ("pending", "pending"),
                        ("cancelled", "cancelled")):
        names = by_state.get(state)
        if names:
            shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
            parts.append(f"{shown} {verb}")
    if status:
        parts.append(f"run {status}")
    what = "; ".join(parts) or ("run started" if frame == 0 else "bookkeeping")
    cls = next((c for c in ORDER if c in kinds), "other")
    return Mark(frame, at, cls, frozenset(kinds), what, tuple(changes))


@dataclass
class RunModel:
    """Frames 0..last of one run. `live` is the state at the last frame, `view` at `view_frame`."""

    base: dict[Key, Rec] = field(default_factory=dict)  # the state at frame 0 (a fork's carried nodes)
    marks: list[Mark] = field(default_factory=list)
    changes: list[dict[Key, Rec]] = field(default_factory=list)
    prevs: list[dict[Key, Rec | None]] = field(default_factory=list)
    live: dict[Key, Rec] = field(default_factory=dict)
    view: dict[Key, Rec] = field(default_factory=dict)
    view_frame: int = 0
    following: bool = True  # the view moves with new frames
    history: dict[Key, list[tuple[int, str]]] = field(default_factory=dict)  # node -> (frame, state) changes
    statuses: list[str] = field(default_factory=list)  # the run's status at each frame
    iters: dict[str, set[int]] = field(default_factory=dict)  # node id -> its iterations in the view
    steps: int = 0  # steps (tasks and gates) in the view ...
    done: int = 0  # ... and how many of them are done or skipped: counted as the view moves
    by_state: dict[str, set[Key]] = field(default_factory=dict)  # state -> the view's nodes in it

    def __post_init__(self) -> None:
        self.live = dict(self.base)
        for key, rec in self.base.items():
            self.history[key] = [(0, rec.state)]
        self._view_from(self.base)

    def _view_from(self, nodes: dict[Key, Rec]) -> None:
        """The view set to `nodes`, with what is kept along with it (counts, iterations, states)."""
        self.view, self.iters, self.by_state = {}, {}, {}
        self.steps = self.done = 0
        for key, rec in nodes.items():
            self._set_view(key, rec)

    def _count(self, old: Rec | None, new: Rec | None) -> None:
        for rec, sign in ((old, -1), (new, 1)):
            if rec is not None and rec.kind in ("task", "approval"):
                self.steps += sign
                self.done += sign if rec.state in ("done", "skipped") else 0

    def in_states(self, *states: str) -> set[Key]:
        """The view's nodes in any of `states` (kept as the view moves: a 10,000-node view is not scanned)."""
        out: set[Key] = set()
        for state in states:
            out |= self.by_state.get(state, set())
        return out

    def _set_view(self, key: Key, rec: Rec | None) -> None:
        old = self.view.get(key)
        self._count(old, rec)
        if old is not None:
            self.by_state[old.state].discard(key)
        if rec is not None:
            self.by_state.setdefault(rec.state, set()).add(key)
        if rec is None:
            self.view.pop(key, None)
            its = self.iters.get(key[0])
            if its is not None:
                its.discard(key[1])
        else:
            self.view[key] = rec
            self.iters.setdefault(key[0], set()).add(key[1])

    @property
    def last(self) -> int:
        return len(self.marks) - 1

    def at(self, frame: int) -> float:
        return self.marks[frame].at if 0 <= frame < len(self.marks) else 0.0

    def add(self, frame: int, at: float, delta: FrameDelta) -> Mark | None:
        """Append frame `frame` (frames come in order; one already held is ignored)."""
        if frame != len(self.marks):
            return None
        changes = dict(delta.nodes)
        prev = {k: self.live.get(k) for k in changes}
        for key, rec in changes.items():
            self.live[key] = rec
            h = self.history.setdefault(key, [])
            if not h or h[-1][1] != rec.state or rec.state == "running":
                h.append((frame, rec.state))
        mark = classify(frame, at, delta, changes, prev)
        self.marks.append(mark)
        self.statuses.append(str(delta.status or (self.statuses[-1] if self.statuses else "running")))
        self.changes.append(changes)
        self.prevs.append(prev)
        if self.following:
            for key, rec in changes.items():
                self._set_view(key, rec)
            self.view_frame = frame
        return mark

    def seek(self, frame: int | None) -> None:
        """Show frame `frame` (None: the live frame, following new ones)."""
        if not self.marks:
            return
        self.following = frame is None
        target = self.last if frame is None else max(0, min(self.last, frame))
        if target < self.view_frame - target:  # nearer from frame 0 than from here
            self._view_from({**self.base, **self.changes[0]})
            self.view_frame = 0
        while self.view_frame < target:
            self.view_frame += 1
            for key, rec in self.changes[self.view_frame].items():
                self._set_view(key, rec)
        while self.view_frame > target:
            for key, old in self.prevs[self.view_frame].items():
                self._set_view(key, old)
            self.view_frame -= 1

    # --- questions the screens ask -------------------------------------------------------------
    def timing(self, key: Key, frame: int) -> tuple[float | None, float | None]:
        """When `key`'s latest attempt as of `frame` started, and when it ended (None: not yet)."""
        h = self.history.get(key)
        if not h:
            return None, None
        i = bisect.bisect_right(h, (frame, "~")) - 1
        if i < 0:
            return None, None
        f, state = h[i]
        if state == "running":
            return self.at(f), None
        j = i
        while j >= 0 and h[j][1] != "running":
            j -= 1
        if j < 0:
            return None, None
        return self.at(h[j][0]), self.at(f) if state in FINAL or state == "pending" else None

    def find(self, start: int, step: int, wanted: Callable[[Mark], bool]) -> int | None:
        """The next frame after `start` in direction `step` (+1 / -1) whose mark is wanted."""
        f = start + step
        while 0 <= f <= self.last:
            if wanted(self.marks[f]):
                return f
            f += step
        return None

    def status_at(self, frame: int) -> str:
        return self.statuses[frame] if 0 <= frame < len(self.statuses) else "running"

    def changed_between(self, a: int, b: int) -> set[Key]:
        """Every node a frame after min(a, b) up to max(a, b) changed."""
        lo, hi = min(a, b), max(a, b)
        out: set[Key] = set()
        for f in range(lo + 1, min(hi, self.last) + 1):
            out.update(self.changes[f])
        return out

    def changed_at(self, frame: int) -> frozenset[Key]:
        return frozenset(self.changes[frame]) if 0 <= frame < len(self.changes) else frozenset()

