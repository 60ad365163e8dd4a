"""Delta: everything one commit changes. One commit = one frame."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .state import Key, NodeRecord


@dataclass
class Delta:
    nodes: dict[Key, NodeRecord] = field(default_factory=dict)
    outputs: dict[Key, tuple[Any, str | None, dict[str, Any] | None]] = field(default_factory=dict)  # value, type, deps
    events: list[tuple[str, Key | None, dict[str, Any]]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    sql: list[tuple[str, list[tuple[Any, ...]]]] = field(default_factory=list)  # other updates, same commit

    def __bool__(self) -> bool:
        return bool(self.nodes or self.outputs or self.events or self.attempts or self.approvals or self.run
                    or self.sql)

    def event(self, type: str, key: Key | None = None, **data: Any) -> None:
        self.events.append((type, key, data))

    def summary(self) -> dict[str, Any]:
        """What changed, compactly: stored with the frame and shown by `smithers frames`."""
        out: dict[str, Any] = {}
        if self.nodes:
            out["n"] = {f"{k[0]}#{k[1]}": r.as_list() for k, r in self.nodes.items()}
        if self.outputs:
            out["o"] = [f"{k[0]}#{k[1]}" for k in self.outputs]
        if self.run.get("status"):
            out["r"] = self.run["status"]
        return out
