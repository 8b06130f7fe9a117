//! The `reindex.batch` job type: a list of repositories to reindex, or of snippets to
//! embed again, as one job in apalis' queue `trawl::reindex_batch`, run by every worker
//! process beside the stage jobs.
//!
//! - Payload: [`BatchPayload`] (JSON, unknown fields refused; [`PAYLOAD_SCHEMA`]). An
//!   invalid payload fails the job at once, not retried, with the reason.
//! - Policy: [`POLICY`]: attempts and a timeout per attempt; a failed attempt (the
//!   database away, the timeout) is retried after a backoff in `run_at`.
//! - Idempotent: a repository already at a newer index version than the job names is
//!   skipped, and a retried job skips the items it recorded (table `batch_items`).
//! - One item's failure is recorded and the batch goes on.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{PipelineContext, StageError};
use crate::domain::{PriorityClass, Trigger};
pub use crate::store::batches::BatchItem;
use crate::store::runs::NewRun;
use crate::store::vectors::VectorKind;
use crate::store::{Store, StoreError};

/// The job type's name, and the apalis queue (job_type) its jobs live in.
pub const JOB_TYPE: &str = "reindex.batch";
pub const QUEUE: &str = "trawl::reindex_batch";

/// Attempts and the time one attempt may take.
pub struct BatchPolicy {
    pub max_attempts: i32,
    pub timeout: Duration,
    pub backoff: Duration,
}

pub const POLICY: BatchPolicy = BatchPolicy {
    max_attempts: 3,
    timeout: Duration::from_secs(30 * 60),
    backoff: Duration::from_secs(10),
};

/// What a batch asks for: repositories or snippets, not both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPayload {
    /// Repositories to reindex (an incremental project run each), with the index version
    /// each had when the batch was asked for: one already past it is skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<RepositoryItem>,
    /// Snippets whose code vectors are computed again with the configured model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snippets: Vec<i64>,
    /// The priority class of the runs it enqueues.
    #[serde(default = "low")]
    pub priority: PriorityClass,
}

fn low() -> PriorityClass {
    PriorityClass::Low
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryItem {
    pub repository_id: i64,
    /// The repository's index version when asked (0: none yet).
    #[serde(default)]
    pub version: i32,
}

/// The payload's JSON Schema, as `trawl batch schema` prints it.
pub const PAYLOAD_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "reindex.batch",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "repositories": {
      "type": "array",
      "minItems": 1,
      "items": {
        "type": "object",
        "additionalProperties": false,
        "required": ["repository_id"],
        "properties": {
          "repository_id": { "type": "integer" },
          "version": { "type": "integer", "minimum": 0 }
        }
      }
    },
    "snippets": { "type": "array", "minItems": 1, "items": { "type": "integer" } },
    "priority": { "enum": ["high", "normal", "low"] }
  },
  "oneOf": [
    { "required": ["repositories"], "not": { "required": ["snippets"] } },
    { "required": ["snippets"], "not": { "required": ["repositories"] } }
  ]
}"#;

impl BatchPayload {
    /// Decodes and checks a payload; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<BatchPayload, String> {
        let p: BatchPayload = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "invalid {JOB_TYPE} payload {}: {e}",
                crate::domain::job::shown(bytes)
            )
        })?;
        match (p.repositories.is_empty(), p.snippets.is_empty()) {
            (true, true) => Err(format!(
                "invalid {JOB_TYPE} payload: give repositories or snippets"
            )),
            (false, false) => Err(format!(
                "invalid {JOB_TYPE} payload: repositories and snippets exclude each other"
            )),
            _ => Ok(p),
        }
    }
}

/// Enqueues a batch job; returns its id.
pub async fn submit(store: &Store, payload: &BatchPayload) -> Result<String, StoreError> {
    let payload = serde_json::to_vec(payload).expect("a payload serialises");
    store
        .insert_batch_job(QUEUE, &payload, POLICY.max_attempts)
        .await
}

/// Runs the batch job `job_id` with `payload` (raw) and closes it: Done with a report,
/// Killed for an invalid payload or a failure that cannot pass, or Failed to be retried
/// after a backoff (a lost connection, a provider's 429 or 5xx, a timeout).
pub async fn handle(ctx: Arc<PipelineContext>, job_id: String, payload: Vec<u8>) {
    let store = &ctx.store;
    let outcome = match BatchPayload::decode(&payload) {
        Err(msg) => {
            tracing::error!(job = %job_id, error = %msg, "failing a batch job for good");
            close(store, &job_id, "Killed", json!({ "Err": msg })).await
        }
        Ok(p) => match tokio::time::timeout(POLICY.timeout, work(&ctx, &job_id, &p)).await {
            Ok(Ok(report)) => close(store, &job_id, "Done", json!({ "Ok": report })).await,
            // A provider's 401, a refused request: running it again cannot help.
            Ok(Err(e)) if !e.is_retryable() => {
                let msg = e.report();
                tracing::error!(job = %job_id, error = %msg, "batch job failed for good");
                close(store, &job_id, "Killed", json!({ "Err": msg })).await
            }
            Ok(Err(e)) => retry(store, &job_id, &e.report()).await,
            Err(_) => {
                let msg = format!("timed out after {} s", POLICY.timeout.as_secs());
                retry(store, &job_id, &msg).await
            }
        },
    };
    if let Err(e) = outcome {
        tracing::error!(job = %job_id, error = %e, "could not record a batch job's outcome");
    }
}

/// Works the items not recorded yet; returns the counts.
async fn work(ctx: &PipelineContext, job_id: &str, p: &BatchPayload) -> Result<Value, StageError> {
    let store = &ctx.store;
    let recorded = store.recorded_batch_items(job_id).await?;
    for r in &p.repositories {
        let item = format!("repository:{}", r.repository_id);
        if recorded.contains(&item) {
            continue;
        }
        if let Some((status, message)) = reindex_item(ctx, job_id, &item, r, p.priority).await? {
            store
                .record_batch_item(job_id, &item, status, &message, None)
                .await?;
        }
    }
    if !p.snippets.is_empty() {
        let todo: Vec<i64> = p
            .snippets
            .iter()
            .copied()
            .filter(|id| !recorded.contains(&format!("snippet:{id}")))
            .collect();
        reembed_items(ctx, job_id, &todo).await?;
    }
    let counts = store.batch_item_counts(job_id).await?;
    Ok(json!(
        counts
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    ))
}

/// One repository: skipped or failed (returned, to record), or a run enqueued and the item
/// recorded with it, in one transaction (returns None).
async fn reindex_item(
    ctx: &PipelineContext,
    job_id: &str,
    item: &str,
    r: &RepositoryItem,
    priority: PriorityClass,
) -> Result<Option<(&'static str, String)>, StoreError> {
    let store = &ctx.store;
    if store.repository(r.repository_id).await.is_err() {
        return Ok(Some((
            "failed",
            format!("no repository {}", r.repository_id),
        )));
    }
    let current = store
        .current_index_version(r.repository_id)
        .await?
        .map_or(0, |v| v.version);
    if current > r.version {
        return Ok(Some((
            "skipped",
            format!(
                "already at index version {current}, newer than {}",
                r.version
            ),
        )));
    }
    let new = NewRun {
        repository_id: r.repository_id,
        trigger: Trigger::User,
        origin: JOB_TYPE.into(),
        priority,
        scope: crate::domain::scope::Scope::Project,
        full: false,
        max_attempts: [ctx.config.worker.max_attempts; 5],
        settings: Some(ctx.config.run_settings()),
    };
    store.enqueue_batch_item(&new, job_id, item).await?;
    Ok(None)
}

/// Snippets: each one that exists is embedded again; a missing one is a failed item.
async fn reembed_items(ctx: &PipelineContext, job_id: &str, ids: &[i64]) -> Result<(), StageError> {
    let store = &ctx.store;
    let embedder = ctx.embedder().await?;
    for chunk in ids.chunks(super::stages::embeddings::BATCH as usize) {
        let texts = store.code_texts(chunk).await?;
        for id in chunk {
            if !texts.iter().any(|t| t.snippet_id == *id) {
                store
                    .record_batch_item(
                        job_id,
                        &format!("snippet:{id}"),
                        "failed",
                        &format!("no snippet {id}"),
                        None,
                    )
                    .await?;
            }
        }
        if texts.is_empty() {
            continue;
        }
        let embedded: Vec<i64> = texts.iter().map(|t| t.snippet_id).collect();
        // A failure here fails the attempt: retried if it can pass (see `handle`).
        super::stages::embeddings::embed_and_store(ctx, &embedder, VectorKind::Code, texts).await?;
        for id in embedded {
            store
                .record_batch_item(job_id, &format!("snippet:{id}"), "done", "embedded", None)
                .await?;
        }
    }
    Ok(())
}

async fn close(store: &Store, job_id: &str, status: &str, result: Value) -> Result<(), StoreError> {
    store.close_job(job_id, status, &result).await
}

/// A failed attempt: back to the queue after the backoff, or failed for good when the
/// attempts are spent (apalis fetches Failed jobs below max_attempts only).
async fn retry(store: &Store, job_id: &str, error: &str) -> Result<(), StoreError> {
    tracing::warn!(job = %job_id, %error, "batch job attempt failed");
    store.retry_job(job_id, error, POLICY.backoff).await
}

/// A batch job as `trawl batch show` reports it.
#[derive(Debug, Serialize)]
pub struct BatchStatus {
    pub job_id: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_result: Option<Value>,
    pub items: Vec<BatchItem>,
}

pub async fn status(store: &Store, job_id: &str) -> Result<Option<BatchStatus>, StoreError> {
    let Some(job) = store.batch_job(job_id, QUEUE).await? else {
        return Ok(None);
    };
    let items = store.batch_items(job_id).await?;
    Ok(Some(BatchStatus {
        job_id: job_id.into(),
        status: job.status,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        last_result: job.last_result,
        items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_checked_and_described() {
        let ok = BatchPayload::decode(br#"{"repositories": [{"repository_id": 3, "version": 2}]}"#)
            .unwrap();
        assert_eq!(ok.priority, PriorityClass::Low);
        assert!(BatchPayload::decode(br#"{"snippets": [1, 2]}"#).is_ok());
        for (bad, says) in [
            (&br#"{"repos": [1]}"#[..], "unknown field"),
            (br#"{}"#, "give repositories or snippets"),
            (
                br#"{"repositories": [{"repository_id": 1}], "snippets": [2]}"#,
                "exclude each other",
            ),
            (b"not json", "invalid reindex.batch payload"),
        ] {
            let err = BatchPayload::decode(bad).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
        let schema: Value = serde_json::from_str(PAYLOAD_SCHEMA).unwrap();
        assert_eq!(schema["title"], JOB_TYPE);
    }
}
