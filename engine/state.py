"""The live state of one run, held in memory by the engine and mirrored in the store.

Keys are (node id, iteration). A node record is small; outputs are kept as JSON values and
turned into the task's output model only when read. States are `StrEnum`s: they compare equal
to their stored strings, so the database and the JSON the CLI prints hold plain words.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Key = tuple[str, int]


class NodeState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"  # a person must act: a gate, a select/rank choice, a human task
    WAITING = "waiting"  # a durable wait on something else: a signal, a timer, a parked sub-workflow
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_NODE_STATES


class NodeKind(StrEnum):
    TASK = "task"
    APPROVAL = "approval"
    LOOP = "loop"
    WORKTREE = "worktree"
    SIGNAL = "signal"
    TIMER = "timer"
    HUMAN = "human"
    SUBFLOW = "subflow"
    SAGA = "saga"
    CONTINUE = "continue"


class RunStatus(StrEnum):
    """A run's status. `queued` waits for a worker; `interrupted` is never stored: it is how a
    `running` run whose owner is gone (or that nobody owns) is shown, because nothing moves it."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REWOUND = "rewound"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        return self in FINAL_RUN_STATES

    @property
    def active(self) -> bool:
        """Something is (or should be) moving it: running, waiting for a human, or queued."""
        return self in (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.QUEUED)


class RunKind(StrEnum):
    RUN = "run"
    FORK = "fork"
    REWIND = "rewind"
    REPLAY = "replay"
    SUBFLOW = "subflow"  # a child run started by a Subflow step of its parent
    CONTINUE = "continue"  # the fresh run a ContinueAsNew handed its state to


# Short names, used throughout the engine.
PENDING, RUNNING, WAITING_APPROVAL = NodeState.PENDING, NodeState.RUNNING, NodeState.WAITING_APPROVAL
WAITING = NodeState.WAITING
DONE, FAILED, SKIPPED, CANCELLED = NodeState.DONE, NodeState.FAILED, NodeState.SKIPPED, NodeState.CANCELLED
FINAL_NODE_STATES = frozenset((DONE, FAILED, SKIPPED, CANCELLED))

RUN_QUEUED, RUN_RUNNING, RUN_WAITING = RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING
RUN_FINISHED, RUN_FAILED, RUN_CANCELLED = RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED
RUN_REWOUND, RUN_INTERRUPTED = RunStatus.REWOUND, RunStatus.INTERRUPTED
FINAL_RUN_STATES = frozenset((RUN_FINISHED, RUN_FAILED, RUN_CANCELLED, RUN_REWOUND))


def key_str(key: Key) -> str:
    """How a key is written in frames, event lists and `--reset`: `node#iteration`."""
    return f"{key[0]}#{key[1]}"


def parse_key(s: str) -> Key:
    node_id, _, it = s.rpartition("#")
    return node_id, int(it)


def key_label(node_id: str, iteration: int) -> str:
    """How a key is shown to people: `node`, or `node[i]` past the first iteration."""
    return f"{node_id}[{iteration}]" if iteration else node_id


@dataclass(slots=True)
class NodeRecord:
    kind: str  # a NodeKind
    state: str = PENDING  # a NodeState
    attempts: int = 0
    error: str | None = None
    data: dict[str, Any] | None = None  # loop counters, worktree path, gate message, decision...

    def as_list(self) -> list[Any]:
        return [self.kind, self.state, self.attempts, self.error, self.data]

    @classmethod
    def from_list(cls, v: list[Any]) -> "NodeRecord":
        return cls(v[0], v[1], v[2], v[3], v[4])

    def but(self, **changes: Any) -> "NodeRecord":
        """A copy with some fields changed (records are shared with frames: never mutate one)."""
        return NodeRecord(changes.get("kind", self.kind), changes.get("state", self.state),
                          changes.get("attempts", self.attempts), changes.get("error", self.error),
                          changes.get("data", self.data))


@dataclass
class RunState:
    """Nodes and outputs of one run. `outputs` maps a key to its JSON value."""

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

    @classmethod
    def of(cls, nodes: dict[Key, NodeRecord], outputs: dict[Key, tuple[Any, str | None]]) -> "RunState":
        """A state from stored nodes and (value, type) outputs, with its indexes built."""
        st = cls(nodes=dict(nodes))
        for key, rec in st.nodes.items():
            if rec.kind == NodeKind.LOOP:
                st.note_loop(key[0], rec)
        for key in sorted(outputs, key=lambda k: (k[0], k[1])):
            value, typ = outputs[key]
            st.set_output(key, value, typ)
        return st
