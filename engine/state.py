"""The live state of one run, held in memory by the engine and mirrored in the store.

Keys are (node id, iteration). A node record is small; outputs are kept as JSON values and
turned into the task's output model only when read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, int]

# Node states
PENDING, RUNNING, WAITING_APPROVAL = "pending", "running", "waiting_approval"
DONE, FAILED, SKIPPED, CANCELLED = "done", "failed", "skipped", "cancelled"
NODE_STATES = (PENDING, RUNNING, WAITING_APPROVAL, DONE, FAILED, SKIPPED, CANCELLED)
FINAL_NODE_STATES = (DONE, FAILED, SKIPPED, CANCELLED)

# Run states
RUN_RUNNING, RUN_WAITING, RUN_FINISHED = "running", "waiting", "finished"
RUN_FAILED, RUN_CANCELLED, RUN_REWOUND = "failed", "cancelled", "rewound"
RUN_STATES = (RUN_RUNNING, RUN_WAITING, RUN_FINISHED, RUN_FAILED, RUN_CANCELLED, RUN_REWOUND)
FINAL_RUN_STATES = (RUN_FINISHED, RUN_FAILED, RUN_CANCELLED, RUN_REWOUND)


def key_str(key: Key) -> str:
    return f"{key[0]}#{key[1]}"


def parse_key(s: str) -> Key:
    node_id, _, it = s.rpartition("#")
    return node_id, int(it)


@dataclass(slots=True)
class NodeRecord:
    kind: str  # task | approval | loop | worktree
    state: str = PENDING
    attempts: int = 0
    error: str | None = None
    data: dict[str, Any] | None = None  # loop counters, worktree path, agent usage...

    def as_list(self) -> list[Any]:
        return [self.kind, self.state, self.attempts, self.error, self.data]

    @classmethod
    def from_list(cls, v: list[Any]) -> "NodeRecord":
        return cls(v[0], v[1], v[2], v[3], v[4])


@dataclass
class RunState:
    """Nodes and outputs of one run. `outputs` maps a key to (JSON value, model type name)."""

    nodes: dict[Key, NodeRecord] = field(default_factory=dict)
    outputs: dict[Key, Any] = field(default_factory=dict)
    output_types: dict[Key, str | None] = field(default_factory=dict)
    by_id: dict[str, list[int]] = field(default_factory=dict)  # node id -> iterations with output
    loop_next: dict[str, int] = field(default_factory=dict)  # loop id -> next unused iteration

    def set_output(self, key: Key, value: Any, type_name: str | None) -> None:
        if key not in self.outputs:
            its = self.by_id.setdefault(key[0], [])
            its.append(key[1])
            if len(its) > 1 and its[-2] > its[-1]:
                its.sort()
        self.outputs[key] = value
        self.output_types[key] = type_name

    def note_loop(self, loop_id: str, rec: NodeRecord) -> None:
        if rec.data:
            nxt = rec.data["iteration"] + 1
            if nxt > self.loop_next.get(loop_id, 0):
                self.loop_next[loop_id] = nxt
