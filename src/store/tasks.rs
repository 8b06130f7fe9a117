//! The operator's view of the queue: stage jobs with the run they belong to (the
//! `trawl_tasks` view), retrying and cancelling them, and queue statistics.

use serde::Serialize;
use sqlx::FromRow;

use super::runs::{PARKED_STATUS, PARKED_UNTIL_SECS};
use super::{Store, StoreError};

#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct Task {
    pub job_id: String,
    pub stage: String,
    pub stage_status: String,
    pub job_status: String,
    pub priority: Option<i32>,
    pub priority_class: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: chrono::DateTime<chrono::Utc>,
    pub lock_by: Option<String>,
    pub lock_at: Option<chrono::DateTime<chrono::Utc>>,
    pub done_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub items_total: i32,
    pub items_done: i32,
    pub items_failed: i32,
    pub run_id: i64,
    pub repository_id: i64,
    pub trigger: String,
    pub run_status: String,
}

/// Filters of `trawl tasks list`; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// A stage status (queued, waiting, running, …) or an apalis job status (Pending, Done, …).
    pub status: Option<String>,
    pub stage: Option<String>,
    pub repository_id: Option<i64>,
    pub run_id: Option<i64>,
    pub limit: i64,
}

/// Why an operator's request on a task was refused.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("no task {0}: see `trawl tasks list` for task ids")]
    Unknown(String),
    #[error("task {id} is {status}: only failed or cancelled tasks can be retried")]
    NotRetryable { id: String, status: String },
    #[error("task {id} is {status}: only queued, waiting or running tasks can be cancelled")]
    NotCancellable { id: String, status: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for TaskError {
    fn from(e: sqlx::Error) -> Self {
        TaskError::Store(e.into())
    }
}

/// Counts of one (stage, status, priority class) cell.
#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct QueueCell {
    pub stage: String,
    pub stage_status: String,
    pub priority_class: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct WorkerLoad {
    pub worker: String,
    pub last_seen: chrono::DateTime<chrono::Utc>,
    pub running: i64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct QueueStats {
    pub cells: Vec<QueueCell>,
    /// Seconds since the oldest job that may run now was queued; None when none is queued.
    pub oldest_queued_age_secs: Option<f64>,
    pub workers: Vec<WorkerLoad>,
}

impl Store {
    pub async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM trawl_tasks
             WHERE ($1::text IS NULL OR stage_status = $1 OR lower(job_status) = lower($1))
               AND ($2::text IS NULL OR stage = $2)
               AND ($3::bigint IS NULL OR repository_id = $3)
               AND ($4::bigint IS NULL OR run_id = $4)
             ORDER BY run_id DESC, stage_ordinal_of(stage)
             LIMIT $5",
        )
        .bind(&f.status)
        .bind(&f.stage)
        .bind(f.repository_id)
        .bind(f.run_id)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn task(&self, job_id: &str) -> Result<Option<Task>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM trawl_tasks WHERE job_id = $1")
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Puts a failed or cancelled stage back in the queue with a fresh budget of attempts;
    /// the later stages of its run wait for it again, and the run is running again.
    pub async fn retry_task(&self, job_id: &str) -> Result<Task, TaskError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64, i16, String)> = sqlx::query_as(
            "SELECT run_id, ordinal, status FROM stage_runs WHERE job_id = $1 FOR UPDATE",
        )
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((run_id, ordinal, status)) = row else {
            return Err(TaskError::Unknown(job_id.into()));
        };
        if status != "failed" && status != "cancelled" {
            return Err(TaskError::NotRetryable {
                id: job_id.into(),
                status,
            });
        }
        let prev_ok: bool = sqlx::query_scalar(
            "SELECT COALESCE(bool_and(status = 'succeeded'), true) FROM stage_runs WHERE run_id = $1 AND ordinal < $2",
        )
        .bind(run_id)
        .bind(ordinal)
        .fetch_one(&mut *tx)
        .await?;
        // This stage runs now if its predecessors succeeded, else it waits like the later ones.
        let jobs: Vec<(String, i16)> = sqlx::query_as(
            "UPDATE stage_runs SET
                 status = CASE WHEN ordinal = $2 AND $3 THEN 'queued' ELSE 'waiting' END,
                 finished_at = NULL, last_error = NULL, queued_at = now()
             WHERE run_id = $1 AND ordinal >= $2 AND status IN ('failed', 'cancelled')
             RETURNING job_id, ordinal",
        )
        .bind(run_id)
        .bind(ordinal)
        .bind(prev_ok)
        .fetch_all(&mut *tx)
        .await?;
        for (id, ord) in &jobs {
            let runnable = *ord == ordinal && prev_ok;
            sqlx::query(
                "UPDATE apalis.jobs SET status = CASE WHEN $2 THEN 'Pending' ELSE $4 END, attempts = 0,
                        lock_by = NULL, lock_at = NULL, done_at = NULL, last_result = NULL,
                        run_at = CASE WHEN $2 THEN now() ELSE to_timestamp($3) END
                 WHERE id = $1",
            )
            .bind(id)
            .bind(runnable)
            .bind(PARKED_UNTIL_SECS as f64)
            .bind(PARKED_STATUS)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE runs SET status = 'running', finished_at = NULL, error = NULL WHERE id = $1",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        super::runs::wake_workers(&mut tx, job_id).await?;
        tx.commit().await?;
        self.task(job_id)
            .await?
            .ok_or_else(|| TaskError::Unknown(job_id.into()))
    }

    /// Cancels a stage that has not finished, the later stages of its run, and the run.
    pub async fn cancel_task(&self, job_id: &str, reason: &str) -> Result<Task, TaskError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64, i16, String)> = sqlx::query_as(
            "SELECT run_id, ordinal, status FROM stage_runs WHERE job_id = $1 FOR UPDATE",
        )
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((run_id, ordinal, status)) = row else {
            return Err(TaskError::Unknown(job_id.into()));
        };
        if !matches!(status.as_str(), "queued" | "waiting" | "running") {
            return Err(TaskError::NotCancellable {
                id: job_id.into(),
                status,
            });
        }
        super::runs::cancel_stages_from(&mut tx, run_id, ordinal, reason).await?;
        sqlx::query(
            "UPDATE runs SET status = 'cancelled', finished_at = now(), error = $2 WHERE id = $1",
        )
        .bind(run_id)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.task(job_id)
            .await?
            .ok_or_else(|| TaskError::Unknown(job_id.into()))
    }

    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let cells: Vec<QueueCell> = sqlx::query_as(
            "SELECT stage, stage_status, priority_class, count(*) AS count FROM trawl_tasks
             GROUP BY stage, stage_status, priority_class ORDER BY stage_ordinal_of(stage), stage_status, priority_class",
        )
        .fetch_all(&self.pool)
        .await?;
        let oldest: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM now() - min(sr.queued_at))::float8 FROM stage_runs sr WHERE sr.status = 'queued'",
        )
        .fetch_one(&self.pool)
        .await?;
        let workers: Vec<WorkerLoad> = sqlx::query_as(
            "SELECT w.id AS worker, w.last_seen, count(j.id) AS running
             FROM apalis.workers w LEFT JOIN apalis.jobs j ON j.lock_by = w.id AND j.status IN ('Queued', 'Running')
             WHERE w.worker_type = $1 AND w.last_seen > now() - interval '5 minutes'
             GROUP BY w.id, w.last_seen ORDER BY w.id",
        )
        .bind(super::runs::STAGE_QUEUE)
        .fetch_all(&self.pool)
        .await?;
        Ok(QueueStats {
            cells,
            oldest_queued_age_secs: oldest,
            workers,
        })
    }
}
