//! Reingesting across repositories (an operator's bulk action): resolve the repositories
//! and the languages to restrict to, then enqueue a full run of each, in batches. The CLI
//! calls it; the HTTP API's admin endpoint will too.

use serde::Serialize;

use crate::config::Config;
use crate::domain::scope::Scope;
use crate::domain::{PriorityClass, Trigger};
use crate::sources::directory::LANGUAGES;
use crate::store::audit::NewAuditEntry;
use crate::store::runs::{Enqueued, NewRun};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct ReingestRequest {
    /// Repositories by id, or the path or URL they were indexed from.
    pub repositories: Vec<String>,
    /// Every registered repository.
    pub all: bool,
    /// Restrict each run to the files of these languages; none means every file.
    pub languages: Vec<String>,
    pub dry_run: bool,
    /// Runs enqueued per transaction.
    pub batch_size: usize,
    pub priority: PriorityClass,
    /// Who asks: cli, api, mcp.
    pub origin: String,
    /// Run only these downstream pipelines again, over every file (no base run); empty:
    /// a full base run, whose events feed the pipelines anyway.
    pub pipelines: Vec<crate::domain::pipelines::Pipeline>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReingestError {
    #[error("say which repositories: some by id or source, or all of them")]
    NothingSelected,
    #[error("all repositories and a list of them exclude each other: give one")]
    AllAndSome,
    #[error(transparent)]
    Repository(#[from] crate::service::repositories::RepositoryError),
    #[error("unknown language {language}: trawl knows {known}")]
    UnknownLanguage { language: String, known: String },
    #[error("the batch size must be at least 1")]
    BatchSize,
    #[error("a pipelines-only reingest takes every file: languages do not apply to it")]
    PipelinesWithLanguages,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The filters a reingest applied, as it understood them.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ReingestFilters {
    pub repositories: Vec<String>,
    pub all: bool,
    pub languages: Vec<String>,
    pub priority: PriorityClass,
    pub batch_size: usize,
    /// The downstream pipelines of a pipelines-only reingest; empty: a full base run.
    pub pipelines: Vec<String>,
}

/// What a reingest did (or, dry, would do).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ReingestOutcome {
    pub dry_run: bool,
    pub filters: ReingestFilters,
    /// The repositories selected, by id.
    pub repository_ids: Vec<i64>,
    /// New runs, and repositories whose background run was already pending.
    pub enqueued: usize,
    pub already_pending: usize,
    pub batches: usize,
    pub run_ids: Vec<i64>,
    /// Pipeline runs created by a pipelines-only reingest.
    pub pipeline_run_ids: Vec<i64>,
}

pub async fn reingest(
    store: &Store,
    config: &Config,
    request: &ReingestRequest,
) -> Result<ReingestOutcome, ReingestError> {
    let outcome = reingest_unaudited(store, config, request).await;
    if !request.dry_run {
        let entry = NewAuditEntry {
            actor: &request.origin,
            action: "reingest",
            repository_id: None,
            run_id: None,
            parameters: serde_json::json!({
                "repositories": request.repositories,
                "all": request.all,
                "languages": request.languages,
                "batch_size": request.batch_size,
                "priority": request.priority,
                "pipelines": request.pipelines,
            }),
            outcome: match &outcome {
                Ok(o) => Ok(Some(format!(
                    "{} enqueued for {} in {}",
                    plural(o.enqueued, "run", "runs"),
                    plural(o.repository_ids.len(), "repository", "repositories"),
                    plural(o.batches, "batch", "batches")
                ))),
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(e) = store.audit(&entry).await {
            tracing::warn!(error = %e, "could not write the audit entry of a reingest");
        }
    }
    outcome
}

async fn reingest_unaudited(
    store: &Store,
    config: &Config,
    request: &ReingestRequest,
) -> Result<ReingestOutcome, ReingestError> {
    if request.batch_size == 0 {
        return Err(ReingestError::BatchSize);
    }
    if request.all && !request.repositories.is_empty() {
        return Err(ReingestError::AllAndSome);
    }
    if !request.pipelines.is_empty() && !request.languages.is_empty() {
        return Err(ReingestError::PipelinesWithLanguages);
    }
    let mut languages: Vec<String> = Vec::new();
    for l in &request.languages {
        let l = l.trim().to_ascii_lowercase();
        if !LANGUAGES.contains(&l.as_str()) {
            return Err(ReingestError::UnknownLanguage {
                language: l,
                known: LANGUAGES.join(", "),
            });
        }
        if !languages.contains(&l) {
            languages.push(l);
        }
    }
    let mut ids = Vec::new();
    if request.all {
        ids = store
            .list_repositories()
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
    } else if request.repositories.is_empty() {
        return Err(ReingestError::NothingSelected);
    }
    for selector in &request.repositories {
        let repo = crate::service::repositories::resolve(store, selector).await?;
        if !ids.contains(&repo.id) {
            ids.push(repo.id);
        }
    }
    // With languages, only the repositories that have files in them.
    if !languages.is_empty() {
        let having = store.repositories_with_languages(&ids, &languages).await?;
        ids.retain(|id| having.contains(id));
    }
    let scope = if languages.is_empty() {
        Scope::Project
    } else {
        Scope::Languages {
            languages: languages.clone(),
        }
    };
    let filters = ReingestFilters {
        repositories: request.repositories.clone(),
        all: request.all,
        languages,
        priority: request.priority,
        batch_size: request.batch_size,
        pipelines: request.pipelines.iter().map(|p| p.to_string()).collect(),
    };
    let batches = ids.len().div_ceil(request.batch_size);
    if request.dry_run {
        return Ok(ReingestOutcome {
            dry_run: true,
            filters,
            repository_ids: ids,
            enqueued: 0,
            already_pending: 0,
            batches,
            run_ids: Vec::new(),
            pipeline_run_ids: Vec::new(),
        });
    }
    if !request.pipelines.is_empty() {
        let attempts = config.worker.max_attempts.min(i32::MAX as u32) as i32;
        let created = crate::service::pipelines::reingest(
            store,
            &request.origin,
            &request.pipelines,
            &ids,
            attempts,
        )
        .await?;
        return Ok(ReingestOutcome {
            dry_run: false,
            filters,
            repository_ids: ids,
            enqueued: 0,
            already_pending: 0,
            batches,
            run_ids: Vec::new(),
            pipeline_run_ids: created,
        });
    }
    // A repository whose reingest of the same scope has not run yet gets no second one.
    let pending = store
        .repositories_with_unfinished_full_run(&ids, &scope)
        .await?;
    let todo: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !pending.contains(id))
        .collect();
    let (mut enqueued, mut already_pending, mut run_ids) = (0, pending.len(), Vec::new());
    for batch in todo.chunks(request.batch_size) {
        let runs: Vec<NewRun> = batch
            .iter()
            .map(|&repository_id| NewRun {
                repository_id,
                trigger: Trigger::User,
                origin: request.origin.clone(),
                priority: request.priority,
                scope: scope.clone(),
                full: true,
                max_attempts: [config.worker.max_attempts; 5],
                settings: Some(config.run_settings()),
            })
            .collect();
        for e in store.enqueue_runs(&runs).await? {
            match e {
                Enqueued::Created { run_id, .. } => {
                    enqueued += 1;
                    run_ids.push(run_id);
                }
                Enqueued::AlreadyPending { .. } => already_pending += 1,
            }
        }
    }
    Ok(ReingestOutcome {
        dry_run: false,
        filters,
        repository_ids: ids,
        enqueued,
        already_pending,
        batches,
        run_ids,
        pipeline_run_ids: Vec::new(),
    })
}

/// `n` and the noun, singular for one.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
