//! The domain's words and their rules: stages and their order, run and stage statuses,
//! priorities. Pure: no I/O, no SQL.

pub mod job;
pub mod lifecycle;
pub mod pipelines;
pub mod retry;
pub mod scope;
pub mod settings;

use serde::{Deserialize, Serialize};

/// One of the five stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Sync,
    Extract,
    Bm25Index,
    CodeEmbeddings,
    Enrich,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Sync,
        Stage::Extract,
        Stage::Bm25Index,
        Stage::CodeEmbeddings,
        Stage::Enrich,
    ];

    /// 0 for SYNC .. 4 for ENRICH.
    pub fn ordinal(self) -> i16 {
        self as i16
    }

    pub fn from_ordinal(n: i16) -> Option<Stage> {
        Stage::ALL.get(usize::try_from(n).ok()?).copied()
    }

    /// The name stored in `stage_runs.stage` and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Sync => "sync",
            Stage::Extract => "extract",
            Stage::Bm25Index => "bm25_index",
            Stage::CodeEmbeddings => "code_embeddings",
            Stage::Enrich => "enrich",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        let s = s.to_ascii_lowercase().replace('-', "_");
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s || (s == "bm25" && *st == Stage::Bm25Index))
    }

    pub fn previous(self) -> Option<Stage> {
        Stage::from_ordinal(self.ordinal() - 1)
    }

    pub fn next(self) -> Option<Stage> {
        Stage::from_ordinal(self.ordinal() + 1)
    }

    /// The queue priority of this stage in a run whose base is `base`: SYNC base + 40 down
    /// to ENRICH at the base itself, so within a priority class earlier stages go first.
    pub fn priority(self, base: i32) -> i32 {
        base + 40 - 10 * i32::from(self.ordinal())
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asked for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A person, through the CLI, the HTTP API or MCP.
    User,
    /// The scheduler's periodic sync.
    Background,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::User => "user",
            Trigger::Background => "background",
        }
    }
}

/// A run's priority class and its numeric base (documented in the README).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum PriorityClass {
    /// Overtakes queued user work: stages 140 .. 100.
    High,
    /// User-initiated: stages 90 .. 50.
    Normal,
    /// With background work: stages 50 .. 10.
    Low,
}

impl PriorityClass {
    pub fn base(self) -> i32 {
        match self {
            PriorityClass::High => 100,
            PriorityClass::Normal => 50,
            PriorityClass::Low => 10,
        }
    }

    /// The name stored in `runs.priority_class` and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            PriorityClass::High => "high",
            PriorityClass::Normal => "normal",
            PriorityClass::Low => "low",
        }
    }

    /// The class a trigger gets unless asked otherwise.
    pub fn default_for(trigger: Trigger) -> PriorityClass {
        match trigger {
            Trigger::User => PriorityClass::Normal,
            Trigger::Background => PriorityClass::Low,
        }
    }
}

/// A run's status (`runs.status`, checked text).
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
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    /// An operator paused it: no stage or batch of it starts until it is resumed.
    Paused,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Paused,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// A stage run's status (`stage_runs.status`, checked text).
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
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum StageStatus {
    /// Its job may be taken by a worker.
    Queued,
    /// Its predecessor has not succeeded yet; its job is parked.
    Waiting,
    Running,
    Succeeded,
    Failed,
    /// A predecessor failed for good, or the run was cancelled.
    Cancelled,
    /// Nothing to do (SYNC found no change).
    Skipped,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Queued => "queued",
            StageStatus::Waiting => "waiting",
            StageStatus::Running => "running",
            StageStatus::Succeeded => "succeeded",
            StageStatus::Failed => "failed",
            StageStatus::Cancelled => "cancelled",
            StageStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<StageStatus> {
        [
            StageStatus::Queued,
            StageStatus::Waiting,
            StageStatus::Running,
            StageStatus::Succeeded,
            StageStatus::Failed,
            StageStatus::Cancelled,
            StageStatus::Skipped,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            StageStatus::Succeeded
                | StageStatus::Failed
                | StageStatus::Cancelled
                | StageStatus::Skipped
        )
    }
}

/// Statuses print, and compare with, the names stored and shown.
macro_rules! named_status {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            /// Padded as asked (`{:<10}` in the CLI's tables).
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}
named_status!(RunStatus);
named_status!(StageStatus);

/// A moment back from now: a duration (`90s`, `30m`, `12h`, `7d`) or an RFC 3339 time. The
/// error names the input and what is accepted.
pub fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let refuse = || {
        format!(
            "{s}: give a duration back from now (30m, 12h, 7d) or an RFC 3339 time (2026-11-24T08:00:00Z)"
        )
    };
    let unit = s.chars().last().ok_or_else(refuse)?;
    let n: i64 = s[..s.len() - unit.len_utf8()]
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(refuse)?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(refuse()),
    };
    n.checked_mul(scale)
        .and_then(chrono::TimeDelta::try_seconds)
        .and_then(|back| chrono::Utc::now().checked_sub_signed(back))
        .ok_or_else(|| format!("{s}: that is further back than time goes"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_takes_durations_and_times_and_refuses_the_rest() {
        let day = super::parse_since("1d").unwrap();
        let ago = chrono::Utc::now() - day;
        assert!((ago.num_seconds() - 86_400).abs() < 5);
        assert!(super::parse_since("2026-11-24T08:00:00Z").is_ok());
        let err = super::parse_since("yesterday").unwrap_err();
        assert!(err.starts_with("yesterday:"), "{err}");
        assert!(super::parse_since("-3d").is_err());
        // Neither a multi-byte character nor an overflow panics.
        assert!(super::parse_since("é").is_err());
        assert!(super::parse_since("").is_err());
        assert!(super::parse_since("999999999999d").is_err());
        assert!(super::parse_since("100000000d").is_err());
    }

    use super::*;

    #[test]
    fn stage_priorities_descend_from_the_base() {
        let user: Vec<i32> = Stage::ALL
            .iter()
            .map(|s| s.priority(PriorityClass::Normal.base()))
            .collect();
        assert_eq!(user, [90, 80, 70, 60, 50]);
        let background: Vec<i32> = Stage::ALL
            .iter()
            .map(|s| s.priority(PriorityClass::Low.base()))
            .collect();
        assert_eq!(background, [50, 40, 30, 20, 10]);
        let high: Vec<i32> = Stage::ALL
            .iter()
            .map(|s| s.priority(PriorityClass::High.base()))
            .collect();
        assert!(
            high.iter().min() > user.iter().max(),
            "high overtakes every queued user stage"
        );
    }

    #[test]
    fn stages_know_their_neighbours_and_names() {
        assert_eq!(Stage::Sync.previous(), None);
        assert_eq!(Stage::Extract.previous(), Some(Stage::Sync));
        assert_eq!(Stage::Enrich.next(), None);
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
            assert_eq!(Stage::from_ordinal(s.ordinal()), Some(s));
        }
        assert_eq!(Stage::parse("BM25"), Some(Stage::Bm25Index));
        assert_eq!(Stage::parse("code-embeddings"), Some(Stage::CodeEmbeddings));
        assert_eq!(Stage::parse("index"), None);
    }
}
