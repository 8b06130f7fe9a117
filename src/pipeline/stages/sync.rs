//! SYNC: refresh the working copy's file list, hash what changed, and record each added,
//! modified and deleted file as an item of the run.
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
use crate::sources::directory::{self, Content, ScannedFile};
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
    let known = ctx.store.known_files(repo.id).await?;
    let rules = ctx.config.sync.clone();
    let full = run.full_reindex;
    let plan = tokio::task::spawn_blocking(move || plan_sync(&root, &known, &rules, full, &scope))
        .await
        .map_err(|e| StageError::Retryable(format!("sync task: {e}")))??;
    let files_seen = plan.upserts.len();
    let counts = ctx.store.apply_sync(run.id, repo.id, &plan).await?;
    let changed = counts.added + counts.modified + counts.deleted;
    let result = SyncResult {
        files_seen: files_seen as i64,
        added: counts.added as i64,
        modified: counts.modified as i64,
        deleted: counts.deleted as i64,
        skipped: counts.skipped as i64,
        commit,
        scope: None,
    };
    Ok(StageOutcome::of(&result, changed == 0))
}

/// Compares a scan of `root` with the files known from the last sync, within `scope`
/// (files outside it are neither looked at nor found deleted). A file whose size and mtime
/// are unchanged keeps its hash without being read; the others are read and hashed.
pub fn plan_sync(
    root: &Path,
    known: &HashMap<String, KnownFile>,
    rules: &crate::config::SyncConfig,
    full: bool,
    scope: &Scope,
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
        let unchanged_stat = prior.is_some_and(|k| k.size == size as i64 && k.mtime_ns == mtime_ns);
        let (hash, skip_reason) = match prior {
            _ if skip.is_some() => (None, skip),
            Some(k) if unchanged_stat && !full => (k.content_hash.clone(), k.skip_reason.clone()),
            _ => match directory::read(root, &path, max_size) {
                Content::Text { hash } => (Some(hash), None),
                Content::Skipped { reason } => (None, Some(reason)),
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
            });
        }
    }
    Ok(plan)
}
