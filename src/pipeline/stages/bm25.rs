//! BM25_INDEX: publish the keyword changes of the run (the files it changed, whose
//! documents every node's keyword index replaces by their current snippets), then bring
//! this node's index up to the change log (`search::follow`).
//!
//! Publishing is what the stage means: once it committed, every node that searches applies
//! the change within its follower's delay. The local catch-up is a convenience for a node
//! that also searches (a single machine); when it fails the stage still succeeds, with the
//! failure in its result, since the next catch-up (any search, or the next run) applies the
//! change anyway.

use super::StageOutcome;
use super::results::Bm25Result;
use crate::domain::Stage;
use crate::pipeline::{PipelineContext, StageError};
use crate::search::follow;

pub async fn run(
    ctx: &PipelineContext,
    run: &crate::store::runs::Run,
) -> Result<StageOutcome, StageError> {
    let paths = ctx.store.run_item_paths(run.id).await?;
    let total = paths.len() as i64;
    ctx.store
        .stage_progress(run.id, Stage::Bm25Index, total, 0, 0, None)
        .await?;
    let change = ctx
        .store
        .publish_keyword_change(run.repository_id, Some(run.id), Some(&paths))
        .await?;
    let local = catch_up_here(ctx).await;
    ctx.store
        .stage_progress(run.id, Stage::Bm25Index, total, total, 0, None)
        .await?;
    let mut result = Bm25Result {
        files: Some(total),
        change,
        ..Bm25Result::default()
    };
    match local {
        Ok(done) => {
            result.documents = done.documents as i64;
            result.rebuilt = done.rebuilt;
        }
        Err(e) => {
            tracing::warn!(error = %e, "the change is published; this node's keyword index did not catch up");
            result.local_error = Some(crate::redact::text(&e.to_string()));
        }
    }
    Ok(StageOutcome::of(&result, false))
}

/// Brings this node's keyword index up to the change log, waiting for another process of
/// this home that is at it.
async fn catch_up_here(ctx: &PipelineContext) -> Result<follow::CatchUp, follow::FollowError> {
    let _lock = follow::lock(&ctx.config).await?;
    let index = ctx.keyword_index()?;
    follow::catch_up(&ctx.store, &index).await
}
