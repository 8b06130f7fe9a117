-- The lifecycle of runs, their stages and the stages' queue jobs: every write of a run's,
-- a stage's or a job's status is one function here. The specification is the pure model in
-- src/domain/lifecycle.rs (its table is in docs/ARCHITECTURE.md); tests/lifecycle.rs drives
-- random event sequences through both and compares the states after every step.
--
-- This file is not a migration: the store applies it at start-up, in one transaction under
-- the migration lock, whenever its checksum differs from the one recorded in
-- trawl_sql_files. Every statement must therefore be idempotent (CREATE OR REPLACE). A
-- change of a function's signature needs a migration that drops the old one first.
--
-- Words: an open stage is queued, waiting or running. A parked job ('Waiting', run_at in
-- 2200) is one apalis never fetches: its fetch index covers 'Pending' and 'Failed' only.
-- Every function that decides on a stage locks its row first, and on a run its row (pause,
-- resume and cancel lock the run; begin share-locks it), so concurrent events serialise.

-- ---------------------------------------------------------------------------------------
-- Shared rules and job writes
-- ---------------------------------------------------------------------------------------

-- The rule every start and release obeys: the stage's predecessor succeeded, or it has none.
CREATE OR REPLACE FUNCTION trawl_predecessor_done(p_run BIGINT, p_ordinal SMALLINT)
RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
    SELECT p_ordinal = 0 OR EXISTS (
        SELECT 1 FROM stage_runs p
         WHERE p.run_id = p_run AND p.ordinal = p_ordinal - 1 AND p.status = 'succeeded')
$$;

-- The run_at of a parked job: far enough never to come.
CREATE OR REPLACE FUNCTION trawl_parked_until() RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE AS $$ SELECT '2200-01-01 00:00:00+00'::timestamptz $$;

-- Parks jobs: out of the queue until a release.
CREATE OR REPLACE FUNCTION trawl_park_jobs(p_ids TEXT[]) RETURNS VOID
LANGUAGE sql AS $$
    UPDATE apalis.jobs SET status = 'Waiting', run_at = trawl_parked_until(), lock_by = NULL,
           lock_at = NULL, done_at = NULL
     WHERE id = ANY(p_ids)
$$;

-- Puts jobs in the queue, due now, and wakes the workers listening on p_queue (as apalis'
-- insert trigger does; delivered on commit).
CREATE OR REPLACE FUNCTION trawl_release_jobs(p_ids TEXT[], p_queue TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    id TEXT;
BEGIN
    UPDATE apalis.jobs j SET status = 'Pending', run_at = now(), lock_by = NULL, lock_at = NULL,
           done_at = NULL
     WHERE j.id = ANY(p_ids);
    FOREACH id IN ARRAY COALESCE(p_ids, '{}') LOOP
        PERFORM pg_notify('apalis::job::insert',
            json_build_object('job_type', p_queue, 'id', id, 'run_at', now())::text);
    END LOOP;
END
$$;

-- Closes jobs not closed yet with p_status ('Done' or 'Killed') and p_result; p_attempt when
-- an attempt ran (success, failure for good), not when a job closes without work.
CREATE OR REPLACE FUNCTION trawl_close_jobs(p_ids TEXT[], p_status TEXT, p_result JSONB,
                                            p_attempt BOOLEAN) RETURNS VOID
LANGUAGE sql AS $$
    UPDATE apalis.jobs SET status = p_status, last_result = p_result, done_at = now(),
           lock_by = NULL, lock_at = NULL, attempts = attempts + p_attempt::int
     WHERE id = ANY(p_ids) AND status NOT IN ('Done', 'Killed')
$$;

-- Cancels the open stages of run p_run from ordinal p_from on, with p_reason, and kills
-- their jobs.
CREATE OR REPLACE FUNCTION trawl_cancel_stages(p_run BIGINT, p_from SMALLINT, p_reason TEXT)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    ids TEXT[];
BEGIN
    WITH c AS (
        UPDATE stage_runs SET status = 'cancelled', finished_at = now(), last_error = p_reason,
               current_item = NULL
         WHERE run_id = p_run AND ordinal >= p_from AND status IN ('queued', 'waiting', 'running')
        RETURNING job_id)
    SELECT array_agg(job_id) INTO ids FROM c;
    PERFORM trawl_close_jobs(ids, 'Killed', jsonb_build_object('Err', p_reason), false);
END
$$;

-- Ends run p_run with p_status ('succeeded', 'failed' or 'cancelled'); the repository's
-- lease, when the run holds it, is given up, and a free lease wakes the next run waiting
-- for it.
CREATE OR REPLACE FUNCTION trawl_end_run(p_run BIGINT, p_status TEXT, p_error TEXT)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    repo BIGINT;
BEGIN
    UPDATE runs SET status = p_status, finished_at = now(), error = COALESCE(p_error, error)
     WHERE id = p_run RETURNING repository_id INTO repo;
    UPDATE repositories SET lease_run_id = NULL WHERE id = repo AND lease_run_id = p_run;
    PERFORM trawl_wake_lease_waiters(repo);
END
$$;

-- When repository p_repo's lease is free, the first of the runs waiting for it (an open
-- run, not paused, whose first open stage is waiting although its predecessor succeeded:
-- nothing else leaves a stage so), in the queue's order (its job's priority, then the
-- oldest run), goes back to the queue, its waiting stage's job due now. One at a time: the
-- others would only be claimed to wait again. A stage row another transaction holds is
-- left alone: that transaction is deciding on it and will find the lease free.
CREATE OR REPLACE FUNCTION trawl_wake_lease_waiters(p_repo BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    j RECORD;
BEGIN
    IF EXISTS (SELECT 1 FROM repositories WHERE id = p_repo AND lease_run_id IS NOT NULL) THEN
        RETURN;
    END IF;
    FOR j IN
        WITH waiting AS (
            SELECT s.job_id FROM stage_runs s JOIN runs x ON x.id = s.run_id
              JOIN apalis.jobs w ON w.id = s.job_id
             WHERE x.repository_id = p_repo AND x.status IN ('queued', 'running')
               AND s.status = 'waiting' AND trawl_predecessor_done(s.run_id, s.ordinal)
             ORDER BY w.priority DESC, s.run_id
             LIMIT 1
               FOR UPDATE OF s SKIP LOCKED),
        queued AS (
            UPDATE stage_runs s SET status = 'queued', queued_at = now(), current_item = NULL
              FROM waiting w WHERE s.job_id = w.job_id
            RETURNING s.job_id)
        UPDATE apalis.jobs u SET status = 'Pending', run_at = now(), lock_by = NULL,
               lock_at = NULL, done_at = NULL
          FROM queued q WHERE u.id = q.job_id
        RETURNING u.id, u.job_type
    LOOP
        PERFORM pg_notify('apalis::job::insert',
            json_build_object('job_type', j.job_type, 'id', j.id, 'run_at', now())::text);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Creating a run's stages
-- ---------------------------------------------------------------------------------------

-- The five stage runs of new run p_run and their jobs: SYNC queued and due now, the rest
-- waiting with their jobs parked. Arrays by ordinal. apalis' insert trigger wakes the
-- workers for SYNC.
CREATE OR REPLACE FUNCTION trawl_create_stages(p_run BIGINT, p_names TEXT[], p_ids TEXT[],
                                               p_payloads BYTEA[], p_max_attempts INT[],
                                               p_priorities INT[], p_queue TEXT)
RETURNS VOID LANGUAGE sql AS $$
    INSERT INTO stage_runs (run_id, stage, ordinal, job_id, status, max_attempts)
    SELECT p_run, s.name, (s.n - 1)::smallint, s.id,
           CASE WHEN s.n = 1 THEN 'queued' ELSE 'waiting' END, s.max_attempts
      FROM unnest(p_names, p_ids, p_max_attempts) WITH ORDINALITY AS s (name, id, max_attempts, n);
    INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
    SELECT j.id, p_queue, j.job, CASE WHEN j.n = 1 THEN 'Pending' ELSE 'Waiting' END, 0,
           j.max_attempts, CASE WHEN j.n = 1 THEN now() ELSE trawl_parked_until() END, j.priority
      FROM unnest(p_ids, p_payloads, p_max_attempts, p_priorities) WITH ORDINALITY
           AS j (id, job, max_attempts, priority, n);
$$;

-- ---------------------------------------------------------------------------------------
-- A worker's events: begin, succeed, retry, fail, stop, abandon
-- ---------------------------------------------------------------------------------------

-- What a worker does with job p_job_id it claimed:
--   'proceed' (do the work; attempt is 1-based, run is the run's row as JSON),
--   'wait'    (the predecessor has not succeeded, the run is paused, or another run of the
--              repository holds its lease: the job was parked again, no attempt spent),
--   'nothing' (the run or the stage is over: the job was closed; reason says why),
--   'missing' (no stage run has this job).
-- A stage begins only in the run holding its repository's lease, which the run takes here
-- when it is free (at most one run of a repository works at a time).
CREATE OR REPLACE FUNCTION trawl_begin_stage(p_job_id TEXT, p_parked_until TIMESTAMPTZ)
RETURNS TABLE (outcome TEXT, attempt INT, reason TEXT, run JSONB)
LANGUAGE plpgsql AS $$
DECLARE
    sr stage_runs;
    r runs;
    holder BIGINT;
BEGIN
    SELECT * INTO sr FROM stage_runs s WHERE s.job_id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, 0, 'no stage run has this job'::text, NULL::jsonb;
        RETURN;
    END IF;
    -- Share-locked: a resume (which locks the run) waits for this decision and then finds
    -- the stage parked, instead of committing in between and leaving it parked for good.
    SELECT * INTO r FROM runs WHERE id = sr.run_id FOR SHARE;
    IF r.status IN ('succeeded', 'failed', 'cancelled')
       OR sr.status IN ('succeeded', 'failed', 'cancelled', 'skipped') THEN
        reason := format('run %s is %s, stage %s is %s', r.id, r.status, sr.stage, sr.status);
        PERFORM trawl_close_jobs(ARRAY[p_job_id], 'Done', jsonb_build_object('Ok', reason), false);
        RETURN QUERY SELECT 'nothing'::text, 0, reason, to_jsonb(r);
        RETURN;
    END IF;
    -- The predecessor's success locks this row too, so under the lock the answer is final.
    IF trawl_predecessor_done(sr.run_id, sr.ordinal) AND r.status <> 'paused' THEN
        -- Locked, so a holder ending meanwhile gives the lease up after this decision and
        -- then wakes this stage if it was parked.
        SELECT q.lease_run_id INTO holder FROM repositories q WHERE q.id = r.repository_id
           FOR UPDATE;
        -- A holder that is over (which no event leaves so; a repair by hand might) holds
        -- nothing.
        IF holder IS NOT NULL AND holder <> r.id AND NOT EXISTS (
               SELECT 1 FROM runs h WHERE h.id = holder AND h.status IN ('queued', 'running', 'paused')) THEN
            holder := NULL;
        END IF;
        IF holder IS NULL OR holder = r.id THEN
            IF holder IS NULL THEN
                UPDATE repositories SET lease_run_id = r.id WHERE id = r.repository_id;
            END IF;
            UPDATE stage_runs s SET status = 'running', attempts = s.attempts + 1,
                   started_at = COALESCE(s.started_at, now()), current_item = NULL
             WHERE s.job_id = p_job_id RETURNING * INTO sr;
            UPDATE runs SET status = 'running', started_at = COALESCE(started_at, now())
             WHERE id = sr.run_id RETURNING * INTO r;
            RETURN QUERY SELECT 'proceed'::text, sr.attempts, NULL::text, to_jsonb(r);
            RETURN;
        END IF;
        UPDATE stage_runs s SET status = 'waiting',
               current_item = format('waiting for run %s of this repository to end', holder)
         WHERE s.job_id = p_job_id;
    ELSE
        UPDATE stage_runs s SET status = 'waiting' WHERE s.job_id = p_job_id;
    END IF;
    UPDATE apalis.jobs SET status = 'Waiting', lock_by = NULL, lock_at = NULL,
           done_at = NULL, run_at = p_parked_until
     WHERE id = p_job_id;
    RETURN QUERY SELECT 'wait'::text, 0, NULL::text, to_jsonb(r);
END
$$;

-- A worker takes stage jobs in one statement: it claims up to as many jobs as it has free
-- slots, highest priority first (then oldest), exactly as apalis' own fetch would one by
-- one, and begins each in the same transaction. p_stages limits the claim to those stages
-- (NULL: every stage). The claimed jobs come back in priority order with what beginning
-- them decided for each (as trawl_begin_stage says).
CREATE OR REPLACE FUNCTION trawl_claim_stages(p_worker TEXT, p_queue TEXT, p_limit INT,
                                              p_parked_until TIMESTAMPTZ, p_stages TEXT[])
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
               AND (p_stages IS NULL OR EXISTS (
                    SELECT 1 FROM stage_runs f WHERE f.job_id = c.id AND f.stage = ANY(p_stages)))
             ORDER BY c.priority DESC, c.run_at ASC
             LIMIT p_limit
             FOR UPDATE SKIP LOCKED),
        claimed AS (
            UPDATE apalis.jobs u SET status = 'Queued', lock_by = p_worker, lock_at = now()
              FROM next WHERE u.id = next.id
            RETURNING u.id, u.job, u.priority, u.run_at),
        -- The common case for all of them at once, as trawl_begin_stage decides: an open
        -- stage whose predecessor succeeded, of a run still open and not paused, whose run
        -- holds the repository's lease or takes it now. The predecessor rule is
        -- trawl_predecessor_done's, written out: the planner does not inline a SQL function
        -- holding a sub-select, and calling it per claimed job cost about a tenth of the
        -- queue's throughput.
        ready AS (
            SELECT s.job_id, s.run_id, x.repository_id, q.lease_run_id
              FROM claimed c
              JOIN stage_runs s ON s.job_id = c.id
              JOIN runs x ON x.id = s.run_id
              JOIN repositories q ON q.id = x.repository_id
             WHERE s.status IN ('queued', 'waiting', 'running')
               AND x.status IN ('queued', 'running')
               AND (s.ordinal = 0 OR EXISTS (
                    SELECT 1 FROM stage_runs p
                     WHERE p.run_id = s.run_id AND p.ordinal = s.ordinal - 1
                       AND p.status = 'succeeded'))),
        -- A free lease is taken by one of the claimed runs of its repository (re-checked
        -- under the row lock, so two claims never both take it).
        leased AS (
            UPDATE repositories q SET lease_run_id = r.run_id
              FROM ready r
             WHERE q.id = r.repository_id AND r.lease_run_id IS NULL AND q.lease_run_id IS NULL
            RETURNING q.lease_run_id AS run_id),
        begun AS (
            UPDATE stage_runs s SET status = 'running', attempts = s.attempts + 1,
                   started_at = COALESCE(s.started_at, now()), current_item = NULL
              FROM ready r
             WHERE s.job_id = r.job_id AND s.status IN ('queued', 'waiting', 'running')
               AND (r.lease_run_id = r.run_id OR EXISTS (SELECT 1 FROM leased l WHERE l.run_id = r.run_id))
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

-- Records the success of job p_job_id's stage with p_result (merged into runs.result under
-- the stage's name). When p_up_to_date, the later stages are skipped and the run succeeds;
-- otherwise the next stage is released (parked still when the run is paused: the resume
-- releases it) or, after the last stage, the run succeeds. Returns false when the stage was
-- not running (an operator cancelled it meanwhile): nothing changes.
CREATE OR REPLACE FUNCTION trawl_complete_stage(p_job_id TEXT, p_result JSONB,
                                                p_up_to_date BOOLEAN, p_queue TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    sr stage_runs;
    run_status TEXT;
    next_job TEXT;
    later TEXT[];
BEGIN
    UPDATE stage_runs s SET status = 'succeeded', finished_at = now(), last_error = NULL,
           current_item = NULL
     WHERE s.job_id = p_job_id AND s.status = 'running'
     RETURNING * INTO sr;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- This function runs once per stage job: its writes are plain statements (what
    -- trawl_close_jobs and trawl_release_jobs do, without a nested call each), measured
    -- about a fifth more queue throughput than calling them.
    UPDATE apalis.jobs SET status = 'Done', last_result = jsonb_build_object('Ok', p_result),
           done_at = now(), lock_by = NULL, lock_at = NULL, attempts = attempts + 1
     WHERE id = p_job_id;
    UPDATE runs SET result = result || jsonb_build_object(sr.stage, p_result)
     WHERE id = sr.run_id RETURNING status INTO run_status;

    IF p_up_to_date THEN
        WITH skipped AS (
            UPDATE stage_runs s SET status = 'skipped', finished_at = now(),
                   last_error = 'nothing changed since the last sync'
             WHERE s.run_id = sr.run_id AND s.ordinal > sr.ordinal
            RETURNING s.job_id)
        SELECT array_agg(job_id) INTO later FROM skipped;
        PERFORM trawl_close_jobs(later, 'Done',
                                 '{"Ok": "skipped: nothing changed since the last sync"}', false);
        UPDATE runs SET result = result || '{"up_to_date": true}' WHERE id = sr.run_id;
        PERFORM trawl_end_run(sr.run_id, 'succeeded', NULL);
        RETURN true;
    END IF;

    IF run_status <> 'paused' THEN
        UPDATE stage_runs s SET status = 'queued', queued_at = now()
         WHERE s.run_id = sr.run_id AND s.ordinal = sr.ordinal + 1 AND s.status = 'waiting'
        RETURNING s.job_id INTO next_job;
        IF FOUND THEN
            UPDATE apalis.jobs SET status = 'Pending', run_at = now(), lock_by = NULL,
                   lock_at = NULL, done_at = NULL
             WHERE id = next_job;
            PERFORM pg_notify('apalis::job::insert',
                json_build_object('job_type', p_queue, 'id', next_job, 'run_at', now())::text);
            RETURN true;
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM stage_runs s WHERE s.run_id = sr.run_id AND s.ordinal > sr.ordinal) THEN
        -- the last stage
        PERFORM trawl_end_run(sr.run_id, 'succeeded', NULL);
    END IF;
    RETURN true;
END
$$;

-- Records a retryable failure of job p_job_id's running stage: the job goes back to the
-- queue after p_delay_secs with the attempt counted (parked instead when the run is paused).
-- Returns false when the stage was not running (cancelled meanwhile: no retry).
CREATE OR REPLACE FUNCTION trawl_retry_stage(p_job_id TEXT, p_error TEXT, p_delay_secs FLOAT8)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    sr stage_runs;
    paused BOOLEAN;
BEGIN
    SELECT * INTO sr FROM stage_runs WHERE job_id = p_job_id AND status = 'running' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT status = 'paused' INTO paused FROM runs WHERE id = sr.run_id FOR SHARE;
    UPDATE stage_runs SET status = CASE WHEN paused THEN 'waiting' ELSE 'queued' END,
           last_error = p_error, current_item = NULL
     WHERE job_id = p_job_id;
    UPDATE apalis.jobs SET status = CASE WHEN paused THEN 'Waiting' ELSE 'Failed' END,
           attempts = attempts + 1, lock_by = NULL, lock_at = NULL, done_at = NULL,
           run_at = CASE WHEN paused THEN trawl_parked_until()
                         ELSE now() + make_interval(secs => p_delay_secs) END,
           last_result = jsonb_build_object('Err', p_error)
     WHERE id = p_job_id;
    RETURN true;
END
$$;

-- Records a failure for good of job p_job_id's stage: the stage fails, the run's other
-- open stages are cancelled with the reason, and the run fails. Returns false when the stage
-- was not open.
CREATE OR REPLACE FUNCTION trawl_fail_stage(p_job_id TEXT, p_error TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    sr stage_runs;
BEGIN
    UPDATE stage_runs SET status = 'failed', finished_at = now(), last_error = p_error,
           current_item = NULL
     WHERE job_id = p_job_id AND status IN ('queued', 'waiting', 'running')
    RETURNING * INTO sr;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM trawl_close_jobs(ARRAY[p_job_id], 'Killed', jsonb_build_object('Err', p_error), true);
    -- The other open stages: the later ones, and (when a job that cannot run is killed
    -- while it waits) an earlier one at work.
    PERFORM trawl_cancel_stages(sr.run_id, 0::smallint,
                                format('cancelled: stage %s failed: %s', sr.stage, p_error));
    PERFORM trawl_end_run(sr.run_id, 'failed', format('stage %s failed: %s', sr.stage, p_error));
    RETURN true;
END
$$;

-- Fails job p_job_id for good when it cannot be run (a malformed payload, no run): its
-- stage too, when it has one.
CREATE OR REPLACE FUNCTION trawl_kill_job(p_job_id TEXT, p_error TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM stage_runs WHERE job_id = p_job_id) THEN
        PERFORM trawl_fail_stage(p_job_id, p_error);
    END IF;
    PERFORM trawl_close_jobs(ARRAY[p_job_id], 'Killed', jsonb_build_object('Err', p_error), true);
END
$$;

-- Records a stage that stopped between batches because its run was paused or cancelled.
-- Paused: the stage is parked until the resume, its attempt given back. Resumed meanwhile:
-- back to the queue. Over: its job is closed. A job no longer claimed is not the stopping
-- worker's any more (an operator cancelled and retried it meanwhile): nothing changes.
-- Returns what happened: 'parked', 'queued', 'closed' or 'ignored'.
CREATE OR REPLACE FUNCTION trawl_stop_stage(p_job_id TEXT, p_queue TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    run_status TEXT;
BEGIN
    -- The run first, locked as pause, resume and cancel lock it: a resume committing
    -- meanwhile is seen whole, never half.
    SELECT r.status INTO run_status FROM runs r
     WHERE r.id = (SELECT s.run_id FROM stage_runs s WHERE s.job_id = p_job_id)
       FOR UPDATE;
    PERFORM 1 FROM apalis.jobs WHERE id = p_job_id AND status IN ('Queued', 'Running') FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'ignored';
    END IF;
    IF run_status = 'paused' THEN
        UPDATE stage_runs SET status = 'waiting', attempts = GREATEST(attempts - 1, 0),
               current_item = NULL
         WHERE job_id = p_job_id AND status = 'running';
        PERFORM trawl_park_jobs(ARRAY[p_job_id]);
        RETURN 'parked';
    ELSIF run_status IN ('queued', 'running') THEN
        UPDATE stage_runs SET status = 'queued', attempts = GREATEST(attempts - 1, 0),
               current_item = NULL
         WHERE job_id = p_job_id AND status = 'running';
        PERFORM trawl_release_jobs(ARRAY[p_job_id], p_queue);
        RETURN 'queued';
    END IF;
    PERFORM trawl_close_jobs(ARRAY[p_job_id], 'Killed', NULL, false);
    RETURN 'closed';
END
$$;

-- Jobs claimed by workers whose names start with p_worker (of the ids p_ids, or all when
-- NULL) go back to the queue: a stopping worker's, given back. Returns how many.
CREATE OR REPLACE FUNCTION trawl_abandon_jobs(p_worker TEXT, p_ids TEXT[]) RETURNS BIGINT
LANGUAGE sql AS $$
    WITH given AS (
        UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL
         WHERE starts_with(lock_by, p_worker) AND status IN ('Queued', 'Running')
           AND (p_ids IS NULL OR id = ANY(p_ids))
        RETURNING id),
    runs AS (
        UPDATE pipeline_runs p SET status = 'pending'
          FROM given WHERE p.job_id = given.id AND p.status = 'running'
        RETURNING 1)
    SELECT count(*) FROM given
$$;

-- The jobs of p_queue's workers whose heartbeat is older than p_after_secs go back to the
-- queue, the attempt counted (apalis-postgres' orphan rescue, here so that every job write
-- is in this file). Returns how many.
CREATE OR REPLACE FUNCTION trawl_rescue_orphans(p_queue TEXT, p_after_secs FLOAT8) RETURNS BIGINT
LANGUAGE sql AS $$
    WITH stale AS (
        SELECT j.id FROM apalis.jobs j JOIN apalis.workers w ON j.lock_by = w.id
         WHERE j.status IN ('Running', 'Queued') AND w.worker_type = p_queue
           AND now() - w.last_seen >= make_interval(secs => p_after_secs)
           FOR UPDATE OF j SKIP LOCKED),
    given AS (
        UPDATE apalis.jobs j SET status = 'Pending', done_at = NULL, lock_by = NULL,
               lock_at = NULL, attempts = attempts + 1,
               last_result = '{"Err": "Re-enqueued due to worker heartbeat timeout."}'
          FROM stale WHERE j.id = stale.id
        RETURNING j.id),
    runs AS (
        UPDATE pipeline_runs p SET status = 'pending'
          FROM given WHERE p.job_id = given.id AND p.status = 'running'
        RETURNING 1)
    SELECT count(*) FROM given
$$;

-- ---------------------------------------------------------------------------------------
-- An operator's events: pause, resume, cancel; retry and cancel a task
-- Each returns (applied, status): whether it applied, and the run's (or the task's) status
-- before it; no row when the run or the task does not exist.
-- ---------------------------------------------------------------------------------------

-- Locks run p_run, which serialises every operator's event on it; its status, NULL when
-- there is no such run.
CREATE OR REPLACE FUNCTION trawl_lock_run(p_run BIGINT) RETURNS TEXT
LANGUAGE sql AS $$ SELECT status FROM runs WHERE id = p_run FOR UPDATE $$;

-- Locks task p_job_id's run, then its stage run (in that order, as every event does); the
-- stage run, or NULL when no stage run has this job.
CREATE OR REPLACE FUNCTION trawl_lock_task(p_job_id TEXT) RETURNS stage_runs
LANGUAGE plpgsql AS $$
DECLARE
    sr stage_runs;
BEGIN
    SELECT * INTO sr FROM stage_runs s WHERE s.job_id = p_job_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM trawl_lock_run(sr.run_id);
    SELECT * INTO sr FROM stage_runs s WHERE s.job_id = p_job_id FOR UPDATE;
    RETURN sr;
END
$$;

-- Pauses a queued or running run: its queued or waiting stage is parked; a stage at work
-- stops after its current batch (trawl_stop_stage).
CREATE OR REPLACE FUNCTION trawl_pause_run(p_run BIGINT)
RETURNS TABLE (applied BOOLEAN, status TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    before TEXT;
    ids TEXT[];
BEGIN
    before := trawl_lock_run(p_run);
    IF before IS NULL THEN
        RETURN;
    END IF;
    IF before NOT IN ('queued', 'running') THEN
        RETURN QUERY SELECT false, before;
        RETURN;
    END IF;
    UPDATE runs r SET status = 'paused' WHERE r.id = p_run;
    WITH parked AS (
        UPDATE stage_runs s SET status = 'waiting'
         WHERE s.run_id = p_run AND s.status IN ('queued', 'waiting')
        RETURNING s.job_id)
    SELECT array_agg(job_id) INTO ids FROM parked;
    PERFORM trawl_park_jobs(ARRAY(SELECT j.id FROM apalis.jobs j
                                   WHERE j.id = ANY(ids)
                                     AND j.status IN ('Pending', 'Failed', 'Waiting')));
    -- A run woken for a free lease and paused before it took it: the next one goes.
    PERFORM trawl_wake_lease_waiters((SELECT repository_id FROM runs WHERE id = p_run));
    RETURN QUERY SELECT true, before;
END
$$;

-- Resumes a paused run where it stopped: its first open stage goes back to the queue.
CREATE OR REPLACE FUNCTION trawl_resume_run(p_run BIGINT, p_queue TEXT)
RETURNS TABLE (applied BOOLEAN, status TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    before TEXT;
    released TEXT;
BEGIN
    before := trawl_lock_run(p_run);
    IF before IS NULL THEN
        RETURN;
    END IF;
    IF before <> 'paused' THEN
        RETURN QUERY SELECT false, before;
        RETURN;
    END IF;
    UPDATE runs r SET status = CASE WHEN r.started_at IS NULL THEN 'queued' ELSE 'running' END
     WHERE r.id = p_run;
    UPDATE stage_runs s SET status = 'queued', queued_at = now()
     WHERE s.run_id = p_run AND s.status = 'waiting'
       AND s.ordinal = (SELECT min(o.ordinal) FROM stage_runs o
                         WHERE o.run_id = p_run AND o.status IN ('queued', 'waiting', 'running'))
       AND trawl_predecessor_done(p_run, s.ordinal)
    RETURNING s.job_id INTO released;
    IF released IS NOT NULL THEN
        PERFORM trawl_release_jobs(ARRAY(SELECT j.id FROM apalis.jobs j
                                          WHERE j.id = released
                                            AND j.status IN ('Waiting', 'Pending', 'Failed')),
                                   p_queue);
    END IF;
    RETURN QUERY SELECT true, before;
END
$$;

-- Cancels a run that has not ended: its open stages are cancelled and their jobs closed; a
-- stage at work stops after its current batch. What it committed stays.
CREATE OR REPLACE FUNCTION trawl_cancel_run(p_run BIGINT, p_reason TEXT)
RETURNS TABLE (applied BOOLEAN, status TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    before TEXT;
BEGIN
    before := trawl_lock_run(p_run);
    IF before IS NULL THEN
        RETURN;
    END IF;
    IF before NOT IN ('queued', 'running', 'paused') THEN
        RETURN QUERY SELECT false, before;
        RETURN;
    END IF;
    PERFORM trawl_cancel_stages(p_run, 0::smallint, p_reason);
    PERFORM trawl_end_run(p_run, 'cancelled', p_reason);
    RETURN QUERY SELECT true, before;
END
$$;

-- Cancels an open task, and with it its run (every open stage of it: a stage before it
-- still at work would otherwise release the next one when it succeeded).
CREATE OR REPLACE FUNCTION trawl_cancel_task(p_job_id TEXT, p_reason TEXT)
RETURNS TABLE (applied BOOLEAN, status TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    sr stage_runs;
BEGIN
    sr := trawl_lock_task(p_job_id);
    IF sr.job_id IS NULL THEN
        RETURN;
    END IF;
    IF sr.status NOT IN ('queued', 'waiting', 'running') THEN
        RETURN QUERY SELECT false, sr.status;
        RETURN;
    END IF;
    PERFORM trawl_cancel_stages(sr.run_id, 0::smallint, p_reason);
    PERFORM trawl_end_run(sr.run_id, 'cancelled', p_reason);
    RETURN QUERY SELECT true, sr.status;
END
$$;

-- Puts a failed or cancelled task back in the queue with a fresh budget of attempts (the
-- stage's attempt count starts again with its job's, which is what the worker's retry
-- budget reads: a retried stage gets worker.max_attempts tries, not one). Its run goes on
-- from its first stage that did not succeed (this one, or an earlier one also failed or
-- cancelled: retrying a later stage alone would leave it waiting for ever); the later
-- failed or cancelled stages wait for it again.
CREATE OR REPLACE FUNCTION trawl_retry_task(p_job_id TEXT, p_queue TEXT)
RETURNS TABLE (applied BOOLEAN, status TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    sr stage_runs;
    first_open SMALLINT;
    head TEXT;
    rest TEXT[];
BEGIN
    sr := trawl_lock_task(p_job_id);
    IF sr.job_id IS NULL THEN
        RETURN;
    END IF;
    IF sr.status NOT IN ('failed', 'cancelled') THEN
        RETURN QUERY SELECT false, sr.status;
        RETURN;
    END IF;
    SELECT min(s.ordinal) INTO first_open FROM stage_runs s
     WHERE s.run_id = sr.run_id AND s.status <> 'succeeded';
    WITH reset AS (
        UPDATE stage_runs s
           SET status = CASE WHEN s.ordinal = first_open THEN 'queued' ELSE 'waiting' END,
               finished_at = NULL, last_error = NULL, queued_at = now(), attempts = 0
         WHERE s.run_id = sr.run_id AND s.ordinal >= first_open
           AND s.status IN ('failed', 'cancelled')
        RETURNING s.job_id, s.ordinal)
    SELECT (SELECT job_id FROM reset WHERE ordinal = first_open),
           ARRAY(SELECT job_id FROM reset WHERE ordinal <> first_open)
      INTO head, rest;
    UPDATE apalis.jobs SET attempts = 0, last_result = NULL WHERE id = ANY(rest || head);
    PERFORM trawl_park_jobs(rest);
    PERFORM trawl_release_jobs(ARRAY[head], p_queue);
    UPDATE runs r SET status = CASE WHEN r.started_at IS NULL THEN 'queued' ELSE 'running' END,
           finished_at = NULL, error = NULL
     WHERE r.id = sr.run_id;
    RETURN QUERY SELECT true, sr.status;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Jobs of other queues (reindex.batch): created, closed and retried
-- ---------------------------------------------------------------------------------------

-- A new job p_id of p_queue, due now (apalis' insert trigger wakes the workers).
CREATE OR REPLACE FUNCTION trawl_create_job(p_id TEXT, p_queue TEXT, p_payload BYTEA,
                                            p_max_attempts INT) RETURNS VOID
LANGUAGE sql AS $$
    INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
    VALUES (p_id, p_queue, p_payload, 'Pending', 0, p_max_attempts, now(), 0)
$$;

-- A failed attempt of job p_job_id: back to the queue after p_delay_secs (apalis fetches
-- Failed jobs below max_attempts only, so a job whose attempts are spent stays failed).
CREATE OR REPLACE FUNCTION trawl_retry_job(p_job_id TEXT, p_error TEXT, p_delay_secs FLOAT8)
RETURNS VOID LANGUAGE sql AS $$
    UPDATE apalis.jobs SET status = 'Failed', last_result = jsonb_build_object('Err', p_error),
           attempts = attempts + 1, lock_by = NULL, lock_at = NULL,
           run_at = now() + make_interval(secs => p_delay_secs)
     WHERE id = p_job_id
$$;

-- ---------------------------------------------------------------------------------------
-- Pipeline runs (domain::pipelines: PipelineStatus::apply is their model): each event
-- writes the run's row and its job's together
-- ---------------------------------------------------------------------------------------

-- Begin: a worker claimed job p_job_id. The pipeline run goes running with its attempt
-- counted and is returned; a run that is over (cancelled, or succeeded before a rescue)
-- closes its job instead and returns no row. A running run is begun again: its worker died
-- or stopped and the job was given back.
CREATE OR REPLACE FUNCTION trawl_pipeline_begin(p_job_id TEXT) RETURNS SETOF pipeline_runs
LANGUAGE plpgsql AS $$
DECLARE
    r pipeline_runs;
BEGIN
    SELECT * INTO r FROM pipeline_runs WHERE job_id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM trawl_close_jobs(ARRAY[p_job_id], 'Killed',
            jsonb_build_object('Err', 'no pipeline run has job ' || p_job_id), false);
        RETURN;
    END IF;
    IF r.status NOT IN ('pending', 'running') THEN
        PERFORM trawl_close_jobs(ARRAY[p_job_id],
            CASE WHEN r.status = 'success' THEN 'Done' ELSE 'Killed' END,
            jsonb_build_object('Err', 'the pipeline run is ' || r.status), false);
        RETURN;
    END IF;
    UPDATE pipeline_runs SET status = 'running', attempt = attempt + 1, started_at = now(),
           finished_at = NULL, retry_at = NULL
     WHERE id = r.id RETURNING * INTO r;
    RETURN NEXT r;
END
$$;

-- A worker's report on a run that is no longer running: one given back meanwhile
-- (pending: its job is claimed again, and left alone) or ended (its job is closed).
CREATE OR REPLACE FUNCTION trawl_pipeline_late(p_job_id TEXT) RETURNS VOID
LANGUAGE sql AS $$
    SELECT trawl_close_jobs(ARRAY[p_job_id], 'Killed',
               jsonb_build_object('Err', 'the pipeline run was no longer running'), false)
      FROM pipeline_runs
     WHERE job_id = p_job_id AND status NOT IN ('pending', 'running')
$$;

-- Succeed: the run's data is written and the job is done. Ignored unless the run is
-- running.
CREATE OR REPLACE FUNCTION trawl_pipeline_succeed(p_job_id TEXT, p_result JSONB) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    r pipeline_runs;
BEGIN
    UPDATE pipeline_runs SET status = 'success', finished_at = now(), result = p_result,
           error_message = NULL
     WHERE job_id = p_job_id AND status = 'running' RETURNING * INTO r;
    IF NOT FOUND THEN
        PERFORM trawl_pipeline_late(p_job_id);
        RETURN false;
    END IF;
    PERFORM trawl_close_jobs(ARRAY[p_job_id], 'Done', jsonb_build_object('Ok', p_result), true);
    RETURN true;
END
$$;

-- Retry: a retryable failure with attempts left; pending again, due after p_delay_secs.
-- Ignored unless the run is running.
CREATE OR REPLACE FUNCTION trawl_pipeline_retry(p_job_id TEXT, p_error TEXT, p_delay_secs FLOAT8)
RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pipeline_runs SET status = 'pending', error_message = p_error,
           retry_at = now() + make_interval(secs => p_delay_secs)
     WHERE job_id = p_job_id AND status = 'running';
    IF FOUND THEN
        PERFORM trawl_retry_job(p_job_id, p_error, p_delay_secs);
    ELSE
        PERFORM trawl_pipeline_late(p_job_id);
    END IF;
END
$$;

-- Fail: for good (a permanent error, or the last attempt's); the job is killed. Ignored
-- unless the run is running.
CREATE OR REPLACE FUNCTION trawl_pipeline_fail(p_job_id TEXT, p_error TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pipeline_runs SET status = 'failed', finished_at = now(), error_message = p_error,
           retry_at = NULL
     WHERE job_id = p_job_id AND status = 'running';
    IF FOUND THEN
        PERFORM trawl_close_jobs(ARRAY[p_job_id], 'Killed', jsonb_build_object('Err', p_error), true);
    ELSE
        PERFORM trawl_pipeline_late(p_job_id);
    END IF;
END
$$;

-- The index version pipeline p_pipeline's data of repository p_repo reflects (NULL: it
-- never ran for it): the newest version up to which each of its runs succeeded. A run
-- over every file (paths NULL: a first run, an operator's reingest, a history run)
-- stands for the runs of its version and older ones; versions no run was made for
-- (nothing the pipeline takes changed) are reflected when the ones before them are.
CREATE OR REPLACE FUNCTION trawl_pipeline_reflects(p_pipeline TEXT, p_repo BIGINT) RETURNS INT
LANGUAGE sql STABLE AS $$
    WITH runs AS (
        SELECT index_version, status, paths IS NULL AS whole
          FROM pipeline_runs WHERE pipeline = p_pipeline AND repository_id = p_repo
    ), covered AS (
        SELECT COALESCE(max(index_version), 0) AS v FROM runs WHERE whole AND status = 'success'
    )
    SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM runs) THEN NULL
        ELSE COALESCE(
            (SELECT min(index_version) - 1 FROM runs, covered
              WHERE status <> 'success' AND index_version > covered.v),
            (SELECT COALESCE(max(version), 0) FROM index_versions WHERE repository_id = p_repo))
    END
$$;

-- An operator's cancel of pipeline run p_id (pending or running): its job is killed, and a
-- worker at it finds the run cancelled when it reports. Returns (applied, status before).
CREATE OR REPLACE FUNCTION trawl_pipeline_cancel(p_id BIGINT, p_reason TEXT)
RETURNS TABLE (applied BOOLEAN, status TEXT) LANGUAGE plpgsql AS $$
DECLARE
    r pipeline_runs;
BEGIN
    SELECT * INTO r FROM pipeline_runs WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF r.status NOT IN ('pending', 'running') THEN
        RETURN QUERY SELECT false, r.status;
        RETURN;
    END IF;
    UPDATE pipeline_runs SET status = 'cancelled', finished_at = now(), error_message = p_reason,
           retry_at = NULL
     WHERE id = p_id;
    PERFORM trawl_close_jobs(ARRAY[r.job_id], 'Killed', jsonb_build_object('Err', p_reason), false);
    RETURN QUERY SELECT true, r.status;
END
$$;

-- An operator's retry of pipeline run p_id (failed or cancelled): pending with fresh
-- attempts, its job back in the queue. Returns (applied, status before).
CREATE OR REPLACE FUNCTION trawl_pipeline_retry_run(p_id BIGINT)
RETURNS TABLE (applied BOOLEAN, status TEXT) LANGUAGE plpgsql AS $$
DECLARE
    r pipeline_runs;
BEGIN
    SELECT * INTO r FROM pipeline_runs WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF r.status NOT IN ('failed', 'cancelled') THEN
        RETURN QUERY SELECT false, r.status;
        RETURN;
    END IF;
    UPDATE pipeline_runs SET status = 'pending', attempt = 0, finished_at = NULL, retry_at = NULL
     WHERE id = p_id;
    UPDATE apalis.jobs SET attempts = 0 WHERE id = r.job_id;
    PERFORM trawl_release_jobs(ARRAY[r.job_id],
        (SELECT job_type FROM apalis.jobs WHERE id = r.job_id));
    RETURN QUERY SELECT true, r.status;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Removing a repository
-- ---------------------------------------------------------------------------------------

-- Removes repository p_repo and everything it has (files, snippets, vectors, summaries,
-- runs, events, pipeline runs and their data, by the foreign keys' cascade) in one
-- transaction: its unfinished runs and pipeline runs are cancelled first (their jobs
-- killed, a worker at one finds so when it reports), the contents only it used go to the
-- sweep, and one keyword change for the whole repository tells every node's keyword index
-- to drop its documents. The audit keeps its entries (their repository id set to NULL).
-- False when there is no such repository.
CREATE OR REPLACE FUNCTION trawl_remove_repository(p_repo BIGINT, p_reason TEXT)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    r BIGINT;
BEGIN
    PERFORM 1 FROM repositories WHERE id = p_repo FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    FOR r IN SELECT id FROM runs WHERE repository_id = p_repo
                AND status IN ('queued', 'running', 'paused') ORDER BY id LOOP
        PERFORM trawl_cancel_run(r, p_reason);
    END LOOP;
    FOR r IN SELECT id FROM pipeline_runs WHERE repository_id = p_repo
                AND status IN ('pending', 'running') ORDER BY id LOOP
        PERFORM trawl_pipeline_cancel(r, p_reason);
    END LOOP;
    INSERT INTO file_content_garbage (hash)
    SELECT DISTINCT content_hash FROM files
     WHERE repository_id = p_repo AND content_hash IS NOT NULL
    ON CONFLICT DO NOTHING;
    PERFORM pg_advisory_xact_lock(hashtext('trawl.keyword_changes'));
    INSERT INTO keyword_changes (seq, repository_id, run_id, paths)
    VALUES (nextval('keyword_changes_seq'), p_repo, NULL, NULL);
    PERFORM pg_notify('trawl_keyword_changes', currval('keyword_changes_seq')::text);
    DELETE FROM repositories WHERE id = p_repo;
    RETURN true;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Consequences
-- ---------------------------------------------------------------------------------------

-- A run that ends failed or cancelled after SYNC recorded its changes, but before the
-- keyword index took them in, leaves files whose recorded hash is newer than what the
-- index holds. Their stat is forgotten, so the next SYNC reads and hashes them again and
-- finds them changed: the index heals on the next run. (Vectors and summaries heal by
-- themselves: those stages take whatever lacks one.) The trigger is a migration's.
CREATE OR REPLACE FUNCTION trawl_forget_unindexed_files() RETURNS TRIGGER
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
