//! ENRICH: summarise the snippets that have no summary of their current content (with the
//! configured chat model, or heuristically), embed a chat model's summaries, and stamp the repository's
//! new index version.
//!
//! Summaries and their vectors are keyed by content hash, so a retry redoes nothing that was
//! stored. The version is stamped once per run (unique by run id).

use std::time::Duration;

use futures::StreamExt;

use super::StageOutcome;
use super::embeddings::embed_all;
use super::results::EnrichResult;
use crate::domain::Stage;
use crate::pipeline::{PipelineContext, StageError};
use crate::providers::http::{ChatSummarizer, HttpClient};
use crate::providers::summary;
use crate::store::runs::Run;
use crate::store::vectors::{NewSummary, SummaryInput, VectorKind};

/// Snippets summarised per page.
const PAGE: i64 = 256;
/// Chat requests in flight at once.
const LLM_CONCURRENCY: usize = 4;
/// A chat answer may take this long.
const LLM_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(ctx: &PipelineContext, run: &Run) -> Result<StageOutcome, StageError> {
    super::check_embedder(ctx, run)?;
    let llm = if ctx.config.enrich.base_url.is_empty() {
        None
    } else {
        let client = HttpClient::new(
            &ctx.config.enrich.base_url,
            &ctx.config.enrich.api_key,
            LLM_TIMEOUT,
        )?;
        Some(ChatSummarizer::new(client, &ctx.config.enrich.model))
    };
    let mut summarised = 0i64;
    let mut after = 0;
    let total = ctx
        .store
        .count_snippets_without_summary(run.repository_id)
        .await?;
    loop {
        ctx.store
            .stage_progress(run.id, Stage::Enrich, total, summarised.min(total), 0, None)
            .await?;
        let page = ctx
            .store
            .snippets_without_summary(run.repository_id, after, PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.snippet_id;
        // With an LLM, what succeeded is stored before a failure is reported: a retry
        // skips it.
        let (rows, failure): (Vec<(NewSummary, String)>, Option<StageError>) = match &llm {
            None => {
                let rows = page
                    .iter()
                    .map(|s| {
                        let summary = NewSummary {
                            snippet_id: s.snippet_id,
                            summary: summary::heuristic(s),
                            llm_model: None,
                        };
                        (summary, s.content_hash.clone())
                    })
                    .collect();
                (rows, None)
            }
            Some(llm) => {
                let results: Vec<Result<(NewSummary, String), StageError>> =
                    futures::stream::iter(page.into_iter().map(|s| {
                        let llm = llm.clone();
                        async move { summarize(&llm, s).await }
                    }))
                    .buffer_unordered(LLM_CONCURRENCY)
                    .collect()
                    .await;
                let mut rows = Vec::with_capacity(results.len());
                let mut failure = None;
                for r in results {
                    match r {
                        Ok(row) => rows.push(row),
                        Err(e) => failure = failure.or(Some(e)),
                    }
                }
                (rows, failure)
            }
        };
        ctx.store.store_summaries(&rows).await?;
        summarised += rows.len() as i64;
        if let Some(e) = failure {
            return Err(e);
        }
    }

    let embedder = ctx.embedder().await?;
    let model = embedder.model().to_string();
    if super::embeddings::reembeds_everything(run) {
        ctx.store
            .mark_vectors_stale(run.repository_id, &model, VectorKind::Summary)
            .await?;
    }
    // Heuristic summaries restate the snippet's name and doc comment: their vectors were
    // measured to lower search quality, so only a chat model's summaries are embedded.
    let embedded = if llm.is_some() {
        embed_all(ctx, run, Stage::Enrich, VectorKind::Summary, summarised).await?
    } else {
        0
    };
    let version = ctx
        .store
        .stamp_index_version(run.id, run.repository_id, &model)
        .await?;
    Ok(StageOutcome::of(
        &EnrichResult {
            summaries: summarised,
            summary_source: if llm.is_some() { "llm" } else { "heuristic" }.into(),
            summary_vectors: embedded,
            index_version: i64::from(version),
        },
        false,
    ))
}

/// One summary from the chat model, with the content hash it describes.
async fn summarize(
    llm: &ChatSummarizer,
    s: SummaryInput,
) -> Result<(NewSummary, String), StageError> {
    let text = llm.summarize(&summary::context_line(&s), &s.code).await?;
    Ok((
        NewSummary {
            snippet_id: s.snippet_id,
            summary: text,
            llm_model: Some(llm.model().to_string()),
        },
        s.content_hash,
    ))
}
