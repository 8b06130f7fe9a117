//! The operator's view of the queue: stage jobs with the run they belong to (the
//! `trawl_tasks` view), retrying and cancelling them, and queue statistics.

use serde::Serialize;
use sqlx::FromRow;

use super::{Store, StoreError};
use crate::domain::lifecycle::JobStatus;
use crate::domain::{RunStatus, StageStatus};

#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct Task {
    pub job_id: String,
    pub stage: String,
    pub stage_status: StageStatus,
    pub job_status: JobStatus,
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
    pub run_status: RunStatus,
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
    pub stage_status: StageStatus,
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
        .bind(super::lifecycle::STAGE_QUEUE)
        .fetch_all(&self.pool)
        .await?;
        Ok(QueueStats {
            cells,
            oldest_queued_age_secs: oldest,
            workers,
        })
    }
}
