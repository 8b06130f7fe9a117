//! Batch jobs (`reindex.batch`, see [`crate::pipeline::batch`]): enqueueing one in apalis'
//! queue, the items it recorded (table `batch_items`), and reading one back.

use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;

use super::{Store, StoreError};

/// A batch job's row in `apalis.jobs`, as `trawl batch show` reports it.
#[derive(Debug, Clone, FromRow)]
pub struct BatchJob {
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_result: Option<Value>,
}

/// A batch job as `trawl batch list` shows it.
#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct BatchJobRow {
    pub job_id: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    /// When it is (or was) due.
    pub run_at: chrono::DateTime<chrono::Utc>,
    pub done_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Items recorded so far, and of those the ones that failed.
    pub items: i64,
    pub items_failed: i64,
}

/// One item a batch job recorded.
#[derive(Debug, Serialize, FromRow)]
pub struct BatchItem {
    pub item: String,
    pub status: String,
    pub message: Option<String>,
    pub run_id: Option<i64>,
}

impl Store {
    /// Enqueues a batch job with `payload` in `queue`, ready to run now
    /// (`trawl_create_job`); returns its id.
    pub async fn insert_batch_job(
        &self,
        queue: &str,
        payload: &[u8],
        max_attempts: i32,
    ) -> Result<String, StoreError> {
        let id = ulid::Ulid::generate().to_string();
        sqlx::query("SELECT trawl_create_job($1, $2, $3, $4)")
            .bind(&id)
            .bind(queue)
            .bind(payload)
            .bind(max_attempts)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// The items of batch job `job_id` already done or skipped: a retried job passes them by.
    pub async fn recorded_batch_items(&self, job_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT item FROM batch_items WHERE job_id = $1 AND status IN ('done', 'skipped')",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records (or overwrites) the outcome of one item of batch job `job_id`.
    pub async fn record_batch_item(
        &self,
        job_id: &str,
        item: &str,
        status: &str,
        message: &str,
        run_id: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO batch_items (job_id, item, status, message, run_id) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_id, item) DO UPDATE SET status = EXCLUDED.status,
                 message = EXCLUDED.message, run_id = EXCLUDED.run_id, at = now()",
        )
        .bind(job_id)
        .bind(item)
        .bind(status)
        .bind(message)
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many items of batch job `job_id` are in each status: the job's report.
    pub async fn batch_item_counts(&self, job_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT status, count(*) FROM batch_items WHERE job_id = $1 GROUP BY status",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Batch job `job_id` of `queue`, None when there is no such job in that queue.
    pub async fn batch_job(
        &self,
        job_id: &str,
        queue: &str,
    ) -> Result<Option<BatchJob>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT status, attempts, max_attempts, last_result FROM apalis.jobs WHERE id = $1 AND job_type = $2",
        )
        .bind(job_id)
        .bind(queue)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The newest `limit` batch jobs of `queue`, newest first.
    pub async fn batch_jobs(
        &self,
        queue: &str,
        limit: i64,
    ) -> Result<Vec<BatchJobRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT j.id AS job_id, j.status, j.attempts, j.max_attempts, j.run_at, j.done_at,
                    (SELECT count(*) FROM batch_items i WHERE i.job_id = j.id) AS items,
                    (SELECT count(*) FROM batch_items i WHERE i.job_id = j.id AND i.status = 'failed')
                      AS items_failed
               FROM apalis.jobs j
              WHERE j.job_type = $1
              ORDER BY j.id DESC LIMIT $2",
        )
        .bind(queue)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every item batch job `job_id` recorded, by item.
    pub async fn batch_items(&self, job_id: &str) -> Result<Vec<BatchItem>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT item, status, message, run_id FROM batch_items WHERE job_id = $1 ORDER BY item",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
