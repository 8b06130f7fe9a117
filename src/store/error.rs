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
}
