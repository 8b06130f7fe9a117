//! The durable five-stage pipeline on apalis' Postgres queue.
//!
//! - [`job`]: the typed payload of a stage job.
//! - [`worker`]: the apalis worker that takes stage jobs by priority and runs them.
//! - [`backend`]: its apalis backend, claiming jobs for free slots in one statement.
//! - [`stages`]: what each stage does; one module each.
//! - [`wakeups`]: the one listener a worker process wakes its queues and router by.
//! - [`faults`]: test-only fault injection (compiled out of release builds).
//!
//! Ordering: all five jobs of a run are enqueued at once; every stage but SYNC is parked
//! (`run_at` far in the future) until its predecessor's success releases it in the same
//! transaction. A worker that still finds a predecessor unfinished parks the job again
//! without spending an attempt. Completion, retries with backoff and failures are written by
//! the store (see `store::runs`).

pub mod backend;
pub mod batch;
pub mod downstream;
pub mod faults;
pub mod stages;
pub mod wakeups;
pub mod worker;

use std::sync::{Arc, OnceLock};

use crate::config::Config;
use crate::domain::retry::RetryPolicy;
use crate::providers::{Embedder, ProviderError};
use crate::search::keyword::{KeywordError, KeywordIndex};
use crate::store::Store;

/// This machine's host name, as worker names and errors give it ("host" when unknown).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

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

/// A stage's failure, classified for the retry policy. The failures of the store, the
/// keyword index and the providers keep their error (its source chain with it), and
/// whether running again can help is theirs to say ([`StageError::is_retryable`]).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Can succeed when run again (a stage's own judgement).
    #[error("{0}")]
    Retryable(String),
    /// Cannot: bad input, an invalid payload. Fails the stage at once.
    #[error("{0}")]
    Permanent(String),
    /// The run was paused or cancelled: the stage stopped between two batches.
    #[error("{0}")]
    Stopped(String),
    #[error(transparent)]
    Store(crate::store::StoreError),
    #[error(transparent)]
    Keyword(#[from] KeywordError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl StageError {
    /// Whether another attempt can succeed: a lost connection or a deadlock, another
    /// writer's lock on the keyword index, a provider's 429/5xx; not bad input, a corrupt
    /// index, a provider's 401.
    pub fn is_retryable(&self) -> bool {
        match self {
            StageError::Retryable(_) => true,
            StageError::Permanent(_) | StageError::Stopped(_) => false,
            StageError::Store(e) => e.is_retryable(),
            StageError::Keyword(e) => e.is_retryable(),
            StageError::Provider(e) => e.is_retryable(),
        }
    }

    /// The error with its causes, for the task table and the log.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        out
    }
}

impl From<crate::store::StoreError> for StageError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Stopped(why) => StageError::Stopped(why),
            e => StageError::Store(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    /// A stage's failure keeps the error it came from: whether to retry is that error's to
    /// say, and the report carries its words.
    #[test]
    fn stage_errors_keep_their_cause_and_its_retryability() {
        let refused: StageError = ProviderError::Refused {
            url: "http://127.0.0.1:9/v1".into(),
            detail: "401 bad key".into(),
        }
        .into();
        assert!(!refused.is_retryable());
        assert!(
            refused.report().contains("401 bad key"),
            "{}",
            refused.report()
        );
        let overloaded: StageError = ProviderError::Transient {
            url: "http://127.0.0.1:9/v1".into(),
            detail: "503".into(),
        }
        .into();
        assert!(overloaded.is_retryable());
        let deadlock: StageError = StoreError::Database {
            message: "deadlock detected".into(),
            code: Some("40P01".into()),
            retryable: true,
        }
        .into();
        assert!(deadlock.is_retryable() && matches!(deadlock, StageError::Store(_)));
        let stopped: StageError = StoreError::Stopped("run 3 is paused".into()).into();
        assert!(matches!(stopped, StageError::Stopped(_)) && !stopped.is_retryable());
    }
}
