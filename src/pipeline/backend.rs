//! The stage queue as an apalis backend.
//!
//! Jobs, workers and their heartbeats live in apalis' own Postgres tables (`apalis.jobs`,
//! `apalis.workers`), and apalis' worker runs the jobs; registration, heartbeats and the
//! rescue of a dead worker's jobs are apalis-postgres' own queries. What differs from its
//! `PostgresStorage` is the fetch: one statement claims as many jobs as the worker has free
//! slots, highest priority first, and begins their stages (`Store::claim_stages`). apalis'
//! fetch takes a fixed batch in a transaction of its own, so a worker either fetched one job
//! per round trip (exact priority) or buffered jobs a later, higher-priority one then waited
//! behind. Claiming only for free slots keeps the priority exact: the jobs claimed are the
//! ones single fetches would have taken, in the same order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{Backend, Identity, Task, TaskBuilder, TaskId};
use apalis_core::backend::BackendConfig;
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::persistence::{Persisted, Persistence, TaskEvent};
use apalis_core::worker::context::WorkerContext;

use crate::store::lifecycle::{Begin, STAGE_QUEUE};
use crate::store::{Store, StoreError};

/// A job claimed by [`JobBackend`] (a stage job: claimed and begun): what the worker's
/// handler receives. It holds one of the worker's slots until dropped.
#[derive(Debug)]
pub struct ClaimedJob {
    pub job_id: String,
    /// The payload as stored; decoded by the handler, which fails a malformed one for good.
    pub payload: Vec<u8>,
    /// For a stage job: what the stage should do, or why the job cannot run. None for a
    /// job of another queue.
    pub begin: Option<Result<Begin, String>>,
    _slot: Slot,
}

/// The slots of one worker: how many claimed jobs are not finished yet.
#[derive(Debug, Clone)]
struct Slots {
    size: usize,
    taken: Arc<AtomicUsize>,
}

impl Slots {
    fn free(&self) -> usize {
        self.size.saturating_sub(self.taken.load(Ordering::Acquire))
    }

    fn take(&self) -> Slot {
        self.taken.fetch_add(1, Ordering::AcqRel);
        Slot(self.taken.clone())
    }
}

/// One taken slot, given back when the claimed job is dropped.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The persistence apalis' [`Persisted`] drives: register, heartbeat, fetch, give back.
#[derive(Debug, Clone)]
struct StagePersistence {
    store: Store,
    slots: Slots,
    /// A worker whose heartbeat is older than this is dead; its jobs go back to the queue.
    orphan_after: Duration,
    /// Counts the wake-ups (job notifications) the worker received; see `fetch_next`.
    wakes: Arc<AtomicU64>,
    /// The apalis queue (job_type): the stage queue, whose jobs are begun as they are
    /// claimed, or another (the reindex.batch jobs), whose jobs are only claimed.
    queue: &'static str,
    /// The stages a stage-queue worker takes; None: every stage.
    stages: Option<Vec<crate::domain::Stage>>,
}

/// apalis-postgres' queries report its own error type; the worker reports the store's.
fn from_apalis(e: apalis_postgres::Error) -> StoreError {
    match e {
        apalis_postgres::Error::Database(e) => e.into(),
        other => StoreError::Invalid(other.to_string()),
    }
}

impl StagePersistence {
    /// Gives the jobs of workers whose heartbeat is older than `orphan_after` back to the
    /// queue (apalis-postgres' orphan rescue, in the store's lifecycle).
    async fn rescue_orphans(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<u64, StoreError> {
        crate::store::lifecycle::rescue_orphans(tx, self.queue, self.orphan_after).await
    }
}

impl Persistence for StagePersistence {
    type Compact = ClaimedJob;
    type Response = ();
    type Error = StoreError;

    /// Registers the worker in `apalis.workers` (as apalis-postgres does) after giving the
    /// jobs of dead workers back to the queue.
    async fn register(&mut self, worker: &WorkerContext) -> Result<(), StoreError> {
        let mut tx = self.store.pool().begin().await?;
        self.rescue_orphans(&mut tx).await?;
        crate::store::workers::register_worker(
            &mut tx,
            worker.name(),
            self.queue,
            worker.get_service(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A heartbeat that fails for a passing reason (a lost connection, a deadlock) is
    /// skipped: an error here would end the worker for good, with its stages.
    async fn heartbeat(&mut self, worker: &WorkerContext) -> Result<(), StoreError> {
        let beat = async {
            let mut tx = self.store.pool().begin().await?;
            apalis_postgres::queries::keep_alive(&mut *tx, self.queue, worker)
                .await
                .map_err(from_apalis)?;
            self.rescue_orphans(&mut tx).await?;
            tx.commit().await?;
            Ok::<(), StoreError>(())
        };
        match beat.await {
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "a worker heartbeat failed; the next one will try again");
                Ok(())
            }
            other => other,
        }
    }

    /// Claims and begins as many jobs as there are free slots. apalis asks only when its
    /// concurrency limit has room, so there is at least one.
    ///
    /// A notification that arrives while a claim is under way wakes the worker, but apalis
    /// consumes it without a fetch of its own: the claim in flight returns, perhaps empty
    /// (it looked before the job was committed), and the job would wait for the next
    /// interval poll. So an empty claim during which a notification came is made again.
    async fn fetch_next(
        &mut self,
        worker: &WorkerContext,
    ) -> Result<Vec<Task<ClaimedJob>>, StoreError> {
        let mut claims = Vec::new();
        for _ in 0..4 {
            let seen = self.wakes.load(Ordering::Acquire);
            let free = self.slots.free().max(1);
            let claimed = if self.queue == STAGE_QUEUE {
                self.store
                    .claim_stages_of(worker.name(), free, self.stages.as_deref())
                    .await
            } else {
                self.store.claim_jobs(worker.name(), self.queue, free).await
            };
            claims = match claimed {
                Ok(c) => c,
                // A passing failure (a lost connection, a deadlock with an operator's pause
                // or cancel: the claim was rolled back) claims nothing this time; the
                // interval poll comes back. An error here would end the worker for good.
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "claiming jobs failed; trying again shortly");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            if !claims.is_empty() || self.wakes.load(Ordering::Acquire) == seen {
                break;
            }
        }
        Ok(claims
            .into_iter()
            .map(|claim| {
                let task_id = ulid::Ulid::from_string(&claim.job_id)
                    .map(TaskId::from_ulid)
                    .unwrap_or_else(|_| TaskId::String(claim.job_id.clone()));
                TaskBuilder::new(ClaimedJob {
                    job_id: claim.job_id,
                    payload: claim.payload,
                    begin: claim.begin,
                    _slot: self.slots.take(),
                })
                .task_id(task_id)
                .priority(claim.priority.max(0) as usize)
                .run_at_timestamp(claim.run_at.timestamp().max(0) as u64)
                .build()
            })
            .collect())
    }

    /// Claimed jobs a stopping worker never started go back to the queue.
    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<ClaimedJob>>,
        worker: &WorkerContext,
    ) -> Result<u64, StoreError> {
        let ids: Vec<String> = tasks.iter().map(|t| t.args.job_id.clone()).collect();
        self.store.abandon_jobs(worker.name(), Some(&ids)).await
    }

    /// The store records every transition itself; apalis sends no events here.
    async fn handle_events(
        &mut self,
        _events: Vec<TaskEvent<()>>,
        _worker: &WorkerContext,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Runs are enqueued by the store (`Store::enqueue_run`), five jobs at once.
    async fn push_tasks(&mut self, _tasks: Vec<Task<ClaimedJob>>) -> Result<(), StoreError> {
        Err(StoreError::Invalid(
            "stage jobs are enqueued with their run (Store::enqueue_run)".into(),
        ))
    }
}

/// The backend of one worker with `slots` slots on one queue.
pub struct JobBackend {
    persistence: Persisted<StagePersistence>,
    heartbeat: Duration,
}

impl JobBackend {
    /// A worker on `queue` taking `stages` (empty: every stage); `wakes` is counted up by
    /// the worker's wake-up stream, once per notification.
    pub fn new(
        queue: &'static str,
        store: Store,
        slots: usize,
        heartbeat: Duration,
        orphan_after: Duration,
        wakes: Arc<AtomicU64>,
        stages: &[crate::domain::Stage],
    ) -> Self {
        JobBackend {
            persistence: Persisted::new(StagePersistence {
                store,
                slots: Slots {
                    size: slots.max(1),
                    taken: Arc::new(AtomicUsize::new(0)),
                },
                orphan_after,
                wakes,
                queue,
                stages: (!stages.is_empty()).then(|| stages.to_vec()),
            }),
            heartbeat,
        }
    }
}

impl Backend for JobBackend {
    type Task = Task<ClaimedJob>;
    type Error = StoreError;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), StoreError>> {
        self.persistence.poll_ready(cx, worker, self.heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<ClaimedJob>, StoreError>>> {
        self.persistence.poll_next(cx, worker)
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), StoreError>> {
        self.persistence.poll_close(cx, worker)
    }
}

impl BackendConfig for JobBackend {
    type Args = ClaimedJob;
    type Id = ulid::Ulid;
    /// The claimed jobs are handed over as they are: nothing to decode.
    type Kind = Ephemeral;
    type Config = ();
    /// No lock or result events: the store writes both with the stage's transitions.
    type Layer = Identity;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}
