//! The API's success answers as types: the handlers build them and the OpenAPI document
//! takes its response schemas from them, so what a route answers is what it documents.

use schemars::JsonSchema;
use serde::Serialize;

use crate::service::reindex::{ReindexPlan, ReindexQueued, ReindexResult};
use crate::service::status::RepositoryStatus;
use crate::store::audit::AuditEntry;
use crate::store::runs::{Run, RunItem, StageRun};
use crate::store::tasks::{QueueStats, Task};

/// `GET /healthz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`: the server runs and its database answers.
    pub status: &'static str,
}

/// `GET /api/v1/repositories`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Repositories {
    pub repositories: Vec<RepositoryStatus>,
}

/// `POST …/reindex` with `dry_run`: what a run would process.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DryRun {
    /// Always true.
    pub dry_run: bool,
    pub plan: ReindexPlan,
}

/// `POST …/reindex` with `wait`, once the run has ended.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Finished {
    pub queued: ReindexQueued,
    pub result: ReindexResult,
}

/// `POST …/reindex`: the run is queued (and, with `wait`, has not ended yet: `waited` is
/// false and `message` says why and how to follow it).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Queued {
    #[serde(flatten)]
    pub queued: ReindexQueued,
    /// Present (false) when `wait` was asked for and the run has not ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited: Option<bool>,
}

/// The 200 answers of `POST …/reindex`: a dry run's plan, or a waited-for run's result.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Reindexed {
    DryRun(Box<DryRun>),
    Finished(Box<Finished>),
}

/// `GET /api/v1/runs`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Runs {
    /// Newest first.
    pub runs: Vec<Run>,
}

/// `GET /api/v1/runs/{run}`: the service's view of a run.
pub type RunDetail = crate::service::runs::RunView;

/// `GET /api/v1/runs/{run}/items`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunItems {
    pub run_id: i64,
    pub items: Vec<RunItem>,
}

/// A run after a pause, resume or cancel.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Steered {
    pub run: Run,
}

/// `GET /api/v1/tasks`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Tasks {
    pub tasks: Vec<Task>,
}

/// One task, shown or steered.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OneTask {
    pub task: Task,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Audit {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
}

/// A recent run with its stages, as the dashboard lists it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunWithStages {
    pub run: Run,
    pub stages: Vec<StageRun>,
}

/// `GET /api/v1/dashboard`: everything the operator page shows.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Dashboard {
    pub now: chrono::DateTime<chrono::Utc>,
    pub queue: QueueStats,
    /// Tasks running now.
    pub running: Vec<Task>,
    /// The most recent failed tasks.
    pub failed: Vec<Task>,
    /// The most recent runs, newest first.
    pub runs: Vec<RunWithStages>,
    pub repositories: Vec<RepositoryStatus>,
    /// The downstream pipelines: counts and lag of each, their most recent runs.
    pub pipelines: crate::service::pipelines::PipelinesOverview,
    /// The last hour, minute by minute: stage jobs and runs ended, queue depth.
    pub last_hour: Vec<crate::store::metrics::MinuteFigures>,
}
