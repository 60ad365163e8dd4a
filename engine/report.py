"""Reports on runs: what `smithers show --json` prints, the app displays and the APIs return.

`RunReport` is the contract other processes rely on: its JSON (`model_dump`) keeps the shape
pinned by tests/cli/test_json_contract.py. Optional parts (a node's usage, a loop's iteration,
a worktree's data) appear only where they apply.
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

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
    mode: str = "approve"  # present when not "approve": select | rank | human
    options: list[str] | None = None  # select and rank gates
    answer: Any = None  # the choice, the ranking or the human task's answer
    allowed: list[str] | None = None  # who may decide, when limited
    due: float | None = None  # when it times out
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # a human task's answer model

    model_config = {"populate_by_name": True}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("options", "answer", "allowed", "due", "schema")


class BudgetView(BaseModel):
    """A budget and what its scope has spent (scope `<run>` is the whole run's)."""

    scope: str
    tokens: int | None
    usd: float | None
    spent_tokens: int
    spent_usd: float
    nodes: list[str] | None = None


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
    wait: dict[str, Any] | None = None  # signals, timers, parked sub-workflows: name, due, since
    child_run_id: str | None = None  # sub-workflows: the child run
    cache: str | None = None  # cached steps: "hit" when the output came from the cache
    caught: str | None = None  # a failure a TryCatchFinally or Saga handled: by which
    saga: dict[str, Any] | None = None  # sagas: phase, the failed step, what was compensated

    OPTIONAL: ClassVar[tuple[str, ...]] = ("usage", "loop_iteration", "worktree", "wait", "child_run_id", "cache",
                                           "caught", "saga")

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
    result: Any = None  # a finished run's result (the output of its last step)
    budgets: list[BudgetView] | None = None
    parent_step: list[Any] | None = None  # a sub-workflow's run: the parent's step [node, iteration]

    OPTIONAL: ClassVar[tuple[str, ...]] = ("result", "budgets", "parent_step")

    def json_dict(self) -> dict[str, Any]:
        """The `--json` shape (optional parts only where they apply)."""
        out = self.model_dump(mode="json", by_alias=True)
        _drop_none(out, self.OPTIONAL)
        for n in out["nodes"]:
            _drop_none(n, NodeView.OPTIONAL)
        for a in out["approvals"]:
            _drop_none(a, ApprovalView.OPTIONAL)
            if a.get("mode") == "approve":
                del a["mode"]
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

    def waits(self) -> list[NodeView]:
        """Steps in a durable wait that needs no person: signals, timers, parked sub-workflows."""
        return [n for n in self.nodes if n.state == "waiting"]


def build_report(data: ReportData, frame: int | None = None, executing_here: bool = False) -> RunReport:
    run = data.run
    past = frame is not None
    usage_by_node: dict[Key, Usage] = {}
    cache_hits: set[Key] = set()
    total = Usage()
    if not past:
        for a in data.attempts:
            usage_by_node.setdefault(a.key, Usage()).add(a.tokens_in, a.tokens_out, a.cost_usd)
            total.add(a.tokens_in, a.tokens_out, a.cost_usd)
            if a.extra.get("cache") == "hit":
                cache_hits.add(a.key)
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
        d = rec.data or {}
        if rec.kind in ("signal", "timer") and d:
            view.wait = {k: d[k] for k in ("name", "due", "since", "fired_at", "signal", "sent_by", "timed_out")
                         if k in d}
        if rec.kind == "subflow" and d.get("child"):
            view.child_run_id = d["child"]
        if rec.kind == "saga" and d:
            view.saga = d
        if d.get("caught"):
            view.caught = d["caught"]
        if key in cache_hits:
            view.cache = "hit"
        nodes.append(view)
    approvals = _past_approvals(data.approvals, data.nodes, frame) if past else [_approval(a) for a in data.approvals]
    owner = run.owner
    extra: dict[str, Any] = {}
    if run.result is not None and not past:
        extra["result"] = run.result
    if run.meta.get("budgets") and not past:
        extra["budgets"] = _budgets(run.meta["budgets"], usage_by_node, total)
    if run.meta.get("parent_step"):
        extra["parent_step"] = run.meta["parent_step"]
    return RunReport(
        run_id=run.id, workflow=run.workflow, target=run.target, input=run.input,
        status=str(shown_status(run, executing_here) if not past else data.status),
        error=run.error if not past else None, parent_run_id=run.parent_run_id, parent_frame=run.parent_frame,
        kind=str(run.kind), successor_run_id=run.successor_run_id,
        frame=frame if frame is not None else run.frame, last_frame=run.frame, created_at=run.created_at,
        updated_at=run.updated_at, finished_at=run.finished_at,
        owner=(OwnerView(id=owner.id, host=owner.host, pid=owner.pid, heartbeat_at=owner.heartbeat_at)
               if owner else None),
        usage=total, approvals=approvals, nodes=nodes, **extra)


def _drop_none(d: dict[str, Any], keys: tuple[str, ...]) -> None:
    for k in keys:
        if d.get(k) is None:
            d.pop(k, None)


def _budgets(meta: dict[str, Any], usage: dict[Key, Usage], total: Usage) -> list[BudgetView]:
    from .budget import RUN_SCOPE

    out = []
    for scope, b in meta.items():
        if scope == RUN_SCOPE:
            spent = total
        else:
            ids = set(b.get("nodes") or ())
            spent = Usage()
            for k, u in usage.items():
                if k[0] in ids:
                    spent.add(u.tokens_in, u.tokens_out, u.cost_usd)
        out.append(BudgetView(scope=scope, tokens=b.get("tokens"), usd=b.get("usd"), spent_tokens=spent.tokens,
                              spent_usd=round(spent.cost_usd, 6), nodes=b.get("nodes")))
    return out


def _approval(a: ApprovalRecord) -> ApprovalView:
    view = ApprovalView(node_id=a.node_id, iteration=a.iteration, message=a.message, decision=a.decision,
                        decided_by=a.decided_by, note=a.note, decided_at=a.decided_at)
    _gate_extras(view, a)
    return view


def _gate_extras(view: ApprovalView, a: ApprovalRecord, with_answer: bool = True) -> None:
    """The parts of a gate that only some gates have (set only where they apply)."""
    if a.mode != "approve":
        view.mode = a.mode
    if a.options:
        view.options = a.options
    if a.allowed:
        view.allowed = a.allowed
    if a.request.get("due"):
        view.due = a.request["due"]
    if a.request.get("schema"):
        view.schema_ = a.request["schema"]
    if a.answer is not None and with_answer:
        view.answer = a.answer


def _past_approvals(gates: list[ApprovalRecord], nodes: dict[Key, NodeRecord], frame: int | None) -> list[ApprovalView]:
    """Gates as of a frame: those asked by then, decided only if the run had taken the decision in
    by then (a decision recorded later, or not yet acted on, is not part of that past)."""
    out = []
    for a in gates:
        rec = nodes.get(a.key)
        if frame is None or a.frame > frame or rec is None or not rec.data or "message" not in rec.data:
            continue
        d = rec.data.get("decision") or {}
        decided = bool(d) or (rec.kind == "human" and rec.state != "waiting_approval")
        if rec.kind == "human" and decided:
            d = {"by": rec.data.get("by"), "at": rec.data.get("at")}
        word = (a.decision if rec.kind == "human" else "approved" if d.get("approved") else "denied") if decided else None
        view = ApprovalView(node_id=a.node_id, iteration=a.iteration, message=rec.data.get("message", a.message),
                            decision=word, decided_by=d.get("by") if decided else None,
                            note=d.get("note") if decided else None, decided_at=d.get("at") if decided else None)
        _gate_extras(view, a, with_answer=decided)
        out.append(view)
    return out
