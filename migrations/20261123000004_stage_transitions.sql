-- The two transitions every stage job goes through, each one statement for the worker:
-- a stage job taken from the queue begins (or waits, or is found to have nothing to do), and
-- a stage that did its work completes, releasing the next stage of its run. They run once
-- per task, so they are functions: one round trip each instead of seven or eight.
-- The rarer transitions (retry, failure, cancel) stay in src/store/runs.rs.
--
-- A stage job waiting for its predecessor is 'Waiting', a status apalis never fetches (its
-- fetch index covers only 'Pending' and 'Failed'), with run_at far in the future as well.
-- Parked as 'Pending', thousands of waiting jobs would be scanned by every fetch.

-- What a worker does with job p_job_id it took:
--   'proceed' (do the work; attempt is 1-based, run is the run's row as JSON),
--   'wait'    (the predecessor has not succeeded: the job was parked again, no attempt spent),
--   'nothing' (the run or the stage is over: the job was closed; reason says why),
--   'missing' (no stage run has this job).
CREATE FUNCTION trawl_begin_stage(p_job_id TEXT, p_parked_until TIMESTAMPTZ)
RETURNS TABLE (outcome TEXT, attempt INT, reason TEXT, run JSONB)
LANGUAGE plpgsql AS $$
DECLARE
    sr stage_runs;
    r runs;
    prev TEXT;
BEGIN
    -- The common case in one statement: an open stage whose predecessor succeeded (or that
    -- has none) of a run still open starts ('running' already when its last worker died). The row lock on the stage run serialises this
    -- against an operator's cancel, which updates the same row.
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

    -- Otherwise: say why, and put the job where it belongs.
    SELECT * INTO sr FROM stage_runs s WHERE s.job_id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, 0, 'no stage run has this job'::text, NULL::jsonb;
        RETURN;
    END IF;
    SELECT * INTO r FROM runs WHERE id = sr.run_id;
    IF r.status IN ('succeeded', 'failed', 'cancelled')
       OR sr.status IN ('succeeded', 'failed', 'cancelled', 'skipped') THEN
        reason := format('run %s is %s, stage %s is %s', r.id, r.status, sr.stage, sr.status);
        UPDATE apalis.jobs SET status = 'Done', last_result = jsonb_build_object('Ok', reason),
               done_at = now(), lock_by = NULL, lock_at = NULL
         WHERE id = p_job_id;
        RETURN QUERY SELECT 'nothing'::text, 0, reason, to_jsonb(r);
        RETURN;
    END IF;
    -- The predecessor may have succeeded since the first statement looked (its success
    -- locks this row too, so under the lock the answer is final): then the job goes back to
    -- the queue at once, else it waits to be released. No attempt spent either way.
    SELECT p.status INTO prev FROM stage_runs p
     WHERE p.run_id = sr.run_id AND p.ordinal = sr.ordinal - 1;
    IF prev = 'succeeded' THEN
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

-- Records the success of job p_job_id's stage with p_result (merged into runs.result under
-- the stage's name). When p_up_to_date, the later stages are skipped and the run succeeds;
-- otherwise the next stage's job is released and the workers listening on p_queue woken.
-- Returns false when the stage was no longer open (an operator cancelled it meanwhile).
CREATE FUNCTION trawl_complete_stage(p_job_id TEXT, p_result JSONB, p_up_to_date BOOLEAN, p_queue TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    sr stage_runs;
    next_job TEXT;
    later TEXT[];
BEGIN
    UPDATE stage_runs s SET status = 'succeeded', finished_at = now(), last_error = NULL,
           current_item = NULL
     WHERE s.job_id = p_job_id AND s.status IN ('queued', 'waiting', 'running')
     RETURNING * INTO sr;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE apalis.jobs SET status = 'Done', last_result = jsonb_build_object('Ok', p_result),
           done_at = now(), lock_by = NULL, lock_at = NULL, attempts = attempts + 1
     WHERE id = p_job_id;
    UPDATE runs SET result = result || jsonb_build_object(sr.stage, p_result) WHERE id = sr.run_id;

    IF p_up_to_date THEN
        WITH skipped AS (
            UPDATE stage_runs s SET status = 'skipped', finished_at = now(),
                   last_error = 'nothing changed since the last sync'
             WHERE s.run_id = sr.run_id AND s.ordinal > sr.ordinal
            RETURNING s.job_id)
        SELECT array_agg(job_id) INTO later FROM skipped;
        UPDATE apalis.jobs SET status = 'Done', done_at = now(), run_at = now(), lock_by = NULL,
               last_result = '{"Ok": "skipped: nothing changed since the last sync"}'
         WHERE id = ANY(later);
        UPDATE runs SET status = 'succeeded', finished_at = now(),
               result = result || '{"up_to_date": true}'
         WHERE id = sr.run_id;
        RETURN true;
    END IF;

    UPDATE stage_runs s SET status = 'queued', queued_at = now()
     WHERE s.run_id = sr.run_id AND s.ordinal = sr.ordinal + 1
    RETURNING s.job_id INTO next_job;
    IF NOT FOUND THEN
        -- the last stage
        UPDATE runs SET status = 'succeeded', finished_at = now() WHERE id = sr.run_id;
        RETURN true;
    END IF;
    UPDATE apalis.jobs SET run_at = now(),
           status = CASE WHEN status = 'Waiting' THEN 'Pending' ELSE status END
     WHERE id = next_job AND status IN ('Waiting', 'Pending', 'Failed');
    -- the notification apalis' insert trigger sends; delivered on commit
    PERFORM pg_notify('apalis::job::insert',
        json_build_object('job_type', p_queue, 'id', next_job, 'run_at', now())::text);
    RETURN true;
END
$$;

-- Every stage job is updated three or four times in its life; keep the queue's tables lean.
-- apalis 1.0 indexes jobs.lock_by twice (lidx and idx_apalis_jobs_lock_by): one is enough.
DROP INDEX IF EXISTS apalis.lidx;
ALTER TABLE apalis.jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE stage_runs SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE runs SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);
