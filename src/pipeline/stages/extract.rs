//! EXTRACT: parse the files SYNC found changed and replace their snippets.
//!
//! Files are read and parsed in batches on every core, and each batch's snippets are
//! written in one transaction. A file that cannot be read is a failed item; a file with
//! syntax errors or invalid UTF-8 is extracted anyway with a note. Neither fails the stage.
//! Idempotent: items already handled by an earlier attempt are not in the next one's list.

use std::path::Path;
use std::time::Instant;

use super::StageOutcome;
use super::results::ExtractResult;
use crate::domain::Stage;
use crate::extract;
use crate::pipeline::{PipelineContext, StageError};
use crate::store::runs::Run;
use crate::store::snippets::{ExtractItem, ExtractedFile};

/// Files per transaction.
const BATCH_FILES: usize = 256;

pub async fn run(ctx: &PipelineContext, run: &Run) -> Result<StageOutcome, StageError> {
    let repo = ctx.store.repository(run.repository_id).await?;
    let root = super::working_dir(ctx, &repo)?;
    let items = ctx.store.extract_items(run.id).await?;
    let (parse, removed): (Vec<ExtractItem>, Vec<ExtractItem>) = items
        .into_iter()
        .partition(|i| i.change != "deleted" && i.status == "pending" && i.indexable);
    let removed: Vec<String> = removed.into_iter().map(|i| i.path).collect();
    let total = (parse.len() + removed.len()) as i64;
    let mut done = 0i64;
    let mut failed = 0i64;
    let (mut inserted, mut kept, mut deleted, mut snippets) = (0usize, 0usize, 0usize, 0usize);
    ctx.store
        .stage_progress(run.id, Stage::Extract, total, 0, 0, None)
        .await?;

    if !removed.is_empty() {
        let counts = ctx
            .store
            .replace_snippets(run.id, repo.id, &[], &removed)
            .await?;
        deleted += counts.deleted;
        done += removed.len() as i64;
    }

    for batch in parse.chunks(BATCH_FILES) {
        ctx.store
            .stage_progress(
                run.id,
                Stage::Extract,
                total,
                done,
                failed,
                batch.first().map(|i| i.path.as_str()),
            )
            .await?;
        let root = root.clone();
        let batch = batch.to_vec();
        let max_size = ctx.config.sync.max_file_size;
        let files = tokio::task::spawn_blocking(move || extract_batch(&root, &batch, max_size))
            .await
            .map_err(|e| StageError::Retryable(format!("extract task: {e}")))?;
        let counts = ctx
            .store
            .replace_snippets(run.id, repo.id, &files, &[])
            .await?;
        inserted += counts.inserted;
        kept += counts.kept;
        deleted += counts.deleted;
        snippets += files.iter().map(|f| f.snippets.len()).sum::<usize>();
        failed += files.iter().filter(|f| f.error.is_some()).count() as i64;
        done += files.len() as i64;
    }
    ctx.store
        .stage_progress(run.id, Stage::Extract, total, done, failed, None)
        .await?;
    let result = ExtractResult {
        files: parse.len() as i64,
        files_removed: removed.len() as i64,
        files_failed: failed,
        snippets: snippets as i64,
        snippets_inserted: inserted as i64,
        snippets_kept: kept as i64,
        snippets_deleted: deleted as i64,
    };
    Ok(StageOutcome::of(&result, false))
}

/// Reads and parses a batch of files, spread over the machine's cores.
fn extract_batch(root: &Path, items: &[ExtractItem], max_size: u64) -> Vec<ExtractedFile> {
    extract_batch_with(root, items, max_size, extract_file)
}

/// [`extract_batch`] with the per-file work given. A file whose parsing panics comes back
/// failed with the panic's message; the other files of its thread go on (a panic used to
/// drop the thread's whole share, leaving those items pending and the stage succeeding).
fn extract_batch_with(
    root: &Path,
    items: &[ExtractItem],
    max_size: u64,
    one: fn(&Path, &ExtractItem, u64) -> ExtractedFile,
) -> Vec<ExtractedFile> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().max(1));
    let per_thread = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per_thread.max(1))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|i| guarded(i, || one(root, i, max_size)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("every file's panic is caught"))
            .collect()
    })
}

/// Runs `f` for `item`, turning a panic into a failed file.
fn guarded(item: &ExtractItem, f: impl FnOnce() -> ExtractedFile) -> ExtractedFile {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        tracing::error!(path = %item.path, panic = %why, "the parser panicked on a file");
        ExtractedFile {
            path: item.path.clone(),
            language: item.language.clone(),
            snippets: Vec::new(),
            error: Some(format!(
                "the parser failed on {} (a panic: {why})",
                item.path
            )),
            note: None,
            duration_ms: 0,
            lines_total: 0,
            lines_covered: 0,
        }
    })
}

/// Reads (never through a symbolic link, never a FIFO or device, never above `max_size`:
/// the file may have been swapped since SYNC looked at it) and parses one file.
fn extract_file(root: &Path, item: &ExtractItem, max_size: u64) -> ExtractedFile {
    let started = Instant::now();
    let mut out = ExtractedFile {
        path: item.path.clone(),
        language: item.language.clone(),
        snippets: Vec::new(),
        error: None,
        note: None,
        duration_ms: 0,
        lines_total: 0,
        lines_covered: 0,
    };
    match crate::sources::directory::read_bytes(root, &item.path, max_size) {
        Err(e) => out.error = Some(format!("cannot read {}: {e}", item.path)),
        Ok(bytes) => {
            let x = extract::extract(item.language.as_deref(), &bytes);
            let mut notes = Vec::new();
            if x.lossy {
                notes.push("not valid UTF-8: read with replacement characters");
            }
            if x.syntax_errors {
                notes.push("syntax errors: definitions around them were still extracted");
            }
            out.note = (!notes.is_empty()).then(|| notes.join("; "));
            out.lines_total = x.lines_total.min(i32::MAX as usize) as i32;
            out.lines_covered = x.lines_covered.min(i32::MAX as usize) as i32;
            out.snippets = x.snippets;
        }
    }
    out.duration_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(path: &str) -> ExtractItem {
        ExtractItem {
            path: path.into(),
            change: "added".into(),
            status: "pending".into(),
            language: Some("python".into()),
            indexable: true,
        }
    }

    /// A parser that panics on one file fails that file; the rest of the batch, the files
    /// of the same thread included, are parsed.
    #[test]
    fn a_parser_panic_fails_its_file_and_the_others_proceed() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..9).map(|i| format!("m{i}.py")).collect();
        for n in &names {
            std::fs::write(dir.path().join(n), "def f():\n    return 1\n").unwrap();
        }
        let items: Vec<ExtractItem> = names.iter().map(|n| item(n)).collect();
        fn panicky(root: &Path, i: &ExtractItem, max: u64) -> ExtractedFile {
            if i.path == "m1.py" {
                panic!("tree-sitter blew up");
            }
            extract_file(root, i, max)
        }
        let files = extract_batch_with(dir.path(), &items, 1 << 20, panicky);
        assert_eq!(files.len(), 9, "no file is dropped");
        for f in &files {
            if f.path == "m1.py" {
                let err = f.error.as_deref().unwrap();
                assert!(
                    err.contains("m1.py") && err.contains("tree-sitter blew up"),
                    "{err}"
                );
                assert!(f.snippets.is_empty());
            } else {
                assert_eq!(f.error, None, "{}", f.path);
                assert!(!f.snippets.is_empty(), "{} was parsed", f.path);
            }
        }
    }
}
