//! The lifecycle of a run: its status, its five stages' statuses and their queue jobs', and
//! every event that moves them, as one pure function ([`RunState::apply`]).
//!
//! This is the specification. The store carries it out in SQL (`src/store/lifecycle.sql`,
//! one function per event, each one transaction under the run's or the stage's row lock),
//! and a property test drives random event sequences through both and compares the states
//! after every step (`tests/lifecycle.rs`). The table below is generated from this module's
//! tests and kept in docs/ARCHITECTURE.md.
//!
//! | event | allowed when | run | stages | jobs |
//! |---|---|---|---|---|
//! | begin *s* (a worker claimed *s*'s job) | the job is pending or failed and due | queued → running | *s* → running, when the run is queued or running and *s*'s predecessor succeeded; else *s* → waiting (parked) | claimed; parked when waiting; done when the run or *s* is over |
//! | succeed *s* | *s* is running (else ignored) | succeeded after the last stage, or at once when up to date | *s* → succeeded; the next stage → queued (unless the run is paused); all later → skipped when up to date | *s* done; the next one pending |
//! | retry *s* (a retryable failure) | *s* is running (else ignored) | — | *s* → queued (waiting in a paused run) | failed, due after the backoff (parked in a paused run) |
//! | fail *s* (for good) | *s* is open (else ignored) | → failed | *s* → failed; the other open stages → cancelled | killed |
//! | stop *s* (between batches, run paused or cancelled) | *s*'s job is claimed | — | running *s* → waiting (paused run) or queued (running run) | parked, pending, or killed (run over) |
//! | abandon *s* (its worker stopped or died) | *s*'s job is claimed | — | — | pending |
//! | pause | the run is queued or running | → paused | queued or waiting → waiting (a running stage stops after its batch) | parked |
//! | resume | the run is paused | → running (queued if it never started) | the first open stage → queued, if waiting | pending |
//! | cancel, cancel task *s* | the run is open (cancel task: *s* is open) | → cancelled | open → cancelled | killed |
//! | retry task *s* | *s* failed or was cancelled | → running (queued if it never started) | from the first stage that did not succeed (at or before *s*): that one → queued, the later failed or cancelled → waiting | pending; parked |
//!
//! "Open" is queued, waiting or running. A finished run has no open stage and no job left in
//! the queue, and an open run can always end: [`RunState::can_end`] checks it by playing
//! workers and resumes forward, and the property test asks it after every sequence.

use serde::{Deserialize, Serialize};

use super::{RunStatus, Stage, StageStatus};

/// A queue job's status, in apalis' words (`apalis.jobs.status`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    sqlx::Type,
)]
#[sqlx(type_name = "text")]
pub enum JobStatus {
    /// In the queue, due at its `run_at`.
    Pending,
    /// Claimed by a worker (`lock_by` names it).
    Queued,
    /// apalis' word for a job at work; trawl's workers keep theirs `Queued`, but apalis'
    /// orphan rescue reads both.
    Running,
    /// Parked: its stage waits for its predecessor or for a resume. apalis never fetches it.
    Waiting,
    /// An attempt failed; back in the queue after the backoff.
    Failed,
    Done,
    /// Ended without success: failed for good or cancelled.
    Killed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Waiting,
        JobStatus::Failed,
        JobStatus::Done,
        JobStatus::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "Pending",
            JobStatus::Queued => "Queued",
            JobStatus::Running => "Running",
            JobStatus::Waiting => "Waiting",
            JobStatus::Failed => "Failed",
            JobStatus::Done => "Done",
            JobStatus::Killed => "Killed",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// A worker may claim it (a failed one once its backoff has passed).
    pub fn is_claimable(self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Failed)
    }

    /// A worker holds it.
    pub fn is_claimed(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    pub fn is_closed(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Killed)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The statuses a task filter takes: every stage status, then the job statuses a stage
/// status does not already name (lower-cased, as `trawl tasks list --status` and
/// `/api/v1/tasks?status=` take them).
pub const TASK_STATUSES: &[&str] = &[
    "queued",
    "waiting",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
    "pending",
    "done",
    "killed",
];

/// Something that happens to a run: a worker's report on a stage it holds, or an operator's
/// action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", content = "stage", rename_all = "snake_case")]
pub enum Event {
    /// A worker claimed the stage's job and begins it.
    Begin(Stage),
    /// The stage did its work.
    Succeed(Stage),
    /// SYNC found nothing changed: the later stages are skipped.
    SucceedUpToDate(Stage),
    /// An attempt failed and attempts are left.
    Retry(Stage),
    /// Failed for good.
    Fail(Stage),
    /// The stage stopped between batches (its run was paused or cancelled).
    Stop(Stage),
    /// The worker holding the stage's job stopped or died: the job goes back to the queue.
    Abandon(Stage),
    Pause,
    Resume,
    Cancel,
    /// An operator retries one stage (`trawl tasks retry`).
    RetryTask(Stage),
    /// An operator cancels one stage, and so its run (`trawl tasks cancel`).
    CancelTask(Stage),
    /// Another run of the repository took the repository's lease, which was free.
    LeaseTaken,
    /// The run holding the repository's lease ended: the lease is free, and a stage that
    /// waited for it goes back to the queue.
    LeaseFreed,
}

impl Event {
    /// The operator's word for the action (used in refusals).
    pub fn action(self) -> &'static str {
        match self {
            Event::Begin(_) => "begin",
            Event::Succeed(_) | Event::SucceedUpToDate(_) => "complete",
            Event::Retry(_) => "retry the attempt of",
            Event::Fail(_) => "fail",
            Event::Stop(_) => "stop",
            Event::Abandon(_) => "abandon",
            Event::Pause => "pause",
            Event::Resume => "resume",
            Event::Cancel => "cancel",
            Event::RetryTask(_) => "retry",
            Event::CancelTask(_) => "cancel",
            Event::LeaseTaken => "take",
            Event::LeaseFreed => "free",
        }
    }
}

/// What a worker does with a stage job it claimed, as [`Event::Begin`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeginOutcome {
    /// Do the stage's work.
    Proceed,
    /// The predecessor has not succeeded or the run is paused: the job was parked again
    /// (or, if it can run after all, put back in the queue), no attempt spent.
    Wait,
    /// The run or the stage is over: the job was closed.
    Nothing,
}

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Begun(BeginOutcome),
    Applied,
    /// A worker's report on a stage that is no longer its to report on (an operator
    /// cancelled it meanwhile): nothing changes.
    Ignored,
}

/// Why an event was refused: it does not apply to the run or the stage as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} {what}: it is {status} (only {allowed} can be)")]
pub struct Refused {
    pub action: &'static str,
    /// "the run" or "stage <name>".
    pub what: String,
    pub status: &'static str,
    pub allowed: &'static str,
}

/// Who holds the lease of the run's repository (`repositories.lease_run_id`): at most one
/// run of a repository works at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lease {
    Free,
    /// This run: taken when a stage of it began, kept until the run ends.
    Mine,
    /// Another run of the repository.
    Other,
}

impl Lease {
    pub fn as_str(self) -> &'static str {
        match self {
            Lease::Free => "free",
            Lease::Mine => "held by this run",
            Lease::Other => "held by another run",
        }
    }
}

/// A run's status with its stages' and their jobs' statuses, by ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunState {
    pub run: RunStatus,
    pub stages: [StageStatus; 5],
    pub jobs: [JobStatus; 5],
    /// A stage of it has begun once (`runs.started_at` is set).
    pub started: bool,
    pub lease: Lease,
}

impl RunState {
    /// A new run: SYNC queued, the rest waiting with their jobs parked.
    pub fn new() -> RunState {
        let mut stages = [StageStatus::Waiting; 5];
        let mut jobs = [JobStatus::Waiting; 5];
        stages[0] = StageStatus::Queued;
        jobs[0] = JobStatus::Pending;
        RunState {
            run: RunStatus::Queued,
            stages,
            jobs,
            started: false,
            lease: Lease::Free,
        }
    }

    fn stage(&self, s: Stage) -> StageStatus {
        self.stages[s.ordinal() as usize]
    }

    /// The stage's predecessor succeeded, or it has none.
    pub fn predecessor_done(&self, s: Stage) -> bool {
        s.previous()
            .is_none_or(|p| self.stage(p) == StageStatus::Succeeded)
    }

    /// The first stage not yet finished.
    pub fn first_open(&self) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| is_open(self.stage(*s)))
    }

    /// Applies `event`: the state after it and what it did, or why it does not apply.
    pub fn apply(&self, event: Event) -> Result<(RunState, Outcome), Refused> {
        let mut n = *self;
        let outcome = match event {
            Event::Begin(s) => {
                let i = s.ordinal() as usize;
                if !self.jobs[i].is_claimable() {
                    return Err(refuse_stage(
                        event,
                        s,
                        self.jobs[i].as_str(),
                        "a queued job",
                    ));
                }
                n.begin(s)
            }
            Event::Succeed(s) | Event::SucceedUpToDate(s) => {
                if self.stage(s) != StageStatus::Running {
                    return Ok((n, Outcome::Ignored));
                }
                n.succeed(s, matches!(event, Event::SucceedUpToDate(_)));
                Outcome::Applied
            }
            Event::Retry(s) => {
                if self.stage(s) != StageStatus::Running {
                    return Ok((n, Outcome::Ignored));
                }
                // Back to the queue after the backoff; parked instead in a paused run.
                if self.run == RunStatus::Paused {
                    n.set(s, StageStatus::Waiting, JobStatus::Waiting);
                } else {
                    n.set(s, StageStatus::Queued, JobStatus::Failed);
                }
                Outcome::Applied
            }
            Event::Fail(s) => {
                if !is_open(self.stage(s)) {
                    return Ok((n, Outcome::Ignored));
                }
                n.set(s, StageStatus::Failed, JobStatus::Killed);
                n.cancel_open();
                n.run = RunStatus::Failed;
                Outcome::Applied
            }
            Event::Stop(s) => {
                let i = s.ordinal() as usize;
                // Only a job still claimed is the stopping worker's: an operator may have
                // cancelled and retried the stage meanwhile.
                if !self.jobs[i].is_claimed() {
                    return Ok((n, Outcome::Ignored));
                }
                let running = self.stages[i] == StageStatus::Running;
                match self.run {
                    RunStatus::Paused => {
                        if running {
                            n.stages[i] = StageStatus::Waiting;
                        }
                        n.jobs[i] = JobStatus::Waiting;
                    }
                    RunStatus::Queued | RunStatus::Running => {
                        if running {
                            n.stages[i] = StageStatus::Queued;
                        }
                        n.jobs[i] = JobStatus::Pending;
                    }
                    _ => n.jobs[i] = JobStatus::Killed,
                }
                Outcome::Applied
            }
            Event::Abandon(s) => {
                let i = s.ordinal() as usize;
                if !self.jobs[i].is_claimed() {
                    return Ok((n, Outcome::Ignored));
                }
                n.jobs[i] = JobStatus::Pending;
                Outcome::Applied
            }
            Event::Pause => {
                run_allows(event, self.run)?;
                n.run = RunStatus::Paused;
                for i in 0..5 {
                    if matches!(n.stages[i], StageStatus::Queued | StageStatus::Waiting) {
                        n.stages[i] = StageStatus::Waiting;
                        if matches!(
                            n.jobs[i],
                            JobStatus::Pending | JobStatus::Failed | JobStatus::Waiting
                        ) {
                            n.jobs[i] = JobStatus::Waiting;
                        }
                    }
                }
                Outcome::Applied
            }
            Event::Resume => {
                run_allows(event, self.run)?;
                n.run = n.reopened();
                if let Some(s) = n.first_open()
                    && n.stage(s) == StageStatus::Waiting
                    && n.predecessor_done(s)
                {
                    n.release(s);
                }
                Outcome::Applied
            }
            Event::Cancel => {
                run_allows(event, self.run)?;
                n.cancel_open();
                n.run = RunStatus::Cancelled;
                Outcome::Applied
            }
            Event::CancelTask(s) => {
                stage_allows(event, s, self.stage(s))?;
                n.cancel_open();
                n.run = RunStatus::Cancelled;
                Outcome::Applied
            }
            Event::RetryTask(s) => {
                stage_allows(event, s, self.stage(s))?;
                // From the first stage that did not succeed: retrying a later one alone
                // would leave it waiting for a predecessor that never runs.
                let from = Stage::ALL
                    .into_iter()
                    .find(|x| self.stage(*x) != StageStatus::Succeeded)
                    .unwrap_or(s);
                for x in Stage::ALL.into_iter().filter(|x| *x >= from) {
                    if matches!(n.stage(x), StageStatus::Failed | StageStatus::Cancelled) {
                        if x == from {
                            n.set(x, StageStatus::Queued, JobStatus::Pending);
                        } else {
                            n.set(x, StageStatus::Waiting, JobStatus::Waiting);
                        }
                    }
                }
                n.run = n.reopened();
                Outcome::Applied
            }
            Event::LeaseTaken => {
                if self.lease != Lease::Free {
                    return Err(refuse_lease(event, self.lease, "a free lease"));
                }
                n.lease = Lease::Other;
                Outcome::Applied
            }
            Event::LeaseFreed => {
                if self.lease != Lease::Other {
                    return Err(refuse_lease(event, self.lease, "a lease another run holds"));
                }
                n.lease = Lease::Free;
                if matches!(self.run, RunStatus::Queued | RunStatus::Running)
                    && let Some(s) = n.first_open()
                    && n.stage(s) == StageStatus::Waiting
                    && n.predecessor_done(s)
                {
                    n.release(s);
                }
                Outcome::Applied
            }
        };
        // A run gives its lease up when it ends.
        if n.run.is_finished() && n.lease == Lease::Mine {
            n.lease = Lease::Free;
        }
        Ok((n, outcome))
    }

    fn set(&mut self, s: Stage, stage: StageStatus, job: JobStatus) {
        let i = s.ordinal() as usize;
        self.stages[i] = stage;
        self.jobs[i] = job;
    }

    /// A paused or finished run going on: running once it has begun, else queued.
    fn reopened(&self) -> RunStatus {
        if self.started {
            RunStatus::Running
        } else {
            RunStatus::Queued
        }
    }

    /// A stage begins when it is open, its predecessor succeeded, its run is open and not
    /// paused, and no other run of the repository holds the lease (the run takes it);
    /// otherwise it waits, parked, until its predecessor's success, the resume or the
    /// lease's release puts it back in the queue.
    fn begin(&mut self, s: Stage) -> Outcome {
        let i = s.ordinal() as usize;
        if self.run.is_finished() || !is_open(self.stages[i]) {
            self.jobs[i] = JobStatus::Done;
            return Outcome::Begun(BeginOutcome::Nothing);
        }
        let open_run = matches!(self.run, RunStatus::Queued | RunStatus::Running);
        if self.predecessor_done(s) && open_run && self.lease != Lease::Other {
            self.set(s, StageStatus::Running, JobStatus::Queued);
            self.run = RunStatus::Running;
            self.started = true;
            self.lease = Lease::Mine;
            return Outcome::Begun(BeginOutcome::Proceed);
        }
        self.set(s, StageStatus::Waiting, JobStatus::Waiting);
        Outcome::Begun(BeginOutcome::Wait)
    }

    fn succeed(&mut self, s: Stage, up_to_date: bool) {
        self.set(s, StageStatus::Succeeded, JobStatus::Done);
        if up_to_date {
            for x in Stage::ALL.into_iter().filter(|x| *x > s) {
                self.set(x, StageStatus::Skipped, JobStatus::Done);
            }
            self.run = RunStatus::Succeeded;
            return;
        }
        match s.next() {
            None => self.run = RunStatus::Succeeded,
            Some(next) => {
                if self.stage(next) == StageStatus::Waiting && self.run != RunStatus::Paused {
                    self.release(next);
                }
            }
        }
    }

    /// The stage goes back to the queue, its job due now.
    fn release(&mut self, s: Stage) {
        let i = s.ordinal() as usize;
        self.stages[i] = StageStatus::Queued;
        if matches!(
            self.jobs[i],
            JobStatus::Waiting | JobStatus::Pending | JobStatus::Failed
        ) {
            self.jobs[i] = JobStatus::Pending;
        }
    }

    /// Every open stage cancelled, its job killed.
    fn cancel_open(&mut self) {
        for i in 0..5 {
            if is_open(self.stages[i]) {
                self.stages[i] = StageStatus::Cancelled;
                if !self.jobs[i].is_closed() {
                    self.jobs[i] = JobStatus::Killed;
                }
            }
        }
    }

    /// The rules every state keeps; the first broken one, named.
    pub fn check(&self) -> Result<(), String> {
        let open: Vec<usize> = (0..5).filter(|&i| is_open(self.stages[i])).collect();
        if self.lease == Lease::Mine && (self.run.is_finished() || !self.started) {
            return Err(format!(
                "a {} run that {} begun holds the lease",
                self.run.as_str(),
                if self.started { "has" } else { "never" }
            ));
        }
        if self.lease != Lease::Mine && self.stages.contains(&StageStatus::Running) {
            return Err(format!(
                "a stage runs while the lease is {}: {:?}",
                self.lease.as_str(),
                self.stages
            ));
        }
        if self.run.is_finished() {
            if !open.is_empty() {
                return Err(format!(
                    "a {} run has open stages {open:?}",
                    self.run.as_str()
                ));
            }
            if let Some(i) = (0..5).find(|&i| !self.jobs[i].is_closed()) {
                return Err(format!(
                    "a finished run's job {i} is still {}",
                    self.jobs[i].as_str()
                ));
            }
            return Ok(());
        }
        // An open run: stages succeed in order, then one is active and the rest wait.
        let first = open
            .first()
            .copied()
            .ok_or_else(|| format!("a {} run has no open stage", self.run.as_str()))?;
        if (0..first).any(|i| self.stages[i] != StageStatus::Succeeded) {
            return Err(format!(
                "stages before {first} did not all succeed: {:?}",
                self.stages
            ));
        }
        if (first + 1..5).any(|i| self.stages[i] != StageStatus::Waiting) {
            return Err(format!(
                "stages after {first} are not all waiting: {:?}",
                self.stages
            ));
        }
        if (first + 1..5).any(|i| self.jobs[i] != JobStatus::Waiting) {
            return Err(format!(
                "jobs after {first} are not all parked: {:?}",
                self.jobs
            ));
        }
        let job = self.jobs[first];
        let consistent = match self.stages[first] {
            StageStatus::Queued => job.is_claimable() && self.run != RunStatus::Paused,
            StageStatus::Running => job.is_claimed() || job == JobStatus::Pending,
            // Waiting: for the resume, or for the lease another run holds.
            _ => {
                job == JobStatus::Waiting
                    && (self.run == RunStatus::Paused || self.lease == Lease::Other)
            }
        };
        if !consistent {
            return Err(format!(
                "a {} run's first open stage is {} with its job {}",
                self.run.as_str(),
                self.stages[first].as_str(),
                job.as_str()
            ));
        }
        Ok(())
    }

    /// The run can end: resumed if paused, with its claimed jobs abandoned, workers taking
    /// whatever is in the queue and succeeding at it bring it to an end.
    pub fn can_end(&self) -> bool {
        let mut s = *self;
        for x in Stage::ALL {
            if s.jobs[x.ordinal() as usize].is_claimed() {
                s = s.apply(Event::Abandon(x)).map(|r| r.0).unwrap_or(s);
            }
        }
        if s.run == RunStatus::Paused {
            s = s.apply(Event::Resume).map(|r| r.0).unwrap_or(s);
        }
        // The other run holding the lease ends.
        if s.lease == Lease::Other {
            s = s.apply(Event::LeaseFreed).map(|r| r.0).unwrap_or(s);
        }
        // Each stage is begun at most twice (a wait, then a start) before it succeeds.
        for _ in 0..20 {
            if s.run.is_finished() {
                return true;
            }
            let Some(x) = Stage::ALL
                .into_iter()
                .find(|x| s.jobs[x.ordinal() as usize].is_claimable())
            else {
                return false;
            };
            s = match s.apply(Event::Begin(x)) {
                Ok((b, Outcome::Begun(BeginOutcome::Proceed))) => {
                    b.apply(Event::Succeed(x)).map(|r| r.0).unwrap_or(b)
                }
                Ok((b, _)) => b,
                Err(_) => return false,
            };
        }
        s.run.is_finished()
    }
}

impl Default for RunState {
    fn default() -> Self {
        RunState::new()
    }
}

fn is_open(s: StageStatus) -> bool {
    matches!(
        s,
        StageStatus::Queued | StageStatus::Waiting | StageStatus::Running
    )
}

/// Whether an operator's action on a whole run (pause, resume, cancel) applies to a run
/// in `status`; other events pass.
pub fn run_allows(event: Event, status: RunStatus) -> Result<(), Refused> {
    use RunStatus::*;
    let (ok, allowed) = match event {
        Event::Pause => (
            matches!(status, Queued | Running),
            "a queued or running run",
        ),
        Event::Resume => (status == Paused, "a paused run"),
        Event::Cancel => (!status.is_finished(), "a queued, running or paused run"),
        _ => (true, ""),
    };
    if ok {
        return Ok(());
    }
    Err(Refused {
        action: event.action(),
        what: "the run".into(),
        status: status.as_str(),
        allowed,
    })
}

/// Whether an operator's action on one task (retry, cancel) applies to its stage `s` in
/// `status`; other events pass.
pub fn stage_allows(event: Event, s: Stage, status: StageStatus) -> Result<(), Refused> {
    let (ok, allowed) = match event {
        Event::RetryTask(_) => (
            matches!(status, StageStatus::Failed | StageStatus::Cancelled),
            "a failed or cancelled task",
        ),
        Event::CancelTask(_) => (is_open(status), "a queued, waiting or running task"),
        _ => (true, ""),
    };
    if ok {
        return Ok(());
    }
    Err(refuse_stage(event, s, status.as_str(), allowed))
}

fn refuse_lease(event: Event, lease: Lease, allowed: &'static str) -> Refused {
    Refused {
        action: event.action(),
        what: "the repository's lease".into(),
        status: lease.as_str(),
        allowed,
    }
}

fn refuse_stage(event: Event, s: Stage, status: &'static str, allowed: &'static str) -> Refused {
    Refused {
        action: event.action(),
        what: format!("stage {s}"),
        status,
        allowed,
    }
}

/// Every event of a run, for generators and tables.
pub fn all_events() -> Vec<Event> {
    let mut out = vec![Event::Pause, Event::Resume, Event::Cancel];
    for s in Stage::ALL {
        out.extend([
            Event::Begin(s),
            Event::Succeed(s),
            Event::Retry(s),
            Event::Fail(s),
            Event::Stop(s),
            Event::Abandon(s),
            Event::RetryTask(s),
            Event::CancelTask(s),
        ]);
    }
    out.push(Event::SucceedUpToDate(Stage::Sync));
    out.extend([Event::LeaseTaken, Event::LeaseFreed]);
    out
}

/// Every state a run can reach from [`RunState::new`], by any events (the space is small:
/// it is explored to the end).
pub fn reachable_states() -> Vec<RunState> {
    let events = all_events();
    let mut seen = std::collections::HashSet::from([RunState::new()]);
    let mut out = vec![RunState::new()];
    let mut frontier = vec![RunState::new()];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for s in &frontier {
            for e in &events {
                if let Ok((n, _)) = s.apply(*e)
                    && seen.insert(n)
                {
                    out.push(n);
                    next.push(n);
                }
            }
        }
        frontier = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use StageStatus::*;

    fn run(events: &[Event]) -> RunState {
        events.iter().fold(RunState::new(), |s, e| {
            s.apply(*e)
                .unwrap_or_else(|r| panic!("{e:?} refused: {r}"))
                .0
        })
    }

    fn all_stages(s: RunState) -> [StageStatus; 5] {
        s.stages
    }

    /// The task filter's names are every stage status and every job status, once.
    #[test]
    fn task_statuses_name_every_stage_and_job_status() {
        let mut want: Vec<String> = [
            StageStatus::Queued,
            StageStatus::Waiting,
            StageStatus::Running,
            StageStatus::Succeeded,
            StageStatus::Failed,
            StageStatus::Cancelled,
            StageStatus::Skipped,
        ]
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
        for j in JobStatus::ALL {
            let j = j.as_str().to_lowercase();
            // apalis' Running (never written by trawl) reads as the stage's running.
            if !want.contains(&j) {
                want.push(j);
            }
        }
        assert_eq!(want, TASK_STATUSES);
    }

    #[test]
    fn a_run_goes_through_its_stages_in_order() {
        let mut s = RunState::new();
        for x in Stage::ALL {
            assert_eq!(s.check(), Ok(()));
            let (b, out) = s.apply(Event::Begin(x)).unwrap();
            assert_eq!(out, Outcome::Begun(BeginOutcome::Proceed));
            assert_eq!(b.run, RunStatus::Running);
            s = b.apply(Event::Succeed(x)).unwrap().0;
        }
        assert_eq!(s.run, RunStatus::Succeeded);
        assert_eq!(all_stages(s), [Succeeded; 5]);
        assert_eq!(s.jobs, [JobStatus::Done; 5]);
    }

    #[test]
    fn an_up_to_date_sync_skips_the_rest() {
        let s = run(&[
            Event::Begin(Stage::Sync),
            Event::SucceedUpToDate(Stage::Sync),
        ]);
        assert_eq!(s.run, RunStatus::Succeeded);
        assert_eq!(
            all_stages(s),
            [Succeeded, Skipped, Skipped, Skipped, Skipped]
        );
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn a_stage_failing_for_good_fails_the_run_and_cancels_the_rest() {
        let s = run(&[
            Event::Begin(Stage::Sync),
            Event::Succeed(Stage::Sync),
            Event::Begin(Stage::Extract),
            Event::Retry(Stage::Extract),
        ]);
        assert_eq!(s.stages[1], Queued);
        assert_eq!(s.jobs[1], JobStatus::Failed);
        let s = run(&[
            Event::Begin(Stage::Sync),
            Event::Succeed(Stage::Sync),
            Event::Begin(Stage::Extract),
            Event::Fail(Stage::Extract),
        ]);
        assert_eq!(s.run, RunStatus::Failed);
        assert_eq!(
            all_stages(s),
            [Succeeded, Failed, Cancelled, Cancelled, Cancelled]
        );
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn pause_parks_and_resume_releases_the_first_open_stage() {
        let s = run(&[Event::Pause]);
        assert_eq!(s.run, RunStatus::Paused);
        assert_eq!(s.jobs[0], JobStatus::Waiting);
        let s = s.apply(Event::Resume).unwrap().0;
        assert_eq!(s.run, RunStatus::Queued, "it never started");
        assert_eq!((s.stages[0], s.jobs[0]), (Queued, JobStatus::Pending));
        // A stage at work when the run is paused stops after its batch and is parked.
        let s = run(&[
            Event::Begin(Stage::Sync),
            Event::Pause,
            Event::Stop(Stage::Sync),
        ]);
        assert_eq!((s.stages[0], s.jobs[0]), (Waiting, JobStatus::Waiting));
        let s = s.apply(Event::Resume).unwrap().0;
        assert_eq!((s.run, s.stages[0]), (RunStatus::Running, Queued));
        // Succeeding while paused does not release the next stage.
        let s = run(&[
            Event::Begin(Stage::Sync),
            Event::Pause,
            Event::Succeed(Stage::Sync),
        ]);
        assert_eq!((s.stages[1], s.jobs[1]), (Waiting, JobStatus::Waiting));
        assert!(s.can_end());
    }

    #[test]
    fn operators_are_refused_in_words_that_say_what_is_allowed() {
        let done = run(&[Event::Cancel]);
        let err = done.apply(Event::Pause).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot pause the run: it is cancelled (only a queued or running run can be)"
        );
        let err = RunState::new()
            .apply(Event::RetryTask(Stage::Sync))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot retry stage sync: it is queued (only a failed or cancelled task can be)"
        );
        assert!(RunState::new().apply(Event::Resume).is_err());
        assert!(done.apply(Event::CancelTask(Stage::Sync)).is_err());
    }

    #[test]
    fn a_worker_report_on_a_cancelled_stage_is_ignored() {
        let s = run(&[Event::Begin(Stage::Sync), Event::Cancel]);
        for e in [
            Event::Succeed(Stage::Sync),
            Event::Retry(Stage::Sync),
            Event::Fail(Stage::Sync),
        ] {
            assert_eq!(s.apply(e).unwrap(), (s, Outcome::Ignored));
        }
        // Stopping closes the job the worker still held.
        let s = s.apply(Event::Stop(Stage::Sync)).unwrap().0;
        assert_eq!(s.jobs[0], JobStatus::Killed);
        assert_eq!(s.check(), Ok(()));
    }

    /// The stranded run: a later stage retried while an earlier one is also cancelled used
    /// to wait for a predecessor nothing would run.
    #[test]
    fn retrying_a_later_stage_restarts_from_the_first_unfinished_one() {
        let s = run(&[
            Event::Begin(Stage::Sync),
            Event::Succeed(Stage::Sync),
            Event::Cancel,
            Event::RetryTask(Stage::Enrich),
        ]);
        assert_eq!(s.run, RunStatus::Running);
        assert_eq!(
            all_stages(s),
            [Succeeded, Queued, Waiting, Waiting, Waiting]
        );
        assert_eq!(s.jobs[1], JobStatus::Pending);
        assert_eq!(s.check(), Ok(()));
        assert!(s.can_end());
    }

    /// Cancelling one task cancels its whole run, the stages before it included: a stage
    /// still at work in a cancelled run would release the next one when it succeeded.
    #[test]
    fn cancelling_a_later_task_cancels_the_stage_at_work() {
        let s = run(&[Event::Begin(Stage::Sync), Event::CancelTask(Stage::Extract)]);
        assert_eq!(s.run, RunStatus::Cancelled);
        assert_eq!(s.stages[0], Cancelled);
        let (after, out) = s.apply(Event::Succeed(Stage::Sync)).unwrap();
        assert_eq!((after, out), (s, Outcome::Ignored));
    }

    /// A run of a repository whose lease another run holds waits, parked and without an
    /// attempt, until the lease is freed; then it takes the lease, keeps it while it works
    /// and gives it up when it ends.
    #[test]
    fn a_run_waits_for_the_lease_another_run_of_its_repository_holds() {
        let s = run(&[Event::LeaseTaken, Event::Begin(Stage::Sync)]);
        assert_eq!(s.run, RunStatus::Queued);
        assert_eq!((s.stages[0], s.jobs[0]), (Waiting, JobStatus::Waiting));
        assert_eq!(s.check(), Ok(()));
        let s = s.apply(Event::LeaseFreed).unwrap().0;
        assert_eq!((s.stages[0], s.jobs[0]), (Queued, JobStatus::Pending));
        let (s, out) = s.apply(Event::Begin(Stage::Sync)).unwrap();
        assert_eq!(out, Outcome::Begun(BeginOutcome::Proceed));
        assert_eq!(s.lease, Lease::Mine);
        let taken = s.apply(Event::LeaseTaken).unwrap_err();
        assert_eq!(
            taken.to_string(),
            "cannot take the repository's lease: it is held by this run (only a free lease can be)"
        );
        // Paused, it keeps the lease; ended, it gives it up.
        let s = s.apply(Event::Pause).unwrap().0;
        assert_eq!(s.lease, Lease::Mine);
        let s = s.apply(Event::Cancel).unwrap().0;
        assert_eq!(s.lease, Lease::Free);
    }

    /// Every reachable state keeps the rules and can end.
    #[test]
    fn every_reachable_state_keeps_the_rules_and_can_end() {
        let states = reachable_states();
        for s in &states {
            assert_eq!(s.check(), Ok(()), "{s:?}");
            assert!(s.can_end(), "stuck: {s:?}");
        }
        let finished = states.iter().filter(|s| s.run.is_finished()).count();
        assert!(
            states.len() > 100 && finished > 20,
            "explored {} states",
            states.len()
        );
    }
}
