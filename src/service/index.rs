//! Indexing a source: register the repository and enqueue a run; wait for a run to end,
//! working it in-process when no worker is alive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::domain::{PriorityClass, Trigger};
use crate::pipeline::PipelineContext;
use crate::sources::git;
use crate::store::lifecycle::STAGE_QUEUE;
use crate::store::repositories::Repository;
use crate::store::runs::{Enqueued, NewRun, Run};
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
    #[error(
        "{source_given} is not under a directory this server allows clients to index \
         (serve.allowed_roots, TRAWL_ALLOWED_ROOTS{roots}): over HTTP, give a git URL, \
         or ask the operator to allow the directory"
    )]
    SourceNotAllowed { source_given: String, roots: String },
    #[error(
        "{source_given} is a relative path: give the absolute path of a directory on the server, \
         or a git URL"
    )]
    RelativeSource { source_given: String },
    #[error("{path} is not a directory: give the path of a directory to index")]
    NotADirectory { path: String },
    #[error(transparent)]
    Git(#[from] crate::sources::git::GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `index` did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct IndexRequested {
    pub repository: Repository,
    pub enqueued: Enqueued,
}

/// Who asks for a source, and so which sources they may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceAccess {
    /// The machine's own user (the CLI, benchmarks): any directory it can read, any git URL.
    Local,
    /// A client over HTTP: git URLs of remotes, and directories (or git URLs that
    /// read this machine's disk, `file://`) under `serve.allowed_roots` only; relative
    /// paths never.
    Remote,
}

/// Registers `source` (idempotently) and enqueues a user-initiated run of it. Credentials
/// in a git URL are never stored: the URL is registered without them (a token goes in
/// `git.token`, for the hosts of `git.token_hosts`).
pub async fn index(
    store: &Store,
    config: &crate::config::Config,
    source: &str,
    git_ref: &str,
    origin: &str,
    access: SourceAccess,
) -> Result<IndexRequested, IndexError> {
    let outcome = register_and_enqueue(store, config, source, git_ref, origin, access).await;
    let entry = crate::store::audit::NewAuditEntry {
        actor: origin,
        action: "index",
        repository_id: outcome.as_ref().ok().map(|r| r.repository.id),
        run_id: outcome.as_ref().ok().map(|r| r.enqueued.run_id()),
        parameters: serde_json::json!({ "source": source, "ref": git_ref }),
        outcome: match &outcome {
            Ok(r) => Ok(Some(format!(
                "repository {} ({}), run {}",
                r.repository.id,
                r.repository.source,
                r.enqueued.run_id()
            ))),
            Err(e) => Err(e.to_string()),
        },
    };
    if let Err(e) = store.audit(&entry).await {
        tracing::warn!(error = %e, "could not write the audit entry of an index");
    }
    outcome
}

async fn register_and_enqueue(
    store: &Store,
    config: &crate::config::Config,
    source: &str,
    git_ref: &str,
    origin: &str,
    access: SourceAccess,
) -> Result<IndexRequested, IndexError> {
    if access == SourceAccess::Remote {
        check_allowed(&config.serve.allowed_roots, source)?;
    }
    let repository = if git::is_git_url(source) {
        let url = crate::redact::strip_credentials(source);
        register_git(store, &git::GitOptions::from_config(config), &url, git_ref).await?
    } else {
        register_directory(store, source).await?
    };
    let enqueued = store
        .enqueue_run(&NewRun {
            repository_id: repository.id,
            trigger: Trigger::User,
            origin: origin.to_string(),
            priority: PriorityClass::default_for(Trigger::User),
            scope: crate::domain::scope::Scope::Project,
            full: false,
            max_attempts: [config.worker.max_attempts; 5],
            settings: Some(config.run_settings()),
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

/// Refuses, for a client over HTTP, a source on this machine's disk that lies
/// outside every allowed root, and a relative one. Checked on the path as written (with
/// `.` and `..` taken lexically) before anything is looked up, so the answer says nothing
/// of what exists outside the roots; then again with symbolic links resolved.
pub fn check_allowed(roots: &[PathBuf], source: &str) -> Result<(), IndexError> {
    let local = if git::is_git_url(source) {
        git::local_path_of(source)
    } else {
        Some(PathBuf::from(source))
    };
    let Some(path) = local else {
        return Ok(());
    };
    let not_allowed = || IndexError::SourceNotAllowed {
        source_given: crate::redact::url(source),
        roots: if roots.is_empty() {
            ": none is set".to_string()
        } else {
            format!(
                ": {}",
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    };
    if !path.is_absolute() {
        return Err(if roots.is_empty() {
            not_allowed()
        } else {
            IndexError::RelativeSource {
                source_given: source.to_string(),
            }
        });
    }
    let below_root = path.strip_prefix("/").expect("absolute");
    let lexical =
        Path::new("/").join(crate::sources::lexically_normal(below_root).ok_or_else(not_allowed)?);
    let under = |p: &Path| {
        roots.iter().any(|root| {
            let canonical = std::fs::canonicalize(root).ok();
            p.starts_with(root) || canonical.is_some_and(|c| p.starts_with(c))
        })
    };
    if !under(&lexical) {
        return Err(not_allowed());
    }
    match std::fs::canonicalize(&lexical) {
        Ok(real) if !under(&real) => Err(not_allowed()),
        _ => Ok(()),
    }
}

/// Registers a git remote after checking that it answers (and has `git_ref`).
async fn register_git(
    store: &Store,
    options: &git::GitOptions,
    url: &str,
    git_ref: &str,
) -> Result<Repository, IndexError> {
    let (o, u, r) = (options.clone(), url.to_string(), git_ref.to_string());
    tokio::task::spawn_blocking(move || git::probe(&o, &u, &r))
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
    store.workers_alive(STAGE_QUEUE, within).await
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
        // The downstream pipelines the run's events feed are worked here too: with no
        // worker alive, nobody else would route the events or take the pipeline runs.
        if run.status == "succeeded" {
            while !handle.is_finished() {
                let (unrouted, open) = store.pipeline_work_left(run.id, run.repository_id).await?;
                if unrouted == 0 && open == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = stop_tx.send(true);
        let _ = handle.await;
    }
    Ok(run)
}
