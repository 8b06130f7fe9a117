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

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Repository {
    pub id: i64,
    pub source_kind: String,
    pub source: String,
    pub git_ref: String,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_synced_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Serialize, FromRow)]
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

#[derive(Debug, Clone, Serialize, FromRow)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Enqueued {
    /// A new run, its five jobs in the queue; `superseded` lists background runs it cancelled.
    Created { run_id: i64, superseded: Vec<i64> },
    /// A background run was asked for while one is already pending: nothing new.
    AlreadyPending { run_id: i64 },
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
        // Serialise enqueues of one repository: the pile-up and supersede rules read, then write.
        sqlx::query("SELECT pg_advisory_xact_lock(7001, $1::int)")
            .bind(new.repository_id as i32)
            .execute(&mut *tx)
            .await?;

        let mut superseded = Vec::new();
        match new.trigger {
            Trigger::Background => {
                let pending: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM runs WHERE repository_id = $1 AND status IN ('queued', 'running') ORDER BY id LIMIT 1",
                )
                .bind(new.repository_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(run_id) = pending {
                    tx.commit().await?;
                    return Ok(Enqueued::AlreadyPending { run_id });
                }
            }
            Trigger::User => {
                superseded = sqlx::query_scalar(
                    "SELECT id FROM runs WHERE repository_id = $1 AND trigger = 'background' AND status = 'queued' FOR UPDATE",
                )
                .bind(new.repository_id)
                .fetch_all(&mut *tx)
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
        .fetch_one(&mut *tx)
        .await?;

        for old in &superseded {
            cancel_run_in(&mut tx, *old, &format!("superseded by user run {run_id}")).await?;
        }

        let mut tasks = Vec::with_capacity(5);
        for stage in Stage::ALL {
            let job_id = ulid::Ulid::generate().to_string();
            let first = stage == Stage::Sync;
            let status = if first {
                StageStatus::Queued
            } else {
                StageStatus::Waiting
            };
            let max_attempts = new.max_attempts[stage.ordinal() as usize].max(1);
            sqlx::query(
                "INSERT INTO stage_runs (run_id, stage, ordinal, job_id, status, max_attempts) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(run_id)
            .bind(stage.as_str())
            .bind(stage.ordinal())
            .bind(&job_id)
            .bind(status.as_str())
            .bind(max_attempts as i32)
            .execute(&mut *tx)
            .await?;
            let payload = crate::pipeline::job::StageJob {
                run_id,
                repository_id: new.repository_id,
                stage,
                scope: new.scope.clone(),
            };
            let bytes = serde_json::to_vec(&payload).expect("stage job serialises");
            let mut builder = apalis::prelude::TaskBuilder::new(bytes)
                .task_id(apalis::prelude::TaskId::from_ulid(
                    job_id.parse().expect("fresh ulid"),
                ))
                .priority(stage.priority(new.priority.base()) as usize)
                .max_attempts(max_attempts as usize);
            if !first {
                builder = builder.run_at_timestamp(PARKED_UNTIL_SECS as u64);
            }
            tasks.push(builder.build());
        }
        apalis_postgres::queries::push_tasks(&mut *tx, STAGE_QUEUE, tasks)
            .await
            .map_err(|e| match e {
                apalis_postgres::Error::Database(e) => StoreError::from(e),
                other => StoreError::Database {
                    message: other.to_string(),
                    code: None,
                    retryable: false,
                },
            })?;
        tx.commit().await?;
        Ok(Enqueued::Created { run_id, superseded })
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

    pub async fn list_runs(
        &self,
        repository_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Run>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM runs WHERE ($1::bigint IS NULL OR repository_id = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(repository_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Decides what a worker does with the stage job `job_id` it took, and records it.
    pub async fn begin_stage(&self, job_id: &str) -> Result<Begin, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sr: Option<StageRun> =
            sqlx::query_as("SELECT * FROM stage_runs WHERE job_id = $1 FOR UPDATE")
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(sr) = sr else {
            return Err(StoreError::NotFound(format!("stage run of job {job_id}")));
        };
        let run: Run = sqlx::query_as("SELECT * FROM runs WHERE id = $1 FOR UPDATE")
            .bind(sr.run_id)
            .fetch_one(&mut *tx)
            .await?;
        let stage_status = StageStatus::parse(&sr.status).unwrap_or(StageStatus::Failed);
        if run.run_status().is_finished() || stage_status.is_finished() {
            let reason = format!(
                "run {} is {}, stage {} is {}",
                run.id, run.status, sr.stage, sr.status
            );
            close_job(
                &mut tx,
                job_id,
                "Done",
                &serde_json::json!({ "Ok": reason }),
                false,
            )
            .await?;
            tx.commit().await?;
            return Ok(Begin::Nothing { reason });
        }
        if sr.ordinal > 0 {
            let prev: String = sqlx::query_scalar(
                "SELECT status FROM stage_runs WHERE run_id = $1 AND ordinal = $2",
            )
            .bind(sr.run_id)
            .bind(sr.ordinal - 1)
            .fetch_one(&mut *tx)
            .await?;
            if prev != StageStatus::Succeeded.as_str() {
                // Back to the queue, parked until the predecessor releases it; attempts untouched.
                sqlx::query(
                    "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL,
                            run_at = to_timestamp($2) WHERE id = $1",
                )
                .bind(job_id)
                .bind(PARKED_UNTIL_SECS as f64)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE stage_runs SET status = 'waiting' WHERE job_id = $1")
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(Begin::Wait);
            }
        }
        sqlx::query(
            "UPDATE stage_runs SET status = 'running', attempts = attempts + 1,
                    started_at = COALESCE(started_at, now()), current_item = NULL WHERE job_id = $1",
        )
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        let run: Run = sqlx::query_as(
            "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, now()) WHERE id = $1 RETURNING *",
        )
        .bind(sr.run_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Begin::Proceed {
            run: Box::new(run),
            attempt: sr.attempts + 1,
        })
    }

    /// Records a stage's success. When `up_to_date`, the later stages are skipped and the run
    /// ends; otherwise the next stage's job is released to the queue (and workers woken).
    pub async fn complete_stage(
        &self,
        job_id: &str,
        result: &Value,
        up_to_date: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(sr) = finish_attempt(
            &mut tx,
            job_id,
            StageStatus::Succeeded,
            None,
            &serde_json::json!({ "Ok": result }),
        )
        .await?
        else {
            return Ok(());
        };
        let stage_result = serde_json::json!({ sr.stage.clone(): result });
        sqlx::query("UPDATE runs SET result = result || $2 WHERE id = $1")
            .bind(sr.run_id)
            .bind(&stage_result)
            .execute(&mut *tx)
            .await?;
        let last = sr.ordinal as usize == Stage::ALL.len() - 1;
        if up_to_date && !last {
            let later: Vec<String> = sqlx::query_scalar(
                "UPDATE stage_runs SET status = 'skipped', finished_at = now(), last_error = 'nothing changed since the last sync'
                 WHERE run_id = $1 AND ordinal > $2 RETURNING job_id",
            )
            .bind(sr.run_id)
            .bind(sr.ordinal)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE apalis.jobs SET status = 'Done', done_at = now(), run_at = now(), lock_by = NULL,
                        last_result = '{\"Ok\": \"skipped: nothing changed since the last sync\"}' WHERE id = ANY($1)",
            )
            .bind(&later)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE runs SET status = 'succeeded', finished_at = now(), result = result || '{\"up_to_date\": true}' WHERE id = $1",
            )
            .bind(sr.run_id)
            .execute(&mut *tx)
            .await?;
        } else if last {
            sqlx::query("UPDATE runs SET status = 'succeeded', finished_at = now() WHERE id = $1")
                .bind(sr.run_id)
                .execute(&mut *tx)
                .await?;
        } else {
            let next_job: String = sqlx::query_scalar(
                "UPDATE stage_runs SET status = 'queued', queued_at = now() WHERE run_id = $1 AND ordinal = $2 RETURNING job_id",
            )
            .bind(sr.run_id)
            .bind(sr.ordinal + 1)
            .fetch_one(&mut *tx)
            .await?;
            release_job(&mut tx, &next_job).await?;
        }
        tx.commit().await?;
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

/// Makes a parked job runnable now and wakes the workers listening for new jobs.
async fn release_job(tx: &mut Transaction<'_, Postgres>, job_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE apalis.jobs SET run_at = now() WHERE id = $1 AND status IN ('Pending', 'Failed')",
    )
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    wake_workers(tx, job_id).await
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
