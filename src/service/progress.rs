//! The progress of a run as a stream of snapshots: the first at once (`preparing_index`),
//! then one per stage change and per batch, then a terminal one. `trawl reindex --wait
//! --json` and `trawl runs watch --json` print them as NDJSON; the HTTP API will stream the
//! same.

use std::time::Duration;

use serde::Serialize;

use crate::store::runs::{Run, StageRun};
use crate::store::{Store, StoreError};

/// One snapshot of a run's progress.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Snapshot {
    pub run_id: i64,
    /// running (queued runs too: they are being prepared), paused, succeeded, failed or
    /// cancelled.
    pub status: String,
    /// `preparing_index` before a stage has started, then the stage at work (or the last
    /// one that worked, in a terminal snapshot).
    pub stage: String,
    /// 100 × items done / items total of that stage (0 while its total is unknown, 100
    /// when the run succeeded).
    pub percent: f64,
    pub items_done: i64,
    pub items_total: i64,
    pub items_failed: i64,
    pub current_item: Option<String>,
    /// The run's error, in a failed or cancelled snapshot.
    pub error: Option<String>,
    pub terminal: bool,
}

impl Snapshot {
    /// The first snapshot, sent before anything is read.
    pub fn preparing(run_id: i64) -> Snapshot {
        Snapshot {
            run_id,
            status: "running".into(),
            stage: "preparing_index".into(),
            percent: 0.0,
            items_done: 0,
            items_total: 0,
            items_failed: 0,
            current_item: None,
            error: None,
            terminal: false,
        }
    }

    /// The snapshot of a run in the state `run` and `stages` show.
    pub fn of(run: &Run, stages: &[StageRun]) -> Snapshot {
        let terminal = run.status.is_finished();
        // The stage at work; else the last one that did anything.
        let current = stages
            .iter()
            .find(|s| s.status == "running")
            .or_else(|| stages.iter().rev().find(|s| s.started_at.is_some()));
        let Some(stage) = current else {
            // Not started: still preparing (queued for a worker, or paused before it
            // began), or over before it began.
            if !terminal {
                let mut preparing = Snapshot::preparing(run.id);
                if run.status == "paused" {
                    preparing.status = run.status.to_string();
                }
                return preparing;
            }
            return Snapshot {
                status: run.status.to_string(),
                error: run.error.clone(),
                terminal,
                ..Snapshot::preparing(run.id)
            };
        };
        let (done, total) = (i64::from(stage.items_done), i64::from(stage.items_total));
        let percent = if run.status == "succeeded" {
            100.0
        } else {
            percent(done, total)
        };
        Snapshot {
            run_id: run.id,
            status: run.status.to_string(),
            stage: stage.stage.clone(),
            percent,
            items_done: done,
            items_total: total,
            items_failed: i64::from(stage.items_failed),
            current_item: stage.current_item.clone(),
            error: run.error.clone(),
            terminal,
        }
    }
}

/// Turns what a run's stages reported into snapshots: one per stage start and per batch
/// (from `run_progress`, so none is missed between two looks), and the run's own state
/// when it changes otherwise (paused, resumed) or ends.
pub struct Follower {
    run_id: i64,
    after_event: i64,
    last: Snapshot,
}

impl Follower {
    /// A follower whose first snapshot, `preparing_index`, is [`Follower::first`].
    pub fn new(run_id: i64) -> Follower {
        Follower {
            run_id,
            after_event: 0,
            last: Snapshot::preparing(run_id),
        }
    }

    /// A follower joining a run under way: its first snapshot is where the run is now,
    /// and it goes on from the run's latest event (nothing before is replayed).
    pub async fn joining(store: &Store, run_id: i64) -> Result<Follower, StoreError> {
        // The event id first: an event written between the two reads is sent again
        // rather than missed.
        let after_event = store.last_progress_event(run_id).await?;
        let run = store.run(run_id).await?;
        let stages = store.stage_runs(run_id).await?;
        Ok(Follower {
            run_id,
            after_event,
            last: Snapshot::of(&run, &stages),
        })
    }

    /// The first snapshot, to send before anything is read.
    pub fn first(&self) -> &Snapshot {
        &self.last
    }

    /// The snapshots since the last call, oldest first; the last one is terminal when the
    /// run has ended.
    pub async fn next(&mut self, store: &Store) -> Result<Vec<Snapshot>, StoreError> {
        // The run first: events read after it include every one it ended with.
        let run = store.run(self.run_id).await?;
        let stages = store.stage_runs(self.run_id).await?;
        let mut out = Vec::new();
        for e in store.progress_events(self.run_id, self.after_event).await? {
            self.after_event = e.id;
            let (done, total) = (i64::from(e.items_done), i64::from(e.items_total));
            let snapshot = Snapshot {
                run_id: self.run_id,
                status: "running".into(),
                stage: e.stage,
                percent: percent(done, total),
                items_done: done,
                items_total: total,
                items_failed: i64::from(e.items_failed),
                current_item: e.current_item,
                error: None,
                terminal: false,
            };
            self.push(snapshot, &mut out);
        }
        let now = Snapshot::of(&run, &stages);
        if now.terminal || now.status != self.last.status {
            self.push(now, &mut out);
        }
        Ok(out)
    }

    fn push(&mut self, snapshot: Snapshot, out: &mut Vec<Snapshot>) {
        if snapshot != self.last {
            self.last = snapshot.clone();
            out.push(snapshot);
        }
    }
}

/// 100 × done / total, to a tenth; 0 while the total is unknown.
fn percent(done: i64, total: i64) -> f64 {
    if total > 0 {
        (1000.0 * done.min(total) as f64 / total as f64).round() / 10.0
    } else {
        0.0
    }
}

/// Follows run `run_id`, calling `emit` with the first snapshot at once, then with each
/// one after, until the terminal one (which it returns). It only watches: workers do the
/// work.
pub async fn follow(
    store: &Store,
    run_id: i64,
    mut emit: impl FnMut(&Snapshot),
) -> Result<Snapshot, StoreError> {
    let mut follower = Follower::new(run_id);
    let run = store.run(run_id).await?;
    if run.status.is_finished() {
        // An ended run: its terminal snapshot alone, not its history replayed first.
        let last = Snapshot::of(&run, &store.stage_runs(run_id).await?);
        emit(&last);
        return Ok(last);
    }
    emit(follower.first());
    loop {
        for s in follower.next(store).await? {
            emit(&s);
            if s.terminal {
                return Ok(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until run `run_id` has ended and returns it. It only watches: workers do the work.
pub async fn until_ended(store: &Store, run_id: i64) -> Result<Run, StoreError> {
    loop {
        let run = store.run(run_id).await?;
        if run.status.is_finished() {
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
