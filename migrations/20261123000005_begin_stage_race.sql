-- trawl_begin_stage again: when its first statement finds the predecessor unfinished and
-- the predecessor succeeds before the fallback takes the stage run's lock, the job must go
-- back to the queue, not be parked (a parked job is released only by that success, which
-- has already happened).

CREATE OR REPLACE FUNCTION trawl_begin_stage(p_job_id TEXT, p_parked_until TIMESTAMPTZ)
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
