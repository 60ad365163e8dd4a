"""Task caching: `Task(..., cache=Cache(key=..., version=...))` reuses an output across runs when a
step with the same node id, key and version already produced one (and it still fits the step's
output model). A hit is recorded with the attempt (`cache: hit`, where the output came from) and
the step does not run; a miss runs it and stores the output in the same commit as the step's
result. Bump `version` when the step's code changes what it returns; `ttl` (seconds) bounds how
old a reused output may be.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True, slots=True)
class Cache:
    key: str | Callable[[Any], str]
    version: str | int = "1"
    ttl: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.key, str) and self.key) and not callable(self.key):
            raise TypeError("Cache key is a non-empty string, or a callable of the step's ctx returning one")
        if self.ttl is not None and not self.ttl > 0:
            raise TypeError(f"Cache ttl is a number of seconds > 0, not {self.ttl!r}")

    def key_for(self, tctx: Any) -> str:
        k = self.key(tctx) if callable(self.key) else self.key
        if not isinstance(k, str) or not k:
            raise TypeError(f"the cache key callable returned {k!r}: return a non-empty string")
        return k
