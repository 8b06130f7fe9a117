//! apalis' worker registry (`apalis.workers`): registering a worker, its heartbeats while
//! it drains, marking it gone, and whether any worker is alive.

use std::time::Duration;

use sqlx::{Postgres, Transaction};

use super::{Store, StoreError};

/// Registers worker `id` of `worker_type` (its queue) with its `layers` in
/// `apalis.workers` inside `tx`, as apalis-postgres does, seen now.
pub async fn register_worker(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
    worker_type: &str,
    layers: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ($1, $2, 'TrawlJobBackend', $3, now())
         ON CONFLICT (id) DO UPDATE SET worker_type = EXCLUDED.worker_type,
             storage_name = EXCLUDED.storage_name, layers = EXCLUDED.layers, last_seen = now()",
    )
    .bind(id)
    .bind(worker_type)
    .bind(layers)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Marks the workers whose id starts with `prefix` (one process' workers) seen now, so
    /// their jobs are not taken for orphans while they drain.
    pub async fn keep_workers_alive(&self, prefix: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE apalis.workers SET last_seen = now() WHERE starts_with(id, $1)")
            .bind(prefix)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the workers whose id starts with `prefix` gone (last seen a day ago), so
    /// nobody counts on them.
    pub async fn mark_workers_gone(&self, prefix: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE apalis.workers SET last_seen = now() - interval '1 day' WHERE starts_with(id, $1)",
        )
        .bind(prefix)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether some worker of `worker_type` (its queue) sent a heartbeat within `within`.
    pub async fn workers_alive(
        &self,
        worker_type: &str,
        within: Duration,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM apalis.workers WHERE worker_type = $1 AND last_seen > now() - make_interval(secs => $2))",
        )
        .bind(worker_type)
        .bind(within.as_secs_f64())
        .fetch_one(&self.pool)
        .await?)
    }

    /// Waits until no other session holds advisory lock `key`, then lets go of it at once
    /// (the lock is the transaction's, so it cannot outlive this call, even if it is cut
    /// short): the test faults' gate (`<stage>:gate:<key>`, debug builds only).
    pub async fn pass_advisory_gate(&self, key: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
