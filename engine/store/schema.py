"""Schema and migrations. The version lives in PRAGMA user_version; each migration is applied
once, in order, inside one transaction. A database from a newer schema is refused."""

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
]

SCHEMA_VERSION = len(MIGRATIONS)
