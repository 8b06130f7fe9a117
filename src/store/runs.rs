//! Runs, stage runs and run items: creating runs and reading them. Their transitions are
//! [`super::lifecycle`]'s.

use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, Postgres, Transaction};

use super::error::retrying_conflicts;
use super::{Store, StoreError, lifecycle};
use crate::domain::scope::Scope;
use crate::domain::{PriorityClass, RunStatus, Stage, StageStatus, Trigger};

#[derive(Debug, Clone, Serialize, serde::Deserialize, FromRow, schemars::JsonSchema)]
pub struct Run {
    pub id: i64,
    pub repository_id: i64,
    pub trigger: String,
    pub origin: String,
    pub priority_base: i32,
    /// high, normal or low, as asked for.
    pub priority_class: String,
    /// What it indexes; a stored scope this build cannot read fails the row's decoding
    /// (and so the stage that claimed it), never widens to the whole project.
    #[schemars(with = "Scope")]
    pub scope: sqlx::types::Json<Scope>,
    pub full_reindex: bool,
    /// What the process that asked for it was configured with; None for a run recorded
    /// before runs carried them.
    #[schemars(with = "Option<crate::domain::settings::RunSettings>")]
    pub settings: Option<sqlx::types::Json<crate::domain::settings::RunSettings>>,
    pub status: RunStatus,
    pub result: Value,
    pub error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct StageRun {
    pub run_id: i64,
    pub stage: String,
    pub ordinal: i16,
    pub job_id: String,
    pub status: StageStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub items_total: i32,
    pub items_done: i32,
    pub items_failed: i32,
    pub current_item: Option<String>,
    pub last_error: Option<String>,
    pub queued_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A file a run touched.
#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct RunItem {
    pub path: String,
    /// added, modified, deleted
    pub change: String,
    /// pending, processing, completed, failed, skipped
    pub status: String,
    /// The error of a failed item, the reason of a skipped one.
    pub message: Option<String>,
    pub duration_ms: Option<i32>,
}

/// A file a run could not process.
#[derive(Debug, Clone, Serialize, FromRow, schemars::JsonSchema)]
pub struct ItemFailure {
    pub path: String,
    pub error: Option<String>,
}

/// What a new run is.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub repository_id: i64,
    pub trigger: Trigger,
    pub origin: String,
    pub priority: PriorityClass,
    pub scope: Scope,
    pub full: bool,
    /// Attempts allowed per stage, by ordinal.
    pub max_attempts: [u32; 5],
    /// What the asking process is configured with (`Config::run_settings`).
    pub settings: Option<crate::domain::settings::RunSettings>,
}

/// What enqueueing did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Enqueued {
    /// A new run, its five jobs in the queue; `superseded` lists background runs it cancelled.
    Created { run_id: i64, superseded: Vec<i64> },
    /// A background run was asked for while one is already pending: nothing new.
    AlreadyPending { run_id: i64 },
}

/// What [`Store::enqueue_or_join`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Joined {
    /// The changes joined queued run `run_id`, whose scope is now `scope`.
    Joined { run_id: i64, scope: Scope },
    /// No run to join: as [`Store::enqueue_run`] did.
    Enqueued(Enqueued),
}

impl Joined {
    pub fn run_id(&self) -> i64 {
        match self {
            Joined::Joined { run_id, .. } => *run_id,
            Joined::Enqueued(e) => e.run_id(),
        }
    }
}

impl Enqueued {
    /// The run asked for: the new one, or the one already pending.
    pub fn run_id(&self) -> i64 {
        match self {
            Enqueued::Created { run_id, .. } | Enqueued::AlreadyPending { run_id } => *run_id,
        }
    }
}

impl Store {
    /// Those of `repository_ids` with an indexed file in one of `languages`.
    pub async fn repositories_with_languages(
        &self,
        repository_ids: &[i64],
        languages: &[String],
    ) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT repository_id FROM files
              WHERE repository_id = ANY($1) AND language = ANY($2) AND skip_reason IS NULL
              ORDER BY repository_id",
        )
        .bind(repository_ids)
        .bind(languages)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Those of `repository_ids` with an unfinished full run of scope `scope` (a reingest
    /// asked for again finds its first one still to do).
    pub async fn repositories_with_unfinished_full_run(
        &self,
        repository_ids: &[i64],
        scope: &crate::domain::scope::Scope,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT repository_id FROM runs
              WHERE repository_id = ANY($1) AND full_reindex AND scope = $2
                AND status IN ('queued', 'running', 'paused')
              ORDER BY repository_id",
        )
        .bind(repository_ids)
        .bind(sqlx::types::Json(scope))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Creates a run with its five stage runs and five stage jobs, in one transaction: SYNC
    /// ready to run, the rest parked until their predecessor succeeds.
    ///
    /// A background run is not created while the repository has an unfinished run. A user
    /// run cancels the repository's queued background runs (superseding them).
    ///
    /// A deadlock with another transaction (which the lock order below avoids with a
    /// worker's claim) runs the enqueue again.
    pub async fn enqueue_run(&self, new: &NewRun) -> Result<Enqueued, StoreError> {
        retrying_conflicts(|| async {
            let mut tx = self.pool.begin().await?;
            let enqueued = enqueue_in(&mut tx, new).await?;
            tx.commit().await?;
            Ok(enqueued)
        })
        .await
    }

    /// Adds `new`'s scope to the repository's queued run of the same origin whose SYNC has
    /// not begun (so changes that arrive while a watch run waits join it, one run however
    /// many saves), or enqueues `new` when there is none. `new.scope` is a files or project
    /// scope; files join as a union, a project scope takes the run over.
    ///
    /// The SYNC job is locked first, as a worker's claim locks it (SKIP LOCKED): a job being
    /// claimed at that moment is not joined, and a new run is queued behind it instead.
    pub async fn enqueue_or_join(&self, new: &NewRun) -> Result<Joined, StoreError> {
        retrying_conflicts(|| self.enqueue_or_join_once(new)).await
    }

    async fn enqueue_or_join_once(&self, new: &NewRun) -> Result<Joined, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_enqueues(&mut tx, new.repository_id).await?;
        let open: Option<(i64, sqlx::types::Json<Scope>)> = sqlx::query_as(
            "SELECT r.id, r.scope FROM runs r
               JOIN stage_runs s ON s.run_id = r.id AND s.ordinal = 0
               JOIN apalis.jobs j ON j.id = s.job_id
              WHERE r.repository_id = $1 AND r.origin = $2 AND r.status = 'queued'
                AND NOT r.full_reindex AND s.status IN ('queued', 'waiting')
                AND j.status IN ('Pending', 'Waiting') AND j.lock_by IS NULL
              ORDER BY r.id DESC LIMIT 1
              FOR UPDATE OF j SKIP LOCKED",
        )
        .bind(new.repository_id)
        .bind(&new.origin)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((run_id, scope)) = open {
            // Re-read under locks: the SYNC stage, then the run (a claim's order).
            let still: Option<i64> = sqlx::query_scalar(
                "SELECT r.id FROM stage_runs s JOIN runs r ON r.id = s.run_id
                  WHERE s.run_id = $1 AND s.ordinal = 0 AND s.status IN ('queued', 'waiting')
                    AND r.status = 'queued'
                  FOR UPDATE OF s, r",
            )
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
            if still.is_some() {
                let merged = scope.0.joined(&new.scope);
                if merged != scope.0 {
                    set_scope(&mut tx, run_id, new.repository_id, &merged).await?;
                }
                tx.commit().await?;
                return Ok(Joined::Joined {
                    run_id,
                    scope: merged,
                });
            }
        }
        let enqueued = enqueue_in(&mut tx, new).await?;
        tx.commit().await?;
        Ok(Joined::Enqueued(enqueued))
    }

    /// Enqueues several runs in one transaction (all or none), as [`Store::enqueue_run`]
    /// does each; the results in the order of `runs`.
    pub async fn enqueue_runs(&self, runs: &[NewRun]) -> Result<Vec<Enqueued>, StoreError> {
        // Repositories' enqueue locks taken in one order, so two batches never deadlock.
        let mut order: Vec<usize> = (0..runs.len()).collect();
        order.sort_by_key(|&i| runs[i].repository_id);
        retrying_conflicts(|| async {
            let mut tx = self.pool.begin().await?;
            let mut out = vec![None; runs.len()];
            for &i in &order {
                out[i] = Some(enqueue_in(&mut tx, &runs[i]).await?);
            }
            tx.commit().await?;
            Ok(out.into_iter().flatten().collect())
        })
        .await
    }

    pub async fn run(&self, run_id: i64) -> Result<Run, StoreError> {
        sqlx::query_as("SELECT * FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))
    }

    pub async fn stage_runs(&self, run_id: i64) -> Result<Vec<StageRun>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM stage_runs WHERE run_id = $1 ORDER BY ordinal")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The most recent runs, newest first: of one repository or all, in one status or any.
    pub async fn list_runs(
        &self,
        repository_id: Option<i64>,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Run>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM runs WHERE ($1::bigint IS NULL OR repository_id = $1)
               AND ($2::text IS NULL OR status = $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(repository_id)
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The stages of several runs, by run and ordinal.
    pub async fn stage_runs_of(&self, run_ids: &[i64]) -> Result<Vec<StageRun>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM stage_runs WHERE run_id = ANY($1) ORDER BY run_id DESC, ordinal",
        )
        .bind(run_ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The files run `run_id` touched (only the failed ones with `failed_only`), by path.
    pub async fn run_items(
        &self,
        run_id: i64,
        failed_only: bool,
    ) -> Result<Vec<RunItem>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT path, change, status, message, duration_ms FROM run_items
             WHERE run_id = $1 AND (NOT $2 OR status = 'failed') ORDER BY path",
        )
        .bind(run_id)
        .bind(failed_only)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The files run `run_id` failed, with their errors, by path: what `--wait` reports.
    pub async fn failed_items(&self, run_id: i64) -> Result<Vec<ItemFailure>, StoreError> {
        Ok(sqlx::query_as::<_, ItemFailure>(
            "SELECT path, message AS error FROM run_items WHERE run_id = $1 AND status = 'failed' ORDER BY path",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The ids of a repository's runs that have not ended, oldest first.
    pub async fn unfinished_runs(&self, repository_id: i64) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE repository_id = $1 AND status IN ('queued', 'running', 'paused')
             ORDER BY id",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Enqueues a run for item `item` of batch job `job_id` and records the item with it,
    /// in one transaction: a retried batch never enqueues the run twice.
    pub async fn enqueue_batch_item(
        &self,
        new: &NewRun,
        job_id: &str,
        item: &str,
    ) -> Result<Enqueued, StoreError> {
        retrying_conflicts(|| self.enqueue_batch_item_once(new, job_id, item)).await
    }

    async fn enqueue_batch_item_once(
        &self,
        new: &NewRun,
        job_id: &str,
        item: &str,
    ) -> Result<Enqueued, StoreError> {
        let mut tx = self.pool.begin().await?;
        let enqueued = enqueue_in(&mut tx, new).await?;
        let run_id = enqueued.run_id();
        let message = match enqueued {
            Enqueued::Created { .. } => format!("run {run_id} enqueued"),
            Enqueued::AlreadyPending { .. } => format!("run {run_id} already pending"),
        };
        sqlx::query(
            "INSERT INTO batch_items (job_id, item, status, message, run_id)
             VALUES ($1, $2, 'done', $3, $4)
             ON CONFLICT (job_id, item) DO UPDATE SET status = 'done',
                 message = EXCLUDED.message, run_id = EXCLUDED.run_id, at = now()",
        )
        .bind(job_id)
        .bind(item)
        .bind(message)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(enqueued)
    }

    /// A run's items done and failed (completed, or skipped with a reason, count as done).
    pub async fn item_counts(&self, run_id: i64) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('completed', 'skipped')),
                    count(*) FILTER (WHERE status = 'failed')
             FROM run_items WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// What each stage cost, SYNC..ENRICH, in each of the last ten runs that succeeded
    /// with a scope of `scope_kind` (of `repository_id`, or of any) and had work after
    /// SYNC: per run, newest first, its stages' seconds and items. A stage's time runs
    /// from its predecessor's end (the run's start for SYNC) to its own, so the hand-over
    /// between stages is counted and the five make the run's duration. Runs that found
    /// nothing changed are left out: a repository synced in the background is mostly
    /// those, and they would say the next real run takes no time.
    pub async fn stage_costs(
        &self,
        repository_id: Option<i64>,
        scope_kind: &str,
    ) -> Result<Vec<([f64; 5], [f64; 5])>, StoreError> {
        let rows: Vec<(i64, i16, f64, f64)> = sqlx::query_as(
            "WITH recent AS (
                 SELECT id, started_at FROM runs
                  WHERE status = 'succeeded' AND started_at IS NOT NULL
                    AND ($1::bigint IS NULL OR repository_id = $1) AND scope->>'kind' = $2
                    AND EXISTS (SELECT 1 FROM stage_runs w
                                 WHERE w.run_id = runs.id AND w.ordinal > 0 AND w.items_total > 0)
                  ORDER BY id DESC LIMIT 10)
             SELECT r.id, s.ordinal,
                    GREATEST(extract(epoch FROM s.finished_at
                                     - COALESCE(p.finished_at, r.started_at)), 0)::float8,
                    s.items_total::float8
               FROM recent r
               JOIN stage_runs s ON s.run_id = r.id AND s.finished_at IS NOT NULL
               LEFT JOIN stage_runs p ON p.run_id = s.run_id AND p.ordinal = s.ordinal - 1
              ORDER BY r.id DESC, s.ordinal",
        )
        .bind(repository_id)
        .bind(scope_kind)
        .fetch_all(&self.pool)
        .await?;
        let mut runs: Vec<(i64, [f64; 5], [f64; 5])> = Vec::new();
        for (run, ordinal, secs, n) in rows {
            let Some(i) = usize::try_from(ordinal).ok().filter(|i| *i < 5) else {
                continue;
            };
            if runs.last().is_none_or(|(id, _, _)| *id != run) {
                runs.push((run, [0.0; 5], [0.0; 5]));
            }
            let (_, seconds, items) = runs.last_mut().expect("pushed above");
            (seconds[i], items[i]) = (secs, n);
        }
        Ok(runs.into_iter().map(|(_, s, i)| (s, i)).collect())
    }

    /// The commit the last successful sync of repository `repository_id` checked out (a
    /// git source's; none for a directory).
    pub async fn last_synced_commit(
        &self,
        repository_id: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT result->'sync'->>'commit' FROM runs
              WHERE repository_id = $1 AND status = 'succeeded'
                AND jsonb_typeof(result->'sync'->'commit') = 'string'
              ORDER BY id DESC LIMIT 1",
        )
        .bind(repository_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Runs of repository `repository_id` asked for by `origin` (the watch's, say).
    pub async fn count_runs_of_origin(
        &self,
        repository_id: i64,
        origin: &str,
    ) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT count(*) FROM runs WHERE repository_id = $1 AND origin = $2",
            )
            .bind(repository_id)
            .bind(origin)
            .fetch_one(&self.pool)
            .await?,
        )
    }

    /// Seconds per snippet embedded by CODE_EMBEDDINGS over the last runs that embedded
    /// any: what an embeddings-only run's duration is estimated from. None without such runs.
    pub async fn seconds_per_embedding(&self) -> Result<Option<f64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT sum((e->>'seconds')::float8) / NULLIF(sum((e->>'embedded')::float8), 0)
             FROM (SELECT result->'code_embeddings' AS e FROM runs
                    WHERE status = 'succeeded'
                      AND jsonb_typeof(result->'code_embeddings'->'embedded') = 'number'
                      AND (result->'code_embeddings'->>'embedded')::float8 > 0
                      AND jsonb_typeof(result->'code_embeddings'->'seconds') = 'number'
                    ORDER BY id DESC LIMIT 20) r",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Seconds per item over the last runs that succeeded with items: the measured
    /// throughput a new run's duration is estimated from. None without such runs.
    pub async fn seconds_per_item(&self) -> Result<Option<f64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT sum(extract(epoch FROM r.finished_at - r.started_at))::float8
                    / NULLIF(sum(c.n), 0)::float8
             FROM (SELECT id, started_at, finished_at FROM runs
                    WHERE status = 'succeeded' AND started_at IS NOT NULL
                    ORDER BY id DESC LIMIT 20) r
             JOIN LATERAL (SELECT count(*) AS n FROM run_items i WHERE i.run_id = r.id) c
               ON c.n > 0",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Creates a run with its five stage runs and jobs inside `tx` (see [`Store::enqueue_run`]).
/// Serialises enqueues of repository `repository_id` until `tx` ends: the pile-up,
/// supersede and join rules read, then write.
async fn lock_enqueues(
    tx: &mut Transaction<'_, Postgres>,
    repository_id: i64,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(7001, $1::int)")
        .bind(repository_id as i32)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Gives queued run `run_id` a new scope: its row and its five jobs' payloads.
async fn set_scope(
    tx: &mut Transaction<'_, Postgres>,
    run_id: i64,
    repository_id: i64,
    scope: &Scope,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE runs SET scope = $2 WHERE id = $1")
        .bind(run_id)
        .bind(sqlx::types::Json(scope))
        .execute(&mut **tx)
        .await?;
    let jobs: Vec<(String, String)> =
        sqlx::query_as("SELECT job_id, stage FROM stage_runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(&mut **tx)
            .await?;
    for (job_id, stage) in jobs {
        let stage = Stage::parse(&stage)
            .ok_or_else(|| StoreError::Invalid(format!("stage {stage:?} of run {run_id}")))?;
        let job = crate::domain::job::StageJob {
            run_id,
            repository_id,
            stage,
            scope: scope.clone(),
        };
        sqlx::query("UPDATE apalis.jobs SET job = $2 WHERE id = $1")
            .bind(&job_id)
            .bind(serde_json::to_vec(&job).expect("stage job serialises"))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn enqueue_in(
    tx: &mut Transaction<'_, Postgres>,
    new: &NewRun,
) -> Result<Enqueued, StoreError> {
    lock_enqueues(tx, new.repository_id).await?;

    let mut superseded = Vec::new();
    match new.trigger {
        Trigger::Background => {
            let pending: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM runs WHERE repository_id = $1 AND status IN ('queued', 'running', 'paused') ORDER BY id LIMIT 1",
            )
            .bind(new.repository_id)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(run_id) = pending {
                return Ok(Enqueued::AlreadyPending { run_id });
            }
        }
        Trigger::User => {
            // The superseded runs' jobs first, as a worker's claim locks them (job, stage,
            // run): a claim of their SYNC under way is waited for (its run is then no longer
            // queued, so it is not superseded), and a claim after this skips them. Locking
            // the runs first would deadlock with such a claim.
            sqlx::query(
                "SELECT j.id FROM runs r
                   JOIN stage_runs s ON s.run_id = r.id
                   JOIN apalis.jobs j ON j.id = s.job_id
                  WHERE r.repository_id = $1 AND r.trigger = 'background' AND r.status = 'queued'
                  ORDER BY j.id
                    FOR UPDATE OF j",
            )
            .bind(new.repository_id)
            .execute(&mut **tx)
            .await?;
            superseded = sqlx::query_scalar(
                "SELECT id FROM runs WHERE repository_id = $1 AND trigger = 'background' AND status = 'queued' FOR UPDATE",
            )
            .bind(new.repository_id)
            .fetch_all(&mut **tx)
            .await?;
        }
    }

    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (repository_id, trigger, origin, priority_base, priority_class, scope,
                           full_reindex, settings)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(new.repository_id)
    .bind(new.trigger.as_str())
    .bind(&new.origin)
    .bind(new.priority.base())
    .bind(new.priority.as_str())
    .bind(sqlx::types::Json(&new.scope))
    .bind(new.full)
    .bind(new.settings.as_ref().map(sqlx::types::Json))
    .fetch_one(&mut **tx)
    .await?;

    for old in &superseded {
        let reason = format!("superseded by user run {run_id}");
        lifecycle::cancel_run_in(tx, *old, &reason).await?;
        super::audit::audit_in(
            tx,
            &super::audit::NewAuditEntry {
                actor: "trawl",
                action: "cancel",
                repository_id: Some(new.repository_id),
                run_id: Some(*old),
                parameters: serde_json::json!({ "superseded_by": run_id }),
                outcome: Ok(Some(reason)),
            },
        )
        .await?;
    }

    let payloads = Stage::ALL.map(|stage| {
        let job = crate::domain::job::StageJob {
            run_id,
            repository_id: new.repository_id,
            stage,
            scope: new.scope.clone(),
        };
        serde_json::to_vec(&job).expect("stage job serialises")
    });
    let attempts = Stage::ALL.map(|s| new.max_attempts[s.ordinal() as usize].max(1) as i32);
    let priorities = Stage::ALL.map(|s| s.priority(new.priority.base()));
    lifecycle::create_stages(tx, run_id, &payloads, attempts, priorities).await?;
    Ok(Enqueued::Created { run_id, superseded })
}
