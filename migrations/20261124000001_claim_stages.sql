-- A worker takes stage jobs in one statement: it claims up to as many jobs as it has free
-- slots, highest priority first (then oldest), exactly as apalis' own fetch would one by
-- one, and begins each (trawl_begin_stage) in the same transaction. Before, taking a job
-- cost a transaction of its own (BEGIN, apalis.get_jobs, COMMIT) and beginning it another
-- round trip; a worker with four free slots made four of each.
--
-- The claimed jobs come back in priority order with what beginning them decided for each
-- ('proceed', 'wait', 'nothing' or 'missing', as trawl_begin_stage says).
CREATE OR REPLACE FUNCTION trawl_claim_stages(p_worker TEXT, p_queue TEXT, p_limit INT,
                                              p_parked_until TIMESTAMPTZ)
RETURNS TABLE (job_id TEXT, payload BYTEA, job_priority INT, job_run_at TIMESTAMPTZ,
               outcome TEXT, attempt INT, reason TEXT, run JSONB)
LANGUAGE plpgsql AS $$
DECLARE
    j RECORD;
    b RECORD;
BEGIN
    FOR j IN
        WITH next AS (
            SELECT c.id FROM apalis.jobs c
             WHERE (c.status = 'Pending' OR (c.status = 'Failed' AND c.attempts < c.max_attempts))
               AND c.run_at < now() AND c.job_type = p_queue
             ORDER BY c.priority DESC, c.run_at ASC
             LIMIT p_limit
             FOR UPDATE SKIP LOCKED),
        claimed AS (
            UPDATE apalis.jobs u SET status = 'Queued', lock_by = p_worker, lock_at = now()
              FROM next WHERE u.id = next.id
            RETURNING u.id, u.job, u.priority, u.run_at),
        -- The common case for all of them at once, as trawl_begin_stage's first statement:
        -- an open stage whose predecessor succeeded (or that has none), of an open run.
        begun AS (
            UPDATE stage_runs s SET status = 'running', attempts = s.attempts + 1,
                   started_at = COALESCE(s.started_at, now()), current_item = NULL
              FROM claimed c
             WHERE s.job_id = c.id AND s.status IN ('queued', 'waiting', 'running')
               AND (s.ordinal = 0 OR EXISTS (
                    SELECT 1 FROM stage_runs p
                     WHERE p.run_id = s.run_id AND p.ordinal = s.ordinal - 1
                       AND p.status = 'succeeded'))
               AND EXISTS (SELECT 1 FROM runs x
                            WHERE x.id = s.run_id AND x.status IN ('queued', 'running'))
            RETURNING s.job_id, s.run_id, s.attempts),
        started AS (
            UPDATE runs r SET status = 'running', started_at = COALESCE(r.started_at, now())
              FROM begun g WHERE r.id = g.run_id AND r.status = 'queued'
            RETURNING r.*)
        SELECT c.id, c.job, c.priority, c.run_at, g.attempts AS begun_attempt,
               COALESCE((SELECT to_jsonb(st) FROM started st WHERE st.id = g.run_id),
                        (SELECT to_jsonb(x) FROM runs x WHERE x.id = g.run_id)) AS begun_run
          FROM claimed c LEFT JOIN begun g ON g.job_id = c.id
         ORDER BY c.priority DESC, c.run_at ASC
    LOOP
        job_id := j.id;
        payload := j.job;
        job_priority := j.priority;
        job_run_at := j.run_at;
        IF j.begun_attempt IS NOT NULL THEN
            outcome := 'proceed';
            attempt := j.begun_attempt;
            reason := NULL;
            run := j.begun_run;
        ELSE
            -- Waiting, over, or unknown: trawl_begin_stage says which and acts on it.
            SELECT * INTO b FROM trawl_begin_stage(j.id, p_parked_until);
            outcome := b.outcome;
            attempt := b.attempt;
            reason := b.reason;
            run := b.run;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- apalis 1.0 indexes jobs.id twice (the primary key and unique_job_id); every claim and
-- completion moves a job between fetch-index states, so each index is one more write.
DROP INDEX IF EXISTS apalis.unique_job_id;
