"""Time travel: fork, rewind and replay from any frame. Nothing is ever deleted.

A fork is one transaction: the new run, every node and output valid at the frame (copied, never
re-executed), its frame 0, and for a rewind the original marked `rewound` with a link to its
successor. Worktree files are not copied here: the new run's Worktree nodes carry the commit of
that frame and restore it into their own checkout when they run (idempotently), so a kill at any
moment leaves either the old state or the new one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from .dsl import WorkflowDef
from .errors import BadInput, InputInvalid, LeaseHeld
from .lease import describe_owner, owner_alive
from .loader import source_hash
from .outline import Outline, outline
from .records import FrameState, NewRun, OutputRecord, RunRecord
from .errors import one_line_validation
from .state import DONE, RUN_REWOUND, RUNNING, SKIPPED, Key, NodeRecord, RunKind, RunState, RunStatus, key_str

KEEP_TASK_STATES = (DONE, SKIPPED)
STEP_KINDS = ("task", "approval", "signal", "timer", "human", "subflow")  # leaves that keep their result


class ForkInfo(BaseModel):
    """What a fork, rewind or replay made (`smithers fork --json` prints it)."""

    run_id: str
    from_run: str
    from_frame: int
    kind: str
    carried: int
    rerun: list[str]
    input_changed: bool

    def meta(self) -> dict[str, Any]:
        """The stored form (frame 0 of the new run, its run_forked event): without the new id."""
        return self.model_dump(exclude={"run_id"})


@dataclass
class ForkPlan:
    """Everything a fork writes, decided before anything is: `Store.insert_fork(plan)` writes it
    in one transaction."""

    run: NewRun
    parent: RunRecord
    frame: int
    kind: RunKind
    nodes: dict[Key, NodeRecord] = field(default_factory=dict)
    outputs: dict[Key, OutputRecord] = field(default_factory=dict)
    rerun: set[Key] = field(default_factory=set)
    input_changed: bool = False

    @property
    def info(self) -> dict[str, Any]:
        return self.result().meta()

    def result(self) -> ForkInfo:
        return ForkInfo(run_id=self.run.id, from_run=self.parent.id, from_frame=self.frame, kind=str(self.kind),
                        carried=len(self.outputs), rerun=sorted(key_str(k) for k in self.rerun),
                        input_changed=self.input_changed)


def check_fork(parent: RunRecord, frame: int | None, kind: RunKind) -> int:
    """The frame to fork from; BadInput/LeaseHeld when this fork cannot be made."""
    frame = parent.frame if frame is None else frame
    if frame < 0 or frame > parent.frame:
        raise BadInput(f"run {parent.id} has frames 0..{parent.frame}: pick --frame in that range")
    if kind == RunKind.REWIND:
        if parent.status == RUN_REWOUND:
            raise BadInput(f"run {parent.id} was already rewound (successor {parent.successor_run_id}): "
                           "rewind that one, or fork this one")
        if owner_alive(parent.owner):
            raise LeaseHeld(f"run {parent.id} is running in {describe_owner(parent.owner)}: cancel it first, "
                            "or fork instead (a fork leaves the original alone)")
    return frame


def plan_fork(wf: WorkflowDef, target: str, parent: RunRecord, at: FrameState, outputs: dict[Key, OutputRecord],
              new_id: str, *, kind: RunKind = RunKind.FORK, input: Any = None, reset: Iterable[str] = ()
              ) -> ForkPlan:
    """Decide a fork (pure: renders the workflow, writes nothing). `at` is the parent as of the
    frame; `outputs` every output written by then."""
    reset = set(reset)
    old_input = parent.input
    new_input = old_input
    if input is not None:
        new_input = {**old_input, **input} if isinstance(input, dict) and isinstance(old_input, dict) else input
    try:
        old_model, new_model = wf.validate_input(old_input), wf.validate_input(new_input)
    except ValidationError as e:
        raise InputInvalid(f"invalid input for workflow {wf.name!r}: {one_line_validation(e)}") from None
    if new_model is not None:
        new_input = new_model.model_dump(mode="json")
    unknown = reset - {k[0] for k in at.nodes}
    if unknown:
        known = ", ".join(sorted({k[0] for k in at.nodes})) or "none"
        raise BadInput(f"--reset {', '.join(sorted(unknown))}: no such node at frame {at.frame} of run {parent.id} "
                       f"(it has {known})")
    nodes = carry(at.nodes)
    kept = {k: o for k, o in outputs.items() if k in nodes}
    changed = new_input != old_input
    invalid, owners = invalidate(wf, parent.id, Path(parent.workdir), nodes, kept, old_model or old_input,
                                 new_model or new_input, reset, changed)
    restore_points(at.nodes, nodes, invalid, owners, {k: o.frame for k, o in outputs.items()}, reset)
    run = NewRun(id=new_id, workflow=parent.workflow, target=target,
                 source_path=str(wf.source_path) if wf.source_path else None, source_hash=source_hash(wf.source_path),
                 input=new_input, workdir=parent.workdir, status=RunStatus.QUEUED, kind=kind,
                 meta={**parent.meta, "reset": sorted(reset)}, parent_run_id=parent.id, parent_frame=at.frame)
    return ForkPlan(run=run, parent=parent, frame=at.frame, kind=kind, nodes=nodes, outputs=kept, rerun=invalid,
                    input_changed=changed)


def carry(nodes_at: dict[Key, NodeRecord]) -> dict[Key, NodeRecord]:
    """What a new run keeps from a frame: finished steps, decided gates, taken signals, fired timers,
    answered human tasks and finished sub-workflows as they were; loops at their iteration;
    worktrees to be restored at their commit; sagas in their phase, with the failure a saga or a
    TryCatchFinally had caught (so a fork goes on compensating or catching). Steps that were
    running, waiting or failed at that frame are left out, so they run (or ask, or wait) again."""
    out: dict[Key, NodeRecord] = {}
    for key, rec in nodes_at.items():
        if rec.kind in STEP_KINDS:
            if rec.state in KEEP_TASK_STATES or (rec.state == "failed" and rec.data and rec.data.get("caught")):
                out[key] = NodeRecord(rec.kind, rec.state, rec.attempts, rec.error, rec.data)
        elif rec.kind == "saga":
            out[key] = NodeRecord("saga", rec.state, 0, rec.error, dict(rec.data or {}))
        elif rec.kind == "loop":
            out[key] = NodeRecord("loop", rec.state, 0, rec.error, dict(rec.data or {}))
        elif rec.kind == "worktree":
            data = rec.data or {}
            commit = data.get("head") or data.get("restore")
            if commit:
                out[key] = NodeRecord("worktree", "pending", 0, None,
                                      {"restore": commit, "keep": data.get("keep"), "base": data.get("base")})
    return out


def invalidate(wf: WorkflowDef, run_id: str, workdir: Path, nodes: dict[Key, NodeRecord],
               outputs: dict[Key, OutputRecord], old_input: Any, new_input: Any,
               reset: set[str], input_changed: bool) -> tuple[set[Key], dict[str, set[str]]]:
    """Drop (in place) what must run again; return those keys and each node's enclosing groups.

    A step runs again when: it is named in `reset` (a loop or worktree named there runs again
    whole); the input changed and the step read it while running; it read (while running) the
    output of a step that runs again, or the latest output of a loop whose iterations change; or
    its rendered definition (prompt, value, callable and what it closes over) differs between the
    tree rendered with the old input and all carried outputs and the tree rendered with the new
    input and the outputs that remain. Both renders see the same history, so loops moving on do
    not count as a change. With a new input, a finished loop whose `until` no longer holds goes on,
    and a running loop whose `until` now holds stops after its last finished iteration.
    """
    original = dict(outputs)
    base = _render(wf, run_id, workdir, nodes, original, old_input)
    invalid: set[Key] = {k for k, r in nodes.items() if k[0] in reset and r.kind in STEP_KINDS}
    if input_changed:
        invalid |= {k for k, o in outputs.items() if o.deps and o.deps.get("input")}
    groups = {k for k, r in nodes.items() if r.kind in ("loop", "worktree")}
    moved: set[str] = {k[0] for k in groups if k[0] in reset and nodes[k].kind == "loop"}
    stop_at: dict[Key, int] = {}
    reopen: set[Key] = set()
    owners: dict[str, set[str]] = {}
    while True:
        before = (len(invalid), len(moved))
        now = _render(wf, run_id, workdir, nodes, {k: v for k, v in original.items() if k not in invalid}, new_input)
        for r in (base, now):
            for nid, anc in (r.groups if r else {}).items():
                owners.setdefault(nid, set()).update(anc)
        names = {key_str(k) for k in invalid} | {f"{m}#*" for m, anc in owners.items() if anc & moved}
        invalid |= {k for k, o in original.items() if o.deps and names.intersection(o.deps.get("reads", ()))}
        if base is not None and now is not None:
            for nid, fp in now.fingerprints.items():
                if base.fingerprints.get(nid) not in (None, fp):
                    invalid |= {k for k in original if k[0] == nid}
        for gkey in groups:
            rec = nodes[gkey]
            body = {m for m, anc in owners.items() if gkey[0] in anc}
            if gkey[0] in reset:
                invalid |= {k for k in original if k[0] in body}
            if rec.kind != "loop":
                continue
            hit = [k[1] for k in invalid if k[0] in body]
            if hit:
                invalid |= {k for k in original if k[0] in body and k[1] >= min(hit)}
                moved.add(gkey[0])
            if input_changed and base is not None and now is not None and rec.data:
                was, will = base.untils.get(gkey[0]), now.untils.get(gkey[0])
                cur, start = rec.data["iteration"], rec.data.get("start", 0)
                if rec.state == DONE and not rec.data.get("exhausted") and was is True and will is False:
                    reopen.add(gkey)
                    moved.add(gkey[0])
                elif (rec.state == RUNNING and cur > start and will is True and was is False
                      and not any(k[0] in body and k[1] >= cur for k in original if k not in invalid)):
                    stop_at[gkey] = cur - 1
                    moved.add(gkey[0])
        if (len(invalid), len(moved)) == before:
            break
    for key in invalid:
        outputs.pop(key, None)
        nodes.pop(key, None)
    _adjust_loops(nodes, invalid, owners, moved, reopen, stop_at, reset)
    return invalid, owners


def _adjust_loops(nodes: dict[Key, NodeRecord], invalid: set[Key], owners: dict[str, set[str]], moved: set[str],
                  reopen: set[Key], stop_at: dict[Key, int], reset: set[str]) -> None:
    for key, rec in list(nodes.items()):
        if rec.kind != "loop" or not rec.data or key[0] not in moved:
            continue
        data = dict(rec.data)
        if key in stop_at:
            nodes[key] = NodeRecord("loop", DONE, 0, None, {**data, "iteration": stop_at[key]})
            continue
        if key in reopen:
            data["iteration"] += 1
        hit = [k[1] for k in invalid if key[0] in owners.get(k[0], ())]
        if key[0] in reset:
            hit.append(data.get("start", 0))
        if hit:
            data["iteration"] = max(min(min(hit), data["iteration"]), data.get("start", 0))
        nodes[key] = NodeRecord("loop", RUNNING, 0, None, data)


def restore_points(nodes_at: dict[Key, NodeRecord], nodes: dict[Key, NodeRecord], invalid: set[Key],
                   owners: dict[str, set[str]], frames: dict[Key, int], reset: set[str]) -> None:
    """A worktree whose steps run again gets back the files it had before the earliest of them;
    a worktree named in --reset starts again from the commit it was created from."""
    for key, rec in list(nodes.items()):
        if rec.kind != "worktree" or not rec.data:
            continue
        data = dict(rec.data)
        if key[0] in reset:
            data["restore"] = data.get("base") or data["restore"]
        else:
            dropped = [k for k in invalid if key[0] in owners.get(k[0], ()) and k in frames]
            if dropped:
                first = min(dropped, key=lambda k: frames[k])
                before = (nodes_at[first].data or {}).get("base") if first in nodes_at else None
                if before:
                    data["restore"] = before
        nodes[key] = NodeRecord("worktree", rec.state, 0, None, data)


def _render(wf: WorkflowDef, run_id: str, workdir: Path, nodes: dict[Key, NodeRecord],
            outputs: dict[Key, OutputRecord], input: Any) -> Outline | None:
    """The outline of the tree rendered over these nodes and outputs."""
    return outline(wf, run_id, input, RunState.of(nodes, {k: (o.value, o.type) for k, o in outputs.items()}), workdir)
