-- Downstream pipelines fed by events (see README "Pipelines" and domain::pipelines).

-- What the base ingestion ingested: written by ENRICH in the transaction that stamps the
-- index version, so an event exists exactly when its version does. The router reads the
-- unrouted ones and enqueues each enabled pipeline's job.
CREATE TABLE events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT NOT NULL CHECK (name IN ('snippets.ingested', 'files.deleted')),
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    run_id        BIGINT REFERENCES runs (id) ON DELETE SET NULL,
    source_kind   TEXT NOT NULL,
    -- the files' language; NULL for files.deleted and for files without one
    language      TEXT,
    index_version INT NOT NULL,
    occurred_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- {"paths": [...], "commit": "..."}: the batch's files, and a git source's commit
    metadata      JSONB NOT NULL DEFAULT '{}',
    routed_at     TIMESTAMPTZ
);
CREATE INDEX events_unrouted ON events (id) WHERE routed_at IS NULL;
CREATE INDEX events_run ON events (run_id);

-- One row per (pipeline, unit of work): an event (references), an index version (history)
-- or an operator's reingest. Its job lives in the pipeline's own apalis queue.
CREATE TABLE pipeline_runs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline      TEXT NOT NULL,
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    -- what made it unique: 'event:<id>', 'version:<n>', 'reingest:<ulid>'
    key           TEXT NOT NULL,
    event_id      BIGINT REFERENCES events (id) ON DELETE SET NULL,
    index_version INT NOT NULL,
    -- the files to work on; NULL: every file of the repository
    paths         TEXT[],
    deleted       TEXT[] NOT NULL DEFAULT '{}',
    job_id        TEXT NOT NULL UNIQUE,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'success', 'failed', 'cancelled')),
    attempt       INT NOT NULL DEFAULT 0,
    max_attempts  INT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    -- when a retry is due, while one waits
    retry_at      TIMESTAMPTZ,
    error_message TEXT,
    result        JSONB,
    UNIQUE (pipeline, repository_id, key)
);
CREATE INDEX pipeline_runs_open ON pipeline_runs (pipeline, status)
    WHERE status IN ('pending', 'running');
CREATE INDEX pipeline_runs_repository ON pipeline_runs (repository_id, pipeline, id);
CREATE INDEX pipeline_runs_event ON pipeline_runs (event_id);

-- Per repository: pipelines switched on or off against the configuration's flags
-- ({"history": false}).
ALTER TABLE repositories ADD COLUMN pipelines JSONB NOT NULL DEFAULT '{}';

-- The references pipeline: definitions and references of each file.
CREATE TABLE symbol_defs (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    name          TEXT NOT NULL,
    qualified     TEXT,
    kind          TEXT NOT NULL,
    line          INT NOT NULL,
    end_line      INT NOT NULL
);
CREATE INDEX symbol_defs_name ON symbol_defs (repository_id, name);
CREATE INDEX symbol_defs_path ON symbol_defs (repository_id, path);

CREATE TABLE symbol_refs (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('call', 'import', 'type')),
    line          INT NOT NULL,
    col           INT NOT NULL,
    from_name     TEXT,
    from_line     INT,
    qualifier     TEXT
);
CREATE INDEX symbol_refs_name ON symbol_refs (repository_id, name);
CREATE INDEX symbol_refs_path ON symbol_refs (repository_id, path, line);

-- The history pipeline: a git source's commits, the files each touched, and which commit
-- last changed each range of lines of the indexed files (git blame).
CREATE TABLE commits (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    hash          TEXT NOT NULL,
    author        TEXT NOT NULL,
    committed_at  TIMESTAMPTZ NOT NULL,
    message       TEXT NOT NULL,
    -- The order git's log gave: a later commit stored later, or listed before another
    -- (newer) in one log, is higher. Breaks ties of committed_at (second precision).
    seq           BIGINT NOT NULL,
    search        TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', message)) STORED,
    PRIMARY KEY (repository_id, hash)
);
CREATE INDEX commits_search ON commits USING gin (search);
CREATE INDEX commits_time ON commits (repository_id, committed_at DESC);

CREATE TABLE commit_files (
    repository_id BIGINT NOT NULL,
    hash          TEXT NOT NULL,
    path          TEXT NOT NULL,
    -- git's status letter: A, M, D, R, C, T
    change        TEXT NOT NULL,
    PRIMARY KEY (repository_id, hash, path),
    FOREIGN KEY (repository_id, hash) REFERENCES commits (repository_id, hash) ON DELETE CASCADE
);
CREATE INDEX commit_files_path ON commit_files (repository_id, path);

CREATE TABLE blame_ranges (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    start_line    INT NOT NULL,
    end_line      INT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX blame_ranges_path ON blame_ranges (repository_id, path, start_line);
