"""The engine's typed records as the dicts the screens read (a bridge: screens move to attributes)."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from engine.lease import shown_status
from engine.records import RunRecord


def run_row(r: RunRecord, executing_here: bool = False) -> dict[str, Any]:
    """A run as the screens show it; `status` is the shown one (`interrupted` when nobody runs it)."""
    o = r.owner
    return {"id": r.id, "workflow": r.workflow, "target": r.target, "status": str(shown_status(r, executing_here)),
            "stored_status": str(r.status), "error": r.error, "kind": str(r.kind), "parent_run_id": r.parent_run_id,
            "parent_frame": r.parent_frame, "successor_run_id": r.successor_run_id, "frame": r.frame,
            "created_at": r.created_at, "updated_at": r.updated_at, "finished_at": r.finished_at,
            "workdir": r.workdir, "owner_id": o.id if o else None, "owner_host": o.host if o else None,
            "owner_pid": o.pid if o else None, "owner": o}


def record_row(rec: Any) -> dict[str, Any]:
    """An attempt or approval record as a dict of its fields."""
    return asdict(rec)
