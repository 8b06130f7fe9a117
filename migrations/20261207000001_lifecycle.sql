-- The lifecycle's functions move to src/store/lifecycle.sql, which the store re-applies at
-- start-up whenever its checksum changes (recorded here), instead of being redefined by
-- later migrations.
CREATE TABLE trawl_sql_files (
    name       TEXT PRIMARY KEY,
    -- hex sha-256 of the file as applied
    sha256     TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A run's priority class, stored as it was asked for: recomputing it from the stage
-- priorities labelled a low-class SYNC (priority 50) as user work.
ALTER TABLE runs ADD COLUMN priority_class TEXT NOT NULL DEFAULT 'normal'
    CHECK (priority_class IN ('high', 'normal', 'low'));
UPDATE runs SET priority_class = CASE WHEN priority_base >= 100 THEN 'high'
                                      WHEN priority_base >= 50 THEN 'normal'
                                      ELSE 'low' END;

CREATE OR REPLACE VIEW trawl_tasks AS
SELECT j.id           AS job_id,
       sr.stage,
       sr.status      AS stage_status,
       j.status       AS job_status,
       j.priority,
       r.priority_class,
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
