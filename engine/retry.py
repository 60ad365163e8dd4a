"""Retry policies: how many more attempts a failed step gets, and how long to wait before each.

Retries are bounded: every policy has a finite number of retries (2 by default) and a maximum
delay. The delay before retry n (n = 1 after the first failure):

    fixed        delay
    linear       delay * n
    exponential  delay * factor ** (n - 1)

each capped at `max_delay`, then spread by `jitter` (a fraction: 0.2 draws the delay uniformly
from 80%..120% of it, still capped), so steps that failed together do not retry in lockstep.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

MAX_RETRIES = 1000  # a policy is a bound, never a way to retry forever

Kind = Literal["fixed", "linear", "exponential"]


@dataclass(frozen=True, slots=True)
class Retry:
    kind: Kind = "exponential"
    retries: int = 2
    delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "linear", "exponential"):
            raise TypeError(f"Retry kind is 'fixed', 'linear' or 'exponential', not {self.kind!r}")
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or not 0 <= self.retries <= MAX_RETRIES:
            raise TypeError(f"Retry retries must be a whole number from 0 to {MAX_RETRIES} (retries stay bounded), "
                            f"not {self.retries!r}")
        if not (self.delay >= 0 and self.max_delay >= 0 and self.factor >= 1):
            raise TypeError("Retry delay and max_delay must be >= 0 and factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise TypeError(f"Retry jitter is a fraction from 0 to 1, not {self.jitter!r}")

    @classmethod
    def fixed(cls, delay: float = 1.0, *, retries: int = 2, max_delay: float = 60.0, jitter: float = 0.0) -> "Retry":
        return cls("fixed", retries, delay, 1.0, max_delay, jitter)

    @classmethod
    def linear(cls, delay: float = 1.0, *, retries: int = 2, max_delay: float = 60.0, jitter: float = 0.0) -> "Retry":
        return cls("linear", retries, delay, 1.0, max_delay, jitter)

    @classmethod
    def exponential(cls, delay: float = 0.5, *, factor: float = 2.0, retries: int = 2, max_delay: float = 60.0,
                    jitter: float = 0.0) -> "Retry":
        return cls("exponential", retries, delay, factor, max_delay, jitter)

    @classmethod
    def none(cls) -> "Retry":
        return cls("fixed", 0, 0.0)

    def base_delay(self, n: int) -> float:
        """The delay before retry n (1-based), capped, without jitter."""
        if self.kind == "fixed":
            d = self.delay
        elif self.kind == "linear":
            d = self.delay * n
        else:
            d = self.delay * self.factor ** min(n - 1, 1000)
        return min(d, self.max_delay)

    def delay_for(self, n: int, rng: random.Random | None = None) -> float:
        d = self.base_delay(n)
        if self.jitter and d:
            d *= 1 + self.jitter * (2 * (rng or random).random() - 1)
        return min(max(d, 0.0), self.max_delay)

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "retries": self.retries, "delay": self.delay, "factor": self.factor,
                "max_delay": self.max_delay, "jitter": self.jitter}
