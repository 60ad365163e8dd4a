"""Reports on runs: what `smithers show --json` prints, the app displays and the APIs return.

`RunReport` is the contract other processes rely on: its JSON (`model_dump`) keeps the shape
pinned by tests/cli/test_json_contract.py. Optional parts (a node's usage, a loop's iteration,
a worktree's data) appear only where they apply.
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from .lease import shown_status
from .records import ApprovalRecord, ReportData
from .state import Key, NodeRecord


class Usage(BaseModel):
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    def add(self, tokens_in: int | None, tokens_out: int | None, cost_usd: float | None) -> None:
        self.tokens_in += tokens_in or 0
        self.tokens_out += tokens_out or 0
        self.cost_usd += cost_usd or 0.0

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


class OwnerView(BaseModel):
    id: str
    host: str | None
    pid: int | None
    heartbeat_at: float | None


class ApprovalView(BaseModel):
    node_id: str
    iteration: int
    message: str
    decision: str | None
    decided_by: str | None
    note: str | None
    decided_at: float | None


class NodeView(BaseModel):
    id: str
    iteration: int
    kind: str
    state: str
    attempts: int
    error: str | None
    output: Any
    usage: Usage | None = None  # agent steps
    loop_iteration: int | None = None  # loops
    worktree: dict[str, Any] | None = None  # worktrees: path, branch, head...

    OPTIONAL: ClassVar[tuple[str, ...]] = ("usage", "loop_iteration", "worktree")

    @property
    def key(self) -> Key:
        return (self.id, self.iteration)


class RunReport(BaseModel):
    run_id: str
    workflow: str
    target: str
    input: Any
    status: str
    error: str | None
    parent_run_id: str | None
    parent_frame: int | None
    kind: str
    successor_run_id: str | None
    frame: int
    last_frame: int
    created_at: float
    updated_at: float
    finished_at: float | None
    owner: OwnerView | None
    usage: Usage
    approvals: list[ApprovalView]
    nodes: list[NodeView]

    def json_dict(self) -> dict[str, Any]:
        """The `--json` shape (a node's optional parts only where they apply)."""
        out = self.model_dump(mode="json")
        for n in out["nodes"]:
            for k in NodeView.OPTIONAL:
                if n[k] is None:
                    del n[k]
        return out

    @property
    def past(self) -> bool:
        return self.frame != self.last_frame

    def node(self, key: Key) -> NodeView | None:
        return next((n for n in self.nodes if n.key == key), None)

    def gate(self, key: Key) -> ApprovalView | None:
        return next((a for a in self.approvals if (a.node_id, a.iteration) == key), None)

    def waiting_gates(self) -> list[ApprovalView]:
        return [a for a in self.approvals if a.decision is None]


def build_report(data: ReportData, frame: int | None = None, executing_here: bool = False) -> RunReport:
    run = data.run
    past = frame is not None
    usage_by_node: dict[Key, Usage] = {}
    total = Usage()
    if not past:
        for a in data.attempts:
            usage_by_node.setdefault(a.key, Usage()).add(a.tokens_in, a.tokens_out, a.cost_usd)
            total.add(a.tokens_in, a.tokens_out, a.cost_usd)
    nodes = []
    for key, rec in sorted(data.nodes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        view = NodeView(id=key[0], iteration=key[1], kind=rec.kind, state=rec.state, attempts=rec.attempts,
                        error=rec.error, output=data.outputs.get(key))
        if key in usage_by_node:
            view.usage = usage_by_node[key]
        if rec.kind == "loop" and rec.data:
            view.loop_iteration = rec.data.get("iteration")
        if rec.kind == "worktree" and rec.data:
            view.worktree = rec.data
        nodes.append(view)
    approvals = _past_approvals(data.approvals, data.nodes, frame) if past else [_approval(a) for a in data.approvals]
    owner = run.owner
    return RunReport(
        run_id=run.id, workflow=run.workflow, target=run.target, input=run.input,
        status=str(shown_status(run, executing_here) if not past else data.status),
        error=run.error if not past else None, parent_run_id=run.parent_run_id, parent_frame=run.parent_frame,
        kind=str(run.kind), successor_run_id=run.successor_run_id,
        frame=frame if frame is not None else run.frame, last_frame=run.frame, created_at=run.created_at,
        updated_at=run.updated_at, finished_at=run.finished_at,
        owner=(OwnerView(id=owner.id, host=owner.host, pid=owner.pid, heartbeat_at=owner.heartbeat_at)
               if owner else None),
        usage=total, approvals=approvals, nodes=nodes)


def _approval(a: ApprovalRecord) -> ApprovalView:
    return ApprovalView(node_id=a.node_id, iteration=a.iteration, message=a.message, decision=a.decision,
                        decided_by=a.decided_by, note=a.note, decided_at=a.decided_at)


def _past_approvals(gates: list[ApprovalRecord], nodes: dict[Key, NodeRecord], frame: int | None) -> list[ApprovalView]:
    """Gates as of a frame: those asked by then, decided only if the run had taken the decision in
    by then (a decision recorded later, or not yet acted on, is not part of that past)."""
    out = []
    for a in gates:
        rec = nodes.get(a.key)
        if frame is None or a.frame > frame or rec is None or not rec.data or "message" not in rec.data:
            continue
        d = rec.data.get("decision") or {}
        decided = bool(d)
        out.append(ApprovalView(node_id=a.node_id, iteration=a.iteration, message=rec.data.get("message", a.message),
                                decision=("approved" if d.get("approved") else "denied") if decided else None,
                                decided_by=d.get("by") if decided else None, note=d.get("note") if decided else None,
                                decided_at=d.get("at") if decided else None))
    return out
