"""Frames: what one commit changes, and how it is stored. One commit = one frame.

The frame format (version FRAME_VERSION), the one place it is written down
------------------------------------------------------------------------------
Every transition of a run commits one row of `frames` (run, frame number, time, delta) in the
same transaction as the node rows, outputs, attempts, approvals and events it changes. The delta
is a JSON object:

    {"v": 1,                                   format version (absent in frames written before it: 1)
     "n": {"<node>#<iteration>": [kind, state, attempts, error, data], ...}   node records that changed
     "o": ["<node>#<iteration>", ...],         outputs written by this frame (values live in `outputs`)
     "r": "<status>",                          the run's status, when this frame changed it
     "fork": {...}}                            frame 0 of a fork/rewind/replay: where it came from

A keyframe (table `keyframes`) holds the whole node map at a frame, `{"v": 1, "n": {...},
"r": status}`, written when the deltas since the last one outweigh the state itself, so frame N
is rebuilt from the last keyframe at or before N plus the deltas after it. Outputs are stored
once (table `outputs`, with the frame that wrote them), never inside frames: the outputs of
frame N are those written at a frame <= N. Frames are decoded only by `decode_delta` below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .state import Key, NodeRecord, key_str, parse_key

FRAME_VERSION = 1


@dataclass
class Delta:
    """Everything one commit changes (built by the engine, written by the store)."""

    nodes: dict[Key, NodeRecord] = field(default_factory=dict)
    outputs: dict[Key, tuple[Any, str | None, dict[str, Any] | None]] = field(default_factory=dict)  # value, type, deps
    events: list[tuple[str, Key | None, dict[str, Any]]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # attempt rows that ended (AttemptRecord fields)
    interrupted: list[Key] = field(default_factory=list)  # attempts cut short by a crash: recorded as interrupted
    approvals: list[dict[str, Any]] = field(default_factory=list)  # gate requests / decisions applied
    run: dict[str, Any] = field(default_factory=dict)  # run columns that change (status, error, owner...)
    signals: list[dict[str, Any]] = field(default_factory=list)  # signals taken (seq, key) or refused (+ error)
    new_runs: list[Any] = field(default_factory=list)  # (NewRun, Owner | None): a ContinueAsNew successor
    cache: list[dict[str, Any]] = field(default_factory=list)  # task outputs to keep for reuse across runs

    def __bool__(self) -> bool:
        return bool(self.nodes or self.outputs or self.events or self.attempts or self.approvals or self.run
                    or self.interrupted or self.signals or self.new_runs or self.cache)

    def event(self, type: str, key: Key | None = None, **data: Any) -> None:
        self.events.append((type, key, data))

    def summary(self) -> dict[str, Any]:
        """The stored form of this delta (see the module docstring)."""
        out: dict[str, Any] = {"v": FRAME_VERSION}
        if self.nodes:
            out["n"] = {key_str(k): r.as_list() for k, r in self.nodes.items()}
        if self.outputs:
            out["o"] = [key_str(k) for k in self.outputs]
        if self.run.get("status"):
            out["r"] = str(self.run["status"])
        return out


def keyframe(nodes: dict[Key, NodeRecord], status: str) -> dict[str, Any]:
    return {"v": FRAME_VERSION, "n": {key_str(k): r.as_list() for k, r in nodes.items()}, "r": str(status)}


@dataclass
class FrameDelta:
    """A stored delta, decoded."""

    nodes: dict[Key, NodeRecord] = field(default_factory=dict)
    outputs: list[Key] = field(default_factory=list)
    status: str | None = None
    fork: dict[str, Any] | None = None
    version: int = FRAME_VERSION

    def changes(self) -> list[str]:
        """One phrase per node that changed, e.g. `build#0 done` or `fix it=2` (for `smithers frames`)."""
        out = []
        for (nid, it), rec in self.nodes.items():
            extra = f" it={rec.data['iteration']}" if rec.kind == "loop" and rec.data else ""
            out.append(f"{nid}#{it} {rec.state}{extra}")
        return out


def decode_delta(d: dict[str, Any]) -> FrameDelta:
    return FrameDelta(nodes={parse_key(s): NodeRecord.from_list(v) for s, v in d.get("n", {}).items()},
                      outputs=[parse_key(s) for s in d.get("o", ())], status=d.get("r"), fork=d.get("fork"),
                      version=d.get("v", 1))
