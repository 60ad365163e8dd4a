"""Schema and migrations of the PostgreSQL store: the same versions as the SQLite store's
(`schema.py`), one entry here per entry there. Everything lives in its own PostgreSQL schema
(`smithers`), so a database shared with other applications is fine. The version is the one row
of `smithers.schema_version`; migrations run in one transaction under an advisory lock, so
workers starting together on a fresh database migrate it once. JSON columns are jsonb."""

SCHEMA = "smithers"
CHANNEL = "smithers"  # LISTEN/NOTIFY: the payload is a run id
MIGRATION_LOCK = 0x5317_4E25  # pg_advisory_xact_lock key while migrating

BOOTSTRAP = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (version integer NOT NULL);
"""

# One frame, written by one call (postgres.py's commit): the fenced update of the run, then the rows
# of the transition, in the order the SQLite store writes them. Returns the last event's sequence
# number (0 without events), or NULL when the lease is not the caller's (nothing is written).
# p_run_cols holds the run columns the transition changes; p_nodes, p_outputs, p_attempts,
# p_requests, p_applied, p_signals, p_cache, p_interrupted and p_events are JSON arrays of arrays.
COMMIT_FUNCTION = """
CREATE FUNCTION commit_frame(p_run text, p_owner text, p_token integer, p_frame integer, p_now double precision,
                             p_run_cols jsonb, p_interrupted jsonb, p_nodes jsonb, p_outputs jsonb,
                             p_attempts jsonb, p_requests jsonb, p_applied jsonb, p_signals jsonb, p_cache jsonb,
                             p_delta jsonb, p_keyframe jsonb, p_events jsonb, p_notify boolean)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    c jsonb := p_run_cols;
    last_seq bigint := 0;
BEGIN
    UPDATE runs SET frame = p_frame, updated_at = p_now,
        status = CASE WHEN c ? 'status' THEN c->>'status' ELSE status END,
        error = CASE WHEN c ? 'error' THEN c->>'error' ELSE error END,
        owner_id = CASE WHEN c ? 'owner_id' THEN c->>'owner_id' ELSE owner_id END,
        owner_host = CASE WHEN c ? 'owner_host' THEN c->>'owner_host' ELSE owner_host END,
        owner_pid = CASE WHEN c ? 'owner_pid' THEN (c->>'owner_pid')::integer ELSE owner_pid END,
        owner_started = CASE WHEN c ? 'owner_started' THEN (c->>'owner_started')::double precision
                        ELSE owner_started END,
        heartbeat_at = CASE WHEN c ? 'heartbeat_at' THEN (c->>'heartbeat_at')::double precision ELSE heartbeat_at END,
        cancel_requested = CASE WHEN c ? 'cancel_requested' THEN (c->>'cancel_requested')::integer
                           ELSE cancel_requested END,
        finished_at = CASE WHEN c ? 'finished_at' THEN (c->>'finished_at')::double precision ELSE finished_at END,
        source_hash = CASE WHEN c ? 'source_hash' THEN c->>'source_hash' ELSE source_hash END,
        meta = CASE WHEN c ? 'meta' THEN NULLIF(c->'meta', 'null') ELSE meta END,
        result = CASE WHEN c ? 'result' THEN NULLIF(c->'result', 'null') ELSE result END,
        wake_at = CASE WHEN c ? 'wake_at' THEN (c->>'wake_at')::double precision ELSE wake_at END,
        successor_run_id = CASE WHEN c ? 'successor_run_id' THEN c->>'successor_run_id' ELSE successor_run_id END
    WHERE id = p_run AND owner_id = p_owner AND (p_token IS NULL OR lease = p_token);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- before the node rows change: an interrupted attempt started when its node did
    INSERT INTO attempts (run_id, node_id, iteration, attempt, started_at, finished_at, outcome, error)
        SELECT n.run_id, n.node_id, n.iteration, n.attempts, n.updated_at, p_now, 'interrupted', 'interrupted'
        FROM jsonb_array_elements(p_interrupted) k
        JOIN nodes n ON n.run_id = p_run AND n.node_id = k->>0 AND n.iteration = (k->>1)::integer
        ON CONFLICT DO NOTHING;
    INSERT INTO nodes (run_id, node_id, iteration, kind, state, attempts, error, data, frame, updated_at)
        SELECT p_run, e->>0, (e->>1)::integer, e->>2, e->>3, (e->>4)::integer, e->>5, NULLIF(e->6, 'null'),
               p_frame, p_now
        FROM jsonb_array_elements(p_nodes) e
        ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET kind = excluded.kind, state = excluded.state,
            attempts = excluded.attempts, error = excluded.error, data = excluded.data, frame = excluded.frame,
            updated_at = excluded.updated_at;
    INSERT INTO outputs (run_id, node_id, iteration, value, type, frame, deps)
        SELECT p_run, e->>0, (e->>1)::integer, e->2, e->>3, p_frame, NULLIF(e->4, 'null')
        FROM jsonb_array_elements(p_outputs) e
        ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET value = excluded.value, type = excluded.type,
            frame = excluded.frame, deps = excluded.deps;
    INSERT INTO attempts (run_id, node_id, iteration, attempt, started_at, finished_at, outcome, error, agent, model,
                          tokens_in, tokens_out, cost_usd, commit_sha, structured_mode, data)
        SELECT e->>0, e->>1, (e->>2)::integer, (e->>3)::integer, (e->>4)::double precision,
               (e->>5)::double precision, e->>6, e->>7, e->>8, e->>9, (e->>10)::bigint, (e->>11)::bigint,
               (e->>12)::double precision, e->>13, e->>14, NULLIF(e->15, 'null')
        FROM jsonb_array_elements(p_attempts) e
        ON CONFLICT (run_id, node_id, iteration, attempt) DO UPDATE SET started_at = excluded.started_at,
            finished_at = excluded.finished_at, outcome = excluded.outcome, error = excluded.error,
            agent = excluded.agent, model = excluded.model, tokens_in = excluded.tokens_in,
            tokens_out = excluded.tokens_out, cost_usd = excluded.cost_usd, commit_sha = excluded.commit_sha,
            structured_mode = excluded.structured_mode, data = excluded.data;
    -- a gate asked again (a failed run resumed after a denial) opens a fresh request
    INSERT INTO approvals (run_id, node_id, iteration, message, on_deny, requested_at, frame, mode, request)
        SELECT p_run, e->>0, (e->>1)::integer, e->>2, e->>3, p_now, p_frame, e->>4, NULLIF(e->5, 'null')
        FROM jsonb_array_elements(p_requests) e
        ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET message = excluded.message,
            on_deny = excluded.on_deny, requested_at = excluded.requested_at, frame = excluded.frame,
            mode = excluded.mode, request = excluded.request, decision = NULL, decided_by = NULL, note = NULL,
            decided_at = NULL, answer = NULL, applied = 0
        WHERE approvals.applied = 1;
    UPDATE approvals a SET applied = 1 FROM jsonb_array_elements(p_applied) e
        WHERE a.run_id = p_run AND a.node_id = e->>0 AND a.iteration = (e->>1)::integer;
    -- taken once: a signal another step took meanwhile is not taken again
    UPDATE signals s SET node_id = e->>0, iteration = (e->>1)::integer, consumed_at = p_now, frame = p_frame,
            error = e->>2
        FROM jsonb_array_elements(p_signals) e
        WHERE s.seq = (e->>3)::bigint AND s.run_id = p_run AND s.consumed_at IS NULL;
    INSERT INTO cache (node_id, key, version, value, type, created_at, run_id, iteration)
        SELECT e->>0, e->>1, e->>2, e->3, e->>4, p_now, p_run, (e->>5)::integer
        FROM jsonb_array_elements(p_cache) e
        ON CONFLICT (node_id, key, version) DO UPDATE SET value = excluded.value, type = excluded.type,
            created_at = excluded.created_at, run_id = excluded.run_id, iteration = excluded.iteration;
    INSERT INTO frames (run_id, frame, at, delta) VALUES (p_run, p_frame, p_now, p_delta);
    IF p_keyframe IS NOT NULL THEN
        INSERT INTO keyframes (run_id, frame, state) VALUES (p_run, p_frame, p_keyframe)
            ON CONFLICT (run_id, frame) DO UPDATE SET state = excluded.state;
    END IF;
    IF p_notify THEN
        PERFORM pg_notify('smithers', p_run);
    END IF;
    WITH ins AS (
        INSERT INTO events (run_id, frame, at, type, node_id, iteration, data)
            SELECT p_run, p_frame, p_now, e->>0, e->>1, (e->>2)::integer, NULLIF(e->3, 'null')
            FROM jsonb_array_elements(p_events) WITH ORDINALITY AS t(e, o) ORDER BY o
            RETURNING seq)
    SELECT coalesce(max(seq), 0) INTO last_seq FROM ins;
    RETURN last_seq;
END
$fn$;
"""

PG_MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE runs (
        id text PRIMARY KEY,
        workflow text NOT NULL,
        target text NOT NULL,
        source_path text,
        source_hash text,
        input jsonb NOT NULL,
        status text NOT NULL,
        error text,
        workdir text NOT NULL,
        kind text NOT NULL DEFAULT 'run',
        parent_run_id text,
        parent_frame integer,
        successor_run_id text,
        owner_id text, owner_host text, owner_pid integer, owner_started double precision,
        heartbeat_at double precision,
        cancel_requested integer NOT NULL DEFAULT 0,
        frame integer NOT NULL DEFAULT 0,
        created_at double precision NOT NULL, updated_at double precision NOT NULL,
        finished_at double precision,
        meta jsonb
    );
    CREATE INDEX runs_status ON runs(status, created_at);
    CREATE INDEX runs_parent ON runs(parent_run_id);

    CREATE TABLE nodes (
        run_id text NOT NULL, node_id text NOT NULL, iteration integer NOT NULL,
        kind text NOT NULL, state text NOT NULL, attempts integer NOT NULL DEFAULT 0,
        error text, data jsonb, frame integer NOT NULL, updated_at double precision NOT NULL,
        PRIMARY KEY (run_id, node_id, iteration)
    );

    CREATE TABLE outputs (
        run_id text NOT NULL, node_id text NOT NULL, iteration integer NOT NULL,
        value jsonb NOT NULL, type text, frame integer NOT NULL, deps jsonb,
        PRIMARY KEY (run_id, node_id, iteration)
    );

    CREATE TABLE attempts (
        run_id text NOT NULL, node_id text NOT NULL, iteration integer NOT NULL, attempt integer NOT NULL,
        started_at double precision NOT NULL, finished_at double precision, outcome text, error text,
        agent text, model text, tokens_in bigint, tokens_out bigint, cost_usd double precision,
        commit_sha text, structured_mode text,
        PRIMARY KEY (run_id, node_id, iteration, attempt)
    );

    CREATE TABLE frames (
        run_id text NOT NULL, frame integer NOT NULL, at double precision NOT NULL, delta jsonb NOT NULL,
        PRIMARY KEY (run_id, frame)
    );

    CREATE TABLE keyframes (
        run_id text NOT NULL, frame integer NOT NULL, state jsonb NOT NULL,
        PRIMARY KEY (run_id, frame)
    );

    CREATE TABLE events (
        seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL, frame integer NOT NULL, at double precision NOT NULL, type text NOT NULL,
        node_id text, iteration integer, data jsonb
    );
    CREATE INDEX events_run ON events(run_id, seq);

    CREATE TABLE approvals (
        run_id text NOT NULL, node_id text NOT NULL, iteration integer NOT NULL,
        message text NOT NULL, on_deny text NOT NULL, requested_at double precision NOT NULL,
        frame integer NOT NULL, decision text, decided_by text, note text, decided_at double precision,
        applied integer NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, node_id, iteration)
    );
    CREATE INDEX approvals_open ON approvals(decision, run_id);
    """,
    # v2
    """
    ALTER TABLE attempts ADD COLUMN data jsonb;
    """,
    # v3: the whole language (see schema.py): signals, timers, human tasks and select/rank gates,
    # sub-workflows, ContinueAsNew, the task cache
    """
    ALTER TABLE runs ADD COLUMN result jsonb;
    ALTER TABLE runs ADD COLUMN wake_at double precision;
    CREATE INDEX runs_wake ON runs(wake_at) WHERE wake_at IS NOT NULL;

    ALTER TABLE approvals ADD COLUMN mode text NOT NULL DEFAULT 'approve';
    ALTER TABLE approvals ADD COLUMN request jsonb;
    ALTER TABLE approvals ADD COLUMN answer jsonb;

    CREATE TABLE signals (
        seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL, name text NOT NULL, payload jsonb NOT NULL,
        sent_at double precision NOT NULL, sent_by text,
        node_id text, iteration integer,
        consumed_at double precision, frame integer, error text
    );
    CREATE INDEX signals_open ON signals(run_id, consumed_at, seq);

    CREATE TABLE cache (
        node_id text NOT NULL, key text NOT NULL, version text NOT NULL,
        value jsonb NOT NULL, type text, created_at double precision NOT NULL,
        run_id text NOT NULL, iteration integer NOT NULL,
        PRIMARY KEY (node_id, key, version)
    );
    """,
    # v4: workers (see schema.py); and here, one frame's writes as one function call (one round trip)
    """
    ALTER TABLE runs ADD COLUMN lease integer NOT NULL DEFAULT 0;
    CREATE INDEX runs_owner ON runs(owner_host, status);
    CREATE TABLE workers (
        id text PRIMARY KEY,
        host text NOT NULL, pid integer NOT NULL, started double precision,
        concurrency integer NOT NULL, started_at double precision NOT NULL,
        heartbeat_at double precision NOT NULL
    );
    """ + COMMIT_FUNCTION,
]

PG_SCHEMA_VERSION = len(PG_MIGRATIONS)
