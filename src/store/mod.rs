//! The store: the only modules that speak SQL.
//!
//! It opens the connection pool, migrates trawl's schema and apalis' queue schema, and
//! (in later modules) reads and writes repositories, files, snippets, vectors, runs and the
//! audit log. It knows nothing of the embedded cluster: it is handed a URL.

#![allow(clippy::disallowed_methods)]

pub mod admin;
pub mod audit;
pub mod batches;
pub mod bench;
pub mod contents;
mod error;
pub mod events;
pub mod files;
pub mod history;
pub mod keyword_log;
pub mod lifecycle;
pub mod metrics;
pub mod pipelines;
pub mod repositories;
pub mod runs;
pub mod snippets;
pub mod symbols;
pub mod tasks;
pub mod vectors;
pub mod versions;
pub mod workers;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use error::{StoreError, is_retryable_sqlstate};

/// trawl's own migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Every transition of runs, stages and their jobs (see the file's head), applied after the
/// migrations.
const LIFECYCLE_SQL: &str = include_str!("lifecycle.sql");

/// How to open a pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

/// A handle on the database: cheap to clone, shared by every part of a process.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects to `url` and brings both schemas up to date. Safe to run from several
    /// processes at once: migrations serialise on an advisory lock.
    pub async fn open(url: &str, settings: &PoolSettings) -> Result<Store, StoreError> {
        let pool = connect_pool(url, settings).await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs apalis-postgres' migrations, then trawl's own (whose views join apalis.jobs).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        apalis_postgres::PostgresStorage::<()>::setup(&self.pool)
            .await
            .map_err(|e| {
                if let apalis_postgres::Error::Database(sqlx::Error::Migrate(m)) = &e {
                    return migrate_error_ref(m).unwrap_or_else(|| {
                        StoreError::Migrate(format!("apalis queue schema: {e}"))
                    });
                }
                StoreError::Migrate(format!("apalis queue schema: {e}"))
            })?;
        MIGRATOR.run(&self.pool).await.map_err(migrate_error)?;
        self.apply_sql_file("lifecycle.sql", LIFECYCLE_SQL).await
    }

    /// Applies a file of idempotent definitions (`CREATE OR REPLACE`) when its checksum
    /// differs from the one last applied, in one transaction under a lock, so concurrent
    /// start-ups apply it once and a failed apply leaves the previous definitions whole.
    async fn apply_sql_file(&self, name: &str, sql: &'static str) -> Result<(), StoreError> {
        use sha2::Digest;
        let sum = format!("{:x}", sha2::Sha256::digest(sql.as_bytes()));
        let applied: Option<String> =
            sqlx::query_scalar("SELECT sha256 FROM trawl_sql_files WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        if applied.as_deref() == Some(sum.as_str()) {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7002, 0)")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Migrate(format!("{name}: {e}")))?;
        sqlx::query(
            "INSERT INTO trawl_sql_files (name, sha256) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = now()",
        )
        .bind(name)
        .bind(&sum)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applied vs. known migrations of trawl's own schema.
    pub async fn migration_state(&self) -> Result<MigrationState, StoreError> {
        let applied: Vec<(i64, bool)> =
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                .fetch_all(&self.pool)
                .await
                .unwrap_or_default();
        let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        let pending = known
            .iter()
            .filter(|v| !applied.iter().any(|(a, ok)| a == *v && *ok))
            .count();
        let unknown = applied.iter().filter(|(a, _)| !known.contains(a)).count();
        Ok(MigrationState {
            known: known.len(),
            pending,
            unknown,
        })
    }

    pub async fn server_version(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.pool)
            .await?)
    }

    /// The installed version of an extension, when installed in this database.
    pub async fn extension_version(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Which of `tables` (schema-qualified) are missing.
    pub async fn missing_tables(&self, tables: &[&str]) -> Result<Vec<String>, StoreError> {
        let mut missing = Vec::new();
        for t in tables {
            let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(*t)
                .fetch_one(&self.pool)
                .await?;
            if found.is_none() {
                missing.push((*t).to_string());
            }
        }
        Ok(missing)
    }
}

/// How far trawl's schema is from what this build expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationState {
    pub known: usize,
    pub pending: usize,
    /// Applied by a newer trawl than this one.
    pub unknown: usize,
}

/// Opens a pool; an unreachable server is reported with its host and port, never the password.
pub async fn connect_pool(url: &str, settings: &PoolSettings) -> Result<PgPool, StoreError> {
    let target = describe_target(url);
    let options: PgConnectOptions = url.parse().map_err(|e| StoreError::Unreachable {
        target: target.clone(),
        cause: format!("the URL is not valid: {e}"),
    })?;
    let options = options
        .log_statements(tracing::log::LevelFilter::Trace)
        .application_name("trawl");
    // A server that is not there says so at once (refused, no such socket): report that
    // now instead of retrying for the whole connect timeout, as the pool would.
    if let Ok(Err(e)) = tokio::time::timeout(
        settings.connect_timeout,
        sqlx::ConnectOptions::connect(&options),
    )
    .await
        && is_absent(&e)
    {
        return Err(StoreError::Unreachable {
            target,
            cause: connect_cause(&e),
        });
    }
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout)
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Unreachable {
            target,
            cause: connect_cause(&e),
        })
}

/// Nothing listens where the URL points: the connection was refused, or the socket does
/// not exist. Waiting will not change that soon.
fn is_absent(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(io) if matches!(
        io.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
    ))
}

fn connect_cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::PoolTimedOut => "no answer in time".to_string(),
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

/// `host:port (url with the password redacted)`, or the socket for unix-socket URLs.
pub fn describe_target(url: &str) -> String {
    let redacted = crate::config::redact_url(url);
    match url.parse::<PgConnectOptions>() {
        Ok(o) => match o.get_socket() {
            Some(dir) => format!("socket {} ({redacted})", dir.display()),
            None => format!("{}:{} ({redacted})", o.get_host(), o.get_port()),
        },
        Err(_) => redacted,
    }
}

fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    migrate_error_ref(&e).unwrap_or_else(|| StoreError::Migrate(e.to_string()))
}

/// A missing or forbidden extension, named; None for other migration errors.
fn migrate_error_ref(e: &sqlx::migrate::MigrateError) -> Option<StoreError> {
    if let sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db)) = e {
        let msg = db.message();
        for ext in ["vector", "hstore", "pgcrypto"] {
            if msg.contains(&format!("extension \"{ext}\"")) {
                if db.code().as_deref() == Some("42501") {
                    return Some(StoreError::ExtensionNotPermitted {
                        extension: ext.into(),
                    });
                }
                if msg.contains("not available") || db.code().as_deref() == Some("0A000") {
                    let hint = if ext == "vector" {
                        "install pgvector on the server (the pgvector/pgvector Docker image has it), or use trawl's embedded database"
                    } else {
                        "install PostgreSQL's contrib extensions on the server, or use trawl's embedded database"
                    };
                    return Some(StoreError::ExtensionMissing {
                        extension: ext.into(),
                        hint: hint.into(),
                    });
                }
            }
        }
    }
    None
}
