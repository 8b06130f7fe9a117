//! SYNC: refresh the working copy's file list, hash what changed, store the contents the
//! database does not have yet, and record each added, modified and deleted file as an item
//! of the run.
//!
//! The later stages read the contents from the database, so they run on any node; only
//! SYNC needs the source: a git working copy under this node's home (cloned when missing),
//! or a directory this node sees.
//!
//! Idempotent: a re-run after a crash finds the files table already updated, but the run's
//! items recorded by the first attempt still say what changed, and they decide the outcome.

use std::collections::HashMap;
use std::path::Path;

use super::StageOutcome;
use super::results::SyncResult;
use crate::domain::Stage;
use crate::domain::scope::Scope;
use crate::pipeline::{PipelineContext, StageError};
use crate::sources::directory::{self, ScannedFile};
use crate::sources::git;
use crate::store::files::{FileRow, KnownFile, SyncItem, SyncPlan};
use crate::store::runs::Run;

pub async fn run(ctx: &PipelineContext, run: &Run) -> Result<StageOutcome, StageError> {
    let scope = run.scope.0.clone();
    if !scope.syncs_files() {
        // Embeddings only: the files and snippets stay as they are.
        let result = SyncResult {
            scope: Some(scope.kind().to_string()),
            ..SyncResult::default()
        };
        return Ok(StageOutcome::of(&result, false));
    }
    ctx.store
        .stage_progress(run.id, Stage::Sync, 0, 0, 0, None)
        .await?;
    let repo = ctx.store.repository(run.repository_id).await?;
    let root = super::working_dir(ctx, &repo)?;
    let mut commit = None;
    if repo.source_kind == "git" {
        let (url, git_ref, dir) = (repo.source.clone(), repo.git_ref.clone(), root.clone());
        let options = git::GitOptions::from_config(&ctx.config);
        // Working copies hold private code: their directory is trawl's user's alone.
        let repos = ctx.config.home.join("repos");
        crate::sources::private_dir(&repos).map_err(|e| {
            StageError::Retryable(format!("cannot create {}: {e}", repos.display()))
        })?;
        let head = tokio::task::spawn_blocking(move || git::update(&options, &url, &git_ref, &dir))
            .await
            .map_err(|e| StageError::Retryable(format!("git task: {e}")))?;
        // A fetch that fails or stalls may work later (network); a checkout that fails
        // will not.
        commit = Some(head.map_err(|e| {
            if e.is_retryable() {
                StageError::Retryable(e.to_string())
            } else {
                StageError::Permanent(e.to_string())
            }
        })?);
    }
    if repo.source_kind == "directory" && !root.is_dir() {
        return Err(StageError::Permanent(format!(
            "the source directory {} is not a directory on node {}: a directory source is \
             read where SYNC runs, so every node whose worker takes SYNC must see it at that path",
            root.display(),
            super::node(&ctx.config)
        )));
    }
    let known = ctx.store.known_files(repo.id).await?;
    // The rules the run was asked for with, whichever node's worker does it.
    let rules = ctx
        .config
        .sync_rules_of(run.settings.as_ref().map(|s| &s.0));
    let full = run.full_reindex;
    // The scan hands every text file it reads to the uploader, which stores the contents the
    // database lacks while the scan goes on; the files rows are written only after.
    let (contents, received) = tokio::sync::mpsc::channel(UPLOAD_QUEUE);
    let uploader = tokio::spawn(upload_contents(ctx.store.clone(), received));
    let plan = tokio::task::spawn_blocking(move || {
        plan_sync(&root, &known, &rules, full, &scope, &mut |hash, bytes| {
            // A closed channel means the uploader failed: its error is reported below.
            let _ = contents.blocking_send((hash, bytes));
        })
    })
    .await
    .map_err(|e| StageError::Retryable(format!("sync task: {e}")))?;
    let stored = uploader
        .await
        .map_err(|e| StageError::Retryable(format!("content upload task: {e}")))?;
    let plan = plan?;
    let stored = stored?;
    let files_seen = plan.upserts.len();
    let counts = ctx.store.apply_sync(run.id, repo.id, &plan).await?;
    let changed = counts.added + counts.modified + counts.deleted;
    // Contents no file references any more, given up long enough ago.
    match ctx.store.sweep_contents().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(contents = n, "swept file contents no file references"),
        Err(e) => tracing::warn!(error = %e, "sweeping unreferenced file contents failed"),
    }
    let result = SyncResult {
        files_seen: files_seen as i64,
        added: counts.added as i64,
        modified: counts.modified as i64,
        deleted: counts.deleted as i64,
        skipped: counts.skipped as i64,
        contents_stored: stored.files as i64,
        content_bytes_stored: stored.bytes as i64,
        commit,
        scope: None,
    };
    Ok(StageOutcome::of(&result, changed == 0))
}

/// Contents waiting for the uploader (a bound on the memory a fast scan can fill).
const UPLOAD_QUEUE: usize = 64;
/// Contents per upload: a batch is sent when it holds this many files or bytes.
const UPLOAD_FILES: usize = 256;
const UPLOAD_BYTES: usize = 8 << 20;

/// What the uploader stored: the contents the database did not have.
#[derive(Debug, Default)]
struct Stored {
    files: usize,
    bytes: usize,
}

/// Stores the contents it receives that the database lacks, in batches, until the sender
/// is dropped.
async fn upload_contents(
    store: crate::store::Store,
    mut received: tokio::sync::mpsc::Receiver<(String, Vec<u8>)>,
) -> Result<Stored, StageError> {
    let mut stored = Stored::default();
    let mut batch: HashMap<String, Vec<u8>> = HashMap::new();
    let mut bytes = 0;
    loop {
        let next = received.recv().await;
        let last = next.is_none();
        if let Some((hash, content)) = next {
            bytes += content.len();
            batch.insert(hash, content);
        }
        if batch.is_empty() || (!last && batch.len() < UPLOAD_FILES && bytes < UPLOAD_BYTES) {
            if last {
                return Ok(stored);
            }
            continue;
        }
        let hashes: Vec<String> = batch.keys().cloned().collect();
        for present in store.stored_contents(&hashes).await? {
            batch.remove(&present);
        }
        let missing: Vec<(String, Vec<u8>)> = batch.drain().collect();
        stored.files += missing.len();
        stored.bytes += missing.iter().map(|(_, b)| b.len()).sum::<usize>();
        store.store_contents(&missing).await?;
        bytes = 0;
        if last {
            return Ok(stored);
        }
    }
}

/// Compares a scan of `root` with the files known from the last sync, within `scope`
/// (files outside it are neither looked at nor found deleted). A file whose size and mtime
/// are unchanged keeps its hash without being read; the others are read and hashed, and
/// each text file read is handed to `content` with its hash.
pub fn plan_sync(
    root: &Path,
    known: &HashMap<String, KnownFile>,
    rules: &crate::config::SyncConfig,
    full: bool,
    scope: &Scope,
    content: &mut dyn FnMut(String, Vec<u8>),
) -> Result<SyncPlan, StageError> {
    let max_size = rules.max_file_size;
    let deny = directory::DenyList::new(&rules.deny).map_err(StageError::Permanent)?;
    let scanned = directory::scan(root, &deny).map_err(|e| {
        StageError::Permanent(format!(
            "cannot read the source directory {}: {e}",
            root.display()
        ))
    })?;
    let mut plan = SyncPlan::default();
    let mut seen = std::collections::HashSet::with_capacity(scanned.len());
    for ScannedFile {
        path,
        size,
        mtime_ns,
        skip,
    } in scanned
    {
        if !scope.contains(&path, directory::language_of(&path)) {
            continue;
        }
        seen.insert(path.clone());
        let prior = known.get(&path);
        let unchanged_stat = prior.is_some_and(|k| k.same_stat(size, mtime_ns));
        // A file the last sync judged by other settings is read again although unchanged: a
        // raised size limit or a removed deny rule lets it in, a lowered limit keeps it out.
        let judged_otherwise = prior.is_some_and(|k| match k.skip_reason.as_deref() {
            Some(r) if r.starts_with("too large") => size <= max_size,
            Some(r) if r.starts_with("may hold secrets") => true,
            None => k.content_hash.is_some() && size > max_size,
            Some(_) => false,
        });
        let (hash, skip_reason) = match prior {
            _ if skip.is_some() => (None, skip),
            Some(k) if unchanged_stat && !full && !judged_otherwise => {
                (k.content_hash.clone(), k.skip_reason.clone())
            }
            _ => match directory::read_text(root, &path, max_size) {
                Ok((hash, bytes)) => {
                    content(hash.clone(), bytes);
                    (Some(hash), None)
                }
                Err(reason) => (None, Some(reason)),
            },
        };
        let change = match prior {
            None => Some("added"),
            Some(k) if full || k.content_hash != hash => Some("modified"),
            Some(_) => None,
        };
        if let Some(change) = change {
            plan.items.push(SyncItem {
                path: path.clone(),
                change,
                skip_reason: skip_reason.clone(),
                content_hash: hash.clone(),
            });
        }
        plan.upserts.push(FileRow {
            language: directory::language_of(&path).map(str::to_string),
            path,
            size: size as i64,
            mtime_ns,
            content_hash: hash,
            skip_reason,
        });
    }
    for path in known.keys() {
        if !seen.contains(path) && scope.contains(path, directory::language_of(path)) {
            plan.deleted.push(path.clone());
            plan.items.push(SyncItem {
                path: path.clone(),
                change: "deleted",
                skip_reason: None,
                content_hash: None,
            });
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A changed size limit makes an unchanged file be judged again, both ways.
    #[test]
    fn a_changed_size_limit_judges_unchanged_files_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("big.py"),
            format!("x = '{}'\n", "a".repeat(100)),
        )
        .unwrap();
        let mut rules = crate::config::Config::defaults(dir.path().to_path_buf()).sync;
        let plan = |known: &HashMap<String, KnownFile>, rules: &crate::config::SyncConfig| {
            plan_sync(
                dir.path(),
                known,
                rules,
                false,
                &Scope::Project,
                &mut |_, _| {},
            )
            .unwrap()
        };
        let known_as = |plan: &SyncPlan| -> HashMap<String, KnownFile> {
            plan.upserts
                .iter()
                .map(|f| {
                    (
                        f.path.clone(),
                        KnownFile {
                            path: f.path.clone(),
                            size: f.size,
                            mtime_ns: f.mtime_ns,
                            content_hash: f.content_hash.clone(),
                            skip_reason: f.skip_reason.clone(),
                        },
                    )
                })
                .collect()
        };
        rules.max_file_size = 50;
        let first = plan(&HashMap::new(), &rules);
        assert!(
            first.upserts[0]
                .skip_reason
                .as_deref()
                .unwrap()
                .starts_with("too large")
        );
        let same = plan(&known_as(&first), &rules);
        assert!(same.items.is_empty(), "nothing changed: {:?}", same.items);
        rules.max_file_size = 1 << 20;
        let raised = plan(&known_as(&first), &rules);
        assert_eq!(raised.items.len(), 1);
        assert_eq!(raised.items[0].change, "modified");
        assert!(
            raised.upserts[0].content_hash.is_some() && raised.upserts[0].skip_reason.is_none()
        );
        rules.max_file_size = 50;
        let lowered = plan(&known_as(&raised), &rules);
        assert_eq!(lowered.items.len(), 1);
        assert!(
            lowered.items[0]
                .skip_reason
                .as_deref()
                .unwrap()
                .starts_with("too large")
        );
    }
}
