"""Budgets: a limit on tokens and/or US dollars for one Task, a subtree (a node with an id) or a
whole run. Spend is what the attempts recorded (tokens in + out, cost); a step whose scope has
already spent its budget fails before it starts, with one line saying which budget and how much.
Only steps that can spend are checked (agent steps and sub-workflows; a compute step costs nothing).
A step cannot be stopped halfway through a model call, so the step that crosses the limit finishes;
the next one in that scope does not start.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Budget:
    tokens: int | None = None
    usd: float | None = None

    def __post_init__(self) -> None:
        if self.tokens is None and self.usd is None:
            raise TypeError("Budget needs tokens= or usd= (or both)")
        if self.tokens is not None and (not isinstance(self.tokens, int) or self.tokens < 0):
            raise TypeError(f"Budget tokens must be a whole number >= 0, not {self.tokens!r}")
        if self.usd is not None and not self.usd >= 0:
            raise TypeError(f"Budget usd must be >= 0, not {self.usd!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "usd": self.usd}

    @classmethod
    def of(cls, d: dict[str, Any] | None) -> "Budget | None":
        if not d or (d.get("tokens") is None and d.get("usd") is None):
            return None
        return cls(tokens=d.get("tokens"), usd=d.get("usd"))

    def spent_all(self, tokens: int, usd: float) -> str | None:
        """Why this budget is used up by this spend, or None."""
        if self.tokens is not None and tokens >= self.tokens:
            return f"{tokens:,} of {self.tokens:,} tokens spent"
        if self.usd is not None and usd >= self.usd:
            return f"${usd:.4f} of ${self.usd:.2f} spent"
        return None

    def left(self, tokens: int, usd: float) -> "Budget":
        """What remains after this spend (never below zero)."""
        return Budget(tokens=None if self.tokens is None else max(0, self.tokens - tokens),
                      usd=None if self.usd is None else max(0.0, self.usd - usd))

    def tighter(self, other: "Budget | None") -> "Budget":
        if other is None:
            return self
        def lo(a: Any, b: Any) -> Any:
            return b if a is None else a if b is None else min(a, b)
        return Budget(tokens=lo(self.tokens, other.tokens), usd=lo(self.usd, other.usd))


RUN_SCOPE = "<run>"  # the scope name of a whole run's budget
