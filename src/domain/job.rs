//! The payload of a stage job, as stored (JSON) in `apalis.jobs.job`.

use super::Stage;
use super::scope::Scope;
use serde::{Deserialize, Serialize};

/// One stage of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageJob {
    pub run_id: i64,
    pub repository_id: i64,
    pub stage: Stage,
    /// The run's scope, as in `runs.scope` (the whole project when left out). An unknown
    /// one makes the payload malformed: the job fails for good rather than index more than
    /// was asked.
    #[serde(default)]
    pub scope: Scope,
}

impl StageJob {
    /// Decodes a payload as stored; the error says what is wrong with it, for the job's
    /// last result.
    pub fn decode(bytes: &[u8]) -> Result<StageJob, String> {
        serde_json::from_slice(bytes)
            .map_err(|e| format!("malformed stage job payload {}: {e}", shown(bytes)))
    }
}

/// A payload as an error message can quote it: its first 300 bytes, read lossily, with
/// control characters escaped (Postgres stores no NUL in text or JSON).
pub fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_bad_payloads_are_described() {
        let job = StageJob {
            run_id: 1,
            repository_id: 2,
            stage: Stage::Bm25Index,
            scope: Scope::Project,
        };
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["stage"], "bm25_index");
        assert_eq!(StageJob::decode(v.to_string().as_bytes()).unwrap(), job);
        let err = StageJob::decode(br#"{"run_id": "x"}"#).unwrap_err();
        assert!(err.contains("malformed stage job payload"), "{err}");
        let err = StageJob::decode(b"\xff\0 not json").unwrap_err();
        assert!(!err.contains('\0'), "{err}");
        assert!(err.contains("malformed stage job payload"), "{err}");
    }
}
