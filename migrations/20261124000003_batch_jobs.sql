-- Batch reindex jobs (job type reindex.batch, apalis queue trawl::reindex_batch): what
-- happened to each item of a batch. A retried batch skips the items already here as done
-- or skipped, so that it never enqueues a repository's run twice.
CREATE TABLE batch_items (
    job_id   TEXT NOT NULL,
    -- repository:<id> or snippet:<id>
    item     TEXT NOT NULL,
    status   TEXT NOT NULL CHECK (status IN ('done', 'skipped', 'failed')),
    message  TEXT,
    run_id   BIGINT REFERENCES runs (id) ON DELETE SET NULL,
    at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, item)
);
