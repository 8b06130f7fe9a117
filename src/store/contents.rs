//! File contents, content-addressed (`file_contents`): SYNC stores what it read, EXTRACT
//! reads it back, on whichever node each runs.
//!
//! A content is stored once, by its hex sha-256, however many files, repositories and runs
//! have it. When a sync stops referencing a content (the file changed or went away) the hash
//! becomes a candidate (`file_content_garbage`); [`Store::sweep_contents`] deletes the
//! candidates no file and no item EXTRACT has still to parse (or parse again) references,
//! once both the candidate and the content's last touch are
//! older than [`SWEEP_AFTER_SECS`]. A sync touches every content it finds already stored
//! (at most once per [`TOUCH_EVERY_SECS`]), so one that is about to reference a content
//! another repository just gave up never loses it to the sweep.

use std::collections::HashMap;

use super::{Store, StoreError};

/// How old a candidate and its content's last touch must be before the sweep deletes it.
pub const SWEEP_AFTER_SECS: i64 = 3600;
/// A stored content found again is touched when its last touch is older than this.
pub const TOUCH_EVERY_SECS: i64 = 600;

impl Store {
    /// Of `hashes`, those whose content is stored (touching them, see the module doc).
    pub async fn stored_contents(&self, hashes: &[String]) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "WITH touched AS (
                 UPDATE file_contents SET touched_at = now()
                  WHERE hash = ANY($1) AND touched_at < now() - make_interval(secs => $2)
                 RETURNING 1)
             SELECT hash FROM file_contents WHERE hash = ANY($1)",
        )
        .bind(hashes)
        .bind(TOUCH_EVERY_SECS as f64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores contents by their hashes (one already stored is only touched).
    pub async fn store_contents(&self, contents: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        if contents.is_empty() {
            return Ok(());
        }
        let hashes: Vec<&str> = contents.iter().map(|(h, _)| h.as_str()).collect();
        let bytes: Vec<&[u8]> = contents.iter().map(|(_, b)| b.as_slice()).collect();
        sqlx::query(
            "INSERT INTO file_contents (hash, content)
             SELECT * FROM UNNEST($1::text[], $2::bytea[])
             ON CONFLICT (hash) DO UPDATE SET touched_at = now()",
        )
        .bind(&hashes)
        .bind(&bytes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored contents of `paths`, items of run `run_id`, as its SYNC read them (an
    /// item of a run synced before contents were stored: the file's last synced content),
    /// by path. A path missing from the answer has no stored content (no such item, a
    /// skipped file, or a content that was lost).
    pub async fn run_contents(
        &self,
        run_id: i64,
        paths: &[String],
    ) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT i.path, c.content
               FROM run_items i
               JOIN runs r ON r.id = i.run_id
               LEFT JOIN files f ON f.repository_id = r.repository_id AND f.path = i.path
               JOIN file_contents c ON c.hash = COALESCE(i.content_hash, f.content_hash)
              WHERE i.run_id = $1 AND i.path = ANY($2)",
        )
        .bind(run_id)
        .bind(paths)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// The current contents of repository `repository_id`'s indexed files with a language:
    /// of `paths` (None: every file, a page of `limit` after `after`), by path, with the
    /// language. A path missing from the answer has no such file (deleted since) or no
    /// stored content.
    pub async fn current_contents(
        &self,
        repository_id: i64,
        paths: Option<&[String]>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT f.path, f.language, c.content
               FROM files f JOIN file_contents c ON c.hash = f.content_hash
              WHERE f.repository_id = $1 AND f.skip_reason IS NULL AND f.language IS NOT NULL
                AND ($2::text[] IS NULL OR f.path = ANY($2))
                AND f.path > $3
              ORDER BY f.path LIMIT $4",
        )
        .bind(repository_id)
        .bind(paths)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes the candidates no file references that are old enough (see the module doc).
    /// Returns how many contents were deleted.
    pub async fn sweep_contents(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM file_contents c USING file_content_garbage g
              WHERE c.hash = g.hash AND g.since < now() - make_interval(secs => $1)
                AND c.touched_at < now() - make_interval(secs => $1)
                AND NOT EXISTS (SELECT 1 FROM files f WHERE f.content_hash = g.hash)
                AND NOT EXISTS (SELECT 1 FROM run_items i WHERE i.content_hash = g.hash
                                   AND i.status IN ('pending', 'failed'))",
        )
        .bind(SWEEP_AFTER_SECS as f64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM file_content_garbage WHERE since < now() - make_interval(secs => $1)",
        )
        .bind(SWEEP_AFTER_SECS as f64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
