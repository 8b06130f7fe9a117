//! The store's error type and the one place sqlx errors are classified.
//!
//! A retryable error can succeed when the same work runs again (a lost connection, a
//! deadlock, a serialisation failure, a server restarting); anything else is permanent and
//! the queue fails the work at once.

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot reach the database at {target}: {cause}; check that PostgreSQL runs there and \
         the URL is right, or unset TRAWL_DATABASE_URL and DATABASE_URL to use trawl's \
         embedded database"
    )]
    Unreachable { target: String, cause: String },
    #[error(
        "the database user may not create the {extension} extension: run `CREATE EXTENSION \
         {extension};` once as a superuser in that database, then retry"
    )]
    ExtensionNotPermitted { extension: String },
    #[error("the {extension} extension is not installed on the database server: {hint}")]
    ExtensionMissing { extension: String, hint: String },
    #[error("migrating the schema failed: {0}")]
    Migrate(String),
    #[error("the database refused the work: {message}")]
    Database {
        message: String,
        code: Option<String>,
        retryable: bool,
    },
    #[error("the database connection failed: {0}")]
    Connection(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The stage's run was paused or cancelled: the stage stops where it is.
    #[error("stopped: {0}")]
    Stopped(String),
}

impl StoreError {
    /// Whether running the same work again can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unreachable { .. } | StoreError::Connection(_) => true,
            StoreError::Database { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// Whether the database rolled the transaction back because it collided with another:
/// a deadlock or a serialisation failure. Nothing of it was written, so running the same
/// transaction again is safe (unlike after a lost connection, where a commit may have
/// landed).
pub(super) fn is_conflict(error: &StoreError) -> bool {
    matches!(error, StoreError::Database { code: Some(c), .. } if c == "40P01" || c == "40001")
}

/// Times a transaction that collided with another is run again before its error is given.
const CONFLICT_RETRIES: u32 = 4;

/// Runs transaction `work` until it does not collide with another (see [`is_conflict`]),
/// at most [`CONFLICT_RETRIES`] more times, a little longer apart each time. The enqueues'
/// safety net: they lock in a worker's claim order (so a user run superseding a background
/// run being claimed no longer deadlocks), and a deadlock with anything else is done again
/// instead of failing a user's request.
pub(super) async fn retrying_conflicts<T, F, Fut>(mut work: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0;
    loop {
        match work().await {
            Err(e) if is_conflict(&e) && tries < CONFLICT_RETRIES => {
                tries += 1;
                tracing::debug!(error = %e, tries, "a transaction collided with another; running it again");
                tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(tries))).await;
            }
            outcome => return outcome,
        }
    }
}

/// SQLSTATE classes and codes worth a retry: connection exceptions, serialisation failures
/// and deadlocks, lock timeouts, too many connections, and a server shutting down or
/// restarting.
pub fn is_retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03" | "58000"
        )
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.to_string());
                let retryable = code.as_deref().is_some_and(is_retryable_sqlstate);
                StoreError::Database {
                    message: db.message().to_string(),
                    code,
                    retryable,
                }
            }
            sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
            sqlx::Error::Io(e) => StoreError::Connection(e.to_string()),
            sqlx::Error::PoolTimedOut => {
                StoreError::Connection("timed out waiting for a connection".into())
            }
            sqlx::Error::PoolClosed => {
                StoreError::Connection("the connection pool is closed".into())
            }
            sqlx::Error::Tls(e) => StoreError::Connection(format!("tls: {e}")),
            sqlx::Error::Protocol(m) => StoreError::Connection(m),
            other => StoreError::Database {
                message: other.to_string(),
                code: None,
                retryable: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlocks_and_connection_loss_are_retryable_constraint_violations_are_not() {
        assert!(is_retryable_sqlstate("40P01"));
        assert!(is_retryable_sqlstate("40001"));
        assert!(is_retryable_sqlstate("08006"));
        assert!(is_retryable_sqlstate("57P01"));
        assert!(!is_retryable_sqlstate("23505"));
        assert!(!is_retryable_sqlstate("42601"));
        assert!(!is_retryable_sqlstate("22P02"));
    }

    fn database(code: &str) -> StoreError {
        StoreError::Database {
            message: format!("error {code}"),
            code: Some(code.into()),
            retryable: is_retryable_sqlstate(code),
        }
    }

    #[tokio::test]
    async fn a_transaction_that_deadlocked_runs_again_and_others_fail_at_once() {
        // Two deadlocks, then success: the work is done a third time and its value given.
        let mut calls = 0;
        let done = retrying_conflicts(|| {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(database("40P01")) } else { Ok(n) } }
        })
        .await;
        assert_eq!(done.unwrap(), 3);

        // A lost connection may have committed: it is not run again here.
        let mut calls = 0;
        let lost = retrying_conflicts(|| {
            calls += 1;
            async { Err::<(), _>(StoreError::Connection("reset".into())) }
        })
        .await;
        assert!(matches!(lost, Err(StoreError::Connection(_))));
        assert_eq!(calls, 1);

        // A constraint violation is permanent.
        let mut calls = 0;
        let refused = retrying_conflicts(|| {
            calls += 1;
            async { Err::<(), _>(database("23505")) }
        })
        .await;
        assert!(refused.is_err());
        assert_eq!(calls, 1);

        // Serialisation failures for ever: given up after the retries, with the error.
        let mut calls = 0;
        let endless = retrying_conflicts(|| {
            calls += 1;
            async { Err::<(), _>(database("40001")) }
        })
        .await;
        assert!(matches!(endless, Err(ref e) if is_conflict(e)));
        assert_eq!(calls, 1 + CONFLICT_RETRIES);
    }
}
