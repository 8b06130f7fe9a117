//! Pipeline runs (`pipeline_runs`): the typed wrappers of their lifecycle's SQL functions
//! (`lifecycle.sql`, modelled by `domain::pipelines::PipelineStatus::apply`) and what
//! operators read.

use serde_json::Value;

use super::{Store, StoreError};
use crate::domain::pipelines::{Pipeline, PipelineEvent, PipelineStatus};

/// One pipeline run.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, schemars::JsonSchema)]
pub struct PipelineRun {
    pub id: i64,
    pub pipeline: String,
    pub repository_id: i64,
    /// What makes it unique: `event:<id>`, `version:<n>`, `reingest:<job>`.
    pub key: String,
    pub event_id: Option<i64>,
    /// The index version it brings the pipeline's data to.
    pub index_version: i32,
    /// The files it works on; None: every file of the repository.
    pub paths: Option<Vec<String>>,
    pub deleted: Vec<String>,
    pub job_id: String,
    #[schemars(with = "String")]
    pub status: PipelineStatus,
    pub attempt: i32,
    pub max_attempts: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the next attempt is due, while a retry waits.
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error_message: Option<String>,
    pub result: Option<Value>,
}

/// Per pipeline: how many runs are in each status, and how far behind the newest index
/// versions it is.
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
pub struct PipelineSummary {
    pub pipeline: String,
    pub pending: i64,
    pub running: i64,
    pub success: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Repositories whose newest index version this pipeline's data does not reflect yet
    /// (of those the pipeline applies to).
    pub lagging_repositories: i64,
    /// The most versions any repository is behind.
    pub max_versions_behind: i64,
}

/// What an operator's cancel or retry found.
#[derive(Debug, thiserror::Error)]
pub enum PipelineControlError {
    #[error("no pipeline run {0}")]
    Unknown(i64),
    #[error("pipeline run {id} cannot be {action}: {why}")]
    Refused {
        id: i64,
        action: &'static str,
        why: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Filters of [`Store::pipeline_runs`].
#[derive(Debug, Clone, Default)]
pub struct PipelineRunFilter {
    pub pipeline: Option<Pipeline>,
    pub repository_id: Option<i64>,
    pub status: Option<PipelineStatus>,
    pub limit: i64,
}

impl Store {
    /// Begins the pipeline run of job `job_id` (see `trawl_pipeline_begin`): the run, or
    /// None when it is over and its job was closed.
    pub async fn begin_pipeline_run(
        &self,
        job_id: &str,
    ) -> Result<Option<PipelineRun>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM trawl_pipeline_begin($1)")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records a success with the run's report; false when the run was no longer running
    /// (cancelled meanwhile).
    pub async fn succeed_pipeline_run(
        &self,
        job_id: &str,
        result: &Value,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("SELECT trawl_pipeline_succeed($1, $2)")
            .bind(job_id)
            .bind(result)
            .fetch_one(&self.pool)
            .await?)
    }

    /// A retryable failure: the run waits `delay`, then its job is due again.
    pub async fn retry_pipeline_run(
        &self,
        job_id: &str,
        error: &str,
        delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT trawl_pipeline_retry($1, $2, $3)")
            .bind(job_id)
            .bind(error)
            .bind(delay.as_secs_f64())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A failure for good.
    pub async fn fail_pipeline_run(&self, job_id: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT trawl_pipeline_fail($1, $2)")
            .bind(job_id)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An operator's cancel (`trawl pipelines cancel`).
    pub async fn cancel_pipeline_run(
        &self,
        id: i64,
        reason: &str,
    ) -> Result<PipelineRun, PipelineControlError> {
        let applied: Option<(bool, String)> =
            sqlx::query_as("SELECT * FROM trawl_pipeline_cancel($1, $2)")
                .bind(id)
                .bind(reason)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from)?;
        self.pipeline_controlled(id, PipelineEvent::Cancel, "cancelled", applied)
            .await
    }

    /// An operator's retry of a failed or cancelled run (`trawl pipelines retry`).
    pub async fn retry_failed_pipeline_run(
        &self,
        id: i64,
    ) -> Result<PipelineRun, PipelineControlError> {
        let applied: Option<(bool, String)> =
            sqlx::query_as("SELECT * FROM trawl_pipeline_retry_run($1)")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from)?;
        self.pipeline_controlled(id, PipelineEvent::RetryRun, "retried", applied)
            .await
    }

    async fn pipeline_controlled(
        &self,
        id: i64,
        event: PipelineEvent,
        action: &'static str,
        applied: Option<(bool, String)>,
    ) -> Result<PipelineRun, PipelineControlError> {
        let Some((applied, before)) = applied else {
            return Err(PipelineControlError::Unknown(id));
        };
        if !applied {
            let why = PipelineStatus::parse(&before)
                .map(|s| s.apply(event).err().unwrap_or_default())
                .unwrap_or_else(|| format!("it is {before}"));
            return Err(PipelineControlError::Refused { id, action, why });
        }
        self.pipeline_run(id)
            .await?
            .ok_or(PipelineControlError::Unknown(id))
    }

    pub async fn pipeline_run(&self, id: i64) -> Result<Option<PipelineRun>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM pipeline_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Pipeline runs, newest first.
    pub async fn pipeline_runs(
        &self,
        f: &PipelineRunFilter,
    ) -> Result<Vec<PipelineRun>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM pipeline_runs
              WHERE ($1::text IS NULL OR pipeline = $1)
                AND ($2::bigint IS NULL OR repository_id = $2)
                AND ($3::text IS NULL OR status = $3)
              ORDER BY id DESC LIMIT $4",
        )
        .bind(f.pipeline.map(Pipeline::as_str))
        .bind(f.repository_id)
        .bind(f.status.map(PipelineStatus::as_str))
        .bind(f.limit.max(1))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Each pipeline's counts and lag: of `pipeline` only when given, and of repository
    /// `repository_id`'s runs only when given.
    pub async fn pipeline_summaries(
        &self,
        pipeline: Option<Pipeline>,
        repository_id: Option<i64>,
    ) -> Result<Vec<PipelineSummary>, StoreError> {
        type Row = (String, i64, i64, i64, i64, i64);
        let counts: Vec<Row> = sqlx::query_as(
            "SELECT pipeline,
                    count(*) FILTER (WHERE status = 'pending'),
                    count(*) FILTER (WHERE status = 'running'),
                    count(*) FILTER (WHERE status = 'success'),
                    count(*) FILTER (WHERE status = 'failed'),
                    count(*) FILTER (WHERE status = 'cancelled')
               FROM pipeline_runs WHERE ($1::bigint IS NULL OR repository_id = $1)
              GROUP BY pipeline",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?;
        let lags: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT p.pipeline, count(*) FILTER (WHERE p.behind > 0), COALESCE(max(p.behind), 0)::bigint
               FROM (SELECT pr.pipeline, pr.repository_id,
                            (SELECT max(version) FROM index_versions v WHERE v.repository_id = pr.repository_id)
                              - COALESCE(trawl_pipeline_reflects(pr.pipeline, pr.repository_id), 0)
                              AS behind
                       FROM (SELECT DISTINCT pipeline, repository_id FROM pipeline_runs
                              WHERE ($1::bigint IS NULL OR repository_id = $1)) pr) p
              GROUP BY p.pipeline",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Pipeline::ALL
            .iter()
            .filter(|p| pipeline.is_none_or(|only| only == **p))
            .map(|p| {
                let name = p.as_str();
                let c = counts.iter().find(|c| c.0 == name);
                let l = lags.iter().find(|l| l.0 == name);
                PipelineSummary {
                    pipeline: name.into(),
                    pending: c.map_or(0, |c| c.1),
                    running: c.map_or(0, |c| c.2),
                    success: c.map_or(0, |c| c.3),
                    failed: c.map_or(0, |c| c.4),
                    cancelled: c.map_or(0, |c| c.5),
                    lagging_repositories: l.map_or(0, |l| l.1),
                    max_versions_behind: l.map_or(0, |l| l.2),
                }
            })
            .collect())
    }

    /// The index version `pipeline`'s data of repository `repository_id` reflects (None:
    /// none yet) and the repository's newest.
    pub async fn pipeline_version(
        &self,
        pipeline: Pipeline,
        repository_id: i64,
    ) -> Result<(Option<i32>, Option<i32>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT trawl_pipeline_reflects($1, $2),
                    (SELECT max(version) FROM index_versions WHERE repository_id = $2)",
        )
        .bind(pipeline.as_str())
        .bind(repository_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Switches `pipeline` on or off for repository `repository_id` (None: back to the
    /// configuration's flag).
    pub async fn set_repository_pipeline(
        &self,
        repository_id: i64,
        pipeline: Pipeline,
        on: Option<bool>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE repositories SET pipelines = CASE WHEN $3::bool IS NULL THEN pipelines - $2
                                                      ELSE pipelines || jsonb_build_object($2, $3::bool) END
              WHERE id = $1",
        )
        .bind(repository_id)
        .bind(pipeline.as_str())
        .bind(on)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Repository `repository_id`'s own pipeline switches.
    pub async fn repository_pipelines(
        &self,
        repository_id: i64,
    ) -> Result<std::collections::BTreeMap<String, bool>, StoreError> {
        let v: Option<Value> =
            sqlx::query_scalar("SELECT pipelines FROM repositories WHERE id = $1")
                .bind(repository_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default())
    }
}
