"""The `smithers` command. Without a subcommand it opens the app; every action also exists here,
with `--json` and stable exit codes: 0 finished, 1 failed, 2 cancelled, 3 waiting for approval,
4 bad input."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from engine.report import run_report

EXIT = {"finished": 0, "failed": 1, "cancelled": 2, "waiting": 3, "rewound": 0, "running": 0}
BAD_INPUT = 4


def default_db() -> Path:
    env = os.environ.get("SMITHERS_DB")
    return Path(env) if env else Path.cwd() / ".smithers" / "smithers.db"


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


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="smithers", description="Durable workflows for AI agents. "
                                "Without a command, opens the terminal app.")
    p.add_argument("--db", type=Path, help="database file (default .smithers/smithers.db; SMITHERS_DB overrides)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def cmd(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--db", type=Path, default=argparse.SUPPRESS, help="database file")
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
    sp.add_argument("--quiet", "-q", action="store_true", help="print only the final line")

    sp = cmd("resume", "continue a run from its last saved frame")
    sp.add_argument("run_id")
    sp.add_argument("--force", action="store_true", help="take over even if its owner looks alive")
    sp.add_argument("--accept-changes", action="store_true", help="continue although the workflow source changed")
    sp.add_argument("--agent", help="use this agent for every agent step (e.g. demo)")
    sp.add_argument("--quiet", "-q", action="store_true")

    sp = cmd("cancel", "cancel a run")
    sp.add_argument("run_id")

    sp = cmd("ps", "list runs")
    sp.add_argument("--status", choices=["running", "waiting", "finished", "failed", "cancelled", "rewound"])

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
    return p


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(argv))


def run_cli(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        return open_app(args)
    db = args.db if getattr(args, "db", None) else default_db()
    from engine.errors import SmithersError

    try:
        return asyncio.run(dispatch(args, db))
    except SmithersError as e:
        print(f"smithers: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `smithers frames RUN | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        rid = getattr(args, "run_id", None)
        print("smithers: interrupted" + (f"; `smithers resume {rid}` continues the run" if rid else ""),
              file=sys.stderr)
        return 130


def open_app(args: argparse.Namespace) -> int:
    try:
        from .app import run_app
    except ImportError:
        build_parser().print_help()
        return 0
    return run_app(args.db or default_db())


async def dispatch(args: argparse.Namespace, db: Path) -> int:
    handler = globals()[f"cmd_{args.cmd}"]
    return await handler(args, db)


# --- helpers ------------------------------------------------------------------------------------
def out_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def parse_input(args: argparse.Namespace) -> Any:
    from engine.errors import InputInvalid

    if args.input_file:
        try:
            text = args.input_file.read_text()
        except OSError as e:
            raise InputInvalid(f"cannot read --input-file {args.input_file}: {e.strerror}") from None
        src = str(args.input_file)
    elif args.input is not None:
        text, src = args.input, "--input"
    else:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputInvalid(f"{src} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): "
                           "quote it for the shell, e.g. --input '{\"n\": 3}'") from None


async def open_store(db: Path, create: bool = False) -> Any:
    from engine.store import Store

    return await Store.open(db, create=create)


def progress_printer(quiet: bool, as_json: bool) -> Any:
    def on_event(ev: Any) -> None:
        if quiet or as_json:
            return
        if ev.type in ("node_started", "node_finished", "node_failed", "node_retrying", "node_skipped",
                       "approval_requested", "approval_decided", "log", "node_interrupted", "loop_iteration"):
            print(ev.line(), flush=True)

    return on_event


async def execute(engine: Any, ex: Any, args: argparse.Namespace) -> int:
    engine.bus.subscribe(progress_printer(args.quiet, args.json), ex.run_id)
    status = await ex.execute(stop_when_waiting=True)
    summary = await run_report(engine.store, ex.run_id)
    if args.json:
        out_json(summary)
    else:
        print(final_line(summary))
    return EXIT.get(status, 1)


def final_line(s: dict[str, Any]) -> str:
    rid, st = s["run_id"], s["status"]
    if st == "finished":
        return f"run {rid} finished ({s['frame']} frames): `smithers show {rid}` for outputs"
    if st == "waiting":
        gates = ", ".join(f"{a['node_id']}" + (f"[{a['iteration']}]" if a["iteration"] else "") + f": {a['message']}"
                          for a in s.get("approvals", []) if a["decision"] is None)
        return f"run {rid} waits for approval ({gates}): `smithers approve {rid}` or `smithers deny {rid}`"
    if st == "failed":
        return f"run {rid} failed: {s['error']}; fix it, then `smithers resume {rid}` retries the failed steps"
    return f"run {rid} {st}"


def fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def fmt_duration(a: float | None, b: float | None) -> str:
    if not a:
        return "-"
    s = int((b or time.time()) - a)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _short(v: Any, n: int = 60) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= n else s[: n - 1] + "…"


# --- commands -----------------------------------------------------------------------------------
async def cmd_run(args: argparse.Namespace, db: Path) -> int:
    from engine.runtime import Engine

    from .targets import resolve

    wf, target = resolve(args.target)
    data = parse_input(args)
    wf_input_check(wf, data)  # before anything is written
    store = await open_store(db, create=True)
    try:
        engine = Engine(store, max_concurrency=args.max_concurrency or 4, agent_override=args.agent)
        ex = await engine.start(wf, target, data, run_id=args.run_id, max_concurrency=args.max_concurrency)
        if not args.json and not args.quiet:
            print(f"run {ex.run_id} started: {wf.name} (db {db})", flush=True)
        return await execute(engine, ex, args)
    finally:
        await store.close()


def wf_input_check(wf: Any, data: Any) -> None:
    from pydantic import ValidationError

    from engine.errors import InputInvalid
    from engine.render import one_line_validation

    try:
        wf.validate_input(data)
    except ValidationError as e:
        raise InputInvalid(f"invalid input for workflow {wf.name!r}: {one_line_validation(e)}; "
                           f"`smithers workflows --json` shows its input schema") from None


async def cmd_resume(args: argparse.Namespace, db: Path) -> int:
    from engine.runtime import Engine

    store = await open_store(db)
    try:
        engine = Engine(store, agent_override=args.agent)
        run_id = await store.find_run(args.run_id)
        ex = await engine.resume(run_id, force=args.force, accept_changes=args.accept_changes)
        if not args.json and not args.quiet:
            print(f"run {run_id} resumed from frame {ex.frame}", flush=True)
        return await execute(engine, ex, args)
    finally:
        await store.close()


async def cmd_cancel(args: argparse.Namespace, db: Path) -> int:
    from engine.runtime import Engine

    store = await open_store(db)
    try:
        run_id = await store.find_run(args.run_id)
        what = await Engine(store).cancel(run_id)
        if what == "requested":  # its owner notices within a poll interval
            for _ in range(50):
                await asyncio.sleep(0.1)
                if (await store.get_run(run_id))["status"] == "cancelled":
                    what = "cancelled"
                    break
        msg = {"cancelled": f"run {run_id} cancelled",
               "requested": f"run {run_id}: cancel requested; its owner has not confirmed yet"}[what]
        out_json({"run_id": run_id, "result": what}) if args.json else print(msg)
        return 0
    finally:
        await store.close()


async def cmd_ps(args: argparse.Namespace, db: Path) -> int:
    if not db.exists():
        out_json([]) if args.json else print(f"no runs yet (database {db} does not exist)")
        return 0
    store = await open_store(db)
    try:
        runs = await store.list_runs(args.status)
        gates = await store.approvals(None, open_only=True)
        by_run: dict[str, list[dict[str, Any]]] = {}
        for g in gates:
            by_run.setdefault(g["run_id"], []).append(g)
        items = [{"run_id": r["id"], "workflow": r["workflow"], "status": r["status"], "frame": r["frame"],
                  "created_at": r["created_at"], "updated_at": r["updated_at"], "finished_at": r["finished_at"],
                  "error": r["error"], "parent_run_id": r["parent_run_id"], "kind": r["kind"],
                  "waiting": [{"node_id": g["node_id"], "iteration": g["iteration"], "message": g["message"]}
                              for g in by_run.get(r["id"], [])]} for r in runs]
        if args.json:
            out_json(items)
            return 0
        rows = [[i["run_id"], i["workflow"], i["status"], str(i["frame"]), fmt_time(i["created_at"]),
                 fmt_duration(i["created_at"], i["finished_at"]),
                 "; ".join(f"{w['node_id']}: {w['message']}" for w in i["waiting"]) or _short(i["error"] or "", 50)]
                for i in items]
        print(table(rows, ["run", "workflow", "status", "frame", "started", "took", "note"]) if rows else "no runs")
        return 0
    finally:
        await store.close()


async def cmd_show(args: argparse.Namespace, db: Path) -> int:
    store = await open_store(db)
    try:
        run_id = await store.find_run(args.run_id)
        s = await run_report(store, run_id, args.frame)
        if args.json:
            out_json(s)
            return 0
        past = f" (as of frame {s['frame']} of {s['last_frame']})" if args.frame is not None else ""
        print(f"run {s['run_id']}  {s['workflow']}  {s['status']}{past}")
        print(f"input  {json.dumps(s['input'])}")
        if s["parent_run_id"]:
            print(f"{s['kind']} of {s['parent_run_id']} at frame {s['parent_frame']}")
        if s["error"]:
            print(f"error  {s['error']}")
        u = s["usage"]
        if u["tokens_in"] or u["tokens_out"]:
            print(f"usage  {u['tokens_in']} in / {u['tokens_out']} out tokens, ${u['cost_usd']:.4f}")
        rows = [[n["id"], str(n["iteration"]), n["state"], str(n["attempts"]),
                 _short(n["error"] if n["error"] else n["output"], 70)] for n in s["nodes"]]
        print(table(rows, ["node", "iter", "state", "tries", "output / error"]))
        return 0
    finally:
        await store.close()


async def cmd_frames(args: argparse.Namespace, db: Path) -> int:
    store = await open_store(db)
    try:
        run_id = await store.find_run(args.run_id)
        frames = await store.frames(run_id)
        items = [{"frame": f["frame"], "at": f["at"], "changes": describe_delta(f["delta"]),
                  "status": f["delta"].get("r")} for f in frames]
        if args.json:
            out_json(items)
        else:
            for i in items:
                st = f"  [run {i['status']}]" if i["status"] else ""
                print(f"#{i['frame']:<5} {fmt_time(i['at'])}  {', '.join(i['changes']) or 'created'}{st}")
        return 0
    finally:
        await store.close()


def describe_delta(d: dict[str, Any]) -> list[str]:
    out = []
    for key, (kind, state, attempts, error, data) in d.get("n", {}).items():
        extra = f" it={data['iteration']}" if kind == "loop" and data else ""
        out.append(f"{key} {state}{extra}")
    return out


async def cmd_logs(args: argparse.Namespace, db: Path) -> int:
    store = await open_store(db)
    try:
        run_id = await store.find_run(args.run_id)
        after = 0
        while True:
            events = await store.events(run_id, after)
            for ev in events:
                print(ev.model_dump_json() if args.json else ev.line(), flush=True)
                after = ev.seq
            if not args.follow:
                return 0
            run = await store.get_run(run_id)
            if run["status"] in ("finished", "failed", "cancelled", "rewound") and not events:
                return EXIT.get(run["status"], 0)
            if run["status"] == "waiting" and not run["owner_id"] and not events:
                return 3
            await asyncio.sleep(0.2)
    finally:
        await store.close()


async def cmd_workflows(args: argparse.Namespace, db: Path) -> int:
    from .targets import all_workflows, describe

    items = [describe(wf, target) for wf, target in all_workflows().values()]
    if args.json:
        out_json(items)
    else:
        rows = [[i["name"], "built-in" if i["builtin"] else i["target"].split(":")[1], i["description"]] for i in items]
        print(table(rows, ["workflow", "from", "description"]))
    return 0


async def cmd_approve(args: argparse.Namespace, db: Path, approved: bool = True) -> int:
    from engine.lease import owner_alive
    from engine.runtime import Engine

    store = await open_store(db)
    try:
        run_id = await store.find_run(args.run_id)
        engine = Engine(store, agent_override=args.agent)
        row = await engine.decide(run_id, args.node, args.iteration, approved, args.by, args.note)
        run = await store.get_run(run_id)
        owned = bool(run["owner_id"]) and owner_alive(run)
        gate = row["node_id"] + (f"[{row['iteration']}]" if row["iteration"] else "")
        result = {"run_id": run_id, "node_id": row["node_id"], "iteration": row["iteration"],
                  "decision": row["decision"], "by": row["decided_by"], "note": row["note"], "owner_alive": owned}
        if args.resume and not owned:
            if not args.json and not args.quiet:
                print(f"gate {gate} of run {run_id} {row['decision']}; continuing the run here", flush=True)
            ex = await engine.resume(run_id)
            return await execute(engine, ex, args)
        if args.json:
            out_json(result)
        elif owned:
            print(f"gate {gate} of run {run_id} {row['decision']}; its owner ({run['owner_host']} pid "
                  f"{run['owner_pid']}) goes on with it")
        else:
            print(f"gate {gate} of run {run_id} {row['decision']}; `smithers resume {run_id}` continues the run")
        return 0
    finally:
        await store.close()


async def cmd_deny(args: argparse.Namespace, db: Path) -> int:
    return await cmd_approve(args, db, approved=False)


async def _time_travel(args: argparse.Namespace, db: Path, kind: str) -> int:
    from engine.runtime import Engine

    store = await open_store(db)
    try:
        run_id = await store.find_run(args.run_id)
        engine = Engine(store, agent_override=args.agent)
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
        new_id = info["run_id"]
        if args.run:
            if not args.json and not args.quiet:
                print(f"{kind} {new_id} of {run_id} at frame {info['from_frame']}: {info['carried']} outputs "
                      f"carried over; running", flush=True)
            ex = await engine.resume(new_id)
            return await execute(engine, ex, args)
        if args.json:
            out_json(info)
        else:
            rerun = f"; runs again: {', '.join(info['rerun'])}" if info["rerun"] else ""
            print(f"{kind} {new_id} of {run_id} at frame {info['from_frame']}: {info['carried']} outputs carried "
                  f"over{rerun}. `smithers resume {new_id}` runs it")
        return 0
    finally:
        await store.close()


async def cmd_fork(args: argparse.Namespace, db: Path) -> int:
    return await _time_travel(args, db, "fork")


async def cmd_rewind(args: argparse.Namespace, db: Path) -> int:
    return await _time_travel(args, db, "rewind")


async def cmd_replay(args: argparse.Namespace, db: Path) -> int:
    return await _time_travel(args, db, "replay")


async def cmd_timeline(args: argparse.Namespace, db: Path) -> int:
    from engine.timetravel import lineage

    store = await open_store(db)
    try:
        run_id = await store.find_run(args.run_id)
        frames = await store.frames(run_id)
        tree = await lineage(store, run_id)
        items = [{"frame": f["frame"], "at": f["at"], "changes": describe_delta(f["delta"]), "status": f["delta"].get("r")}
                 for f in frames]
        if args.json:
            out_json({"run_id": run_id, "frames": items, "lineage": tree})
            return 0

        def show(node: dict[str, Any], depth: int) -> None:
            mark = "*" if node["run_id"] == run_id else " "
            at = f" from frame {node['parent_frame']}" if node["parent_frame"] is not None else ""
            succ = f" -> {node['successor_run_id']}" if node["successor_run_id"] else ""
            print(f"{mark} {'  ' * depth}{node['run_id']}  {node['kind']}{at}  {node['status']}  "
                  f"{node['frames']} frames{succ}")
            for child in node["children"]:
                show(child, depth + 1)

        show(tree, 0)
        print()
        for i in items:
            st = f"  [run {i['status']}]" if i["status"] else ""
            print(f"#{i['frame']:<5} {fmt_time(i['at'])}  {', '.join(i['changes']) or 'start'}{st}")
        return 0
    finally:
        await store.close()


async def cmd_diff(args: argparse.Namespace, db: Path) -> int:
    from engine import git
    from engine.errors import BadInput

    store = await open_store(db)
    try:
        run_id = await store.find_run(args.run_id)
        rows = await store.fetchall(
            "SELECT iteration, data FROM nodes WHERE run_id=? AND node_id=? AND data LIKE '%\"commit\"%'"
            + (" AND iteration=?" if args.iteration is not None else "") + " ORDER BY iteration",
            (run_id, args.node, *([args.iteration] if args.iteration is not None else [])))
        if not rows:
            raise BadInput(f"step {args.node!r} of run {run_id} made no snapshot: only steps inside a Worktree have "
                           "file changes (`smithers show` lists the steps)")
        data = json.loads(rows[-1]["data"])
        run = await store.get_run(run_id)
        repo = git.find_repo(run["workdir"])
        text = "" if data.get("base") == data["commit"] else git.diff(repo, data.get("base"), data["commit"])
        print(text if text else f"step {args.node!r} changed no files")
        return 0
    finally:
        await store.close()


async def cmd_agents(args: argparse.Namespace, db: Path) -> int:
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


async def cmd_hijack(args: argparse.Namespace, db: Path) -> int:
    from .hijack import hijack

    store = await open_store(db)
    try:
        outcome = await hijack(store, await store.find_run(args.run_id), args.node, args.iteration)
        print(outcome.line())
        return 0
    finally:
        await store.close()


async def cmd_init(args: argparse.Namespace, db: Path) -> int:
    from .init import init_project

    print(init_project(args.path.resolve()))
    return 0
