//! The history pipeline's data: a git source's commits (`commits`, searchable by message),
//! the files each touched (`commit_files`), and which commit last changed each range of
//! lines of the indexed files (`blame_ranges`).

use super::{Store, StoreError};

/// One blamed range of a file: its first line, last line (1-based, inclusive) and the
/// commit that last touched it.
pub type BlameRange = (i32, i32, String);

/// A commit read from git.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCommit {
    pub hash: String,
    pub author: String,
    pub committed_at: chrono::DateTime<chrono::Utc>,
    pub message: String,
    /// (path, git's status letter)
    pub files: Vec<(String, String)>,
}

/// A commit as answers give it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, schemars::JsonSchema)]
pub struct CommitRow {
    pub repository_id: i64,
    pub hash: String,
    pub author: String,
    pub committed_at: chrono::DateTime<chrono::Utc>,
    pub message: String,
    /// How the commit changed the file asked about (A, M, D, R…); None when not asked by
    /// file.
    pub change: Option<String>,
    /// The search's rank (messages search only).
    pub rank: Option<f32>,
}

impl Store {
    /// Stores commits not stored yet, with their files; returns how many were new.
    pub async fn store_commits(
        &self,
        repository_id: i64,
        commits: &[NewCommit],
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('trawl.commits'), $1::int)")
            .bind(repository_id as i32)
            .execute(&mut *tx)
            .await?;
        // `commits` is newest first: the last gets the next number, the first the highest.
        let base: i64 = sqlx::query_scalar(
            "SELECT COALESCE(max(seq), 0) FROM commits WHERE repository_id = $1",
        )
        .bind(repository_id)
        .fetch_one(&mut *tx)
        .await?;
        let top = base + commits.len() as i64;
        let mut new = 0;
        for (n, chunk) in commits.chunks(500).enumerate() {
            let seqs: Vec<i64> = (0..chunk.len())
                .map(|i| top - (n * 500 + i) as i64)
                .collect();
            let hashes: Vec<&str> = chunk.iter().map(|c| c.hash.as_str()).collect();
            let authors: Vec<&str> = chunk.iter().map(|c| c.author.as_str()).collect();
            let times: Vec<chrono::DateTime<chrono::Utc>> =
                chunk.iter().map(|c| c.committed_at).collect();
            let messages: Vec<&str> = chunk.iter().map(|c| c.message.as_str()).collect();
            new += sqlx::query(
                "INSERT INTO commits (repository_id, hash, author, committed_at, message, seq)
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[],
                                          $6::bigint[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(repository_id)
            .bind(&hashes)
            .bind(&authors)
            .bind(&times)
            .bind(&messages)
            .bind(&seqs)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let (mut fh, mut fp, mut fc) = (vec![], vec![], vec![]);
            for c in chunk {
                for (path, change) in &c.files {
                    fh.push(c.hash.as_str());
                    fp.push(path.as_str());
                    fc.push(change.as_str());
                }
            }
            sqlx::query(
                "INSERT INTO commit_files (repository_id, hash, path, change)
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(repository_id)
            .bind(&fh)
            .bind(&fp)
            .bind(&fc)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Replaces the blame of repository `repository_id`'s files: `files` (path, its ranges)
    /// and drops `deleted`'s; with `everything`, every
    /// other file's too.
    pub async fn replace_blame(
        &self,
        repository_id: i64,
        files: &[(String, Vec<BlameRange>)],
        deleted: &[String],
        everything: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('trawl.blame'), $1::int)")
            .bind(repository_id as i32)
            .execute(&mut *tx)
            .await?;
        let mut gone: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        gone.extend(deleted.iter().map(String::as_str));
        if everything {
            sqlx::query("DELETE FROM blame_ranges WHERE repository_id = $1")
                .bind(repository_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("DELETE FROM blame_ranges WHERE repository_id = $1 AND path = ANY($2)")
                .bind(repository_id)
                .bind(&gone)
                .execute(&mut *tx)
                .await?;
        }
        let (mut p, mut s, mut e, mut h) = (vec![], vec![], vec![], vec![]);
        for (path, ranges) in files {
            for (start, end, hash) in ranges {
                p.push(path.as_str());
                s.push(*start);
                e.push(*end);
                h.push(hash.as_str());
            }
        }
        sqlx::query(
            "INSERT INTO blame_ranges (repository_id, path, start_line, end_line, hash)
             SELECT $1, * FROM unnest($2::text[], $3::int[], $4::int[], $5::text[])",
        )
        .bind(repository_id)
        .bind(&p)
        .bind(&s)
        .bind(&e)
        .bind(&h)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The commits that touched `path`, newest first.
    pub async fn commits_of_path(
        &self,
        repository_id: i64,
        path: &str,
        limit: i64,
    ) -> Result<Vec<CommitRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT c.repository_id, c.hash, c.author, c.committed_at, c.message, f.change,
                    NULL::real AS rank
               FROM commit_files f JOIN commits c USING (repository_id, hash)
              WHERE f.repository_id = $1 AND f.path = $2
              ORDER BY c.committed_at DESC, c.seq DESC LIMIT $3",
        )
        .bind(repository_id)
        .bind(path)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The commits that last changed some line of `path` between `start` and `end`, newest
    /// first.
    pub async fn commits_of_lines(
        &self,
        repository_id: i64,
        path: &str,
        start: i32,
        end: i32,
        limit: i64,
    ) -> Result<Vec<CommitRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT c.repository_id, c.hash, c.author, c.committed_at, c.message,
                    (SELECT f.change FROM commit_files f
                      WHERE f.repository_id = c.repository_id AND f.hash = c.hash AND f.path = $2) AS change,
                    NULL::real AS rank
               FROM commits c
              WHERE c.repository_id = $1
                AND c.hash IN (SELECT b.hash FROM blame_ranges b
                                WHERE b.repository_id = $1 AND b.path = $2
                                  AND b.start_line <= $4 AND b.end_line >= $3)
              ORDER BY c.committed_at DESC, c.seq DESC LIMIT $5",
        )
        .bind(repository_id)
        .bind(path)
        .bind(start)
        .bind(end)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Commits of the repositories `repos` whose messages match `query`, best first. Plain
    /// words match a message holding any of them, those holding more (and closer) first;
    /// with web-search syntax ("a phrase", -not, or) the query means what it says.
    pub async fn search_commits(
        &self,
        repos: &[i64],
        query: &str,
        limit: i64,
    ) -> Result<Vec<CommitRow>, StoreError> {
        let syntax = query.contains('"')
            || query
                .split_whitespace()
                .any(|w| w.starts_with('-') || w.eq_ignore_ascii_case("or"));
        Ok(sqlx::query_as(
            "SELECT c.repository_id, c.hash, c.author, c.committed_at, c.message, NULL::text AS change,
                    ts_rank_cd(c.search, q) AS rank
               FROM commits c,
                    (SELECT CASE WHEN $4 THEN websearch_to_tsquery('english', $2)
                                 ELSE replace(plainto_tsquery('english', $2)::text, ' & ', ' | ')::tsquery
                            END AS q) query
              WHERE c.repository_id = ANY($1) AND c.search @@ q
              ORDER BY rank DESC, c.committed_at DESC, c.seq DESC LIMIT $3",
        )
        .bind(repos)
        .bind(query)
        .bind(limit)
        .bind(syntax)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The commit index version `version` of repository `repository_id` was built from
    /// (its run's SYNC result); None for a directory source or an unknown version.
    pub async fn indexed_commit(
        &self,
        repository_id: i64,
        version: i32,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT r.result #>> '{sync,commit}' FROM index_versions v JOIN runs r ON r.id = v.run_id
              WHERE v.repository_id = $1 AND v.version = $2",
        )
        .bind(repository_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// The commit the history pipeline last brought repository `repository_id` to.
    pub async fn history_commit(&self, repository_id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT result ->> 'commit' FROM pipeline_runs
              WHERE pipeline = 'history' AND repository_id = $1 AND status = 'success'
                AND result ? 'commit'
              ORDER BY finished_at DESC LIMIT 1",
        )
        .bind(repository_id)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// Repository `repository_id`'s indexed files (not skipped), by path.
    pub async fn indexed_paths(&self, repository_id: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT path FROM files WHERE repository_id = $1 AND skip_reason IS NULL ORDER BY path",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many commits of repository `repository_id` are stored.
    pub async fn commit_count(&self, repository_id: i64) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM commits WHERE repository_id = $1")
                .bind(repository_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
