//! What each stage does. Each module has the same shape: load its input for the run, work
//! in batches, write its effects idempotently, record progress.

pub mod sync;

use serde_json::Value;

use super::job::StageJob;
use super::{PipelineContext, StageError};
use crate::domain::Stage;
use crate::store::runs::Run;

/// What a finished stage reports.
#[derive(Debug, Clone, Default)]
pub struct StageOutcome {
    /// Merged into `runs.result` under the stage's name.
    pub result: Value,
    /// SYNC found nothing changed: the later stages are skipped.
    pub up_to_date: bool,
}

/// Runs `job`'s stage for `run`.
pub async fn run(
    ctx: &PipelineContext,
    run: &Run,
    job: &StageJob,
) -> Result<StageOutcome, StageError> {
    match job.stage {
        Stage::Sync => sync::run(ctx, run).await,
        // EXTRACT, BM25_INDEX, CODE_EMBEDDINGS and ENRICH land with the code-understanding
        // issue; until then they do no work and say so in the run's result.
        other => Ok(StageOutcome {
            result: serde_json::json!({ "implemented": false, "stage": other.as_str() }),
            up_to_date: false,
        }),
    }
}
