//! Stage workers: an apalis worker on the one stage queue, each job run through [`handle`].
//!
//! One apalis worker per process with `concurrency` slots. Its backend
//! ([`super::backend::JobBackend`]) claims jobs only for free slots, so the jobs it takes
//! are always the highest-priority ones queued at that moment. It wakes on LISTEN/NOTIFY
//! for new and released jobs and polls at an interval for retries whose backoff has
//! passed. Orphaned jobs of a dead worker are re-queued when its heartbeat is older than
//! `worker.orphan_timeout_secs`. Successes are written in batches ([`Completions`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apalis::prelude::*;
use futures::StreamExt as _;
use rand::Rng as _;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use super::backend::{ClaimedJob, JobBackend};
use super::batch;
use super::wakeups::Wakeups;
use super::{PipelineContext, StageError, stages};
use crate::config::Config;
use crate::domain::job::StageJob;
use crate::store::lifecycle::{Begin, STAGE_QUEUE};
use crate::store::{Store, StoreError};

/// Why the worker stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[error("the stage worker stopped: {0}")]
pub struct WorkerError(String);

/// Connections a worker of `concurrency` slots needs at once: two per slot (a stage keeps
/// one for its work while it writes progress or a second page with another), plus the
/// claim, the heartbeat, the wake-up listener and the completion writer; and one for each
/// downstream pipeline's single job and one for the event router. A smaller pool starved
/// them all: claims and heartbeats timed out in a loop, and the run never ended.
pub fn connections_needed(concurrency: usize) -> u32 {
    let pipelines = crate::domain::pipelines::Pipeline::ALL.len();
    u32::try_from(concurrency.saturating_mul(2).saturating_add(5 + pipelines)).unwrap_or(u32::MAX)
}

/// `config` with its pool at least [`connections_needed`] for `concurrency` slots (plus
/// `others` for what else the process serves); says so when it raises the setting.
pub fn sized_for(config: &Config, concurrency: usize, others: u32) -> Config {
    let needed = connections_needed(concurrency).saturating_add(others);
    let mut c = config.clone();
    if concurrency > 0 && c.database.max_connections < needed {
        tracing::warn!(
            max_connections = c.database.max_connections,
            concurrency,
            using = needed,
            "database.max_connections is too few for worker.concurrency: the pool is sized to the slots"
        );
        c.database.max_connections = needed;
    }
    c
}

/// Runs stage jobs until `shutdown` resolves; then stops fetching, lets running stages
/// finish for up to `worker.shutdown_timeout_secs`, and releases what still runs back to
/// the queue.
pub async fn run(
    ctx: Arc<PipelineContext>,
    concurrency: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let name = worker_name();
    let store = ctx.store.clone();
    let orphan = ctx.config.worker.orphan_timeout_secs.max(3);
    let heartbeat = Duration::from_secs((orphan / 3).max(1));
    let poll = Duration::from_millis(ctx.config.worker.poll_interval_ms.max(10));
    let shutdown_timeout = Duration::from_secs(ctx.config.worker.shutdown_timeout_secs);
    let concurrency = concurrency.max(1);
    let stages = ctx.config.worker.stages.clone();
    let taking = if stages.is_empty() {
        "every stage".to_string()
    } else {
        stages
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    tracing::info!(worker = %name, concurrency, stages = %taking, "stage worker starting");

    let queues = Queues::of(&ctx.config.worker.queues);
    let (wakeups_stop, wakeups_stopped) = tokio::sync::watch::channel(false);
    let wakeups = Wakeups::start(store.pool().clone(), wakeups_stopped);
    let mut monitor = Monitor::new();
    if queues.stages {
        let completions = Completions::start(store.clone());
        let factory_ctx = ctx.clone();
        let factory_name = name.clone();
        let stage_wakeups = wakeups.clone();
        let batch_wakeups = wakeups.clone();
        monitor = monitor
            .register(move |restarts| {
                let backend = polled_backend(
                    STAGE_QUEUE,
                    &store,
                    &stage_wakeups,
                    concurrency,
                    heartbeat,
                    orphan,
                    poll,
                    &stages,
                );
                let name = if restarts == 0 {
                    factory_name.clone()
                } else {
                    format!("{factory_name}-r{restarts}")
                };
                WorkerBuilder::new(name)
                    .backend(backend)
                    .data(factory_ctx.clone())
                    .data(completions.clone())
                    .concurrency(concurrency)
                    .build(handle)
            })
            // The reindex.batch job type, on its own queue: one at a time per process.
            .register({
                let ctx = ctx.clone();
                let name = name.clone();
                move |restarts| {
                    let backend = polled_backend(
                        batch::QUEUE,
                        &ctx.store,
                        &batch_wakeups,
                        1,
                        heartbeat,
                        orphan,
                        poll,
                        &[],
                    );
                    WorkerBuilder::new(format!("{name}-batch-r{restarts}"))
                        .backend(backend)
                        .data(ctx.clone())
                        .concurrency(1)
                        .build(handle_batch)
                }
            });
    }
    // Each downstream pipeline on its own queue: one job at a time per process.
    for pipeline in queues.pipelines.iter().copied() {
        let ctx = ctx.clone();
        let name = name.clone();
        let wakeups = wakeups.clone();
        monitor = monitor.register(move |restarts| {
            let backend = polled_backend(
                pipeline.queue(),
                &ctx.store,
                &wakeups,
                1,
                heartbeat,
                orphan,
                poll,
                &[],
            );
            WorkerBuilder::new(format!("{name}-{pipeline}-r{restarts}"))
                .backend(backend)
                .data(ctx.clone())
                .data(pipeline)
                .concurrency(1)
                .build(handle_pipeline)
        });
    }
    tracing::info!(worker = %name, queues = %queues.describe(), "taking jobs");
    // Every worker routes events to the pipelines (each event once, whoever routes it).
    let (router_stop, router_stopped) = tokio::sync::watch::channel(false);
    let router = tokio::spawn(super::downstream::route_forever(
        ctx.clone(),
        wakeups.of_events(),
        router_stopped,
    ));
    let monitor = monitor.shutdown_timeout(shutdown_timeout);
    // apalis sends no heartbeat while it drains: this process keeps them going itself, so
    // that no other worker takes its stages for orphans and runs them a second time. It is
    // stopped and awaited before the workers are marked gone, so no beat comes after.
    let (keeper_stop, keeper_stopped) = tokio::sync::watch::channel(false);
    let keeper: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>> = Arc::default();
    let started_keeper = keeper.clone();
    let (keeper_store, keeper_name) = (ctx.store.clone(), name.clone());
    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            let handle = tokio::spawn(keep_alive_while_draining(
                keeper_store,
                keeper_name,
                heartbeat,
                keeper_stopped,
            ));
            *started_keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
            Ok(())
        })
        .await;
    let _ = keeper_stop.send(true);
    let _ = router_stop.send(true);
    let _ = router.await;
    let _ = wakeups_stop.send(true);
    let handle = keeper.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(handle) = handle {
        let _ = handle.await;
    }
    // Whatever the timeout cut short goes back to the queue now rather than after the
    // orphan timeout. Stages are idempotent, so running one again is safe.
    let released = release_held_jobs(&ctx, &name).await;
    tracing::info!(worker = %name, released, "stage worker stopped");
    result.map_err(|e| WorkerError(e.to_string()))
}

/// Marks this process' workers alive every `every` until `stop` says so (while apalis
/// drains); a beat under way is finished first.
async fn keep_alive_while_draining(
    store: Store,
    name: String,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = tokio::time::sleep(every) => {}
        }
        let _ = store.keep_workers_alive(&name).await;
    }
}

/// The backend of a worker with `slots` slots on `queue`, and how it is woken: at once by
/// apalis' insert notifications (and the ones a completed stage sends for its successor),
/// and at an interval for retries whose backoff passed. The notifications come from the
/// process' one listener, and those that arrived meanwhile wake one claim together: a
/// claim takes jobs for every free slot anyway, and a backlog of notifications would
/// otherwise be worked off as a string of empty claims.
#[allow(clippy::too_many_arguments)]
fn polled_backend(
    queue: &'static str,
    store: &Store,
    wakeups: &Wakeups,
    slots: usize,
    heartbeat: Duration,
    orphan_secs: u64,
    poll: Duration,
    stages: &[crate::domain::Stage],
) -> PollWith<
    PollWith<JobBackend, StreamStrategy<impl futures::Stream + Unpin + use<>>>,
    IntervalStrategy,
> {
    let wakes = Arc::new(AtomicU64::new(0));
    let backend = JobBackend::new(
        queue,
        store.clone(),
        slots,
        heartbeat,
        Duration::from_secs(orphan_secs),
        wakes.clone(),
        stages,
    );
    PollWith::new(
        backend,
        StreamStrategy::new(wakeups.of_queue(queue).inspect(move |_| {
            wakes.fetch_add(1, Ordering::AcqRel);
        })),
    )
    .poll_with_interval(poll)
}

/// A worker name unique across hosts and processes (apalis keys heartbeats by it).
fn worker_name() -> String {
    let host = super::host_name();
    let salt: u32 = rand::rng().random();
    format!("trawl-{host}-{}-{salt:08x}", std::process::id())
}

/// Puts the jobs this worker still holds back in the queue and marks the worker gone, so
/// `trawl index --wait` does not count on it.
async fn release_held_jobs(ctx: &PipelineContext, name: &str) -> u64 {
    let _ = ctx.store.mark_workers_gone(name).await;
    ctx.store.abandon_jobs(name, None).await.unwrap_or(0)
}

/// Runs one stage job, claimed and begun by the backend. Every outcome is recorded by the
/// store, which also closes the job (apalis' own lock and result writes are off). Recording
/// is retried through a passing database outage; an `Err` returned here means it never
/// succeeded, and the job waits for this worker's restart (its lock is released on
/// shutdown) or its death (orphan rescue).
async fn handle(
    claimed: ClaimedJob,
    ctx: Data<Arc<PipelineContext>>,
    completions: Data<Completions>,
) -> Result<(), BoxDynError> {
    let Data(ctx) = ctx;
    let store = &ctx.store;
    let job_id = claimed.job_id.as_str();
    let payload = match StageJob::decode(&claimed.payload) {
        Ok(p) => p,
        Err(msg) => {
            tracing::error!(job = %job_id, error = %msg, "failing a malformed stage job for good");
            store.kill_job(job_id, &msg).await?;
            return Ok(());
        }
    };
    let span = tracing::info_span!("stage", run = payload.run_id, repo = payload.repository_id, stage = %payload.stage, job = %job_id);
    async {
        let begin = claimed
            .begin
            .unwrap_or_else(|| Err(format!("job {job_id} is not a stage job")));
        let (run, attempt) = match begin {
            Ok(Begin::Proceed { run, attempt }) => (run, attempt),
            Ok(Begin::Wait) => {
                tracing::debug!("predecessor unfinished: parked again");
                return Ok(());
            }
            Ok(Begin::Nothing { reason }) => {
                tracing::debug!(%reason, "nothing to do");
                return Ok(());
            }
            Err(msg) => {
                tracing::error!(error = %msg, "failing a stage job that cannot run");
                store.kill_job(job_id, &msg).await?;
                return Ok(());
            }
        };
        let started = std::time::Instant::now();
        let outcome = async {
            ctx.faults
                .inject(&ctx.store, payload.stage, attempt as u32)
                .await?;
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
                recorded(|| completions.complete(job_id, &done.result, done.up_to_date)).await?;
            }
            Err(StageError::Stopped(why)) => {
                tracing::info!(%why, "stage stopped between batches");
                recorded(|| store.stop_stage(job_id)).await?;
            }
            Err(e) if e.is_retryable() && policy.allows_another(attempt as u32) => {
                let msg = e.report();
                // Credentials in a remote's or provider's URL never reach the task table.
                let msg = crate::redact::text(&msg);
                let delay = policy.backoff(attempt as u32, rand::rng().random());
                tracing::warn!(attempt, error = %msg, delay_ms = delay.as_millis() as u64, "stage failed, will retry");
                recorded(|| store.retry_stage(job_id, &msg, delay)).await?;
            }
            Err(e) => {
                let msg = if e.is_retryable() {
                    format!(
                        "{} (gave up after {attempt} {})",
                        e.report(),
                        if attempt == 1 { "attempt" } else { "attempts" }
                    )
                } else {
                    e.report()
                };
                let msg = crate::redact::text(&msg);
                tracing::error!(attempt, error = %msg, "stage failed for good");
                recorded(|| store.fail_stage(job_id, &msg)).await?;
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Runs one reindex.batch job (see [`batch`]), which records its own outcome; its payload
/// is decoded there, so that a malformed one fails the job, not the worker.
async fn handle_batch(
    claimed: ClaimedJob,
    ctx: Data<Arc<PipelineContext>>,
) -> Result<(), BoxDynError> {
    let Data(ctx) = ctx;
    batch::handle(ctx, claimed.job_id.clone(), claimed.payload.clone()).await;
    Ok(())
}

/// Runs one downstream pipeline job (see [`super::downstream`]), which records its own
/// outcome.
async fn handle_pipeline(
    claimed: ClaimedJob,
    ctx: Data<Arc<PipelineContext>>,
    pipeline: Data<crate::domain::pipelines::Pipeline>,
) -> Result<(), BoxDynError> {
    let (Data(ctx), Data(pipeline)) = (ctx, pipeline);
    super::downstream::handle(ctx, pipeline, claimed.job_id.clone()).await;
    Ok(())
}

/// The queues a worker takes jobs from (`worker.queues`; empty: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queues {
    /// The stage queue and the batch jobs'.
    pub stages: bool,
    pub pipelines: Vec<crate::domain::pipelines::Pipeline>,
}

impl Queues {
    /// From the configured names (checked by `Config::validate`; an unknown one is left out).
    pub fn of(names: &[String]) -> Queues {
        use crate::domain::pipelines::Pipeline;
        if names.is_empty() {
            return Queues {
                stages: true,
                pipelines: Pipeline::ALL.to_vec(),
            };
        }
        Queues {
            stages: names.iter().any(|n| n == "stages"),
            pipelines: Pipeline::ALL
                .into_iter()
                .filter(|p| names.iter().any(|n| n == p.as_str()))
                .collect(),
        }
    }

    fn describe(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        if self.stages {
            names.push("stages");
        }
        names.extend(self.pipelines.iter().map(|p| p.as_str()));
        names.join(", ")
    }
}

/// Stage successes, written in batches: what finishes while one batch is being written goes
/// into the next, one statement and one commit for all. Under load that is most of the
/// cost of a short stage; alone, a success is written at once.
#[derive(Clone)]
struct Completions {
    tx: mpsc::UnboundedSender<Completion>,
}

struct Completion {
    job_id: String,
    result: Value,
    up_to_date: bool,
    done: oneshot::Sender<Result<(), StoreError>>,
}

impl Completions {
    /// Starts the writer; it stops when the last handle is dropped.
    fn start(store: Store) -> Completions {
        let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 256).await > 0 {
                let (rows, dones): (Vec<_>, Vec<_>) = batch
                    .drain(..)
                    .map(|c| ((c.job_id, c.result, c.up_to_date), c.done))
                    .unzip();
                match store.complete_stages(&rows).await {
                    Ok(()) => dones.into_iter().for_each(|d| {
                        let _ = d.send(Ok(()));
                    }),
                    // One by one, so that each gets its own outcome (and one bad row
                    // does not hold back the others).
                    Err(e) if rows.len() == 1 => {
                        let _ = dones.into_iter().next().map(|d| d.send(Err(e)));
                    }
                    Err(_) => {
                        for (row, done) in rows.into_iter().zip(dones) {
                            let _ = done.send(store.complete_stages(&[row]).await);
                        }
                    }
                }
            }
        });
        Completions { tx }
    }

    /// Records the success of job `job_id`'s stage; returns once it is committed.
    async fn complete(
        &self,
        job_id: &str,
        result: &Value,
        up_to_date: bool,
    ) -> Result<(), StoreError> {
        let stopped = || StoreError::Connection("the stage completion writer stopped".into());
        let (done, outcome) = oneshot::channel();
        self.tx
            .send(Completion {
                job_id: job_id.to_string(),
                result: result.clone(),
                up_to_date,
                done,
            })
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Runs a store write of a stage transition, again after a retryable failure (a lost
/// connection, a deadlock, a restarting server) for about half a minute.
pub(crate) async fn recorded<T, F, Fut>(mut write: F) -> Result<T, StoreError>
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
