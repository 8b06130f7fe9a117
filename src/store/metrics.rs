//! The figures `/metrics` reports from the database, so every API node reports the whole
//! cluster's queue and stages, whichever process ran them.

use serde::Serialize;
use sqlx::FromRow;

use super::{Store, StoreError};

/// One minute of the last hour: what ended in it, and the queue at its end.
#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct MinuteFigures {
    pub minute: chrono::DateTime<chrono::Utc>,
    /// Stage jobs that ended (succeeded, failed, cancelled or skipped) in the minute.
    pub stages_done: i64,
    /// Runs that ended in the minute.
    pub runs_done: i64,
    /// Stage jobs queued and not begun at the minute's end.
    pub queue_depth: i64,
}

/// Upper bounds (seconds) of the stage duration histogram's buckets.
pub const STAGE_SECONDS_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Totals of one stage over every run kept.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct StageTotals {
    pub stage: String,
    pub attempts: i64,
    /// Stages that failed for good.
    pub failures: i64,
    pub items_done: i64,
    pub items_failed: i64,
}

/// How long one stage's finished runs took: counts per bucket of
/// [`STAGE_SECONDS_BUCKETS`] (not cumulative; the last is above every bound), their sum.
#[derive(Debug, Clone, Serialize)]
pub struct StageDurations {
    pub stage: String,
    pub bucket_counts: Vec<i64>,
    pub count: i64,
    pub sum_seconds: f64,
}

impl Store {
    /// The last hour, minute by minute, oldest first (60 rows, the current minute last).
    pub async fn last_hour(&self) -> Result<Vec<MinuteFigures>, StoreError> {
        Ok(sqlx::query_as(
            "WITH m AS (
                 SELECT generate_series(date_trunc('minute', now()) - interval '59 minutes',
                                        date_trunc('minute', now()), interval '1 minute') AS minute)
             SELECT m.minute,
                    (SELECT count(*) FROM stage_runs s
                      WHERE s.finished_at >= m.minute
                        AND s.finished_at < m.minute + interval '1 minute') AS stages_done,
                    (SELECT count(*) FROM runs r
                      WHERE r.finished_at >= m.minute
                        AND r.finished_at < m.minute + interval '1 minute') AS runs_done,
                    (SELECT count(*) FROM stage_runs s
                      WHERE s.queued_at < m.minute + interval '1 minute'
                        AND s.queued_at > now() - interval '1 day'
                        AND COALESCE(s.started_at, s.finished_at, 'infinity')
                            >= LEAST(m.minute + interval '1 minute', now())) AS queue_depth
               FROM m ORDER BY m.minute",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stage tasks not ended (queued, waiting, running), by stage, status and priority
    /// class; failed ones, which wait for an operator, are left out.
    pub async fn queue_depth(&self) -> Result<Vec<super::tasks::QueueCell>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT stage, stage_status, priority_class, count(*) AS count FROM trawl_tasks
             WHERE stage_status NOT IN ('succeeded', 'skipped', 'cancelled', 'failed')
             GROUP BY stage, stage_status, priority_class
             ORDER BY stage_ordinal_of(stage), stage_status, priority_class",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn stage_totals(&self) -> Result<Vec<StageTotals>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT stage, coalesce(sum(attempts), 0)::bigint AS attempts,
                    count(*) FILTER (WHERE status = 'failed') AS failures,
                    coalesce(sum(items_done), 0)::bigint AS items_done,
                    coalesce(sum(items_failed), 0)::bigint AS items_failed
             FROM stage_runs GROUP BY stage ORDER BY stage_ordinal_of(stage)",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The durations of finished stage runs (the ones that started), by stage.
    pub async fn stage_durations(&self) -> Result<Vec<StageDurations>, StoreError> {
        let rows: Vec<(String, i32, i64, f64)> = sqlx::query_as(
            "SELECT stage, width_bucket(d, $1::float8[]) AS bucket, count(*), sum(d)
             FROM (SELECT stage, extract(epoch FROM finished_at - started_at)::float8 AS d
                   FROM stage_runs
                   WHERE started_at IS NOT NULL AND finished_at IS NOT NULL
                     AND status IN ('succeeded', 'failed')) s
             GROUP BY stage, bucket ORDER BY stage_ordinal_of(stage), bucket",
        )
        .bind(STAGE_SECONDS_BUCKETS)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<StageDurations> = Vec::new();
        for (stage, bucket, count, sum) in rows {
            if out.last().is_none_or(|d| d.stage != stage) {
                out.push(StageDurations {
                    stage: stage.clone(),
                    bucket_counts: vec![0; STAGE_SECONDS_BUCKETS.len() + 1],
                    count: 0,
                    sum_seconds: 0.0,
                });
            }
            let d = out.last_mut().expect("pushed");
            // width_bucket: 0 below the first bound, i when bounds[i-1] <= d < bounds[i];
            // a value equal to a bound belongs to the next bucket, which the `le` of
            // Prometheus would count in the lower one: a rounding edge only.
            let i = (bucket.max(0) as usize).min(STAGE_SECONDS_BUCKETS.len());
            d.bucket_counts[i] += count;
            d.count += count;
            d.sum_seconds += sum;
        }
        Ok(out)
    }

    /// Embeddings per second of the most recent CODE_EMBEDDINGS stage that embedded
    /// something.
    pub async fn recent_embedding_rate(&self) -> Result<Option<f64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT items_done / greatest(extract(epoch FROM finished_at - started_at)::float8, 0.001)
             FROM stage_runs
             WHERE stage = 'code_embeddings' AND status = 'succeeded' AND items_done > 0
               AND started_at IS NOT NULL AND finished_at IS NOT NULL
             ORDER BY finished_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Runs by status.
    pub async fn run_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
