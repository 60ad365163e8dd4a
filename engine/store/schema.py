"""Schema and migrations of the SQLite store. The version lives in PRAGMA user_version; each
migration is applied once, in order, inside one transaction. A database from a newer schema is
refused. The PostgreSQL store keeps the same versions in `postgres_schema.py` (one entry there
per entry here: add both)."""

MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        target TEXT NOT NULL,            -- how to load it again: module:NAME or file:PATH:NAME
        source_path TEXT,
        source_hash TEXT,
        input TEXT NOT NULL,             -- JSON
        status TEXT NOT NULL,
        error TEXT,
        workdir TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'run', -- run | fork | rewind | replay
        parent_run_id TEXT,
        parent_frame INTEGER,
        successor_run_id TEXT,
        owner_id TEXT, owner_host TEXT, owner_pid INTEGER, owner_started REAL, heartbeat_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        frame INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL,
        meta TEXT                         -- JSON: settings of the run (concurrency, reset nodes...)
    );
    CREATE INDEX runs_status ON runs(status, created_at);
    CREATE INDEX runs_parent ON runs(parent_run_id);

    CREATE TABLE nodes (
        run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL,
        kind TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT, data TEXT, frame INTEGER NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (run_id, node_id, iteration)
    ) WITHOUT ROWID;

    CREATE TABLE outputs (
        run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL,
        value TEXT NOT NULL, type TEXT, frame INTEGER NOT NULL,
        deps TEXT,                        -- JSON: fingerprint, input read?, outputs read (for forks)
        PRIMARY KEY (run_id, node_id, iteration)
    );

    CREATE TABLE attempts (
        run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL, attempt INTEGER NOT NULL,
        started_at REAL NOT NULL, finished_at REAL, outcome TEXT, error TEXT,
        agent TEXT, model TEXT, tokens_in INTEGER, tokens_out INTEGER, cost_usd REAL,
        commit_sha TEXT, structured_mode TEXT,
        PRIMARY KEY (run_id, node_id, iteration, attempt)
    ) WITHOUT ROWID;

    CREATE TABLE frames (
        run_id TEXT NOT NULL, frame INTEGER NOT NULL, at REAL NOT NULL, delta TEXT NOT NULL,
        PRIMARY KEY (run_id, frame)
    ) WITHOUT ROWID;

    CREATE TABLE keyframes (
        run_id TEXT NOT NULL, frame INTEGER NOT NULL, state TEXT NOT NULL,
        PRIMARY KEY (run_id, frame)
    ) WITHOUT ROWID;

    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL, frame INTEGER NOT NULL, at REAL NOT NULL, type TEXT NOT NULL,
        node_id TEXT, iteration INTEGER, data TEXT
    );
    CREATE INDEX events_run ON events(run_id, seq);

    CREATE TABLE approvals (
        run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL,
        message TEXT NOT NULL, on_deny TEXT NOT NULL, requested_at REAL NOT NULL, frame INTEGER NOT NULL,
        decision TEXT, decided_by TEXT, note TEXT, decided_at REAL, applied INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, node_id, iteration)
    ) WITHOUT ROWID;
    CREATE INDEX approvals_open ON approvals(decision, run_id);
    """,
    # v2: what else a step runner records with an attempt (an agent CLI's session id, cache hits...)
    """
    ALTER TABLE attempts ADD COLUMN data TEXT;
    """,
    # v3: the whole language: signals, timers, human tasks and select/rank gates, sub-workflows,
    # ContinueAsNew, the task cache
    """
    ALTER TABLE runs ADD COLUMN result TEXT;          -- JSON: what the run produced (a sub-workflow's output)
    ALTER TABLE runs ADD COLUMN wake_at REAL;         -- a waiting run's next timer or timeout (epoch seconds)
    CREATE INDEX runs_wake ON runs(wake_at) WHERE wake_at IS NOT NULL;

    ALTER TABLE approvals ADD COLUMN mode TEXT NOT NULL DEFAULT 'approve';  -- approve | select | rank | human
    ALTER TABLE approvals ADD COLUMN request TEXT;    -- JSON: options, who may decide, the answer's schema, due
    ALTER TABLE approvals ADD COLUMN answer TEXT;     -- JSON: the choice, the ranking, or a human task's answer

    CREATE TABLE signals (
        seq INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL, name TEXT NOT NULL, payload TEXT NOT NULL,
        sent_at REAL NOT NULL, sent_by TEXT,
        node_id TEXT, iteration INTEGER,              -- the Signal step that took it (NULL: kept for later)
        consumed_at REAL, frame INTEGER, error TEXT    -- error: refused when taken (did not fit the model)
    );
    CREATE INDEX signals_open ON signals(run_id, consumed_at, seq);

    CREATE TABLE cache (
        node_id TEXT NOT NULL, key TEXT NOT NULL, version TEXT NOT NULL,
        value TEXT NOT NULL, type TEXT, created_at REAL NOT NULL,
        run_id TEXT NOT NULL, iteration INTEGER NOT NULL,  -- where the output was made
        PRIMARY KEY (node_id, key, version)
    ) WITHOUT ROWID;
    """,
    # v4: workers. A lease carries a fencing token (bumped at every take-over); the worker registry.
    """
    ALTER TABLE runs ADD COLUMN lease INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX runs_owner ON runs(owner_host, status);
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,              -- also the owner id of every run it holds
        host TEXT NOT NULL, pid INTEGER NOT NULL, started REAL,
        concurrency INTEGER NOT NULL, started_at REAL NOT NULL, heartbeat_at REAL NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
