"""The inspector: everything about the selected step — state, attempts and their errors, the
prompt, the output (text as text: test logs and diffs read as they would in a terminal), the
files it changed, and its events — or, with no step selected, the run itself."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..runmodel import Rec
from .fmt import NODE_STYLE, Clock, cost, key_label, short_json, tokens
from .textview import TextView

if TYPE_CHECKING:
    from engine.records import AttemptRecord

MAX_TEXT = 6000
INLINE = 80  # strings up to this long, without a newline, stay on the key's line


@dataclass
class StepView:
    """What the inspector shows about one step, as of the frame shown."""

    key: tuple[str, int]
    rec: Rec
    output: Any = None
    has_output: bool = False
    attempts: list[AttemptRecord] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    prompt: str | None = None
    gate: dict[str, Any] | None = None
    diff_stat: str | None = None
    usage: dict[str, float] | None = None
    past: int | None = None  # the frame shown, when in the past
    until: float | None = None  # its time


def section(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def clip(text: str, n: int = MAX_TEXT) -> str:
    return text if len(text) <= n else text[:n] + f"\n… ({len(text) - n} more characters)"


def looks_like_diff(text: str) -> bool:
    return text.startswith(("diff --git", "--- ", "@@ ")) or "\n@@ " in text[:2000]


def text_block(text: str) -> RenderableType:
    """A multi-line string as it reads in a terminal: a diff coloured as one, anything else as is."""
    if looks_like_diff(text):
        return Syntax(clip(text), "diff", theme="ansi_dark", background_color="default", word_wrap=True)
    return Text(clip(text), style="grey82")


def value_view(value: Any, indent: int = 0) -> list[RenderableType]:
    """An output as readable lines: `key: value` for short values, text blocks for long or
    multi-line strings, nested objects indented, short lists inline."""
    pad = "  " * indent
    if isinstance(value, str):
        return [Text(pad + value)] if len(value) <= INLINE and "\n" not in value else [text_block(value)]
    if not isinstance(value, dict):
        if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            s = json.dumps(value, ensure_ascii=False, default=str)
            if len(s) <= INLINE:
                return [Text(pad + s)]
        if isinstance(value, list):
            out: list[RenderableType] = []
            for i, v in enumerate(value[:50]):
                if isinstance(v, dict | list):
                    out.append(Text(f"{pad}[{i}]", style="grey58"))
                    out += value_view(v, indent + 1)
                else:
                    out.append(Text(f"{pad}- {short_json(v, 200)}"))
            if len(value) > 50:
                out.append(Text(f"{pad}… {len(value) - 50} more", style="grey50"))
            return out
        return [Text(pad + json.dumps(value, ensure_ascii=False, default=str))]
    out = []
    for k, v in value.items():
        key = Text(f"{pad}{k}: ", style="bold grey70")
        if isinstance(v, str) and (len(v) > INLINE or "\n" in v):
            out.append(key)
            out.append(text_block(v))
        elif isinstance(v, dict | list) and json.dumps(v, default=str).__len__() > INLINE:
            out.append(key)
            out += value_view(v, indent + 1)
        else:
            out.append(key + Text(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)))
    return out


AT_KEY = re.compile(r"(^|_)at$")


def event_detail(data: dict[str, Any], clock: Clock) -> str:
    bits = []
    for k, v in data.items():
        if AT_KEY.search(k) and isinstance(v, int | float):
            bits.append(f"{k}={clock.stamp(v)}")
        else:
            bits.append(f"{k}={short_json(v, 80)}")
    return " ".join(bits)


class Inspector(TextView):
    DEFAULT_CSS = "Inspector { padding: 0 1; }"

    def __init__(self, clock: Clock, **kw: Any) -> None:
        super().__init__(Text("select a step", style="grey58"), **kw)
        self.clock = clock
        self.shown: RenderableType = Text("")
        self.shown_for: Any = None  # what is shown (a step's key): the scroll stays when it is shown again

    def show_text(self, text: str, about: Any = None) -> None:
        self.shown = Text(text, style="grey58")
        self.shown_for = about
        self.set(self.shown)

    def show_parts(self, parts: list[RenderableType], about: Any = None) -> None:
        self.shown = Group(*parts)
        same = about is not None and about == self.shown_for
        self.shown_for = about
        self.set(self.shown, keep_scroll=same)

    def show(self, v: StepView) -> None:
        self.show_parts(self.parts(v), about=v.key)

    def plain(self) -> str:
        """What the inspector shows, as plain text (for tests and screen readers)."""
        from rich.console import Console

        console = Console(width=100, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(self.shown)
        console.file.close()
        return console.export_text()

    def language_parts(self, v: StepView) -> list[RenderableType]:
        """What a signal, a timer, a sub-workflow, a saga, a cached or a caught step adds (from its
        frame record, as of the frame shown, and its attempts)."""
        n = v.rec
        d = n.data or {}
        waiting = n.state == "waiting"
        out: list[RenderableType] = []
        if n.kind == "signal":
            if waiting:
                out.append(Text(f"waits for signal {d.get('name')!r} since {self.clock.stamp(d.get('since'))}"
                                + (f", until {self.clock.stamp(d['due'])}" if d.get("due") else ""), style="yellow"))
                out.append(Text(f"send it: smithers signal RUN {d.get('name')} --data JSON", style="grey58"))
            elif d.get("signal"):
                out.append(Text(f"signal #{d['signal']} from {d.get('sent_by') or 'someone'} at "
                                f"{self.clock.stamp(d.get('sent_at'))}", style="grey58"))
        if n.kind == "timer" and d.get("due"):
            when = self.clock.stamp(d["due"])
            out.append(Text(f"sleeps until {when}" if waiting else
                            f"was due {when}, fired {self.clock.stamp(d.get('fired_at'))}",
                            style="yellow" if waiting else "grey58"))
        if n.kind == "subflow" and d.get("child"):
            out.append(Text(f"sub-workflow run {d['child']} (enter opens it)", style="magenta"))
        if any(a.extra.get("cache") == "hit" for a in v.attempts):
            out.append(Text("output reused from the cache: the step did not run", style="grey58"))
        if d.get("caught"):
            out.append(Text(f"this failure was caught by {d['caught']}: the run went on", style="grey58"))
        if n.kind == "saga" and d:
            line = f"saga {d.get('phase')}"
            if d.get("failed"):
                line += f": step {d['failed'][0]} failed; compensated {', '.join(d.get('compensated') or []) or '-'}"
            out.append(Text(line, style="grey58"))
        return out

    def parts(self, v: StepView) -> list[RenderableType]:
        n = v.rec
        g, c = NODE_STYLE.get(n.state, ("?", "white"))
        out: list[RenderableType] = []
        if v.past is not None:
            out.append(Text(f" as of frame {v.past} (the past) ", style="bold reverse yellow"))
        head = Text.assemble((key_label(*v.key), "bold"), "  ", (f"{g} {n.state}", c), ("  " + n.kind, "grey58"))
        if n.attempts:
            head.append(f"  attempt {n.attempts}", style="grey58")
        out.append(head)
        usage = v.usage
        if usage and (usage.get("tokens_in") or usage.get("tokens_out") or usage.get("cost_usd")):
            out.append(Text(f"tokens {tokens(usage.get('tokens_in'))} in / {tokens(usage.get('tokens_out'))} out  "
                            f"cost {cost(usage.get('cost_usd'))}", style="grey58"))
        if n.error:
            out.append(Text.assemble(("error: ", "bold red1"), (n.error, "red1")))
        data = n.data or {}
        if n.kind == "loop" and data.get("iteration") is not None:
            out.append(Text(f"loop at iteration {data['iteration']}", style="grey58"))
        if n.kind == "worktree" and data:
            out.append(Text(f"worktree {data.get('path', '')}  branch {data.get('branch', '')}", style="grey58"))
        out += self.language_parts(v)
        if v.gate:
            out += self.gate_parts(v)
        if v.attempts:
            out += self.attempt_parts(v)
        if v.prompt:
            out.append(section("Prompt"))
            out.append(Text(clip(v.prompt, 3000)))
        out.append(section("Output"))
        if v.has_output:
            out += value_view(v.output)
        elif n.kind == "loop":
            its = data.get("iteration")
            done = n.state in ("done", "skipped", "failed", "cancelled")
            out.append(Text(f"a loop has no output of its own: it {'ran' if done else 'is at'} "
                            f"{(its or 0) + 1} iteration(s); select a step inside it", style="grey50"))
        elif n.kind == "worktree":
            out.append(Text("a worktree group: select a step inside it", style="grey50"))
        else:
            out.append(Text("no output yet" if n.state not in ("failed", "skipped", "cancelled")
                            else f"no output: the step {n.state}", style="grey50"))
        if v.diff_stat:
            out.append(section("Files changed  (D opens the diff)"))
            out.append(Text(v.diff_stat))
        if v.events:
            out.append(section(f"Events ({len(v.events)})"))
            t = Table(box=None, pad_edge=False, show_header=False, expand=True)
            t.add_column("at", style="grey58", no_wrap=True)
            t.add_column("frame", style="grey58", justify="right", no_wrap=True)
            t.add_column("type", no_wrap=True)
            t.add_column("detail", ratio=1)
            for e in v.events[-40:]:
                t.add_row(self.clock.stamp(e.at), f"#{e.frame}", e.type, event_detail(e.data, self.clock))
            out.append(t)
        return out

    def gate_parts(self, v: StepView) -> list[RenderableType]:
        gate = v.gate or {}
        out: list[RenderableType] = [section("Approval"), Text(gate.get("message", ""))]
        if gate.get("decision"):
            out.append(Text(f"{gate['decision']} by {gate['decided_by']} at {self.clock.stamp(gate['decided_at'])}"
                            + (f": {gate['note']}" if gate.get("note") else ""), style="grey58"))
        elif v.past is not None:
            out.append(Text("not decided yet at this frame", style="yellow"))
        else:
            out.append(Text("waiting — d opens the prompt (y approves, n denies)", style="yellow"))
        return out

    def attempt_parts(self, v: StepView) -> list[RenderableType]:
        out: list[RenderableType] = [section("Attempts")]
        t = Table(box=None, pad_edge=False, show_header=True, header_style="grey58")
        for col in ("#", "outcome", "started", "took", "agent", "tokens", "cost"):
            t.add_column(col, no_wrap=True)
        errors: list[Text] = []
        for a in v.attempts:
            finished = a.finished_at
            if v.until is not None and finished and finished > v.until:
                finished = None  # it ended after the frame shown
            outcome = (a.outcome or "running") if finished or v.until is None else "running"
            t.add_row(str(a.attempt), outcome, self.clock.stamp(a.started_at),
                      self.clock.since(a.started_at, finished or v.until),
                      (a.agent or "") + (f"/{a.model}" if a.model and a.model != a.agent else ""),
                      tokens((a.tokens_in or 0) + (a.tokens_out or 0)) if a.tokens_in else "",
                      cost(a.cost_usd) if a.cost_usd else "")
            if a.error and finished:
                errors.append(Text.assemble((f"attempt {a.attempt}: ", "grey58"), (str(a.error), "red1")))
        out.append(t)
        out += errors
        return out
