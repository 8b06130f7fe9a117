//! Index versions: what a fully successful run stamps on its repository.

use super::{Store, StoreError};

/// A repository's index as one run left it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, schemars::JsonSchema)]
pub struct IndexVersion {
    pub repository_id: i64,
    pub version: i32,
    pub run_id: Option<i64>,
    pub built_at: chrono::DateTime<chrono::Utc>,
    pub files: i32,
    pub snippets: i32,
    pub vectors: i32,
    pub checksum: String,
    pub model: String,
}

impl Store {
    /// Stamps the repository's next index version for `run_id` (once: a retry returns the
    /// version already stamped) and marks the run's items that were still in flight
    /// completed, and records the run's events (`store::events`) in the same transaction.
    /// Returns the version number.
    pub async fn stamp_index_version(
        &self,
        run_id: i64,
        repository_id: i64,
        model: &str,
    ) -> Result<i32, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One stamp at a time per repository, so version numbers never collide.
        sqlx::query("SELECT 1 FROM repositories WHERE id = $1 FOR UPDATE")
            .bind(repository_id)
            .execute(&mut *tx)
            .await?;
        let existing: Option<i32> =
            sqlx::query_scalar("SELECT version FROM index_versions WHERE run_id = $1")
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await?;
        let fresh = existing.is_none();
        let version = match existing {
            Some(v) => v,
            None => {
                sqlx::query_scalar(
                    "INSERT INTO index_versions (repository_id, version, run_id, files, snippets, vectors, checksum, model)
                     SELECT $1,
                            COALESCE((SELECT max(version) FROM index_versions WHERE repository_id = $1), 0) + 1,
                            $2,
                            (SELECT count(*) FROM files WHERE repository_id = $1 AND skip_reason IS NULL),
                            (SELECT count(*) FROM snippets WHERE repository_id = $1),
                            (SELECT count(*) FROM snippet_vectors v JOIN snippets s ON s.id = v.snippet_id
                              WHERE s.repository_id = $1 AND v.model = $3 AND v.kind = 'code'),
                            encode(sha256(convert_to(COALESCE(
                                (SELECT string_agg(path || ':' || content_hash, E'\\n' ORDER BY path)
                                 FROM files WHERE repository_id = $1 AND content_hash IS NOT NULL), ''), 'UTF8')), 'hex'),
                            $3
                     RETURNING version",
                )
                .bind(repository_id)
                .bind(run_id)
                .bind(model)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        sqlx::query("UPDATE run_items SET status = 'completed' WHERE run_id = $1 AND status IN ('pending', 'processing')")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        // The run's events, with the version they belong to: never one without the other.
        if fresh {
            super::events::emit(&mut tx, run_id, repository_id, version).await?;
        }
        tx.commit().await?;
        Ok(version)
    }

    /// The repository's newest index version.
    pub async fn current_index_version(
        &self,
        repository_id: i64,
    ) -> Result<Option<IndexVersion>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM index_versions WHERE repository_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(repository_id)
        .fetch_optional(&self.pool)
        .await?)
    }
}
