//! What each repository's index is: its current version, how old it is, and the runs not
//! yet ended with their progress. `trawl status`, the HTTP API, the MCP server and the
//! dashboard all show this.

use serde::Serialize;

use crate::service::progress::Snapshot;
use crate::store::repositories::Repository;
use crate::store::versions::IndexVersion;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RepositoryStatus {
    pub repository: Repository,
    pub index_version: Option<IndexVersion>,
    /// Seconds since the current version was built.
    pub age_seconds: Option<i64>,
    /// Seconds since the working copy was last synced.
    pub synced_seconds_ago: Option<i64>,
    /// Runs not ended yet, oldest first, with their progress.
    pub unfinished_runs: Vec<Snapshot>,
    /// The share of its indexed files' non-blank lines that some snippet covers (None
    /// before EXTRACT recorded any).
    pub coverage: Option<f64>,
    pub lines_total: i64,
    pub lines_covered: i64,
    /// What the index reflects against its source now.
    pub freshness: crate::service::freshness::Freshness,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Repository(#[from] crate::service::repositories::RepositoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The status of one repository (`selector`: its id, or the path or URL it was indexed
/// from), or of every repository; with `remote`, git sources' remotes are asked where
/// their refs are (one `ls-remote` each).
pub async fn status(
    store: &Store,
    config: &crate::config::Config,
    selector: Option<&str>,
    remote: bool,
) -> Result<Vec<RepositoryStatus>, StatusError> {
    let repositories = match selector {
        Some(sel) => vec![crate::service::repositories::resolve(store, sel).await?],
        None => store.list_repositories().await?,
    };
    let mut out = Vec::with_capacity(repositories.len());
    for repository in repositories {
        out.push(of(store, config, repository, remote).await?);
    }
    Ok(out)
}

/// The status of `repository`.
pub async fn of(
    store: &Store,
    config: &crate::config::Config,
    repository: Repository,
    remote: bool,
) -> Result<RepositoryStatus, StoreError> {
    let now = chrono::Utc::now();
    let version = store.current_index_version(repository.id).await?;
    let mut unfinished = Vec::new();
    for run_id in store.unfinished_runs(repository.id).await? {
        let run = store.run(run_id).await?;
        let mut snapshot = Snapshot::load(store, &run).await?;
        snapshot.status = run.status.to_string();
        unfinished.push(snapshot);
    }
    let (lines_total, lines_covered) = store.line_coverage(repository.id).await?;
    let built_at = version.as_ref().map(|v| v.built_at);
    let freshness =
        crate::service::freshness::of(store, config, &repository, built_at, remote).await?;
    Ok(RepositoryStatus {
        coverage: (lines_total > 0)
            .then(|| (lines_covered as f64 / lines_total as f64 * 1e4).round() / 1e4),
        lines_total,
        lines_covered,
        age_seconds: version.as_ref().map(|v| (now - v.built_at).num_seconds()),
        synced_seconds_ago: repository.last_synced_at.map(|t| (now - t).num_seconds()),
        index_version: version,
        freshness,
        repository,
        unfinished_runs: unfinished,
    })
}
