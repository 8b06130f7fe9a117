//! Steering runs and tasks: pause, resume, cancel a run; retry or cancel a task. Each
//! action, done or refused, writes an audit entry naming who asked (cli, api, mcp).

use serde_json::json;

use crate::store::Store;
use crate::store::audit::NewAuditEntry;
use crate::store::lifecycle::RunControlError;
use crate::store::runs::Run;
use crate::store::tasks::{Task, TaskError};

/// Times an operator's action is tried again after a passing failure: a deadlock with a
/// worker claiming the same run's stages (they lock rows in another order), a lost
/// connection.
const RETRIES: u32 = 3;

fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(25 * u64::from(attempt))
}

/// What to do with a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAction {
    Pause,
    Resume,
    Cancel,
}

impl RunAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RunAction::Pause => "pause",
            RunAction::Resume => "resume",
            RunAction::Cancel => "cancel",
        }
    }
}

/// Pauses, resumes or cancels run `run_id` on behalf of `actor`, and audits it.
pub async fn control_run(
    store: &Store,
    actor: &str,
    action: RunAction,
    run_id: i64,
) -> Result<Run, RunControlError> {
    let mut tries = 0;
    let outcome = loop {
        let outcome = match action {
            RunAction::Pause => store.pause_run(run_id).await,
            RunAction::Resume => store.resume_run(run_id).await,
            RunAction::Cancel => {
                store
                    .cancel_run(run_id, &format!("cancelled by an operator ({actor})"))
                    .await
            }
        };
        match &outcome {
            Err(RunControlError::Store(e)) if e.is_retryable() && tries < RETRIES => {
                tries += 1;
                tokio::time::sleep(backoff(tries)).await;
            }
            _ => break outcome,
        }
    };
    let repository_id = match &outcome {
        Ok(run) => Some(run.repository_id),
        Err(_) => store.run(run_id).await.ok().map(|r| r.repository_id),
    };
    let entry = NewAuditEntry {
        actor,
        action: action.as_str(),
        repository_id,
        run_id: Some(run_id),
        parameters: json!({ "run_id": run_id }),
        outcome: match &outcome {
            Ok(run) => Ok(Some(format!("run {run_id} {}", run.status))),
            Err(e) => Err(e.to_string()),
        },
    };
    // The action stands even when its audit entry cannot be written: say so, do not undo.
    if let Err(e) = store.audit(&entry).await {
        tracing::warn!(error = %e, "could not write the audit entry of a run action");
    }
    outcome
}

/// Retries (`retry`) or cancels a task on behalf of `actor`, and audits it.
pub async fn control_task(
    store: &Store,
    actor: &str,
    retry: bool,
    job_id: &str,
) -> Result<Task, TaskError> {
    let mut tries = 0;
    let outcome = loop {
        let outcome = if retry {
            store.retry_task(job_id).await
        } else {
            store
                .cancel_task(job_id, &format!("cancelled by an operator ({actor})"))
                .await
        };
        match &outcome {
            Err(TaskError::Store(e)) if e.is_retryable() && tries < RETRIES => {
                tries += 1;
                tokio::time::sleep(backoff(tries)).await;
            }
            _ => break outcome,
        }
    };
    // A refused action names the task's run too, when the task exists.
    let run_id = match &outcome {
        Ok(t) => Some(t.run_id),
        Err(_) => store.task(job_id).await.ok().flatten().map(|t| t.run_id),
    };
    let repository_id = match run_id {
        Some(id) => store.run(id).await.ok().map(|r| r.repository_id),
        None => None,
    };
    let entry = NewAuditEntry {
        actor,
        action: if retry { "retry_task" } else { "cancel_task" },
        repository_id,
        run_id,
        parameters: json!({ "task": job_id }),
        outcome: match &outcome {
            Ok(_) => Ok(None),
            Err(e) => Err(e.to_string()),
        },
    };
    if let Err(e) = store.audit(&entry).await {
        tracing::warn!(error = %e, "could not write the audit entry of a task action");
    }
    outcome
}
