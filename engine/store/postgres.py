"""The PostgreSQL store (asyncpg, a connection pool): many workers on many hosts share one database.

Same contract as the SQLite store (the conformance suite runs on both). What differs:

- Claims: `claim_runs` locks its candidates with `SELECT ... FOR UPDATE SKIP LOCKED`, so workers
  asking at once never wait for each other and never get the same run.
- Wake-ups: writes that concern a worker or a run's owner (a run queued, a decision, a cancel
  request, a lease given up) send `NOTIFY smithers, '<run id>'` in their transaction; a store with
  subscribers keeps one extra connection that LISTENs and wakes them with the run ids.
- A restarted server: every call waits for the server to come back (up to RECONNECT_S) and runs
  again. A write whose outcome is unknown (the connection died around its COMMIT) is checked
  first — its frame is there, its lease is ours, its decision is ours — so nothing is written twice.
- JSON columns are jsonb, written as JSON text and read back with json.loads, like SQLite's.
- `durability="normal"` is `synchronous_commit=off`; `readonly` opens every transaction read-only.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeAlias, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from ..errors import (BadInput, Conflict, LeaseLost, NotADatabase, RunNotFound, SchemaTooNew, SmithersError,
                      StoreDamaged, StoreFull, StoreReadOnly, StoreUnavailable)
from ..events import Event
from ..frame import Delta, decode_delta
from ..lease import STALE_AFTER_S, Owner, claimable_owner, this_host
from ..records import (ATTEMPT_COLUMNS, ApprovalRecord, AttemptRecord, CacheEntry, FrameRecord, FrameState, NewRun,
                       OutputRecord, ReportData, SignalRecord, Totals, WaitRecord,
                       RunRecord, RunStats, WorkerRecord)
from ..state import Key, NodeRecord, RunKind, RunState, RunStatus, key_str, parse_key
from .base import Store
from .postgres_schema import BOOTSTRAP, CHANNEL, MIGRATION_LOCK, PG_MIGRATIONS, PG_SCHEMA_VERSION, SCHEMA
from .schema import SCHEMA_VERSION
from .sqlite import (_columns, _new_run_row, _owner_of, no_run, approval_record, attempt_record, dumps, node_record,
                     signal_record,
                     owner_columns, row_to_event, run_record)

assert PG_SCHEMA_VERSION == SCHEMA_VERSION, "every migration exists for both stores"

T = TypeVar("T")
Conn: TypeAlias = asyncpg.Connection
log = logging.getLogger("smithers.store")
DURABILITY = {"full": "on", "normal": "off"}
POOL_SIZE = 8
CONNECT_TIMEOUT_S = 10.0
RECONNECT_S = 60.0  # how long a call waits for a restarted (or briefly unreachable) server
KEEPALIVE_S = 5.0  # the listening connection checks it is still there this often
NOT_DONE = object()

# A lost connection, a server shutting down or starting up, a conflict to retry: run the call again.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError, asyncpg.DeadlockDetectedError,
)


def _transient(e: BaseException) -> bool:
    if isinstance(e, TRANSIENT):
        return True
    if isinstance(e, asyncpg.exceptions._base.InternalClientError):  # a query cut off by a dying server
        return True
    return isinstance(e, asyncpg.InterfaceError) and ("closed" in str(e) or "pool" in str(e).lower())


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def _no_reset(conn: Conn) -> None:
    """Connections go back to the pool as they are: this store sets no session state, so the
    default reset (a round trip per release) would only cost time. (Every transaction is managed,
    and a connection that failed in the middle of one is terminated, not returned.)"""


class PostgresStore(Store):
    """One PostgreSQL database, through a pool of connections; used by one event loop."""

    def __init__(self, pool: asyncpg.Pool, url: str, readonly: bool, settings: dict[str, str]) -> None:
        self.pool = pool
        self.url = url
        self.where = redact(url)
        self.readonly = readonly
        self.settings = settings

    # --- opening -------------------------------------------------------------------------------
    @classmethod
    async def open(cls, url: str, *, create: bool = True, readonly: bool = False,
                   durability: str = "full", inline: bool = False) -> "PostgresStore":
        """Open the database at a postgresql:// URL (`inline` means nothing here: asyncpg never blocks
        the event loop)."""
        if durability not in DURABILITY:
            raise BadInput(f"durability {durability!r} is not one of {', '.join(DURABILITY)}: "
                           "set it in .smithers/config.toml or SMITHERS_DURABILITY")
        settings = {"search_path": SCHEMA, "application_name": "smithers",
                    "synchronous_commit": DURABILITY[durability]}
        if readonly:
            settings["default_transaction_read_only"] = "on"
        try:
            # min_size=0: connections are made when needed (the pool does not keep reconnecting in the
            # background, noisily, while a server restarts)
            pool = await asyncpg.create_pool(url, min_size=0, max_size=POOL_SIZE, reset=_no_reset,
                                             timeout=CONNECT_TIMEOUT_S, command_timeout=None,
                                             server_settings=settings)
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, asyncio.CancelledError)):
                raise
            raise _open_error(url, e) from None
        store = cls(pool, url, readonly, settings)
        try:
            await store._prepare(create)
        except SmithersError:
            await pool.close()
            raise
        except BaseException as e:
            pool.terminate()
            if isinstance(e, (KeyboardInterrupt, asyncio.CancelledError)):
                raise
            raise _open_error(url, e) from None
        return store

    async def _prepare(self, create: bool) -> None:
        async with self.pool.acquire() as c:
            try:
                version = await _version(c)
                if version > SCHEMA_VERSION:
                    raise SchemaTooNew(f"{self.where} was written by a newer smithers (schema v{version}, this one "
                                       f"knows v{SCHEMA_VERSION}): upgrade smithers, or pass --db with another "
                                       "database")
                if version == SCHEMA_VERSION:
                    return
                if self.readonly:
                    if version == 0:
                        raise NotADatabase(f"{self.where} holds no smithers data yet (no schema {SCHEMA}): start a "
                                           "run or a worker on it first, or pass --db with another database")
                    raise BadInput(f"{self.where} was written by an older smithers (schema v{version}): "
                                   "`smithers migrate` upgrades it, then this command works")
                if not create and version == 0:
                    raise RunNotFound(f"no smithers data in {self.where}: start a run first, or pass --db / set "
                                      "SMITHERS_DB")
                async with c.transaction():
                    await c.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                    await c.execute(BOOTSTRAP)
                    current = await _version(c)
                    if current > SCHEMA_VERSION:
                        raise SchemaTooNew(f"{self.where} was migrated meanwhile by a newer smithers (schema "
                                           f"v{current}): upgrade smithers")
                    for i in range(current, SCHEMA_VERSION):
                        await c.execute(PG_MIGRATIONS[i])
                    await c.execute(f"DELETE FROM {SCHEMA}.schema_version")
                    await c.execute(f"INSERT INTO {SCHEMA}.schema_version VALUES ($1)", SCHEMA_VERSION)
            except asyncpg.PostgresError as e:
                raise self._translate(e) from None

    async def close(self) -> None:
        await self._stop_watching()
        await self.pool.close()

    def _translate(self, e: BaseException) -> SmithersError:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, asyncpg.UniqueViolationError):
            return Conflict(f"{text} in {self.where}")
        if isinstance(e, asyncpg.ReadOnlySQLTransactionError):
            return StoreReadOnly(f"{self.where} is opened read-only ({text}): only commands that read work on it")
        if isinstance(e, asyncpg.DiskFullError):
            return StoreFull(f"the disk of the PostgreSQL server at {self.where} is full ({text}): free some space; "
                             "every saved frame is kept and the run resumes from the last one")
        if isinstance(e, asyncpg.InsufficientPrivilegeError):
            return BadInput(f"{self.where}: permission denied ({text}): grant the user rights on schema {SCHEMA}")
        if isinstance(e, asyncpg.UntranslatableCharacterError) or "Unicode escape" in text:
            return BadInput(f"{self.where} cannot store this JSON ({text}): PostgreSQL's jsonb holds no NUL "
                            "characters (\\u0000); remove them from the output or input")
        return StoreDamaged(f"database error in {self.where}: {text}")

    # --- running calls -------------------------------------------------------------------------
    async def _call(self, fn: Callable[[Conn], Awaitable[T]], *, write: bool = True, snapshot: bool = False,
                    retried: Callable[[Conn], Awaitable[Any]] | None = None) -> T:
        """fn(connection) in one transaction (a read: one snapshot). When the connection is lost
        or the server restarts, wait for it and run again, for up to RECONNECT_S; for a write whose
        outcome is then unknown, `retried(connection)` first says whether it went through (its
        result, or NOT_DONE)."""
        deadline: float | None = None
        delay = 0.05
        unknown = False
        while True:
            try:
                async with self.pool.acquire() as c:
                    try:
                        if unknown and retried is not None:
                            done = await retried(c)
                            if done is not NOT_DONE:
                                return done  # type: ignore[no-any-return]  # retried() returns what fn would have
                        if snapshot:
                            async with c.transaction(isolation="repeatable_read", readonly=True):
                                return await fn(c)
                        if not write:
                            return await fn(c)
                        async with c.transaction():
                            return await fn(c)
                    except BaseException as e:
                        if _transient(e) or isinstance(e, asyncio.CancelledError):
                            c.terminate()  # never reuse a connection cut off in the middle of something
                        raise
            except SmithersError:
                raise
            except BaseException as e:
                if isinstance(e, (KeyboardInterrupt, asyncio.CancelledError)):
                    raise
                if not _transient(e):
                    if isinstance(e, asyncpg.PostgresError):
                        raise self._translate(e) from None
                    raise
                now = time.monotonic()
                if deadline is None:
                    log.warning("lost PostgreSQL at %s (%s: %s); reconnecting", self.where, type(e).__name__,
                                str(e).splitlines()[0] if str(e) else "")
                deadline = deadline or now + RECONNECT_S
                if now >= deadline:
                    raise StoreUnavailable(f"lost PostgreSQL at {self.where} for {RECONNECT_S:.0f} s "
                                           f"({type(e).__name__}: {e}): check the server; every saved frame is "
                                           "kept and the run resumes from the last one") from None
                unknown = unknown or write
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        return await self._call(fn, write=False)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._read(lambda c: c.fetch(sql, *args))

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._read(lambda c: c.fetchrow(sql, *args))

    async def data_version(self) -> int:
        """The set of committed transactions as this server sees it (pg_current_snapshot): it
        changes when any transaction commits — another connection's, or the server's own
        housekeeping now and then (a change too many only costs a look)."""
        text = await self._read(lambda c: c.fetchval("SELECT pg_current_snapshot()::text"))
        return zlib.crc32(str(text).encode()) | (len(str(text)) << 32)

    # --- wake-ups: LISTEN/NOTIFY ---------------------------------------------------------------
    async def _watch(self) -> None:
        """One connection LISTENs; each NOTIFY wakes the subscribers with its run id. A lost
        connection is made again, and everyone is woken (something may have been missed)."""
        delay = 0.05
        while getattr(self, "_subs", None):
            conn: Conn | None = None
            try:
                conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S,
                                             server_settings={"application_name": "smithers-listen"})
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                delay = 0.05
                self._wake(None)
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        await conn.execute("SELECT 1", timeout=KEEPALIVE_S)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                if conn is not None:
                    conn.terminate()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._wake([payload] if payload else None)

    # --- runs ----------------------------------------------------------------------------------
    async def get_run(self, run_id: str) -> RunRecord:
        async def read(c: Conn) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
            row = await c.fetchrow("SELECT * FROM runs WHERE id=$1", run_id)
            return row, ([] if row is not None else await _prefixed(c, run_id, 3))

        row, hint = await self._read(read)
        if row is None:
            raise no_run(run_id, self.where, [r["id"] for r in hint])
        return run_record(row)

    async def run_exists(self, run_id: str) -> bool:
        return await self._fetchrow("SELECT 1 FROM runs WHERE id=$1", run_id) is not None

    async def find_run(self, prefix: str) -> str:
        async def read(c: Conn) -> list[str]:
            if await c.fetchrow("SELECT 1 FROM runs WHERE id=$1", prefix) is not None:
                return [prefix]
            return [r["id"] for r in await _prefixed(c, prefix, 2)]

        ids = await self._read(read)
        if len(ids) == 1:
            return ids[0]
        if not ids:
            await self.get_run(prefix)
        raise RunNotFound(f"run id {prefix!r} is ambiguous: give more characters (`smithers ps`)")

    async def list_runs(self, status: str | None = None, limit: int = 500) -> list[RunRecord]:
        if status:
            rows = await self._fetch("SELECT * FROM runs WHERE status=$1 ORDER BY created_at DESC LIMIT $2",
                                     str(status), limit)
        else:
            rows = await self._fetch("SELECT * FROM runs ORDER BY created_at DESC LIMIT $1", limit)
        return [run_record(r) for r in rows]

    async def child_runs(self, run_id: str) -> list[RunRecord]:
        rows = await self._fetch("SELECT * FROM runs WHERE parent_run_id=$1 ORDER BY created_at", run_id)
        return [run_record(r) for r in rows]

    async def run_stats(self, run_ids: Iterable[str]) -> dict[str, RunStats]:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}

        async def read(c: Conn) -> dict[str, RunStats]:
            out = {rid: RunStats() for rid in ids}
            for r in await c.fetch("SELECT run_id, count(*) FILTER (WHERE state IN ('done','skipped')) AS done, "
                                   "count(*) AS known FROM nodes WHERE run_id = ANY($1::text[]) "
                                   "AND kind IN ('task','approval','signal','timer','human','subflow') GROUP BY run_id",
                                   ids):
                out[r["run_id"]].done, out[r["run_id"]].known = r["done"] or 0, r["known"]
            for r in await c.fetch("SELECT run_id, node_id, iteration FROM nodes WHERE run_id = ANY($1::text[]) "
                                   "AND state='running' AND kind IN ('task','subflow') ORDER BY updated_at", ids):
                out[r["run_id"]].running.append((r["node_id"], r["iteration"]))
            for r in await c.fetch("SELECT run_id, count(*) AS n FROM approvals WHERE run_id = ANY($1::text[]) "
                                   "AND decision IS NULL GROUP BY run_id", ids):
                out[r["run_id"]].gates = r["n"]
            for r in await c.fetch("SELECT run_id, sum(coalesce(tokens_in,0)+coalesce(tokens_out,0)) AS tokens, "
                                   "sum(coalesce(cost_usd,0)) AS cost FROM attempts WHERE run_id = ANY($1::text[]) "
                                   "GROUP BY run_id", ids):
                out[r["run_id"]].tokens, out[r["run_id"]].cost_usd = int(r["tokens"] or 0), float(r["cost"] or 0.0)
            return out

        return await self._call(read, snapshot=True)

    async def totals(self) -> Totals:
        async def read(c: Conn) -> Totals:
            t = Totals()
            t.runs = {r[0]: r[1] for r in await c.fetch("SELECT status, count(*) FROM runs GROUP BY status")}
            t.steps = {r[0]: r[1] for r in await c.fetch("SELECT state, count(*) FROM nodes "
                                                          "WHERE kind IN ('task','approval') GROUP BY state")}
            t.attempts = {r[0]: r[1] for r in await c.fetch("SELECT outcome, count(*) FROM attempts GROUP BY outcome")}
            usage = await c.fetchrow("SELECT coalesce(sum(tokens_in),0), coalesce(sum(tokens_out),0), "
                                     "coalesce(sum(cost_usd),0) FROM attempts")
            if usage is not None:
                t.tokens_in, t.tokens_out, t.cost_usd = int(usage[0]), int(usage[1]), float(usage[2])
            t.open_gates = int(await c.fetchval("SELECT count(*) FROM approvals a JOIN runs r ON r.id=a.run_id "
                                                "WHERE a.decision IS NULL AND r.status IN ('running','waiting')") or 0)
            return t

        return await self._call(read, snapshot=True)

    # --- writing a run -------------------------------------------------------------------------
    async def create_run(self, run: NewRun, owner: Owner | None, now: float) -> None:
        async def write(c: Conn) -> None:
            await _insert_new_run(c, run, owner, now)

        await self._new_run(write, run.id, now, "choose another --run-id or resume it")

    async def take_over(self, run_id: str, owner: Owner, expect_owner: str | None, changes: dict[str, Any],
                        now: float) -> int | None:
        cols = {**owner_columns(owner, now), **_columns(changes)}
        sets = ",".join(f"{c}=${i}" for i, c in enumerate(cols, 3))

        async def write(c: Conn) -> int | None:
            token = await c.fetchval(f"UPDATE runs SET {sets}, lease=lease+1 WHERE id=$1 AND owner_id IS NOT DISTINCT "
                                     "FROM $2 RETURNING lease", run_id, expect_owner, *cols.values())
            return None if token is None else int(token)

        async def retried(c: Conn) -> Any:
            r = await c.fetchrow("SELECT owner_id, heartbeat_at, lease FROM runs WHERE id=$1", run_id)
            return r["lease"] if r and r["owner_id"] == owner.id and r["heartbeat_at"] == now else NOT_DONE

        return await self._call(write, retried=retried)

    async def commit(self, run_id: str, owner_id: str, frame: int, delta: Delta, now: float,
                     keyframe: dict[str, Any] | None = None, *, token: int | None = None) -> int:
        async def write(c: Conn) -> int:
            return await _commit(c, run_id, owner_id, token, frame, delta, now, keyframe)

        async def retried(c: Conn) -> Any:
            if await c.fetchval("SELECT 1 FROM frames WHERE run_id=$1 AND frame=$2", run_id, frame) is None:
                return NOT_DONE
            return await c.fetchval("SELECT coalesce(max(seq), 0) FROM events WHERE run_id=$1 AND frame=$2",
                                    run_id, frame)

        return await self._call(write, retried=retried)

    async def heartbeat(self, run_id: str, owner_id: str, now: float, *, token: int | None = None) -> bool:
        where, params = _fence(run_id, owner_id, token, 2)
        status = await self._call(lambda c: c.execute(f"UPDATE runs SET heartbeat_at=$1 WHERE {where}", now, *params))
        return bool(status == "UPDATE 1")

    async def release(self, run_id: str, owner_id: str, *, token: int | None = None) -> None:
        where, params = _fence(run_id, owner_id, token, 1)

        async def write(c: Conn) -> None:
            if await c.execute(f"UPDATE runs SET owner_id=NULL, heartbeat_at=NULL WHERE {where}", *params) == "UPDATE 1":
                await _notify(c, run_id)

        await self._call(write)

    async def request_cancel(self, run_id: str) -> None:
        async def write(c: Conn) -> None:
            await c.execute("UPDATE runs SET cancel_requested=1 WHERE id=$1", run_id)
            await _notify(c, run_id)

        await self._call(write)

    async def cancel_requested(self, run_id: str) -> bool:
        return bool(await self._read(lambda c: c.fetchval("SELECT cancel_requested FROM runs WHERE id=$1", run_id)))

    async def insert_fork(self, plan: Any, now: float) -> None:
        run: NewRun = plan.run

        async def write(c: Conn) -> None:
            if plan.kind == RunKind.REWIND:  # first, and conditional: of two rewinds of one run, one wins
                done = await c.execute("UPDATE runs SET status=$1, successor_run_id=$2, owner_id=NULL, "
                                       "updated_at=$3 WHERE id=$4 AND status!=$1",
                                       str(RunStatus.REWOUND), run.id, now, plan.parent.id)
                if done != "UPDATE 1":
                    raise BadInput(f"run {plan.parent.id} was already rewound meanwhile: rewind its successor, "
                                   "or fork it")
            await _insert(c, "runs", _new_run_row(run, now))
            if plan.nodes:
                await c.executemany(
                    "INSERT INTO nodes (run_id,node_id,iteration,kind,state,attempts,error,data,frame,updated_at)"
                    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,0,$9)",
                    [(run.id, k[0], k[1], str(r.kind), str(r.state), r.attempts, r.error,
                      dumps(r.data) if r.data is not None else None, now) for k, r in plan.nodes.items()])
            if plan.outputs:
                await c.executemany("INSERT INTO outputs (run_id,node_id,iteration,value,type,frame,deps) "
                                    "VALUES ($1,$2,$3,$4,$5,0,$6)",
                                    [(run.id, k[0], k[1], dumps(o.value), o.type, dumps(o.deps) if o.deps else None)
                                     for k, o in plan.outputs.items()])
            await c.execute("INSERT INTO keyframes (run_id, frame, state) VALUES ($1, 0, $2)", run.id,
                            dumps({"v": 1, "n": {key_str(k): r.as_list() for k, r in plan.nodes.items()},
                                   "r": str(run.status)}))
            await c.execute("INSERT INTO frames (run_id, frame, at, delta) VALUES ($1, 0, $2, $3)", run.id, now,
                            dumps({"v": 1, "fork": plan.info}))
            events = [(run.id, 0, now, "run_forked", dumps(plan.info))]
            if plan.kind == RunKind.REWIND:
                events.append((plan.parent.id, plan.parent.frame, now, "run_rewound",
                               dumps({"successor": run.id, "to_frame": plan.frame})))
            await c.executemany("INSERT INTO events (run_id,frame,at,type,data) VALUES ($1,$2,$3,$4,$5)", events)
            if run.status == RunStatus.QUEUED:
                await _notify(c, run.id)

        await self._new_run(write, run.id, now, "choose another --run-id")

    async def _new_run(self, write: Callable[[Conn], Awaitable[None]], run_id: str, now: float, hint: str) -> None:
        """A write that creates a run (created at `now`: how a retry knows it went through)."""
        async def retried(c: Conn) -> Any:
            return None if await c.fetchval("SELECT created_at FROM runs WHERE id=$1", run_id) == now else NOT_DONE

        try:
            await self._call(write, retried=retried)
        except Conflict:
            raise BadInput(f"a run {run_id!r} already exists: {hint}") from None

    # --- reading a run -------------------------------------------------------------------------
    async def load_state(self, run_id: str) -> RunState:
        async def read(c: Conn) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
            return (await c.fetch("SELECT node_id,iteration,kind,state,attempts,error,data FROM nodes WHERE run_id=$1",
                                  run_id),
                    await c.fetch("SELECT node_id,iteration,value,type FROM outputs WHERE run_id=$1", run_id))

        nodes, outs = await self._call(read, snapshot=True)
        return RunState.of({(r[0], r[1]): node_record(r) for r in nodes},
                           {(r[0], r[1]): (json.loads(r[2]), r[3]) for r in outs})

    async def state_at(self, run_id: str, frame: int) -> FrameState:
        return await self._call(lambda c: _state_at(c, run_id, frame), snapshot=True)

    async def outputs_at(self, run_id: str, frame: int, node: Key | None = None) -> dict[Key, OutputRecord]:
        sql = "SELECT node_id, iteration, value, type, deps, frame FROM outputs WHERE run_id=$1 AND frame<=$2"
        if node is None:
            rows = await self._fetch(sql, run_id, frame)
        else:
            rows = await self._fetch(sql + " AND node_id=$3 AND iteration=$4", run_id, frame, *node)
        return {(r["node_id"], r["iteration"]): OutputRecord(json.loads(r["value"]), r["type"],
                                                             json.loads(r["deps"]) if r["deps"] else None, r["frame"])
                for r in rows}

    async def report_data(self, run_id: str, frame: int | None = None) -> ReportData:
        async def read(c: Conn) -> ReportData | None:
            row = await c.fetchrow("SELECT * FROM runs WHERE id=$1", run_id)
            if row is None:
                return None
            run = run_record(row)
            frame_at = None
            if frame is not None and 0 <= frame <= run.frame:
                st = await _state_at(c, run_id, frame)
                nodes, outputs, status = st.nodes, st.outputs, st.status
                frame_at = await c.fetchval("SELECT at FROM frames WHERE run_id=$1 AND frame=$2", run_id, frame)
            else:
                nodes = {(r[0], r[1]): node_record(r) for r in await c.fetch(
                    "SELECT node_id,iteration,kind,state,attempts,error,data FROM nodes WHERE run_id=$1", run_id)}
                outputs = {(r[0], r[1]): json.loads(r[2]) for r in await c.fetch(
                    "SELECT node_id,iteration,value FROM outputs WHERE run_id=$1", run_id)}
                status = run.status
            attempts = [attempt_record(r) for r in await c.fetch(
                "SELECT * FROM attempts WHERE run_id=$1 ORDER BY started_at", run_id)]
            approvals = [approval_record(r) for r in await c.fetch(
                "SELECT a.*, r.workflow FROM approvals a JOIN runs r ON r.id=a.run_id WHERE a.run_id=$1 "
                "ORDER BY a.requested_at", run_id)]
            return ReportData(run, nodes, outputs, status, attempts, approvals, frame_at)

        data = await self._call(read, snapshot=True)
        if data is None:
            await self.get_run(run_id)
            raise AssertionError("unreachable")
        return data

    async def node_records(self, run_id: str, node_id: str) -> dict[int, NodeRecord]:
        rows = await self._fetch("SELECT node_id,iteration,kind,state,attempts,error,data FROM nodes "
                                 "WHERE run_id=$1 AND node_id=$2", run_id, node_id)
        return {r["iteration"]: node_record(r) for r in rows}

    async def frames(self, run_id: str, since: int = 0) -> list[FrameRecord]:
        rows = await self._fetch("SELECT frame, at, delta FROM frames WHERE run_id=$1 AND frame>=$2 ORDER BY frame",
                                 run_id, since)
        return [FrameRecord(r[0], r[1], decode_delta(json.loads(r[2]))) for r in rows]

    async def events(self, run_id: str | None = None, after: int = 0, limit: int = 10000, *,
                     node: Key | None = None, types: Sequence[str] | None = None,
                     newest: bool = False) -> list[Event]:
        where: list[str] = ["seq>$1"]
        params: list[Any] = [after]
        if run_id is not None:
            params.append(run_id)
            where.append(f"run_id=${len(params)}")
        if node is not None:
            params += [node[0], node[1]]
            where += [f"node_id=${len(params) - 1}", f"iteration=${len(params)}"]
        if types:
            params.append(list(types))
            where.append(f"type = ANY(${len(params)}::text[])")
        params.append(limit)
        order = "DESC" if newest else ""
        rows = await self._fetch(f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq {order} "
                                 f"LIMIT ${len(params)}", *params)
        evs = [row_to_event(r) for r in rows]
        return evs[::-1] if newest else evs

    async def last_event_seq(self) -> int:
        return int(await self._read(lambda c: c.fetchval("SELECT coalesce(max(seq), 0) FROM events")))

    async def attempts(self, run_id: str, node: Key | None = None) -> list[AttemptRecord]:
        if node is None:
            rows = await self._fetch("SELECT * FROM attempts WHERE run_id=$1 ORDER BY started_at", run_id)
        else:
            rows = await self._fetch("SELECT * FROM attempts WHERE run_id=$1 AND node_id=$2 AND iteration=$3 "
                                     "ORDER BY started_at", run_id, *node)
        return [attempt_record(r) for r in rows]

    # --- approvals -----------------------------------------------------------------------------
    async def approvals(self, run_id: str | None = None, open_only: bool = True) -> list[ApprovalRecord]:
        where: list[str] = []
        params: list[Any] = []
        if run_id:
            params.append(run_id)
            where.append("a.run_id=$1")
        if open_only:
            where.append("a.decision IS NULL AND r.status IN ('waiting','running')")
        sql = ("SELECT a.*, r.workflow FROM approvals a JOIN runs r ON r.id=a.run_id"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.requested_at")
        return [approval_record(r) for r in await self._fetch(sql, *params)]

    async def decide(self, run_id: str, node_id: str, iteration: int, approved: bool, by: str,
                     note: str | None, now: float, *, answer: Any = None,
                     decision: str | None = None) -> tuple[bool, ApprovalRecord]:
        select = ("SELECT a.*, r.workflow FROM approvals a JOIN runs r ON r.id=a.run_id "
                  "WHERE a.run_id=$1 AND a.node_id=$2 AND a.iteration=$3")
        word = decision or ("approved" if approved else "denied")

        async def write(c: Conn) -> tuple[bool, asyncpg.Record | None]:
            done = await c.execute("UPDATE approvals SET decision=$1, decided_by=$2, note=$3, decided_at=$4, answer=$5 "
                                   "WHERE run_id=$6 AND node_id=$7 AND iteration=$8 AND decision IS NULL",
                                   word, by, note, now, dumps(answer) if answer is not None else None, run_id,
                                   node_id, iteration)
            won = done == "UPDATE 1"
            row = await c.fetchrow(select, run_id, node_id, iteration)
            if won:  # in the log at once, whether or not a process runs the run now
                data: dict[str, Any] = {"approved": approved, "by": by, "note": note, "at": now}
                if decision:
                    data["decision"] = decision
                if answer is not None:
                    data["answer"] = answer
                await c.execute("INSERT INTO events (run_id,frame,at,type,node_id,iteration,data) "
                                "SELECT id, frame, $1, 'approval_decided', $2, $3, $4 FROM runs WHERE id=$5",
                                now, node_id, iteration, dumps(data), run_id)
                await _notify(c, run_id)
            return won, row

        async def retried(c: Conn) -> Any:
            row = await c.fetchrow(select, run_id, node_id, iteration)
            if row is not None and row["decided_by"] == by and row["decided_at"] == now:
                return True, row
            return NOT_DONE

        won, row = await self._call(write, retried=retried)
        if row is None:
            raise BadInput(f"run {run_id} has no gate {node_id!r} at iteration {iteration}")
        return won, approval_record(row)

    async def decided_unapplied(self, run_id: str) -> list[ApprovalRecord]:
        rows = await self._fetch("SELECT a.*, r.workflow FROM approvals a JOIN runs r ON r.id=a.run_id "
                                 "WHERE a.run_id=$1 AND a.decision IS NOT NULL AND a.applied=0", run_id)
        return [approval_record(r) for r in rows]

    # --- signals -------------------------------------------------------------------------------
    async def send_signal(self, run_id: str, name: str, payload: Any, by: str | None, now: float) -> SignalRecord:
        async def write(c: Conn) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
            run = await c.fetchrow("SELECT status, frame FROM runs WHERE id=$1 FOR UPDATE", run_id)
            if run is None or run["status"] not in ("queued", "running", "waiting"):
                return run, None
            row = await c.fetchrow("INSERT INTO signals (run_id, name, payload, sent_at, sent_by) VALUES ($1,$2,$3,$4,$5)"
                                   " RETURNING *", run_id, name, dumps(payload), now, by)
            await c.execute("INSERT INTO events (run_id,frame,at,type,data) VALUES ($1,$2,$3,'signal_sent',$4)",
                            run_id, run["frame"], now, dumps({"name": name, "seq": row["seq"], "by": by}))
            await _notify(c, run_id)
            return run, row

        async def retried(c: Conn) -> Any:
            row = await c.fetchrow("SELECT * FROM signals WHERE run_id=$1 AND sent_at=$2 AND name=$3", run_id, now, name)
            return ({"status": "sent"}, row) if row is not None else NOT_DONE

        run, row = await self._call(write, retried=retried)
        return await self._signal_sent(run_id, run, signal_record(row) if row is not None else None)

    async def signals(self, run_id: str, pending_only: bool = False) -> list[SignalRecord]:
        sql = "SELECT * FROM signals WHERE run_id=$1" + (" AND consumed_at IS NULL" if pending_only else "")
        return [signal_record(r) for r in await self._fetch(sql + " ORDER BY seq", run_id)]

    # --- waits, timers and the cache -----------------------------------------------------------
    async def open_waits(self, run_id: str | None = None) -> list[WaitRecord]:
        sql = ("SELECT n.run_id, n.node_id, n.iteration, n.kind, n.data FROM nodes n JOIN runs r ON r.id=n.run_id "
               "WHERE n.state='waiting' AND r.status IN ('running','waiting')")
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " AND n.run_id=$1"
            params = (run_id,)
        rows = await self._fetch(sql + " ORDER BY n.updated_at", *params)
        return [WaitRecord(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {}) for r in rows]

    async def wakeable_runs(self, now: float, limit: int = 100) -> list[RunRecord]:
        rows = await self._fetch(
            "SELECT * FROM runs r WHERE r.status='waiting' AND ("
            " (r.wake_at IS NOT NULL AND r.wake_at<=$1)"
            " OR EXISTS (SELECT 1 FROM signals s WHERE s.run_id=r.id AND s.consumed_at IS NULL)"
            " OR EXISTS (SELECT 1 FROM approvals a WHERE a.run_id=r.id AND a.decision IS NOT NULL AND a.applied=0))"
            " ORDER BY r.updated_at LIMIT $2", now, limit)
        return [run_record(r) for r in rows]

    async def cache_get(self, node_id: str, key: str, version: str) -> CacheEntry | None:
        row = await self._fetchrow("SELECT value, type, created_at, run_id, node_id, iteration FROM cache "
                                   "WHERE node_id=$1 AND key=$2 AND version=$3", node_id, key, str(version))
        if row is None:
            return None
        return CacheEntry(json.loads(row[0]), row[1], row[2], row[3], row[4], row[5])

    async def usage_by_node(self, run_id: str) -> dict[Key, tuple[int, float]]:
        rows = await self._fetch("SELECT node_id, iteration, sum(coalesce(tokens_in,0)+coalesce(tokens_out,0)), "
                                 "sum(coalesce(cost_usd,0)) FROM attempts WHERE run_id=$1 GROUP BY node_id, iteration",
                                 run_id)
        return {(r[0], r[1]): (int(r[2] or 0), float(r[3] or 0.0)) for r in rows}

    # --- workers -------------------------------------------------------------------------------
    async def claim_runs(self, owner: Owner, limit: int, now: float) -> list[RunRecord]:
        """See Store.claim_runs. A read finds the candidates without locking; only when there are
        some does a transaction select them again with `FOR UPDATE SKIP LOCKED` (rows another
        worker is claiming are passed over, never waited for) and lease them."""
        if limit < 1:
            return []
        gone = [o["owner_id"] for o in await self._fetch(OWNERS_HERE_SQL, this_host())
                if claimable_owner(_owner_of(o), now)]
        params = (now - STALE_AFTER_S, this_host(), gone, limit, now)
        if not await self._fetch(CLAIMABLE_SQL, *params):
            return []

        async def write(c: Conn) -> list[asyncpg.Record]:
            ids = [r["id"] for r in await c.fetch(CLAIMABLE_SQL + " FOR UPDATE SKIP LOCKED", *params)]
            if not ids:
                return []
            return list(await c.fetch(
                "UPDATE runs SET owner_id=$1, owner_host=$2, owner_pid=$3, owner_started=$4, heartbeat_at=$5, "
                "lease=lease+1, status=CASE WHEN status IN ('queued','waiting') THEN 'running' ELSE status END, "
                "updated_at=$5 WHERE id = ANY($6::text[]) RETURNING *",
                owner.id, owner.host, owner.pid, owner.started, now, ids))

        async def retried(c: Conn) -> Any:  # the runs this very claim leased, if it went through
            return await c.fetch("SELECT * FROM runs WHERE owner_id=$1 AND heartbeat_at=$2 AND updated_at=$2",
                                 owner.id, now)

        rows = await self._call(write, retried=retried)
        return sorted((run_record(r) for r in rows), key=lambda r: r.created_at)

    async def register_worker(self, worker: WorkerRecord) -> None:
        await self._call(lambda c: c.execute(
            "INSERT INTO workers (id,host,pid,started,concurrency,started_at,heartbeat_at) VALUES ($1,$2,$3,$4,$5,$6,$7)"
            " ON CONFLICT (id) DO UPDATE SET host=excluded.host, pid=excluded.pid, started=excluded.started,"
            " concurrency=excluded.concurrency, started_at=excluded.started_at, heartbeat_at=excluded.heartbeat_at",
            worker.id, worker.host, worker.pid, worker.started, worker.concurrency, worker.started_at,
            worker.heartbeat_at))

    async def worker_heartbeat(self, worker_id: str, now: float) -> bool:
        status = await self._call(lambda c: c.execute("UPDATE workers SET heartbeat_at=$1 WHERE id=$2", now, worker_id))
        return bool(status == "UPDATE 1")

    async def unregister_worker(self, worker_id: str) -> None:
        await self._call(lambda c: c.execute("DELETE FROM workers WHERE id=$1", worker_id))

    async def workers(self) -> list[WorkerRecord]:
        async def read(c: Conn) -> list[WorkerRecord]:
            out = [WorkerRecord(r["id"], r["host"], r["pid"], r["started"], r["concurrency"], r["started_at"],
                                r["heartbeat_at"]) for r in await c.fetch("SELECT * FROM workers ORDER BY started_at")]
            held: dict[str, list[str]] = {}
            for r in await c.fetch("SELECT id, owner_id FROM runs WHERE owner_id IN (SELECT id FROM workers) "
                                   "AND status IN ('running','waiting','queued') ORDER BY created_at"):
                held.setdefault(r["owner_id"], []).append(r["id"])
            for w in out:
                w.runs = held.get(w.id, [])
            return out

        return await self._call(read, snapshot=True)


# --- the claim rule (see Store.claim_runs; the same as the SQLite store's) ----------------------
# Parameters: the stale heartbeat limit, this host, the owner ids on this host whose process is gone
# (from OWNERS_HERE_SQL + lease.claimable_owner), how many, now. A sub-workflow's run is never claimed
# by itself: its parent's Subflow step drives it.
CLAIMABLE_SQL = """
SELECT * FROM runs WHERE kind <> 'subflow' AND (
  (status = 'queued' AND owner_id IS NULL)
  OR (status IN ('running', 'waiting') AND (owner_id IS NULL
      OR (heartbeat_at < $1 AND owner_host IS DISTINCT FROM $2)
      OR owner_id = ANY($3::text[])))
) AND (status <> 'waiting'
       OR (wake_at IS NOT NULL AND wake_at <= $5)
       OR EXISTS (SELECT 1 FROM signals s WHERE s.run_id = runs.id AND s.consumed_at IS NULL)
       OR EXISTS (SELECT 1 FROM approvals a WHERE a.run_id = runs.id AND a.decision IS NOT NULL AND a.applied = 0))
ORDER BY created_at LIMIT $4"""
OWNERS_HERE_SQL = """
SELECT DISTINCT owner_id, owner_host, owner_pid, owner_started, heartbeat_at FROM runs
WHERE owner_host = $1 AND owner_id IS NOT NULL AND status IN ('running', 'waiting')"""


# --- one frame ------------------------------------------------------------------------------------
async def _commit(c: Conn, run_id: str, owner_id: str, token: int | None, frame: int, delta: Delta, now: float,
                  keyframe: dict[str, Any] | None) -> int:
    """One frame in one call (postgres_schema.COMMIT_FUNCTION): the fenced update of the run first;
    nothing is written when the lease is not this owner's (LeaseLost)."""
    _columns(delta.run)  # only run columns
    cols = {k: (str(v) if k == "status" else v) for k, v in delta.run.items() if k not in ("frame", "updated_at")}
    last = await c.fetchval(
        "SELECT commit_frame($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)",
        run_id, owner_id, token, frame, now, dumps(cols),
        dumps([list(k) for k in delta.interrupted]),
        dumps([[k[0], k[1], str(r.kind), str(r.state), r.attempts, r.error, r.data] for k, r in delta.nodes.items()]),
        dumps([[k[0], k[1], v, t, d or None] for k, (v, t, d) in delta.outputs.items()]),
        dumps([_attempt_values(a) for a in delta.attempts]),
        dumps([[a["key"][0], a["key"][1], a["message"], a["on_deny"], a.get("mode", "approve"), a.get("request") or None]
               for a in delta.approvals if not a.get("applied")]),
        dumps([list(a["key"]) for a in delta.approvals if a.get("applied")]),
        dumps([[s["key"][0] if s.get("key") else None, s["key"][1] if s.get("key") else None, s.get("error"), s["seq"]]
               for s in delta.signals]),
        dumps([[c["node_id"], c["key"], str(c["version"]), c["value"], c.get("type"), c["iteration"]]
               for c in delta.cache]),
        dumps(delta.summary()), dumps(keyframe) if keyframe is not None else None,
        dumps([[typ, k[0] if k else None, k[1] if k else None, data or None] for typ, k, data in delta.events]),
        "owner_id" in delta.run and delta.run["owner_id"] is None)  # the lease is given up: wake the workers
    if last is None:
        row = await c.fetchrow("SELECT owner_id, owner_pid, owner_host FROM runs WHERE id=$1", run_id)
        who = f"pid {row['owner_pid']} on {row['owner_host']}" if row and row["owner_id"] else "another process"
        raise LeaseLost(f"run {run_id} was taken over by {who}; this process stops")
    for new, owner in delta.new_runs:  # a ContinueAsNew successor, made in the same transaction
        await _insert_new_run(c, new, owner, now)
    return int(last)


async def _insert_new_run(c: Conn, run: NewRun, owner: Owner | None, now: float) -> None:
    """A run row, its frame 0 and keyframe, and its run_started event; a queued run wakes the workers."""
    row = _new_run_row(run, now)
    if owner is not None:
        row.update(owner_columns(owner, now), lease=1)
    started: dict[str, Any] = {"workflow": run.workflow, "input": run.input}
    if run.parent_run_id:
        started.update({"parent": run.parent_run_id, "kind": str(run.kind)})
    await _insert(c, "runs", row)
    await c.execute("INSERT INTO keyframes (run_id, frame, state) VALUES ($1, 0, $2)", run.id,
                    dumps({"v": 1, "n": {}, "r": str(run.status)}))
    await c.execute("INSERT INTO frames (run_id, frame, at, delta) VALUES ($1, 0, $2, $3)", run.id, now, '{"v":1}')
    await c.execute("INSERT INTO events (run_id, frame, at, type, data) VALUES ($1, 0, $2, 'run_started', $3)",
                    run.id, now, dumps(started))
    if owner is None:
        await _notify(c, run.id)


def _attempt_values(a: dict[str, Any]) -> list[Any]:
    """An attempt as the commit function reads it: its columns in order, then what else it recorded."""
    known = ATTEMPT_COLUMNS
    extra = {k: v for k, v in a.items() if k not in known}
    return [*(a.get(k) for k in known), extra or None]


def _fence(run_id: str, owner_id: str, token: int | None, first: int) -> tuple[str, tuple[Any, ...]]:
    """The condition of a write by a lease holder (its owner id, and its token when it has one),
    with parameters numbered from `first`."""
    if token is None:
        return f"id=${first} AND owner_id=${first + 1}", (run_id, owner_id)
    return f"id=${first} AND owner_id=${first + 1} AND lease=${first + 2}", (run_id, owner_id, token)


async def _notify(c: Conn, run_id: str) -> None:
    await c.execute("SELECT pg_notify($1, $2)", CHANNEL, run_id)


async def _insert(c: Conn, table: str, row: dict[str, Any]) -> None:
    marks = ",".join(f"${i}" for i in range(1, len(row) + 1))
    await c.execute(f"INSERT INTO {table} ({','.join(row)}) VALUES ({marks})", *row.values())


async def _version(c: Conn) -> int:
    if await c.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.schema_version") is None:
        return 0
    return int(await c.fetchval(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_version"))


async def _prefixed(c: Conn, prefix: str, limit: int) -> list[asyncpg.Record]:
    if not prefix or len(prefix) > 200:
        return []
    return list(await c.fetch("SELECT id FROM runs WHERE substr(id, 1, $1)=$2 ORDER BY created_at DESC LIMIT $3",
                              len(prefix), prefix, limit))


async def _state_at(c: Conn, run_id: str, frame: int) -> FrameState:
    """Frame N exactly: the last keyframe at or before N, then the deltas up to N."""
    kf = await c.fetchrow("SELECT frame, state FROM keyframes WHERE run_id=$1 AND frame<=$2 ORDER BY frame DESC "
                          "LIMIT 1", run_id, frame)
    start = kf[0] if kf else -1
    nodes: dict[Key, NodeRecord] = {}
    status = "running"
    if kf:
        k = json.loads(kf[1])
        nodes = {parse_key(s): NodeRecord.from_list(v) for s, v in k["n"].items()}
        status = k.get("r", status)
    for (d,) in await c.fetch("SELECT delta FROM frames WHERE run_id=$1 AND frame>$2 AND frame<=$3 ORDER BY frame",
                              run_id, start, frame):
        dd = decode_delta(json.loads(d))
        nodes.update(dd.nodes)
        status = dd.status or status
    outputs = {(r[0], r[1]): json.loads(r[2]) for r in await c.fetch(
        "SELECT node_id,iteration,value FROM outputs WHERE run_id=$1 AND frame<=$2", run_id, frame)}
    return FrameState(frame, nodes, outputs, status)


def _open_error(url: str, e: BaseException) -> SmithersError:
    """Why a database URL cannot be used, in one line that says what to do."""
    where = redact(url)
    parts = urlsplit(url)
    user = unquote(parts.username or "") or "(default user)"
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, asyncpg.InvalidPasswordError):
        return BadInput(f"PostgreSQL at {where} refused the password of user {user}: fix it in --db or "
                        "SMITHERS_DB (postgresql://USER:PASSWORD@HOST:PORT/DB)")
    if isinstance(e, asyncpg.InvalidCatalogNameError):
        return BadInput(f"PostgreSQL at {where}: {text}: create it (`createdb`) or fix the database name in --db")
    if isinstance(e, asyncpg.InvalidAuthorizationSpecificationError):
        return BadInput(f"PostgreSQL at {where} refused user {user} ({text}): fix --db or the server's pg_hba.conf")
    if isinstance(e, (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError)):
        why = "timed out" if isinstance(e, asyncio.TimeoutError) else text
        return BadInput(f"cannot reach PostgreSQL at {where} ({why}): check the host and port in --db or "
                        "SMITHERS_DB, and that the server runs")
    if isinstance(e, ValueError):
        return BadInput(f"{where} is not a usable PostgreSQL URL ({text}): write postgresql://USER:PASSWORD@HOST:PORT/DB")
    if isinstance(e, asyncpg.PostgresError):
        return BadInput(f"PostgreSQL at {where} refused the connection ({text})")
    return BadInput(f"cannot open {where} ({type(e).__name__}: {text})")
