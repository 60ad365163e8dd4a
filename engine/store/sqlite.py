"""The SQLite store (aiosqlite, WAL). One commit = one frame = one transaction = one thread hop.

Every write of a transition (node states, outputs, attempts, events, approvals, the frame and,
now and then, a keyframe) is gathered in Python and handed to aiosqlite's worker thread as one
function, so a step costs one round trip however many rows it writes.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import aiosqlite
from urllib.parse import quote

from ..errors import LeaseLost, NotADatabase, RunNotFound, SchemaTooNew
from ..events import Event
from ..frame import Delta
from ..state import Key, NodeRecord, RunState, parse_key
from .schema import MIGRATIONS, SCHEMA_VERSION

Ops = list[tuple[str, list[tuple[Any, ...]]]]
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(v: Any) -> str:
    return _dumps(v)


def _apply(conn: sqlite3.Connection, ops: Ops, fence: str | None = None) -> list[int]:
    """Run in aiosqlite's thread: all ops in one transaction. Returns the rowcounts, then
    last_insert_rowid(). With a fence (a run id), the first op is the run's own update guarded
    by its owner id: if it changes no row, another process holds the lease and nothing is written."""
    counts = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in ops:
            if len(rows) == 1:
                counts.append(conn.execute(sql, rows[0]).rowcount)
            else:
                counts.append(conn.executemany(sql, rows).rowcount)
            if fence is not None and len(counts) == 1 and counts[0] != 1:
                row = conn.execute("SELECT owner_id, owner_pid, owner_host FROM runs WHERE id=?", (fence,)).fetchone()
                who = f"pid {row[1]} on {row[2]}" if row and row[0] else "another process"
                raise LeaseLost(f"run {fence} was taken over by {who}; this process stops")
        counts.append(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return counts


class Store:
    """Async access to one database file. One connection per process, used by one event loop."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._data_version = -1

    # --- opening -------------------------------------------------------------------------------
    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> "Store":
        # Only SQLite touches the file: on POSIX, closing any other descriptor of it would drop the
        # locks this process's other connections hold, and another process could then delete the
        # WAL under them. SQLite itself says "file is not a database" for anything else.
        path = Path(path)
        if not create and not path.exists():
            raise RunNotFound(f"no database at {path}: start a run first, or pass --db / set SMITHERS_DB")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{quote(str(path.resolve()))}?mode={'rwc' if create else 'rw'}"
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute("PRAGMA busy_timeout=10000")
            (version,) = await (await conn.execute("PRAGMA user_version")).fetchone()
        except sqlite3.DatabaseError as e:
            await conn.close()
            raise NotADatabase(f"{path} is not a smithers database ({e}): pass --db with another path "
                               "or set SMITHERS_DB") from None
        store = cls(conn, path)
        if version > SCHEMA_VERSION:
            await conn.close()
            raise SchemaTooNew(f"{path} was written by a newer smithers (schema v{version}, this one knows "
                               f"v{SCHEMA_VERSION}): upgrade smithers, or pass --db with another database")
        await conn.execute("PRAGMA journal_mode=WAL")  # only once we know the file is ours to write
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA cache_size=-32000")  # 32 MB: a long run's hot pages stay in memory
        await conn.execute("PRAGMA wal_autocheckpoint=8000")  # fewer, larger checkpoints (each one fsyncs)
        if version < SCHEMA_VERSION:
            await conn._execute(_migrate, conn._conn, version)
        return store

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> "Store":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def data_version(self) -> int:
        """Changes whenever another connection commits (PRAGMA data_version): compare with the last
        value you saw to know whether to look again."""
        row = await (await self.conn.execute("PRAGMA data_version")).fetchone()
        return row[0]

    async def changed(self) -> bool:
        """Has another connection committed since this Store's last call? For a single consumer per
        Store (the app's reader); others should keep their own data_version()."""
        v = await self.data_version()
        changed = v != self._data_version
        self._data_version = v
        return changed

    async def transact(self, ops: Ops, fence: str | None = None) -> list[int]:
        return await self.conn._execute(_apply, self.conn._conn, ops, fence)

    async def run_sync(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run fn(connection) in the store's thread (one hop), e.g. a read-modify-write."""
        return await self.conn._execute(fn, self.conn._conn)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return list(await self.conn.execute_fetchall(sql, tuple(params)))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    # --- runs ----------------------------------------------------------------------------------
    async def get_run(self, run_id: str) -> dict[str, Any]:
        row = await self.fetchone("SELECT * FROM runs WHERE id=?", (run_id,))
        if row is None:
            hint = await self.fetchall("SELECT id FROM runs WHERE id LIKE ? LIMIT 3", (run_id + "%",))
            extra = f" (did you mean {', '.join(r['id'] for r in hint)}?)" if hint else ""
            raise RunNotFound(f"no run {run_id!r} in {self.path}{extra}: `smithers ps` lists runs")
        return dict(row)

    async def find_run(self, prefix: str) -> str:
        """A run id from an unambiguous prefix."""
        row = await self.fetchone("SELECT id FROM runs WHERE id=?", (prefix,))
        if row:
            return row["id"]
        rows = await self.fetchall("SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
                                   (prefix.replace("%", "\\%").replace("_", "\\_") + "%",))
        if len(rows) == 1:
            return rows[0]["id"]
        if not rows:
            await self.get_run(prefix)  # raises the not-found error
        raise RunNotFound(f"run id {prefix!r} is ambiguous: give more characters (`smithers ps`)")

    async def list_runs(self, status: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        if status:
            rows = await self.fetchall("SELECT * FROM runs WHERE status=? ORDER BY created_at DESC LIMIT ?",
                                       (status, limit))
        else:
            rows = await self.fetchall("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    def insert_run_ops(self, run: dict[str, Any]) -> Ops:
        cols = list(run)
        return [(f"INSERT INTO runs ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                 [tuple(run[c] for c in cols)])]

    @staticmethod
    def keyframe_ops(run_id: str, frame: int, state: RunState, status: str) -> Ops:
        kf = {"n": {f"{k[0]}#{k[1]}": r.as_list() for k, r in state.nodes.items()}, "r": status}
        return [("INSERT OR REPLACE INTO keyframes (run_id, frame, state) VALUES (?,?,?)",
                 [(run_id, frame, dumps(kf))])]

    # --- commits -------------------------------------------------------------------------------
    def commit_ops(self, run_id: str, owner_id: str, frame: int, delta: Delta, now: float, delta_json: str,
                   keyframe: Ops | None = None) -> tuple[Ops, list[tuple[Any, ...]]]:
        """The statements of one frame, the run's own update first (it fences the lease: see
        _apply). Returns (ops, event rows) so the caller can publish."""
        run = {"frame": frame, "updated_at": now, **delta.run}
        ops: Ops = [(f"UPDATE runs SET {','.join(c + '=?' for c in run)} WHERE id=? AND owner_id=?",
                     [(*run.values(), run_id, owner_id)])]
        ops.extend(delta.sql)  # before the node rows change: it may read them
        if delta.nodes:
            ops.append((
                "INSERT OR REPLACE INTO nodes (run_id,node_id,iteration,kind,state,attempts,error,data,frame,updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(run_id, k[0], k[1], r.kind, r.state, r.attempts, r.error,
                  dumps(r.data) if r.data is not None else None, frame, now) for k, r in delta.nodes.items()]))
        if delta.outputs:
            ops.append(("INSERT OR REPLACE INTO outputs (run_id,node_id,iteration,value,type,frame,deps)"
                        " VALUES (?,?,?,?,?,?,?)",
                        [(run_id, k[0], k[1], dumps(v), t, frame, dumps(d) if d else None)
                         for k, (v, t, d) in delta.outputs.items()]))
        for a in delta.attempts:
            cols = list(a)
            ops.append((f"INSERT OR REPLACE INTO attempts ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                        [tuple(a.values())]))
        requests = [a for a in delta.approvals if not a.get("applied")]
        if requests:  # a gate asked again (a failed run resumed after a denial) opens a fresh request
            ops.append(("INSERT INTO approvals (run_id,node_id,iteration,message,on_deny,requested_at,frame)"
                        " VALUES (?,?,?,?,?,?,?) ON CONFLICT (run_id,node_id,iteration) DO UPDATE SET"
                        " message=excluded.message, on_deny=excluded.on_deny, requested_at=excluded.requested_at,"
                        " frame=excluded.frame, decision=NULL, decided_by=NULL, note=NULL, decided_at=NULL, applied=0"
                        " WHERE approvals.applied=1",
                        [(run_id, a["key"][0], a["key"][1], a["message"], a["on_deny"], now, frame) for a in requests]))
        applied = [(run_id, a["key"][0], a["key"][1]) for a in delta.approvals if a.get("applied")]
        if applied:
            ops.append(("UPDATE approvals SET applied=1 WHERE run_id=? AND node_id=? AND iteration=?", applied))
        ops.append(("INSERT INTO frames (run_id, frame, at, delta) VALUES (?,?,?,?)",
                    [(run_id, frame, now, delta_json)]))
        if keyframe:
            ops.extend(keyframe)
        events = [(run_id, frame, now, typ, k[0] if k else None, k[1] if k else None, dumps(data) if data else None)
                  for typ, k, data in delta.events]
        if events:  # last, so that the transaction's last_insert_rowid() is the last event's seq
            ops.append(("INSERT INTO events (run_id,frame,at,type,node_id,iteration,data) VALUES (?,?,?,?,?,?,?)",
                        events))
        return ops, events

    async def last_event_seq(self) -> int:
        row = await self.fetchone("SELECT max(seq) FROM events")
        return row[0] or 0

    # --- loading -------------------------------------------------------------------------------
    async def load_state(self, run_id: str) -> RunState:
        st = RunState()

        def read(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            nodes = conn.execute("SELECT node_id,iteration,kind,state,attempts,error,data FROM nodes "
                                 "WHERE run_id=?", (run_id,)).fetchall()
            outs = conn.execute("SELECT node_id,iteration,value,type FROM outputs WHERE run_id=? "
                                "ORDER BY node_id, iteration", (run_id,)).fetchall()
            return nodes, outs

        nodes, outs = await self.run_sync(read)
        for nid, it, kind, state, attempts, error, data in nodes:
            rec = NodeRecord(kind, state, attempts, error, json.loads(data) if data else None)
            st.nodes[(nid, it)] = rec
            if kind == "loop":
                st.note_loop(nid, rec)
        for nid, it, value, typ in outs:
            st.set_output((nid, it), json.loads(value), typ)
        return st

    async def state_at(self, run_id: str, frame: int) -> tuple[dict[Key, NodeRecord], dict[Key, Any], str]:
        """Rebuild frame N exactly: the last keyframe at or before N, then the deltas up to N."""

        def read(conn: sqlite3.Connection) -> Any:
            kf = conn.execute("SELECT frame, state FROM keyframes WHERE run_id=? AND frame<=? "
                              "ORDER BY frame DESC LIMIT 1", (run_id, frame)).fetchone()
            start = kf[0] if kf else -1
            deltas = conn.execute("SELECT delta FROM frames WHERE run_id=? AND frame>? AND frame<=? ORDER BY frame",
                                  (run_id, start, frame)).fetchall()
            outs = conn.execute("SELECT node_id,iteration,value FROM outputs WHERE run_id=? AND frame<=?",
                                (run_id, frame)).fetchall()
            return kf, deltas, outs

        kf, deltas, outs = await self.run_sync(read)
        nodes: dict[Key, NodeRecord] = {}
        status = "running"
        if kf:
            k = json.loads(kf[1])
            nodes = {parse_key(s): NodeRecord.from_list(v) for s, v in k["n"].items()}
            status = k.get("r", status)
        for (d,) in deltas:
            dd = json.loads(d)
            for s, v in dd.get("n", {}).items():
                nodes[parse_key(s)] = NodeRecord.from_list(v)
            status = dd.get("r", status)
        outputs = {(n, i): json.loads(v) for n, i, v in outs}
        return nodes, outputs, status

    async def frames(self, run_id: str) -> list[dict[str, Any]]:
        rows = await self.fetchall("SELECT frame, at, delta FROM frames WHERE run_id=? ORDER BY frame", (run_id,))
        return [{"frame": r["frame"], "at": r["at"], "delta": json.loads(r["delta"])} for r in rows]

    async def events(self, run_id: str | None = None, after: int = 0, limit: int = 10000) -> list[Event]:
        if run_id:
            rows = await self.fetchall("SELECT * FROM events WHERE run_id=? AND seq>? ORDER BY seq LIMIT ?",
                                       (run_id, after, limit))
        else:
            rows = await self.fetchall("SELECT * FROM events WHERE seq>? ORDER BY seq LIMIT ?", (after, limit))
        return [row_to_event(r) for r in rows]

    async def attempts(self, run_id: str) -> list[dict[str, Any]]:
        rows = await self.fetchall("SELECT * FROM attempts WHERE run_id=? ORDER BY started_at", (run_id,))
        return [dict(r) for r in rows]

    # --- approvals -----------------------------------------------------------------------------
    async def approvals(self, run_id: str | None = None, open_only: bool = True) -> list[dict[str, Any]]:
        where, params = [], []
        if run_id:
            where.append("a.run_id=?")
            params.append(run_id)
        if open_only:
            where.append("a.decision IS NULL AND r.status IN ('waiting','running')")
        sql = ("SELECT a.*, r.workflow FROM approvals a JOIN runs r ON r.id=a.run_id"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.requested_at")
        return [dict(r) for r in await self.fetchall(sql, params)]

    async def decide(self, run_id: str, node_id: str, iteration: int, approved: bool, by: str,
                     note: str | None) -> tuple[bool, dict[str, Any]]:
        """Record a decision once: (True, row) for the first writer, (False, existing row) after."""

        def txn(conn: sqlite3.Connection) -> Any:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "UPDATE approvals SET decision=?, decided_by=?, note=?, decided_at=? "
                    "WHERE run_id=? AND node_id=? AND iteration=? AND decision IS NULL",
                    ("approved" if approved else "denied", by, note, time.time(), run_id, node_id, iteration))
                won = cur.rowcount == 1
                row = conn.execute("SELECT * FROM approvals WHERE run_id=? AND node_id=? AND iteration=?",
                                   (run_id, node_id, iteration)).fetchone()
                if won:  # in the log at once, whether or not a process runs the run now
                    conn.execute("INSERT INTO events (run_id,frame,at,type,node_id,iteration,data) "
                                 "SELECT id, frame, ?, 'approval_decided', ?, ?, ? FROM runs WHERE id=?",
                                 (row["decided_at"], node_id, iteration,
                                  dumps({"approved": approved, "by": by, "note": note, "at": row["decided_at"]}),
                                  run_id))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return won, dict(row) if row else None

        return await self.run_sync(txn)

    async def decided_unapplied(self, run_id: str) -> list[dict[str, Any]]:
        rows = await self.fetchall("SELECT * FROM approvals WHERE run_id=? AND decision IS NOT NULL AND applied=0",
                                   (run_id,))
        return [dict(r) for r in rows]


def row_to_event(r: sqlite3.Row) -> Event:
    return Event(seq=r["seq"], run_id=r["run_id"], frame=r["frame"], at=r["at"], type=r["type"],
                 node_id=r["node_id"], iteration=r["iteration"], data=json.loads(r["data"]) if r["data"] else {})


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        for i in range(current, SCHEMA_VERSION):
            for stmt in _statements(MIGRATIONS[i]):
                conn.execute(stmt)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


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
