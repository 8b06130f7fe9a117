//! The routes of the HTTP API: one table ([`ROUTES`]) that both the router and the OpenAPI
//! document are built from, so the two cannot disagree, and the handlers, each a thin
//! adapter over an application service.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body as HttpBody, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use futures::Stream;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::answers;
use super::error::{ApiError, Body, Id, OptionalBody, Params};
use crate::domain::PriorityClass;
use crate::search::{MAX_QUERY_CHARS, Mode, Results};
use crate::service::control::{RunAction, control_run, control_task};
use crate::service::progress::{Follower, Snapshot};
use crate::service::reindex::{self, ReindexRequest, ScopeKind};
use crate::service::reingest::{self, ReingestOutcome, ReingestRequest};
use crate::service::{index, status};
use crate::store::tasks::QueueStats;

/// A JSON Schema pattern for "holds a character that is not white space": the white space
/// characters listed are exactly those Rust's `str::trim` removes, so the document and the
/// handlers' "is it blank" agree in every regex dialect.
pub const NOT_BLANK: &str = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// The media type of a progress stream: one JSON snapshot per line.
pub const NDJSON: &str = "application/x-ndjson";

/// One route: what the OpenAPI document says about it, and its handler.
pub struct Route {
    pub method: &'static str,
    /// In axum's and OpenAPI's shared syntax: `/api/v1/runs/{run}`.
    pub path: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    pub query: &'static [Param],
    /// The request body, when it takes one.
    pub body: Option<RequestBody>,
    /// Its success answers (errors are documented for every route alike).
    pub answers: &'static [Answer],
    /// Whether it answers `application/x-ndjson` when asked to.
    pub streams: bool,
    /// Whether it answers without a token.
    pub public: bool,
    pub handler: fn() -> MethodRouter<AppState>,
}

/// What a query or path parameter takes. The OpenAPI document states it and the handlers
/// enforce it; an empty value (`?mode=`) is refused everywhere: leave the parameter out.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string of at least one character.
    Text,
    /// Words to search for: not only blanks, at most [`MAX_QUERY_CHARS`] characters.
    Words,
    /// An integer from `min` to `max`.
    Integer { min: i64, max: i64 },
    /// `true` or `false`.
    Boolean,
    /// One of these names.
    OneOf(&'static [&'static str]),
    /// A duration back from now (`30m`, `12h`, `7d`) or an RFC 3339 time.
    Since,
}

/// A query parameter.
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub description: &'static str,
}

const fn param(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param {
        name,
        kind,
        required: false,
        description,
    }
}

/// What a path parameter takes: run ids are integers, the rest non-empty strings.
pub fn path_kind(name: &str) -> Kind {
    match name {
        "run" | "pipeline_run" => Kind::Integer {
            min: i64::MIN,
            max: i64::MAX,
        },
        _ => Kind::Text,
    }
}

type SchemaOf = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// A JSON request body: its schema, and whether it may be left out (then every field
/// takes its default).
pub struct RequestBody {
    pub schema: SchemaOf,
    pub required: bool,
}

/// A success answer: its status and the schema of its body.
pub struct Answer {
    pub status: u16,
    pub description: &'static str,
    pub schema: SchemaOf,
}

fn schema<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<T>()
}

/// A body that is not JSON (Prometheus text, the dashboard's HTML).
fn text(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string" })
}

/// Any JSON object (the OpenAPI document itself).
fn object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object" })
}

const fn ok(description: &'static str, schema: SchemaOf) -> Answer {
    Answer {
        status: 200,
        description,
        schema,
    }
}

const fn accepted(description: &'static str, schema: SchemaOf) -> Answer {
    Answer {
        status: 202,
        description,
        schema,
    }
}

/// The run statuses `?status=` takes on /api/v1/runs.
pub const RUN_STATUSES: &[&str] = &[
    "queued",
    "running",
    "paused",
    "succeeded",
    "failed",
    "cancelled",
];
/// The search modes `?mode=` takes.
pub const MODES: &[&str] = &["hybrid", "keyword", "semantic"];
/// The stages `?stage=` takes.
pub const STAGES: &[&str] = &["sync", "extract", "bm25_index", "code_embeddings", "enrich"];
/// The statuses `?status=` takes on /api/v1/tasks: a stage status, or an apalis job status.
pub use crate::domain::lifecycle::TASK_STATUSES;

const REPOSITORY_QUERY: Param = param(
    "repo",
    Kind::Text,
    "Only this repository: its id, or the path or URL it was indexed from.",
);
const LIMIT_QUERY: Param = param(
    "limit",
    Kind::Integer {
        min: 1,
        max: 10_000,
    },
    "How many, at most (1 to 10000).",
);

const SYMBOL_QUERY: Param = Param {
    name: "symbol",
    kind: Kind::Text,
    required: true,
    description: "The name: `parse`, or qualified (`Config::parse`: the last part is looked up).",
};
const PATH_PREFIX_QUERY: Param = param(
    "path",
    Kind::Text,
    "Only files under this path prefix (relative to the repository's root).",
);
const REPOSITORIES_QUERY: Param = param(
    "repo",
    Kind::Text,
    "Only these repositories (comma-separated): ids, or the paths or URLs they were indexed from.",
);
const ANSWER_LIMIT_QUERY: Param = param(
    "limit",
    Kind::Integer { min: 1, max: 1000 },
    "How many, at most (1 to 1000).",
);

/// Every route the server answers (besides the MCP endpoint, which `/mcp` mounts).
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/api/v1/references",
        answers: &[ok(
            "The definitions and references, resolved.",
            schema::<crate::service::references::ReferencesAnswer>,
        )],
        summary: "Where a symbol is used (calls, imports, type uses), each resolved to its definition or marked ambiguous or unresolved, with the index version the answer reflects.",
        tag: "references",
        query: &[
            SYMBOL_QUERY,
            REPOSITORIES_QUERY,
            PATH_PREFIX_QUERY,
            param(
                "kind",
                Kind::Text,
                "Only these kinds (comma-separated): call, import, type.",
            ),
            ANSWER_LIMIT_QUERY,
        ],
        body: None,
        streams: false,
        public: false,
        handler: || get(super::pipelines::find_references),
    },
    Route {
        method: "GET",
        path: "/api/v1/references/callers",
        answers: &[ok(
            "The calls of the function.",
            schema::<crate::service::references::ReferencesAnswer>,
        )],
        summary: "Who calls a function: every call of the name, with the definition each call is in.",
        tag: "references",
        query: &[
            SYMBOL_QUERY,
            REPOSITORIES_QUERY,
            PATH_PREFIX_QUERY,
            ANSWER_LIMIT_QUERY,
        ],
        body: None,
        streams: false,
        public: false,
        handler: || get(super::pipelines::callers),
    },
    Route {
        method: "GET",
        path: "/api/v1/references/callees",
        answers: &[ok(
            "Per definition of the function, the calls inside it.",
            schema::<crate::service::references::CalleesAnswer>,
        )],
        summary: "What a function calls: the calls inside each definition of it, resolved.",
        tag: "references",
        query: &[
            SYMBOL_QUERY,
            REPOSITORIES_QUERY,
            PATH_PREFIX_QUERY,
            ANSWER_LIMIT_QUERY,
        ],
        body: None,
        streams: false,
        public: false,
        handler: || get(super::pipelines::callees),
    },
    Route {
        method: "GET",
        path: "/api/v1/history",
        answers: &[ok(
            "The commits, newest first.",
            schema::<crate::service::history::HistoryAnswer>,
        )],
        summary: "The commits of a git source that changed a file (path), some lines of it (path=src/a.rs:10-40) or a snippet (snippet=ID), newest first.",
        tag: "history",
        query: &[
            param(
                "path",
                Kind::Text,
                "A file relative to its repository's root, with :LINE or :START-END for lines of it.",
            ),
            param(
                "snippet",
                Kind::Integer {
                    min: i64::MIN,
                    max: i64::MAX,
                },
                "A snippet's id (instead of path).",
            ),
            REPOSITORY_QUERY,
            ANSWER_LIMIT_QUERY,
        ],
        body: None,
        streams: false,
        public: false,
        handler: || get(super::pipelines::history_of),
    },
    Route {
        method: "GET",
        path: "/api/v1/commits",
        answers: &[ok(
            "The matching commits, best first.",
            schema::<Vec<crate::service::history::CommitHit>>,
        )],
        summary: "Search the commit messages of git sources by their words (stemmed; \"a phrase\", -word and OR work).",
        tag: "history",
        query: &[
            Param {
                name: "q",
                kind: Kind::Words,
                required: true,
                description: "Words of the message.",
            },
            REPOSITORIES_QUERY,
            ANSWER_LIMIT_QUERY,
        ],
        body: None,
        streams: false,
        public: false,
        handler: || get(super::pipelines::search_commits),
    },
    Route {
        method: "GET",
        path: "/api/v1/pipelines",
        answers: &[ok(
            "Each pipeline's counts and lag, and the newest pipeline runs.",
            schema::<crate::service::pipelines::PipelinesOverview>,
        )],
        summary: "The downstream pipelines (references, history): runs by status, how far behind the newest index versions each is, and the newest runs.",
        tag: "pipelines",
        query: &[
            param(
                "pipeline",
                Kind::OneOf(&["references", "history"]),
                "Only this pipeline's runs.",
            ),
            param(
                "status",
                Kind::OneOf(&["pending", "running", "success", "failed", "cancelled"]),
                "Only runs in this status.",
            ),
            REPOSITORY_QUERY,
            LIMIT_QUERY,
        ],
        body: None,
        streams: false,
        public: false,
        handler: || get(super::pipelines::list),
    },
    Route {
        method: "POST",
        path: "/api/v1/pipelines/runs/{pipeline_run}/retry",
        answers: &[ok(
            "The pipeline run, pending again.",
            schema::<crate::store::pipelines::PipelineRun>,
        )],
        summary: "Run a failed or cancelled pipeline run again with fresh attempts.",
        tag: "pipelines",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || post(super::pipelines::retry),
    },
    Route {
        method: "POST",
        path: "/api/v1/pipelines/runs/{pipeline_run}/cancel",
        answers: &[ok(
            "The pipeline run, cancelled.",
            schema::<crate::store::pipelines::PipelineRun>,
        )],
        summary: "Cancel a pending or running pipeline run.",
        tag: "pipelines",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || post(super::pipelines::cancel),
    },
    Route {
        method: "GET",
        path: "/healthz",
        answers: &[ok(
            "The server runs and its database answers.",
            schema::<answers::Health>,
        )],
        summary: "Liveness: 200 while the server runs and reaches the database.",
        tag: "meta",
        query: &[],
        body: None,
        streams: false,
        public: true,
        handler: || get(healthz),
    },
    Route {
        method: "GET",
        path: "/metrics",
        answers: &[ok("Prometheus text exposition.", text)],
        summary: "Prometheus metrics: queue depth, stage durations, attempts, failures, items, embeddings per second, search latency.",
        tag: "meta",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || get(super::metrics::metrics),
    },
    Route {
        method: "GET",
        path: "/api/v1/openapi.json",
        answers: &[ok("This document.", object)],
        summary: "This API's OpenAPI 3.1 document.",
        tag: "meta",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || get(openapi),
    },
    Route {
        method: "GET",
        path: "/api/v1/repositories",
        answers: &[ok("The repositories.", schema::<answers::Repositories>)],
        summary: "Every repository with its index version and freshness.",
        tag: "repositories",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || get(list_repositories),
    },
    Route {
        method: "POST",
        path: "/api/v1/repositories",
        answers: &[accepted(
            "Registered (once) and a run enqueued.",
            schema::<index::IndexRequested>,
        )],
        summary: "Index a source (a directory on the server, or a git URL): registers it and enqueues a run. With Accept: application/x-ndjson, streams the run's progress.",
        tag: "repositories",
        query: &[],
        body: Some(RequestBody {
            schema: schema::<IndexBody>,
            required: true,
        }),
        streams: true,
        public: false,
        handler: || post(index_source),
    },
    Route {
        method: "GET",
        path: "/api/v1/repositories/{repository}",
        answers: &[ok("The repository.", schema::<status::RepositoryStatus>)],
        summary: "One repository (by id, or the URL-encoded path or URL it was indexed from) with its index version, freshness and unfinished runs.",
        tag: "repositories",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || get(show_repository),
    },
    Route {
        method: "DELETE",
        path: "/api/v1/repositories/{repository}",
        answers: &[ok(
            "What was removed (or, with dry_run, would be).",
            schema::<crate::service::repositories::Removal>,
        )],
        summary: "Remove a repository: its unfinished runs are cancelled, and its files, snippets, vectors, summaries, runs, pipeline data and keyword documents deleted, with this server's working copy. Audited.",
        tag: "repositories",
        query: &[param(
            "dry_run",
            Kind::Boolean,
            "Say what would be removed, and remove nothing.",
        )],
        body: None,
        streams: false,
        public: false,
        handler: || delete(remove_repository),
    },
    Route {
        method: "POST",
        path: "/api/v1/repositories/{repository}/reindex",
        answers: &[
            ok(
                "A dry run's plan, or (with wait) the ended run's result.",
                schema::<answers::Reindexed>,
            ),
            accepted(
                "Queued; with wait, not ended in time (waited: false, message says how to follow it).",
                schema::<answers::Queued>,
            ),
        ],
        summary: "Reindex a repository: a scope, paths, priority, full or incremental, dry run, wait. With Accept: application/x-ndjson, streams the run's progress snapshots (first at once, terminal last).",
        tag: "repositories",
        query: &[],
        body: Some(RequestBody {
            schema: schema::<ReindexBody>,
            required: false,
        }),
        streams: true,
        public: false,
        handler: || post(reindex_repository),
    },
    Route {
        method: "GET",
        path: "/api/v1/search",
        answers: &[ok("The hits, best first.", schema::<Results>)],
        summary: "Search indexed code; list filters are comma-separated.",
        tag: "search",
        query: &[
            Param {
                required: true,
                ..param(
                    "q",
                    Kind::Words,
                    "What to look for: words, identifiers or a description (at most 2000 characters and 64 distinct words).",
                )
            },
            param(
                "mode",
                Kind::OneOf(MODES),
                "hybrid (default), keyword or semantic.",
            ),
            param(
                "repo",
                Kind::Text,
                "Repositories (ids, or the paths or URLs they were indexed from), comma-separated.",
            ),
            param("lang", Kind::Text, "Languages, comma-separated."),
            param(
                "kind",
                Kind::Text,
                "Snippet kinds (function, class, …), comma-separated.",
            ),
            param("path", Kind::Text, "A glob over repository-relative paths."),
            param(
                "limit",
                Kind::Integer { min: 1, max: 1000 },
                "How many hits (1 to 1000, default 10).",
            ),
        ],
        body: None,
        streams: false,
        public: false,
        handler: || get(search_get),
    },
    Route {
        method: "POST",
        path: "/api/v1/search",
        answers: &[ok("The hits, best first.", schema::<Results>)],
        summary: "Search indexed code, the filters as JSON.",
        tag: "search",
        query: &[],
        body: Some(RequestBody {
            schema: schema::<SearchBody>,
            required: true,
        }),
        streams: false,
        public: false,
        handler: || post(search_post),
    },
    Route {
        method: "GET",
        path: "/api/v1/runs",
        answers: &[ok("The runs.", schema::<answers::Runs>)],
        summary: "The most recent runs, newest first.",
        tag: "runs",
        query: &[
            REPOSITORY_QUERY,
            param(
                "status",
                Kind::OneOf(RUN_STATUSES),
                "Only runs in this status.",
            ),
            LIMIT_QUERY,
        ],
        body: None,
        streams: false,
        public: false,
        handler: || get(list_runs),
    },
    Route {
        method: "GET",
        path: "/api/v1/runs/{run}",
        answers: &[ok("The run.", schema::<answers::RunDetail>)],
        summary: "One run: its stages (the timeline), its progress, and its result when it has ended.",
        tag: "runs",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || get(show_run),
    },
    Route {
        method: "GET",
        path: "/api/v1/runs/{run}/items",
        answers: &[ok("The files.", schema::<answers::RunItems>)],
        summary: "The files a run touched, with status, error and duration.",
        tag: "runs",
        query: &[param(
            "failures",
            Kind::Boolean,
            "Only the files that failed, with their errors.",
        )],
        body: None,
        streams: false,
        public: false,
        handler: || get(run_items),
    },
    Route {
        method: "GET",
        path: "/api/v1/runs/{run}/progress",
        answers: &[ok("The run's progress snapshot.", schema::<Snapshot>)],
        summary: "A run's progress snapshot; with Accept: application/x-ndjson, the live stream of snapshots until the terminal one.",
        tag: "runs",
        query: &[],
        body: None,
        streams: true,
        public: false,
        handler: || get(run_progress),
    },
    Route {
        method: "POST",
        path: "/api/v1/runs/{run}/pause",
        answers: &[ok("The run, paused.", schema::<answers::Steered>)],
        summary: "Pause a queued or running run: no new stage or batch of it starts.",
        tag: "runs",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || post(pause_run),
    },
    Route {
        method: "POST",
        path: "/api/v1/runs/{run}/resume",
        answers: &[ok("The run, resumed.", schema::<answers::Steered>)],
        summary: "Resume a paused run where it stopped.",
        tag: "runs",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || post(resume_run),
    },
    Route {
        method: "POST",
        path: "/api/v1/runs/{run}/cancel",
        answers: &[ok("The run, cancelled.", schema::<answers::Steered>)],
        summary: "Cancel a run that has not ended; the last index version stays searchable.",
        tag: "runs",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || post(cancel_run),
    },
    Route {
        method: "GET",
        path: "/api/v1/tasks",
        answers: &[ok("The tasks.", schema::<answers::Tasks>)],
        summary: "Stage tasks (apalis jobs) with their run, newest run first.",
        tag: "tasks",
        query: &[
            param(
                "status",
                Kind::OneOf(TASK_STATUSES),
                "A stage status (queued, waiting, running, succeeded, failed, cancelled) or a job status (pending, done, killed).",
            ),
            param(
                "stage",
                Kind::OneOf(STAGES),
                "sync, extract, bm25_index, code_embeddings or enrich.",
            ),
            REPOSITORY_QUERY,
            param(
                "run",
                Kind::Integer {
                    min: i64::MIN,
                    max: i64::MAX,
                },
                "Only this run's tasks.",
            ),
            LIMIT_QUERY,
        ],
        body: None,
        streams: false,
        public: false,
        handler: || get(list_tasks),
    },
    Route {
        method: "GET",
        path: "/api/v1/tasks/{task}",
        answers: &[ok("The task.", schema::<answers::OneTask>)],
        summary: "One task.",
        tag: "tasks",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || get(show_task),
    },
    Route {
        method: "POST",
        path: "/api/v1/tasks/{task}/retry",
        answers: &[ok("The task, queued again.", schema::<answers::OneTask>)],
        summary: "Queue a failed or cancelled task again with fresh attempts.",
        tag: "tasks",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || post(retry_task),
    },
    Route {
        method: "POST",
        path: "/api/v1/tasks/{task}/cancel",
        answers: &[ok("The task, cancelled.", schema::<answers::OneTask>)],
        summary: "Cancel a queued, waiting or running task.",
        tag: "tasks",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || post(cancel_task),
    },
    Route {
        method: "GET",
        path: "/api/v1/queue",
        answers: &[ok("The queue's figures.", schema::<QueueStats>)],
        summary: "Queue depth by stage × status × priority class, the oldest queued job's age, and live workers.",
        tag: "tasks",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || get(queue_stats),
    },
    Route {
        method: "GET",
        path: "/api/v1/audit",
        answers: &[ok("The entries.", schema::<answers::Audit>)],
        summary: "The audit log, newest first.",
        tag: "audit",
        query: &[
            REPOSITORY_QUERY,
            param(
                "since",
                Kind::Since,
                "A duration back from now (30m, 12h, 7d) or an RFC 3339 time.",
            ),
            LIMIT_QUERY,
        ],
        body: None,
        streams: false,
        public: false,
        handler: || get(audit),
    },
    Route {
        method: "POST",
        path: "/api/v1/admin/reingest",
        answers: &[
            ok(
                "A dry run: what would be enqueued.",
                schema::<ReingestOutcome>,
            ),
            accepted("Enqueued.", schema::<ReingestOutcome>),
        ],
        summary: "Reingest repositories (all, or some) with full runs, filtered by language, in batches; or a dry run.",
        tag: "admin",
        query: &[],
        body: Some(RequestBody {
            schema: schema::<ReingestBody>,
            required: true,
        }),
        streams: false,
        public: false,
        handler: || post(admin_reingest),
    },
    Route {
        method: "GET",
        path: "/api/v1/dashboard",
        answers: &[ok("The dashboard's data.", schema::<answers::Dashboard>)],
        summary: "Everything the operator dashboard shows, in one answer.",
        tag: "dashboard",
        query: &[],
        body: None,
        streams: false,
        public: false,
        handler: || get(super::dashboard::state),
    },
    Route {
        method: "GET",
        path: "/",
        answers: &[ok("The page.", text)],
        summary: "The operator dashboard (HTML; it holds no data: its script asks the API with the token).",
        tag: "dashboard",
        query: &[],
        body: None,
        streams: false,
        public: true,
        handler: || get(super::dashboard::page),
    },
];

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(_) => Json(answers::Health { status: "ok" }).into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            format!(
                "the database does not answer (error {} in the server's log)",
                super::error::logged(&e)
            ),
        )
        .into_response(),
    }
}

async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}

/// `POST /api/v1/repositories`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexBody {
    /// A directory on the server (absolute path, under one of the server's
    /// `serve.allowed_roots`), or a git URL.
    #[schemars(regex(pattern = NOT_BLANK))]
    pub source: String,
    /// For git sources: a branch, tag or commit (default: the default branch).
    #[serde(default, rename = "ref")]
    pub git_ref: String,
}

async fn index_source(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<IndexBody>,
) -> Result<Response, ApiError> {
    if body.source.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_source",
            "source is empty: give the absolute path of a directory on the server, or a git URL",
        ));
    }
    let requested = index::index(
        &state.store,
        &state.config,
        &body.source,
        &body.git_ref,
        "api",
        index::SourceAccess::Remote,
    )
    .await?;
    let run_id = requested.enqueued.run_id();
    if wants_ndjson(&headers) {
        return Ok(ndjson(progress_stream(&state, Follower::new(run_id))));
    }
    Ok((StatusCode::ACCEPTED, Json(requested)).into_response())
}

async fn list_repositories(
    State(state): State<AppState>,
) -> Result<Json<answers::Repositories>, ApiError> {
    let repositories = status::status(&state.store, &state.config, None, false).await?;
    Ok(Json(answers::Repositories { repositories }))
}

async fn show_repository(
    State(state): State<AppState>,
    Id(selector): Id<String>,
) -> Result<Json<status::RepositoryStatus>, ApiError> {
    let mut one = status::status(&state.store, &state.config, Some(&selector), true).await?;
    Ok(Json(one.remove(0)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveParams {
    #[serde(default)]
    dry_run: bool,
}

async fn remove_repository(
    State(state): State<AppState>,
    Id(selector): Id<String>,
    Params(p): Params<RemoveParams>,
) -> Result<Json<crate::service::repositories::Removal>, ApiError> {
    Ok(Json(
        crate::service::repositories::remove(
            &state.store,
            &state.config,
            "api",
            &selector,
            p.dry_run,
        )
        .await?,
    ))
}

/// `POST /api/v1/repositories/{repository}/reindex`: the options of `trawl reindex`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReindexBody {
    /// What to reindex (default project).
    #[serde(default = "default_scope")]
    pub scope: ScopeKind,
    /// Files (scope files) or directories (scope directory) inside the repository,
    /// relative to its root.
    #[serde(default)]
    pub paths: Vec<String>,
    /// With scope directory: the files below the directories too.
    #[serde(default)]
    pub recursive: bool,
    /// high, normal (default) or low.
    #[serde(default = "default_priority")]
    pub priority: PriorityClass,
    /// Reprocess everything in scope, changed or not.
    #[serde(default)]
    pub full: bool,
    /// Say what would be processed; enqueue nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Answer only when the run has ended, with its result.
    #[serde(default)]
    pub wait: bool,
}

fn default_scope() -> ScopeKind {
    ScopeKind::Project
}

fn default_priority() -> PriorityClass {
    PriorityClass::Normal
}

async fn reindex_repository(
    State(state): State<AppState>,
    Id(repository): Id<String>,
    headers: HeaderMap,
    OptionalBody(body): OptionalBody<ReindexBody>,
) -> Result<Response, ApiError> {
    let request = ReindexRequest {
        repository,
        scope: body.scope,
        paths: body.paths,
        recursive: body.recursive,
        priority: body.priority,
        full: body.full,
        origin: "api".into(),
    };
    if body.dry_run {
        let plan = reindex::plan(&state.store, &state.config, &request).await?;
        let answer = answers::Reindexed::DryRun(Box::new(answers::DryRun {
            dry_run: true,
            plan,
        }));
        return Ok(Json(answer).into_response());
    }
    let (_, queued) = reindex::reindex(&state.store, &state.config, &request).await?;
    if wants_ndjson(&headers) {
        return Ok(ndjson(progress_stream(
            &state,
            Follower::new(queued.run_id),
        )));
    }
    if body.wait {
        match until_ended(&state, queued.run_id).await? {
            Waited::Ended(run) => {
                let result = reindex::result_of(&state.store, &run).await?;
                let answer =
                    answers::Reindexed::Finished(Box::new(answers::Finished { queued, result }));
                return Ok(Json(answer).into_response());
            }
            Waited::NotYet(why) => {
                let answer = answers::Queued {
                    queued: reindex::ReindexQueued {
                        message: why,
                        ..queued
                    },
                    waited: Some(false),
                };
                return Ok((StatusCode::ACCEPTED, Json(answer)).into_response());
            }
        }
    }
    let answer = answers::Queued {
        queued,
        waited: None,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// The longest a `wait` request waits for its run.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// How a wait for a run ended.
pub enum Waited {
    Ended(Box<crate::store::runs::Run>),
    /// It did not end within [`MAX_WAIT`], or no worker is alive to work it: why, and how
    /// to follow it.
    NotYet(String),
}

/// Waits for run `run_id` to end (workers do the work): at most [`MAX_WAIT`], and no longer
/// once no worker is alive (looked for every 2 s; the run stays queued for one to come). A
/// server stopping ends the wait with a 503 `shutting_down`.
pub async fn until_ended(state: &AppState, run_id: i64) -> Result<Waited, ApiError> {
    let alive_within = Duration::from_secs(state.config.worker.orphan_timeout_secs);
    let follow = format!("follow it at /api/v1/runs/{run_id}/progress");
    // Two looks 2 s apart, so a worker that is just starting is not missed.
    let no_worker = async {
        let mut missed = 0;
        loop {
            match crate::service::index::workers_alive(&state.store, alive_within).await {
                Ok(false) => missed += 1,
                _ => missed = 0,
            }
            if missed == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };
    tokio::select! {
        run = crate::service::progress::until_ended(&state.store, run_id) => Ok(Waited::Ended(Box::new(run?))),
        _ = state.stopped() => Err(shutting_down(run_id)),
        _ = no_worker => Ok(Waited::NotYet(format!(
            "no worker is running, so run {run_id} waits in the queue: start `trawl worker` \
             (or `trawl serve --workers N`), then {follow}"
        ))),
        _ = tokio::time::sleep(MAX_WAIT) => Ok(Waited::NotYet(format!(
            "run {run_id} did not end within {} minutes; it goes on: {follow}",
            MAX_WAIT.as_secs() / 60
        ))),
    }
}

fn shutting_down(run_id: i64) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        format!(
            "the server is stopping; run {run_id} goes on: follow it at /api/v1/runs/{run_id}/progress"
        ),
    )
}

/// `POST /api/v1/search`; `GET` takes the same as query parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Words, identifiers, or a description of the code (at most 2000 characters and 64
    /// distinct words).
    #[schemars(length(max = MAX_QUERY_CHARS), regex(pattern = NOT_BLANK))]
    pub query: String,
    /// hybrid (default), keyword or semantic.
    #[serde(default)]
    pub mode: Mode,
    /// Repositories: ids, or the paths or URLs they were indexed from.
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub languages: Vec<String>,
    /// Snippet kinds: function, method, class, struct, chunk, …
    #[serde(default)]
    pub kinds: Vec<String>,
    /// A glob over repository-relative paths.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub path: Option<String>,
    /// How many hits: 1 to 1000 (default 10).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    q: Option<String>,
    #[serde(default)]
    mode: Mode,
    repo: Option<String>,
    lang: Option<String>,
    kind: Option<String>,
    path: Option<String>,
    limit: Option<u16>,
}

/// A comma-separated list, without empty entries.
pub fn list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

async fn search_get(
    State(state): State<AppState>,
    Params(p): Params<SearchParams>,
) -> Result<Json<Results>, ApiError> {
    let Some(query) = p.q else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "q is missing: give what to look for, as in /api/v1/search?q=parse+config",
        ));
    };
    let body = SearchBody {
        query,
        mode: p.mode,
        repositories: list(p.repo),
        languages: list(p.lang),
        kinds: list(p.kind),
        path: p.path,
        limit: p.limit,
    };
    search(&state, body).await.map(Json)
}

async fn search_post(
    State(state): State<AppState>,
    Body(body): Body<SearchBody>,
) -> Result<Json<Results>, ApiError> {
    search(&state, body).await.map(Json)
}

/// Runs a search (`service::search`) for the API or the MCP server, timing it for the
/// metrics.
pub async fn search(state: &AppState, body: SearchBody) -> Result<Results, ApiError> {
    let mode = body.mode;
    let started = std::time::Instant::now();
    let results =
        crate::service::search::search(&state.store, &state.searcher, body.into()).await?;
    state
        .metrics
        .observe_search(mode, started.elapsed().as_secs_f64());
    Ok(results)
}

impl From<SearchBody> for crate::service::search::SearchRequest {
    fn from(b: SearchBody) -> Self {
        crate::service::search::SearchRequest {
            query: b.query,
            mode: b.mode,
            repositories: b.repositories,
            languages: b.languages,
            kinds: b.kinds,
            path: b.path,
            limit: b.limit,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsParams {
    repo: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

/// Resolves an optional repository selector to its id; an unknown one is a 404.
async fn repository_id(state: &AppState, selector: Option<&str>) -> Result<Option<i64>, ApiError> {
    Ok(crate::service::repositories::resolve_id(&state.store, selector).await?)
}

/// A list's `limit`, or `default`; out of 1..=10000 refused.
pub(super) fn limit(value: Option<i64>, default: i64) -> Result<i64, ApiError> {
    match value.unwrap_or(default) {
        n @ 1..=10_000 => Ok(n),
        n => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit {n} is out of range: give 1 to 10000"),
        )),
    }
}

async fn list_runs(
    State(state): State<AppState>,
    Params(p): Params<RunsParams>,
) -> Result<Json<answers::Runs>, ApiError> {
    let limit = limit(p.limit, 50)?;
    let runs =
        crate::service::runs::list(&state.store, p.repo.as_deref(), p.status.as_deref(), limit)
            .await?;
    Ok(Json(answers::Runs { runs }))
}

async fn existing_run(state: &AppState, run_id: i64) -> Result<crate::store::runs::Run, ApiError> {
    Ok(crate::service::runs::existing(&state.store, run_id).await?)
}

async fn show_run(
    State(state): State<AppState>,
    Id(run_id): Id<i64>,
) -> Result<Json<answers::RunDetail>, ApiError> {
    Ok(Json(
        crate::service::runs::show(&state.store, run_id).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsParams {
    #[serde(default)]
    failures: bool,
}

async fn run_items(
    State(state): State<AppState>,
    Id(run_id): Id<i64>,
    Params(p): Params<ItemsParams>,
) -> Result<Json<answers::RunItems>, ApiError> {
    let items = crate::service::runs::items(&state.store, run_id, p.failures).await?;
    Ok(Json(answers::RunItems { run_id, items }))
}

async fn run_progress(
    State(state): State<AppState>,
    Id(run_id): Id<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = existing_run(&state, run_id).await?;
    if wants_ndjson(&headers) && !run.status.is_finished() {
        let follower = Follower::joining(&state.store, run_id).await?;
        return Ok(ndjson(progress_stream(&state, follower)));
    }
    let snapshot = Snapshot::load(&state.store, &run).await?;
    if wants_ndjson(&headers) {
        // An ended run's stream is its terminal snapshot alone.
        let frame: Result<Bytes, Infallible> = Ok(line(&snapshot));
        return Ok(ndjson(futures::stream::iter([frame])));
    }
    Ok(Json(snapshot).into_response())
}

async fn steer_run(
    state: &AppState,
    action: RunAction,
    run_id: i64,
) -> Result<Json<answers::Steered>, ApiError> {
    let run = control_run(&state.store, "api", action, run_id).await?;
    Ok(Json(answers::Steered { run }))
}

async fn pause_run(
    State(state): State<AppState>,
    Id(run): Id<i64>,
) -> Result<Json<answers::Steered>, ApiError> {
    steer_run(&state, RunAction::Pause, run).await
}

async fn resume_run(
    State(state): State<AppState>,
    Id(run): Id<i64>,
) -> Result<Json<answers::Steered>, ApiError> {
    steer_run(&state, RunAction::Resume, run).await
}

async fn cancel_run(
    State(state): State<AppState>,
    Id(run): Id<i64>,
) -> Result<Json<answers::Steered>, ApiError> {
    steer_run(&state, RunAction::Cancel, run).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksParams {
    status: Option<String>,
    stage: Option<String>,
    repo: Option<String>,
    run: Option<i64>,
    limit: Option<i64>,
}

async fn list_tasks(
    State(state): State<AppState>,
    Params(p): Params<TasksParams>,
) -> Result<Json<answers::Tasks>, ApiError> {
    let query = crate::service::tasks::TaskQuery {
        status: p.status,
        stage: p.stage,
        repository: p.repo,
        run_id: p.run,
        limit: limit(p.limit, 100)?,
    };
    let tasks = crate::service::tasks::list(&state.store, query).await?;
    Ok(Json(answers::Tasks { tasks }))
}

async fn show_task(
    State(state): State<AppState>,
    Id(task): Id<String>,
) -> Result<Json<answers::OneTask>, ApiError> {
    let task = crate::service::tasks::show(&state.store, &task).await?;
    Ok(Json(answers::OneTask { task }))
}

async fn retry_task(
    State(state): State<AppState>,
    Id(task): Id<String>,
) -> Result<Json<answers::OneTask>, ApiError> {
    let t = control_task(&state.store, "api", true, &task).await?;
    Ok(Json(answers::OneTask { task: t }))
}

async fn cancel_task(
    State(state): State<AppState>,
    Id(task): Id<String>,
) -> Result<Json<answers::OneTask>, ApiError> {
    let t = control_task(&state.store, "api", false, &task).await?;
    Ok(Json(answers::OneTask { task: t }))
}

async fn queue_stats(State(state): State<AppState>) -> Result<Json<QueueStats>, ApiError> {
    Ok(Json(crate::service::tasks::stats(&state.store).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    repo: Option<String>,
    since: Option<String>,
    limit: Option<i64>,
}

async fn audit(
    State(state): State<AppState>,
    Params(p): Params<AuditParams>,
) -> Result<Json<answers::Audit>, ApiError> {
    let since = p
        .since
        .as_deref()
        .map(crate::domain::parse_since)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", format!("since {e}")))?;
    let repository_id = repository_id(&state, p.repo.as_deref()).await?;
    let entries = state
        .store
        .audit_entries(repository_id, since, limit(p.limit, 100)?)
        .await?;
    Ok(Json(answers::Audit { entries }))
}

/// A repository as a body names it: its id (a number, or the same as a string), or the
/// path or URL it was indexed from.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Selector {
    Id(i64),
    Source(String),
}

impl Selector {
    fn into_text(self) -> String {
        match self {
            Selector::Id(id) => id.to_string(),
            Selector::Source(s) => s,
        }
    }
}

/// `POST /api/v1/admin/reingest`: seed 003's shape.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReingestBody {
    /// Repositories: ids (numbers or strings), or the paths or URLs they were indexed from.
    #[serde(default)]
    pub repositories: Vec<Selector>,
    /// Every registered repository (instead of `repositories`).
    #[serde(default)]
    pub all: bool,
    /// Only the files of these languages.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Runs enqueued per transaction (default 50).
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: usize,
    /// Say what would be enqueued; enqueue nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// high, normal or low (default).
    #[serde(default = "low_priority")]
    pub priority: PriorityClass,
    /// Run only these downstream pipelines again (references, history), over every file;
    /// no base run.
    #[serde(default)]
    pub pipelines: Vec<crate::domain::pipelines::Pipeline>,
}

fn default_batch_size() -> usize {
    50
}

fn low_priority() -> PriorityClass {
    PriorityClass::Low
}

async fn admin_reingest(
    State(state): State<AppState>,
    Body(body): Body<ReingestBody>,
) -> Result<Response, ApiError> {
    let outcome = reingest::reingest(
        &state.store,
        &state.config,
        &ReingestRequest {
            repositories: body
                .repositories
                .into_iter()
                .map(Selector::into_text)
                .collect(),
            all: body.all,
            languages: body.languages,
            dry_run: body.dry_run,
            batch_size: body.batch_size,
            priority: body.priority,
            origin: "api".into(),
            pipelines: body.pipelines,
        },
    )
    .await?;
    let status = if outcome.dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(outcome)).into_response())
}

/// Whether the client asked for a stream of NDJSON progress snapshots.
fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with(NDJSON)))
}

fn ndjson(stream: impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, NDJSON)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(HttpBody::from_stream(stream))
        .expect("a valid response")
}

/// The progress snapshots `follower` yields as NDJSON lines: its first at once
/// (`preparing_index` for a new run), one per stage change and per batch, the terminal
/// one last; then the stream ends. A database failure mid-way, or the server stopping, ends it with an
/// `{"error": …}` line.
pub fn progress_stream(
    state: &AppState,
    follower: Follower,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    struct Follow {
        state: AppState,
        follower: Follower,
        pending: VecDeque<Snapshot>,
        ended: bool,
    }
    let run_id = follower.first().run_id;
    let pending = VecDeque::from([follower.first().clone()]);
    let start = Follow {
        state: state.clone(),
        follower,
        pending,
        ended: false,
    };
    futures::stream::unfold(start, move |mut f| async move {
        loop {
            if let Some(s) = f.pending.pop_front() {
                f.ended = s.terminal;
                return Some((Ok(line(&s)), f));
            }
            if f.ended {
                return None;
            }
            if *f.state.stopping.borrow() {
                f.ended = true;
                return Some((Ok(line(&shutting_down(run_id).body())), f));
            }
            match f.follower.next(&f.state.store).await {
                Ok(more) if more.is_empty() => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = f.state.stopped() => {}
                    }
                }
                Ok(more) => f.pending.extend(more),
                Err(e) => {
                    f.ended = true;
                    let error = ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "stream_failed",
                        e.to_string(),
                    )
                    .body();
                    return Some((Ok(line(&error)), f));
                }
            }
        }
    })
}

fn line(value: &impl serde::Serialize) -> Bytes {
    let mut bytes = serde_json::to_vec(value).expect("snapshots serialise");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the document lists are the domain's, all of them.
    #[test]
    fn documented_names_are_the_domains() {
        let stages: Vec<&str> = crate::domain::Stage::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(stages, STAGES);
        for status in RUN_STATUSES {
            assert_eq!(
                crate::domain::RunStatus::parse(status).map(|r| r.as_str()),
                Some(*status)
            );
        }

        for mode in MODES {
            let parsed: Mode = serde_json::from_value(serde_json::json!(mode)).unwrap();
            assert_eq!(
                serde_json::to_value(parsed).unwrap(),
                serde_json::json!(mode)
            );
        }
    }
}
