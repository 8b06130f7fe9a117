//! Indexing a source: register the repository and enqueue a run; wait for a run to end,
//! working it in-process when no worker is alive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::domain::{PriorityClass, Trigger};
use crate::pipeline::PipelineContext;
use crate::sources::git;
use crate::store::runs::{Enqueued, NewRun, Repository, Run, STAGE_QUEUE};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(
        "the worker this process ran for run {run_id} stopped before the run ended ({why}); \
         the run stays queued: run `trawl worker`, or wait again"
    )]
    WorkerStopped { run_id: i64, why: String },
    #[error("{path} does not exist: give the path of a directory to index")]
    NoSuchPath { path: String },
    #[error("{path} is not a directory: give the path of a directory to index")]
    NotADirectory { path: String },
    #[error(transparent)]
    Git(#[from] crate::sources::git::GitError),
    #[error(
        "no repository {selector}: give a repository id, or the path or URL it was indexed from (see `trawl runs list`)"
    )]
    UnknownRepository { selector: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `index` did.
#[derive(Debug, Clone, Serialize)]
pub struct IndexRequested {
    pub repository: Repository,
    pub enqueued: Enqueued,
}

/// Registers `source` (idempotently) and enqueues a user-initiated run of it.
pub async fn index(
    store: &Store,
    config: &crate::config::Config,
    source: &str,
    git_ref: &str,
    origin: &str,
) -> Result<IndexRequested, IndexError> {
    let repository = if git::is_git_url(source) {
        register_git(store, source, git_ref).await?
    } else {
        register_directory(store, source).await?
    };
    let enqueued = store
        .enqueue_run(&NewRun {
            repository_id: repository.id,
            trigger: Trigger::User,
            origin: origin.to_string(),
            priority: PriorityClass::default_for(Trigger::User),
            scope: serde_json::json!({ "kind": "project" }),
            full: false,
            max_attempts: [config.worker.max_attempts; 5],
        })
        .await?;
    Ok(IndexRequested {
        repository,
        enqueued,
    })
}

/// Registers a local directory by its canonical path.
async fn register_directory(store: &Store, source: &str) -> Result<Repository, IndexError> {
    let path = PathBuf::from(source);
    let canonical = std::fs::canonicalize(&path).map_err(|_| IndexError::NoSuchPath {
        path: source.to_string(),
    })?;
    if !canonical.is_dir() {
        return Err(IndexError::NotADirectory {
            path: source.to_string(),
        });
    }
    let name = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    Ok(store
        .register_repository("directory", &canonical.to_string_lossy(), "", &name)
        .await?)
}

/// Registers a git remote after checking that it answers (and has `git_ref`).
async fn register_git(store: &Store, url: &str, git_ref: &str) -> Result<Repository, IndexError> {
    let (u, r) = (url.to_string(), git_ref.to_string());
    tokio::task::spawn_blocking(move || git::probe(&u, &r))
        .await
        .map_err(|e| IndexError::Git(git::GitError::NoGit(e.to_string())))??;
    let name = url
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(url)
        .to_string();
    Ok(store
        .register_repository("git", url, git_ref, &name)
        .await?)
}

/// Whether some worker process on the stage queue sent a heartbeat recently.
pub async fn workers_alive(store: &Store, within: Duration) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM apalis.workers WHERE worker_type = $1 AND last_seen > now() - make_interval(secs => $2))",
    )
    .bind(STAGE_QUEUE)
    .bind(within.as_secs_f64())
    .fetch_one(store.pool())
    .await?)
}

/// Waits until run `run_id` ends, calling `on_snapshot` with its progress snapshots (the
/// first at once, the last terminal; see `service::progress`). When no worker is alive,
/// runs an in-process worker until the run ends.
pub async fn wait_for_run(
    ctx: Arc<PipelineContext>,
    run_id: i64,
    mut on_snapshot: impl FnMut(&crate::service::progress::Snapshot),
) -> Result<Run, IndexError> {
    let store = ctx.store.clone();
    let alive_within = Duration::from_secs(ctx.config.worker.orphan_timeout_secs);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // A worker in this process, when no worker process is alive.
    let spawn_local = || {
        tracing::info!("no worker is alive: working the run in this process");
        let ctx = ctx.clone();
        let concurrency = ctx.config.worker.concurrency;
        let mut stop = stop_rx.clone();
        tokio::spawn(crate::pipeline::worker::run(ctx, concurrency, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }))
    };
    let mut local = if workers_alive(&store, alive_within).await? {
        None
    } else {
        Some(spawn_local())
    };
    let mut follower = crate::service::progress::Follower::new(run_id);
    on_snapshot(follower.first());
    let mut looks = 0u32;
    let run = 'watch: loop {
        for s in follower.next(&store).await? {
            on_snapshot(&s);
            if s.terminal {
                break 'watch store.run(run_id).await?;
            }
        }
        if local.as_ref().is_some_and(|h| h.is_finished()) {
            let why = match local.take().expect("checked").await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "it stopped".to_string(),
                Err(e) => e.to_string(),
            };
            return Err(IndexError::WorkerStopped { run_id, why });
        }
        // The workers relied on may go away: look again every few seconds.
        looks += 1;
        if local.is_none()
            && looks.is_multiple_of(30)
            && !workers_alive(&store, alive_within).await?
        {
            local = Some(spawn_local());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Some(handle) = local {
        let _ = stop_tx.send(true);
        let _ = handle.await;
    }
    Ok(run)
}
