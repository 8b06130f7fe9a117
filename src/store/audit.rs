//! The audit log: one entry per action on indexing (see the `audit_log` table).

use serde::Serialize;
use serde_json::Value;

use super::{Store, StoreError};

/// One audit entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    pub action: String,
    pub repository_id: Option<i64>,
    pub run_id: Option<i64>,
    pub parameters: Value,
    pub outcome: String,
    pub message: Option<String>,
}

/// An entry to write.
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub repository_id: Option<i64>,
    pub run_id: Option<i64>,
    pub parameters: Value,
    /// `Ok(message)` for a done action, `Err(why)` for a refused one.
    pub outcome: Result<Option<String>, String>,
}

impl Store {
    pub async fn audit(&self, e: &NewAuditEntry<'_>) -> Result<(), StoreError> {
        let (outcome, message) = match &e.outcome {
            Ok(m) => ("ok", m.clone()),
            Err(why) => ("refused", Some(why.clone())),
        };
        sqlx::query(
            "INSERT INTO audit_log (actor, action, repository_id, run_id, parameters, outcome, message)
             VALUES ($1, $2, (SELECT id FROM repositories WHERE id = $3), (SELECT id FROM runs WHERE id = $4), $5, $6, $7)",
        )
        .bind(e.actor)
        .bind(e.action)
        .bind(e.repository_id)
        .bind(e.run_id)
        .bind(&e.parameters)
        .bind(outcome)
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Entries newest first, of one repository or all, since a time or ever.
    pub async fn audit_entries(
        &self,
        repository_id: Option<i64>,
        since: Option<chrono::DateTime<chrono::Utc>>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM audit_log
             WHERE ($1::bigint IS NULL OR repository_id = $1) AND ($2::timestamptz IS NULL OR at >= $2)
             ORDER BY at DESC, id DESC LIMIT $3",
        )
        .bind(repository_id)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
