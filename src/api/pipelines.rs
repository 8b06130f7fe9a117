//! The handlers of the pipelines' routes (their entries are in `routes::ROUTES`): the
//! references and history answers, and operating the pipelines.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, Id, Params};
use crate::domain::pipelines::{Pipeline, PipelineStatus};
use crate::extract::references::RefKind;
use crate::service::history::{self, CommitHit, HistoryAnswer, HistoryError, Target};
use crate::service::pipelines::{self, PipelinesOverview};
use crate::service::references::{
    self, CalleesAnswer, ReferencesAnswer, ReferencesError, ReferencesRequest,
};
use crate::store::pipelines::{PipelineControlError, PipelineRun, PipelineRunFilter};

impl From<ReferencesError> for ApiError {
    fn from(e: ReferencesError) -> ApiError {
        match e {
            ReferencesError::Repository(e) => e.into(),
            ReferencesError::Store(e) => e.into(),
            ReferencesError::Limit(_) => ApiError::bad_request("invalid_query", e.to_string()),
            _ => ApiError::bad_request("invalid_symbol", e.to_string()),
        }
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> ApiError {
        match e {
            HistoryError::Repository(e) => e.into(),
            HistoryError::Store(e) => e.into(),
            HistoryError::NoSnippet(_) | HistoryError::NoFile(_) => {
                ApiError::not_found("unknown_file", e.to_string())
            }
            HistoryError::AmbiguousFile { .. } => {
                ApiError::conflict("ambiguous_file", e.to_string())
            }
            HistoryError::Limit(_) | HistoryError::QueryTooLong(_) => {
                ApiError::bad_request("invalid_query", e.to_string())
            }
            _ => ApiError::bad_request("invalid_history", e.to_string()),
        }
    }
}

impl From<PipelineControlError> for ApiError {
    fn from(e: PipelineControlError) -> ApiError {
        match e {
            PipelineControlError::Unknown(_) => {
                ApiError::not_found("unknown_pipeline_run", e.to_string())
            }
            PipelineControlError::Refused { .. } => ApiError::conflict("refused", e.to_string()),
            PipelineControlError::Store(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferencesParams {
    symbol: Option<String>,
    repo: Option<String>,
    path: Option<String>,
    kind: Option<String>,
    limit: Option<u32>,
}

fn request(p: ReferencesParams, kinds: Vec<RefKind>) -> Result<ReferencesRequest, ApiError> {
    let Some(symbol) = p.symbol else {
        return Err(ApiError::bad_request(
            "invalid_symbol",
            "symbol is missing: give the name to look up, as in ?symbol=parse_config",
        ));
    };
    Ok(ReferencesRequest {
        symbol,
        repositories: super::routes::list(p.repo),
        path: p.path,
        kinds,
        limit: p.limit,
    })
}

pub async fn find_references(
    State(state): State<AppState>,
    Params(p): Params<ReferencesParams>,
) -> Result<Json<ReferencesAnswer>, ApiError> {
    let mut kinds = Vec::new();
    for k in super::routes::list(p.kind.clone()) {
        kinds.push(RefKind::parse(&k).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_kind",
                format!("kind {k:?} is not call, import or type"),
            )
        })?);
    }
    let req = request(p, kinds)?;
    Ok(Json(references::references(&state.store, &req).await?))
}

pub async fn callers(
    State(state): State<AppState>,
    Params(p): Params<ReferencesParams>,
) -> Result<Json<ReferencesAnswer>, ApiError> {
    if p.kind.is_some() {
        return Err(ApiError::bad_request(
            "invalid_kind",
            "callers are calls: leave kind out",
        ));
    }
    let req = request(p, vec![RefKind::Call])?;
    Ok(Json(references::references(&state.store, &req).await?))
}

pub async fn callees(
    State(state): State<AppState>,
    Params(p): Params<ReferencesParams>,
) -> Result<Json<CalleesAnswer>, ApiError> {
    if p.kind.is_some() {
        return Err(ApiError::bad_request(
            "invalid_kind",
            "callees are calls: leave kind out",
        ));
    }
    let req = request(p, Vec::new())?;
    Ok(Json(references::callees(&state.store, &req).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    path: Option<String>,
    snippet: Option<i64>,
    repo: Option<String>,
    limit: Option<u32>,
}

pub async fn history_of(
    State(state): State<AppState>,
    Params(p): Params<HistoryParams>,
) -> Result<Json<HistoryAnswer>, ApiError> {
    let target = match (p.snippet, p.path) {
        (Some(id), None) => Target::Snippet(id),
        (None, Some(path)) => Target::parse(&path),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_history",
                "give path (src/a.rs, src/a.rs:10-40) or snippet (an id), one of them",
            ));
        }
    };
    Ok(Json(
        history::history(&state.store, &target, p.repo.as_deref(), p.limit).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitParams {
    q: Option<String>,
    repo: Option<String>,
    limit: Option<u32>,
}

pub async fn search_commits(
    State(state): State<AppState>,
    Params(p): Params<CommitParams>,
) -> Result<Json<Vec<CommitHit>>, ApiError> {
    let Some(q) = p.q else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "q is missing: give words of the commit message, as in ?q=retry+backoff",
        ));
    };
    Ok(Json(
        history::search_commits(&state.store, &q, &super::routes::list(p.repo), p.limit).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelinesParams {
    pipeline: Option<String>,
    status: Option<String>,
    repo: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    Params(p): Params<PipelinesParams>,
) -> Result<Json<PipelinesOverview>, ApiError> {
    let pipeline = p
        .pipeline
        .map(|s| {
            Pipeline::parse_or_list(&s).map_err(|m| ApiError::bad_request("invalid_pipeline", m))
        })
        .transpose()?;
    let status = p
        .status
        .map(|s| {
            PipelineStatus::parse(&s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_status",
                    format!("status {s:?} is not pending, running, success, failed or cancelled"),
                )
            })
        })
        .transpose()?;
    let repository_id =
        crate::service::repositories::resolve_id(&state.store, p.repo.as_deref()).await?;
    let filter = PipelineRunFilter {
        pipeline,
        repository_id,
        status,
        limit: super::routes::limit(p.limit, 50)?,
    };
    Ok(Json(pipelines::overview(&state.store, &filter).await?))
}

pub async fn retry(
    State(state): State<AppState>,
    Id(id): Id<i64>,
) -> Result<Json<PipelineRun>, ApiError> {
    Ok(Json(
        pipelines::control(&state.store, "api", true, id).await?,
    ))
}

pub async fn cancel(
    State(state): State<AppState>,
    Id(id): Id<i64>,
) -> Result<Json<PipelineRun>, ApiError> {
    Ok(Json(
        pipelines::control(&state.store, "api", false, id).await?,
    ))
}
