//! Downstream pipelines (see `domain::pipelines`): the router that turns events into
//! pipeline runs, and the runs' jobs, each pipeline on its own apalis queue.
//!
//! - [`route_forever`]: every worker process routes; each event is routed once (the
//!   router's rows are locked with SKIP LOCKED, and a pipeline run is unique per key).
//! - [`handle`]: one pipeline job: begin, work, then succeed, retry after the stages'
//!   backoff, or fail for good. Pipelines only read the base index and write their own
//!   tables: a failure never touches the base index or another pipeline.
//! - [`references`] and [`history`]: the two pipelines.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::faults::Target;
use super::{PipelineContext, StageError};
use crate::domain::pipelines::Pipeline;
use crate::store::pipelines::PipelineRun;

/// Events routed per transaction.
const ROUTE_BATCH: i64 = 200;
/// The router looks for events at least this often (a notification lost with a connection
/// is made up for).
const ROUTE_POLL: Duration = Duration::from_secs(2);

/// Routes events as they are announced (`announced`, the process' wake-ups of events) and
/// at least every [`ROUTE_POLL`], until `stop`.
pub async fn route_forever(
    ctx: Arc<PipelineContext>,
    mut announced: futures::stream::BoxStream<'static, ()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures::StreamExt as _;
    loop {
        if *stop.borrow() {
            return;
        }
        route_all(&ctx).await;
        tokio::select! {
            woke = announced.next() => {
                // The wake-ups ended (the process is stopping): poll until told to stop.
                if woke.is_none() {
                    tokio::time::sleep(ROUTE_POLL).await;
                }
            }
            _ = tokio::time::sleep(ROUTE_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Routes every unrouted event (in batches); failures are logged and tried again later.
pub async fn route_all(ctx: &PipelineContext) {
    let attempts = ctx.config.worker.max_attempts.min(i32::MAX as u32) as i32;
    loop {
        match ctx.store.route_events(ROUTE_BATCH, attempts).await {
            Ok(r) if r.events > 0 => {
                tracing::debug!(events = r.events, runs = r.runs, "events routed");
                if (r.events as i64) < ROUTE_BATCH {
                    return;
                }
            }
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "routing events failed; trying again shortly");
                return;
            }
        }
    }
}

/// Runs the pipeline job `job_id` of `pipeline` and records its outcome.
pub async fn handle(ctx: Arc<PipelineContext>, pipeline: Pipeline, job_id: String) {
    let store = &ctx.store;
    let run = match super::worker::recorded(|| store.begin_pipeline_run(&job_id)).await {
        Ok(Some(run)) => run,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(job = %job_id, error = %e, "could not begin a pipeline job");
            return;
        }
    };
    let span = tracing::info_span!("pipeline", %pipeline, run = run.id, repo = run.repository_id);
    work(&ctx, pipeline, &job_id, &run).instrument(span).await
}

async fn work(ctx: &PipelineContext, pipeline: Pipeline, job_id: &str, run: &PipelineRun) {
    let store = &ctx.store;
    let attempt = run.attempt.max(1) as u32;
    let started = std::time::Instant::now();
    let outcome = async {
        ctx.faults
            .inject_into(store, Target::Pipeline(pipeline), attempt)
            .await?;
        match pipeline {
            Pipeline::References => references::run(ctx, run).await,
            Pipeline::History => history::run(ctx, run).await,
        }
    }
    .await;
    let policy = ctx.retry_policy();
    let recorded = match outcome {
        Ok(report) => {
            tracing::info!(
                attempt,
                ms = started.elapsed().as_millis() as u64,
                "pipeline run succeeded"
            );
            super::worker::recorded(|| store.succeed_pipeline_run(job_id, &report))
                .await
                .map(|_| ())
        }
        Err(e) if e.is_retryable() && policy.allows_another(attempt) => {
            let msg = crate::redact::text(&e.report());
            let delay = policy.backoff(attempt, rand::rng().random());
            tracing::warn!(attempt, error = %msg, delay_ms = delay.as_millis() as u64, "pipeline run failed, will retry");
            super::worker::recorded(|| store.retry_pipeline_run(job_id, &msg, delay)).await
        }
        Err(e) => {
            let msg = if e.is_retryable() {
                format!(
                    "{} (gave up after {attempt} {})",
                    e.report(),
                    if attempt == 1 { "attempt" } else { "attempts" }
                )
            } else {
                e.report()
            };
            let msg = crate::redact::text(&msg);
            tracing::error!(attempt, error = %msg, "pipeline run failed for good");
            super::worker::recorded(|| store.fail_pipeline_run(job_id, &msg)).await
        }
    };
    if let Err(e) = recorded {
        tracing::error!(job = %job_id, error = %e, "could not record a pipeline run's outcome");
    }
}

/// Pipeline 1: definitions and references of each changed file, from its stored content.
pub mod references {
    use super::*;
    use crate::extract::references::{Symbols, symbols};

    /// Files parsed per transaction.
    const PAGE: i64 = 200;

    pub async fn run(ctx: &PipelineContext, run: &PipelineRun) -> Result<Value, StageError> {
        let store = &ctx.store;
        let repo = run.repository_id;
        let (mut files, mut defs, mut refs) = (0usize, 0u64, 0u64);
        let mut deleted = run.deleted.clone();
        match &run.paths {
            Some(paths) => {
                for chunk in paths.chunks(PAGE as usize) {
                    let contents = store.current_contents(repo, Some(chunk), "", PAGE).await?;
                    // A file of the event gone since (deleted, now skipped) loses its rows.
                    deleted.extend(
                        chunk
                            .iter()
                            .filter(|p| !contents.iter().any(|c| &c.0 == *p))
                            .cloned(),
                    );
                    let parsed = parse(contents).await?;
                    files += parsed.len();
                    let (d, r) = store.replace_symbols(repo, &parsed, &deleted).await?;
                    deleted.clear();
                    (defs, refs) = (defs + d, refs + r);
                }
                if !deleted.is_empty() {
                    store.replace_symbols(repo, &[], &deleted).await?;
                }
            }
            None => {
                if !deleted.is_empty() {
                    store.replace_symbols(repo, &[], &deleted).await?;
                }
                let mut after = String::new();
                loop {
                    let contents = store.current_contents(repo, None, &after, PAGE).await?;
                    let Some(last) = contents.last() else { break };
                    after = last.0.clone();
                    let parsed = parse(contents).await?;
                    files += parsed.len();
                    let (d, r) = store.replace_symbols(repo, &parsed, &[]).await?;
                    (defs, refs) = (defs + d, refs + r);
                }
                store.prune_symbols(repo).await?;
            }
        }
        Ok(json!({ "files": files, "definitions": defs, "references": refs }))
    }

    /// Parses files (path, language, content) off the async threads.
    async fn parse(
        contents: Vec<(String, String, Vec<u8>)>,
    ) -> Result<Vec<(String, Symbols)>, StageError> {
        tokio::task::spawn_blocking(move || {
            contents
                .into_iter()
                .map(|(path, language, bytes)| {
                    let found = symbols(&language, &bytes).unwrap_or(Symbols {
                        defs: Vec::new(),
                        refs: Vec::new(),
                    });
                    (path, found)
                })
                .collect()
        })
        .await
        .map_err(|e| StageError::Permanent(format!("parsing failed: {e}")))
    }
}

/// Pipeline 2: a git source's commits, the files they touched, and the blame of the files
/// that changed since the commit it last reflected (of every file, on its first run and an
/// operator's reingest).
pub mod history {
    use super::*;
    use crate::sources::git::{self, GitOptions};

    pub async fn run(ctx: &PipelineContext, run: &PipelineRun) -> Result<Value, StageError> {
        let store = &ctx.store;
        let repo = store.repository(run.repository_id).await?;
        if repo.source_kind != "git" {
            return Ok(json!({ "skipped": "not a git source" }));
        }
        let Some(commit) = store.indexed_commit(repo.id, run.index_version).await? else {
            return Err(StageError::Permanent(format!(
                "index version {} of repository {} records no commit",
                run.index_version, repo.id
            )));
        };
        // An operator's reingest blames every file again; otherwise those changed since the
        // commit the history last reflected.
        let previous = if run.key.starts_with(crate::store::events::REINGEST_KEY) {
            None
        } else {
            store.history_commit(repo.id).await?
        };
        let indexed = store.indexed_paths(repo.id).await?;
        let dir = ctx.config.home.join("history").join(repo.id.to_string());
        let lock_path = dir.with_extension("lock");
        let options = GitOptions::from_config(&ctx.config);
        let depth = ctx.config.pipelines.history.depth;
        let (url, git_ref) = (repo.source.clone(), repo.git_ref.clone());
        let work = tokio::task::spawn_blocking(move || {
            if let Some(parent) = lock_path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StageError::Permanent(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            // One history run at a time per repository on this node (git's own locks
            // would fail the second).
            let _lock = crate::filelock::FileLock::acquire(&lock_path).map_err(|e| {
                StageError::Retryable(format!("cannot lock {}: {e}", lock_path.display()))
            })?;
            let fetched =
                git::history::fetch(&options, &url, &git_ref, &dir, depth).map_err(git_error)?;
            // The version's commit, if the remote still has it within the depth; else the
            // ref's tip (the next version brings the rest).
            let at = if git::history::has(&options, &dir, &url, &commit) {
                commit
            } else {
                fetched
            };
            let commits = git::history::log(&options, &dir, &url, &at, depth).map_err(git_error)?;
            let changed: Vec<String> = match previous
                .as_deref()
                .filter(|p| git::history::has(&options, &dir, &url, p))
            {
                Some(p) => {
                    git::history::changed(&options, &dir, &url, p, &at).map_err(git_error)?
                }
                None => indexed.clone(),
            };
            let everything = previous.is_none();
            let mut blamed = Vec::new();
            let mut gone = Vec::new();
            for path in changed {
                if indexed.binary_search(&path).is_err() {
                    gone.push(path);
                    continue;
                }
                match git::history::blame(&options, &dir, &url, &at, &path) {
                    Ok(ranges) => blamed.push((path, ranges)),
                    // A file the commit lacks (indexed from a newer sync): no blame.
                    Err(git::GitError::Failed { .. }) => gone.push(path),
                    Err(e) => return Err(git_error(e)),
                }
            }
            Ok::<_, StageError>((at, commits, blamed, gone, everything))
        });
        let (at, commits, blamed, gone, everything) = work
            .await
            .map_err(|e| StageError::Permanent(format!("the history work failed: {e}")))??;
        let new = store.store_commits(repo.id, &commits).await?;
        store
            .replace_blame(repo.id, &blamed, &gone, everything)
            .await?;
        Ok(json!({
            "commit": at,
            "commits": commits.len(),
            "new_commits": new,
            "files_blamed": blamed.len(),
        }))
    }

    fn git_error(e: git::GitError) -> StageError {
        if e.is_retryable() {
            StageError::Retryable(e.to_string())
        } else {
            StageError::Permanent(e.to_string())
        }
    }
}
