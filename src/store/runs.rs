//! Repositories, runs, stage runs and run items, and the stage jobs in apalis' table that
//! belong to them.
//!
//! The pipeline takes the completion of a stage job into its own hands: every transition
//! here writes trawl's records and the job's row in one transaction and clears the job's
//! `lock_by`, which makes apalis' own result write (guarded by `lock_by = worker`) a no-op.
//! That is how a waiting stage goes back to the queue without spending an attempt, how
//! retries get a backoff in `run_at`, and how a stage's success releases the next stage
//! atomically.

use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, Postgres, Transaction};

use super::{Store, StoreError};
use crate::domain::{PriorityClass, RunStatus, Stage, StageStatus, Trigger};

/// The one apalis queue (job_type) of all five stages: apalis orders by priority only
/// within a queue, and the stages must compete by priority.
pub const STAGE_QUEUE: &str = "trawl::stage";
/// `run_at` of a parked job (a stage waiting for its predecessor): far enough never to come.
pub const PARKED_UNTIL_SECS: i64 = 7_258_118_400; // 2200-01-01
/// apalis status of a parked job: one apalis never fetches, so waiting jobs stay out of its
/// fetch index (the SQL functions of the stage transitions use the same word).
pub const PARKED_STATUS: &str = "Waiting";

#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct Repository {
    pub id: i64,
    pub source_kind: String,
    pub source: String,
    pub git_ref: String,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_synced_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, FromRow, schemars::JsonSchema)]
pub struct Run {
    pub id: i64,
    pub repository_id: i64,
    pub trigger: String,
    pub origin: String,
    pub priority_base: i32,
    pub scope: Value,
    pub full_reindex: bool,
    pub status: String,
    pub result: Value,
    pub error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Run {
    pub fn run_status(&self) -> RunStatus {
        RunStatus::parse(&self.status).unwrap_or(RunStatus::Failed)
    }
}

#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct StageRun {
    pub run_id: i64,
    pub stage: String,
    pub ordinal: i16,
    pub job_id: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub items_total: i32,
    pub items_done: i32,
    pub items_failed: i32,
    pub current_item: Option<String>,
    pub last_error: Option<String>,
    pub queued_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A file a run touched.
#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct RunItem {
    pub path: String,
    /// added, modified, deleted
    pub change: String,
    /// pending, processing, completed, failed, skipped
    pub status: String,
    /// The error of a failed item, the reason of a skipped one.
    pub message: Option<String>,
    pub duration_ms: Option<i32>,
}

/// What a new run is.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub repository_id: i64,
    pub trigger: Trigger,
    pub origin: String,
    pub priority: PriorityClass,
    pub scope: Value,
    pub full: bool,
    /// Attempts allowed per stage, by ordinal.
    pub max_attempts: [u32; 5],
}

/// What enqueueing did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Enqueued {
    /// A new run, its five jobs in the queue; `superseded` lists background runs it cancelled.
    Created { run_id: i64, superseded: Vec<i64> },
    /// A background run was asked for while one is already pending: nothing new.
    AlreadyPending { run_id: i64 },
}

impl Enqueued {
    /// The run asked for: the new one, or the one already pending.
    pub fn run_id(&self) -> i64 {
        match self {
            Enqueued::Created { run_id, .. } | Enqueued::AlreadyPending { run_id } => *run_id,
        }
    }
}

/// A stage job a worker claimed, begun: what its stage should do, or why it cannot run
/// (a job no stage run knows; the run row unreadable).
#[derive(Debug, Clone)]
pub struct Claim {
    pub job_id: String,
    /// The job's payload as stored (a [`crate::pipeline::job::StageJob`] as JSON).
    pub payload: Vec<u8>,
    pub priority: i32,
    pub run_at: chrono::DateTime<chrono::Utc>,
    /// For a stage job, what beginning it decided; None for a job of another queue.
    pub begin: Option<Result<Begin, String>>,
}

/// What a worker should do with a stage job it took.
#[derive(Debug, Clone)]
pub enum Begin {
    /// Do the stage's work: this is attempt `attempt` (1-based).
    Proceed { run: Box<Run>, attempt: i32 },
    /// The predecessor has not succeeded: the job was parked again, no attempt spent.
    Wait,
    /// Nothing to do: the run was cancelled or is over, or this stage already finished. The
    /// job was closed.
    Nothing { reason: String },
}

impl Store {
    /// Registers a repository, or returns the one with the same source and ref. Safe against
    /// concurrent registration of the same source.
    pub async fn register_repository(
        &self,
        kind: &str,
        source: &str,
        git_ref: &str,
        name: &str,
    ) -> Result<Repository, StoreError> {
        Ok(sqlx::query_as(
            "INSERT INTO repositories (source_kind, source, git_ref, name) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, git_ref) DO UPDATE SET source_kind = repositories.source_kind
             RETURNING *",
        )
        .bind(kind)
        .bind(source)
        .bind(git_ref)
        .bind(name)
        .fetch_one(&self.pool)
        .await?)
    }

    /// A repository by id, or by the path/URL it was registered from.
    pub async fn find_repository(&self, selector: &str) -> Result<Option<Repository>, StoreError> {
        // Postgres text holds no NUL, so no source has one (and the query would fail).
        if selector.contains('\0') {
            return Ok(None);
        }
        if let Ok(id) = selector.parse::<i64>() {
            let by_id = sqlx::query_as("SELECT * FROM repositories WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            if by_id.is_some() {
                return Ok(by_id);
            }
        }
        Ok(
            sqlx::query_as("SELECT * FROM repositories WHERE source = $1 ORDER BY git_ref LIMIT 1")
                .bind(selector)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn repository(&self, id: i64) -> Result<Repository, StoreError> {
        sqlx::query_as("SELECT * FROM repositories WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("repository {id}")))
    }

    pub async fn list_repositories(&self) -> Result<Vec<Repository>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM repositories ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Creates a run with its five stage runs and five stage jobs, in one transaction: SYNC
    /// ready to run, the rest parked until their predecessor succeeds.
    ///
    /// A background run is not created while the repository has an unfinished run. A user
    /// run cancels the repository's queued background runs (superseding them).
    pub async fn enqueue_run(&self, new: &NewRun) -> Result<Enqueued, StoreError> {
        let mut tx = self.pool.begin().await?;
        let enqueued = enqueue_in(&mut tx, new).await?;
        tx.commit().await?;
        Ok(enqueued)
    }

    /// Enqueues several runs in one transaction (all or none), as [`Store::enqueue_run`]
    /// does each; the results in the order of `runs`.
    pub async fn enqueue_runs(&self, runs: &[NewRun]) -> Result<Vec<Enqueued>, StoreError> {
        // Repositories' enqueue locks taken in one order, so two batches never deadlock.
        let mut order: Vec<usize> = (0..runs.len()).collect();
        order.sort_by_key(|&i| runs[i].repository_id);
        let mut tx = self.pool.begin().await?;
        let mut out = vec![None; runs.len()];
        for i in order {
            out[i] = Some(enqueue_in(&mut tx, &runs[i]).await?);
        }
        tx.commit().await?;
        Ok(out.into_iter().flatten().collect())
    }

    pub async fn run(&self, run_id: i64) -> Result<Run, StoreError> {
        sqlx::query_as("SELECT * FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))
    }

    pub async fn stage_runs(&self, run_id: i64) -> Result<Vec<StageRun>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM stage_runs WHERE run_id = $1 ORDER BY ordinal")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The most recent runs, newest first: of one repository or all, in one status or any.
    pub async fn list_runs(
        &self,
        repository_id: Option<i64>,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Run>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM runs WHERE ($1::bigint IS NULL OR repository_id = $1)
               AND ($2::text IS NULL OR status = $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(repository_id)
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The stages of several runs, by run and ordinal.
    pub async fn stage_runs_of(&self, run_ids: &[i64]) -> Result<Vec<StageRun>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM stage_runs WHERE run_id = ANY($1) ORDER BY run_id DESC, ordinal",
        )
        .bind(run_ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The files run `run_id` touched (only the failed ones with `failed_only`), by path.
    pub async fn run_items(
        &self,
        run_id: i64,
        failed_only: bool,
    ) -> Result<Vec<RunItem>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT path, change, status, message, duration_ms FROM run_items
             WHERE run_id = $1 AND (NOT $2 OR status = 'failed') ORDER BY path",
        )
        .bind(run_id)
        .bind(failed_only)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The ids of a repository's runs that have not ended, oldest first.
    pub async fn unfinished_runs(&self, repository_id: i64) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE repository_id = $1 AND status IN ('queued', 'running', 'paused')
             ORDER BY id",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Enqueues a run for item `item` of batch job `job_id` and records the item with it,
    /// in one transaction: a retried batch never enqueues the run twice.
    pub async fn enqueue_batch_item(
        &self,
        new: &NewRun,
        job_id: &str,
        item: &str,
    ) -> Result<Enqueued, StoreError> {
        let mut tx = self.pool.begin().await?;
        let enqueued = enqueue_in(&mut tx, new).await?;
        let run_id = enqueued.run_id();
        let message = match enqueued {
            Enqueued::Created { .. } => format!("run {run_id} enqueued"),
            Enqueued::AlreadyPending { .. } => format!("run {run_id} already pending"),
        };
        sqlx::query(
            "INSERT INTO batch_items (job_id, item, status, message, run_id)
             VALUES ($1, $2, 'done', $3, $4)
             ON CONFLICT (job_id, item) DO UPDATE SET status = 'done',
                 message = EXCLUDED.message, run_id = EXCLUDED.run_id, at = now()",
        )
        .bind(job_id)
        .bind(item)
        .bind(message)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(enqueued)
    }

    /// A run's items done and failed (completed, or skipped with a reason, count as done).
    pub async fn item_counts(&self, run_id: i64) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('completed', 'skipped')),
                    count(*) FILTER (WHERE status = 'failed')
             FROM run_items WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Seconds per item over the last runs that succeeded with items: the measured
    /// throughput a new run's duration is estimated from. None without such runs.
    pub async fn seconds_per_item(&self) -> Result<Option<f64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT sum(extract(epoch FROM r.finished_at - r.started_at))::float8
                    / NULLIF(sum(c.n), 0)::float8
             FROM (SELECT id, started_at, finished_at FROM runs
                    WHERE status = 'succeeded' AND started_at IS NOT NULL
                    ORDER BY id DESC LIMIT 20) r
             JOIN LATERAL (SELECT count(*) AS n FROM run_items i WHERE i.run_id = r.id) c
               ON c.n > 0",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Claims up to `limit` stage jobs for worker `worker`, highest priority first (then
    /// oldest), and begins each, in one statement (see `trawl_claim_stages` and
    /// `trawl_begin_stage` in the migrations). The claims come back in priority order.
    pub async fn claim_stages(&self, worker: &str, limit: usize) -> Result<Vec<Claim>, StoreError> {
        type Row = (
            String,
            Vec<u8>,
            Option<i32>,
            chrono::DateTime<chrono::Utc>,
            String,
            i32,
            Option<String>,
            Option<Value>,
        );
        let rows: Vec<Row> =
            sqlx::query_as("SELECT * FROM trawl_claim_stages($1, $2, $3, to_timestamp($4))")
                .bind(worker)
                .bind(STAGE_QUEUE)
                .bind(limit.clamp(1, i32::MAX as usize) as i32)
                .bind(PARKED_UNTIL_SECS as f64)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(
                |(job_id, payload, priority, run_at, outcome, attempt, reason, run)| {
                    let begin = match outcome.as_str() {
                        "proceed" => serde_json::from_value(run.unwrap_or_default())
                            .map(|run| Begin::Proceed {
                                run: Box::new(run),
                                attempt,
                            })
                            .map_err(|e| format!("the run of job {job_id} is unreadable: {e}")),
                        "wait" => Ok(Begin::Wait),
                        "nothing" => Ok(Begin::Nothing {
                            reason: reason.unwrap_or_default(),
                        }),
                        _ => Err(format!(
                            "no stage run has job {job_id}: it belongs to no run"
                        )),
                    };
                    Claim {
                        job_id,
                        payload,
                        priority: priority.unwrap_or(0),
                        run_at,
                        begin: Some(begin),
                    }
                },
            )
            .collect())
    }

    /// Claims up to `limit` jobs of another apalis queue for worker `worker`, by apalis'
    /// own fetch (`apalis.get_jobs`), highest priority first.
    pub async fn claim_jobs(
        &self,
        worker: &str,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        type Row = (String, Vec<u8>, Option<i32>, chrono::DateTime<chrono::Utc>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, job, priority, run_at FROM apalis.get_jobs($1, $2, $3)
                 ORDER BY priority DESC, run_at",
        )
        .bind(worker)
        .bind(queue)
        .bind(limit.clamp(1, i32::MAX as usize) as i32)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job_id, payload, priority, run_at)| Claim {
                job_id,
                payload,
                priority: priority.unwrap_or(0),
                run_at,
                begin: None,
            })
            .collect())
    }

    /// Records the success of several stages, in one statement and one transaction (see
    /// `trawl_complete_stage` in the migrations), each given as (job id, result, up to
    /// date). An up-to-date stage skips the later stages and ends its run; any other
    /// releases the next stage's job to the queue (and wakes the workers).
    pub async fn complete_stages(&self, done: &[(String, Value, bool)]) -> Result<(), StoreError> {
        let ids: Vec<&str> = done.iter().map(|d| d.0.as_str()).collect();
        let results: Vec<&Value> = done.iter().map(|d| &d.1).collect();
        let up_to_date: Vec<bool> = done.iter().map(|d| d.2).collect();
        sqlx::query(
            "SELECT trawl_complete_stage(d.job_id, d.result, d.up_to_date, $4)
             FROM unnest($1::text[], $2::jsonb[], $3::bool[]) WITH ORDINALITY
                  AS d (job_id, result, up_to_date, n)
             ORDER BY d.n",
        )
        .bind(ids)
        .bind(results)
        .bind(up_to_date)
        .bind(STAGE_QUEUE)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a retryable failure: the job goes back to the queue after `delay`, with the
    /// attempt counted.
    pub async fn retry_stage(
        &self,
        job_id: &str,
        error: &str,
        delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let still_running = sqlx::query("UPDATE stage_runs SET status = 'queued', last_error = $2, current_item = NULL WHERE job_id = $1 AND status = 'running'")
            .bind(job_id)
            .bind(error)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if still_running == 0 {
            // Cancelled meanwhile: no retry.
            return Ok(());
        }
        sqlx::query(
            "UPDATE apalis.jobs SET status = 'Failed', attempts = attempts + 1, lock_by = NULL, lock_at = NULL,
                    done_at = NULL, run_at = now() + make_interval(secs => $3), last_result = $2
             WHERE id = $1",
        )
        .bind(job_id)
        .bind(serde_json::json!({ "Err": error }))
        .bind(delay.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a stage that stopped between batches because its run was paused or
    /// cancelled. Paused: the stage is parked until the run is resumed, its attempt given
    /// back. Resumed meanwhile: back to the queue. Cancelled: its job is closed.
    pub async fn stop_stage(&self, job_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The run first, locked as pause, resume and cancel lock it: a resume committing
        // meanwhile is seen whole, never half.
        let run_status: Option<String> = sqlx::query_scalar(
            "SELECT r.status FROM runs r
             WHERE r.id = (SELECT s.run_id FROM stage_runs s WHERE s.job_id = $1)
             FOR UPDATE",
        )
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (stage_status, job_status, run_at) = match run_status.as_deref() {
            Some("paused") => ("waiting", PARKED_STATUS, Some(PARKED_UNTIL_SECS as f64)),
            Some("queued" | "running") => ("queued", "Pending", None),
            _ => {
                sqlx::query(
                    "UPDATE apalis.jobs SET status = 'Killed', done_at = now(), lock_by = NULL,
                            lock_at = NULL
                     WHERE id = $1 AND status NOT IN ('Done', 'Killed')",
                )
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(());
            }
        };
        sqlx::query(
            "UPDATE stage_runs SET status = $2, attempts = GREATEST(attempts - 1, 0),
                    current_item = NULL
             WHERE job_id = $1 AND status = 'running'",
        )
        .bind(job_id)
        .bind(stage_status)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE apalis.jobs SET status = $2, lock_by = NULL, lock_at = NULL, done_at = NULL,
                    run_at = COALESCE(to_timestamp($3), now())
             WHERE id = $1",
        )
        .bind(job_id)
        .bind(job_status)
        .bind(run_at)
        .execute(&mut *tx)
        .await?;
        if job_status == "Pending" {
            notify_job(&mut tx, job_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Pauses a queued or running run: its queued or waiting stage is parked, and a stage
    /// at work stops after its current batch (see `stop_stage`).
    pub async fn pause_run(&self, run_id: i64) -> Result<Run, RunControlError> {
        let mut tx = self.pool.begin().await?;
        let run = lock_run(&mut tx, run_id).await?;
        if !matches!(run.status.as_str(), "queued" | "running") {
            return Err(RunControlError::WrongState {
                run_id,
                status: run.status,
                action: "pause",
                allowed: "queued or running",
            });
        }
        sqlx::query("UPDATE runs SET status = 'paused' WHERE id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        let parked: Vec<String> = sqlx::query_scalar(
            "UPDATE stage_runs SET status = 'waiting'
             WHERE run_id = $1 AND status IN ('queued', 'waiting') RETURNING job_id",
        )
        .bind(run_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE apalis.jobs SET status = $2, run_at = to_timestamp($3)
             WHERE id = ANY($1) AND status IN ('Pending', 'Failed', $2)",
        )
        .bind(&parked)
        .bind(PARKED_STATUS)
        .bind(PARKED_UNTIL_SECS as f64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(self.run(run_id).await?)
    }

    /// Resumes a paused run where it stopped: its first open stage goes back to the queue.
    pub async fn resume_run(&self, run_id: i64) -> Result<Run, RunControlError> {
        let mut tx = self.pool.begin().await?;
        let run = lock_run(&mut tx, run_id).await?;
        if run.status != "paused" {
            return Err(RunControlError::WrongState {
                run_id,
                status: run.status,
                action: "resume",
                allowed: "paused",
            });
        }
        sqlx::query(
            "UPDATE runs SET status = CASE WHEN started_at IS NULL THEN 'queued' ELSE 'running' END
             WHERE id = $1",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        let released: Option<String> = sqlx::query_scalar(
            "UPDATE stage_runs s SET status = 'queued', queued_at = now()
             WHERE s.run_id = $1 AND s.status = 'waiting'
               AND s.ordinal = (SELECT min(o.ordinal) FROM stage_runs o
                                 WHERE o.run_id = $1 AND o.status IN ('queued', 'waiting', 'running'))
               AND (s.ordinal = 0 OR EXISTS (SELECT 1 FROM stage_runs p WHERE p.run_id = $1
                        AND p.ordinal = s.ordinal - 1 AND p.status = 'succeeded'))
             RETURNING s.job_id",
        )
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(job_id) = released {
            sqlx::query(
                "UPDATE apalis.jobs SET status = 'Pending', run_at = now(), lock_by = NULL,
                        lock_at = NULL
                 WHERE id = $1 AND status IN ($2, 'Pending', 'Failed')",
            )
            .bind(&job_id)
            .bind(PARKED_STATUS)
            .execute(&mut *tx)
            .await?;
            notify_job(&mut tx, &job_id).await?;
        }
        tx.commit().await?;
        Ok(self.run(run_id).await?)
    }

    /// Cancels a run that has not ended: its open stages are cancelled and their jobs
    /// closed; a stage at work stops after its current batch. What it committed stays; no
    /// index version is stamped, so the last one stays current.
    pub async fn cancel_run(&self, run_id: i64, reason: &str) -> Result<Run, RunControlError> {
        let mut tx = self.pool.begin().await?;
        let run = lock_run(&mut tx, run_id).await?;
        if !matches!(run.status.as_str(), "queued" | "running" | "paused") {
            return Err(RunControlError::WrongState {
                run_id,
                status: run.status,
                action: "cancel",
                allowed: "queued, running or paused",
            });
        }
        cancel_run_in(&mut tx, run_id, reason).await?;
        tx.commit().await?;
        Ok(self.run(run_id).await?)
    }

    /// Records a failure for good: the stage fails, later stages are cancelled with the
    /// reason, and the run fails.
    pub async fn fail_stage(&self, job_id: &str, error: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(sr) = finish_attempt(
            &mut tx,
            job_id,
            StageStatus::Failed,
            Some(error),
            &serde_json::json!({ "Err": error }),
        )
        .await?
        else {
            return Ok(());
        };
        let reason = format!("cancelled: stage {} failed: {error}", sr.stage);
        cancel_later_stages(&mut tx, sr.run_id, sr.ordinal, &reason).await?;
        sqlx::query(
            "UPDATE runs SET status = 'failed', finished_at = now(), error = $2 WHERE id = $1",
        )
        .bind(sr.run_id)
        .bind(format!("stage {} failed: {error}", sr.stage))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Fails a job for good that cannot be run (a malformed payload, no run): its stage run
    /// too, when it has one.
    pub async fn kill_job(&self, job_id: &str, error: &str) -> Result<(), StoreError> {
        let has_stage: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM stage_runs WHERE job_id = $1)")
                .bind(job_id)
                .fetch_one(&self.pool)
                .await?;
        if has_stage {
            return self.fail_stage(job_id, error).await;
        }
        let mut tx = self.pool.begin().await?;
        close_job(
            &mut tx,
            job_id,
            "Killed",
            &serde_json::json!({ "Err": error }),
            true,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Ends a stage run's last attempt with `status` (succeeded or failed) and closes its job
/// (Done or Killed), counting the attempt.
async fn finish_attempt(
    tx: &mut Transaction<'_, Postgres>,
    job_id: &str,
    status: StageStatus,
    error: Option<&str>,
    job_result: &Value,
) -> Result<Option<StageRun>, StoreError> {
    // A stage an operator cancelled while it ran keeps its cancelled status: the outcome of
    // its last attempt is dropped.
    let sr: Option<StageRun> = sqlx::query_as(
        "UPDATE stage_runs SET status = $2, finished_at = now(), last_error = $3, current_item = NULL
         WHERE job_id = $1 AND status IN ('queued', 'waiting', 'running') RETURNING *",
    )
    .bind(job_id)
    .bind(status.as_str())
    .bind(error)
    .fetch_optional(&mut **tx)
    .await?;
    if sr.is_some() {
        let job_status = if status == StageStatus::Succeeded {
            "Done"
        } else {
            "Killed"
        };
        close_job(tx, job_id, job_status, job_result, true).await?;
    }
    Ok(sr)
}

/// Closes a job with the given apalis status and result; `count_attempt` when an attempt
/// ran (success or final failure), not when the job closes without work.
async fn close_job(
    tx: &mut Transaction<'_, Postgres>,
    job_id: &str,
    status: &str,
    result: &Value,
    count_attempt: bool,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE apalis.jobs SET status = $2, last_result = $3, done_at = now(), lock_by = NULL, lock_at = NULL,
                attempts = attempts + $4::int WHERE id = $1",
    )
    .bind(job_id)
    .bind(status)
    .bind(result)
    .bind(i32::from(count_attempt))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sends the notification apalis' insert trigger sends, so listening workers fetch at once
/// rather than at their next poll; delivered on commit.
pub(super) async fn wake_workers(
    tx: &mut Transaction<'_, Postgres>,
    job_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT pg_notify('apalis::job::insert', json_build_object('job_type', $2::text, 'id', $1::text, 'run_at', now())::text)",
    )
    .bind(job_id)
    .bind(STAGE_QUEUE)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn cancel_later_stages(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    after: i16,
    reason: &str,
) -> Result<(), StoreError> {
    cancel_stages_from(tx, run_id, after + 1, reason).await
}

/// Cancels the unfinished stages of a run from ordinal `from` on, and kills their jobs.
pub(super) async fn cancel_stages_from(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    from: i16,
    reason: &str,
) -> Result<(), StoreError> {
    let jobs: Vec<String> = sqlx::query_scalar(
        "UPDATE stage_runs SET status = 'cancelled', finished_at = now(), last_error = $3
         WHERE run_id = $1 AND ordinal >= $2 AND status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')
         RETURNING job_id",
    )
    .bind(run_id)
    .bind(from)
    .bind(reason)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Killed', done_at = now(), lock_by = NULL, last_result = $2
         WHERE id = ANY($1) AND status NOT IN ('Done', 'Killed')",
    )
    .bind(&jobs)
    .bind(serde_json::json!({ "Err": reason }))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Creates a run with its five stage runs and jobs inside `tx` (see [`Store::enqueue_run`]).
async fn enqueue_in(
    tx: &mut Transaction<'_, Postgres>,
    new: &NewRun,
) -> Result<Enqueued, StoreError> {
    // Serialise enqueues of one repository: the pile-up and supersede rules read, then write.
    sqlx::query("SELECT pg_advisory_xact_lock(7001, $1::int)")
        .bind(new.repository_id as i32)
        .execute(&mut **tx)
        .await?;

    let mut superseded = Vec::new();
    match new.trigger {
        Trigger::Background => {
            let pending: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM runs WHERE repository_id = $1 AND status IN ('queued', 'running', 'paused') ORDER BY id LIMIT 1",
            )
            .bind(new.repository_id)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(run_id) = pending {
                return Ok(Enqueued::AlreadyPending { run_id });
            }
        }
        Trigger::User => {
            superseded = sqlx::query_scalar(
                "SELECT id FROM runs WHERE repository_id = $1 AND trigger = 'background' AND status = 'queued' FOR UPDATE",
            )
            .bind(new.repository_id)
            .fetch_all(&mut **tx)
            .await?;
        }
    }

    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (repository_id, trigger, origin, priority_base, scope, full_reindex)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(new.repository_id)
    .bind(new.trigger.as_str())
    .bind(&new.origin)
    .bind(new.priority.base())
    .bind(&new.scope)
    .bind(new.full)
    .fetch_one(&mut **tx)
    .await?;

    for old in &superseded {
        cancel_run_in(tx, *old, &format!("superseded by user run {run_id}")).await?;
    }

    // The five stage runs and their five jobs, in two statements. The jobs go straight
    // into apalis' table: SYNC ready, the rest parked (see PARKED_STATUS); apalis'
    // insert trigger wakes the workers for SYNC only, the one due now.
    // Column by column, one entry per stage; SYNC alone is due now.
    let due = Stage::ALL.map(|s| s == Stage::Sync);
    let ids = Stage::ALL.map(|_| ulid::Ulid::generate().to_string());
    let names = Stage::ALL.map(Stage::as_str);
    let ordinals = Stage::ALL.map(Stage::ordinal);
    let statuses = due.map(|d| {
        if d {
            StageStatus::Queued
        } else {
            StageStatus::Waiting
        }
        .as_str()
    });
    let attempts = Stage::ALL.map(|s| new.max_attempts[s.ordinal() as usize].max(1) as i32);
    let payloads = Stage::ALL.map(|stage| {
        let job = crate::pipeline::job::StageJob {
            run_id,
            repository_id: new.repository_id,
            stage,
            scope: new.scope.clone(),
        };
        serde_json::to_vec(&job).expect("stage job serialises")
    });
    let job_statuses = due.map(|d| if d { "Pending" } else { PARKED_STATUS });
    let run_ats = due.map(|d| (!d).then_some(PARKED_UNTIL_SECS as f64));
    let priorities = Stage::ALL.map(|s| s.priority(new.priority.base()));
    sqlx::query(
        "INSERT INTO stage_runs (run_id, stage, ordinal, job_id, status, max_attempts)
         SELECT $1, * FROM unnest($2::text[], $3::smallint[], $4::text[], $5::text[], $6::int[])",
    )
    .bind(run_id)
    .bind(names)
    .bind(ordinals)
    .bind(&ids)
    .bind(statuses)
    .bind(attempts)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
         SELECT j.id, $2, j.job, j.status, 0, j.max_attempts,
                COALESCE(to_timestamp(j.run_at), now()), j.priority
         FROM unnest($1::text[], $3::bytea[], $4::text[], $5::int[], $6::float8[], $7::int[])
              AS j (id, job, status, max_attempts, run_at, priority)",
    )
    .bind(&ids)
    .bind(STAGE_QUEUE)
    .bind(&payloads)
    .bind(job_statuses)
    .bind(attempts)
    .bind(run_ats)
    .bind(priorities)
    .execute(&mut **tx)
    .await?;
    Ok(Enqueued::Created { run_id, superseded })
}

/// The run `run_id`, locked for the rest of the transaction.
async fn lock_run(tx: &mut Transaction<'_, Postgres>, run_id: i64) -> Result<Run, RunControlError> {
    sqlx::query_as("SELECT * FROM runs WHERE id = $1 FOR UPDATE")
        .bind(run_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(RunControlError::Unknown(run_id))
}

/// Wakes the workers for job `job_id` (delivered on commit), as apalis' insert trigger does.
async fn notify_job(tx: &mut Transaction<'_, Postgres>, job_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT pg_notify('apalis::job::insert',
                json_build_object('job_type', $1::text, 'id', $2::text, 'run_at', now())::text)",
    )
    .bind(STAGE_QUEUE)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Why pausing, resuming or cancelling a run was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunControlError {
    #[error("no run {0}: see `trawl runs list` for run ids")]
    Unknown(i64),
    #[error("cannot {action} run {run_id}: it is {status} (only a {allowed} run can be)")]
    WrongState {
        run_id: i64,
        status: String,
        action: &'static str,
        allowed: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RunControlError {
    fn from(e: sqlx::Error) -> Self {
        RunControlError::Store(e.into())
    }
}

/// Cancels a run that has not started, with its stages and jobs.
async fn cancel_run_in(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    reason: &str,
) -> Result<(), StoreError> {
    cancel_later_stages(tx, run_id, -1, reason).await?;
    sqlx::query(
        "UPDATE runs SET status = 'cancelled', finished_at = now(), error = $2 WHERE id = $1",
    )
    .bind(run_id)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
