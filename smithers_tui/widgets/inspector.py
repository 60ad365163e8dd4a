"""The inspector: everything about the selected step — state, attempts and errors, prompt or
input, output, the file diff it made, and its events."""
from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from .fmt import NODE_STYLE, Clock, cost, key_label, short_json, tokens

MAX_TEXT = 6000


def section(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def clip(text: str, n: int = MAX_TEXT) -> str:
    return text if len(text) <= n else text[:n] + f"\n… ({len(text) - n} more characters)"


def as_json(value: Any) -> RenderableType:
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return Syntax(clip(text), "json", theme="ansi_dark", word_wrap=True, background_color="default")


class Inspector(VerticalScroll, can_focus=True):
    DEFAULT_CSS = """
    Inspector { padding: 0 1; scrollbar-size-vertical: 1; }
    Inspector > Static { width: 100%; }
    """

    def __init__(self, clock: Clock, **kw: Any) -> None:
        super().__init__(**kw)
        self.clock = clock
        self.body = Static("select a step", markup=False)

    def compose(self) -> Any:
        yield self.body

    def show_text(self, text: str) -> None:
        self.shown: RenderableType = Text(text, style="grey58")
        self.body.update(self.shown)

    def show(self, d: dict[str, Any]) -> None:
        self.shown = Group(*self.parts(d))
        self.body.update(self.shown)

    def plain(self) -> str:
        """What the inspector shows, as plain text (for tests and screen readers)."""
        from rich.console import Console

        console = Console(width=100, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(getattr(self, "shown", ""))
        console.file.close()
        return console.export_text()

    def language_parts(self, n: dict[str, Any]) -> list[RenderableType]:
        """What a signal, a timer, a sub-workflow, a saga, a cached or a caught step adds."""
        out: list[RenderableType] = []
        wait = n.get("wait") or {}
        if n["kind"] == "signal":
            if n["state"] == "waiting":
                out.append(Text(f"waits for signal {wait.get('name')!r} since {self.clock.stamp(wait.get('since'))}"
                                + (f", until {self.clock.stamp(wait['due'])}" if wait.get("due") else ""), style="yellow"))
                out.append(Text(f"send it: smithers signal RUN {wait.get('name')} --data JSON", style="grey58"))
            elif wait.get("signal"):
                out.append(Text(f"signal #{wait['signal']} from {wait.get('sent_by') or 'someone'} at "
                                f"{self.clock.stamp(wait.get('sent_at'))}", style="grey58"))
        if n["kind"] == "timer" and wait.get("due"):
            when = self.clock.stamp(wait["due"])
            out.append(Text(f"sleeps until {when}" if n["state"] == "waiting" else f"was due {when}, fired "
                            f"{self.clock.stamp(wait.get('fired_at'))}", style="yellow" if n["state"] == "waiting"
                            else "grey58"))
        if n.get("child_run_id"):
            out.append(Text(f"sub-workflow run {n['child_run_id']} (enter opens it)", style="magenta"))
        if n.get("cache") == "hit":
            out.append(Text("output reused from the cache: the step did not run", style="grey58"))
        if n.get("caught"):
            out.append(Text(f"this failure was caught by {n['caught']}: the run went on", style="grey58"))
        saga = n.get("saga")
        if saga:
            line = f"saga {saga.get('phase')}"
            if saga.get("failed"):
                line += f": step {saga['failed'][0]} failed; compensated {', '.join(saga.get('compensated') or []) or '-'}"
            out.append(Text(line, style="grey58"))
        return out

    def parts(self, d: dict[str, Any]) -> list[RenderableType]:
        n = d["node"]
        key = (n["id"], n["iteration"])
        g, c = NODE_STYLE.get(n["state"], ("?", "white"))
        out: list[RenderableType] = []
        if d.get("past") is not None:
            out.append(Text(f" as of frame {d['past']} (the past) ", style="bold reverse yellow"))
        head = Text.assemble((key_label(*key), "bold"), "  ", (f"{g} {n['state']}", c), ("  " + n["kind"], "grey58"))
        if n.get("attempts"):
            head.append(f"  attempt {n['attempts']}", style="grey58")
        out.append(head)
        usage = n.get("usage")
        if usage and (usage.get("tokens_in") or usage.get("tokens_out") or usage.get("cost_usd")):
            out.append(Text(f"tokens {tokens(usage.get('tokens_in'))} in / {tokens(usage.get('tokens_out'))} out  "
                            f"cost {cost(usage.get('cost_usd'))}", style="grey58"))
        if n.get("error"):
            out.append(Text(f"error: {n['error']}", style="red1"))
        if n.get("loop_iteration") is not None:
            out.append(Text(f"loop at iteration {n['loop_iteration']}", style="grey58"))
        if n.get("worktree"):
            wt = n["worktree"]
            out.append(Text(f"worktree {wt.get('path', '')}  branch {wt.get('branch', '')}", style="grey58"))
        out += self.language_parts(n)
        gate = d.get("gate")
        if gate:
            out.append(section("Approval"))
            out.append(Text(gate["message"]))
            if gate.get("decision"):
                out.append(Text(f"{gate['decision']} by {gate['decided_by']} at {self.clock.stamp(gate['decided_at'])}"
                                + (f": {gate['note']}" if gate.get("note") else ""), style="grey58"))
            else:
                out.append(Text("waiting — y approves, n denies (d opens the prompt)", style="yellow"))
        attempts = d.get("attempts") or []
        if attempts:
            out.append(section("Attempts"))
            t = Table(box=None, pad_edge=False, show_header=True, header_style="grey58")
            for col in ("#", "outcome", "started", "took", "agent", "tokens", "cost", "error"):
                t.add_column(col, overflow="fold")
            for a in attempts:
                t.add_row(str(a["attempt"]), a.get("outcome") or "running", self.clock.stamp(a["started_at"]),
                          self.clock.since(a["started_at"], a.get("finished_at")),
                          (a.get("agent") or "") + (f"/{a['model']}" if a.get("model") and a["model"] != a.get("agent")
                                                    else ""),
                          tokens((a.get("tokens_in") or 0) + (a.get("tokens_out") or 0)) if a.get("tokens_in") else "",
                          cost(a.get("cost_usd")) if a.get("cost_usd") else "",
                          Text(short_json(a.get("error") or "", 200), style="red1"))
            out.append(t)
        if d.get("prompt"):
            out.append(section("Prompt"))
            out.append(Text(clip(d["prompt"], 3000)))
        elif d.get("input") is not None:
            out.append(section("Run input"))
            out.append(as_json(d["input"]))
        out.append(section("Output"))
        out.append(as_json(n["output"]) if n.get("output") is not None else Text("no output yet", style="grey50"))
        if d.get("diff"):
            out.append(section("Files changed"))
            out.append(Syntax(clip(d["diff"], 20000), "diff", theme="ansi_dark", background_color="default"))
        events = d.get("events") or []
        if events:
            out.append(section(f"Events ({len(events)})"))
            t = Table(box=None, pad_edge=False, show_header=False)
            t.add_column("at", style="grey58")
            t.add_column("frame", style="grey58", justify="right")
            t.add_column("type")
            t.add_column("detail", overflow="fold")
            for e in events[-60:]:
                detail = " ".join(f"{k}={short_json(v, 80)}" for k, v in e.data.items())
                t.add_row(self.clock.stamp(e.at), f"#{e.frame}", e.type, detail)
            out.append(t)
        return out
