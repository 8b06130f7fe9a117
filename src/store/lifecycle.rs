//! The lifecycle's events as the store carries them out: thin typed wrappers over the SQL
//! functions of `lifecycle.sql`, one per event of [`crate::domain::lifecycle::Event`].
//!
//! The pipeline takes the completion of a stage job into its own hands: every transition
//! writes trawl's records and the job's row in one transaction and clears the job's
//! `lock_by`, which makes apalis' own result write (guarded by `lock_by = worker`) a no-op.
//! That is how a waiting stage goes back to the queue without spending an attempt, how
//! retries get a backoff in `run_at`, and how a stage's success releases the next stage
//! atomically. No status of a run, a stage or a job is written anywhere else.

use serde_json::Value;
use sqlx::{Postgres, Transaction};

use super::runs::Run;
use super::tasks::{Task, TaskError};
use super::{Store, StoreError};
use crate::domain::lifecycle::{Event, Refused, run_allows};
use crate::domain::{RunStatus, Stage};

/// The one apalis queue (job_type) of all five stages: apalis orders by priority only
/// within a queue, and the stages must compete by priority.
pub const STAGE_QUEUE: &str = "trawl::stage";
/// `run_at` of a parked job (a stage waiting for its predecessor): far enough never to come
/// (`trawl_parked_until()` in the SQL).
pub const PARKED_UNTIL_SECS: i64 = 7_258_118_400; // 2200-01-01

/// A stage job a worker claimed, begun: what its stage should do, or why it cannot run
/// (a job no stage run knows; the run row unreadable).
#[derive(Debug, Clone)]
pub struct Claim {
    pub job_id: String,
    /// The job's payload as stored (a [`crate::domain::job::StageJob`] as JSON).
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

/// Why pausing, resuming or cancelling a run was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunControlError {
    #[error("no run {0}: see `trawl runs list` for run ids")]
    Unknown(i64),
    #[error("cannot {} run {run_id}: it is {} (only {} can be)", .refused.action, .refused.status, .refused.allowed)]
    WrongState { run_id: i64, refused: Refused },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RunControlError {
    fn from(e: sqlx::Error) -> Self {
        RunControlError::Store(e.into())
    }
}

/// The answer of an operator's event function: (applied, status before); no row when the
/// run or task does not exist.
type Applied = Option<(bool, String)>;

impl Store {
    /// Claims up to `limit` stage jobs for worker `worker`, highest priority first (then
    /// oldest), and begins each, in one statement (`trawl_claim_stages`). The claims come
    /// back in priority order.
    pub async fn claim_stages(&self, worker: &str, limit: usize) -> Result<Vec<Claim>, StoreError> {
        self.claim_stages_of(worker, limit, None).await
    }

    /// [`Store::claim_stages`] of `stages` only (None: every stage).
    pub async fn claim_stages_of(
        &self,
        worker: &str,
        limit: usize,
        stages: Option<&[Stage]>,
    ) -> Result<Vec<Claim>, StoreError> {
        let stages: Option<Vec<&str>> = stages.map(|s| s.iter().map(|s| s.as_str()).collect());
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
            sqlx::query_as("SELECT * FROM trawl_claim_stages($1, $2, $3, to_timestamp($4), $5)")
                .bind(worker)
                .bind(STAGE_QUEUE)
                .bind(limit.clamp(1, i32::MAX as usize) as i32)
                .bind(PARKED_UNTIL_SECS as f64)
                .bind(stages)
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

    /// Records the success of several stages, in one statement and one transaction
    /// (`trawl_complete_stage`), each given as (job id, result, up to date). An up-to-date
    /// stage skips the later stages and ends its run; any other releases the next stage's
    /// job to the queue (and wakes the workers).
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
    /// attempt counted (`trawl_retry_stage`).
    pub async fn retry_stage(
        &self,
        job_id: &str,
        error: &str,
        delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT trawl_retry_stage($1, $2, $3)")
            .bind(job_id)
            .bind(error)
            .bind(delay.as_secs_f64())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a failure for good: the stage fails, later stages are cancelled with the
    /// reason, and the run fails (`trawl_fail_stage`).
    pub async fn fail_stage(&self, job_id: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT trawl_fail_stage($1, $2)")
            .bind(job_id)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Fails a job for good that cannot be run (a malformed payload, no run): its stage run
    /// too, when it has one (`trawl_kill_job`).
    pub async fn kill_job(&self, job_id: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT trawl_kill_job($1, $2)")
            .bind(job_id)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a stage that stopped between batches because its run was paused or
    /// cancelled (`trawl_stop_stage`): parked until the resume, back in the queue if resumed
    /// meanwhile, or closed.
    pub async fn stop_stage(&self, job_id: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT trawl_stop_stage($1, $2)")
            .bind(job_id)
            .bind(STAGE_QUEUE)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives back the jobs workers named `worker…` hold (only `ids`, when given): back in
    /// the queue, as they were before the claim. How many.
    pub async fn abandon_jobs(
        &self,
        worker: &str,
        ids: Option<&[String]>,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT trawl_abandon_jobs($1, $2)")
            .bind(worker)
            .bind(ids)
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    /// Closes a job of another queue (a batch job) with `status` (`Done` or `Killed`) and
    /// `result`, its attempt counted.
    pub async fn close_job(
        &self,
        job_id: &str,
        status: &str,
        result: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT trawl_close_jobs(ARRAY[$1], $2, $3, true)")
            .bind(job_id)
            .bind(status)
            .bind(result)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A failed attempt of a job of another queue: back in the queue after `delay`.
    pub async fn retry_job(
        &self,
        job_id: &str,
        error: &str,
        delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT trawl_retry_job($1, $2, $3)")
            .bind(job_id)
            .bind(error)
            .bind(delay.as_secs_f64())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Pauses a queued or running run: its queued or waiting stage is parked, and a stage
    /// at work stops after its current batch (see [`Store::stop_stage`]).
    pub async fn pause_run(&self, run_id: i64) -> Result<Run, RunControlError> {
        let applied = sqlx::query_as("SELECT * FROM trawl_pause_run($1)")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        self.run_controlled(run_id, Event::Pause, applied).await
    }

    /// Resumes a paused run where it stopped: its first open stage goes back to the queue.
    pub async fn resume_run(&self, run_id: i64) -> Result<Run, RunControlError> {
        let applied = sqlx::query_as("SELECT * FROM trawl_resume_run($1, $2)")
            .bind(run_id)
            .bind(STAGE_QUEUE)
            .fetch_optional(&self.pool)
            .await?;
        self.run_controlled(run_id, Event::Resume, applied).await
    }

    /// Cancels a run that has not ended: its open stages are cancelled and their jobs
    /// closed; a stage at work stops after its current batch. What it committed stays; no
    /// index version is stamped, so the last one stays current.
    pub async fn cancel_run(&self, run_id: i64, reason: &str) -> Result<Run, RunControlError> {
        let applied = sqlx::query_as("SELECT * FROM trawl_cancel_run($1, $2)")
            .bind(run_id)
            .bind(reason)
            .fetch_optional(&self.pool)
            .await?;
        self.run_controlled(run_id, Event::Cancel, applied).await
    }

    async fn run_controlled(
        &self,
        run_id: i64,
        event: Event,
        applied: Applied,
    ) -> Result<Run, RunControlError> {
        let (ok, status) = applied.ok_or(RunControlError::Unknown(run_id))?;
        if !ok {
            // The SQL refused under the run's lock; the model words it.
            let status = RunStatus::parse(&status).ok_or_else(|| {
                StoreError::Invalid(format!("run {run_id} has an unknown status {status:?}"))
            })?;
            let refused = run_allows(event, status).err().ok_or_else(|| {
                StoreError::Invalid(format!(
                    "run {run_id}: the store refused to {} it while {status}, which the lifecycle allows",
                    event.action()
                ))
            })?;
            return Err(RunControlError::WrongState { run_id, refused });
        }
        Ok(self.run(run_id).await?)
    }

    /// Puts a failed or cancelled stage back in the queue with a fresh budget of attempts;
    /// its run goes on from its first stage that did not succeed (`trawl_retry_task`).
    pub async fn retry_task(&self, job_id: &str) -> Result<Task, TaskError> {
        let applied = sqlx::query_as("SELECT * FROM trawl_retry_task($1, $2)")
            .bind(job_id)
            .bind(STAGE_QUEUE)
            .fetch_optional(&self.pool)
            .await?;
        self.task_controlled(job_id, true, applied).await
    }

    /// Cancels a stage that has not finished, and its run (`trawl_cancel_task`).
    pub async fn cancel_task(&self, job_id: &str, reason: &str) -> Result<Task, TaskError> {
        let applied = sqlx::query_as("SELECT * FROM trawl_cancel_task($1, $2)")
            .bind(job_id)
            .bind(reason)
            .fetch_optional(&self.pool)
            .await?;
        self.task_controlled(job_id, false, applied).await
    }

    async fn task_controlled(
        &self,
        job_id: &str,
        retry: bool,
        applied: Applied,
    ) -> Result<Task, TaskError> {
        let (ok, status) = applied.ok_or_else(|| TaskError::Unknown(job_id.into()))?;
        if !ok {
            // The SQL refused under the task's lock, saying the stage's status.
            let id = job_id.to_string();
            return Err(if retry {
                TaskError::NotRetryable { id, status }
            } else {
                TaskError::NotCancellable { id, status }
            });
        }
        self.task(job_id)
            .await?
            .ok_or_else(|| TaskError::Unknown(job_id.into()))
    }
}

/// Creates the five stage runs of new run `run_id` and their jobs inside `tx`
/// (`trawl_create_stages`): SYNC due now, the rest parked. Arrays by ordinal.
pub(super) async fn create_stages(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    payloads: &[Vec<u8>; 5],
    max_attempts: [i32; 5],
    priorities: [i32; 5],
) -> Result<(), StoreError> {
    let ids = Stage::ALL.map(|_| ulid::Ulid::generate().to_string());
    sqlx::query("SELECT trawl_create_stages($1, $2, $3, $4, $5, $6, $7)")
        .bind(run_id)
        .bind(Stage::ALL.map(Stage::as_str))
        .bind(&ids)
        .bind(payloads)
        .bind(max_attempts)
        .bind(priorities)
        .bind(STAGE_QUEUE)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Cancels run `run_id` inside `tx` (a background run a user run supersedes).
pub(super) async fn cancel_run_in(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT * FROM trawl_cancel_run($1, $2)")
        .bind(run_id)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The jobs of `queue`'s workers silent for `after` go back to the queue, the attempt
/// counted (`trawl_rescue_orphans`), inside `tx`. How many.
pub async fn rescue_orphans(
    tx: &mut Transaction<'_, Postgres>,
    queue: &str,
    after: std::time::Duration,
) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT trawl_rescue_orphans($1, $2)")
        .bind(queue)
        .bind(after.as_secs_f64())
        .fetch_one(&mut **tx)
        .await?;
    Ok(n.max(0) as u64)
}
