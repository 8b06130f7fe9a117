//! Events of the base ingestion (`events`) and the router that turns them into pipeline runs
//! (see `domain::pipelines` for the contract and the rules).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Store, StoreError};
use crate::domain::pipelines::{self, EventName, Grain, Pipeline};

/// How the key of an operator's reingest run starts.
pub const REINGEST_KEY: &str = "reingest:";

/// The channel a new event is announced on (delivered when its transaction commits).
pub const CHANNEL: &str = "trawl_events";

/// One recorded event.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Event {
    pub id: i64,
    pub name: String,
    pub repository_id: i64,
    pub run_id: Option<i64>,
    pub source_kind: String,
    pub language: Option<String>,
    pub index_version: i32,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub metadata: Value,
    pub routed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Records run `run_id`'s events for index version `version` of repository `repository_id`,
/// inside the transaction that stamps the version: one `snippets.ingested` per language
/// and batch of files it ingested, one `files.deleted` per batch it removed.
pub(super) async fn emit(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    run_id: i64,
    repository_id: i64,
    version: i32,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO events (name, repository_id, run_id, source_kind, language, index_version, metadata)
         SELECT CASE WHEN b.deleted THEN 'files.deleted' ELSE 'snippets.ingested' END,
                $1, $2, r.source_kind, b.language, $3,
                jsonb_build_object('paths', to_jsonb(b.paths))
                  || COALESCE(jsonb_build_object('commit', NULLIF(run.result #>> '{sync,commit}', '')), '{}')
           FROM (SELECT i.deleted, i.language, array_agg(i.path ORDER BY i.path) AS paths
                   FROM (SELECT i.path, i.change = 'deleted' AS deleted,
                                CASE WHEN i.change = 'deleted' THEN NULL ELSE f.language END AS language,
                                (row_number() OVER (PARTITION BY i.change = 'deleted',
                                     CASE WHEN i.change = 'deleted' THEN NULL ELSE f.language END
                                     ORDER BY i.path) - 1) / $4 AS chunk
                           FROM run_items i
                           LEFT JOIN files f ON f.repository_id = $1 AND f.path = i.path
                          WHERE i.run_id = $2 AND i.status = 'completed') i
                  GROUP BY i.deleted, i.language, i.chunk) b
           JOIN repositories r ON r.id = $1
           JOIN runs run ON run.id = $2
          ORDER BY b.deleted, b.language NULLS LAST",
    )
    .bind(repository_id)
    .bind(run_id)
    .bind(version)
    .bind(pipelines::EVENT_BATCH as i64)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() > 0 {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(repository_id.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(done.rows_affected())
}

/// An unrouted event with what the rules need.
#[derive(sqlx::FromRow)]
struct Pending {
    id: i64,
    name: String,
    repository_id: i64,
    source_kind: String,
    language: Option<String>,
    index_version: i32,
    metadata: Value,
    repo_flags: Value,
    run_flags: Option<Value>,
}

/// What routing did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// Events routed.
    pub events: usize,
    /// Pipeline runs created (an event routed twice creates none the second time).
    pub runs: usize,
}

fn flags(v: Option<&Value>) -> Option<BTreeMap<String, bool>> {
    v.and_then(|v| serde_json::from_value(v.clone()).ok())
}

fn paths(metadata: &Value) -> Vec<String> {
    metadata
        .get("paths")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default()
}

impl Store {
    /// Routes up to `limit` unrouted events: for each enabled pipeline that wants an event,
    /// a pipeline run (unique per pipeline, repository and key, so routing again creates
    /// nothing) and its job in the pipeline's queue; the events are marked routed. Events
    /// another router holds are passed by.
    pub async fn route_events(&self, limit: i64, max_attempts: i32) -> Result<Routed, StoreError> {
        let mut tx = self.pool.begin().await?;
        let pending: Vec<Pending> = sqlx::query_as(
            "SELECT e.id, e.name, e.repository_id, e.source_kind, e.language, e.index_version,
                    e.metadata, r.pipelines AS repo_flags, run.settings -> 'pipelines' AS run_flags
               FROM events e
               JOIN repositories r ON r.id = e.repository_id
               LEFT JOIN runs run ON run.id = e.run_id
              WHERE e.routed_at IS NULL
              ORDER BY e.id LIMIT $1
                FOR UPDATE OF e SKIP LOCKED",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut routed = Routed::default();
        for e in &pending {
            let Some(name) = EventName::parse(&e.name) else {
                continue;
            };
            let repo = flags(Some(&e.repo_flags)).unwrap_or_default();
            let run = flags(e.run_flags.as_ref());
            for p in Pipeline::ALL {
                if !pipelines::enabled(p, &repo, run.as_ref())
                    || !p.wants(name, &e.source_kind, e.language.as_deref())
                {
                    continue;
                }
                let files = paths(&e.metadata);
                let (key, event, work, deleted) = match p.grain() {
                    // A pipeline's first run for a repository covers every file: one
                    // indexed before the pipeline was switched on has files no event
                    // names again.
                    Grain::Event if has_run_for(&mut tx, p, e.id).await? => continue,
                    // A pending run over every file, of this version or a newer one, takes
                    // this event's files too.
                    Grain::Event
                        if has_whole_run(&mut tx, p, e.repository_id, e.index_version).await? =>
                    {
                        continue;
                    }
                    Grain::Event if !has_runs(&mut tx, p, e.repository_id).await? => {
                        ("first".to_string(), Some(e.id), None, Vec::new())
                    }
                    Grain::Event => {
                        let (work, deleted) = match name {
                            EventName::SnippetsIngested => (files, Vec::new()),
                            EventName::FilesDeleted => (Vec::new(), files),
                        };
                        (format!("event:{}", e.id), Some(e.id), Some(work), deleted)
                    }
                    Grain::Version => (
                        format!("version:{}", e.index_version),
                        None,
                        None,
                        Vec::new(),
                    ),
                };
                let job_id = ulid::Ulid::generate().to_string();
                if insert_run(
                    &mut tx,
                    p,
                    e.repository_id,
                    &key,
                    event,
                    e.index_version,
                    work.as_deref(),
                    &deleted,
                    &job_id,
                    max_attempts,
                )
                .await?
                {
                    routed.runs += 1;
                }
            }
            routed.events += 1;
        }
        let ids: Vec<i64> = pending.iter().map(|e| e.id).collect();
        sqlx::query("UPDATE events SET routed_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(routed)
    }

    /// Creates a pipeline run of `pipeline` for every file of repository `repository_id`
    /// (an operator's reingest), at its current index version; returns its id.
    pub async fn enqueue_pipeline_run(
        &self,
        pipeline: Pipeline,
        repository_id: i64,
        max_attempts: i32,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let version: i32 = sqlx::query_scalar(
            "SELECT COALESCE(max(version), 0) FROM index_versions WHERE repository_id = $1",
        )
        .bind(repository_id)
        .fetch_one(&mut *tx)
        .await?;
        let job_id = ulid::Ulid::generate().to_string();
        insert_run(
            &mut tx,
            pipeline,
            repository_id,
            &format!("{REINGEST_KEY}{job_id}"),
            None,
            version,
            None,
            &[],
            &job_id,
            max_attempts,
        )
        .await?;
        let id = sqlx::query_scalar("SELECT id FROM pipeline_runs WHERE job_id = $1")
            .bind(&job_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The events of run `run_id`, oldest first.
    /// What the downstream pipelines still have to do after run `run_id` of repository
    /// `repository_id`: its events not routed yet, and the repository's open pipeline runs.
    pub async fn pipeline_work_left(
        &self,
        run_id: i64,
        repository_id: i64,
    ) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE run_id = $1 AND routed_at IS NULL),
                    (SELECT count(*) FROM pipeline_runs
                      WHERE repository_id = $2 AND status IN ('pending', 'running'))",
        )
        .bind(run_id)
        .bind(repository_id)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn events_of_run(&self, run_id: i64) -> Result<Vec<Event>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM events WHERE run_id = $1 ORDER BY id")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

/// Whether event `event` has a run of `pipeline` already (routed before).
async fn has_run_for(
    tx: &mut sqlx::PgConnection,
    pipeline: Pipeline,
    event: i64,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pipeline_runs WHERE pipeline = $1 AND event_id = $2)",
    )
    .bind(pipeline.as_str())
    .bind(event)
    .fetch_one(tx)
    .await?)
}

/// Whether `pipeline` has a pending run over every file of repository `repository_id` at
/// index version `version` or a newer one (it has not read the files yet).
async fn has_whole_run(
    tx: &mut sqlx::PgConnection,
    pipeline: Pipeline,
    repository_id: i64,
    version: i32,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pipeline_runs
                         WHERE pipeline = $1 AND repository_id = $2 AND paths IS NULL
                           AND status = 'pending' AND index_version >= $3)",
    )
    .bind(pipeline.as_str())
    .bind(repository_id)
    .bind(version)
    .fetch_one(tx)
    .await?)
}

/// Whether `pipeline` ever had a run for repository `repository_id`.
async fn has_runs(
    tx: &mut sqlx::PgConnection,
    pipeline: Pipeline,
    repository_id: i64,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pipeline_runs WHERE pipeline = $1 AND repository_id = $2)",
    )
    .bind(pipeline.as_str())
    .bind(repository_id)
    .fetch_one(tx)
    .await?)
}

/// Inserts a pipeline run and its job (one transaction with the caller's); false when the
/// run existed (routed before).
#[allow(clippy::too_many_arguments)]
async fn insert_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    pipeline: Pipeline,
    repository_id: i64,
    key: &str,
    event: Option<i64>,
    version: i32,
    paths: Option<&[String]>,
    deleted: &[String],
    job_id: &str,
    max_attempts: i32,
) -> Result<bool, StoreError> {
    let created = sqlx::query(
        "INSERT INTO pipeline_runs (pipeline, repository_id, key, event_id, index_version, paths,
                                    deleted, job_id, max_attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (pipeline, repository_id, key) DO NOTHING",
    )
    .bind(pipeline.as_str())
    .bind(repository_id)
    .bind(key)
    .bind(event)
    .bind(version)
    .bind(paths)
    .bind(deleted)
    .bind(job_id)
    .bind(max_attempts)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        > 0;
    if created {
        let payload = serde_json::to_vec(&serde_json::json!({ "pipeline": pipeline.as_str() }))
            .expect("a payload serialises");
        sqlx::query("SELECT trawl_create_job($1, $2, $3, $4)")
            .bind(job_id)
            .bind(pipeline.queue())
            .bind(payload)
            .bind(max_attempts)
            .execute(&mut **tx)
            .await?;
    }
    Ok(created)
}
