-- A worker takes stage jobs in one statement: it claims up to as many jobs as it has free
-- slots, highest priority first (then oldest), exactly as apalis' own fetch would one by
-- one, and begins each (trawl_begin_stage) in the same transaction. Before, taking a job
-- cost a transaction of its own (BEGIN, apalis.get_jobs, COMMIT) and beginning it another
-- round trip; a worker with four free slots made four of each.
--
-- The claimed jobs come back in priority order with what trawl_begin_stage decided for
-- each ('proceed', 'wait', 'nothing' or 'missing', see there).
CREATE FUNCTION trawl_claim_stages(p_worker TEXT, p_queue TEXT, p_limit INT,
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
            RETURNING u.id, u.job, u.priority, u.run_at)
        SELECT * FROM claimed ORDER BY claimed.priority DESC, claimed.run_at ASC
    LOOP
        SELECT * INTO b FROM trawl_begin_stage(j.id, p_parked_until);
        job_id := j.id;
        payload := j.job;
        job_priority := j.priority;
        job_run_at := j.run_at;
        outcome := b.outcome;
        attempt := b.attempt;
        reason := b.reason;
        run := b.run;
        RETURN NEXT;
    END LOOP;
END
$$;

-- apalis 1.0 indexes jobs.id twice (the primary key and unique_job_id); every claim and
-- completion moves a job between fetch-index states, so each index is one more write.
DROP INDEX IF EXISTS apalis.unique_job_id;
