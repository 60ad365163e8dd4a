"""The workflows the app offers: the built-in pack, and the project's own files in
`.smithers/workflows/*.py`, re-read when one of them changes (added, edited, removed). A file
that does not load is listed with its one-line error instead of disappearing."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.dsl import WorkflowDef

Signature = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Entry:
    """One workflow to offer, or one project file that failed to load (`wf` None, `error` set)."""

    name: str
    wf: WorkflowDef | None
    target: str
    builtin: bool
    path: Path | None = None
    error: str | None = None


@dataclass(frozen=True)
class Listing:
    entries: tuple[Entry, ...]
    signature: Signature

    def usable(self) -> dict[str, tuple[WorkflowDef, str]]:
        return {e.name: (e.wf, e.target) for e in self.entries if e.wf is not None}

    def get(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)


class Catalog:
    """Thread-safe: `load()` imports modules, so the app calls it from a thread."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self._builtin: dict[str, tuple[WorkflowDef, str]] | None = None
        self._listing: Listing | None = None
        self._lock = threading.Lock()

    def signature(self) -> Signature:
        """What the project's workflow files look like now (name, size, mtime): cheap, no import."""
        from .targets import project_files

        out = []
        for p in project_files(self.project):
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((p.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    @property
    def listing(self) -> Listing | None:
        """The last listing read (None before the first)."""
        return self._listing

    def stale(self) -> bool:
        return self._listing is None or self._listing.signature != self.signature()

    def load(self) -> Listing:
        """The listing, re-read when the project's files changed since the last one."""
        with self._lock:
            sig = self.signature()
            if self._listing is not None and self._listing.signature == sig:
                return self._listing
            from .targets import scan_project

            if self._builtin is None:
                from workflows import builtin

                self._builtin = builtin()
            found, broken = scan_project(self.project)
            entries = [Entry(name, wf, target, False, wf.source_path) for name, (wf, target) in found.items()
                       if name not in self._builtin]
            entries += [Entry(path.stem, None, f"file:{path}", False, path, error) for path, error in broken.items()]
            entries += [Entry(name, wf, target, True) for name, (wf, target) in self._builtin.items()]
            entries.sort(key=lambda e: (e.builtin, e.name))
            self._listing = Listing(tuple(entries), sig)
            return self._listing
