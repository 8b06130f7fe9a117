//! Repositories: registering them, finding them by what users call them, listing them.

use serde::Serialize;
use sqlx::FromRow;

use super::{Store, StoreError};

#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct Repository {
    pub id: i64,
    pub source_kind: String,
    pub source: String,
    pub git_ref: String,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_synced_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Repository {
    /// How users know it: its source, with `@ref` when it was registered at one.
    pub fn label(&self) -> String {
        if self.git_ref.is_empty() {
            self.source.clone()
        } else {
            format!("{}@{}", self.source, self.git_ref)
        }
    }
}

impl Store {
    /// Registers a repository, or returns the one with the same source and ref. Safe against
    /// concurrent registration of the same source.
    pub async fn register_repository(
        &self,
        kind: &str,
        source: &str,
        git_ref: &str,
        name: &str,
    ) -> Result<Repository, StoreError> {
        Ok(sqlx::query_as(
            "INSERT INTO repositories (source_kind, source, git_ref, name) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, git_ref) DO UPDATE SET source_kind = repositories.source_kind
             RETURNING *",
        )
        .bind(kind)
        .bind(source)
        .bind(git_ref)
        .bind(name)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The repositories a selector names: the one with that id, else those registered from
    /// that path or URL (one per ref), or from `source@ref`. By ref.
    pub async fn repositories_named(&self, selector: &str) -> Result<Vec<Repository>, StoreError> {
        // Postgres text holds no NUL, so no source has one (and the query would fail).
        if selector.contains('\0') {
            return Ok(Vec::new());
        }
        if let Ok(id) = selector.parse::<i64>() {
            let by_id: Option<Repository> =
                sqlx::query_as("SELECT * FROM repositories WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(r) = by_id {
                return Ok(vec![r]);
            }
        }
        let by_source: Vec<Repository> =
            sqlx::query_as("SELECT * FROM repositories WHERE source = $1 ORDER BY git_ref")
                .bind(selector)
                .fetch_all(&self.pool)
                .await?;
        if !by_source.is_empty() {
            return Ok(by_source);
        }
        let Some((source, git_ref)) = selector.rsplit_once('@') else {
            return Ok(Vec::new());
        };
        Ok(
            sqlx::query_as("SELECT * FROM repositories WHERE source = $1 AND git_ref = $2")
                .bind(source)
                .bind(git_ref)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The repository a selector names, when exactly one is (see
    /// [`Store::repositories_named`]); the first by ref when several are.
    pub async fn find_repository(&self, selector: &str) -> Result<Option<Repository>, StoreError> {
        Ok(self.repositories_named(selector).await?.into_iter().next())
    }

    pub async fn repository(&self, id: i64) -> Result<Repository, StoreError> {
        sqlx::query_as("SELECT * FROM repositories WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("repository {id}")))
    }

    pub async fn list_repositories(&self) -> Result<Vec<Repository>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM repositories ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    /// The repositories due for a background sync: last synced `every` ago or never, and
    /// no run unfinished; the longest unsynced first. The scheduler reads this each tick.
    pub async fn repositories_due(
        &self,
        every: std::time::Duration,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT r.id FROM repositories r
             WHERE (r.last_synced_at IS NULL OR r.last_synced_at <= now() - make_interval(secs => $1))
               AND NOT EXISTS (SELECT 1 FROM runs x WHERE x.repository_id = r.id AND x.status IN ('queued', 'running', 'paused'))
             ORDER BY r.last_synced_at NULLS FIRST, r.id",
        )
        .bind(every.as_secs_f64())
        .fetch_all(&self.pool)
        .await?)
    }
}

/// What a repository holds: what removing it deletes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, FromRow, schemars::JsonSchema)]
pub struct RepositoryContents {
    pub files: i64,
    pub snippets: i64,
    /// Semantic vectors of its snippets (code and summaries, every model).
    pub vectors: i64,
    pub summaries: i64,
    pub runs: i64,
    /// Runs not ended yet: removing the repository cancels them.
    pub unfinished_runs: i64,
    pub pipeline_runs: i64,
    /// Definitions and references the references pipeline recorded.
    pub symbols: i64,
    /// Commits the history pipeline recorded.
    pub commits: i64,
}

impl Store {
    /// What repository `id` holds.
    pub async fn repository_contents(&self, id: i64) -> Result<RepositoryContents, StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT count(*) FROM files WHERE repository_id = $1) AS files,
                    (SELECT count(*) FROM snippets WHERE repository_id = $1) AS snippets,
                    (SELECT count(*) FROM snippet_vectors v JOIN snippets s ON s.id = v.snippet_id
                      WHERE s.repository_id = $1) AS vectors,
                    (SELECT count(*) FROM snippet_summaries m JOIN snippets s ON s.id = m.snippet_id
                      WHERE s.repository_id = $1) AS summaries,
                    (SELECT count(*) FROM runs WHERE repository_id = $1) AS runs,
                    (SELECT count(*) FROM runs WHERE repository_id = $1
                        AND status IN ('queued', 'running', 'paused')) AS unfinished_runs,
                    (SELECT count(*) FROM pipeline_runs WHERE repository_id = $1) AS pipeline_runs,
                    (SELECT count(*) FROM symbol_defs WHERE repository_id = $1)
                      + (SELECT count(*) FROM symbol_refs WHERE repository_id = $1) AS symbols,
                    (SELECT count(*) FROM commits WHERE repository_id = $1) AS commits",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Removes repository `id` and all it holds, cancelling its unfinished runs with
    /// `reason` (`trawl_remove_repository`); false when there is no such repository.
    pub async fn remove_repository(&self, id: i64, reason: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("SELECT trawl_remove_repository($1, $2)")
            .bind(id)
            .bind(reason)
            .fetch_one(&self.pool)
            .await?)
    }
}
