//! Downstream pipelines: the event contract the base ingestion emits, the routing rules that
//! turn events into pipeline runs, and the life of a pipeline run (pure; the SQL in
//! `store/lifecycle.sql` implements [`PipelineStatus::apply`], and `tests/pipelines.rs`
//! holds it to this model).
//!
//! Events (table `events`), written by ENRICH in the transaction that stamps the index
//! version, so that an event exists exactly when its version does:
//! - `snippets.ingested`: a batch of at most [`EVENT_BATCH`] files of one language whose
//!   snippets the run (re)wrote; metadata `{"paths": [...], "commit": "<sha>"}` (commit for
//!   git sources).
//! - `files.deleted`: a batch of files the run removed; metadata `{"paths": [...]}`.
//!
//! Every event carries the repository, its source kind (`directory`, `git`), the run, the
//! index version and when it occurred.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Files per event.
pub const EVENT_BATCH: usize = 500;

/// The events the base ingestion emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventName {
    #[serde(rename = "snippets.ingested")]
    SnippetsIngested,
    #[serde(rename = "files.deleted")]
    FilesDeleted,
}

impl EventName {
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::SnippetsIngested => "snippets.ingested",
            EventName::FilesDeleted => "files.deleted",
        }
    }

    pub fn parse(s: &str) -> Option<EventName> {
        [EventName::SnippetsIngested, EventName::FilesDeleted]
            .into_iter()
            .find(|e| e.as_str() == s)
    }
}

/// The downstream pipelines, each on its own apalis queue.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Pipeline {
    /// Definitions and references (calls, imports, type uses) of every file with a grammar.
    References,
    /// A git source's commits, the files they touched, and who last changed each line.
    History,
}

impl Pipeline {
    pub const ALL: [Pipeline; 2] = [Pipeline::References, Pipeline::History];

    pub fn as_str(self) -> &'static str {
        match self {
            Pipeline::References => "references",
            Pipeline::History => "history",
        }
    }

    pub fn parse(s: &str) -> Option<Pipeline> {
        Pipeline::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Parses a pipeline name or says which there are.
    pub fn parse_or_list(s: &str) -> Result<Pipeline, String> {
        Pipeline::parse(s.trim()).ok_or_else(|| {
            format!(
                "unknown pipeline {s:?}: the pipelines are {}",
                Pipeline::names()
            )
        })
    }

    pub fn names() -> String {
        Pipeline::ALL.map(Pipeline::as_str).join(", ")
    }

    /// The apalis queue (job_type) of its jobs.
    pub fn queue(self) -> &'static str {
        match self {
            Pipeline::References => "trawl::pipeline::references",
            Pipeline::History => "trawl::pipeline::history",
        }
    }

    /// How events group into this pipeline's runs: one run per event, or one per index
    /// version (all the version's events together).
    pub fn grain(self) -> Grain {
        match self {
            Pipeline::References => Grain::Event,
            Pipeline::History => Grain::Version,
        }
    }

    /// The routing rule: whether an event of `name` about a `source_kind` source in
    /// `language` concerns this pipeline.
    pub fn wants(self, name: EventName, source_kind: &str, language: Option<&str>) -> bool {
        match self {
            // Deleted files lose their edges whatever their language was.
            Pipeline::References => match name {
                EventName::FilesDeleted => true,
                EventName::SnippetsIngested => {
                    language.is_some_and(|l| crate::extract::languages::spec(l).is_some())
                }
            },
            Pipeline::History => source_kind == "git",
        }
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// See [`Pipeline::grain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Event,
    Version,
}

/// Whether `pipeline` is on for a repository: its own override (`repositories.pipelines`),
/// else the run's settings (what the asking process was configured with), else on.
pub fn enabled(
    pipeline: Pipeline,
    repository: &BTreeMap<String, bool>,
    run: Option<&BTreeMap<String, bool>>,
) -> bool {
    repository
        .get(pipeline.as_str())
        .or_else(|| run.and_then(|r| r.get(pipeline.as_str())))
        .copied()
        .unwrap_or(true)
}

/// The status of a pipeline run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PipelineStatus {
    Pending,
    Running,
    Success,
    Failed,
    Cancelled,
}

/// What happens to a pipeline run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineEvent {
    /// A worker claimed its job. A running run's job claimed again (its worker died without
    /// a word, and the job came back) is begun again: Abandon and Begin at once.
    Begin,
    Succeed,
    /// A retryable failure with attempts left: pending again after the backoff.
    Retry,
    /// A permanent failure, or the last attempt's. (A worker's report, like Succeed and
    /// Retry, applies to a running run only: one that comes late, after its run was given
    /// back or ended, changes nothing, and a given-back run's job is left to its next
    /// claim.)
    Fail,
    /// The worker stopped or died: the job goes back to the queue, the attempt spent.
    Abandon,
    /// An operator's cancel.
    Cancel,
    /// An operator's retry of a failed or cancelled run.
    RetryRun,
}

impl PipelineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Pending => "pending",
            PipelineStatus::Running => "running",
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<PipelineStatus> {
        use PipelineStatus::*;
        [Pending, Running, Success, Failed, Cancelled]
            .into_iter()
            .find(|x| x.as_str() == s)
    }

    pub fn is_open(self) -> bool {
        matches!(self, PipelineStatus::Pending | PipelineStatus::Running)
    }

    /// The status after `event`, or why it does not apply.
    pub fn apply(self, event: PipelineEvent) -> Result<PipelineStatus, String> {
        use PipelineEvent as E;
        use PipelineStatus::*;
        match (self, event) {
            (Pending | Running, E::Begin) => Ok(Running),
            (Running, E::Succeed) => Ok(Success),
            (Running, E::Retry) | (Running, E::Abandon) => Ok(Pending),
            (Running, E::Fail) => Ok(Failed),
            (Pending | Running, E::Cancel) => Ok(Cancelled),
            (Failed | Cancelled, E::RetryRun) => Ok(Pending),
            (s, E::Cancel) => Err(format!(
                "it is {}: only a pending or running pipeline run can be cancelled",
                s.as_str()
            )),
            (s, E::RetryRun) => Err(format!(
                "it is {}: only a failed or cancelled pipeline run can be retried",
                s.as_str()
            )),
            (s, e) => Err(format!("{e:?} does not apply to a {} run", s.as_str())),
        }
    }
}

impl fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PipelineEvent as E;
    use PipelineStatus::*;

    #[test]
    fn every_status_can_end_and_ended_ones_move_only_by_an_operator() {
        let events = [
            E::Begin,
            E::Succeed,
            E::Retry,
            E::Fail,
            E::Abandon,
            E::Cancel,
            E::RetryRun,
        ];
        // From every status, the worker's own events reach an end.
        for s in [Pending, Running, Success, Failed, Cancelled] {
            let mut at = s;
            for e in [E::Begin, E::Succeed] {
                at = at.apply(e).unwrap_or(at);
            }
            assert!(!at.is_open(), "{s:?} stays open");
        }
        for s in [Success, Failed, Cancelled] {
            for e in events {
                let moved = s.apply(e);
                if e == E::RetryRun && s != Success {
                    assert_eq!(moved, Ok(Pending));
                } else {
                    assert!(moved.is_err(), "{s:?} moved by {e:?}");
                }
            }
        }
        assert_eq!(Running.apply(E::Abandon), Ok(Pending));
        assert_eq!(Running.apply(E::Begin), Ok(Running));
        assert!(
            Success
                .apply(E::Cancel)
                .unwrap_err()
                .contains("it is success")
        );
    }

    #[test]
    fn routing_follows_language_source_kind_and_flags() {
        let r = Pipeline::References;
        assert!(r.wants(EventName::SnippetsIngested, "directory", Some("rust")));
        assert!(!r.wants(EventName::SnippetsIngested, "directory", Some("markdown")));
        assert!(!r.wants(EventName::SnippetsIngested, "directory", None));
        assert!(r.wants(EventName::FilesDeleted, "directory", None));
        let h = Pipeline::History;
        assert!(h.wants(EventName::SnippetsIngested, "git", Some("markdown")));
        assert!(!h.wants(EventName::SnippetsIngested, "directory", Some("rust")));

        let off: BTreeMap<String, bool> = [("history".to_string(), false)].into();
        let on: BTreeMap<String, bool> = [("history".to_string(), true)].into();
        let none = BTreeMap::new();
        assert!(enabled(h, &none, None));
        assert!(!enabled(h, &none, Some(&off)));
        // The repository's override wins over the run's flags, both ways.
        assert!(enabled(h, &on, Some(&off)));
        assert!(!enabled(h, &off, Some(&on)));
        assert!(enabled(r, &off, Some(&off)));
        assert_eq!(
            Pipeline::parse_or_list("refs").unwrap_err(),
            "unknown pipeline \"refs\": the pipelines are references, history"
        );
    }
}
