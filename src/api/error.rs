//! The API's errors: JSON `{"error": {"code", "message"}}` with a stable code, and the
//! extractors that turn malformed input into a 400 of that shape (never axum's plain-text
//! rejections, never a 500).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::search::SearchError;
use crate::service::index::IndexError;
use crate::service::reindex::ReindexError;
use crate::service::reingest::ReingestError;
use crate::service::repositories::RepositoryError;
use crate::service::runs::RunError;
use crate::service::search::SearchRequestError;
use crate::service::status::StatusError;
use crate::service::tasks::TaskQueryError;
use crate::store::StoreError;
use crate::store::lifecycle::RunControlError;
use crate::store::tasks::TaskError;

/// An error answer: an HTTP status, a stable machine-readable code, and a message saying
/// what was wrong and what to do.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// An error answer; credentials in any URL the message quotes are masked.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: crate::redact::text(&message.into()),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }
}

impl ApiError {
    /// The JSON every interface answers an error with: `{"error": {"code", "message"}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "API request failed");
        }
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::NotFound(_) => ApiError::not_found("not_found", e.to_string()),
            StoreError::Invalid(_) => ApiError::bad_request("invalid_request", e.to_string()),
            // Data exceptions (a NUL byte, a value out of range) come from the input.
            StoreError::Database {
                code: Some(code), ..
            } if code.starts_with("22") => ApiError::bad_request("invalid_request", e.to_string()),
            e if e.is_retryable() => {
                let id = logged(e);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    format!(
                        "the database is unavailable for now: retry later (error {id} in the server's log)"
                    ),
                )
            }
            e => {
                let id = logged(e);
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("the server failed: error {id} in its log says why"),
                )
            }
        }
    }
}

/// Logs `e` in full under a new error id, for an answer that names the id only: what the
/// database said (names of tables, constraint texts, hosts) stays in the server's log.
pub fn logged(e: &dyn std::error::Error) -> String {
    let id = ulid::Ulid::generate().to_string();
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::error!(error_id = %id, error = %chain, "request failed");
    id
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> ApiError {
        match e {
            IndexError::NoSuchPath { .. }
            | IndexError::NotADirectory { .. }
            | IndexError::RelativeSource { .. } => {
                ApiError::bad_request("invalid_source", e.to_string())
            }
            IndexError::SourceNotAllowed { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "source_not_allowed", e.to_string())
            }
            IndexError::Git(crate::sources::git::GitError::NoGit(_)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "git_unavailable",
                e.to_string(),
            ),
            IndexError::Git(_) => ApiError::bad_request("git_failed", e.to_string()),
            IndexError::WorkerStopped { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "worker_stopped",
                e.to_string(),
            ),
            IndexError::Store(e) => e.into(),
        }
    }
}

impl From<ReindexError> for ApiError {
    fn from(e: ReindexError) -> ApiError {
        match e {
            ReindexError::Repository(e) => e.into(),
            ReindexError::Unreadable { .. } => {
                ApiError::conflict("repository_unreadable", e.to_string())
            }
            ReindexError::Store(e) => e.into(),
            _ => ApiError::bad_request("invalid_scope", e.to_string()),
        }
    }
}

impl From<ReingestError> for ApiError {
    fn from(e: ReingestError) -> ApiError {
        match e {
            ReingestError::Repository(e) => e.into(),
            ReingestError::Store(e) => e.into(),
            _ => ApiError::bad_request("invalid_reingest", e.to_string()),
        }
    }
}

impl From<RepositoryError> for ApiError {
    fn from(e: RepositoryError) -> ApiError {
        match e {
            RepositoryError::Unknown { .. } => {
                ApiError::not_found("unknown_repository", e.to_string())
            }
            RepositoryError::Ambiguous { .. } => {
                ApiError::bad_request("ambiguous_repository", e.to_string())
            }
            RepositoryError::Store(e) => e.into(),
        }
    }
}

impl From<StatusError> for ApiError {
    fn from(e: StatusError) -> ApiError {
        match e {
            StatusError::Repository(e) => e.into(),
            StatusError::Store(e) => e.into(),
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> ApiError {
        match e {
            SearchError::EmptyQuery
            | SearchError::QueryTooLong { .. }
            | SearchError::TooManyTerms { .. }
            | SearchError::BadPath { .. } => ApiError::bad_request("invalid_query", e.to_string()),
            SearchError::Store(e) => e.into(),
            SearchError::Keyword(_) | SearchError::Provider(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "search_unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<SearchRequestError> for ApiError {
    fn from(e: SearchRequestError) -> ApiError {
        match e {
            SearchRequestError::Limit(_)
            | SearchRequestError::UnknownLanguage { .. }
            | SearchRequestError::UnknownKind { .. } => {
                ApiError::bad_request("invalid_query", e.to_string())
            }
            SearchRequestError::Repository(e) => e.into(),
            SearchRequestError::Search(e) => e.into(),
        }
    }
}

impl From<TaskQueryError> for ApiError {
    fn from(e: TaskQueryError) -> ApiError {
        match e {
            TaskQueryError::UnknownStatus(_) | TaskQueryError::UnknownStage(_) => {
                ApiError::bad_request("invalid_query", e.to_string())
            }
            TaskQueryError::UnknownTask(id) => ApiError::not_found(
                "unknown_task",
                format!("no task {id}: see GET /api/v1/tasks for task ids"),
            ),
            TaskQueryError::Repository(e) => e.into(),
            TaskQueryError::Store(e) => e.into(),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        match e {
            RunError::Unknown(id) => ApiError::not_found(
                "unknown_run",
                format!("no run {id}: see GET /api/v1/runs for run ids"),
            ),
            RunError::UnknownStatus(_) => ApiError::bad_request("invalid_query", e.to_string()),
            RunError::Repository(e) => e.into(),
            RunError::Store(e) => e.into(),
        }
    }
}

impl From<RunControlError> for ApiError {
    fn from(e: RunControlError) -> ApiError {
        match e {
            RunControlError::Unknown(_) => ApiError::not_found("unknown_run", e.to_string()),
            RunControlError::WrongState { .. } => ApiError::conflict("wrong_state", e.to_string()),
            RunControlError::Store(e) => e.into(),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> ApiError {
        match e {
            TaskError::Unknown(_) => ApiError::not_found("unknown_task", e.to_string()),
            TaskError::NotRetryable { .. } | TaskError::NotCancellable { .. } => {
                ApiError::conflict("wrong_state", e.to_string())
            }
            TaskError::Store(e) => e.into(),
        }
    }
}

/// A JSON request body: an object (an array or a bare value is refused, though serde would
/// read an array as a struct's fields in order). A malformed or mistyped body is a 400
/// `invalid_body`; one without a JSON content type a 415, one over the limit a 413.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => object(value).map(Body),
            Err(rejection) => Err(ApiError::new(
                match rejection.status() {
                    s @ (StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::PAYLOAD_TOO_LARGE) => s,
                    _ => StatusCode::BAD_REQUEST,
                },
                "invalid_body",
                format!("the request body is not valid: {}", rejection.body_text()),
            )),
        }
    }
}

/// A JSON request body that may be left out (no body at all, with or without a content
/// type): then it is `{}`, every field at its default. Otherwise as [`Body`].
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes =
            axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
                .await
                .map_err(|rejection| {
                    ApiError::new(
                        rejection.status(),
                        "invalid_body",
                        format!("the request body is not valid: {}", rejection.body_text()),
                    )
                })?;
        if bytes.is_empty() {
            return object(serde_json::Value::Object(Default::default())).map(OptionalBody);
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        Body::from_request(req, state)
            .await
            .map(|Body(b)| OptionalBody(b))
    }
}

fn object<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the request body is not valid: give a JSON object ({...}), not an array or a bare value",
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the request body is not valid: {e}"),
        )
    })
}

/// Query parameters; unknown names, wrong types and empty values (`?mode=`: leave the
/// parameter out instead) are a 400 `invalid_query`.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let wrong = if value.is_empty() {
                "is empty: give it a value, or leave it out"
            } else if value.contains('\0') {
                "holds a NUL character, which no name, path or word has"
            } else {
                continue;
            };
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("the query parameter {name:?} {wrong}"),
            ));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_query",
                format!("the query string is not valid: {}", rejection.body_text()),
            )),
        }
    }
}

/// Path parameters; a run id that is not a number is a 400 `invalid_path`.
pub struct Id<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Id<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.uri.path().contains("%00") {
            return Err(ApiError::bad_request(
                "invalid_path",
                "the URL path holds a NUL character (%00), which no id or name has",
            ));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Id(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_path",
                format!("the URL path is not valid: {}", rejection.body_text()),
            )),
        }
    }
}

/// Turns a plain-text error answer (one a library wrote, such as the MCP transport's 413
/// for a body over its limit, or its 406 for a wrong `Accept`) into the error JSON every
/// interface answers with; JSON answers and successes pass unchanged.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The libraries' messages are one line; more is not worth reading.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("refused").to_string(),
        text => text.to_string(),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    // Keep what the client needs to act on the refusal (Allow, WWW-Authenticate, a session id).
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the database said stays in the log: the answer names an error id only.
    #[test]
    fn internal_and_unavailable_answers_are_opaque() {
        let internal = ApiError::from(StoreError::Database {
            message: "relation \"secret_table\" does not exist".into(),
            code: Some("42P01".into()),
            retryable: false,
        });
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !internal.message.contains("secret_table"),
            "{}",
            internal.message
        );
        assert!(
            internal.message.contains("in its log"),
            "{}",
            internal.message
        );
        let down = ApiError::from(StoreError::Connection("db.internal:5432 refused".into()));
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!down.message.contains("db.internal"), "{}", down.message);
        // Input errors keep their words: they are the client's to fix.
        let bad = ApiError::from(StoreError::Invalid("limit must be positive".into()));
        assert!(bad.message.contains("limit must be positive"));
    }
}
