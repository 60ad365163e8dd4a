"""Read-only reports on runs: what `smithers show --json` prints and the app displays."""
from __future__ import annotations

import json
from typing import Any

from .errors import BadInput
from .store import Store


async def run_report(store: Store, run_id: str, frame: int | None = None) -> dict[str, Any]:
    """What `show --json` prints: the contract other processes rely on."""
    run = await store.get_run(run_id)
    if frame is not None:
        if frame < 0 or frame > run["frame"]:
            raise BadInput(f"run {run_id} has frames 0..{run['frame']}: pick --frame in that range")
        nodes, outputs, status = await store.state_at(run_id, frame)
    else:
        state = await store.load_state(run_id)
        nodes, outputs, status = state.nodes, state.outputs, run["status"]
    attempts = await store.attempts(run_id)
    usage_by_node: dict[tuple[str, int], dict[str, float]] = {}
    total = {"tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}
    for a in attempts:
        if frame is not None:
            continue
        u = usage_by_node.setdefault((a["node_id"], a["iteration"]), {"tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0})
        for k in total:
            v = a.get(k) or 0
            u[k] += v
            total[k] += v
    node_list = []
    for (nid, it), rec in sorted(nodes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        item = {"id": nid, "iteration": it, "kind": rec.kind, "state": rec.state, "attempts": rec.attempts,
                "error": rec.error, "output": outputs.get((nid, it))}
        if (nid, it) in usage_by_node:
            item["usage"] = usage_by_node[(nid, it)]
        if rec.kind == "loop" and rec.data:
            item["loop_iteration"] = rec.data.get("iteration")
        if rec.kind == "worktree" and rec.data:
            item["worktree"] = rec.data
        node_list.append(item)
    approvals = await store.approvals(run_id, open_only=False)
    return {
        "run_id": run["id"], "workflow": run["workflow"], "target": run["target"],
        "input": json.loads(run["input"]), "status": status, "error": run["error"] if frame is None else None,
        "parent_run_id": run["parent_run_id"], "parent_frame": run["parent_frame"], "kind": run["kind"],
        "successor_run_id": run["successor_run_id"],
        "frame": frame if frame is not None else run["frame"], "last_frame": run["frame"],
        "created_at": run["created_at"], "updated_at": run["updated_at"], "finished_at": run["finished_at"],
        "owner": ({"id": run["owner_id"], "host": run["owner_host"], "pid": run["owner_pid"],
                   "heartbeat_at": run["heartbeat_at"]} if run["owner_id"] else None),
        "usage": total,
        "approvals": [{k: a[k] for k in ("node_id", "iteration", "message", "decision", "decided_by", "note",
                                          "decided_at")} for a in approvals],
        "nodes": node_list,
    }
