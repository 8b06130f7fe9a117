//! The operator dashboard: one HTML page (`dashboard.html`, plain JavaScript, no build
//! step) that polls [`state`] every second and renders the queue, the stages at work, the
//! failed tasks with retry and cancel buttons, recent runs with their stage timelines, the
//! repositories, and the downstream pipelines with their recent runs (retry and cancel
//! buttons too).

use super::AppState;
use super::answers::{Dashboard, RunWithStages};
use super::error::ApiError;
use crate::service::status;
use crate::store::tasks::TaskFilter;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("dashboard.html");

/// How many recent runs and failed tasks the dashboard lists.
const RECENT: i64 = 20;

pub async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        Html(PAGE),
    )
        .into_response()
}

/// Everything the page shows, in one answer.
pub async fn state(State(state): State<AppState>) -> Result<Json<Dashboard>, ApiError> {
    let store = &state.store;
    let queue = store.queue_stats().await?;
    let tasks = |status: &str, limit: i64| TaskFilter {
        status: Some(status.to_string()),
        limit,
        ..TaskFilter::default()
    };
    let running = store.list_tasks(&tasks("running", 100)).await?;
    let failed = store.list_tasks(&tasks("failed", RECENT)).await?;
    let recent = store.list_runs(None, None, RECENT).await?;
    let ids: Vec<i64> = recent.iter().map(|r| r.id).collect();
    let mut stages = store.stage_runs_of(&ids).await?;
    let runs = recent
        .into_iter()
        .map(|run| {
            let (mine, rest): (Vec<_>, Vec<_>) = stages.drain(..).partition(|s| s.run_id == run.id);
            stages = rest;
            RunWithStages { run, stages: mine }
        })
        .collect();
    let repositories = status::status(store, &state.config, None, false).await?;
    let pipelines = crate::service::pipelines::overview(
        store,
        &crate::store::pipelines::PipelineRunFilter {
            limit: RECENT,
            ..Default::default()
        },
    )
    .await?;
    Ok(Json(Dashboard {
        now: chrono::Utc::now(),
        queue,
        running,
        failed,
        runs,
        repositories,
        pipelines,
        last_hour: store.last_hour().await?,
    }))
}
