"""Time travel: fork, rewind and replay from any frame. Nothing is ever deleted.

A fork is one transaction: the new run, every node and output valid at the frame (copied, never
re-executed), its frame 0, and for a rewind the original marked `rewound` with a link to its
successor. Worktree files are not copied here: the new run's Worktree nodes carry the commit of
that frame and restore it into their own checkout when they run (idempotently), so a kill at any
moment leaves either the old state or the new one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from .context import Ctx
from .dsl import Loop, Node, Task, WorkflowDef, Worktree
from .errors import BadInput, InputInvalid, LeaseHeld
from .lease import describe_owner, owner_alive
from .loader import load_target, source_hash
from .render import fingerprint, one_line_validation
from .attempt import new_run_id
from .state import DONE, RUN_REWOUND, RUN_RUNNING, RUNNING, SKIPPED, Key, NodeRecord, RunState
from .store import Store, dumps

KEEP_TASK_STATES = (DONE, SKIPPED)


async def fork(store: Store, run_id: str, frame: int | None, *, input: Any = None, reset: Iterable[str] = (),
               new_id: str | None = None, kind: str = "fork") -> dict[str, Any]:
    """Create a run whose parent is (run_id, frame). Returns what was carried and what will run again."""
    parent = await store.get_run(run_id)
    frame = parent["frame"] if frame is None else frame
    if frame < 0 or frame > parent["frame"]:
        raise BadInput(f"run {run_id} has frames 0..{parent['frame']}: pick --frame in that range")
    if kind == "rewind":
        if parent["status"] == RUN_REWOUND:
            raise BadInput(f"run {run_id} was already rewound (successor {parent['successor_run_id']}): "
                           "rewind that one, or fork this one")
        if parent["owner_id"] and owner_alive(parent):
            raise LeaseHeld(f"run {run_id} is running in {describe_owner(parent)}: cancel it first, "
                            "or fork instead (a fork leaves the original alone)")
    new_id = new_id or new_run_id()
    if await store.fetchone("SELECT id FROM runs WHERE id=?", (new_id,)):
        raise BadInput(f"a run {new_id!r} already exists: choose another --run-id")
    wf, target = load_target(parent["target"])
    old_input = json.loads(parent["input"])
    new_input = old_input
    if input is not None:
        new_input = {**old_input, **input} if isinstance(input, dict) and isinstance(old_input, dict) else input
    try:
        old_model, new_model = wf.validate_input(old_input), wf.validate_input(new_input)
    except ValidationError as e:
        raise InputInvalid(f"invalid input for workflow {wf.name!r}: {one_line_validation(e)}") from None
    if new_model is not None:
        new_input = new_model.model_dump(mode="json")

    nodes_at, _, _ = await store.state_at(run_id, frame)
    rows = await store.fetchall("SELECT node_id, iteration, value, type, deps, frame FROM outputs WHERE run_id=? "
                                "AND frame<=?", (run_id, frame))
    frames = {(r["node_id"], r["iteration"]): r["frame"] for r in rows}
    outputs = {(r["node_id"], r["iteration"]): (json.loads(r["value"]), r["type"],
                                                json.loads(r["deps"]) if r["deps"] else None) for r in rows}
    unknown = set(reset) - {k[0] for k in nodes_at}
    if unknown:
        known = ", ".join(sorted({k[0] for k in nodes_at})) or "none"
        raise BadInput(f"--reset {', '.join(sorted(unknown))}: no such node at frame {frame} of run {run_id} "
                       f"(it has {known})")
    nodes = carry(nodes_at)
    outputs = {k: v for k, v in outputs.items() if k in nodes}
    invalid, owners = invalidate(wf, run_id, Path(parent["workdir"]), nodes, outputs, old_model or old_input,
                                 new_model or new_input, set(reset), new_input != old_input)
    restore_points(nodes_at, nodes, invalid, owners, frames, set(reset))
    now = time.time()
    row = {"id": new_id, "workflow": parent["workflow"], "target": target,
           "source_path": str(wf.source_path) if wf.source_path else None, "source_hash": source_hash(wf.source_path),
           "input": dumps(new_input), "status": RUN_RUNNING, "workdir": parent["workdir"], "kind": kind,
           "parent_run_id": run_id, "parent_frame": frame, "created_at": now, "updated_at": now, "frame": 0,
           "meta": dumps({**json.loads(parent["meta"] or "{}"), "reset": sorted(reset)})}
    state = RunState(nodes=nodes)
    ops = store.insert_run_ops(row)
    if nodes:
        ops.append(("INSERT INTO nodes (run_id,node_id,iteration,kind,state,attempts,error,data,frame,updated_at)"
                    " VALUES (?,?,?,?,?,?,?,?,0,?)",
                    [(new_id, k[0], k[1], r.kind, r.state, r.attempts, r.error,
                      dumps(r.data) if r.data is not None else None, now) for k, r in nodes.items()]))
    if outputs:
        ops.append(("INSERT INTO outputs (run_id,node_id,iteration,value,type,frame,deps) VALUES (?,?,?,?,?,0,?)",
                    [(new_id, k[0], k[1], dumps(v), t, dumps(d) if d else None) for k, (v, t, d) in outputs.items()]))
    ops += Store.keyframe_ops(new_id, 0, state, RUN_RUNNING)
    info = {"from_run": run_id, "from_frame": frame, "kind": kind, "carried": len(outputs),
            "rerun": sorted(f"{k[0]}#{k[1]}" for k in invalid), "input_changed": new_input != old_input}
    ops.append(("INSERT INTO frames (run_id, frame, at, delta) VALUES (?,?,?,?)",
                [(new_id, 0, now, dumps({"fork": info}))]))
    events = [(new_id, 0, now, "run_forked", dumps(info))]
    if kind == "rewind":
        ops.append(("UPDATE runs SET status=?, successor_run_id=?, owner_id=NULL, updated_at=? WHERE id=?",
                    [(RUN_REWOUND, new_id, now, run_id)]))
        events.append((run_id, parent["frame"], now, "run_rewound", dumps({"successor": new_id, "to_frame": frame})))
    ops.append(("INSERT INTO events (run_id,frame,at,type,data) VALUES (?,?,?,?,?)", events))
    await store.transact(ops)
    return {"run_id": new_id, **info}


def carry(nodes_at: dict[Key, NodeRecord]) -> dict[Key, NodeRecord]:
    """What a new run keeps from a frame: finished steps and decided gates as they were; loops at
    their iteration; worktrees to be restored at their commit. Steps that were running, waiting or
    failed at that frame are left out, so they run (or ask) again."""
    out: dict[Key, NodeRecord] = {}
    for key, rec in nodes_at.items():
        if rec.kind in ("task", "approval"):
            if rec.state in KEEP_TASK_STATES:
                out[key] = NodeRecord(rec.kind, rec.state, rec.attempts, rec.error, rec.data)
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
               outputs: dict[Key, tuple[Any, str | None, dict[str, Any] | None]], old_input: Any, new_input: Any,
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
    invalid: set[Key] = {k for k, r in nodes.items() if k[0] in reset and r.kind in ("task", "approval")}
    if input_changed:
        invalid |= {k for k, (_, _, d) in outputs.items() if d and d.get("input")}
    groups = {k for k, r in nodes.items() if r.kind in ("loop", "worktree")}
    moved: set[str] = {k[0] for k in groups if k[0] in reset and nodes[k].kind == "loop"}
    stop_at: dict[Key, int] = {}
    reopen: set[Key] = set()
    owners: dict[str, set[str]] = {}
    while True:
        before = (len(invalid), len(moved))
        now = _render(wf, run_id, workdir, nodes, {k: v for k, v in original.items() if k not in invalid}, new_input)
        for r in (base, now):
            for nid, anc in (r[2] if r else {}).items():
                owners.setdefault(nid, set()).update(anc)
        names = {f"{k[0]}#{k[1]}" for k in invalid} | {f"{m}#*" for m, anc in owners.items() if anc & moved}
        invalid |= {k for k, (_, _, d) in original.items() if d and names.intersection(d.get("reads", ()))}
        if base is not None and now is not None:
            for nid, fp in now[0].items():
                if base[0].get(nid) not in (None, fp):
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
                was, will = base[1].get(gkey[0]), now[1].get(gkey[0])
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
            outputs: dict[Key, tuple[Any, str | None, Any]], input: Any
            ) -> tuple[dict[str, str], dict[str, bool], dict[str, set[str]]] | None:
    """Render the tree once; return (task id -> fingerprint, loop id -> until, node id -> the ids of
    the loops and worktrees around it)."""
    state = RunState(nodes=dict(nodes))
    for k in sorted(outputs, key=lambda k: k[1]):
        state.set_output(k, outputs[k][0], outputs[k][1])
    ctx = Ctx(run_id, input, state, {}, workdir)
    try:
        tree = wf.builder(ctx)
    except Exception:
        return None
    fps: dict[str, str] = {}
    untils: dict[str, bool] = {}
    owners: dict[str, set[str]] = {}
    stack: list[tuple[Node, frozenset[str]]] = [(tree, frozenset())]
    while stack:
        node, around = stack.pop()
        if isinstance(node, Task):
            fps[node.id] = fingerprint(node)
        if node.id is not None:
            owners[node.id] = set(around)
        if isinstance(node, Loop):
            try:
                untils[node.id] = bool(node.until(ctx) if callable(node.until) else node.until)
            except Exception:
                pass
        inner = around | {node.id} if isinstance(node, (Loop, Worktree)) else around
        stack.extend((c, inner) for c in node.children())
    return fps, untils, owners


async def lineage(store: Store, run_id: str) -> dict[str, Any]:
    """The tree of forks, rewinds and replays around a run: its root and every descendant."""
    root = await store.get_run(run_id)
    seen = {root["id"]}
    while root["parent_run_id"] and root["parent_run_id"] not in seen:
        seen.add(root["parent_run_id"])
        root = await store.get_run(root["parent_run_id"])

    async def node(run: dict[str, Any]) -> dict[str, Any]:
        kids = await store.fetchall("SELECT * FROM runs WHERE parent_run_id=? ORDER BY created_at", (run["id"],))
        return {"run_id": run["id"], "kind": run["kind"], "status": run["status"], "parent_frame": run["parent_frame"],
                "frames": run["frame"], "successor_run_id": run["successor_run_id"],
                "children": [await node(dict(k)) for k in kids]}

    return await node(root)
