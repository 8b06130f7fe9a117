//! Showing a run: the one view of it the CLI, the HTTP API and MCP give.

use schemars::JsonSchema;
use serde::Serialize;

use crate::service::progress::Snapshot;
use crate::service::reindex::{self, ReindexResult};
use crate::store::runs::{Run, StageRun};
use crate::store::{Store, StoreError};

/// A run with its stages, where it stands, and its result once it has ended.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunView {
    pub run: Run,
    /// The five stages, in order: the run's timeline.
    pub stages: Vec<StageRun>,
    pub progress: Snapshot,
    /// Once the run has ended.
    pub result: Option<ReindexResult>,
    /// What its stages reported as they went (the last 500 reports), oldest first.
    pub history: Vec<crate::store::snippets::ProgressPoint>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The adapters add where run ids are listed.
    #[error("no run {0}")]
    Unknown(i64),
    #[error(
        "unknown run status {0:?}: give queued, running, paused, succeeded, failed or cancelled"
    )]
    UnknownStatus(String),
    #[error(transparent)]
    Repository(#[from] crate::service::repositories::RepositoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The most recent runs, newest first: of the repository a selector names or all, in one
/// status (refused when it is none) or any.
pub async fn list(
    store: &Store,
    repository: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<Run>, RunError> {
    if let Some(s) = status
        && crate::domain::RunStatus::parse(s).is_none()
    {
        return Err(RunError::UnknownStatus(s.to_string()));
    }
    let repository_id = crate::service::repositories::resolve_id(store, repository).await?;
    Ok(store.list_runs(repository_id, status, limit).await?)
}

/// The files run `run_id` touched (only the failed ones with `failed_only`), by path.
pub async fn items(
    store: &Store,
    run_id: i64,
    failed_only: bool,
) -> Result<Vec<crate::store::runs::RunItem>, RunError> {
    existing(store, run_id).await?;
    Ok(store.run_items(run_id, failed_only).await?)
}

/// Run `run_id` as [`RunView`] shows it.
pub async fn show(store: &Store, run_id: i64) -> Result<RunView, RunError> {
    let run = existing(store, run_id).await?;
    let stages = store.stage_runs(run_id).await?;
    let progress = Snapshot::load(store, &run).await?;
    let result = if run.status.is_finished() {
        Some(reindex::result_of(store, &run).await?)
    } else {
        None
    };
    let history = store.progress_history(run_id, 500).await?;
    Ok(RunView {
        run,
        stages,
        progress,
        result,
        history,
    })
}

/// Run `run_id`, or [`RunError::Unknown`].
pub async fn existing(store: &Store, run_id: i64) -> Result<Run, RunError> {
    match store.run(run_id).await {
        Ok(run) => Ok(run),
        Err(StoreError::NotFound(_)) => Err(RunError::Unknown(run_id)),
        Err(e) => Err(e.into()),
    }
}
