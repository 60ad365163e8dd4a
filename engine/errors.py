"""Errors the user sees: each message is one line that says what is wrong and what to do."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class SmithersError(Exception):
    """Base of every user-facing error. `exit_code` follows the CLI contract."""

    exit_code = 1


class BadInput(SmithersError):
    """Unknown workflow or run, invalid input, bad flag, unusable database: exit 4."""

    exit_code = 4


class RunNotFound(BadInput):
    pass


class WorkflowNotFound(BadInput):
    pass


class InputInvalid(BadInput):
    pass


class SchemaTooNew(BadInput):
    pass


class NotADatabase(BadInput):
    pass


class LeaseHeld(BadInput):
    """Another live process owns the run."""


class LeaseLost(BadInput):
    """Another process took the run over (resume --force); this one must stop writing."""


class SourceChanged(BadInput):
    """The workflow's source changed since the run started."""


class RenderError(SmithersError):
    """The workflow body raised, or produced an invalid tree (duplicate ids...)."""


class OutputMissing(LookupError):
    """ctx.output() asked for an output that does not exist (yet)."""


class TaskTimeout(SmithersError):
    pass


class ApprovalConflict(SmithersError):
    """A gate was already decided by someone else."""

    exit_code = 1


class Conflict(BadInput):
    """A write collided with a row that exists (e.g. a run id taken)."""


class StoreDamaged(BadInput):
    """The database file is corrupt or not ours."""


class StoreFull(BadInput):
    """The disk is full: nothing of the failed write was saved; everything before it is kept."""


class StoreReadOnly(BadInput):
    """A write to a database opened (or only readable) read-only."""


class StoreBusy(BadInput):
    """Another process held the write lock for longer than the busy timeout."""


class StoreUnavailable(SmithersError):
    """The database server stayed unreachable past the reconnect window: nothing of the call was
    written; everything saved before it is kept."""


def one_line_validation(e: "ValidationError") -> str:
    """A pydantic validation error as one line: `field: problem; other: problem (+N more)`."""
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    more = e.error_count() - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class WorkflowInvalid(BadInput):
    """A workflow's source does not import, hold one @workflow, accept its sample input, or render."""
