//! The read-only measurements `trawl bench` takes (see [`crate::bench`]): what an index
//! holds, what to edit and search for, and how long the queue took.

use super::{Store, StoreError};

impl Store {
    /// A repository's files indexed (not skipped), snippets and code vectors: what a bench
    /// pass produced.
    pub async fn bench_counts(&self, repository_id: i64) -> Result<(i64, i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT count(*) FROM files WHERE repository_id = $1 AND skip_reason IS NULL),
                    (SELECT count(*) FROM snippets WHERE repository_id = $1),
                    (SELECT count(*) FROM snippet_vectors v JOIN snippets s ON s.id = v.snippet_id
                      WHERE s.repository_id = $1 AND v.kind = 'code')",
        )
        .bind(repository_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The first Python file (by path) of a repository that has snippets, or else the first
    /// file with snippets: the file the incremental pass edits. None without snippets.
    pub async fn bench_file_to_edit(
        &self,
        repository_id: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT path FROM snippets WHERE repository_id = $1
             ORDER BY language IS DISTINCT FROM 'python', path LIMIT 1",
        )
        .bind(repository_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Names and docstrings of up to `limit` named snippets in a fixed pseudo-random order:
    /// the raw material of the bench's search queries.
    pub async fn bench_names_and_docs(
        &self,
        limit: i64,
    ) -> Result<Vec<(Option<String>, Option<String>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, doc FROM snippets WHERE name IS NOT NULL ORDER BY md5(id::text) LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Milliseconds from queued to started of every started stage of `runs`: the queue's
    /// enqueue-to-start latency.
    pub async fn bench_enqueue_to_start_ms(&self, runs: &[i64]) -> Result<Vec<f64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT extract(epoch FROM started_at - queued_at)::float8 * 1000 FROM stage_runs
             WHERE run_id = ANY($1) AND started_at IS NOT NULL",
        )
        .bind(runs)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many of `runs` are queued or running. The unfinished-runs index answers this
    /// without touching the finished ones.
    pub async fn bench_open_runs(&self, runs: &[i64]) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE status IN ('queued', 'running') AND id = ANY($1)",
        )
        .bind(runs)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Stage tasks of `runs` that succeeded, and the seconds from the first start to the
    /// last finish (None before any finished): the queue's throughput.
    pub async fn bench_span(&self, runs: &[i64]) -> Result<(i64, Option<f64>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                    extract(epoch FROM max(finished_at) - min(started_at))::float8
             FROM stage_runs WHERE run_id = ANY($1)",
        )
        .bind(runs)
        .fetch_one(&self.pool)
        .await?)
    }
}
