"""Smithers engine: a durable workflow runtime for AI agents. Never imports textual or the app."""
from .approval import Decision
from .budget import Budget
from .cache import Cache
from .context import Ctx, TaskCtx
from .dsl import (Approval, Branch, ContinueAsNew, HumanTask, Loop, Node, Parallel, Saga, Sequence, Signal, Subflow,
                  Task, Timer, TryCatchFinally, WorkflowDef, Worktree, workflow)
from .errors import BadInput, OutputMissing, RenderError, SmithersError
from .events import Event, EventBus
from .run import RunExecutor
from .retry import Retry
from .runtime import Engine
from .store import Store
from .waits import TimerFired

__all__ = ["Approval", "BadInput", "Branch", "Budget", "Cache", "ContinueAsNew", "Ctx", "Decision", "Engine", "Event",
           "EventBus", "HumanTask", "Loop", "Node", "OutputMissing", "Parallel", "RenderError", "Retry", "RunExecutor",
           "Saga", "Sequence", "Signal", "SmithersError", "Store", "Subflow", "Task", "TaskCtx", "Timer", "TimerFired",
           "TryCatchFinally", "WorkflowDef", "Worktree", "workflow"]
