//! The keyword index's change log (`keyword_changes`): BM25_INDEX publishes each run's
//! changed files here, and every node's keyword index applies the changes after the last
//! one it applied, in order (`search::follow`).
//!
//! Changes are numbered under a transaction-scoped advisory lock, so they commit in the
//! order of their numbers: a follower that has seen change N has seen every change below N.
//!
//! The log is pruned ([`Store::prune_keyword_changes`], every [`PRUNE_EVERY`]th change
//! published): changes older than [`RETENTION`] go, except the newest [`KEEP`], and the
//! highest number gone is the log's horizon. A follower that applied less than the horizon
//! rebuilds its index from the snippets table (`search::follow`).

use super::{Store, StoreError};

/// The channel a published change is announced on (its number as the payload).
pub const CHANNEL: &str = "trawl_keyword_changes";

/// How long a change stays in the log: a node's index that has not caught up for longer
/// (a machine switched off, a home nobody searched) rebuilds instead.
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);
/// Changes always kept, however old: the newest.
pub const KEEP: i64 = 1_000;
/// The log is pruned when a change whose number is a multiple of this is published.
pub const PRUNE_EVERY: i64 = 64;

/// What a pruning of the log did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Changes deleted.
    pub deleted: u64,
    /// The highest number deleted so far (0: none ever).
    pub horizon: i64,
}

/// One published change: the files of a repository whose documents are to be replaced by
/// their current snippets (None: every file of the repository, which was removed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeywordChange {
    pub seq: i64,
    pub repository_id: i64,
    pub paths: Option<Vec<String>>,
}

/// How far an index that applied the changes up to `applied` is behind the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct KeywordLag {
    /// The last change applied.
    pub applied: i64,
    /// The last change published.
    pub head: i64,
    /// Changes published and not applied yet.
    pub pending: i64,
    /// Seconds since the oldest change not applied was published (0 when none).
    pub seconds: f64,
}

impl Store {
    /// Publishes a change of repository `repository_id`'s files `paths` by run `run_id`;
    /// returns its number.
    pub async fn publish_keyword_change(
        &self,
        repository_id: i64,
        run_id: Option<i64>,
        paths: Option<&[String]>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_numbering(&mut tx).await?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO keyword_changes (seq, repository_id, run_id, paths)
             VALUES (nextval('keyword_changes_seq'), $1, $2, $3) RETURNING seq",
        )
        .bind(repository_id)
        .bind(run_id)
        .bind(paths)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(seq.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if seq % PRUNE_EVERY == 0 {
            // Housekeeping: the change is published whatever becomes of it.
            match self.prune_keyword_changes(RETENTION, KEEP).await {
                Ok(p) if p.deleted > 0 => {
                    tracing::info!(
                        deleted = p.deleted,
                        horizon = p.horizon,
                        "pruned the keyword change log"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the keyword change log failed; the next prune tries again")
                }
            }
        }
        Ok(seq)
    }

    /// Deletes the changes committed more than `older_than` ago, except the newest `keep`,
    /// and moves the horizon (the highest number deleted) up to them. Under the lock that
    /// numbers changes, so none is published meanwhile.
    pub async fn prune_keyword_changes(
        &self,
        older_than: std::time::Duration,
        keep: i64,
    ) -> Result<Pruned, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_numbering(&mut tx).await?;
        let (deleted, horizon): (i64, i64) = sqlx::query_as(
            "WITH cut AS (
                 SELECT max(seq) AS through FROM keyword_changes
                  WHERE committed_at < now() - make_interval(secs => $1)
                    AND seq <= (SELECT max(seq) FROM keyword_changes) - $2),
             gone AS (
                 DELETE FROM keyword_changes WHERE seq <= (SELECT through FROM cut)
                 RETURNING seq),
             moved AS (
                 UPDATE keyword_log_horizon
                    SET pruned_through = GREATEST(pruned_through, (SELECT through FROM cut))
                  WHERE (SELECT through FROM cut) IS NOT NULL
                 RETURNING pruned_through)
             SELECT (SELECT count(*) FROM gone),
                    COALESCE((SELECT pruned_through FROM moved),
                             (SELECT pruned_through FROM keyword_log_horizon), 0)",
        )
        .bind(older_than.as_secs_f64())
        .bind(keep.max(0))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Pruned {
            deleted: deleted.max(0) as u64,
            horizon,
        })
    }

    /// The log's horizon: the highest number of a change pruned (0 when none was). An
    /// index that applied less has missed changes for good.
    pub async fn keyword_horizon(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE((SELECT pruned_through FROM keyword_log_horizon), 0)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The number of the last change published (0 before the first).
    pub async fn keyword_head(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM keyword_changes")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Up to `limit` changes after `after`, in order.
    pub async fn keyword_changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<KeywordChange>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, repository_id, paths FROM keyword_changes
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How far an index that applied the changes up to `applied` is behind.
    pub async fn keyword_lag(&self, applied: i64) -> Result<KeywordLag, StoreError> {
        let (head, pending, seconds): (i64, i64, f64) = sqlx::query_as(
            "SELECT (SELECT COALESCE(max(seq), $1) FROM keyword_changes), count(*),
                    COALESCE(EXTRACT(EPOCH FROM now() - min(committed_at)), 0)::float8
             FROM keyword_changes WHERE seq > $1",
        )
        .bind(applied)
        .fetch_one(&self.pool)
        .await?;
        Ok(KeywordLag {
            applied,
            head,
            pending,
            seconds: seconds.max(0.0),
        })
    }
}

/// The lock under which changes are numbered (and the log pruned), held to `tx`'s end;
/// `trawl_remove_repository` in lifecycle.sql takes the same one.
async fn lock_numbering(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('trawl.keyword_changes'))")
        .execute(&mut **tx)
        .await?;
    Ok(())
}
