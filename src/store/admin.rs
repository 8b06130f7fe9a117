//! Cluster-level statements: creating and dropping whole databases. Used for the embedded
//! cluster's `trawl` database and for the test suite's throwaway databases.

use sqlx::{Connection, PgConnection};

use super::StoreError;

/// Quotes an identifier for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates database `name` when it does not exist, connecting through `admin_url` (a
/// database of the same cluster). Two processes racing to create it both succeed.
pub async fn create_database_if_missing(admin_url: &str, name: &str) -> Result<bool, StoreError> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .map_err(|e| StoreError::Unreachable {
            target: super::describe_target(admin_url),
            cause: e.to_string(),
        })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if exists {
        return Ok(false);
    }
    match sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        ident(name)
    )))
    .execute(&mut conn)
    .await
    {
        Ok(_) => Ok(true),
        // 42P04 duplicate_database, 23505 unique_violation: another process was first.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("42P04") | Some("23505")) =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates database `name` as a copy of `template`.
pub async fn create_database_from(
    admin_url: &str,
    name: &str,
    template: &str,
) -> Result<(), StoreError> {
    let mut conn = PgConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {} TEMPLATE {}",
        ident(name),
        ident(template)
    )))
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Drops database `name`, closing its connections first.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    let mut conn = PgConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        ident(name)
    )))
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Names of databases starting with `prefix`.
pub async fn databases_with_prefix(
    admin_url: &str,
    prefix: &str,
) -> Result<Vec<String>, StoreError> {
    let mut conn = PgConnection::connect(admin_url).await?;
    Ok(
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)")
            .bind(prefix)
            .fetch_all(&mut conn)
            .await?,
    )
}

/// The URL of database `db` on the server of `url`.
pub fn url_with_database(url: &str, db: &str) -> Result<String, StoreError> {
    let mut u =
        url::Url::parse(url).map_err(|e| StoreError::Invalid(format!("database URL: {e}")))?;
    u.set_path(db);
    Ok(u.to_string())
}
