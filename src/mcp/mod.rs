//! The MCP server (the official Rust SDK, rmcp): the tools an assistant uses to search code
//! and steer reindexing, over stdio (`trawl mcp`) and over streamable HTTP at `/mcp` under
//! `trawl serve`. Each tool calls the same application services as the CLI and the HTTP
//! API; a refused call is a tool result with `isError` and the API's JSON error
//! (`{"error": {"code", "message"}}`), so the assistant reads why.

use std::sync::Arc;

use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::routes::{self, SearchBody};
use crate::domain::PriorityClass;
use crate::service::control::{RunAction, control_run};
use crate::service::reindex::{self, ReindexRequest, ScopeKind};
use crate::service::{search, status};

/// The tools, over one application state.
#[derive(Clone)]
pub struct TrawlMcp {
    state: AppState,
    tool_router: ToolRouter<Self>,
}

/// The scopes of seed 001's `force_reindex`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReindexScopeArg {
    /// One file: `paths` holds it.
    File,
    /// The files in `paths`.
    Files,
    /// The directories in `paths` (with `recursive`, below them too).
    Directory,
    /// The whole repository.
    Project,
    /// No parse: embed the existing snippets again.
    EmbeddingsOnly,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ForceReindexArgs {
    /// What to reindex.
    pub scope: ReindexScopeArg,
    /// The repository: its id, or the path or URL it was indexed from. May be left out
    /// when only one repository is indexed.
    #[serde(default)]
    pub repository: Option<String>,
    /// File or directory paths inside the repository, relative to its root (for scope
    /// file, files, directory).
    #[serde(default)]
    pub paths: Vec<String>,
    /// With scope directory: the files below the directories too.
    #[serde(default)]
    pub recursive: bool,
    /// Priority in the queue: high, normal (default) or low.
    #[serde(default = "normal")]
    pub priority: PriorityClass,
    /// Only regenerate embeddings, skip parsing (the same as scope embeddings-only).
    #[serde(default)]
    pub embeddings_only: bool,
    /// Run in the background and answer at once (true, the default), or answer when the
    /// run has ended, with its result (false).
    #[serde(default = "yes", rename = "async")]
    pub run_async: bool,
    /// Only reindex files whose content changed (true); by default every file in scope is
    /// reprocessed.
    #[serde(default)]
    pub incremental: bool,
}

fn normal() -> PriorityClass {
    PriorityClass::Normal
}

fn yes() -> bool {
    true
}

/// A symbol to look up (find_references, callers, callees).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SymbolArgs {
    /// The name: `parse`, or qualified (`Config::parse`: the last part is looked up).
    pub symbol: String,
    /// Only these repositories: ids, or the paths or URLs they were indexed from.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Only files under this path prefix: where the references are (find_references,
    /// callers) or where the function is defined (callees).
    #[serde(default)]
    pub path: Option<String>,
    /// Only these kinds of reference (find_references only): call, import, type.
    #[serde(default)]
    pub kinds: Vec<crate::extract::references::RefKind>,
    /// At most this many (1 to 1000, default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl From<SymbolArgs> for crate::service::references::ReferencesRequest {
    fn from(a: SymbolArgs) -> Self {
        crate::service::references::ReferencesRequest {
            symbol: a.symbol,
            repositories: a.repositories,
            path: a.path,
            kinds: a.kinds,
            limit: a.limit,
        }
    }
}

/// What history looks up.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// A file relative to its repository's root, with `:LINE` or `:START-END` for lines of
    /// it. Give this or snippet_id.
    #[serde(default)]
    pub path: Option<String>,
    /// A snippet's id, from search results (snippet_id).
    #[serde(default)]
    pub snippet_id: Option<i64>,
    /// The repository, when several have the file.
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Words to find in commit messages.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitSearchArgs {
    /// Words of the message (stemmed; "a phrase", -word and OR work).
    pub query: String,
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A repository to remove.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveArgs {
    /// The repository: its id, or the path or URL it was indexed from (`url@ref` when it
    /// was added at several refs).
    pub repository: String,
    /// Say what would be removed, and remove nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskArgs {
    /// The task id force_reindex returned (the run id).
    pub task_id: String,
}

/// A tool's arguments, read by trawl rather than by rmcp: arguments that do not fit the
/// tool's schema (a missing field, an unknown scope or priority, a wrong type) make a
/// refused call with the error JSON (code `invalid_arguments`), as every other refusal,
/// not a JSON-RPC error in plain text. Named `Parameters` because rmcp's `#[tool]` takes a
/// tool's input schema from the argument of that name (through `JsonSchema` here).
pub struct Parameters<T>(Result<T, ApiError>);

impl<S, T: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Parameters<T> {
    fn from_context_part(context: &mut ToolCallContext<S>) -> Result<Self, ErrorData> {
        let arguments = Value::Object(context.arguments.take().unwrap_or_default());
        Ok(Parameters(serde_json::from_value(arguments).map_err(|e| {
            ApiError::bad_request(
                "invalid_arguments",
                format!(
                    "the arguments of {} do not fit its input schema: {e}",
                    context.name
                ),
            )
        })))
    }
}

impl<T: JsonSchema> JsonSchema for Parameters<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// A tool's successful answer: its JSON as text.
fn answer(value: &Value) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::success(vec![ContentBlock::text(
        value.to_string(),
    )]))
}

/// A refused call: `isError`, with the API's error JSON.
fn refused(e: ApiError) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::error(vec![ContentBlock::text(
        e.body().to_string(),
    )]))
}

fn reply(result: Result<Value, ApiError>) -> Result<CallToolResult, ErrorData> {
    match result {
        Ok(value) => answer(&value),
        Err(e) => refused(e),
    }
}

/// A task id as a run id.
fn run_id(task_id: &str) -> Result<i64, ApiError> {
    let digits = task_id.trim().trim_start_matches("run-");
    digits.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_task_id",
            format!("{task_id:?} is not a task id: give the task_id force_reindex returned (a run id, such as \"12\")"),
        )
    })
}

#[tool_router]
impl TrawlMcp {
    pub fn new(state: AppState) -> TrawlMcp {
        TrawlMcp {
            state,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Search indexed code: hybrid (keyword + semantic) by default. Returns hits with repository, path, lines, kind, name, language, score and the snippet."
    )]
    async fn search(
        &self,
        Parameters(args): Parameters<SearchBody>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let body = args?;
                let mode = body.mode;
                let started = std::time::Instant::now();
                let results =
                    search::search(&self.state.store, &self.state.searcher, body.into()).await?;
                let took = started.elapsed().as_secs_f64();
                self.state.metrics.observe_search(mode, took);
                Ok(json!(results))
            }
            .await,
        )
    }

    #[tool(
        description = "Force reindexing of files, directories, or a whole project (or only its embeddings). Returns a task_id to follow with get_reindex_status; with async=false, waits for the run to end (workers do the work: `trawl serve` or `trawl worker` must run) and returns the result."
    )]
    async fn force_reindex(
        &self,
        Parameters(args): Parameters<ForceReindexArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(async { self.reindex(args?).await }.await)
    }

    #[tool(
        description = "The progress of a reindex task: status, stage, percent, items done and total; its result once it has ended."
    )]
    async fn get_reindex_status(
        &self,
        Parameters(args): Parameters<TaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(async { self.status_of(&args?.task_id).await }.await)
    }

    #[tool(
        description = "Cancel a reindex task that has not ended; the last index version stays searchable."
    )]
    async fn cancel_reindex(
        &self,
        Parameters(args): Parameters<TaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(async { self.steer(RunAction::Cancel, &args?.task_id).await }.await)
    }

    #[tool(description = "Pause a reindex task: no new stage or batch of it starts.")]
    async fn pause_reindex(
        &self,
        Parameters(args): Parameters<TaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(async { self.steer(RunAction::Pause, &args?.task_id).await }.await)
    }

    #[tool(
        description = "Remove a repository with everything it holds (files, snippets, vectors, runs, pipeline data, keyword documents); its unfinished runs are cancelled. dry_run says what would go. Audited."
    )]
    async fn remove_repository(
        &self,
        Parameters(args): Parameters<RemoveArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let args = args?;
                Ok(json!(
                    crate::service::repositories::remove(
                        &self.state.store,
                        &self.state.config,
                        "mcp",
                        &args.repository,
                        args.dry_run,
                    )
                    .await?
                ))
            }
            .await,
        )
    }

    #[tool(description = "Resume a paused reindex task where it stopped.")]
    async fn resume_reindex(
        &self,
        Parameters(args): Parameters<TaskArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(async { self.steer(RunAction::Resume, &args?.task_id).await }.await)
    }

    #[tool(
        description = "Where a symbol is used: calls, imports and type uses with their file, line and enclosing function, each resolved to its definition (same file, or the one file that defines it) or marked ambiguous or unresolved; says when the answer lags behind the newest index version."
    )]
    async fn find_references(
        &self,
        Parameters(args): Parameters<SymbolArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.references(args, None).await
    }

    #[tool(
        description = "Who calls a function: every call of the name, with the function each call is in and where the callee resolves to."
    )]
    async fn callers(
        &self,
        Parameters(args): Parameters<SymbolArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.references(args, Some(crate::extract::references::RefKind::Call))
            .await
    }

    #[tool(
        description = "What a function calls: for each definition of it, the calls inside it, resolved."
    )]
    async fn callees(
        &self,
        Parameters(args): Parameters<SymbolArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let req = args?.into();
                Ok(json!(
                    crate::service::references::callees(&self.state.store, &req).await?
                ))
            }
            .await,
        )
    }

    #[tool(
        description = "When and why code changed: the commits of a git source that changed a file, lines of it (path:10-40) or a snippet (snippet_id), newest first, with author, date and message."
    )]
    async fn history(
        &self,
        Parameters(args): Parameters<HistoryArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                use crate::service::history::{Target, history};
                let a = args?;
                let target = match (a.snippet_id, a.path) {
                    (Some(id), None) => Target::Snippet(id),
                    (None, Some(p)) => Target::parse(&p),
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_arguments",
                            "give path or snippet_id, one of them",
                        ));
                    }
                };
                Ok(json!(
                    history(&self.state.store, &target, a.repository.as_deref(), a.limit).await?
                ))
            }
            .await,
        )
    }

    #[tool(
        description = "Search the commit messages of git sources by their words, best first (the messages holding most of them; \"a phrase\", -not and or as in web search): \"when was retry backoff added\"."
    )]
    async fn search_commits(
        &self,
        Parameters(args): Parameters<CommitSearchArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let a = args?;
                Ok(json!(
                    crate::service::history::search_commits(
                        &self.state.store,
                        &a.query,
                        &a.repositories,
                        a.limit
                    )
                    .await?
                ))
            }
            .await,
        )
    }

    #[tool(
        description = "The indexed repositories with their index version, its age, and the runs not yet ended."
    )]
    async fn list_repositories(&self) -> Result<CallToolResult, ErrorData> {
        let all = status::status(&self.state.store, &self.state.config, None, false)
            .await
            .map_err(ApiError::from);
        reply(all.map(|repositories| json!({ "repositories": repositories })))
    }
}

impl TrawlMcp {
    async fn reindex(&self, args: ForceReindexArgs) -> Result<Value, ApiError> {
        let store = &self.state.store;
        let repository = match args.repository {
            Some(r) => r,
            None => {
                let all = store.list_repositories().await?;
                match all.as_slice() {
                    [only] => only.id.to_string(),
                    _ => {
                        return Err(ApiError::bad_request(
                            "repository_required",
                            format!(
                                "{} repositories are indexed: say which with `repository` (an id, or the path it was indexed from); list_repositories lists them",
                                all.len()
                            ),
                        ));
                    }
                }
            }
        };
        let embeddings_only =
            args.embeddings_only || matches!(args.scope, ReindexScopeArg::EmbeddingsOnly);
        if embeddings_only && !args.paths.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_scope",
                "embeddings-only re-embeds every snippet of the repository and takes no `paths`: leave them out, or reindex those paths with scope file, files or directory",
            ));
        }
        let scope = match (args.embeddings_only, args.scope) {
            (true, _) | (false, ReindexScopeArg::EmbeddingsOnly) => ScopeKind::EmbeddingsOnly,
            (false, ReindexScopeArg::File) => {
                if args.paths.len() != 1 {
                    return Err(ApiError::bad_request(
                        "invalid_scope",
                        format!(
                            "scope file takes exactly one path in `paths` ({} given); use scope files for several",
                            args.paths.len()
                        ),
                    ));
                }
                ScopeKind::Files
            }
            (false, ReindexScopeArg::Files) => ScopeKind::Files,
            (false, ReindexScopeArg::Directory) => ScopeKind::Directory,
            (false, ReindexScopeArg::Project) => ScopeKind::Project,
        };
        let request = ReindexRequest {
            repository,
            scope,
            paths: args.paths,
            recursive: args.recursive,
            priority: args.priority,
            full: !args.incremental,
            origin: "mcp".into(),
        };
        let (_, queued) = reindex::reindex(store, &self.state.config, &request).await?;
        let task_id = queued.run_id.to_string();
        let mut out = json!({
            "task_id": task_id,
            "scope": queued.scope,
            "status": queued.status,
            "items_total": queued.items_total,
            "items_queued": queued.items_queued,
            "estimated_duration_seconds": queued.estimated_seconds,
            "message": format!("Reindexing task {task_id} created. Use get_reindex_status(task_id) to track progress."),
            "result": null,
        });
        if !args.run_async {
            match routes::until_ended(&self.state, queued.run_id).await? {
                routes::Waited::Ended(run) => {
                    out["status"] = json!(run.status);
                    out["result"] = serde_json::to_value(reindex::result_of(store, &run).await?)
                        .expect("results serialise");
                    out["message"] = json!(format!("Reindexing task {task_id} {}.", run.status));
                }
                routes::Waited::NotYet(why) => {
                    out["message"] = json!(format!(
                        "{why}; or call get_reindex_status(task_id {task_id})"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The references to `args`' symbol (of kind `only`, when given), as a tool result.
    async fn references(
        &self,
        args: Result<SymbolArgs, ApiError>,
        only: Option<crate::extract::references::RefKind>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let mut req: crate::service::references::ReferencesRequest = args?.into();
                if let Some(kind) = only {
                    req.kinds = vec![kind];
                }
                Ok(json!(
                    crate::service::references::references(&self.state.store, &req).await?
                ))
            }
            .await,
        )
    }

    async fn status_of(&self, task_id: &str) -> Result<Value, ApiError> {
        let id = run_id(task_id)?;
        let view = match crate::service::runs::show(&self.state.store, id).await {
            Ok(view) => view,
            Err(crate::service::runs::RunError::Unknown(_)) => {
                return Err(ApiError::not_found(
                    "unknown_task",
                    format!("no task {task_id}: give the task_id force_reindex returned"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let mut progress = view.progress;
        progress.status = view.run.status.to_string();
        Ok(json!({
            "task_id": task_id,
            "status": view.run.status,
            "progress": progress,
            "result": view.result,
        }))
    }

    async fn steer(&self, action: RunAction, task_id: &str) -> Result<Value, ApiError> {
        let run = control_run(&self.state.store, "mcp", action, run_id(task_id)?).await?;
        Ok(json!({ "task_id": task_id, "status": run.status }))
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "trawl",
    instructions = "trawl indexes code repositories. Use `search` to find code (hybrid keyword + semantic), `list_repositories` to see what is indexed, `force_reindex` with `get_reindex_status`, `pause_reindex`, `resume_reindex` and `cancel_reindex` to refresh an index, and `remove_repository` to remove one with all it holds. Over the symbol graph and git history: `find_references` (where a symbol is used), `callers` and `callees` (who calls a function, what it calls), `history` (the commits that changed a file, lines of it or a snippet) and `search_commits` (commit messages by their words)."
)]
impl ServerHandler for TrawlMcp {}

/// Why the stdio server stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("the MCP client did not initialise the session: {0}")]
    Initialise(String),
    #[error("the MCP session ended abnormally: {0}")]
    Session(String),
}

/// Serves MCP over stdin and stdout until the client closes them.
pub async fn serve_stdio(state: AppState) -> Result<(), McpError> {
    use rmcp::ServiceExt as _;
    let service = TrawlMcp::new(state)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Initialise(e.to_string()))?;
    service
        .waiting()
        .await
        .map_err(|e| McpError::Session(e.to_string()))?;
    Ok(())
}

/// The streamable HTTP endpoint at `/mcp`, for `trawl serve`. It stops when `stop`
/// resolves (open SSE streams included, so shutdown does not wait on clients). Without a
/// token it answers only requests addressed to a loopback host (against DNS rebinding).
pub fn http_router(
    state: AppState,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> axum::Router {
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            stop.await;
            cancel.cancel();
        }
    });
    let mut config = StreamableHttpServerConfig::default().with_cancellation_token(cancel);
    if state.token.is_some() {
        config = config.disable_allowed_hosts();
    }
    let service = StreamableHttpService::new(
        move || Ok(TrawlMcp::new(state.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::map_response(
            crate::api::error::json_errors,
        ))
}
