//! Stage workers: apalis workers on the one stage queue, each job run through [`handle`].
//!
//! One apalis worker per process with `concurrency` slots; it claims a job only when a slot
//! is free (batch size 1), so the job it takes next is always the highest-priority one
//! queued at that moment. It wakes on LISTEN/NOTIFY for new and released jobs and polls at
//! an interval for retries whose backoff has passed. Orphaned jobs of a dead worker are
//! re-queued by apalis when its heartbeat is older than `worker.orphan_timeout_secs`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use rand::Rng as _;
use serde_json::Value;
use tracing::Instrument as _;

use super::job::StageJob;
use super::{PipelineContext, StageError, stages};
use crate::store::StoreError;
use crate::store::runs::{Begin, STAGE_QUEUE};

/// Why the worker stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[error("the stage worker stopped: {0}")]
pub struct WorkerError(String);

/// Runs stage jobs until `shutdown` resolves; then stops fetching, lets running stages
/// finish for up to `worker.shutdown_timeout_secs`, and releases what still runs back to
/// the queue.
pub async fn run(
    ctx: Arc<PipelineContext>,
    concurrency: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let name = worker_name();
    let pool = ctx.store.pool().clone();
    let orphan = ctx.config.worker.orphan_timeout_secs.max(3);
    let heartbeat = Duration::from_secs((orphan / 3).max(1));
    let config = apalis_postgres::Config::default()
        .queue(STAGE_QUEUE)
        .batch_size(1)
        // The store marks a job running and closes it, in the statements that record the
        // stage's transitions; apalis' own lock and result writes would only repeat them.
        .lock_tasks(false)
        .persist_results(false)
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(3);
    let poll = Duration::from_millis(ctx.config.worker.poll_interval_ms.max(10));
    let shutdown_timeout = Duration::from_secs(ctx.config.worker.shutdown_timeout_secs);
    tracing::info!(worker = %name, concurrency, "stage worker starting");

    let factory_ctx = ctx.clone();
    let factory_name = name.clone();
    // One apalis worker per slot: an apalis worker fetches one job at a time, so its fetch
    // latency caps its throughput; with batch size 1 (priority exact at every fetch) the
    // slots fetch in parallel only as workers of their own.
    let monitor = Monitor::new()
        .register_n(concurrency.max(1), move |slot, restarts| {
            let backend = PostgresStorage::<Value>::new(&pool)
                .with_config(config.clone())
                .with_pubsub()
                .poll_with_interval(poll);
            let name = if restarts == 0 {
                format!("{factory_name}-s{slot}")
            } else {
                format!("{factory_name}-s{slot}-r{restarts}")
            };
            WorkerBuilder::new(name)
                .backend(backend)
                .data(factory_ctx.clone())
                .concurrency(1)
                .build(handle)
        })
        .shutdown_timeout(shutdown_timeout);
    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            Ok(())
        })
        .await;
    // Whatever the timeout cut short goes back to the queue now rather than after the
    // orphan timeout. Stages are idempotent, so running one again is safe.
    let released = release_held_jobs(&ctx, &name).await;
    tracing::info!(worker = %name, released, "stage worker stopped");
    result.map_err(|e| WorkerError(e.to_string()))
}

/// A worker name unique across hosts and processes (apalis keys heartbeats by it).
fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let salt: u32 = rand::rng().random();
    format!("trawl-{host}-{}-{salt:08x}", std::process::id())
}

/// Puts the jobs this worker still holds back in the queue and marks the worker gone, so
/// `trawl index --wait` does not count on it.
async fn release_held_jobs(ctx: &PipelineContext, name: &str) -> u64 {
    let _ = sqlx::query(
        "UPDATE apalis.workers SET last_seen = now() - interval '1 day' WHERE starts_with(id, $1)",
    )
    .bind(name)
    .execute(ctx.store.pool())
    .await;
    let r = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL
         WHERE starts_with(lock_by, $1) AND status IN ('Queued', 'Running')",
    )
    .bind(name)
    .execute(ctx.store.pool())
    .await;
    r.map(|r| r.rows_affected()).unwrap_or(0)
}

/// Runs one stage job. Every outcome is recorded by the store, which also closes the job
/// (apalis' own lock and result writes are off). Recording is retried through a passing
/// database outage; an `Err` returned here means it never succeeded, and the job waits for
/// this worker's restart (its lock is released on shutdown) or its death (orphan rescue).
async fn handle(
    job: Value,
    id: TaskId,
    ctx: Data<Arc<PipelineContext>>,
) -> Result<(), BoxDynError> {
    let job_id = id.to_string();
    let Data(ctx) = ctx;
    let store = &ctx.store;
    let payload = match StageJob::decode(&job) {
        Ok(p) => p,
        Err(msg) => {
            tracing::error!(job = %job_id, error = %msg, "failing a malformed stage job for good");
            store.kill_job(&job_id, &msg).await?;
            return Ok(());
        }
    };
    let span = tracing::info_span!("stage", run = payload.run_id, repo = payload.repository_id, stage = %payload.stage, job = %job_id);
    async {
        let (run, attempt) = match recorded(|| store.begin_stage(&job_id)).await {
            Ok(Begin::Proceed { run, attempt }) => (run, attempt),
            Ok(Begin::Wait) => {
                tracing::debug!("predecessor unfinished: parked again");
                return Ok(());
            }
            Ok(Begin::Nothing { reason }) => {
                tracing::debug!(%reason, "nothing to do");
                return Ok(());
            }
            Err(StoreError::NotFound(what)) => {
                store.kill_job(&job_id, &format!("no {what}: the job belongs to no run")).await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let started = std::time::Instant::now();
        let outcome = async {
            ctx.faults.inject(payload.stage, attempt as u32).await?;
            if ctx.noop_stages {
                return Ok(stages::StageOutcome::default());
            }
            stages::run(&ctx, &run, &payload).await
        }
        .await;
        let policy = ctx.retry_policy();
        match outcome {
            Ok(done) => {
                tracing::info!(attempt, ms = started.elapsed().as_millis() as u64, "stage succeeded");
                recorded(|| store.complete_stage(&job_id, &done.result, done.up_to_date)).await?;
            }
            Err(StageError::Retryable(msg)) if policy.allows_another(attempt as u32) => {
                let delay = policy.backoff(attempt as u32, rand::rng().random());
                tracing::warn!(attempt, error = %msg, delay_ms = delay.as_millis() as u64, "stage failed, will retry");
                recorded(|| store.retry_stage(&job_id, &msg, delay)).await?;
            }
            Err(e) => {
                let msg = match &e {
                    StageError::Retryable(m) => format!("{m} (gave up after {attempt} attempts)"),
                    StageError::Permanent(m) => m.clone(),
                };
                tracing::error!(attempt, error = %msg, "stage failed for good");
                recorded(|| store.fail_stage(&job_id, &msg)).await?;
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Runs a store write of a stage transition, again after a retryable failure (a lost
/// connection, a deadlock, a restarting server) for about half a minute.
async fn recorded<T, F, Fut>(mut write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..8 {
        match write().await {
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "recording a stage transition failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
            other => return other,
        }
    }
    write().await
}
