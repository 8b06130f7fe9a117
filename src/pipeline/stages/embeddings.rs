//! CODE_EMBEDDINGS: embed the code of every snippet of the repository that has no current
//! vector of the configured model, in batches, and store the vectors in pgvector.
//!
//! Idempotent and resumable: what an earlier attempt stored is not in the next one's list.
//! A model change leaves every snippet without a vector of the new model, so the next run
//! (or an embeddings-only reindex) embeds them all.

use std::time::Instant;

use futures::StreamExt as _;

use super::StageOutcome;
use super::results::EmbeddingsResult;
use crate::domain::Stage;
use crate::domain::scope::Scope;
use crate::pipeline::{PipelineContext, StageError};
use crate::providers::Embedder;
use crate::store::runs::Run;
use crate::store::vectors::{PendingText, VectorKind};

/// Texts fetched, embedded and stored together.
pub const BATCH: i64 = 256;
/// Pages embedded and stored at once (see [`embed_all`]).
const PAGES_AT_ONCE: usize = 2;

pub async fn run(ctx: &PipelineContext, run: &Run) -> Result<StageOutcome, StageError> {
    super::check_embedder(ctx, run)?;
    let embedder = ctx.embedder().await?;
    let model = embedder.model().to_string();
    if reembeds_everything(run) {
        ctx.store
            .mark_vectors_stale(run.repository_id, &model, VectorKind::Code)
            .await?;
    }
    let total = ctx
        .store
        .count_code_without_vectors(run.repository_id, &model)
        .await?;
    let started = Instant::now();
    let done = embed_all(ctx, run, Stage::CodeEmbeddings, VectorKind::Code, total).await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(StageOutcome::of(
        &EmbeddingsResult {
            model,
            embedded: done,
            seconds: (secs * 1000.0).round() / 1000.0,
            per_second: if secs > 0.0 {
                (done as f64 / secs * 10.0).round() / 10.0
            } else {
                0.0
            },
        },
        false,
    ))
}

/// An embeddings-only run with `--full` computes every vector again, not only the missing
/// ones (those a model change leaves).
pub fn reembeds_everything(run: &Run) -> bool {
    run.full_reindex && run.scope.0 == Scope::EmbeddingsOnly
}

/// Embeds the repository's texts of `kind` that lack a current vector, a page at a time;
/// returns how many.
pub async fn embed_all(
    ctx: &PipelineContext,
    run: &Run,
    stage: Stage,
    kind: VectorKind,
    total: i64,
) -> Result<i64, StageError> {
    let embedder = ctx.embedder().await?;
    let model = embedder.model().to_string();
    let mut after = 0;
    let mut done = 0i64;
    // Pages embedded and stored at once: while Postgres inserts one page into the HNSW
    // graph (the stage's cost with a static model), the next is embedded and inserted on
    // another connection. Pages are disjoint (keyed by snippet id), so they never conflict.
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        if in_flight.len() >= PAGES_AT_ONCE
            && let Some(stored) = in_flight.next().await
        {
            done += stored? as i64;
        }
        ctx.store
            .stage_progress(run.id, stage, total.max(done), done, 0, None)
            .await?;
        let page: Vec<PendingText> = match kind {
            VectorKind::Code => {
                ctx.store
                    .code_without_vectors(run.repository_id, &model, after, BATCH)
                    .await?
            }
            VectorKind::Summary => {
                ctx.store
                    .summaries_without_vectors(run.repository_id, &model, after, BATCH)
                    .await?
            }
        };
        let Some(last) = page.last() else { break };
        after = last.snippet_id;
        in_flight.push(embed_and_store(ctx, &embedder, kind, page));
    }
    while let Some(stored) = in_flight.next().await {
        done += stored? as i64;
    }
    ctx.store
        .stage_progress(run.id, stage, total.max(done), done, 0, None)
        .await?;
    Ok(done)
}

/// Embeds `texts` and stores their vectors of `kind` under the embedder's model; returns
/// how many.
pub async fn embed_and_store(
    ctx: &PipelineContext,
    embedder: &Embedder,
    kind: VectorKind,
    texts: Vec<PendingText>,
) -> Result<usize, StageError> {
    let vectors = embedder
        .embed(texts.iter().map(|p| p.text.clone()).collect())
        .await?;
    let rows: Vec<(i64, String, Vec<f32>)> = texts
        .into_iter()
        .zip(vectors)
        .map(|(p, v)| (p.snippet_id, p.source_hash, v))
        .collect();
    ctx.store
        .store_vectors(kind, embedder.model(), &rows)
        .await?;
    Ok(rows.len())
}
