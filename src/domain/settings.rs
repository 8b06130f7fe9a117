//! The settings a run is asked for with: what the process that enqueued it was configured
//! with, recorded on the run (`runs.settings`) so that every worker, on whatever node, does
//! the same run. Workers follow the sync settings; a worker whose embedder differs refuses
//! the embedding stages instead of writing vectors of another model (or none).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunSettings {
    /// The embedding provider: `local` or `http`.
    pub provider: String,
    /// The name the run's vectors are stored under (the model, and the local tier).
    pub vector_model: String,
    /// Files larger than this many bytes are skipped.
    pub max_file_size: u64,
    /// The deny rules: files never read.
    pub deny: Vec<String>,
    /// The downstream pipelines on or off (`[pipelines.<name>] enabled`), by name; a
    /// repository's own setting wins. Absent in runs recorded before pipelines: all on.
    #[serde(default)]
    pub pipelines: std::collections::BTreeMap<String, bool>,
}

impl RunSettings {
    /// Why a worker embedding with `provider` and `vector_model` cannot do run `run_id`'s
    /// embedding stages; None when it can.
    pub fn embedder_mismatch(
        &self,
        run_id: i64,
        provider: &str,
        vector_model: &str,
    ) -> Option<String> {
        if self.provider == provider && self.vector_model == vector_model {
            return None;
        }
        Some(format!(
            "run {run_id} was asked for with embedding model {} (provider {}), but this worker \
             embeds with {vector_model} (provider {provider}): configure this worker's \
             [embedding] as the process that asked for the run, or ask again (trawl reindex) \
             from a process configured for {vector_model}",
            self.vector_model, self.provider
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_of_another_model_names_both() {
        let s = RunSettings {
            provider: "local".into(),
            vector_model: "all-MiniLM-L6-v2+static256".into(),
            max_file_size: 1,
            deny: vec![],
            pipelines: Default::default(),
        };
        assert_eq!(
            s.embedder_mismatch(3, "local", "all-MiniLM-L6-v2+static256"),
            None
        );
        let e = s.embedder_mismatch(3, "local", "all-MiniLM-L6-v2").unwrap();
        assert!(
            e.contains("run 3")
                && e.contains("all-MiniLM-L6-v2+static256 (provider local)")
                && e.contains("this worker embeds with all-MiniLM-L6-v2 (provider local)"),
            "{e}"
        );
    }
}
