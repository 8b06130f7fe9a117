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
    /// How far the whole run is, 0 to 100, in time: the time it has taken over that time
    /// plus what its stages should still take, by their seconds per item in recent runs of
    /// this repository (of any, when it has none; typical shares of the stages before any
    /// run). Never lower than an earlier snapshot of the same follower; 100 when the run
    /// succeeded.
    pub overall_percent: f64,
    /// Items of the stage at work done per second since it began (none before it did any).
    pub items_per_second: Option<f64>,
    /// Seconds the run should still take, by the same estimate.
    pub eta_seconds: Option<f64>,
}

/// The share of a run's time each stage takes, SYNC..ENRICH, summing to 1: how far a run
/// is when nothing has been measured yet (see [`StageCosts`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageWeights(pub [f64; 5]);

impl StageWeights {
    /// Typical shares of a first index on a small machine.
    pub const TYPICAL: StageWeights = StageWeights([0.10, 0.30, 0.10, 0.25, 0.25]);

    /// The run's percent when stage `ordinal` has done `done` of `total` (the earlier
    /// stages done, the later ones not begun).
    pub fn percent(&self, ordinal: usize, done: i64, total: i64) -> f64 {
        let before: f64 = self.0.iter().take(ordinal).sum();
        let within = if total > 0 {
            done.clamp(0, total) as f64 / total as f64
        } else {
            0.0
        };
        let w = self.0.get(ordinal).copied().unwrap_or(0.0);
        round1((before + w * within) * 100.0).clamp(0.0, 100.0)
    }
}

/// What stages cost in recent runs: per run, newest first, each stage's seconds and items.
/// A stage's seconds run from its predecessor's end (the run's start for SYNC) to its own,
/// so the five make the run's duration, hand-overs included.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StageCosts {
    pub runs: Vec<StageCost>,
}

/// How much a recent run's costs count against the run after it's.
const OLDER_RUN: f64 = 0.7;

/// What one run's stages cost, SYNC..ENRICH.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StageCost {
    pub seconds: [f64; 5],
    pub items: [f64; 5],
}

/// A stage as progress reads it.
#[derive(Debug, Clone, Copy)]
pub struct StageState {
    pub ended: bool,
    pub running: bool,
    pub done: i64,
    pub total: i64,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether a follower saw its reports, and then its items per second by them (see
    /// [`rate`]; none until it can tell): measured from its first batch, leaving out what
    /// it did before (loading a model, say).
    pub followed: bool,
    pub rate: Option<f64>,
}

impl StageState {
    fn of(s: &StageRun) -> StageState {
        StageState {
            ended: s.status.is_finished() && s.finished_at.is_some(),
            running: s.status == "running",
            done: i64::from(s.items_done),
            total: i64::from(s.items_total),
            finished_at: s.finished_at,
            followed: false,
            rate: None,
        }
    }
}

impl StageCosts {
    /// The costs of recent runs of `repository_id` with a scope like `scope` (the last
    /// ten that succeeded), else of any repository's; empty when none ran.
    pub async fn of(
        store: &Store,
        repository_id: i64,
        scope: &crate::domain::scope::Scope,
    ) -> Result<StageCosts, StoreError> {
        // The kind as stored (the scope's serde tag).
        let kind = scope.to_json()["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for repository in [Some(repository_id), None] {
            let runs: Vec<StageCost> = store
                .stage_costs(repository, &kind)
                .await?
                .into_iter()
                .map(|(seconds, items)| StageCost { seconds, items })
                .collect();
            if runs.iter().any(|r| r.seconds.iter().sum::<f64>() > 0.0) {
                return Ok(StageCosts { runs });
            }
        }
        Ok(StageCosts::default())
    }

    /// The weighted median over recent runs of what `of` says of a run (none where it
    /// says nothing): a run slowed by a passing load (another job, a checkpoint) does not
    /// move it. Each run is weighted by how recent it is (each run back counts
    /// [`OLDER_RUN`] of the one after it: the machine's load and the size of the vector
    /// index change) and by how close its files are to `files` (this run's, once EXTRACT
    /// knows them: the square of the smaller over the larger count, so a run ten times
    /// larger or smaller counts a hundredth; all alike before).
    fn median(&self, files: Option<i64>, of: impl Fn(&StageCost) -> Option<f64>) -> Option<f64> {
        let mut weighted: Vec<(f64, f64)> = Vec::new();
        for (back, run) in self.runs.iter().enumerate() {
            let Some(x) = of(run) else { continue };
            let recent = OLDER_RUN.powi(back as i32);
            let w = recent
                * match files {
                    Some(f) if f > 0 && run.items[1] > 0.0 => {
                        let (a, b) = (f as f64, run.items[1]);
                        (a.min(b) / a.max(b)).powi(2)
                    }
                    _ => 1.0,
                };
            weighted.push((x, w));
        }
        weighted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let half = weighted.iter().map(|(_, w)| w).sum::<f64>() / 2.0;
        let mut below = 0.0;
        for (i, (x, w)) in weighted.iter().enumerate() {
            below += w;
            if (below - half).abs() < 1e-12 {
                // Exactly half below: between this one and the next.
                return Some(weighted.get(i + 1).map_or(*x, |next| (x + next.0) / 2.0));
            }
            if below > half {
                return Some(*x);
            }
        }
        None
    }

    /// Seconds stage `s` should take: by its seconds per item in recent runs (those of a
    /// size like this run's counting most) and its items (its own total once known; else
    /// EXTRACT's files times its items per file in recent runs), or its median duration
    /// when items say nothing.
    fn estimate(&self, s: usize, total: Option<i64>, files: Option<i64>) -> f64 {
        let rate = self.median(files, |r| {
            (r.items[s] > 0.0).then(|| r.seconds[s] / r.items[s])
        });
        let per_file = || {
            self.median(files, |r| {
                (r.items[1] > 0.0).then(|| r.items[s] / r.items[1])
            })
        };
        let duration = || self.median(files, |r| Some(r.seconds[s])).unwrap_or(0.0);
        match (rate, total, files) {
            (Some(r), Some(n), _) => r * n as f64,
            (Some(r), None, Some(f)) => match per_file() {
                Some(k) => r * f as f64 * k,
                None => duration(),
            },
            _ => duration(),
        }
    }

    /// The run's overall percent and the seconds it should still take, at `now`, from
    /// its stages as they stood at `seen` (when they reported it; `now` or a little
    /// before): the time it has taken over that time plus what its stages should still
    /// take (the stage at work by its pace, blended with its estimate; those to come by
    /// their estimates), less what went by since `seen`. None when nothing was measured
    /// yet.
    pub fn progress(
        &self,
        run_started: Option<chrono::DateTime<chrono::Utc>>,
        stages: &[StageState],
        seen: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<(f64, f64)> {
        if self.runs.is_empty() {
            return None;
        }
        let started = run_started?;
        let secs = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
            ((b - a).num_milliseconds() as f64 / 1000.0).max(0.0)
        };
        let elapsed = secs(started, now);
        // EXTRACT's files, once it knows them: what later stages scale with.
        let files = stages
            .get(1)
            .filter(|x| (x.running || x.ended) && x.total > 0)
            .map(|x| x.total);
        // This run against its estimates so far: the stages that ended, by their items,
        // took `pace` times what recent runs foretold (a busier machine, heavier files),
        // and so should those to come, the more so the more of the run they make: a
        // short stage slowed by a passing load says little of a long one after it.
        // Each stage not ended by its estimate, by its own total once it runs with one.
        let estimates: Vec<f64> = stages
            .iter()
            .enumerate()
            .take(5)
            .map(|(i, st)| {
                let known = (st.running && st.total > 0).then_some(st.total);
                self.estimate(i, known, files)
            })
            .collect();
        let (mut actual, mut foretold, mut to_come) = (0.0, 0.0, 0.0);
        let mut at = started;
        let mut ended = true;
        for (i, st) in stages.iter().enumerate().take(5) {
            let end = st.finished_at.filter(|_| st.ended && ended);
            match end {
                Some(end) => {
                    if i > 0 && st.total > 0 {
                        actual += secs(at, end);
                        foretold += self.estimate(i, Some(st.total), files);
                    }
                    at = end;
                }
                None => {
                    ended = false;
                    to_come += estimates[i];
                }
            }
        }
        let pace = if foretold > 0.0 && actual > 0.0 {
            (actual / foretold)
                .clamp(0.25, 4.0)
                .powf(foretold / (foretold + to_come))
        } else {
            1.0
        };
        let mut prev_end = started;
        let mut remaining = 0.0;
        for (i, st) in stages.iter().enumerate().take(5) {
            if st.ended {
                prev_end = st.finished_at.unwrap_or(prev_end);
                continue;
            }
            let e = estimates[i] * pace;
            if st.running {
                let spent = secs(prev_end, seen);
                let frac = if st.total > 0 {
                    (st.done.clamp(0, st.total) as f64) / st.total as f64
                } else {
                    0.0
                };
                // Its own pace takes over from the estimate as it gets under way: wholly
                // once half of its items are done. The pace is its reports' when a
                // follower saw them (a model loading before its first batch is not the
                // pace of the items), else over all its time.
                let left = (st.total - st.done).max(0) as f64;
                let by_pace = if st.followed {
                    st.rate.map(|r| left / r)
                } else {
                    (frac > 0.0).then(|| spent * (1.0 - frac) / frac)
                };
                // By the estimate: what it should take less what it took (its time
                // includes the hand-over and loading a model, before any item is done),
                // but never less than a quarter of its share of the items left, for a
                // stage behind its time.
                let by_estimate = (e - spent).max(0.25 * e * (1.0 - frac));
                remaining += match by_pace {
                    Some(p) => {
                        let trust = (frac / 0.5).min(1.0);
                        trust * p + (1.0 - trust) * by_estimate
                    }
                    None => by_estimate,
                };
            } else {
                remaining += e;
            }
        }
        let remaining = (remaining - secs(seen, now)).max(0.0);
        let total = elapsed + remaining;
        let percent = if total > 0.0 {
            round1(100.0 * elapsed / total).clamp(0.0, 99.9)
        } else {
            0.0
        };
        Some((percent, round1(remaining)))
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The overall percent and ETA of `run` at `now` with stages as `states` showed them at
/// `seen`, by `costs`; by the typical weights of the stage at work, `current` (ordinal,
/// done, total), before any run was measured.
fn overall(
    costs: &StageCosts,
    run: &Run,
    states: &[StageState],
    current: (usize, i64, i64),
    (seen, now): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
) -> (f64, Option<f64>) {
    match costs.progress(run.started_at, states, seen, now) {
        Some((percent, left)) => (percent, Some(left)),
        None => {
            let p = StageWeights::TYPICAL.percent(current.0, current.1, current.2);
            (p, eta(run.started_at, p, now))
        }
    }
}

/// Items per second of a stage that began at `started` and has done `done` by `now`.
fn pace(
    started: Option<chrono::DateTime<chrono::Utc>>,
    done: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<f64> {
    let secs = (now - started?).num_milliseconds() as f64 / 1000.0;
    (done > 0 && secs > 0.0).then(|| (done as f64 / secs * 10.0).round() / 10.0)
}

/// Seconds left of a run that began at `started` and is `overall` percent done by `now`.
fn eta(
    started: Option<chrono::DateTime<chrono::Utc>>,
    overall: f64,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<f64> {
    let secs = (now - started?).num_milliseconds() as f64 / 1000.0;
    ((1.0..100.0).contains(&overall) && secs > 0.0)
        .then(|| ((secs * (100.0 - overall) / overall) * 10.0).round() / 10.0)
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
            overall_percent: 0.0,
            items_per_second: None,
            eta_seconds: None,
        }
    }

    /// The snapshot of run `run` now, its stages and the costs of recent runs read from
    /// `store`.
    pub async fn load(store: &Store, run: &Run) -> Result<Snapshot, StoreError> {
        let stages = store.stage_runs(run.id).await?;
        let costs = StageCosts::of(store, run.repository_id, &run.scope).await?;
        Ok(Snapshot::of(run, &stages, &costs))
    }

    /// The snapshot of a run in the state `run` and `stages` show, its overall percent and
    /// ETA by `costs`.
    pub fn of(run: &Run, stages: &[StageRun], costs: &StageCosts) -> Snapshot {
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
        let now = chrono::Utc::now();
        let states: Vec<StageState> = stages.iter().map(StageState::of).collect();
        let (percent, (overall, eta_seconds)) = if run.status == "succeeded" {
            (100.0, (100.0, None))
        } else {
            // A stage that succeeded or was skipped is whole, whatever its counts.
            let whole = matches!(stage.status.as_str(), "succeeded" | "skipped");
            let (d, t) = if whole { (1, 1) } else { (done, total) };
            (
                percent(done, total),
                overall(
                    costs,
                    run,
                    &states,
                    (stage.ordinal as usize, d, t),
                    (now, now),
                ),
            )
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
            overall_percent: overall,
            items_per_second: if terminal {
                None
            } else {
                pace(stage.started_at, done, now)
            },
            eta_seconds: if terminal { None } else { eta_seconds },
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
    /// Loaded on the first look.
    costs: Option<StageCosts>,
    /// Per stage ordinal, when it reported items done, and how many, oldest first.
    reported: [Vec<(chrono::DateTime<chrono::Utc>, i64)>; 5],
}

impl Follower {
    /// A follower whose first snapshot, `preparing_index`, is [`Follower::first`].
    pub fn new(run_id: i64) -> Follower {
        Follower {
            run_id,
            after_event: 0,
            last: Snapshot::preparing(run_id),
            costs: None,
            reported: Default::default(),
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
        let costs = StageCosts::of(store, run.repository_id, &run.scope).await?;
        Ok(Follower {
            run_id,
            after_event,
            last: Snapshot::of(&run, &stages, &costs),
            costs: Some(costs),
            reported: Default::default(),
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
        let costs = match &self.costs {
            Some(c) => c.clone(),
            None => {
                let c = StageCosts::of(store, run.repository_id, &run.scope).await?;
                self.costs.insert(c).clone()
            }
        };
        let mut out = Vec::new();
        let now = chrono::Utc::now();
        for e in store.progress_events(self.run_id, self.after_event).await? {
            self.after_event = e.id;
            let (done, total) = (i64::from(e.items_done), i64::from(e.items_total));
            let stage = stages.iter().find(|s| s.stage == e.stage);
            let ordinal = stage.map_or(0, |s| s.ordinal as usize);
            if done > 0 && ordinal < 5 {
                self.reported[ordinal].push((e.at, done));
            }
            // The run as it stood at this event: the stages before done, this one at
            // work with the event's counts, the later ones not begun.
            let states: Vec<StageState> = stages
                .iter()
                .map(|s| {
                    let mut st = StageState::of(s);
                    st.followed = true;
                    match (s.ordinal as usize).cmp(&ordinal) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => {
                            (st.ended, st.running, st.done, st.total) = (false, true, done, total);
                            st.rate = self.reported.get(ordinal).and_then(|r| rate(r));
                        }
                        std::cmp::Ordering::Greater => {
                            (st.ended, st.running, st.done, st.total) = (false, false, 0, 0)
                        }
                    }
                    st
                })
                .collect();
            let (overall, eta_seconds) =
                overall(&costs, &run, &states, (ordinal, done, total), (e.at, now));
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
                overall_percent: overall,
                items_per_second: pace(stage.and_then(|s| s.started_at), done, e.at),
                eta_seconds,
            };
            self.push(snapshot, &mut out);
        }
        let now = Snapshot::of(&run, &stages, &costs);
        if now.terminal || now.status != self.last.status {
            self.push(now, &mut out);
        }
        Ok(out)
    }

    fn push(&mut self, mut snapshot: Snapshot, out: &mut Vec<Snapshot>) {
        // The overall percent never goes back (a later stage's total may come out larger
        // than the weights foresaw; a stage's start reads 0 of an unknown total).
        if snapshot.overall_percent < self.last.overall_percent {
            snapshot.overall_percent = self.last.overall_percent;
            snapshot.eta_seconds = snapshot.eta_seconds.and(self.last.eta_seconds);
        }
        if snapshot != self.last {
            self.last = snapshot.clone();
            out.push(snapshot);
        }
    }
}

/// A stage's items per second by what it `reported` (when, and its count then; oldest
/// first): the slope of a least-squares line through its reports over the latter half of
/// its count so far (from the last report at most half-way from its first count to its
/// latest). The latter half, so the pace follows a stage that speeds up or slows down as
/// it goes (its first pages waiting on a model or a busy database) rather than its mean
/// since the start; a line through them all, not the two ends, so pages that land in
/// pairs (two in flight at once) do not make it jump. None before two reports a moment
/// apart.
fn rate(reported: &[(chrono::DateTime<chrono::Utc>, i64)]) -> Option<f64> {
    let (first, latest) = (reported.first()?.1, reported.last()?.1);
    let half = first + (latest - first) / 2;
    let from = reported.iter().rposition(|(_, d)| *d <= half)?;
    let window = &reported[from..];
    let t0 = window[0].0;
    let points: Vec<(f64, f64)> = window
        .iter()
        .map(|(t, d)| ((*t - t0).as_seconds_f64(), *d as f64))
        .collect();
    let n = points.len() as f64;
    let (mt, md) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let var: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    let cov: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - md)).sum();
    (var > 1e-6 && cov > 0.0).then(|| cov / var)
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
        let last = Snapshot::load(store, &run).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_weights_count_each_stage_by_its_share() {
        let w = StageWeights([0.1, 0.3, 0.1, 0.4, 0.1]);
        assert_eq!(w.percent(0, 0, 0), 0.0);
        // Half of EXTRACT: SYNC's 10 and half of EXTRACT's 30.
        assert_eq!(w.percent(1, 50, 100), 25.0);
        // An unknown total counts as nothing of the stage done yet.
        assert_eq!(w.percent(3, 7, 0), 50.0);
        // A count past its total (a total that grew) is the whole stage, no more.
        assert_eq!(w.percent(4, 12, 10), 100.0);
        assert!((StageWeights::TYPICAL.0.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    fn state(ended: bool, running: bool, done: i64, total: i64, at: Option<i64>) -> StageState {
        let t0 = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        StageState {
            ended,
            running,
            done,
            total,
            finished_at: at.map(|s| t0 + chrono::Duration::seconds(s)),
            followed: false,
            rate: None,
        }
    }

    #[test]
    fn the_overall_percent_is_time_taken_over_time_taken_plus_time_left() {
        let t0 = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        // Recent runs: 1 s SYNC, 0.01 s per file of EXTRACT and BM25, 0.002 s per snippet
        // embedded and enriched, 10 snippets per file; two runs of 100 files.
        let run = StageCost {
            seconds: [1.0, 1.0, 1.0, 2.0, 2.0],
            items: [0.0, 100.0, 100.0, 1000.0, 1000.0],
        };
        let costs = StageCosts {
            runs: vec![run, run],
        };
        assert_eq!(
            StageCosts::default().progress(Some(t0), &[], at(1), at(1)),
            None
        );
        // A run of 300 files, SYNC done after 1 s, EXTRACT half done 1.5 s later: it
        // should take 1 + 3 + 3 + 6 + 6 = 19 s.
        let stages = [
            state(true, false, 0, 0, Some(1)),
            state(false, true, 150, 300, None),
            state(false, false, 0, 0, None),
            state(false, false, 0, 0, None),
            state(false, false, 0, 0, None),
        ];
        let seen = at(2) + chrono::Duration::milliseconds(500);
        let (percent, left) = costs.progress(Some(t0), &stages, seen, seen).unwrap();
        assert!((percent - 2.5 / 19.0 * 100.0).abs() < 0.2, "{percent}");
        assert!((left - 16.5).abs() < 0.2, "{left}");
        // The same state read half a second after it was reported: half a second less
        // to go, and further along.
        let later = seen + chrono::Duration::milliseconds(500);
        let (further, less) = costs.progress(Some(t0), &stages, seen, later).unwrap();
        assert!((less - 16.0).abs() < 0.2, "{less}");
        assert!((further - 3.0 / 19.0 * 100.0).abs() < 0.2, "{further}");
        // CODE_EMBEDDINGS begun, its total not known yet: estimated from EXTRACT's files,
        // as recent runs scale.
        let stages = [
            state(true, false, 0, 0, Some(1)),
            state(true, false, 300, 300, Some(4)),
            state(true, false, 300, 300, Some(7)),
            state(false, true, 0, 0, None),
            state(false, false, 0, 0, None),
        ];
        let (percent, _) = costs.progress(Some(t0), &stages, at(7), at(7)).unwrap();
        assert!(percent > 30.0 && percent < 100.0, "{percent}");
        // Never 100 before the run has ended.
        let stages = [
            state(true, false, 0, 0, Some(1)),
            state(true, false, 1, 1, Some(2)),
            state(true, false, 1, 1, Some(3)),
            state(true, false, 1, 1, Some(4)),
            state(false, true, 10, 10, None),
        ];
        assert!(costs.progress(Some(t0), &stages, at(60), at(60)).unwrap().0 < 100.0);
    }

    #[test]
    fn recent_runs_of_a_size_like_this_runs_count_most_and_one_slowed_run_not_at_all() {
        let t0 = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        // A run of 300 files embedded at 1 ms a snippet; one of 3,000 (ten times larger)
        // on a slower day at 3 ms. Summed alike, the large one would say 2.8 ms.
        let small = StageCost {
            seconds: [0.1, 0.3, 0.3, 7.5, 0.5],
            items: [0.0, 300.0, 300.0, 7500.0, 7500.0],
        };
        let large = StageCost {
            seconds: [1.0, 3.0, 3.0, 225.0, 5.0],
            items: [0.0, 3000.0, 3000.0, 75000.0, 75000.0],
        };
        let costs = StageCosts {
            runs: vec![small, large],
        };
        let e = costs.estimate(3, Some(7500), Some(300));
        assert!((7.5..8.5).contains(&e), "{e}");
        let e = costs.estimate(3, Some(75000), Some(3000));
        assert!((200.0..226.0).contains(&e), "{e}");
        // Before EXTRACT knows the files, by recency alone: the newer run counts 1, the
        // older 0.7, and the median is the newer one's.
        assert_eq!(costs.estimate(0, None, None), 0.1);
        // A run slowed four times over between two like it does not move the estimate.
        let slowed = StageCost {
            seconds: [0.1, 0.3, 0.3, 30.0, 0.5],
            ..small
        };
        let costs = StageCosts {
            runs: vec![small, slowed, small],
        };
        assert_eq!(costs.estimate(3, Some(7500), Some(300)), 7.5);
        // A stage whose first batches arrive in one look: its pace is not measured over
        // no time (which would say it is done at once).
        let mut embedding = state(false, true, 1024, 7500, None);
        embedding.followed = true;
        embedding.rate = rate(&[(at(2), 256), (at(2), 512), (at(2), 768), (at(2), 1024)]);
        let stages = [
            state(true, false, 0, 0, Some(0)),
            state(true, false, 300, 300, Some(1)),
            state(true, false, 300, 300, Some(2)),
            embedding,
            state(false, false, 0, 0, None),
        ];
        let (_, left) = costs.progress(Some(t0), &stages, at(2), at(2)).unwrap();
        assert!(left > 5.0, "{left}");
    }

    #[test]
    fn a_stages_pace_is_a_line_through_the_latter_half_of_what_it_reported() {
        let t0 = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
        assert_eq!(rate(&[]), None);
        assert_eq!(rate(&[(at(0), 256)]), None);
        // A stage that waited 2 s on its second page, then did one every 100 ms.
        let reported = [
            (at(0), 256),
            (at(2000), 512),
            (at(2100), 768),
            (at(2200), 1024),
            (at(2300), 1280),
        ];
        let r = rate(&reported).unwrap();
        assert!((r - 2560.0).abs() < 1.0, "{r}");
        // Pages landing in pairs: the line through them, not the last pair's gap.
        let paired = [
            (at(0), 256),
            (at(200), 512),
            (at(201), 768),
            (at(400), 1024),
            (at(401), 1280),
            (at(600), 1536),
            (at(601), 1792),
        ];
        let r = rate(&paired).unwrap();
        assert!((1900.0..3300.0).contains(&r), "{r}");
        // Half of 2,560 items done, 1,280 left at 256 per 100 ms: 0.5 s, not the 2.9 s its
        // mean since the first page would say.
        let mut embedding = state(false, true, 1280, 2_560, None);
        embedding.followed = true;
        embedding.rate = rate(&reported);
        let costs = StageCosts {
            runs: vec![StageCost {
                seconds: [0.0, 1.0, 1.0, 5.0, 0.0],
                items: [0.0, 100.0, 100.0, 10_000.0, 0.0],
            }],
        };
        let stages = [
            state(true, false, 0, 0, Some(0)),
            state(true, false, 100, 100, Some(0)),
            state(true, false, 100, 100, Some(0)),
            embedding,
            state(false, false, 0, 0, None),
        ];
        let (_, left) = costs
            .progress(Some(t0), &stages, at(2300), at(2300))
            .unwrap();
        assert!((left - 0.5).abs() < 0.1, "{left}");
    }

    #[test]
    fn the_eta_follows_the_pace_so_far() {
        let start = chrono::Utc::now();
        let now = start + chrono::Duration::seconds(10);
        // A quarter done in 10 s: 30 s to go.
        assert_eq!(eta(Some(start), 25.0, now), Some(30.0));
        assert_eq!(eta(Some(start), 0.5, now), None, "too early to tell");
        assert_eq!(eta(Some(start), 100.0, now), None);
        assert_eq!(eta(None, 50.0, now), None);
        assert_eq!(pace(Some(start), 250, now), Some(25.0));
        assert_eq!(pace(Some(start), 0, now), None);
    }
}
