//! What each stage does. Each module has the same shape: load its input for the run, work
//! in batches, write its effects idempotently, record progress.

pub mod bm25;
pub mod embeddings;
pub mod enrich;
pub mod extract;
pub mod results;
pub mod sync;

use std::path::PathBuf;

use serde_json::Value;

use super::{PipelineContext, StageError};
use crate::domain::Stage;
use crate::domain::job::StageJob;
use crate::store::repositories::Repository;
use crate::store::runs::Run;

/// What a finished stage reports.
#[derive(Debug, Clone, Default)]
pub struct StageOutcome {
    /// Merged into `runs.result` under the stage's name: one of [`results`]' structs.
    pub result: Value,
    /// SYNC found nothing changed: the later stages are skipped.
    pub up_to_date: bool,
}

impl StageOutcome {
    /// A stage's report (one of [`results`]' structs); `up_to_date` for SYNC only.
    pub fn of(result: &impl serde::Serialize, up_to_date: bool) -> StageOutcome {
        StageOutcome {
            result: serde_json::to_value(result).expect("a stage result serialises"),
            up_to_date,
        }
    }
}

/// Runs `job`'s stage for `run`.
pub async fn run(
    ctx: &PipelineContext,
    run: &Run,
    job: &StageJob,
) -> Result<StageOutcome, StageError> {
    match job.stage {
        Stage::Sync => sync::run(ctx, run).await,
        Stage::Extract => extract::run(ctx, run).await,
        Stage::Bm25Index => bm25::run(ctx, run).await,
        Stage::CodeEmbeddings => embeddings::run(ctx, run).await,
        Stage::Enrich => enrich::run(ctx, run).await,
    }
}

/// Refuses (for good) a run asked for with another embedding model or provider than this
/// worker's: its vectors would be of the wrong model, or none of the one the run means.
pub fn check_embedder(ctx: &PipelineContext, run: &Run) -> Result<(), StageError> {
    let Some(asked) = &run.settings else {
        return Ok(());
    };
    let mine = ctx.config.run_settings();
    match asked
        .0
        .embedder_mismatch(run.id, &mine.provider, &mine.vector_model)
    {
        Some(why) => Err(StageError::Permanent(format!(
            "{why} (node {})",
            node(&ctx.config)
        ))),
        None => Ok(()),
    }
}

/// This node, as errors name it: the host and trawl's home on it.
pub fn node(config: &crate::config::Config) -> String {
    format!("{} (home {})", super::host_name(), config.home.display())
}

/// Where a repository's files are read from: a directory source in place, a git source's
/// working copy under trawl's home.
pub fn working_dir(ctx: &PipelineContext, repo: &Repository) -> Result<PathBuf, StageError> {
    source_dir(&ctx.config, repo).map_err(StageError::Permanent)
}

/// [`working_dir`] for callers outside a stage; the error names the repository.
pub fn source_dir(config: &crate::config::Config, repo: &Repository) -> Result<PathBuf, String> {
    match repo.source_kind.as_str() {
        "directory" => Ok(PathBuf::from(&repo.source)),
        "git" => Ok(crate::sources::git::working_copy_dir(config, repo.id)),
        other => Err(format!(
            "repository {} has an unknown source kind {other}",
            repo.id
        )),
    }
}
