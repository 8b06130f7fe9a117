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

-- Pausing a run. A paused run starts no stage and no batch: its waiting or queued stage
-- job is parked, and a stage at work stops after its current batch (the worker parks it
-- again, giving back the attempt). Resuming releases the first open stage; the stages are
-- resumable, so nothing finished is done again.
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled'));
DROP INDEX runs_unfinished;
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('queued', 'running', 'paused');

-- trawl_begin_stage as before, and a stage of a paused run is parked (no attempt spent).
CREATE OR REPLACE FUNCTION trawl_begin_stage(p_job_id TEXT, p_parked_until TIMESTAMPTZ)
RETURNS TABLE (outcome TEXT, attempt INT, reason TEXT, run JSONB)
LANGUAGE plpgsql AS $$
DECLARE
    sr stage_runs;
    r runs;
    prev TEXT;
BEGIN
    UPDATE stage_runs s SET status = 'running', attempts = s.attempts + 1,
           started_at = COALESCE(s.started_at, now()), current_item = NULL
     WHERE s.job_id = p_job_id AND s.status IN ('queued', 'waiting', 'running')
       AND (s.ordinal = 0 OR EXISTS (
            SELECT 1 FROM stage_runs p
             WHERE p.run_id = s.run_id AND p.ordinal = s.ordinal - 1 AND p.status = 'succeeded'))
       AND EXISTS (SELECT 1 FROM runs x WHERE x.id = s.run_id AND x.status IN ('queued', 'running'))
    RETURNING * INTO sr;
    IF FOUND THEN
        UPDATE runs SET status = 'running', started_at = COALESCE(started_at, now())
         WHERE id = sr.run_id AND status = 'queued' RETURNING * INTO r;
        IF NOT FOUND THEN
            SELECT * INTO r FROM runs WHERE id = sr.run_id;
        END IF;
        RETURN QUERY SELECT 'proceed'::text, sr.attempts, NULL::text, to_jsonb(r);
        RETURN;
    END IF;

    SELECT * INTO sr FROM stage_runs s WHERE s.job_id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, 0, 'no stage run has this job'::text, NULL::jsonb;
        RETURN;
    END IF;
    -- Shared-locked: a resume (which locks the run) waits for this decision and then finds
    -- the stage parked, instead of committing in between and leaving it parked for good.
    SELECT * INTO r FROM runs WHERE id = sr.run_id FOR SHARE;
    IF r.status IN ('succeeded', 'failed', 'cancelled')
       OR sr.status IN ('succeeded', 'failed', 'cancelled', 'skipped') THEN
        reason := format('run %s is %s, stage %s is %s', r.id, r.status, sr.stage, sr.status);
        UPDATE apalis.jobs SET status = 'Done', last_result = jsonb_build_object('Ok', reason),
               done_at = now(), lock_by = NULL, lock_at = NULL
         WHERE id = p_job_id;
        RETURN QUERY SELECT 'nothing'::text, 0, reason, to_jsonb(r);
        RETURN;
    END IF;
    SELECT p.status INTO prev FROM stage_runs p
     WHERE p.run_id = sr.run_id AND p.ordinal = sr.ordinal - 1;
    IF prev = 'succeeded' AND r.status <> 'paused' THEN
        UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL,
               done_at = NULL, run_at = now()
         WHERE id = p_job_id;
        RETURN QUERY SELECT 'wait'::text, 0, NULL::text, to_jsonb(r);
        RETURN;
    END IF;
    UPDATE apalis.jobs SET status = 'Waiting', lock_by = NULL, lock_at = NULL,
           done_at = NULL, run_at = p_parked_until
     WHERE id = p_job_id;
    UPDATE stage_runs s SET status = 'waiting' WHERE s.job_id = p_job_id;
    RETURN QUERY SELECT 'wait'::text, 0, NULL::text, to_jsonb(r);
END
$$;

-- A run that ends failed or cancelled after SYNC recorded its changes, but before the
-- keyword index took them in, leaves files whose recorded hash is newer than what the
-- index holds. Their stat is forgotten, so the next SYNC reads and hashes them again and
-- finds them changed: the index heals on the next run. (Vectors and summaries heal by
-- themselves: those stages take whatever lacks one.)
CREATE FUNCTION trawl_forget_unindexed_files() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM stage_runs s
                    WHERE s.run_id = NEW.id AND s.stage = 'bm25_index' AND s.status = 'succeeded') THEN
        UPDATE files f SET mtime_ns = -1, content_hash = NULL
          FROM run_items i
         WHERE i.run_id = NEW.id AND f.repository_id = NEW.repository_id AND f.path = i.path;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER runs_forget_unindexed_files
    AFTER UPDATE OF status ON runs
    FOR EACH ROW WHEN (NEW.status IN ('failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION trawl_forget_unindexed_files();
