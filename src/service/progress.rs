//! The progress of a run as a stream of snapshots: the first at once (`preparing_index`),
//! then one per stage change and per batch, then a terminal one. `trawl reindex --wait
//! --json` and `trawl runs watch --json` print them as NDJSON; the HTTP API will stream the
//! same.

use std::time::Duration;

use serde::Serialize;

use crate::store::runs::{Run, StageRun};
use crate::store::{Store, StoreError};

/// One snapshot of a run's progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub run_id: i64,
    /// running (queued runs too: they are being prepared), succeeded, failed or cancelled.
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
        let terminal = run.run_status().is_finished();
        // The stage at work; else the last one that did anything.
        let current = stages
            .iter()
            .find(|s| s.status == "running")
            .or_else(|| stages.iter().rev().find(|s| s.started_at.is_some()));
        let Some(stage) = current else {
            // Not started: still preparing (queued for a worker), or over before it began.
            if !terminal {
                return Snapshot::preparing(run.id);
            }
            return Snapshot {
                status: run.status.clone(),
                error: run.error.clone(),
                terminal,
                ..Snapshot::preparing(run.id)
            };
        };
        let (done, total) = (i64::from(stage.items_done), i64::from(stage.items_total));
        let percent = if run.status == "succeeded" {
            100.0
        } else if total > 0 {
            (1000.0 * done.min(total) as f64 / total as f64).round() / 10.0
        } else {
            0.0
        };
        Snapshot {
            run_id: run.id,
            status: run.status.clone(),
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

/// Follows run `run_id`, calling `emit` with the first snapshot at once, then with each
/// that differs from the last, until the terminal one (which it returns). It only
/// watches: workers do the work.
pub async fn follow(
    store: &Store,
    run_id: i64,
    mut emit: impl FnMut(&Snapshot),
) -> Result<Snapshot, StoreError> {
    let run = store.run(run_id).await?;
    let mut last = Snapshot::preparing(run_id);
    if !run.run_status().is_finished() {
        emit(&last);
    }
    loop {
        let run = store.run(run_id).await?;
        let stages = store.stage_runs(run_id).await?;
        let now = Snapshot::of(&run, &stages);
        if now != last {
            emit(&now);
            last = now;
        }
        if last.terminal {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
