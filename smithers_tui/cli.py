"""The `smithers` command. Without a subcommand it opens the app; every action also exists here,
with `--json` and stable exit codes: 0 finished, 1 failed, 2 cancelled, 3 waiting for approval,
4 bad input. Commands that only read open the database read-only: they never write to it."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, NoReturn

if TYPE_CHECKING:
    from engine.report import RunReport
    from engine.runtime import Engine, RunExecutor
    from engine.store import Store

EXIT = {"finished": 0, "failed": 1, "cancelled": 2, "waiting": 3, "rewound": 0, "running": 0, "queued": 0,
        "interrupted": 1}
BAD_INPUT = 4
_ended: dict[str, str] = {}  # run id -> final status, once the run this command executed has ended


class Parser(argparse.ArgumentParser):
    """Bad flags are bad input: one line on stderr, exit 4 (argparse's own exit 2 means cancelled here)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"smithers: {message} (see `{self.prog} --help`)\n")
        sys.exit(BAD_INPUT)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def ranking(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of options, e.g. C,A,B")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="smithers", description="Durable workflows for AI agents. "
                                "Without a command, opens the terminal app.")
    p.add_argument("--db", help="database file (default .smithers/smithers.db; SMITHERS_DB overrides)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def cmd(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--db", default=argparse.SUPPRESS, help="database file")
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = cmd("run", "start a workflow and run it in the foreground")
    sp.add_argument("target", help="built-in name, path/to/file.py or path/to/file.py:name")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--input", help="input as JSON")
    g.add_argument("--input-file", type=Path, help="input from a JSON file")
    sp.add_argument("--run-id", help="choose the run id")
    sp.add_argument("--max-concurrency", type=positive_int, help="steps running at once (default 4)")
    sp.add_argument("--agent", help="use this agent for every agent step (e.g. demo)")
    sp.add_argument("--budget-usd", type=nonnegative_float, metavar="USD", help="what the whole run may spend")
    sp.add_argument("--budget-tokens", type=nonnegative_int, metavar="N", help="tokens the whole run may use")
    sp.add_argument("--quiet", "-q", action="store_true", help="print only the final line")
    sp.add_argument("--detach", "-d", action="store_true",
                    help="queue the run for a worker and return its id at once (`smithers up` starts workers)")

    sp = cmd("resume", "continue a run from its last saved frame")
    sp.add_argument("run_id")
    sp.add_argument("--force", action="store_true", help="take over even if its owner looks alive")
    sp.add_argument("--accept-changes", action="store_true", help="continue although the workflow source changed")
    sp.add_argument("--agent", help="use this agent for every agent step (e.g. demo)")
    sp.add_argument("--quiet", "-q", action="store_true")

    sp = cmd("cancel", "cancel a run")
    sp.add_argument("run_id")

    sp = cmd("ps", "list runs")
    sp.add_argument("--status", choices=["queued", "running", "waiting", "interrupted", "finished", "failed",
                                         "cancelled", "rewound"])

    sp = cmd("show", "a run and its steps (as of a frame with --frame)")
    sp.add_argument("run_id")
    sp.add_argument("--frame", type=int)

    sp = cmd("frames", "the frames of a run and what changed in each")
    sp.add_argument("run_id")

    sp = cmd("logs", "the event log of a run")
    sp.add_argument("run_id")
    sp.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")

    cmd("workflows", "built-in and project workflows")

    for name, verb in (("approve", "approve"), ("deny", "deny")):
        sp = cmd(name, f"{verb} a waiting gate (NODE may be left out when exactly one waits)")
        sp.add_argument("run_id")
        sp.add_argument("node", nargs="?")
        sp.add_argument("--iteration", type=int)
        sp.add_argument("--note", help="a note kept with the decision")
        sp.add_argument("--by", help="who decides (default: your user name)")
        sp.add_argument("--resume", action="store_true", help="then continue the run here if no process owns it")
        sp.add_argument("--quiet", "-q", action="store_true")
        sp.add_argument("--agent", help=argparse.SUPPRESS)
        if name == "approve":
            sp.add_argument("--choice", help="a select gate: the option chosen")
            sp.add_argument("--rank", type=ranking, metavar="A,B,C", help="a rank gate: every option, best first")

    sp = cmd("signal", "send a signal (an event from outside) to a run; a Signal step with that name takes it")
    sp.add_argument("run_id")
    sp.add_argument("name")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--data", help="the payload as JSON (default null)")
    g.add_argument("--data-file", type=Path, help="the payload from a JSON file")
    sp.add_argument("--by", help="who sends it (default: your user name)")
    sp.add_argument("--resume", action="store_true", help="then continue the run here if no process owns it")
    sp.add_argument("--quiet", "-q", action="store_true")
    sp.add_argument("--agent", help=argparse.SUPPRESS)

    sp = cmd("answer", "answer a human task with data that fits its model")
    sp.add_argument("run_id")
    sp.add_argument("node", nargs="?")
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", help="the answer as JSON")
    g.add_argument("--data-file", type=Path, help="the answer from a JSON file")
    sp.add_argument("--iteration", type=int)
    sp.add_argument("--note", help="a note kept with the answer")
    sp.add_argument("--by", help="who answers (default: your user name)")
    sp.add_argument("--resume", action="store_true", help="then continue the run here if no process owns it")
    sp.add_argument("--quiet", "-q", action="store_true")
    sp.add_argument("--agent", help=argparse.SUPPRESS)

    for name, help in (("fork", "a new run from a frame, with every output valid there carried over"),
                       ("rewind", "a fork that takes over: the original is kept, read-only, as rewound"),
                       ("replay", "re-execute everything after a frame in a new run")):
        sp = cmd(name, help)
        sp.add_argument("run_id")
        sp.add_argument("--frame", type=int, required=name != "replay",
                        help="the frame to start from" + (" (default 0)" if name == "replay" else ""))
        if name == "fork":
            sp.add_argument("--input", help="input changes as JSON (merged into the run's input)")
            sp.add_argument("--reset", nargs="+", default=[], metavar="NODE", help="nodes to run again")
        sp.add_argument("--run-id", dest="new_id", help="the new run's id")
        sp.add_argument("--run", action="store_true", help="run the new run now (else it waits for resume)")
        sp.add_argument("--agent", help="with --run: use this agent for every agent step")
        sp.add_argument("--quiet", "-q", action="store_true")

    sp = cmd("timeline", "frames and the tree of forks, rewinds and replays around a run")
    sp.add_argument("run_id")

    sp = cmd("diff", "what a step changed in its worktree", json_flag=False)
    sp.add_argument("run_id")
    sp.add_argument("node")
    sp.add_argument("--iteration", type=int, help="default: the latest")

    cmd("agents", "configured agents and whether each can run here")

    sp = cmd("hijack", "take over a step's coding-agent session in its CLI, in the step's worktree", json_flag=False)
    sp.add_argument("run_id")
    sp.add_argument("node")
    sp.add_argument("--iteration", type=int, help="default: the latest")

    sp = cmd("init", "set this project up: .smithers/ with a commented config.toml and an example ticket",
             json_flag=False)
    sp.add_argument("path", nargs="?", type=Path, default=Path("."))

    cmd("migrate", "upgrade the database to this smithers' schema", json_flag=False)

    sp = cmd("mcp", "a Model Context Protocol server on stdin/stdout, for coding agents", json_flag=False)
    sp.add_argument("--project", type=Path, help="the project folder (default: the current one)")
    cmd("guide", "the guide to writing workflows, for coding agents", json_flag=False)
    sp = cmd("serve", "the HTTP API with live events (bearer token in .smithers/api-token)", json_flag=False)
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8421, help="port (default 8421; 0: any free port)")
    sp.add_argument("--allow-remote", action="store_true", help="allow an address other machines can reach")
    sp = cmd("web", "the app in a browser, on 127.0.0.1", json_flag=False)
    sp.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8420, help="port (default 8420)")

    sp = cmd("worker", "execute queued, orphaned and newly decided runs, in the foreground (for systemd, "
                       "containers, CI); SIGTERM stops it gracefully", json_flag=False)
    sp.add_argument("--concurrency", type=positive_int, help="runs executed at once (default 4)")
    sp.add_argument("--agent", help="use this agent for every agent step of the runs it executes (e.g. demo)")

    sp = cmd("up", "start worker processes for this project in the background (pid file and log under "
                   ".smithers/)", json_flag=False)
    sp.add_argument("--workers", type=positive_int, default=2, help="how many (default 2)")
    sp.add_argument("--concurrency", type=positive_int, help="runs each executes at once (default 4)")
    sp.add_argument("--agent", help=argparse.SUPPRESS)

    cmd("down", "stop this project's background workers gracefully; their runs stay resumable",
        json_flag=False)
    cmd("status", "which workers run where, and what each is running")
    return p


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(argv))


def run_cli(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        return open_app(args)
    from engine.errors import SmithersError

    try:
        db = args.db if getattr(args, "db", None) else _default_db()
        return asyncio.run(COMMANDS[args.cmd](args, db))
    except SmithersError as e:
        print(f"smithers: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `smithers frames RUN | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        rid = getattr(args, "run_id", None) or next(iter(_ended), None)
        if rid in _ended:  # the run had ended already: ^C only cut the printing short
            return EXIT.get(_ended[rid], 1)
        print("smithers: interrupted" + (f"; `smithers resume {rid}` continues the run" if rid else ""),
              file=sys.stderr)
        return 130


def _default_db() -> str:
    from engine.project import default_db

    return default_db()


def open_app(args: argparse.Namespace) -> int:
    try:
        from .app import run_app
    except ImportError:
        build_parser().print_help()
        return 0
    return run_app(Path(args.db or _default_db()))


# --- helpers ------------------------------------------------------------------------------------
def open_db(db: str, *, readonly: bool = False, create: bool = False, inline: bool = True) -> Awaitable["Store"]:
    """The store for a command. Commands that only read open it read-only: nothing is written. A
    command is one process doing one thing at a time: the database's work runs inline (a worker,
    which runs many runs at once, gives it a thread of its own)."""
    from engine.project import durability
    from engine.store import open_store

    return open_store(db, create=create, readonly=readonly, durability=durability(), inline=inline)


def out_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def parse_input(args: argparse.Namespace) -> Any:
    from engine.errors import InputInvalid

    if getattr(args, "input_file", None):
        try:
            raw = args.input_file.read_bytes()
        except OSError as e:
            raise InputInvalid(f"cannot read --input-file {args.input_file}: {e.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputInvalid(f"--input-file {args.input_file} is not UTF-8 text (byte {raw[e.start]:#04x} at "
                               f"offset {e.start}): save it as UTF-8") from None
        src = str(args.input_file)
    elif args.input is not None:
        text, src = args.input, "--input"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputInvalid(f"--input holds bytes that are not UTF-8 (at character {e.start}): "
                               "pass UTF-8 text, or put the JSON in a UTF-8 file and use --input-file") from None
    else:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputInvalid(f"{src} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): "
                           "quote it for the shell, e.g. --input '{\"n\": 3}'") from None


def parse_data(args: argparse.Namespace) -> Any:
    """--data JSON or --data-file F (a signal's payload, a human task's answer)."""
    ns = argparse.Namespace(input=args.data, input_file=args.data_file)
    try:
        return parse_input(ns)
    except Exception as e:
        from engine.errors import InputInvalid

        raise InputInvalid(str(e).replace("--input-file", "--data-file").replace("--input", "--data")) from None


class ProgressPrinter:
    """Prints the events that say what happens, a frame's lines in one write (not one per line).
    Lines of another run than the one started (a sub-workflow's, the run it continued as) say which."""

    SHOWN = frozenset({"node_started", "node_finished", "node_failed", "node_retrying", "node_skipped",
                       "approval_requested", "approval_decided", "log", "node_interrupted", "loop_iteration",
                       "wait_started", "signal_received", "signal_refused", "timer_fired", "wait_timed_out",
                       "subflow_started", "failure_caught", "compensation_started", "saga_compensated",
                       "run_continued", "cache_hit", "budget_exceeded"})

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id
        self.pending: list[str] = []
        self.gone = False  # the reader left (`| head`): the run goes on, the printing stops

    def __call__(self, ev: Any) -> None:
        if ev.type in self.SHOWN and not self.gone:
            if not self.pending:
                asyncio.get_running_loop().call_soon(self.flush)
            who = f"[{ev.run_id}] " if self.run_id and ev.run_id != self.run_id else ""
            self.pending.append(who + ev.line() + "\n")

    def flush(self) -> None:
        text = "".join(self.pending)
        self.pending.clear()
        if not text or self.gone:
            return
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            self.gone = True


async def execute(engine: "Engine", ex: "RunExecutor", args: argparse.Namespace) -> int:
    """Run an executor here in the foreground (its sub-workflows too, and the runs it continues as),
    print progress, then the result of the last run."""
    first = ex.run_id
    printer = ProgressPrinter(first)
    if not args.quiet and not args.json:
        engine.bus.subscribe(printer)

    def next_run(nxt: "RunExecutor") -> None:
        printer.flush()
        printer.run_id = nxt.run_id
        if not args.json and not args.quiet:
            print(f"run {first} continued as {nxt.run_id}", flush=True)

    status, ex = await engine.execute(ex, stop_when_waiting=True, on_next=next_run)
    printer.flush()
    _ended[ex.run_id] = _ended[first] = str(status)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it has ended: ^C now would only lose the summary
    report = await engine.report(ex.run_id)
    if args.json:
        out_json(report.json_dict())
    else:
        print(final_line(report))
    return EXIT.get(str(status), 1)


def final_line(s: "RunReport") -> str:
    rid, st = s.run_id, s.status
    if st == "finished":
        return f"run {rid} finished ({s.frame} frames): `smithers show {rid}` for outputs"
    if st == "waiting":
        from engine.state import key_label

        gates = [a for a in s.waiting_gates() if a.mode != "human"]
        asks = [a for a in s.waiting_gates() if a.mode == "human"]
        parts = []
        if gates:
            listed = ", ".join(f"{key_label(a.node_id, a.iteration)}: {a.message}" for a in gates)
            hows = {f"`smithers approve {rid} {a.node_id} --choice {'|'.join(a.options or [])}`" if a.mode == "select"
                    else f"`smithers approve {rid} {a.node_id} --rank {','.join(a.options or [])}`" if a.mode == "rank"
                    else f"`smithers approve {rid}` or `smithers deny {rid}`" for a in gates}
            parts.append(f"waits for approval ({listed}): {' / '.join(sorted(hows))}")
        if asks:
            listed = ", ".join(f"{key_label(a.node_id, a.iteration)}: {a.message}" for a in asks)
            parts.append(f"waits for an answer ({listed}): `smithers answer {rid} NODE --data JSON`")
        for n in s.waits():
            if n.child_run_id:
                parts.append(f"its sub-workflow {key_label(n.id, n.iteration)} (run {n.child_run_id}) waits for a "
                             f"person: `smithers show {n.child_run_id}`")
        return f"run {rid} " + "; ".join(parts or ["waits"])
    if st == "failed":
        return f"run {rid} failed: {s.error}; fix it, then `smithers resume {rid}` retries the failed steps"
    return f"run {rid} {st}"


def fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def fmt_duration(a: float | None, b: float | None) -> str:
    if not a:
        return "-"
    s = max(0, int((b or time.time()) - a))  # a clock moved back never makes a negative duration
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _short(v: Any, n: int = 60) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= n else s[: n - 1] + "…"


def _engine(store: "Store", args: argparse.Namespace, **kw: Any) -> "Engine":
    from engine.runtime import Engine

    from .targets import resolve

    engine = Engine(store, agent_override=getattr(args, "agent", None), **kw)
    engine.resolver = resolve  # a Subflow may name a built-in or project workflow
    return engine


# --- commands -----------------------------------------------------------------------------------
async def cmd_run(args: argparse.Namespace, db: str) -> int:
    from engine.budget import Budget

    from .targets import resolve

    wf, target = resolve(args.target)
    data = parse_input(args)
    wf.check_input(data)  # before anything is written
    budget = (Budget(tokens=args.budget_tokens, usd=args.budget_usd)
              if args.budget_tokens is not None or args.budget_usd is not None else None)
    if args.detach:
        return await run_detached(args, db, wf, target, data, budget)
    async with await open_db(db, create=True) as store:
        engine = _engine(store, args, max_concurrency=args.max_concurrency or 4)
        ex = await engine.start(wf, target, data, run_id=args.run_id, max_concurrency=args.max_concurrency,
                                budget=budget)
        if not args.json and not args.quiet:
            print(f"run {ex.run_id} started: {wf.name} (db {db})", flush=True)
        return await execute(engine, ex, args)


async def run_detached(args: argparse.Namespace, db: str, wf: Any, target: str, data: Any, budget: Any) -> int:
    """`run --detach`: the run is recorded as queued; a worker executes it."""
    async with await open_db(db, create=True) as store:
        q = await _engine(store, args).queue(wf, target, data, run_id=args.run_id,
                                             max_concurrency=args.max_concurrency, budget=budget)
    if args.json:
        out_json(q.json_dict())
    elif args.quiet:
        print(q.run_id)
    else:
        print(f"run {q.run_id} queued: {wf.name} (db {db}); `smithers logs {q.run_id} --follow` follows it")
    if not q.workers:
        print("smithers: no worker is running, so the run waits in the queue: `smithers up` starts workers "
              "(or `smithers worker` in the foreground)", file=sys.stderr)
    return 0


async def cmd_resume(args: argparse.Namespace, db: str) -> int:
    async with await open_db(db) as store:
        engine = _engine(store, args)
        run_id = await store.find_run(args.run_id)
        ex = await engine.resume(run_id, force=args.force, accept_changes=args.accept_changes)
        if not args.json and not args.quiet:
            if ex.run_id != run_id:
                print(f"run {run_id} is a sub-workflow of run {ex.run_id}, which drives it: continuing "
                      f"{ex.run_id} from frame {ex.frame}", flush=True)
            else:
                print(f"run {run_id} resumed from frame {ex.frame}", flush=True)
        return await execute(engine, ex, args)


async def cmd_cancel(args: argparse.Namespace, db: str) -> int:
    async with await open_db(db) as store:
        run_id = await store.find_run(args.run_id)
        what = await _engine(store, args).cancel(run_id)
        if what == "requested":  # its owner notices within a poll interval
            for _ in range(50):
                await asyncio.sleep(0.1)
                if (await store.get_run(run_id)).status == "cancelled":
                    what = "cancelled"
                    break
        msg = {"cancelled": f"run {run_id} cancelled",
               "requested": f"run {run_id}: cancel requested; its owner has not confirmed yet"}[what]
        out_json({"run_id": run_id, "result": what}) if args.json else print(msg)
        return 0


async def cmd_ps(args: argparse.Namespace, db: str) -> int:
    if "://" not in db and not Path(db).exists():
        out_json([]) if args.json else print(f"no runs yet (database {db} does not exist)")
        return 0
    async with await open_db(db, readonly=True) as store:
        items = await _engine(store, args).runs(args.status)
    if args.json:
        out_json([i.json_dict() for i in items])
        return 0
    rows = [[i.run_id, i.workflow, i.status, i.owner.label() if i.owner else "-", str(i.frame),
             fmt_time(i.created_at), fmt_duration(i.created_at, i.finished_at),
             "; ".join([f"{w.node_id}: {w.message}" for w in i.waiting] + [wait_note(w) for w in i.waits])
             or _short(i.error or "", 50)]
            for i in items]
    print(table(rows, ["run", "workflow", "status", "owner", "frame", "started", "took", "note"])
          if rows else "no runs")
    return 0


def wait_note(w: Any) -> str:
    """One phrase for a durable wait, in `ps`."""
    if w.kind == "signal":
        return f"{w.node_id}: waits for signal {w.name!r}"
    if w.kind == "timer":
        return f"{w.node_id}: timer due {fmt_time(w.due)}"
    return f"{w.node_id}: sub-workflow {w.child} waits"


async def cmd_show(args: argparse.Namespace, db: str) -> int:
    async with await open_db(db, readonly=True) as store:
        run_id = await store.find_run(args.run_id)
        s = await _engine(store, args).report(run_id, args.frame)
    if args.json:
        out_json(s.json_dict())
        return 0
    past = f" (as of frame {s.frame} of {s.last_frame})" if args.frame is not None else ""
    print(f"run {s.run_id}  {s.workflow}  {s.status}{past}")
    print(f"input  {json.dumps(s.input)}")
    if s.parent_run_id:
        print(f"{s.kind} of {s.parent_run_id} at frame {s.parent_frame}")
    if s.error:
        print(f"error  {s.error}")
    if s.usage.tokens:
        print(f"usage  {s.usage.tokens_in} in / {s.usage.tokens_out} out tokens, ${s.usage.cost_usd:.4f}")
    for b in s.budgets or []:
        limit = " and ".join(x for x in (f"{b.tokens:,} tokens" if b.tokens is not None else "",
                                          f"${b.usd:.2f}" if b.usd is not None else "") if x)
        scope = "the run" if b.scope == "<run>" else b.scope
        print(f"budget {scope}: {b.spent_tokens:,} tokens, ${b.spent_usd:.4f} spent of {limit}")
    if s.result is not None:
        print(f"result {_short(s.result, 100)}")
    rows = [[n.id, str(n.iteration), n.state, str(n.attempts), _short(n.error if n.error else n.output, 70)]
            for n in s.nodes]
    print(table(rows, ["node", "iter", "state", "tries", "output / error"]))
    return 0


def _frame_items(frames: list[Any]) -> list[dict[str, Any]]:
    return [{"frame": f.frame, "at": f.at, "changes": f.delta.changes(), "status": f.delta.status} for f in frames]


def _print_frames(items: list[dict[str, Any]], empty: str) -> None:
    for i in items:
        st = f"  [run {i['status']}]" if i["status"] else ""
        print(f"#{i['frame']:<5} {fmt_time(i['at'])}  {', '.join(i['changes']) or empty}{st}")


async def cmd_frames(args: argparse.Namespace, db: str) -> int:
    async with await open_db(db, readonly=True) as store:
        run_id = await store.find_run(args.run_id)
        items = _frame_items(await store.frames(run_id))
    out_json(items) if args.json else _print_frames(items, "created")
    return 0


async def cmd_logs(args: argparse.Namespace, db: str) -> int:
    from engine.lease import shown_status

    async with await open_db(db, readonly=True) as store:
        run_id = await store.find_run(args.run_id)
        after = 0
        seen = -1
        while True:
            events = await store.events(run_id, after)
            for ev in events:
                print(ev.model_dump_json() if args.json else ev.line(), flush=True)
                after = ev.seq
            if not args.follow:
                return 0
            if events:
                continue
            run = await store.get_run(run_id)
            shown = shown_status(run)
            if run.status.final:
                return EXIT.get(str(run.status), 0)
            if run.status == "waiting" and not run.owner:
                return 3
            if shown == "interrupted":
                print(f"smithers: run {run_id} is interrupted: no process runs it (its owner is gone); "
                      f"`smithers resume {run_id}` continues it", file=sys.stderr)
                return EXIT["interrupted"]
            while (v := await store.data_version()) == seen:  # nothing new was written: wait for a change
                await asyncio.sleep(0.2)
                if not _owner_still_there(run):
                    break
            seen = v


def _owner_still_there(run: Any) -> bool:
    from engine.lease import owner_alive

    return run.owner is None or owner_alive(run.owner)


async def cmd_workflows(args: argparse.Namespace, db: str) -> int:
    from .targets import all_workflows, describe

    items = [describe(wf, target) for wf, target in all_workflows().values()]
    if args.json:
        out_json(items)
    else:
        rows = [[i["name"], "built-in" if i["builtin"] else i["target"].split(":")[1], i["description"]] for i in items]
        print(table(rows, ["workflow", "from", "description"]))
    return 0


async def cmd_approve(args: argparse.Namespace, db: str, approved: bool = True) -> int:
    async with await open_db(db) as store:
        run_id = await store.find_run(args.run_id)
        engine = _engine(store, args)
        d = await engine.decide(run_id, args.node, args.iteration, approved, args.by, args.note, resume=args.resume,
                                choice=getattr(args, "choice", None), rank=getattr(args, "rank", None))
        return await _decided(engine, store, d, args, run_id)


async def _decided(engine: "Engine", store: "Store", d: Any, args: argparse.Namespace, run_id: str) -> int:
    """What a recorded decision or answer prints, and the run continued here with --resume."""
    from engine.state import key_label

    what = ("human task" if d.gate.mode == "human" else "gate") + " " + key_label(d.gate.node_id, d.gate.iteration)
    said = d.gate.decision + (f" ({_short(d.gate.answer, 60)})" if d.gate.answer is not None else "")
    if d.executor is not None:
        if not args.json and not args.quiet:
            print(f"{what} of run {run_id} {said}; continuing the run here", flush=True)
        return await execute(engine, d.executor, args)
    if args.json:
        out_json(d.json_dict())
    elif d.owner_alive:
        from engine.lease import WORKER_PREFIX

        owner = (await store.get_run(run_id)).owner
        where = f" ({owner.host} pid {owner.pid})" if owner else ""
        if owner is not None and owner.id.startswith(WORKER_PREFIX):  # a worker took it at once
            print(f"{what} of run {run_id} {said}; a worker continues the run ({owner.id}{where})")
        else:
            print(f"{what} of run {run_id} {said}; its owner{where} goes on with it")
    elif await engine.workers():
        print(f"{what} of run {run_id} {said}; a worker continues the run")
    else:
        print(f"{what} of run {run_id} {said}; `smithers resume {run_id}` continues the run "
              "(or `smithers up` starts workers that do)")
    return 0


async def cmd_deny(args: argparse.Namespace, db: str) -> int:
    return await cmd_approve(args, db, approved=False)


async def cmd_answer(args: argparse.Namespace, db: str) -> int:
    data = parse_data(args)  # before anything is opened
    async with await open_db(db) as store:
        run_id = await store.find_run(args.run_id)
        engine = _engine(store, args)
        d = await engine.answer(run_id, args.node, args.iteration, data, args.by, args.note, resume=args.resume)
        return await _decided(engine, store, d, args, run_id)


async def cmd_signal(args: argparse.Namespace, db: str) -> int:
    data = parse_data(args) if (args.data is not None or args.data_file is not None) else None
    async with await open_db(db) as store:
        run_id = await store.find_run(args.run_id)
        engine = _engine(store, args)
        sent = await engine.signal(run_id, args.name, data, args.by or _user(), resume=args.resume)
        if sent.executor is not None:
            if not args.json and not args.quiet:
                print(f"signal {args.name!r} sent to run {run_id}; continuing the run here", flush=True)
            return await execute(engine, sent.executor, args)
        if args.json:
            out_json(sent.json_dict())
            return 0
        kept = ("" if sent.waiting else f"; no step waits for it yet: it is kept for the first Signal step named "
                f"{args.name!r}" + ("" if sent.matched else " (the workflow's current shape has none)"))
        if sent.owner_alive:
            print(f"signal {args.name!r} sent to run {run_id} (#{sent.signal.seq}){kept}")
        else:
            print(f"signal {args.name!r} sent to run {run_id} (#{sent.signal.seq}){kept}; no process runs it: "
                  f"`smithers resume {run_id}` continues it")
        return 0


def _user() -> str:
    from engine.approval import default_user

    return default_user()


async def _time_travel(args: argparse.Namespace, db: str, kind: str) -> int:
    async with await open_db(db) as store:
        run_id = await store.find_run(args.run_id)
        engine = _engine(store, args)
        if kind == "fork":
            changes = None
            if args.input is not None:
                args.input_file = None
                changes = parse_input(args)
            info = await engine.fork(run_id, args.frame, input=changes, reset=args.reset, new_id=args.new_id)
        elif kind == "rewind":
            info = await engine.rewind(run_id, args.frame, new_id=args.new_id)
        else:
            info = await engine.replay(run_id, args.frame or 0, new_id=args.new_id)
        if args.run:
            if not args.json and not args.quiet:
                print(f"{kind} {info.run_id} of {run_id} at frame {info.from_frame}: {info.carried} outputs "
                      f"carried over; running", flush=True)
            return await execute(engine, await engine.resume(info.run_id), args)
        if args.json:
            out_json(info.model_dump())
        else:
            rerun = f"; runs again: {', '.join(info.rerun)}" if info.rerun else ""
            print(f"{kind} {info.run_id} of {run_id} at frame {info.from_frame}: {info.carried} outputs carried "
                  f"over{rerun}. `smithers resume {info.run_id}` runs it")
        return 0


async def cmd_fork(args: argparse.Namespace, db: str) -> int:
    return await _time_travel(args, db, "fork")


async def cmd_rewind(args: argparse.Namespace, db: str) -> int:
    return await _time_travel(args, db, "rewind")


async def cmd_replay(args: argparse.Namespace, db: str) -> int:
    return await _time_travel(args, db, "replay")


async def cmd_timeline(args: argparse.Namespace, db: str) -> int:
    async with await open_db(db, readonly=True) as store:
        run_id = await store.find_run(args.run_id)
        engine = _engine(store, args)
        items = _frame_items(await engine.frames(run_id))
        tree = await engine.lineage(run_id)
    if args.json:
        out_json({"run_id": run_id, "frames": items, "lineage": tree.model_dump()})
        return 0

    def show(node: Any, depth: int) -> None:
        mark = "*" if node.run_id == run_id else " "
        at = f" from frame {node.parent_frame}" if node.parent_frame is not None else ""
        succ = f" -> {node.successor_run_id}" if node.successor_run_id else ""
        print(f"{mark} {'  ' * depth}{node.run_id}  {node.kind}{at}  {node.status}  {node.frames} frames{succ}")
        for child in node.children:
            show(child, depth + 1)

    show(tree, 0)
    print()
    _print_frames(items, "start")
    return 0


async def cmd_diff(args: argparse.Namespace, db: str) -> int:
    async with await open_db(db, readonly=True) as store:
        run_id = await store.find_run(args.run_id)
        text = await _engine(store, args).diff(run_id, args.node, args.iteration)
    print(text if text else f"step {args.node!r} changed no files")
    return 0


async def cmd_agents(args: argparse.Namespace, db: str) -> int:
    from engine.config import list_agents, load_settings

    items = list_agents(load_settings(Path.cwd()))
    if args.json:
        out_json(items)
    else:
        rows = [[i["name"], i.get("kind", ""), i.get("model") or "", "yes" if i["usable"] else "no", i.get("why") or ""]
                for i in items]
        print(table(rows, ["agent", "kind", "model", "usable", "why"]))
        from engine.sandbox import describe

        print(describe())
    return 0


async def cmd_hijack(args: argparse.Namespace, db: str) -> int:
    from .hijack import hijack

    async with await open_db(db) as store:
        outcome = await hijack(store, await store.find_run(args.run_id), args.node, args.iteration)
    print(outcome.line())
    return 0


async def cmd_init(args: argparse.Namespace, db: str) -> int:
    from .init import init_project

    print(init_project(args.path.resolve()))
    return 0


async def cmd_migrate(args: argparse.Namespace, db: str) -> int:
    from engine.store import SCHEMA_VERSION

    async with await open_db(db):
        print(f"{db} is at schema v{SCHEMA_VERSION}")
    return 0


async def cmd_mcp(args: argparse.Namespace, db: str) -> int:
    import os

    from engine.errors import BadInput
    from engine.project import default_db

    from .mcp_server import serve_stdio

    if args.project is not None:  # an agent that starts servers elsewhere names the project
        if not args.project.is_dir():
            raise BadInput(f"--project {args.project} is not a folder: give the project's folder")
        os.chdir(args.project)
        if not getattr(args, "db", None):
            db = default_db(Path.cwd())
    await serve_stdio(db)
    return 0


async def cmd_guide(args: argparse.Namespace, db: str) -> int:
    from .guide import guide_text

    print(guide_text(), end="")
    return 0


async def cmd_serve(args: argparse.Namespace, db: str) -> int:
    from .api import serve

    return await serve(db, args.host, args.port, args.allow_remote)


async def cmd_web(args: argparse.Namespace, db: str) -> int:
    from .web import exec_web

    exec_web(str(Path(db).resolve()) if "://" not in db else db, args.host, args.port)
    return 0


# --- workers -------------------------------------------------------------------------------------
async def cmd_worker(args: argparse.Namespace, db: str) -> int:
    from engine.worker import DEFAULT_CONCURRENCY, Worker

    async with await open_db(db, create=True, inline=False) as store:
        worker = Worker(store, concurrency=args.concurrency or DEFAULT_CONCURRENCY, agent_override=args.agent,
                        log=lambda line: print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True))
        loop = asyncio.get_running_loop()
        asked = [0]

        def on_signal() -> None:  # the first asks for a graceful stop, a second insists
            asked[0] += 1
            worker.stop(force=asked[0] > 1)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await worker.run()
    return 0


async def cmd_up(args: argparse.Namespace, db: str) -> int:
    from .background import Fleet, is_worker

    fleet = Fleet(Path.cwd())
    running = fleet.pids()
    if running:
        print(f"{len(running)} worker(s) already running for this project (pids {', '.join(map(str, running))}; "
              f"log {fleet.log_file}): nothing to do; `smithers down` stops them")
        return 0
    async with await open_db(db, create=True) as store:  # a bad URL or file is said here, not in a log
        procs = fleet.start(args.workers, db, args.concurrency, args.agent)
        pids = {p.pid for p in procs}
        deadline = time.monotonic() + 60
        while True:
            live = {w.pid for w in await store.workers()} & pids
            if live == pids:
                break
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                fleet.stop([p.pid for p in procs if is_worker(p.pid)], timeout=5)
                why = ((fleet.log_tail() or f"exit code {dead[0].returncode}") if dead
                       else "they did not register within 60 s")
                print(f"smithers: workers did not start ({why}); see {fleet.log_file}", file=sys.stderr)
                return 1
            await asyncio.sleep(0.05)
    print(f"started {len(procs)} worker(s) (pids {', '.join(str(p.pid) for p in procs)}) on {store.where}; log "
          f"{fleet.log_file}. `smithers status` shows them, `smithers down` stops them")
    return 0


async def cmd_down(args: argparse.Namespace, db: str) -> int:
    from .background import Fleet

    fleet = Fleet(Path.cwd())
    pids = fleet.pids()
    if not pids:
        fleet.pid_file.unlink(missing_ok=True)
        print("no workers running for this project")
        return 0
    killed = await asyncio.to_thread(fleet.stop, pids)
    extra = f"; {len(killed)} did not stop in time and were killed" if killed else ""
    print(f"stopped {len(pids)} worker(s){extra}; their runs stay resumable (`smithers up` continues them)")
    return 0


async def cmd_status(args: argparse.Namespace, db: str) -> int:
    if "://" not in db and not Path(db).exists():
        out_json({"workers": [], "queued": 0}) if args.json else print(f"no workers (database {db} does not exist)")
        return 0
    async with await open_db(db, readonly=True) as store:
        workers = await _engine(store, args).workers()
        queued = len(await store.list_runs("queued", limit=100_000))
    if args.json:
        out_json({"workers": [w.model_dump(mode="json") for w in workers], "queued": queued})
        return 0
    rows = [[w.id, w.host, str(w.pid), fmt_duration(w.started_at, None), f"{len(w.runs)}/{w.concurrency}",
             ", ".join(f"{r.run_id} ({r.workflow})" for r in w.runs) or "-"] for w in workers]
    print(table(rows, ["worker", "host", "pid", "up", "busy", "running"]) if rows
          else "no workers running: `smithers up` starts some")
    if queued:
        print(f"{queued} run(s) queued")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, str], Coroutine[Any, Any, int]]] = {
    "run": cmd_run, "resume": cmd_resume, "cancel": cmd_cancel, "ps": cmd_ps, "show": cmd_show,
    "frames": cmd_frames, "logs": cmd_logs, "workflows": cmd_workflows, "approve": cmd_approve, "deny": cmd_deny,
    "fork": cmd_fork, "rewind": cmd_rewind, "replay": cmd_replay, "timeline": cmd_timeline, "diff": cmd_diff,
    "agents": cmd_agents, "hijack": cmd_hijack, "init": cmd_init, "migrate": cmd_migrate, "signal": cmd_signal,
    "answer": cmd_answer, "mcp": cmd_mcp, "guide": cmd_guide, "serve": cmd_serve, "web": cmd_web,
    "worker": cmd_worker, "up": cmd_up, "down": cmd_down, "status": cmd_status,
}
