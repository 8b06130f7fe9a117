//! The operator's view of the queue: tasks listed by filters checked once here (for the
//! CLI and the HTTP API alike), one task, and the queue's statistics.

use crate::domain::Stage;
use crate::domain::lifecycle::TASK_STATUSES;
use crate::service::repositories::{self, RepositoryError};
use crate::store::tasks::{QueueStats, Task, TaskFilter};
use crate::store::{Store, StoreError};

/// Tasks as a user asks for them.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// A stage status or a job status (any case): see [`TASK_STATUSES`].
    pub status: Option<String>,
    /// A stage, as [`Stage::parse`] reads it (bm25 and code-embeddings too).
    pub stage: Option<String>,
    /// A repository selector.
    pub repository: Option<String>,
    pub run_id: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskQueryError {
    #[error("unknown status {0:?}: give one of {statuses}", statuses = TASK_STATUSES.join(", "))]
    UnknownStatus(String),
    #[error("unknown stage {0:?}: give one of sync, extract, bm25_index, code_embeddings, enrich")]
    UnknownStage(String),
    #[error("no task {0}")]
    UnknownTask(String),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The tasks `query` asks for, newest run first; a status or stage that does not exist is
/// refused (it would match nothing, silently).
pub async fn list(store: &Store, query: TaskQuery) -> Result<Vec<Task>, TaskQueryError> {
    let status = match query.status {
        Some(s) if TASK_STATUSES.contains(&s.to_lowercase().as_str()) => Some(s.to_lowercase()),
        Some(s) => return Err(TaskQueryError::UnknownStatus(s)),
        None => None,
    };
    let stage = match query.stage {
        Some(s) => Some(
            Stage::parse(&s)
                .ok_or(TaskQueryError::UnknownStage(s))?
                .as_str()
                .to_string(),
        ),
        None => None,
    };
    let repository_id = repositories::resolve_id(store, query.repository.as_deref()).await?;
    Ok(store
        .list_tasks(&TaskFilter {
            status,
            stage,
            repository_id,
            run_id: query.run_id,
            limit: query.limit,
        })
        .await?)
}

/// Task `id`.
pub async fn show(store: &Store, id: &str) -> Result<Task, TaskQueryError> {
    store
        .task(id)
        .await?
        .ok_or_else(|| TaskQueryError::UnknownTask(id.to_string()))
}

/// The queue's statistics.
pub async fn stats(store: &Store) -> Result<QueueStats, StoreError> {
    store.queue_stats().await
}
