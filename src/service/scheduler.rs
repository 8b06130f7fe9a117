//! The scheduler: background syncs of every repository whose last sync is older than the
//! interval.
//!
//! It keeps no state of its own: what is due is read from the database each tick (the
//! repository's last sync, its unfinished runs), so a restarted scheduler, or two of them,
//! never enqueue a second run. A repository with any queued or running run is not touched;
//! `enqueue_run` adds its own guard (one queued background run per repository, under an
//! advisory lock).

use std::time::Duration;

use serde::Serialize;

use crate::domain::{PriorityClass, Trigger};
use crate::store::runs::{Enqueued, NewRun};
use crate::store::{Store, StoreError};

/// What one tick did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tick {
    /// Repositories due for a sync.
    pub due: usize,
    /// Runs enqueued: (repository id, run id).
    pub enqueued: Vec<(i64, i64)>,
}

/// Enqueues a background run for each repository whose last sync is older than `every`.
pub async fn tick(
    store: &Store,
    every: Duration,
    max_attempts: u32,
    settings: &crate::domain::settings::RunSettings,
) -> Result<Tick, StoreError> {
    let due = store.repositories_due(every).await?;
    let mut out = Tick {
        due: due.len(),
        ..Tick::default()
    };
    for repository_id in due {
        let enqueued = store
            .enqueue_run(&NewRun {
                repository_id,
                trigger: Trigger::Background,
                origin: "scheduler".into(),
                priority: PriorityClass::default_for(Trigger::Background),
                scope: crate::domain::scope::Scope::Project,
                full: false,
                max_attempts: [max_attempts; 5],
                settings: Some(settings.clone()),
            })
            .await?;
        if let Enqueued::Created { run_id, .. } = enqueued {
            out.enqueued.push((repository_id, run_id));
            let entry = crate::store::audit::NewAuditEntry {
                actor: "scheduler",
                action: "background_sync",
                repository_id: Some(repository_id),
                run_id: Some(run_id),
                parameters: serde_json::json!({ "every_secs": every.as_secs() }),
                outcome: Ok(None),
            };
            if let Err(e) = store.audit(&entry).await {
                tracing::warn!(error = %e, "could not write the audit entry of a background sync");
            }
        }
    }
    Ok(out)
}

/// How often the scheduler looks for due repositories: often enough that a repository is
/// synced soon after it becomes due, never more than once a second or less than once a
/// minute.
pub fn tick_period(every: Duration) -> Duration {
    (every / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Parses `90s`, `15m`, `1h`, `2d` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 90s, 15m, 1h or 2d"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(
            tick_period(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(tick_period(Duration::from_secs(0)), Duration::from_secs(1));
    }
}
