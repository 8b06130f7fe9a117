-- The pipeline's own records: files seen by SYNC, runs and their five stage runs. The
-- stage jobs themselves live in apalis.jobs; stage_runs.job_id links to them.

-- Every file of a repository SYNC has seen, with the hash it had.
CREATE TABLE files (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    -- relative to the repository root, '/'-separated
    path          TEXT NOT NULL,
    size          BIGINT NOT NULL,
    -- nanoseconds since the epoch: with size, the cheap pre-check before hashing
    mtime_ns      BIGINT NOT NULL,
    -- hex sha-256 of the content; NULL when the file is skipped
    content_hash  TEXT,
    language      TEXT,
    -- why the file is not indexed (binary, too large, unreadable); NULL when it is
    skip_reason   TEXT,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, path)
);

-- One indexing pass of one repository.
CREATE TABLE runs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    -- who asked: a user (cli, api, mcp) or the scheduler
    trigger       TEXT NOT NULL CHECK (trigger IN ('user', 'background')),
    origin        TEXT NOT NULL DEFAULT 'cli',
    -- the base of the stage priorities: 100 high, 50 normal (user), 10 low (background)
    priority_base INT NOT NULL,
    -- what to index: {"kind": "project"} and, later, directories, files, embeddings only
    scope         JSONB NOT NULL DEFAULT '{"kind": "project"}',
    full_reindex  BOOLEAN NOT NULL DEFAULT false,
    status        TEXT NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- what the run found and did: files added/modified/deleted, up_to_date, counts
    result        JSONB NOT NULL DEFAULT '{}',
    error         TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ
);
CREATE INDEX runs_repository ON runs (repository_id, created_at DESC);
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('queued', 'running');
-- A background sync never piles up behind itself: one queued background run per repository.
CREATE UNIQUE INDEX runs_one_queued_background ON runs (repository_id)
    WHERE trigger = 'background' AND status = 'queued';

-- The five stages of a run, each its own job in apalis.jobs.
CREATE TABLE stage_runs (
    run_id        BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage         TEXT NOT NULL
                  CHECK (stage IN ('sync', 'extract', 'bm25_index', 'code_embeddings', 'enrich')),
    -- 0 (sync) .. 4 (enrich): a stage starts only after ordinal - 1 succeeded
    ordinal       SMALLINT NOT NULL CHECK (ordinal BETWEEN 0 AND 4),
    -- apalis.jobs.id of this stage's job
    job_id        TEXT NOT NULL UNIQUE,
    status        TEXT NOT NULL
                  CHECK (status IN ('queued', 'waiting', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')),
    attempts      INT NOT NULL DEFAULT 0,
    max_attempts  INT NOT NULL,
    items_total   INT NOT NULL DEFAULT 0,
    items_done    INT NOT NULL DEFAULT 0,
    items_failed  INT NOT NULL DEFAULT 0,
    current_item  TEXT,
    last_error    TEXT,
    queued_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    PRIMARY KEY (run_id, stage),
    UNIQUE (run_id, ordinal)
);

-- The operator's view of the queue: each stage job with the run it belongs to.
CREATE VIEW trawl_tasks AS
SELECT j.id           AS job_id,
       sr.stage,
       sr.status      AS stage_status,
       j.status       AS job_status,
       j.priority,
       CASE WHEN j.priority >= 100 THEN 'high'
            WHEN j.priority >= 50 THEN 'user'
            ELSE 'background' END AS priority_class,
       j.attempts,
       j.max_attempts,
       j.run_at,
       j.lock_by,
       j.lock_at,
       j.done_at,
       j.last_result,
       sr.last_error,
       sr.items_total,
       sr.items_done,
       sr.items_failed,
       r.id           AS run_id,
       r.repository_id,
       r.trigger,
       r.status       AS run_status
FROM apalis.jobs j
JOIN stage_runs sr ON sr.job_id = j.id
JOIN runs r ON r.id = sr.run_id;

-- Every file a run touches: what changed, and what became of it.
CREATE TABLE run_items (
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    change      TEXT NOT NULL CHECK (change IN ('added', 'modified', 'deleted', 'unchanged')),
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'skipped')),
    -- the error of a failed item, the reason of a skipped one
    message     TEXT,
    duration_ms INT,
    PRIMARY KEY (run_id, path)
);

-- Stage names in run order, for sorting.
CREATE FUNCTION stage_ordinal_of(stage TEXT) RETURNS INT LANGUAGE sql IMMUTABLE AS $$
    SELECT array_position(ARRAY['sync', 'extract', 'bm25_index', 'code_embeddings', 'enrich'], stage)
$$;
