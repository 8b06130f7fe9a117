//! Every node's keyword index follows the database.
//!
//! BM25_INDEX publishes each run's changed files to the change log in Postgres
//! (`store::keyword_log`). [`catch_up`] applies the changes after the last one an index
//! applied, in order: each file's documents are replaced by its current snippets, a batch
//! of files per commit (a search never sees half a file), and the commit that ends a change
//! records its number with the documents. Applying a change again is harmless (the files
//! get their current snippets once more), so a crash between commits loses nothing. An
//! index that is missing, of another schema, without a recorded number, or whose number is
//! below the log's horizon (the changes after it were pruned) is rebuilt from the snippets
//! table first, as of the log's head read before the snippets.
//!
//! Writers of one index directory are serialised on this machine by a file lock beside it
//! ([`lock`], [`try_lock`]): the processes sharing a home (a worker, a server, a CLI
//! search) share its index. Other machines have their own directories and follow the log
//! on their own.

use std::path::PathBuf;
use std::sync::Arc;

use super::keyword::{KeywordError, KeywordIndex};
use crate::config::Config;
use crate::filelock::FileLock;
use crate::store::keyword_log::KeywordLag;
use crate::store::{Store, StoreError};

/// Files per commit.
const BATCH_FILES: usize = 1_000;
/// Changes read from the log at a time.
const CHANGES_PER_READ: i64 = 16;
/// Snippets per page of a rebuild.
const REBUILD_PAGE: i64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyword(#[from] KeywordError),
    #[error("the keyword index's lock {path} cannot be taken: {detail}")]
    Lock { path: String, detail: String },
    #[error("a keyword index task failed: {0}")]
    Task(String),
}

impl FollowError {
    /// Whether trying again can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            FollowError::Store(e) => e.is_retryable(),
            FollowError::Keyword(e) => e.is_retryable(),
            FollowError::Lock { .. } => false,
            FollowError::Task(_) => true,
        }
    }
}

/// What a catch-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Changes applied.
    pub changes: usize,
    /// Documents written (a rebuild's included).
    pub documents: usize,
    pub rebuilt: bool,
    /// The last change applied, after it.
    pub applied: i64,
}

/// The file beside the index directory whose lock serialises its writers.
pub fn lock_path(config: &Config) -> PathBuf {
    config.keyword_index_dir().with_extension("lock")
}

fn lock_error(config: &Config, e: std::io::Error) -> FollowError {
    FollowError::Lock {
        path: lock_path(config).display().to_string(),
        detail: e.to_string(),
    }
}

/// Waits for the index directory's writers' lock.
pub async fn lock(config: &Config) -> Result<FileLock, FollowError> {
    let path = lock_path(config);
    prepare(config)?;
    tokio::task::spawn_blocking(move || FileLock::acquire(&path))
        .await
        .map_err(|e| FollowError::Task(e.to_string()))?
        .map_err(|e| lock_error(config, e))
}

/// The index directory's writers' lock, if no other process holds it.
pub fn try_lock(config: &Config) -> Result<Option<FileLock>, FollowError> {
    prepare(config)?;
    FileLock::try_acquire(&lock_path(config)).map_err(|e| lock_error(config, e))
}

/// The directory that holds the index and its lock: trawl's own.
fn prepare(config: &Config) -> Result<(), FollowError> {
    let parent = lock_path(config)
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    crate::sources::private_dir(&parent).map_err(|e| lock_error(config, e))
}

/// Brings `index` up to the change log: rebuilt first when it must be, then every change
/// after the last one it applied, in order. The caller holds [`lock`].
pub async fn catch_up(store: &Store, index: &Arc<KeywordIndex>) -> Result<CatchUp, FollowError> {
    let mut out = CatchUp::default();
    // An index behind the log's horizon missed changes that were pruned since: only a
    // rebuild brings it up to date.
    let recorded = index.applied_seq().unwrap_or(0);
    let behind_horizon = !index.needs_rebuild() && recorded < store.keyword_horizon().await?;
    if behind_horizon {
        tracing::info!(
            applied = recorded,
            "this node's keyword index is older than the change log keeps; rebuilding it"
        );
    }
    if index.needs_rebuild() || behind_horizon {
        // The head first: a change published while the snippets are read is applied
        // afterwards (again, which is harmless).
        let head = store.keyword_head().await?;
        out.documents += rebuild(store, index, head).await?;
        out.rebuilt = true;
    }
    let mut applied = index.applied_seq().unwrap_or(0);
    loop {
        let changes = store
            .keyword_changes_after(applied, CHANGES_PER_READ)
            .await?;
        if changes.is_empty() {
            break;
        }
        for change in changes {
            let repository_id = change.repository_id;
            match change.paths {
                None => {
                    let index = index.clone();
                    blocking(move || index.remove_repository(repository_id, change.seq)).await?;
                }
                Some(paths) if paths.is_empty() => {
                    let index = index.clone();
                    blocking(move || index.replace_files(repository_id, &[], &[], change.seq))
                        .await?;
                }
                Some(paths) => {
                    let batches = paths.len().div_ceil(BATCH_FILES);
                    for (i, batch) in paths.chunks(BATCH_FILES).enumerate() {
                        // Only the commit that ends the change records it.
                        let mark = if i + 1 == batches {
                            change.seq
                        } else {
                            applied
                        };
                        let snippets = store.snippets_of_paths(repository_id, batch).await?;
                        let index = index.clone();
                        let batch = batch.to_vec();
                        out.documents += blocking(move || {
                            index.replace_files(repository_id, &batch, &snippets, mark)
                        })
                        .await?;
                    }
                }
            }
            applied = change.seq;
            out.changes += 1;
        }
    }
    out.applied = applied;
    Ok(out)
}

/// How far this node's keyword index (the configured directory) is behind the change log;
/// None when it is not built on this node yet. Reads only.
pub async fn local_lag(store: &Store, config: &Config) -> Result<Option<KeywordLag>, StoreError> {
    let Ok(index) = KeywordIndex::open_reader(&config.keyword_index_dir()) else {
        return Ok(None);
    };
    let Some(applied) = index.applied_seq() else {
        return Ok(None);
    };
    store.keyword_lag(applied).await.map(Some)
}

/// [`local_lag`] in words, for people.
pub fn describe_lag(lag: Option<&KeywordLag>) -> String {
    match lag {
        None => "not built on this node yet: the first search builds it from the database".into(),
        Some(l) if l.pending == 0 => format!("up to date (change {})", l.applied),
        Some(l) => format!(
            "{} change{} behind (the oldest published {:.1} s ago); serve and mcp apply them \
             as they come, a search first",
            l.pending,
            if l.pending == 1 { "" } else { "s" },
            l.seconds
        ),
    }
}

/// Rebuilds the whole index from the snippets table, recording `head` as applied. The
/// caller holds [`lock`].
pub async fn rebuild(
    store: &Store,
    index: &Arc<KeywordIndex>,
    head: i64,
) -> Result<usize, FollowError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let writer = {
        let index = index.clone();
        tokio::task::spawn_blocking(move || {
            index.rebuild(std::iter::from_fn(|| rx.blocking_recv()), head)
        })
    };
    let mut after = 0;
    loop {
        match store.snippets_page(after, REBUILD_PAGE).await {
            Ok(page) if page.is_empty() => break,
            Ok(page) => {
                after = page.last().map_or(after, |s| s.id);
                let more = page.len() as i64 == REBUILD_PAGE;
                if tx.send(Ok(page)).await.is_err() || !more {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                break;
            }
        }
    }
    drop(tx);
    let added = writer
        .await
        .map_err(|e| FollowError::Task(e.to_string()))??;
    Ok(added?)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KeywordError> + Send + 'static,
) -> Result<T, FollowError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FollowError::Task(e.to_string()))??)
}
