"""Smithers engine: a durable workflow runtime for AI agents. Never imports textual or the app."""
from .context import Ctx, TaskCtx
from .dsl import Approval, Branch, Loop, Node, Parallel, Sequence, Task, WorkflowDef, Worktree, workflow
from .errors import BadInput, OutputMissing, RenderError, SmithersError
from .events import Event, EventBus
from .run import RunExecutor
from .runtime import Engine
from .store import Store

__all__ = ["Approval", "BadInput", "Branch", "Ctx", "Engine", "Event", "EventBus", "Loop", "Node", "OutputMissing",
           "Parallel", "RenderError", "RunExecutor", "Sequence", "SmithersError", "Store", "Task", "TaskCtx",
           "WorkflowDef", "Worktree", "workflow"]
