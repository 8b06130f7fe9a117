//! The audit log: one entry per action on indexing (see the `audit_log` table).

use serde::Serialize;
use serde_json::Value;

use super::{Store, StoreError};

/// One audit entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
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

/// The longest string an entry keeps, in characters; the rest is cut with a note.
const MAX_TEXT: usize = 1_000;
/// The most elements an entry keeps of one array.
const MAX_ITEMS: usize = 100;

/// Text as an entry stores it: credentials in URLs masked, control characters (a NUL,
/// which Postgres refuses, an escape sequence) written as escapes, and cut at [`MAX_TEXT`].
fn bounded_text(s: &str) -> String {
    let masked = crate::redact::text(s);
    let mut out = String::new();
    for (i, c) in masked.chars().enumerate() {
        if i == MAX_TEXT {
            out.push_str(&format!("… ({} characters in all)", masked.chars().count()));
            break;
        }
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parameters as an entry stores them: every string bounded as [`bounded_text`], every
/// array cut at [`MAX_ITEMS`] with a last element saying how many there were.
fn bounded(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(bounded_text(s)),
        Value::Array(items) => {
            let mut kept: Vec<Value> = items.iter().take(MAX_ITEMS).map(bounded).collect();
            if items.len() > MAX_ITEMS {
                kept.push(Value::String(format!("… {} items in all", items.len())));
            }
            Value::Array(kept)
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (bounded_text(k), bounded(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// [`Store::audit`] on `conn`: in the caller's transaction, so the entry commits (or
/// not) with what it records.
pub(super) async fn audit_in(
    conn: &mut sqlx::PgConnection,
    e: &NewAuditEntry<'_>,
) -> Result<(), StoreError> {
    let (outcome, message) = match &e.outcome {
        Ok(m) => ("ok", m.as_deref().map(bounded_text)),
        Err(why) => ("refused", Some(bounded_text(why))),
    };
    let parameters = bounded(&e.parameters);
    sqlx::query(
        "INSERT INTO audit_log (actor, action, repository_id, run_id, parameters, outcome, message)
         VALUES ($1, $2, (SELECT id FROM repositories WHERE id = $3), (SELECT id FROM runs WHERE id = $4), $5, $6, $7)",
    )
    .bind(e.actor)
    .bind(e.action)
    .bind(e.repository_id)
    .bind(e.run_id)
    .bind(&parameters)
    .bind(outcome)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Writes an entry; parameters and message are bounded and escaped, so no input can
    /// make the write fail or the log grow without bound.
    pub async fn audit(&self, e: &NewAuditEntry<'_>) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        audit_in(&mut conn, e).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_bounded_escaped_and_masked() {
        let many: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
        let v = bounded(&serde_json::json!({
            "paths": many,
            "nul": "a\u{0}b\u{1b}[31m",
            "source": "https://u:pw@host/r.git",
            "long": "x".repeat(5000),
        }));
        assert_eq!(v["paths"].as_array().unwrap().len(), MAX_ITEMS + 1);
        assert_eq!(v["paths"][MAX_ITEMS], "… 1000 items in all");
        assert_eq!(v["nul"], "a\\u{0}b\\u{1b}[31m");
        assert_eq!(v["source"], "https://***:***@host/r.git");
        assert!(v["long"].as_str().unwrap().chars().count() < MAX_TEXT + 40);
    }
}
