//! The durable five-stage pipeline on apalis' Postgres queue.
//!
//! - [`job`]: the typed payload of a stage job.
//! - [`worker`]: the apalis worker that takes stage jobs by priority and runs them.
//! - [`backend`]: its apalis backend, claiming jobs for free slots in one statement.
//! - [`stages`]: what each stage does; one module each.
//! - [`faults`]: test-only fault injection (compiled out of release builds).
//!
//! Ordering: all five jobs of a run are enqueued at once; every stage but SYNC is parked
//! (`run_at` far in the future) until its predecessor's success releases it in the same
//! transaction. A worker that still finds a predecessor unfinished parks the job again
//! without spending an attempt. Completion, retries with backoff and failures are written by
//! the store (see `store::runs`).

pub mod backend;
pub mod batch;
pub mod faults;
pub mod job;
pub mod stages;
pub mod worker;

use std::sync::{Arc, OnceLock};

use crate::config::Config;
use crate::domain::retry::RetryPolicy;
use crate::providers::{Embedder, ProviderError};
use crate::search::keyword::{KeywordError, KeywordIndex};
use crate::store::Store;

/// What a stage's work needs, shared by every job a worker process runs.
pub struct PipelineContext {
    pub store: Store,
    pub config: Config,
    pub faults: faults::Faults,
    /// Stages do no work and succeed at once: `trawl bench queue` measures the queue alone.
    pub noop_stages: bool,
    /// Opened on first use: a worker that never runs BM25 never opens the index.
    keyword: OnceLock<Arc<KeywordIndex>>,
    /// Loaded on first use: the local model takes a moment and some memory.
    embedder: tokio::sync::OnceCell<Embedder>,
}

impl PipelineContext {
    /// The context of a worker process; test faults come from `TRAWL_TEST_FAULTS` (debug
    /// builds only).
    pub fn new(store: Store, config: Config) -> Arc<PipelineContext> {
        PipelineContext::with_faults(store, config, faults::Faults::from_env())
    }

    pub fn with_faults(
        store: Store,
        config: Config,
        faults: faults::Faults,
    ) -> Arc<PipelineContext> {
        PipelineContext::build(store, config, faults, false)
    }

    /// A context whose stages do nothing and succeed: the queue measured alone.
    pub fn without_stage_work(store: Store, config: Config) -> Arc<PipelineContext> {
        PipelineContext::build(store, config, faults::Faults::default(), true)
    }

    fn build(
        store: Store,
        config: Config,
        faults: faults::Faults,
        noop_stages: bool,
    ) -> Arc<PipelineContext> {
        Arc::new(PipelineContext {
            store,
            config,
            faults,
            noop_stages,
            keyword: OnceLock::new(),
            embedder: tokio::sync::OnceCell::new(),
        })
    }

    /// The keyword index under the configured index directory.
    pub fn keyword_index(&self) -> Result<Arc<KeywordIndex>, KeywordError> {
        if let Some(k) = self.keyword.get() {
            return Ok(k.clone());
        }
        // The index directory is trawl's own: readable by trawl's user alone.
        let dir = self.config.index_dir();
        crate::sources::private_dir(&dir).map_err(|e| KeywordError::Open {
            dir: dir.display().to_string(),
            detail: format!("cannot create it: {e}"),
        })?;
        let opened = Arc::new(KeywordIndex::open(&self.config.keyword_index_dir())?);
        Ok(self.keyword.get_or_init(|| opened).clone())
    }

    /// The configured embedder, loaded once per process.
    pub async fn embedder(&self) -> Result<Embedder, ProviderError> {
        self.embedder
            .get_or_try_init(|| Embedder::load(self.config.clone()))
            .await
            .cloned()
    }

    /// The retry policy of every stage.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.config.worker.max_attempts,
            base: std::time::Duration::from_millis(self.config.worker.backoff_base_ms),
            max: std::time::Duration::from_millis(self.config.worker.backoff_max_ms),
        }
    }
}

/// A stage's failure, classified for the retry policy.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Can succeed when run again: a lost connection, a deadlock, a provider's 429/5xx.
    #[error("{0}")]
    Retryable(String),
    /// Cannot: bad input, an invalid payload. Fails the stage at once.
    #[error("{0}")]
    Permanent(String),
    /// The run was paused or cancelled: the stage stopped between two batches.
    #[error("{0}")]
    Stopped(String),
}

impl From<ProviderError> for StageError {
    fn from(e: ProviderError) -> Self {
        if e.is_retryable() {
            StageError::Retryable(e.to_string())
        } else {
            StageError::Permanent(e.to_string())
        }
    }
}

impl From<KeywordError> for StageError {
    /// Lock contention and I/O may pass; corruption and an unusable directory do not.
    fn from(e: KeywordError) -> Self {
        if e.is_retryable() {
            StageError::Retryable(e.to_string())
        } else {
            StageError::Permanent(e.to_string())
        }
    }
}

impl From<crate::store::StoreError> for StageError {
    fn from(e: crate::store::StoreError) -> Self {
        if let crate::store::StoreError::Stopped(why) = e {
            return StageError::Stopped(why);
        }
        if e.is_retryable() {
            StageError::Retryable(e.to_string())
        } else {
            StageError::Permanent(e.to_string())
        }
    }
}
