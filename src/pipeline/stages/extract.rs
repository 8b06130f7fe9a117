//! EXTRACT: parse the files SYNC found changed and replace their snippets.
//!
//! The files' contents come from the database (SYNC stored them), so EXTRACT runs on any
//! node. They are parsed in batches on every core, and each batch's snippets are written in
//! one transaction. A file whose content is missing or whose parser fails is a failed item;
//! a file with syntax errors or invalid UTF-8 is extracted anyway with a note. Failed items
//! fail the stage only when they are most of it (see [`loss`]).
//! Idempotent: items an earlier attempt extracted are not in the next one's list; the ones
//! it failed are tried again.

use std::collections::HashMap;
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
    let items = ctx.store.extract_items(run.id).await?;
    let (parse, removed): (Vec<ExtractItem>, Vec<ExtractItem>) = items.into_iter().partition(|i| {
        i.change != "deleted" && matches!(i.status.as_str(), "pending" | "failed") && i.indexable
    });
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
        let paths: Vec<String> = batch.iter().map(|i| i.path.clone()).collect();
        let contents = ctx.store.run_contents(run.id, &paths).await?;
        let batch = batch.to_vec();
        let files = tokio::task::spawn_blocking(move || extract_batch(&batch, contents))
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
    // Over every attempt: a retry parses again what an earlier one could not.
    let (files, lost, first_error) = ctx.store.extract_failures(run.id).await?;
    let warning = match loss(files, lost, first_error.as_deref()) {
        Loss::None => None,
        Loss::Some(warning) => Some(warning),
        Loss::Most(error) => return Err(StageError::Retryable(error)),
    };
    let result = ExtractResult {
        files: parse.len() as i64,
        files_removed: removed.len() as i64,
        files_failed: failed,
        snippets: snippets as i64,
        snippets_inserted: inserted as i64,
        snippets_kept: kept as i64,
        snippets_deleted: deleted as i64,
        warning,
    };
    Ok(StageOutcome::of(&result, false))
}

/// What became of a run's files, by the rule for losing them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    None,
    /// A minority failed: the stage succeeds, with this warning in its result.
    Some(String),
    /// Every file, or more than half of them: the stage fails with this error (retryable:
    /// the next attempt parses the failed files again), and the run fails when attempts
    /// run out. An index that lost most of its input never reports success.
    Most(String),
}

/// The rule for `failed` of a run's `files` (to parse) failing; `first` is one's error.
pub fn loss(files: i64, failed: i64, first: Option<&str>) -> Loss {
    let example = first.map(|e| format!("; for one: {e}")).unwrap_or_default();
    if failed == 0 || files == 0 {
        Loss::None
    } else if failed == files {
        Loss::Most(if files == 1 {
            format!("the one file the run changed failed{example}")
        } else {
            format!("every one of the {files} files the run changed failed{example}")
        })
    } else if failed * 2 > files {
        Loss::Most(format!(
            "{failed} of the {files} files the run changed failed, more than half{example}"
        ))
    } else {
        Loss::Some(format!(
            "{failed} of the {files} files the run changed failed and are not indexed \
             (list them with `trawl runs show <run> --failures`){example}"
        ))
    }
}

/// Parses a batch of files (`contents` by path), spread over the machine's cores.
fn extract_batch(items: &[ExtractItem], contents: HashMap<String, Vec<u8>>) -> Vec<ExtractedFile> {
    extract_batch_with(items, contents, extract_file)
}

/// [`extract_batch`] with the per-file work given. A file whose parsing panics comes back
/// failed with the panic's message; the other files of its thread go on (a panic used to
/// drop the thread's whole share, leaving those items pending and the stage succeeding).
fn extract_batch_with(
    items: &[ExtractItem],
    mut contents: HashMap<String, Vec<u8>>,
    one: fn(&ExtractItem, Option<Vec<u8>>) -> ExtractedFile,
) -> Vec<ExtractedFile> {
    let work: Vec<(&ExtractItem, Option<Vec<u8>>)> = items
        .iter()
        .map(|i| (i, contents.remove(&i.path)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().max(1));
    let per_thread = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut work = work.into_iter();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let chunk: Vec<_> = work.by_ref().take(per_thread.max(1)).collect();
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(i, bytes)| guarded(i, || one(i, bytes)))
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

/// Parses one file from its stored content (None: the database has none for it).
fn extract_file(item: &ExtractItem, content: Option<Vec<u8>>) -> ExtractedFile {
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
    match content {
        None => {
            out.error = Some(format!(
                "the content of {} is not in the database (lost since SYNC stored it); \
                 `trawl reindex <repo> --full` reads and stores it again",
                item.path
            ))
        }
        Some(bytes) => {
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

    #[test]
    fn losing_most_files_fails_and_losing_a_few_warns() {
        assert_eq!(loss(0, 0, None), Loss::None);
        assert_eq!(loss(10, 0, None), Loss::None);
        let Loss::Most(e) = loss(3, 3, Some("cannot parse a.py")) else {
            panic!("all lost")
        };
        assert_eq!(
            e,
            "every one of the 3 files the run changed failed; for one: cannot parse a.py"
        );
        assert!(matches!(loss(1, 1, None), Loss::Most(_)));
        assert!(matches!(loss(5, 3, None), Loss::Most(_)));
        let Loss::Some(w) = loss(4, 2, None) else {
            panic!("half is a warning")
        };
        assert!(w.starts_with("2 of the 4 files"), "{w}");
        assert!(matches!(loss(100, 1, None), Loss::Some(_)));
    }

    /// A parser that panics on one file fails that file; the rest of the batch, the files
    /// of the same thread included, are parsed.
    #[test]
    fn a_parser_panic_fails_its_file_and_the_others_proceed() {
        let names: Vec<String> = (0..9).map(|i| format!("m{i}.py")).collect();
        let contents: HashMap<String, Vec<u8>> = names
            .iter()
            .map(|n| (n.clone(), b"def f():\n    return 1\n".to_vec()))
            .collect();
        let items: Vec<ExtractItem> = names.iter().map(|n| item(n)).collect();
        fn panicky(i: &ExtractItem, bytes: Option<Vec<u8>>) -> ExtractedFile {
            if i.path == "m1.py" {
                panic!("tree-sitter blew up");
            }
            extract_file(i, bytes)
        }
        let files = extract_batch_with(&items, contents, panicky);
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
