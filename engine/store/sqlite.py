"""The SQLite store (WAL): the embedded default. One commit = one frame = one transaction = one
call into the store's thread.

Every write of a transition (node states, outputs, attempts, events, approvals, the frame and,
now and then, a keyframe) is gathered in Python and handed to the store's thread as one function
(`_apply`), so a step costs one round trip however many rows it writes; a process with nothing
else to do (`smithers run` in the foreground) runs it inline, without the hop.

Concurrency: every statement runs to completion and its cursor is closed in that same hop, so a
connection never sits on an open read snapshot. (A half-read cursor kept a read transaction
open, and a writer whose snapshot had gone stale failed at once with "database is locked"
instead of waiting: SQLite only waits on a busy lock when the connection has no transaction.)
Writers then queue on SQLite's lock for as long as `BUSY_TIMEOUT_MS`.

Durability: `durability="full"` (the default) is `synchronous=FULL`: the WAL is fsynced at every
commit, so a finished step survives an OS crash or power loss, not only a process crash.
`"normal"` fsyncs only at checkpoints: faster, and a power loss may lose the last commits.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar
from urllib.parse import quote

from ..errors import (BadInput, Conflict, LeaseLost, NotADatabase, RunNotFound, SchemaTooNew, SmithersError, StoreBusy,
                      StoreDamaged, StoreFull, StoreReadOnly)
from ..events import Event
from ..frame import Delta, FrameDelta, decode_delta
from ..lease import STALE_AFTER_S, Owner, claimable_owner, this_host
from ..records import (ApprovalRecord, AttemptRecord, CacheEntry, FrameRecord, FrameState, NewRun, OutputRecord,
                       OwnerInfo, ReportData, RunRecord, RunStats, SignalRecord, Totals, WaitRecord, WorkerRecord)
from ..state import Key, NodeRecord, RunKind, RunState, RunStatus, key_str, parse_key
from .base import Store
from .schema import MIGRATIONS, SCHEMA_VERSION

Ops = list[tuple[str, list[tuple[Any, ...]]]]
T = TypeVar("T")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
BUSY_TIMEOUT_MS = 60_000
DURABILITY = {"full": "FULL", "normal": "NORMAL"}


def dumps(v: Any) -> str:
    return _dumps(v)


loads = json.loads


def _all(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
    """Run a query to its end and close its cursor (an open cursor would hold a read snapshot)."""
    cur = conn.execute(sql, tuple(params))
    try:
        return cur.fetchall()
    finally:
        cur.close()


def _one(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
    rows = _all(conn, sql, params)
    return rows[0] if rows else None


def _marked_read_only(path: Path) -> bool:
    """The file says it is not to be written: no write permission for anyone, or none for us (root
    could write it anyway; a file marked read-only is left alone all the same)."""
    try:
        return not (path.stat().st_mode & 0o222) or not os.access(path, os.W_OK)
    except OSError:
        return False


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # SQLite may have rolled back already (a full disk, an I/O error)
        conn.execute("ROLLBACK")


def _apply(conn: sqlite3.Connection, ops: Ops, fence: str | BaseException | None = None) -> list[int]:
    """Run in the store's thread: all ops in one write transaction. Returns the rowcounts, then
    last_insert_rowid(). With a fence, the first op is a guarded update that must change one row,
    else nothing is written: a run id fences the lease (the update is the run's own, guarded by its
    owner id: another process holds it), an exception is raised as it is."""
    counts = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in ops:
            if len(rows) == 1:
                cur = conn.execute(sql, rows[0])
            else:
                cur = conn.executemany(sql, rows)
            counts.append(cur.rowcount)
            cur.close()
            if fence is not None and len(counts) == 1 and counts[0] != 1:
                if isinstance(fence, BaseException):
                    raise fence
                row = _one(conn, "SELECT owner_id, owner_pid, owner_host FROM runs WHERE id=?", (fence,))
                who = f"pid {row[1]} on {row[2]}" if row and row[0] else "another process"
                raise LeaseLost(f"run {fence} was taken over by {who}; this process stops")
        counts.append(_one(conn, "SELECT last_insert_rowid()")[0])  # type: ignore[index]  # always one row
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return counts


def _read(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """fn(conn) inside one read transaction: every query sees the same snapshot."""
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        _rollback(conn)


class SQLiteStore(Store):
    """One database file. One connection per Store, used by one event loop."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool = False, inline: bool = False) -> None:
        self._db = conn
        self.path = path
        self.where = str(path)
        self.readonly = readonly
        # Statements run in one thread of their own, so the event loop goes on while SQLite works
        # (and, at full durability, waits for the disk). `inline` runs them on the caller's thread
        # instead: no hop between threads, for a process with nothing else to do meanwhile.
        self._pool = None if inline else ThreadPoolExecutor(1, thread_name_prefix="smithers-sqlite")

    # --- opening -------------------------------------------------------------------------------
    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False,
                   durability: str = "full", inline: bool = False) -> "SQLiteStore":
        """Open (with create: make) a database file. `readonly` opens it for reading only: nothing is
        written, not even the schema; a file that is read-only on disk can still be read."""
        path = Path(path)
        if path.is_dir():
            raise BadInput(f"{path} is a directory, not a database file: pass --db with a file path "
                           "(e.g. .smithers/smithers.db) or set SMITHERS_DB")
        if durability not in DURABILITY:
            raise BadInput(f"durability {durability!r} is not one of {', '.join(DURABILITY)}: "
                           "set it in .smithers/config.toml or SMITHERS_DURABILITY")
        if (readonly or not create) and not path.exists():
            raise RunNotFound(f"no database at {path}: start a run first, or pass --db / set SMITHERS_DB")
        if not readonly and path.exists() and _marked_read_only(path):
            raise StoreReadOnly(f"{path} is read-only: only commands that read work on it; make it writable "
                                f"(chmod u+w {path}) or pass --db with another database")
        if create and not readonly:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise BadInput(f"cannot create {path.parent}: {e.strerror}; pass --db with a writable path") from None
        # Only SQLite touches the file: on POSIX, closing any other descriptor of it would drop the
        # locks this process's other connections hold, and another process could then delete the WAL.
        mode = "ro" if readonly else "rwc" if create else "rw"
        uri = f"file:{quote(str(path.resolve()))}?mode={mode}"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                   cached_statements=256)
        except sqlite3.Error as e:
            raise BadInput(f"cannot open {path} ({e}): pass --db with another path or set SMITHERS_DB") from None
        conn.row_factory = sqlite3.Row
        store = cls(conn, path, readonly, inline)
        try:
            version = await store._run(_prepare, readonly, DURABILITY[durability])
        except BaseException:
            await store.close()
            raise
        if version < 0:
            await store.close()
            raise NotADatabase(f"{path} is not a smithers database (it holds other tables): pass --db with "
                               "another path or set SMITHERS_DB")
        if version > SCHEMA_VERSION:
            await store.close()
            raise SchemaTooNew(f"{path} was written by a newer smithers (schema v{version}, this one knows "
                               f"v{SCHEMA_VERSION}): upgrade smithers, or pass --db with another database")
        if version < SCHEMA_VERSION:
            if readonly and version == 0:
                await store.close()
                raise NotADatabase(f"{path} is not a smithers database (it holds no runs table): pass --db "
                                   "with another path or set SMITHERS_DB")
            if readonly:
                await store.close()
                raise BadInput(f"{path} was written by an older smithers (schema v{version}): "
                               "`smithers migrate` upgrades it, then this command works")
            try:
                await store._run(_migrate)
            except BaseException:
                await store.close()
                raise
        return store

    async def close(self) -> None:
        await self._stop_watching()
        if self._pool is None:
            self._db.close()
            return
        await asyncio.get_running_loop().run_in_executor(self._pool, self._db.close)
        self._pool.shutdown(wait=False)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(connection, *args) in the store's thread (one hop), or inline. Database errors become
        one line. A caller cancelled while fn runs does not stop fn: a transaction runs to its end."""
        try:
            if self._pool is None:
                return fn(self._db, *args)
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self._db, *args)
        except sqlite3.Error as e:
            raise self._translate(e) from None

    def _translate(self, e: sqlite3.Error) -> SmithersError:
        text = " ".join(str(e).split())  # one line, whatever SQLite said
        if isinstance(e, sqlite3.IntegrityError):
            return Conflict(f"{text} in {self.path}")
        if "disk is full" in text or getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return StoreFull(f"the disk holding {self.path} is full ({text}): free some space; every saved "
                             "frame is kept and the run resumes from the last one")
        if "not a database" in text or "file is encrypted" in text:
            return NotADatabase(f"{self.path} is not a smithers database ({text}): pass --db with another path "
                                "or set SMITHERS_DB")
        if "malformed" in text:
            return StoreDamaged(f"{self.path} is damaged ({text}): restore it from a backup, or pass --db "
                                "with another database")
        if "readonly" in text:
            return StoreReadOnly(f"{self.path} is read-only ({text}): only commands that read work on it; "
                                 "make it writable or pass --db with another database")
        if "locked" in text or "busy" in text:
            return StoreBusy(f"{self.path} stayed locked by another process for {BUSY_TIMEOUT_MS // 1000} s "
                             f"({text}): try again, or find the stuck process (`smithers ps`)")
        if "unable to open" in text:
            return BadInput(f"cannot open {self.path} ({text}): pass --db with a path you can write")
        return StoreDamaged(f"database error in {self.path}: {text}")

    async def data_version(self) -> int:
        """PRAGMA data_version: changes whenever another connection commits."""
        return await self._run(lambda c: _one(c, "PRAGMA data_version")[0])  # type: ignore[index]  # always a row

    async def transact(self, ops: Ops, fence: str | BaseException | None = None) -> list[int]:
        return await self._run(_apply, ops, fence)

    # --- runs ----------------------------------------------------------------------------------
    async def get_run(self, run_id: str) -> RunRecord:
        def read(c: sqlite3.Connection) -> tuple[sqlite3.Row | None, list[sqlite3.Row]]:
            row = _one(c, "SELECT * FROM runs WHERE id=?", (run_id,))
            return row, ([] if row is not None else _prefixed(c, run_id, 3))

        row, hint = await self._run(read)
        if row is None:
            raise no_run(run_id, self.path, [r["id"] for r in hint])
        return run_record(row)

    async def run_exists(self, run_id: str) -> bool:
        return await self._run(lambda c: _one(c, "SELECT 1 FROM runs WHERE id=?", (run_id,)) is not None)

    async def find_run(self, prefix: str) -> str:
        def read(c: sqlite3.Connection) -> list[str]:
            if _one(c, "SELECT 1 FROM runs WHERE id=?", (prefix,)) is not None:
                return [prefix]
            return [r["id"] for r in _prefixed(c, prefix, 2)]

        ids = await self._run(read)
        if len(ids) == 1:
            return ids[0]
        if not ids:
            await self.get_run(prefix)  # raises the not-found error
        raise RunNotFound(f"run id {prefix!r} is ambiguous: give more characters (`smithers ps`)")

    async def list_runs(self, status: str | None = None, limit: int = 500) -> list[RunRecord]:
        if status:
            rows = await self._run(_all, "SELECT * FROM runs WHERE status=? ORDER BY created_at DESC LIMIT ?",
                                   (str(status), limit))
        else:
            rows = await self._run(_all, "SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [run_record(r) for r in rows]

    async def child_runs(self, run_id: str) -> list[RunRecord]:
        rows = await self._run(_all, "SELECT * FROM runs WHERE parent_run_id=? ORDER BY created_at", (run_id,))
        return [run_record(r) for r in rows]

    async def run_stats(self, run_ids: Iterable[str]) -> dict[str, RunStats]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}

        def read(c: sqlite3.Connection) -> dict[str, RunStats]:
            out = {rid: RunStats() for rid in ids}
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                for r in _all(c, "SELECT run_id, sum(state IN ('done','skipped')) AS done, count(*) AS known "
                                 f"FROM nodes WHERE run_id IN ({marks}) AND kind IN ('task','approval','signal','timer',"
                                 "'human','subflow') "
                                 "GROUP BY run_id", chunk):
                    out[r["run_id"]].done, out[r["run_id"]].known = r["done"] or 0, r["known"]
                for r in _all(c, f"SELECT run_id, node_id, iteration FROM nodes WHERE run_id IN ({marks}) "
                                 "AND state='running' AND kind IN ('task','subflow') ORDER BY updated_at", chunk):
                    out[r["run_id"]].running.append((r["node_id"], r["iteration"]))
                for r in _all(c, f"SELECT run_id, count(*) AS n FROM approvals WHERE run_id IN ({marks}) "
                                 "AND decision IS NULL GROUP BY run_id", chunk):
                    out[r["run_id"]].gates = r["n"]
                for r in _all(c, "SELECT run_id, sum(coalesce(tokens_in,0)+coalesce(tokens_out,0)) AS tokens, "
                                 f"sum(coalesce(cost_usd,0)) AS cost FROM attempts WHERE run_id IN ({marks}) "
                                 "GROUP BY run_id", chunk):
                    out[r["run_id"]].tokens, out[r["run_id"]].cost_usd = r["tokens"] or 0, r["cost"] or 0.0
            return out

        return await self._run(_read, read)

    async def totals(self) -> Totals:
        def read(c: sqlite3.Connection) -> Totals:
            t = Totals()
            t.runs = {r[0]: r[1] for r in _all(c, "SELECT status, count(*) FROM runs GROUP BY status")}
            t.steps = {r[0]: r[1] for r in _all(c, "SELECT state, count(*) FROM nodes WHERE kind IN ('task','approval') "
                                                   "GROUP BY state")}
            t.attempts = {r[0]: r[1] for r in _all(c, "SELECT outcome, count(*) FROM attempts GROUP BY outcome")}
            usage = _one(c, "SELECT coalesce(sum(tokens_in),0), coalesce(sum(tokens_out),0), "
                            "coalesce(sum(cost_usd),0) FROM attempts")
            if usage is not None:
                t.tokens_in, t.tokens_out, t.cost_usd = int(usage[0]), int(usage[1]), float(usage[2])
            gates = _one(c, "SELECT count(*) FROM approvals a JOIN runs r ON r.id=a.run_id WHERE a.decision IS NULL "
                            "AND r.status IN ('running','waiting')")
            t.open_gates = int(gates[0]) if gates is not None else 0
            return t

        return await self._run(_read, read)

    # --- writing a run -------------------------------------------------------------------------
    async def create_run(self, run: NewRun, owner: Owner | None, now: float) -> None:
        ops = _new_run_ops(run, owner, now)
        try:
            await self.transact(ops)
        except Conflict:
            raise BadInput(f"a run {run.id!r} already exists: choose another --run-id or resume it") from None

    async def take_over(self, run_id: str, owner: Owner, expect_owner: str | None, changes: dict[str, Any],
                        now: float) -> int | None:
        cols = {**owner_columns(owner, now), **_columns(changes)}
        sets = ",".join(f"{c}=?" for c in cols)

        def txn(conn: sqlite3.Connection) -> int | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = _one(conn, f"UPDATE runs SET {sets}, lease=lease+1 WHERE id=? AND owner_id IS ? RETURNING lease",
                           (*cols.values(), run_id, expect_owner))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return row[0] if row else None

        return await self._run(txn)

    async def commit(self, run_id: str, owner_id: str, frame: int, delta: Delta, now: float,
                     keyframe: dict[str, Any] | None = None, *, token: int | None = None) -> int:
        return (await self.transact(commit_ops(run_id, owner_id, frame, delta, now, keyframe, token),
                                    fence=run_id))[-1]

    async def heartbeat(self, run_id: str, owner_id: str, now: float, *, token: int | None = None) -> bool:
        where, params = _fence(run_id, owner_id, token)
        counts = await self.transact([(f"UPDATE runs SET heartbeat_at=? WHERE {where}", [(now, *params)])])
        return counts[0] == 1

    async def release(self, run_id: str, owner_id: str, *, token: int | None = None) -> None:
        where, params = _fence(run_id, owner_id, token)
        await self.transact([(f"UPDATE runs SET owner_id=NULL, heartbeat_at=NULL WHERE {where}", [params])])

    async def request_cancel(self, run_id: str) -> None:
        await self.transact([("UPDATE runs SET cancel_requested=1 WHERE id=?", [(run_id,)])])

    async def cancel_requested(self, run_id: str) -> bool:
        row = await self._run(_one, "SELECT cancel_requested FROM runs WHERE id=?", (run_id,))
        return bool(row and row[0])

    async def insert_fork(self, plan: Any, now: float) -> None:
        run: NewRun = plan.run
        ops: Ops = [_insert("runs", _new_run_row(run, now))]
        if plan.kind == RunKind.REWIND:  # first, and conditional: of two rewinds of one run, one wins
            ops.insert(0, ("UPDATE runs SET status=?, successor_run_id=?, owner_id=NULL, updated_at=? "
                           "WHERE id=? AND status!=?",
                           [(str(RunStatus.REWOUND), run.id, now, plan.parent.id, str(RunStatus.REWOUND))]))
        if plan.nodes:
            ops.append(("INSERT INTO nodes (run_id,node_id,iteration,kind,state,attempts,error,data,frame,updated_at)"
                        " VALUES (?,?,?,?,?,?,?,?,0,?)",
                        [(run.id, k[0], k[1], str(r.kind), str(r.state), r.attempts, r.error,
                          dumps(r.data) if r.data is not None else None, now) for k, r in plan.nodes.items()]))
        if plan.outputs:
            ops.append(("INSERT INTO outputs (run_id,node_id,iteration,value,type,frame,deps) VALUES (?,?,?,?,?,0,?)",
                        [(run.id, k[0], k[1], dumps(o.value), o.type, dumps(o.deps) if o.deps else None)
                         for k, o in plan.outputs.items()]))
        ops.append(("INSERT OR REPLACE INTO keyframes (run_id, frame, state) VALUES (?,?,?)",
                    [(run.id, 0, dumps({"v": 1, "n": {key_str(k): r.as_list() for k, r in plan.nodes.items()},
                                        "r": str(run.status)}))]))
        ops.append(("INSERT INTO frames (run_id, frame, at, delta) VALUES (?,?,?,?)",
                    [(run.id, 0, now, dumps({"v": 1, "fork": plan.info}))]))
        events = [(run.id, 0, now, "run_forked", dumps(plan.info))]
        if plan.kind == RunKind.REWIND:
            events.append((plan.parent.id, plan.parent.frame, now, "run_rewound",
                           dumps({"successor": run.id, "to_frame": plan.frame})))
        ops.append(("INSERT INTO events (run_id,frame,at,type,data) VALUES (?,?,?,?,?)", events))
        fence = (BadInput(f"run {plan.parent.id} was already rewound meanwhile: rewind its successor, or fork it")
                 if plan.kind == RunKind.REWIND else None)
        try:
            await self.transact(ops, fence=fence)
        except Conflict:
            raise BadInput(f"a run {run.id!r} already exists: choose another --run-id") from None

    # --- reading a run -------------------------------------------------------------------------
    async def load_state(self, run_id: str) -> RunState:
        def read(c: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            return (_all(c, "SELECT node_id,iteration,kind,state,attempts,error,data FROM nodes WHERE run_id=?",
                         (run_id,)),
                    _all(c, "SELECT node_id,iteration,value,type FROM outputs WHERE run_id=?", (run_id,)))

        nodes, outs = await self._run(_read, read)
        return RunState.of({(r[0], r[1]): node_record(r) for r in nodes},
                           {(r[0], r[1]): (loads(r[2]), r[3]) for r in outs})

    async def state_at(self, run_id: str, frame: int) -> FrameState:
        return await self._run(_read, lambda c: _state_at(c, run_id, frame))

    async def outputs_at(self, run_id: str, frame: int, node: Key | None = None) -> dict[Key, OutputRecord]:
        sql = "SELECT node_id, iteration, value, type, deps, frame FROM outputs WHERE run_id=? AND frame<=?"
        params: tuple[Any, ...] = (run_id, frame)
        if node is not None:
            sql, params = sql + " AND node_id=? AND iteration=?", params + node
        rows = await self._run(_all, sql, params)
        return {(r["node_id"], r["iteration"]): OutputRecord(loads(r["value"]), r["type"],
                                                             loads(r["deps"]) if r["deps"] else None, r["frame"])
                for r in rows}

    async def report_data(self, run_id: str, frame: int | None = None) -> ReportData:
        def read(c: sqlite3.Connection) -> ReportData | None:
            row = _one(c, "SELECT * FROM runs WHERE id=?", (run_id,))
            if row is None:
                return None
            run = run_record(row)
            frame_at = None
            if frame is not None and 0 <= frame <= run.frame:
                st = _state_at(c, run_id, frame)
                nodes, outputs, status = st.nodes, st.outputs, st.status
                at = _one(c, "SELECT at FROM frames WHERE run_id=? AND frame=?", (run_id, frame))
                frame_at = at[0] if at else None
            else:
                nodes = {(r[0], r[1]): node_record(r) for r in _all(
                    c, "SELECT node_id,iteration,kind,state,attempts,error,data FROM nodes WHERE run_id=?", (run_id,))}
                outputs = {(r[0], r[1]): loads(r[2]) for r in _all(
                    c, "SELECT node_id,iteration,value FROM outputs WHERE run_id=?", (run_id,))}
                status = run.status
            attempts = [attempt_record(r) for r in _all(
                c, "SELECT * FROM attempts WHERE run_id=? ORDER BY started_at", (run_id,))]
            approvals = [approval_record(r) for r in _all(
                c, "SELECT a.*, r.workflow FROM approvals a JOIN runs r ON r.id=a.run_id WHERE a.run_id=? "
                   "ORDER BY a.requested_at", (run_id,))]
            return ReportData(run, nodes, outputs, status, attempts, approvals, frame_at)

        data: ReportData | None = await self._run(_read, read)
        if data is None:
            await self.get_run(run_id)  # raises the not-found error
            raise AssertionError("unreachable")
        return data

    async def node_records(self, run_id: str, node_id: str) -> dict[int, NodeRecord]:
        rows = await self._run(_all, "SELECT node_id,iteration,kind,state,attempts,error,data FROM nodes "
                                     "WHERE run_id=? AND node_id=?", (run_id, node_id))
        return {r["iteration"]: node_record(r) for r in rows}

    async def frames(self, run_id: str, since: int = 0) -> list[FrameRecord]:
        rows = await self._run(_all, "SELECT frame, at, delta FROM frames WHERE run_id=? AND frame>=? ORDER BY frame",
                               (run_id, since))
        return [FrameRecord(r[0], r[1], decode_delta(loads(r[2]))) for r in rows]

    async def events(self, run_id: str | None = None, after: int = 0, limit: int = 10000, *,
                     node: Key | None = None, types: Sequence[str] | None = None,
                     newest: bool = False) -> list[Event]:
        where: list[str] = ["seq>?"]
        params: list[Any] = [after]
        if run_id is not None:
            where.append("run_id=?")
            params.append(run_id)
        if node is not None:
            where += ["node_id=?", "iteration=?"]
            params += [node[0], node[1]]
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            params += list(types)
        order = "DESC" if newest else ""
        rows = await self._run(_all, f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT ?",
                               (*params, limit))
        evs = [row_to_event(r) for r in rows]
        return evs[::-1] if newest else evs

    async def last_event_seq(self) -> int:
        row = await self._run(_one, "SELECT max(seq) FROM events")
        return (row[0] if row else 0) or 0

    async def attempts(self, run_id: str, node: Key | None = None) -> list[AttemptRecord]:
        if node is None:
            rows = await self._run(_all, "SELECT * FROM attempts WHERE run_id=? ORDER BY started_at", (run_id,))
        else:
            rows = await self._run(_all, "SELECT * FROM attempts WHERE run_id=? AND node_id=? AND iteration=? "
                                         "ORDER BY started_at", (run_id, *node))
        return [attempt_record(r) for r in rows]

    # --- approvals -----------------------------------------------------------------------------
    async def approvals(self, run_id: str | None = None, open_only: bool = True) -> list[ApprovalRecord]:
        where, params = [], []
        if run_id:
            where.append("a.run_id=?")
            params.append(run_id)
        if open_only:
            where.append("a.decision IS NULL AND r.status IN ('waiting','running')")
        sql = ("SELECT a.*, r.workflow FROM approvals a JOIN runs r ON r.id=a.run_id"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.requested_at")
        return [approval_record(r) for r in await self._run(_all, sql, params)]

    async def decide(self, run_id: str, node_id: str, iteration: int, approved: bool, by: str,
                     note: str | None, now: float, *, answer: Any = None,
                     decision: str | None = None) -> tuple[bool, ApprovalRecord]:
        word = decision or ("approved" if approved else "denied")

        def txn(conn: sqlite3.Connection) -> tuple[bool, sqlite3.Row | None]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "UPDATE approvals SET decision=?, decided_by=?, note=?, decided_at=?, answer=? "
                    "WHERE run_id=? AND node_id=? AND iteration=? AND decision IS NULL",
                    (word, by, note, now, dumps(answer) if answer is not None else None, run_id, node_id, iteration))
                won = cur.rowcount == 1
                cur.close()
                row = _one(conn, "SELECT a.*, r.workflow FROM approvals a JOIN runs r ON r.id=a.run_id "
                                 "WHERE a.run_id=? AND a.node_id=? AND a.iteration=?", (run_id, node_id, iteration))
                if won:  # in the log at once, whether or not a process runs the run now
                    data: dict[str, Any] = {"approved": approved, "by": by, "note": note, "at": now}
                    if decision:
                        data["decision"] = decision
                    if answer is not None:
                        data["answer"] = answer
                    conn.execute("INSERT INTO events (run_id,frame,at,type,node_id,iteration,data) "
                                 "SELECT id, frame, ?, 'approval_decided', ?, ?, ? FROM runs WHERE id=?",
                                 (now, node_id, iteration, dumps(data), run_id)).close()
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return won, row

        won, row = await self._run(txn)
        if row is None:
            raise BadInput(f"run {run_id} has no gate {node_id!r} at iteration {iteration}")
        return won, approval_record(row)

    async def decided_unapplied(self, run_id: str) -> list[ApprovalRecord]:
        rows = await self._run(_all, "SELECT a.*, r.workflow FROM approvals a JOIN runs r ON r.id=a.run_id "
                                     "WHERE a.run_id=? AND a.decision IS NOT NULL AND a.applied=0", (run_id,))
        return [approval_record(r) for r in rows]

    # --- signals -------------------------------------------------------------------------------
    async def send_signal(self, run_id: str, name: str, payload: Any, by: str | None, now: float) -> SignalRecord:
        active = ("queued", "running", "waiting")

        def txn(conn: sqlite3.Connection) -> tuple[sqlite3.Row | None, sqlite3.Row | None]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                run = _one(conn, "SELECT status, frame FROM runs WHERE id=?", (run_id,))
                if run is None or run["status"] not in active:
                    _rollback(conn)
                    return run, None
                cur = conn.execute("INSERT INTO signals (run_id, name, payload, sent_at, sent_by) VALUES (?,?,?,?,?)",
                                   (run_id, name, dumps(payload), now, by))
                seq = cur.lastrowid
                cur.close()
                conn.execute("INSERT INTO events (run_id,frame,at,type,data) VALUES (?,?,?,'signal_sent',?)",
                             (run_id, run["frame"], now, dumps({"name": name, "seq": seq, "by": by}))).close()
                row = _one(conn, "SELECT * FROM signals WHERE seq=?", (seq,))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return run, row

        run, row = await self._run(txn)
        return await self._signal_sent(run_id, run, signal_record(row) if row is not None else None)

    async def signals(self, run_id: str, pending_only: bool = False) -> list[SignalRecord]:
        sql = "SELECT * FROM signals WHERE run_id=?" + (" AND consumed_at IS NULL" if pending_only else "")
        return [signal_record(r) for r in await self._run(_all, sql + " ORDER BY seq", (run_id,))]

    # --- waits, timers and the cache -----------------------------------------------------------
    async def open_waits(self, run_id: str | None = None) -> list[WaitRecord]:
        sql = ("SELECT n.run_id, n.node_id, n.iteration, n.kind, n.data FROM nodes n JOIN runs r ON r.id=n.run_id "
               "WHERE n.state='waiting' AND r.status IN ('running','waiting')")
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " AND n.run_id=?"
            params = (run_id,)
        rows = await self._run(_all, sql + " ORDER BY n.updated_at", params)
        return [WaitRecord(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {}) for r in rows]

    async def wakeable_runs(self, now: float, limit: int = 100) -> list[RunRecord]:
        rows = await self._run(_all, (
            "SELECT * FROM runs r WHERE r.status='waiting' AND ("
            " (r.wake_at IS NOT NULL AND r.wake_at<=?)"
            " OR EXISTS (SELECT 1 FROM signals s WHERE s.run_id=r.id AND s.consumed_at IS NULL)"
            " OR EXISTS (SELECT 1 FROM approvals a WHERE a.run_id=r.id AND a.decision IS NOT NULL AND a.applied=0))"
            " ORDER BY r.updated_at LIMIT ?"), (now, limit))
        return [run_record(r) for r in rows]

    async def cache_get(self, node_id: str, key: str, version: str) -> CacheEntry | None:
        row = await self._run(_one, "SELECT value, type, created_at, run_id, node_id, iteration FROM cache "
                                    "WHERE node_id=? AND key=? AND version=?", (node_id, key, str(version)))
        if row is None:
            return None
        return CacheEntry(json.loads(row[0]), row[1], row[2], row[3], row[4], row[5])

    async def usage_by_node(self, run_id: str) -> dict[Key, tuple[int, float]]:
        rows = await self._run(_all, "SELECT node_id, iteration, sum(coalesce(tokens_in,0)+coalesce(tokens_out,0)), "
                                     "sum(coalesce(cost_usd,0)) FROM attempts WHERE run_id=? "
                                     "GROUP BY node_id, iteration", (run_id,))
        return {(r[0], r[1]): (int(r[2] or 0), float(r[3] or 0.0)) for r in rows}

    # --- workers -------------------------------------------------------------------------------
    async def claim_runs(self, owner: Owner, limit: int, now: float) -> list[RunRecord]:
        """See Store.claim_runs. A read finds the candidates without locking; only when there are
        some does a write transaction (SQLite's one writer at a time: atomic) select them again and
        lease them."""
        if limit < 1:
            return []

        def candidates(c: sqlite3.Connection) -> list[sqlite3.Row]:
            gone = [o["owner_id"] for o in _all(c, OWNERS_HERE_SQL, (this_host(),))
                    if claimable_owner(_owner_of(o), now)]
            return _all(c, CLAIMABLE_SQL, (now - STALE_AFTER_S, this_host(), dumps(gone), limit, now))

        if not await self._run(candidates):
            return []
        cols = owner_columns(owner, now)

        def txn(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = []
                for r in candidates(conn):
                    status = str(RunStatus.RUNNING) if r["status"] in ("queued", "waiting") else r["status"]
                    row = _one(conn, "UPDATE runs SET owner_id=?, owner_host=?, owner_pid=?, owner_started=?, "
                                     "heartbeat_at=?, lease=lease+1, status=?, updated_at=? WHERE id=? AND lease=? "
                                     "RETURNING *", (*cols.values(), status, now, r["id"], r["lease"]))
                    if row is not None:
                        out.append(row)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return out

        return [run_record(r) for r in await self._run(txn)]

    async def register_worker(self, worker: WorkerRecord) -> None:
        await self.transact([("INSERT OR REPLACE INTO workers (id,host,pid,started,concurrency,started_at,heartbeat_at)"
                              " VALUES (?,?,?,?,?,?,?)",
                              [(worker.id, worker.host, worker.pid, worker.started, worker.concurrency,
                                worker.started_at, worker.heartbeat_at)])])

    async def worker_heartbeat(self, worker_id: str, now: float) -> bool:
        counts = await self.transact([("UPDATE workers SET heartbeat_at=? WHERE id=?", [(now, worker_id)])])
        return counts[0] == 1

    async def unregister_worker(self, worker_id: str) -> None:
        await self.transact([("DELETE FROM workers WHERE id=?", [(worker_id,)])])

    async def workers(self) -> list[WorkerRecord]:
        def read(c: sqlite3.Connection) -> list[WorkerRecord]:
            out = [WorkerRecord(r["id"], r["host"], r["pid"], r["started"], r["concurrency"], r["started_at"],
                                r["heartbeat_at"]) for r in _all(c, "SELECT * FROM workers ORDER BY started_at")]
            held: dict[str, list[str]] = {}
            for r in _all(c, "SELECT id, owner_id FROM runs WHERE owner_id IN (SELECT id FROM workers) "
                             "AND status IN ('running','waiting','queued') ORDER BY created_at"):
                held.setdefault(r["owner_id"], []).append(r["id"])
            for w in out:
                w.runs = held.get(w.id, [])
            return out

        return await self._run(_read, read)


# --- the statements of one frame ----------------------------------------------------------------
RUN_COLUMNS = frozenset(("status", "error", "owner_id", "owner_host", "owner_pid", "owner_started", "heartbeat_at",
                         "cancel_requested", "finished_at", "updated_at", "source_hash", "frame", "meta", "result",
                         "wake_at", "successor_run_id"))
JSON_RUN_COLUMNS = frozenset(("meta", "result"))


def _columns(changes: dict[str, Any]) -> dict[str, Any]:
    """Run columns a transition may change; anything else is a bug, not a column."""
    bad = set(changes) - RUN_COLUMNS
    if bad:
        raise ValueError(f"not run columns: {sorted(bad)}")
    return {k: ((dumps(v) if v is not None else None) if k in JSON_RUN_COLUMNS else str(v) if k == "status" else v)
            for k, v in changes.items()}


# The claim rule (see Store.claim_runs). Parameters: the stale heartbeat limit, this host, the owner
# ids on this host whose process is gone (a JSON list, from OWNERS_HERE_SQL + lease.claimable_owner),
# how many, now. A sub-workflow's run is never claimed by itself: its parent's Subflow step drives it.
CLAIMABLE_SQL = """
SELECT * FROM runs WHERE kind != 'subflow' AND (
  (status = 'queued' AND owner_id IS NULL)
  OR (status IN ('running', 'waiting') AND (owner_id IS NULL
      OR (heartbeat_at < ?1 AND owner_host IS NOT ?2)
      OR owner_id IN (SELECT value FROM json_each(?3))))
) AND (status != 'waiting'
       OR (wake_at IS NOT NULL AND wake_at <= ?5)
       OR EXISTS (SELECT 1 FROM signals s WHERE s.run_id = runs.id AND s.consumed_at IS NULL)
       OR EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = runs.id AND a.decision IS NOT NULL AND a.applied = 0))
ORDER BY created_at LIMIT ?4
"""
# The owners of active runs on this host (a few: one per process), to check their pids.
OWNERS_HERE_SQL = """
SELECT DISTINCT owner_id, owner_host, owner_pid, owner_started, heartbeat_at FROM runs
WHERE owner_host = ? AND owner_id IS NOT NULL AND status IN ('running', 'waiting')
"""


def _owner_of(r: sqlite3.Row) -> OwnerInfo | None:
    return (OwnerInfo(r["owner_id"], r["owner_host"], r["owner_pid"], r["owner_started"], r["heartbeat_at"])
            if r["owner_id"] else None)


def _fence(run_id: str, owner_id: str, token: int | None) -> tuple[str, tuple[Any, ...]]:
    """The condition of a write by a lease holder: its owner id, and its token when it has one."""
    if token is None:
        return "id=? AND owner_id=?", (run_id, owner_id)
    return "id=? AND owner_id=? AND lease=?", (run_id, owner_id, token)


def commit_ops(run_id: str, owner_id: str, frame: int, delta: Delta, now: float,
               keyframe: dict[str, Any] | None, token: int | None = None) -> Ops:
    """The statements of one frame, the run's own update first (it fences the lease: see _apply)."""
    run = _columns({"frame": frame, "updated_at": now, **delta.run})
    where, params = _fence(run_id, owner_id, token)
    ops: Ops = [(f"UPDATE runs SET {','.join(c + '=?' for c in run)} WHERE {where}", [(*run.values(), *params)])]
    if delta.interrupted:  # before the node rows change: the attempt started when its node did
        ops.append(("INSERT OR IGNORE INTO attempts (run_id,node_id,iteration,attempt,started_at,finished_at,"
                    "outcome,error) SELECT run_id,node_id,iteration,attempts,updated_at,?,'interrupted','interrupted'"
                    " FROM nodes WHERE run_id=? AND node_id=? AND iteration=?",
                    [(now, run_id, k[0], k[1]) for k in delta.interrupted]))
    if delta.nodes:
        ops.append((
            "INSERT OR REPLACE INTO nodes (run_id,node_id,iteration,kind,state,attempts,error,data,frame,updated_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(run_id, k[0], k[1], str(r.kind), str(r.state), r.attempts, r.error,
              dumps(r.data) if r.data is not None else None, frame, now) for k, r in delta.nodes.items()]))
    if delta.outputs:
        ops.append(("INSERT OR REPLACE INTO outputs (run_id,node_id,iteration,value,type,frame,deps)"
                    " VALUES (?,?,?,?,?,?,?)",
                    [(run_id, k[0], k[1], dumps(v), t, frame, dumps(d) if d else None)
                     for k, (v, t, d) in delta.outputs.items()]))
    if delta.attempts:
        ops.append(("INSERT OR REPLACE INTO attempts (run_id,node_id,iteration,attempt,started_at,finished_at,"
                    "outcome,error,agent,model,tokens_in,tokens_out,cost_usd,commit_sha,structured_mode,data)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [_attempt_row(a) for a in delta.attempts]))
    requests = [a for a in delta.approvals if not a.get("applied")]
    if requests:  # a gate asked again (a failed run resumed after a denial) opens a fresh request
        ops.append(("INSERT INTO approvals (run_id,node_id,iteration,message,on_deny,requested_at,frame,mode,request)"
                    " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (run_id,node_id,iteration) DO UPDATE SET"
                    " message=excluded.message, on_deny=excluded.on_deny, requested_at=excluded.requested_at,"
                    " frame=excluded.frame, mode=excluded.mode, request=excluded.request, decision=NULL,"
                    " decided_by=NULL, note=NULL, decided_at=NULL, answer=NULL, applied=0"
                    " WHERE approvals.applied=1",
                    [(run_id, a["key"][0], a["key"][1], a["message"], a["on_deny"], now, frame, a.get("mode", "approve"),
                      dumps(a["request"]) if a.get("request") else None) for a in requests]))
    applied = [(run_id, a["key"][0], a["key"][1]) for a in delta.approvals if a.get("applied")]
    if applied:
        ops.append(("UPDATE approvals SET applied=1 WHERE run_id=? AND node_id=? AND iteration=?", applied))
    if delta.signals:  # taken once: a signal another step took meanwhile is not taken again
        ops.append(("UPDATE signals SET node_id=?, iteration=?, consumed_at=?, frame=?, error=? WHERE seq=? AND "
                    "run_id=? AND consumed_at IS NULL",
                    [(s["key"][0] if s.get("key") else None, s["key"][1] if s.get("key") else None, now, frame,
                      s.get("error"), s["seq"], run_id) for s in delta.signals]))
    if delta.cache:
        ops.append(("INSERT OR REPLACE INTO cache (node_id,key,version,value,type,created_at,run_id,iteration)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    [(c["node_id"], c["key"], str(c["version"]), dumps(c["value"]), c.get("type"), now, run_id,
                      c["iteration"]) for c in delta.cache]))
    for new, owner in delta.new_runs:  # a ContinueAsNew successor, made in the same transaction
        ops += _new_run_ops(new, owner, now)
    ops.append(("INSERT INTO frames (run_id, frame, at, delta) VALUES (?,?,?,?)",
                [(run_id, frame, now, dumps(delta.summary()))]))
    if keyframe is not None:
        ops.append(("INSERT OR REPLACE INTO keyframes (run_id, frame, state) VALUES (?,?,?)",
                    [(run_id, frame, dumps(keyframe))]))
    if delta.events:  # last, so that the transaction's last_insert_rowid() is the last event's seq
        ops.append(("INSERT INTO events (run_id,frame,at,type,node_id,iteration,data) VALUES (?,?,?,?,?,?,?)",
                    [(run_id, frame, now, typ, k[0] if k else None, k[1] if k else None, dumps(data) if data else None)
                     for typ, k, data in delta.events]))
    return ops


def _attempt_row(a: dict[str, Any]) -> tuple[Any, ...]:
    known = ("run_id", "node_id", "iteration", "attempt", "started_at", "finished_at", "outcome", "error", "agent",
             "model", "tokens_in", "tokens_out", "cost_usd", "commit_sha", "structured_mode")
    extra = {k: v for k, v in a.items() if k not in known}
    return (*(a.get(k) for k in known), dumps(extra) if extra else None)


def _new_run_ops(run: NewRun, owner: Owner | None, now: float) -> Ops:
    """A run row, its frame 0 and keyframe, and its run_started event."""
    row = _new_run_row(run, now)
    if owner is not None:
        row.update(owner_columns(owner, now), lease=1)
    started: dict[str, Any] = {"workflow": run.workflow, "input": run.input}
    if run.parent_run_id:
        started.update({"parent": run.parent_run_id, "kind": str(run.kind)})
    return [_insert("runs", row),
            ("INSERT OR REPLACE INTO keyframes (run_id, frame, state) VALUES (?,?,?)",
             [(run.id, 0, dumps({"v": 1, "n": {}, "r": str(run.status)}))]),
            ("INSERT INTO frames (run_id, frame, at, delta) VALUES (?,?,?,?)", [(run.id, 0, now, '{"v":1}')]),
            ("INSERT INTO events (run_id,frame,at,type,data) VALUES (?,?,?,?,?)",
             [(run.id, 0, now, "run_started", dumps(started))])]


def owner_columns(owner: Owner, now: float) -> dict[str, Any]:
    return {"owner_id": owner.id, "owner_host": owner.host, "owner_pid": owner.pid,
            "owner_started": owner.started, "heartbeat_at": now}


def _new_run_row(run: NewRun, now: float) -> dict[str, Any]:
    return {"id": run.id, "workflow": run.workflow, "target": run.target, "source_path": run.source_path,
            "source_hash": run.source_hash, "input": dumps(run.input), "status": str(run.status),
            "workdir": run.workdir, "kind": str(run.kind), "parent_run_id": run.parent_run_id,
            "parent_frame": run.parent_frame, "created_at": now, "updated_at": now, "frame": 0,
            "meta": dumps(run.meta)}


def _insert(table: str, row: dict[str, Any]) -> tuple[str, list[tuple[Any, ...]]]:
    return (f"INSERT INTO {table} ({','.join(row)}) VALUES ({','.join('?' * len(row))})", [tuple(row.values())])


# --- reading helpers (in the store's thread) ----------------------------------------------------
def _prefixed(c: sqlite3.Connection, prefix: str, limit: int) -> list[sqlite3.Row]:
    """Runs whose id starts with prefix (no LIKE: a run id is data, not a pattern)."""
    if not prefix or len(prefix) > 200:
        return []
    return _all(c, "SELECT id FROM runs WHERE substr(id, 1, ?)=? ORDER BY created_at DESC LIMIT ?",
                (len(prefix), prefix, limit))


def _state_at(c: sqlite3.Connection, run_id: str, frame: int) -> FrameState:
    """Rebuild frame N exactly: the last keyframe at or before N, then the deltas up to N."""
    kf = _one(c, "SELECT frame, state FROM keyframes WHERE run_id=? AND frame<=? ORDER BY frame DESC LIMIT 1",
              (run_id, frame))
    start = kf[0] if kf else -1
    nodes: dict[Key, NodeRecord] = {}
    status = "running"
    if kf:
        k = loads(kf[1])
        nodes = {parse_key(s): NodeRecord.from_list(v) for s, v in k["n"].items()}
        status = k.get("r", status)
    for (d,) in _all(c, "SELECT delta FROM frames WHERE run_id=? AND frame>? AND frame<=? ORDER BY frame",
                     (run_id, start, frame)):
        dd: FrameDelta = decode_delta(loads(d))
        nodes.update(dd.nodes)
        status = dd.status or status
    outputs = {(n, i): loads(v) for n, i, v in _all(
        c, "SELECT node_id,iteration,value FROM outputs WHERE run_id=? AND frame<=?", (run_id, frame))}
    return FrameState(frame, nodes, outputs, status)


def _chunks(items: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def no_run(run_id: str, where: Any, near: list[str]) -> RunNotFound:
    """The one-line error for a run id that is not there, naming the ids that start like it."""
    extra = f" (did you mean {', '.join(near)}?)" if near else ""
    return RunNotFound(f"no run {_short(run_id)!r} in {where}{extra}: `smithers ps` lists runs")


def _short(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def run_record(r: sqlite3.Row) -> RunRecord:
    owner = _owner_of(r)
    return RunRecord(id=r["id"], workflow=r["workflow"], target=r["target"], source_path=r["source_path"],
                     source_hash=r["source_hash"], input=loads(r["input"]), status=RunStatus(r["status"]),
                     error=r["error"], workdir=r["workdir"], kind=RunKind(r["kind"]), parent_run_id=r["parent_run_id"],
                     parent_frame=r["parent_frame"], successor_run_id=r["successor_run_id"], owner=owner,
                     cancel_requested=bool(r["cancel_requested"]), frame=r["frame"], created_at=r["created_at"],
                     updated_at=r["updated_at"], finished_at=r["finished_at"],
                     meta=loads(r["meta"]) if r["meta"] else {},
                     result=loads(r["result"]) if r["result"] else None, wake_at=r["wake_at"], lease=r["lease"])


def node_record(r: sqlite3.Row) -> NodeRecord:
    return NodeRecord(r["kind"], r["state"], r["attempts"], r["error"], loads(r["data"]) if r["data"] else None)


def attempt_record(r: sqlite3.Row) -> AttemptRecord:
    return AttemptRecord(r["run_id"], r["node_id"], r["iteration"], r["attempt"], r["started_at"], r["finished_at"],
                         r["outcome"], r["error"], r["agent"], r["model"], r["tokens_in"], r["tokens_out"],
                         r["cost_usd"], r["commit_sha"], r["structured_mode"],
                         loads(r["data"]) if r["data"] else {})


def approval_record(r: sqlite3.Row) -> ApprovalRecord:
    keys = r.keys()
    return ApprovalRecord(r["run_id"], r["node_id"], r["iteration"], r["message"], r["on_deny"], r["requested_at"],
                          r["frame"], r["decision"], r["decided_by"], r["note"], r["decided_at"], bool(r["applied"]),
                          r["workflow"] if "workflow" in keys else None, r["mode"],
                          json.loads(r["request"]) if r["request"] else {},
                          json.loads(r["answer"]) if r["answer"] is not None else None)


def signal_record(r: sqlite3.Row) -> SignalRecord:
    return SignalRecord(r["seq"], r["run_id"], r["name"], json.loads(r["payload"]), r["sent_at"], r["sent_by"],
                        r["node_id"], r["iteration"], r["consumed_at"], r["frame"], r["error"])


def row_to_event(r: sqlite3.Row) -> Event:
    return Event(seq=r["seq"], run_id=r["run_id"], frame=r["frame"], at=r["at"], type=r["type"],
                 node_id=r["node_id"], iteration=r["iteration"], data=loads(r["data"]) if r["data"] else {})


# --- opening and migrating ----------------------------------------------------------------------
def _prepare(conn: sqlite3.Connection, readonly: bool, synchronous: str) -> int:
    """Settings of this connection, then the schema version. A read-only connection changes nothing
    in the file (not even its journal mode)."""
    _all(conn, f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    (version,) = _one(conn, "PRAGMA user_version")  # type: ignore[misc]  # always one row
    if version == 0 and _one(conn, "SELECT 1 FROM sqlite_master LIMIT 1") is not None:
        return -1  # tables of something else
    if readonly:
        _all(conn, "PRAGMA query_only=1")
        return int(version)
    if version <= SCHEMA_VERSION:  # only once we know the file is ours to write
        _all(conn, "PRAGMA journal_mode=WAL")
        _all(conn, f"PRAGMA synchronous={synchronous}")
        _all(conn, "PRAGMA cache_size=-32000")  # 32 MB: a long run's hot pages stay in memory
        _all(conn, "PRAGMA wal_autocheckpoint=4000")
        if version:
            bad = _all(conn, "PRAGMA quick_check(1)")
            if bad and bad[0][0] != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({bad[0][0]})")
    return int(version)


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        (current,) = _one(conn, "PRAGMA user_version")  # type: ignore[misc]  # always one row
        for i in range(current, SCHEMA_VERSION):
            for stmt in _statements(MIGRATIONS[i]):
                conn.execute(stmt).close()
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}").close()
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    # The schema goes into the database file itself, not only the WAL.
    _all(conn, "PRAGMA wal_checkpoint(TRUNCATE)")


def _statements(script: str) -> list[str]:
    out, buf = [], []
    for line in script.splitlines():
        code = line.split("--", 1)[0]
        buf.append(code)
        if code.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip()
            if stmt.strip(";").strip():
                out.append(stmt)
            buf = []
    tail = "\n".join(buf).strip()
    if tail:
        out.append(tail)
    return out
