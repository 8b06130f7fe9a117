//! What each stage reports: one struct per stage, merged into `runs.result` under the
//! stage's name by the stage that did the work and read back by the services from the same
//! struct, so a renamed field is a compile error instead of a count that reads as 0. Fields
//! an older run did not write read as their default.

use serde::{Deserialize, Serialize};

/// SYNC: what the scan found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncResult {
    pub files_seen: i64,
    pub added: i64,
    pub modified: i64,
    pub deleted: i64,
    pub skipped: i64,
    /// Contents the database did not have, stored by this sync (files, bytes).
    pub contents_stored: i64,
    pub content_bytes_stored: i64,
    /// The commit a git working copy is at.
    pub commit: Option<String>,
    /// Set when SYNC looked at no file (an embeddings-only run): the scope's kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// EXTRACT: files parsed and what became of their snippets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtractResult {
    pub files: i64,
    pub files_removed: i64,
    pub files_failed: i64,
    pub snippets: i64,
    pub snippets_inserted: i64,
    pub snippets_kept: i64,
    pub snippets_deleted: i64,
    /// Set when some files failed but not most (see `extract::loss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// BM25_INDEX: the keyword change published for the run's files, and what applying the
/// change log did to this node's index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bm25Result {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
    /// The number of the change published (`keyword_changes.seq`).
    pub change: i64,
    /// Documents this node's index wrote catching up (a rebuild's included).
    pub documents: i64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rebuilt: bool,
    /// Why this node's index did not catch up (the change is published all the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_error: Option<String>,
}

/// CODE_EMBEDDINGS: vectors computed, and how fast.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmbeddingsResult {
    pub model: String,
    pub embedded: i64,
    pub seconds: f64,
    pub per_second: f64,
}

/// ENRICH: summaries written, their vectors, and the index version stamped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnrichResult {
    pub summaries: i64,
    /// "llm" or "heuristic".
    pub summary_source: String,
    pub summary_vectors: i64,
    pub index_version: i64,
}

/// `runs.result` as a whole: each stage's report once it has succeeded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunResult {
    pub sync: Option<SyncResult>,
    pub extract: Option<ExtractResult>,
    pub bm25_index: Option<Bm25Result>,
    pub code_embeddings: Option<EmbeddingsResult>,
    pub enrich: Option<EnrichResult>,
    /// SYNC found nothing changed and the later stages were skipped.
    pub up_to_date: bool,
}

impl RunResult {
    /// The warnings the stages reported (a run that succeeded with files lost).
    pub fn warnings(&self) -> Vec<String> {
        self.extract
            .iter()
            .filter_map(|x| x.warning.clone())
            .collect()
    }

    /// Reads a run's stored result; one that does not read (a build of another shape)
    /// counts as empty, with a warning.
    pub fn of(value: &serde_json::Value) -> RunResult {
        serde_json::from_value(value.clone()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a run's result does not read: counted as empty");
            RunResult::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the stages write are the names the services read.
    #[test]
    fn results_round_trip_under_the_stage_names() {
        let mut stored = serde_json::json!({});
        let extract = ExtractResult {
            files: 3,
            snippets: 7,
            ..Default::default()
        };
        stored["extract"] = serde_json::to_value(&extract).unwrap();
        stored["bm25_index"] = serde_json::json!({ "rebuilt": true, "documents": 9 });
        stored["up_to_date"] = serde_json::json!(false);
        let read = RunResult::of(&stored);
        assert_eq!(read.extract, Some(extract));
        assert_eq!(read.bm25_index.unwrap().documents, 9);
        assert_eq!(read.sync, None);
        let files_only = serde_json::to_value(Bm25Result {
            files: Some(2),
            change: 7,
            documents: 4,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            files_only,
            serde_json::json!({ "files": 2, "change": 7, "documents": 4 })
        );
    }
}
