//! BM25_INDEX: bring the keyword index up to date with the snippets of the files a run
//! changed.
//!
//! For each changed file: delete its documents by the file's term, add its current
//! snippets, commit per batch. Idempotent by construction. Writers of one index directory
//! are serialised across processes by a Postgres advisory lock. An index that is missing or
//! of another schema version is rebuilt from Postgres first (it is derived data).

use super::StageOutcome;
use super::results::Bm25Result;
use crate::domain::Stage;
use crate::pipeline::{PipelineContext, StageError};
use crate::search::keyword::KeywordIndex;
use crate::store::runs::Run;

/// Files per commit.
const BATCH_FILES: usize = 1_000;

pub async fn run(ctx: &PipelineContext, run: &Run) -> Result<StageOutcome, StageError> {
    let lock = ctx.store.keyword_index_lock().await?;
    let index = ctx.keyword_index()?;
    if index.needs_rebuild() {
        let documents = rebuild(ctx, &index).await?;
        lock.release().await?;
        let result = Bm25Result {
            files: None,
            documents: documents as i64,
            rebuilt: true,
        };
        return Ok(StageOutcome::of(&result, false));
    }
    let paths = ctx.store.run_item_paths(run.id).await?;
    let total = paths.len() as i64;
    let mut documents = 0;
    for (i, batch) in paths.chunks(BATCH_FILES).enumerate() {
        let done = (i * BATCH_FILES) as i64;
        ctx.store
            .stage_progress(
                run.id,
                Stage::Bm25Index,
                total,
                done,
                0,
                batch.first().map(String::as_str),
            )
            .await?;
        let snippets = ctx
            .store
            .snippets_of_paths(run.repository_id, batch)
            .await?;
        let index = index.clone();
        let batch = batch.to_vec();
        let repository_id = run.repository_id;
        documents += tokio::task::spawn_blocking(move || {
            index.replace_files(repository_id, &batch, &snippets)
        })
        .await
        .map_err(|e| StageError::Retryable(format!("keyword index task: {e}")))??;
    }
    ctx.store
        .stage_progress(run.id, Stage::Bm25Index, total, total, 0, None)
        .await?;
    lock.release().await?;
    Ok(StageOutcome::of(
        &Bm25Result {
            files: Some(total),
            documents: documents as i64,
            rebuilt: false,
        },
        false,
    ))
}

/// Rebuilds the whole keyword index from the snippets table. The caller holds the lock.
pub async fn rebuild(
    ctx: &PipelineContext,
    index: &std::sync::Arc<KeywordIndex>,
) -> Result<usize, StageError> {
    const PAGE: i64 = 5_000;
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let writer = {
        let index = index.clone();
        tokio::task::spawn_blocking(move || {
            index.rebuild(std::iter::from_fn(|| rx.blocking_recv()))
        })
    };
    let mut after = 0;
    loop {
        match ctx.store.snippets_page(after, PAGE).await {
            Ok(page) if page.is_empty() => break,
            Ok(page) => {
                after = page.last().map_or(after, |s| s.id);
                let more = page.len() as i64 == PAGE;
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
        .map_err(|e| StageError::Retryable(format!("keyword index task: {e}")))??;
    Ok(added?)
}
