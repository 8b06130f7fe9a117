//! Benchmarks behind `trawl bench`: measured on the real parts (the configured Postgres,
//! tantivy, the model), reported as figures, never asserted in tests.
//!
//! - [`queue`]: the stage queue with no-op stage work; tasks/s and enqueue→start latency.
//! - [`index`]: the five stages on a real corpus, incremental runs and query latency.
//! - [`api`]: the HTTP API's search under concurrent clients.
//! - [`watch`]: save → searchable under `trawl watch`.

pub mod api;
pub mod index;
pub mod queue;
pub mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::database::{self, DatabaseError};
use crate::store::{Store, StoreError, admin};

/// Why a benchmark could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not start a worker process ({exe}): {cause}")]
    Spawn { exe: String, cause: String },
    #[error("{0}")]
    Stalled(String),
    #[error("{0}")]
    Input(String),
}

/// A benchmark's scratch space: a database of its own on the configured server, and a
/// directory under trawl's home with a copy of the corpus and the keyword index. Nothing
/// indexed for real is touched; [`Scratch::remove`] drops it all.
pub struct Scratch {
    /// The configuration pointing at the scratch database and index.
    pub config: Config,
    pub store: Store,
    pub home: PathBuf,
    /// The copy of the corpus (the files trawl would index).
    pub corpus: PathBuf,
    server_url: String,
    database: &'static str,
}

impl Scratch {
    pub async fn create(
        config: &Config,
        database: &'static str,
        dir: &str,
        corpus: &Path,
        progress: &mut impl FnMut(&str),
    ) -> Result<Scratch, BenchError> {
        if !corpus.is_dir() {
            return Err(BenchError::Input(format!(
                "--corpus {} is not a directory: give a directory of source files (e.g. a Python standard library)",
                corpus.display()
            )));
        }
        let server_url = database::ensure_available(config).await?;
        let url = admin::url_with_database(&server_url, database)?;
        admin::drop_database(&server_url, database).await?;
        admin::create_database_if_missing(&server_url, database).await?;
        let home = config.home.join("bench").join(dir);
        let _ = std::fs::remove_dir_all(&home);
        let copy = home.join("corpus");
        progress(&format!(
            "copying {} to {}",
            corpus.display(),
            copy.display()
        ));
        let copied = index::copy_corpus(corpus, &copy)
            .map_err(|e| BenchError::Input(format!("copying the corpus: {e}")))?;
        progress(&format!("{copied} files copied"));

        let mut scratch = config.clone();
        scratch.database.url = url.clone();
        scratch.embedding.model_dir = config.model_dir().display().to_string();
        scratch.index.dir = home.join("index").display().to_string();
        let store = Store::open(&url, &database::pool_settings(&scratch)).await?;
        store.migrate().await?;
        Ok(Scratch {
            config: scratch,
            store,
            home,
            corpus: copy,
            server_url,
            database,
        })
    }

    /// Drops the scratch database and removes the directory.
    pub async fn remove(self) -> Result<(), BenchError> {
        self.store.pool().close().await;
        admin::drop_database(&self.server_url, self.database).await?;
        let _ = std::fs::remove_dir_all(&self.home);
        Ok(())
    }
}

/// Latency percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(samples: &[Duration]) -> Latency {
        Latency::of_ms(samples.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }

    pub fn of_ms(mut ms: Vec<f64>) -> Latency {
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
        Latency {
            samples: ms.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// Peak resident set size of this process so far (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let l = Latency::of_ms((1..=100).map(f64::from).collect());
        assert_eq!(
            (l.samples, l.p50_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        let one = Latency::of_ms(vec![7.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert_eq!(Latency::of_ms(vec![]).samples, 0);
    }
}
