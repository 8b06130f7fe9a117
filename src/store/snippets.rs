//! Snippets: what EXTRACT writes for a file and what every later stage and search reads.
//!
//! A file's snippets are replaced in one transaction. Snippets whose content hash is
//! unchanged keep their ids (and so their vectors and summaries); only their position is
//! updated.

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use super::{Store, StoreError};
use crate::extract::Snippet;

/// A file of the run that EXTRACT has to work on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExtractItem {
    pub path: String,
    pub change: String,
    pub status: String,
    /// From the files table; None for text and for deleted files.
    pub language: Option<String>,
    /// Whether the files table still lists the file as indexable.
    pub indexable: bool,
}

/// What EXTRACT found in one file.
#[derive(Debug, Clone)]
pub struct ExtractedFile {
    pub path: String,
    pub language: Option<String>,
    pub snippets: Vec<Snippet>,
    /// Set when the file could not be extracted: its old snippets are kept out of the index.
    pub error: Option<String>,
    /// Notes on a file that was extracted anyway (lossy UTF-8, syntax errors).
    pub note: Option<String>,
    pub duration_ms: i32,
    /// Non-blank lines, and how many some snippet covers.
    pub lines_total: i32,
    pub lines_covered: i32,
}

/// A stored snippet, as search and the later stages read it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct StoredSnippet {
    pub id: i64,
    pub repository_id: i64,
    pub path: String,
    pub language: Option<String>,
    pub kind: String,
    pub name: Option<String>,
    pub parent_name: Option<String>,
    pub qualified_name: Option<String>,
    pub start_line: i32,
    pub end_line: i32,
    pub doc: Option<String>,
    pub signature: Option<String>,
    pub code: String,
    pub part: Option<i32>,
    pub content_hash: String,
}

/// Counts of one batch of `replace_snippets`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplaceCounts {
    pub inserted: usize,
    pub kept: usize,
    pub deleted: usize,
}

const SNIPPET_COLUMNS: &str = "id, repository_id, path, language, kind, name, parent_name, qualified_name, \
     start_line, end_line, doc, signature, code, part, content_hash";

impl Store {
    /// Of the run's changed files (not deleted ones) EXTRACT handled: how many, how many
    /// failed, and one failure's error.
    pub async fn extract_failures(
        &self,
        run_id: i64,
    ) -> Result<(i64, i64, Option<String>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('processing', 'completed', 'failed')),
                    count(*) FILTER (WHERE status = 'failed'),
                    min(message) FILTER (WHERE status = 'failed')
             FROM run_items WHERE run_id = $1 AND change <> 'deleted'",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The run's items EXTRACT has not handled yet, with each file's language.
    pub async fn extract_items(&self, run_id: i64) -> Result<Vec<ExtractItem>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT i.path, i.change, i.status, f.language,
                    (f.path IS NOT NULL AND f.skip_reason IS NULL) AS indexable
             FROM run_items i
             JOIN runs r ON r.id = i.run_id
             LEFT JOIN files f ON f.repository_id = r.repository_id AND f.path = i.path
             WHERE i.run_id = $1 AND i.status IN ('pending', 'skipped', 'failed')
             ORDER BY i.path",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces the snippets of `files` and removes those of `removed` (deleted or now
    /// unindexable files), in one transaction, and records each file's item outcome.
    pub async fn replace_snippets(
        &self,
        run_id: i64,
        repository_id: i64,
        files: &[ExtractedFile],
        removed: &[String],
    ) -> Result<ReplaceCounts, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut counts = ReplaceCounts::default();
        let extracted: Vec<&ExtractedFile> = files.iter().filter(|f| f.error.is_none()).collect();
        let mut paths: Vec<String> = extracted.iter().map(|f| f.path.clone()).collect();
        paths.extend(removed.iter().cloned());

        // Existing snippets by (path, hash); equal hashes within a file queue up.
        let existing: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, path, content_hash FROM snippets
             WHERE repository_id = $1 AND path = ANY($2) ORDER BY id FOR UPDATE",
        )
        .bind(repository_id)
        .bind(&paths)
        .fetch_all(&mut *tx)
        .await?;
        let mut by_hash: HashMap<(String, String), Vec<i64>> = HashMap::new();
        for (id, path, hash) in existing {
            by_hash.entry((path, hash)).or_default().push(id);
        }
        for ids in by_hash.values_mut() {
            ids.reverse();
        }

        let mut keep = Keep::default();
        let mut new = NewRows::default();
        // (path, ordinal) → id, for linking parts to their whole.
        let mut ids: HashMap<(String, i32), i64> = HashMap::new();
        for file in &extracted {
            for s in &file.snippets {
                let reused = by_hash
                    .get_mut(&(file.path.clone(), s.hash.clone()))
                    .and_then(|v| v.pop());
                match reused {
                    Some(id) => {
                        keep.push(id, s);
                        ids.insert((file.path.clone(), s.ordinal), id);
                    }
                    None => new.push(&file.path, file.language.as_deref(), s),
                }
            }
        }
        let stale: Vec<i64> = by_hash.into_values().flatten().collect();
        counts.deleted = stale.len();
        counts.kept = keep.ids.len();
        counts.inserted = new.paths.len();

        sqlx::query("DELETE FROM snippets WHERE id = ANY($1)")
            .bind(&stale)
            .execute(&mut *tx)
            .await?;
        keep.write(&mut tx).await?;
        let inserted = new.write(&mut tx, repository_id).await?;
        ids.extend(
            inserted
                .into_iter()
                .map(|(id, path, ordinal)| ((path, ordinal), id)),
        );

        // Parts point at their whole, whose id may be new.
        let mut part_ids = Vec::new();
        let mut whole_ids = Vec::new();
        for file in &extracted {
            for s in &file.snippets {
                if let Some(w) = s.whole_ordinal {
                    let part = ids.get(&(file.path.clone(), s.ordinal));
                    let whole = ids.get(&(file.path.clone(), w));
                    if let (Some(&p), Some(&w)) = (part, whole) {
                        part_ids.push(p);
                        whole_ids.push(w);
                    }
                }
            }
        }
        sqlx::query(
            "UPDATE snippets s SET whole_id = u.whole FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, whole)
             WHERE s.id = u.id AND s.whole_id IS DISTINCT FROM u.whole",
        )
        .bind(&part_ids)
        .bind(&whole_ids)
        .execute(&mut *tx)
        .await?;

        record_extract_items(&mut tx, run_id, files, removed).await?;
        record_coverage(&mut tx, repository_id, &extracted).await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// The snippets of `paths` in one repository, in file order.
    pub async fn snippets_of_paths(
        &self,
        repository_id: i64,
        paths: &[String],
    ) -> Result<Vec<StoredSnippet>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SNIPPET_COLUMNS} FROM snippets WHERE repository_id = $1 AND path = ANY($2)
             ORDER BY path, ordinal"
        )))
        .bind(repository_id)
        .bind(paths)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Snippets by id, in no particular order.
    pub async fn snippets_by_id(&self, ids: &[i64]) -> Result<Vec<StoredSnippet>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SNIPPET_COLUMNS} FROM snippets WHERE id = ANY($1)"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every snippet, in id order, a page at a time (for rebuilding the keyword index).
    pub async fn snippets_page(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredSnippet>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SNIPPET_COLUMNS} FROM snippets WHERE id > $1 ORDER BY id LIMIT $2"
        )))
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The paths a run changed (every item, whatever became of it).
    pub async fn run_item_paths(&self, run_id: i64) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT path FROM run_items WHERE run_id = $1 ORDER BY path")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Records a stage's progress: items done out of total, and what it works on now.
    /// The progress a run's stages reported after event `after_id`, oldest first, as
    /// (event id, stage, items total, done, failed, current item).
    pub async fn progress_events(
        &self,
        run_id: i64,
        after_id: i64,
    ) -> Result<Vec<ProgressEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, stage, items_total, items_done, items_failed, current_item, at
             FROM run_progress WHERE run_id = $1 AND id > $2 ORDER BY id",
        )
        .bind(run_id)
        .bind(after_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Run `run_id`'s progress events with their times, oldest first (at most `limit`,
    /// the latest ones).
    pub async fn progress_history(
        &self,
        run_id: i64,
        limit: i64,
    ) -> Result<Vec<ProgressPoint>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM (SELECT stage, items_total, items_done, items_failed, at
                              FROM run_progress WHERE run_id = $1 ORDER BY id DESC LIMIT $2) p
              ORDER BY at",
        )
        .bind(run_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The id of run `run_id`'s latest progress event (0 when it has none).
    pub async fn last_progress_event(&self, run_id: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(max(id), 0)::bigint FROM run_progress WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records a stage's progress before its next batch; `Err(Stopped)` when the run was
    /// paused or cancelled meanwhile, which stops the stage there.
    pub async fn stage_progress(
        &self,
        run_id: i64,
        stage: crate::domain::Stage,
        total: i64,
        done: i64,
        failed: i64,
        current: Option<&str>,
    ) -> Result<(), StoreError> {
        let (stage_status, run_status): (Option<String>, String) = sqlx::query_as(
            "WITH progress AS (
                 UPDATE stage_runs s SET items_total = $3, items_done = $4, items_failed = $5,
                        current_item = $6
                  WHERE s.run_id = $1 AND s.stage = $2 AND s.status = 'running'
                    AND EXISTS (SELECT 1 FROM runs r WHERE r.id = s.run_id AND r.status = 'running')
                 RETURNING s.status),
             logged AS (
                 INSERT INTO run_progress (run_id, stage, items_total, items_done, items_failed, current_item)
                 SELECT $1, $2, $3, $4, $5, $6 FROM progress)
             SELECT (SELECT status FROM progress), r.status FROM runs r WHERE r.id = $1",
        )
        .bind(run_id)
        .bind(stage.as_str())
        .bind(total as i32)
        .bind(done as i32)
        .bind(failed as i32)
        .bind(current)
        .fetch_one(&self.pool)
        .await?;
        if stage_status.is_none() {
            // Paused or cancelled meanwhile: the stage stops before its next batch.
            return Err(StoreError::Stopped(format!("run {run_id} is {run_status}")));
        }
        Ok(())
    }
}

/// One progress report of a stage (see `run_progress`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProgressEvent {
    pub id: i64,
    pub stage: String,
    pub items_total: i32,
    pub items_done: i32,
    pub items_failed: i32,
    pub current_item: Option<String>,
    /// When the stage reported it.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A progress event as a run's page shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ProgressPoint {
    pub stage: String,
    pub items_total: i32,
    pub items_done: i32,
    pub items_failed: i32,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Snippets that keep their id: only their position changes.
#[derive(Default)]
struct Keep {
    ids: Vec<i64>,
    ordinals: Vec<i32>,
    starts: Vec<i32>,
    ends: Vec<i32>,
}

impl Keep {
    fn push(&mut self, id: i64, s: &Snippet) {
        self.ids.push(id);
        self.ordinals.push(s.ordinal);
        self.starts.push(s.start_line);
        self.ends.push(s.end_line);
    }

    async fn write(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE snippets s SET ordinal = u.ordinal, start_line = u.start_line, end_line = u.end_line, updated_at = now()
             FROM UNNEST($1::bigint[], $2::int[], $3::int[], $4::int[]) AS u(id, ordinal, start_line, end_line)
             WHERE s.id = u.id AND (s.ordinal, s.start_line, s.end_line) IS DISTINCT FROM (u.ordinal, u.start_line, u.end_line)",
        )
        .bind(&self.ids)
        .bind(&self.ordinals)
        .bind(&self.starts)
        .bind(&self.ends)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Snippets to insert, column by column.
#[derive(Default)]
struct NewRows {
    paths: Vec<String>,
    ordinals: Vec<i32>,
    languages: Vec<Option<String>>,
    kinds: Vec<String>,
    names: Vec<Option<String>>,
    parents: Vec<Option<String>>,
    qualified: Vec<Option<String>>,
    starts: Vec<i32>,
    ends: Vec<i32>,
    docs: Vec<Option<String>>,
    signatures: Vec<Option<String>>,
    codes: Vec<String>,
    parts: Vec<Option<i32>>,
    hashes: Vec<String>,
}

impl NewRows {
    fn push(&mut self, path: &str, language: Option<&str>, s: &Snippet) {
        self.paths.push(path.to_string());
        self.ordinals.push(s.ordinal);
        self.languages.push(language.map(str::to_string));
        self.kinds.push(s.kind.clone());
        self.names.push(s.name.clone());
        self.parents.push(s.parent.clone());
        self.qualified.push(s.qualified_name.clone());
        self.starts.push(s.start_line);
        self.ends.push(s.end_line);
        self.docs.push(s.doc.clone());
        self.signatures.push(s.signature.clone());
        // Postgres text cannot hold NUL.
        self.codes.push(s.code.replace('\0', ""));
        self.parts.push(s.part);
        self.hashes.push(s.hash.clone());
    }

    /// Inserts the rows; returns (id, path, ordinal) of each.
    async fn write(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        repository_id: i64,
    ) -> Result<Vec<(i64, String, i32)>, StoreError> {
        if self.paths.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(
            "INSERT INTO snippets (repository_id, path, ordinal, language, kind, name, parent_name, qualified_name,
                                   start_line, end_line, doc, signature, code, part, content_hash)
             SELECT $1, * FROM UNNEST($2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[],
                                      $8::text[], $9::int[], $10::int[], $11::text[], $12::text[], $13::text[],
                                      $14::int[], $15::text[])
             RETURNING id, path, ordinal",
        )
        .bind(repository_id)
        .bind(&self.paths)
        .bind(&self.ordinals)
        .bind(&self.languages)
        .bind(&self.kinds)
        .bind(&self.names)
        .bind(&self.parents)
        .bind(&self.qualified)
        .bind(&self.starts)
        .bind(&self.ends)
        .bind(&self.docs)
        .bind(&self.signatures)
        .bind(&self.codes)
        .bind(&self.parts)
        .bind(&self.hashes)
        .fetch_all(&mut **tx)
        .await?)
    }
}

/// Each extracted file's line coverage, on its `files` row.
async fn record_coverage(
    tx: &mut Transaction<'_, Postgres>,
    repository_id: i64,
    files: &[&ExtractedFile],
) -> Result<(), StoreError> {
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let totals: Vec<i32> = files.iter().map(|f| f.lines_total).collect();
    let covered: Vec<i32> = files.iter().map(|f| f.lines_covered).collect();
    sqlx::query(
        "UPDATE files f SET lines_total = u.total, lines_covered = u.covered
         FROM UNNEST($2::text[], $3::int[], $4::int[]) AS u(path, total, covered)
         WHERE f.repository_id = $1 AND f.path = u.path",
    )
    .bind(repository_id)
    .bind(&paths)
    .bind(&totals)
    .bind(&covered)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl crate::store::Store {
    /// A repository's line coverage: (non-blank lines of its indexed files, lines in
    /// some snippet), over the files extracted since coverage is recorded.
    pub async fn line_coverage(&self, repository_id: i64) -> Result<(i64, i64), StoreError> {
        let (total, covered): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT sum(lines_total)::int8, sum(lines_covered)::int8 FROM files
             WHERE repository_id = $1 AND skip_reason IS NULL AND lines_total IS NOT NULL",
        )
        .bind(repository_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((total.unwrap_or(0), covered.unwrap_or(0)))
    }
}

/// Marks EXTRACT's items: extracted files move on ('processing' until the run ends), files
/// that failed are 'failed' with their error, removed files are done with.
async fn record_extract_items(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    files: &[ExtractedFile],
    removed: &[String],
) -> Result<(), StoreError> {
    let mut paths = Vec::new();
    let mut statuses = Vec::new();
    let mut messages: Vec<Option<String>> = Vec::new();
    let mut durations: Vec<Option<i32>> = Vec::new();
    for f in files {
        paths.push(f.path.clone());
        statuses.push(
            if f.error.is_some() {
                "failed"
            } else {
                "processing"
            }
            .to_string(),
        );
        messages.push(f.error.clone().or_else(|| f.note.clone()));
        durations.push(Some(f.duration_ms));
    }
    sqlx::query(
        "UPDATE run_items i SET status = u.status, message = u.message, duration_ms = u.duration_ms
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int[]) AS u(path, status, message, duration_ms)
         WHERE i.run_id = $1 AND i.path = u.path",
    )
    .bind(run_id)
    .bind(&paths)
    .bind(&statuses)
    .bind(&messages)
    .bind(&durations)
    .execute(&mut **tx)
    .await?;
    // Deleted files are done; skipped files keep their status and reason.
    sqlx::query(
        "UPDATE run_items SET status = 'processing' WHERE run_id = $1 AND path = ANY($2) AND status = 'pending'",
    )
    .bind(run_id)
    .bind(removed)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
