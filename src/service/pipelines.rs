//! Operating the downstream pipelines: what they are doing (list, show), an operator's
//! retry or cancel of a pipeline run, running a pipeline again for repositories
//! (`trawl reingest --pipelines`), and switching one on or off per repository. Each action,
//! done or refused, writes an audit entry naming who asked.

use serde_json::json;

use crate::domain::pipelines::Pipeline;
use crate::store::Store;
use crate::store::StoreError;
use crate::store::audit::NewAuditEntry;
use crate::store::pipelines::{
    PipelineControlError, PipelineRun, PipelineRunFilter, PipelineSummary,
};

/// `trawl pipelines list`: each pipeline's counts and lag, and the newest runs, as the
/// filter narrows them (its pipeline and repository both, its status the runs).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct PipelinesOverview {
    pub pipelines: Vec<PipelineSummary>,
    pub runs: Vec<PipelineRun>,
}

pub async fn overview(
    store: &Store,
    filter: &PipelineRunFilter,
) -> Result<PipelinesOverview, StoreError> {
    Ok(PipelinesOverview {
        pipelines: store
            .pipeline_summaries(filter.pipeline, filter.repository_id)
            .await?,
        runs: store.pipeline_runs(filter).await?,
    })
}

/// Retries (`retry`) or cancels pipeline run `id` on behalf of `actor`, and audits it.
pub async fn control(
    store: &Store,
    actor: &str,
    retry: bool,
    id: i64,
) -> Result<PipelineRun, PipelineControlError> {
    let outcome = if retry {
        store.retry_failed_pipeline_run(id).await
    } else {
        store
            .cancel_pipeline_run(id, &format!("cancelled by an operator ({actor})"))
            .await
    };
    let repository_id = match &outcome {
        Ok(r) => Some(r.repository_id),
        Err(_) => store
            .pipeline_run(id)
            .await
            .ok()
            .flatten()
            .map(|r| r.repository_id),
    };
    let entry = NewAuditEntry {
        actor,
        action: if retry {
            "retry_pipeline_run"
        } else {
            "cancel_pipeline_run"
        },
        repository_id,
        run_id: None,
        parameters: json!({ "pipeline_run": id }),
        outcome: match &outcome {
            Ok(r) => Ok(Some(format!("{} run {id} {}", r.pipeline, r.status))),
            Err(e) => Err(e.to_string()),
        },
    };
    if let Err(e) = store.audit(&entry).await {
        tracing::warn!(error = %e, "could not write the audit entry of a pipeline action");
    }
    outcome
}

/// Runs `pipelines` again over every file of each repository of `repository_ids`; returns
/// the pipeline runs created, audited as one `reingest_pipelines` entry per repository.
pub async fn reingest(
    store: &Store,
    actor: &str,
    pipelines: &[Pipeline],
    repository_ids: &[i64],
    max_attempts: i32,
) -> Result<Vec<i64>, StoreError> {
    let mut created = Vec::new();
    for &repo in repository_ids {
        let mut mine = Vec::new();
        for &p in pipelines {
            mine.push(store.enqueue_pipeline_run(p, repo, max_attempts).await?);
        }
        let entry = NewAuditEntry {
            actor,
            action: "reingest_pipelines",
            repository_id: Some(repo),
            run_id: None,
            parameters: json!({ "pipelines": pipelines.iter().map(|p| p.as_str()).collect::<Vec<_>>() }),
            outcome: Ok(Some(format!("pipeline runs {mine:?}"))),
        };
        if let Err(e) = store.audit(&entry).await {
            tracing::warn!(error = %e, "could not write the audit entry of a pipeline reingest");
        }
        created.extend(mine);
    }
    Ok(created)
}

/// Switches `pipeline` on, off, or back to the configuration's flag (None) for a
/// repository, audited.
pub async fn switch(
    store: &Store,
    actor: &str,
    repository_id: i64,
    pipeline: Pipeline,
    on: Option<bool>,
) -> Result<(), StoreError> {
    store
        .set_repository_pipeline(repository_id, pipeline, on)
        .await?;
    let entry = NewAuditEntry {
        actor,
        action: "switch_pipeline",
        repository_id: Some(repository_id),
        run_id: None,
        parameters: json!({ "pipeline": pipeline.as_str(), "enabled": on }),
        outcome: Ok(None),
    };
    if let Err(e) = store.audit(&entry).await {
        tracing::warn!(error = %e, "could not write the audit entry of a pipeline switch");
    }
    Ok(())
}
