//! The files SYNC has seen, and the items SYNC records for a run.

use std::collections::HashMap;

use super::{Store, StoreError};

/// A file as the last sync left it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KnownFile {
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub content_hash: Option<String>,
    pub skip_reason: Option<String>,
}

impl KnownFile {
    /// Whether a scan finds it with the size and mtime the last sync recorded: SYNC's
    /// pre-check, which keeps its hash without reading it.
    pub fn same_stat(&self, size: u64, mtime_ns: i64) -> bool {
        self.size == size as i64 && self.mtime_ns == mtime_ns
    }
}

/// A file as this sync found it.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub content_hash: Option<String>,
    pub language: Option<String>,
    pub skip_reason: Option<String>,
}

/// A changed file: added, modified or deleted.
#[derive(Debug, Clone)]
pub struct SyncItem {
    pub path: String,
    pub change: &'static str,
    /// Set when the file cannot be indexed (binary, too large, unreadable).
    pub skip_reason: Option<String>,
    /// The content SYNC read (stored in `file_contents`); None for a deleted or skipped file.
    pub content_hash: Option<String>,
}

/// Everything one sync writes.
#[derive(Debug, Clone, Default)]
pub struct SyncPlan {
    pub upserts: Vec<FileRow>,
    pub deleted: Vec<String>,
    pub items: Vec<SyncItem>,
}

/// What a run's sync recorded, over all its attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub added: i64,
    pub modified: i64,
    pub deleted: i64,
    pub skipped: i64,
}

impl Store {
    pub async fn known_files(
        &self,
        repository_id: i64,
    ) -> Result<HashMap<String, KnownFile>, StoreError> {
        let rows: Vec<KnownFile> = sqlx::query_as(
            "SELECT path, size, mtime_ns, content_hash, skip_reason FROM files WHERE repository_id = $1",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|f| (f.path.clone(), f)).collect())
    }

    /// Writes a sync's findings in one transaction and returns the run's item counts.
    pub async fn apply_sync(
        &self,
        run_id: i64,
        repository_id: i64,
        plan: &SyncPlan,
    ) -> Result<SyncCounts, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The contents the changed and deleted files had become candidates for the sweep
        // (`Store::sweep_contents`), which keeps those still referenced.
        let replaced: Vec<&str> = plan
            .items
            .iter()
            .filter(|i| i.change != "added")
            .map(|i| i.path.as_str())
            .collect();
        sqlx::query(
            "INSERT INTO file_content_garbage (hash)
             SELECT DISTINCT content_hash FROM files
              WHERE repository_id = $1 AND path = ANY($2) AND content_hash IS NOT NULL
             ON CONFLICT (hash) DO UPDATE SET since = now()",
        )
        .bind(repository_id)
        .bind(&replaced)
        .execute(&mut *tx)
        .await?;
        let paths: Vec<String> = plan.upserts.iter().map(|f| f.path.clone()).collect();
        let sizes: Vec<i64> = plan.upserts.iter().map(|f| f.size).collect();
        let mtimes: Vec<i64> = plan.upserts.iter().map(|f| f.mtime_ns).collect();
        let hashes: Vec<Option<String>> = plan
            .upserts
            .iter()
            .map(|f| f.content_hash.clone())
            .collect();
        let langs: Vec<Option<String>> = plan.upserts.iter().map(|f| f.language.clone()).collect();
        let reasons: Vec<Option<String>> =
            plan.upserts.iter().map(|f| f.skip_reason.clone()).collect();
        sqlx::query(
            "INSERT INTO files (repository_id, path, size, mtime_ns, content_hash, language, skip_reason)
             SELECT $1, * FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[])
             ON CONFLICT (repository_id, path) DO UPDATE SET
                 size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns, content_hash = EXCLUDED.content_hash,
                 language = EXCLUDED.language, skip_reason = EXCLUDED.skip_reason, updated_at = now()
             WHERE (files.size, files.mtime_ns, files.content_hash, files.skip_reason)
                   IS DISTINCT FROM (EXCLUDED.size, EXCLUDED.mtime_ns, EXCLUDED.content_hash, EXCLUDED.skip_reason)",
        )
        .bind(repository_id)
        .bind(&paths)
        .bind(&sizes)
        .bind(&mtimes)
        .bind(&hashes)
        .bind(&langs)
        .bind(&reasons)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM files WHERE repository_id = $1 AND path = ANY($2)")
            .bind(repository_id)
            .bind(&plan.deleted)
            .execute(&mut *tx)
            .await?;
        let item_paths: Vec<String> = plan.items.iter().map(|i| i.path.clone()).collect();
        let changes: Vec<String> = plan.items.iter().map(|i| i.change.to_string()).collect();
        let statuses: Vec<String> = plan
            .items
            .iter()
            .map(|i| {
                if i.skip_reason.is_some() {
                    "skipped"
                } else {
                    "pending"
                }
                .to_string()
            })
            .collect();
        let messages: Vec<Option<String>> =
            plan.items.iter().map(|i| i.skip_reason.clone()).collect();
        let item_hashes: Vec<Option<String>> =
            plan.items.iter().map(|i| i.content_hash.clone()).collect();
        // A second attempt that read a file again records the content it read, while
        // EXTRACT has not handled the item yet.
        sqlx::query(
            "INSERT INTO run_items (run_id, path, change, status, message, content_hash)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
             ON CONFLICT (run_id, path) DO UPDATE SET content_hash = EXCLUDED.content_hash
              WHERE run_items.status = 'pending'
                AND run_items.content_hash IS DISTINCT FROM EXCLUDED.content_hash",
        )
        .bind(run_id)
        .bind(&item_paths)
        .bind(&changes)
        .bind(&statuses)
        .bind(&messages)
        .bind(&item_hashes)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE repositories SET last_synced_at = now() WHERE id = $1")
            .bind(repository_id)
            .execute(&mut *tx)
            .await?;
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT change, status, count(*) FROM run_items WHERE run_id = $1 GROUP BY change, status")
                .bind(run_id)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        let mut counts = SyncCounts::default();
        for (change, status, n) in rows {
            match change.as_str() {
                "added" => counts.added += n,
                "modified" => counts.modified += n,
                "deleted" => counts.deleted += n,
                _ => {}
            }
            if status == "skipped" {
                counts.skipped += n;
            }
        }
        Ok(counts)
    }
}
