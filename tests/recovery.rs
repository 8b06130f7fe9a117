//! Failure of the workers themselves: SIGKILL mid-stage, graceful shutdown on SIGTERM.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::{GATE, Gate, TestDb, gate_fault, poll_until, trawl_cmd};

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::write(
            dir.path().join(format!("m{i}.py")),
            format!("def f{i}():\n    return {i}\n"),
        )
        .unwrap();
    }
    dir
}

fn worker(db: &TestDb, faults: &str, extra: &[(&str, &str)]) -> Child {
    worker_logging_to(db, faults, extra, Stdio::null())
}

/// [`worker`] with its log on `stderr`.
fn worker_logging_to(
    db: &TestDb,
    faults: &str,
    extra: &[(&str, &str)],
    stderr: impl Into<Stdio>,
) -> Child {
    trawl_cmd()
        .envs(db.env())
        .env("TRAWL_TEST_FAULTS", faults)
        .env("TRAWL_ORPHAN_TIMEOUT_SECS", "3")
        .env("TRAWL_POLL_INTERVAL_MS", "100")
        .envs(extra.iter().copied())
        .args(["worker", "--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

async fn stage_status(db: &TestDb, run_id: i64, stage: &str) -> (String, i32) {
    sqlx::query_as("SELECT status, attempts FROM stage_runs WHERE run_id = $1 AND stage = $2")
        .bind(run_id)
        .bind(stage)
        .fetch_one(db.store.pool())
        .await
        .unwrap()
}

async fn wait_until_sync_runs(db: &TestDb, run_id: i64) {
    wait_until_stage_runs(db, run_id, "sync", 30).await;
}

async fn wait_until_stage_runs(db: &TestDb, run_id: i64, stage: &str, secs: u64) {
    poll_until(
        Duration::from_secs(secs),
        &format!("{stage} of run {run_id} to run"),
        async |seen| {
            let status = stage_status(db, run_id, stage).await;
            *seen = format!("{status:?}");
            (status.0 == "running").then_some(())
        },
    )
    .await;
}

/// Waits until run `run_id` has ended.
async fn wait_until_finished(db: &TestDb, run_id: i64, secs: u64) {
    poll_until(
        Duration::from_secs(secs),
        &format!("run {run_id} to end"),
        async |seen| {
            let run = db.store.run(run_id).await.unwrap();
            *seen = run.status.to_string();
            run.status.is_finished().then_some(())
        },
    )
    .await;
}

/// SIGTERM, then the worker must exit 0.
fn stop_gracefully(w: &mut Child) {
    sigterm(w);
    exits_zero(w);
}

fn sigterm(w: &Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
}

fn exits_zero(w: &mut Child) {
    let status = w.wait().unwrap();
    assert!(status.success(), "worker exited with {status}");
}

async fn enqueue(db: &TestDb, dir: &std::path::Path) -> i64 {
    let config = db.config();
    let r = trawl::service::index::index(
        &db.store,
        &config,
        dir.to_str().unwrap(),
        "",
        "test",
        trawl::service::index::SourceAccess::Local,
    )
    .await
    .unwrap();
    match r.enqueued {
        trawl::store::runs::Enqueued::Created { run_id, .. } => run_id,
        other => panic!("{other:?}"),
    }
}

async fn files_of(db: &TestDb) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT path, content_hash FROM files ORDER BY path")
        .fetch_all(db.store.pool())
        .await
        .unwrap()
}

/// What a run leaves behind, comparable across databases: snippets by content, code
/// vectors by snippet content (values to 1e-5), and the keyword index's documents.
async fn indexed_state(
    db: &TestDb,
) -> (
    Vec<(String, String, Option<String>, i32, i32, String)>,
    Vec<(String, Vec<f32>)>,
    u64,
) {
    let snippets = sqlx::query_as(
        "SELECT path, kind, name, start_line, end_line, content_hash FROM snippets
         ORDER BY path, start_line, content_hash",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    let vectors: Vec<(String, pgvector::Vector)> = sqlx::query_as(
        "SELECT s.content_hash, v.embedding FROM snippet_vectors v JOIN snippets s ON s.id = v.snippet_id
         WHERE v.kind = 'code' ORDER BY s.content_hash, s.path",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    let vectors = vectors
        .into_iter()
        .map(|(h, v)| {
            (
                h,
                v.to_vec().iter().map(|x| (x * 1e5).round() / 1e5).collect(),
            )
        })
        .collect();
    let keyword =
        trawl::search::keyword::KeywordIndex::open_reader(&db.config().keyword_index_dir())
            .unwrap()
            .num_docs();
    (snippets, vectors, keyword)
}

#[tokio::test]
async fn a_worker_killed_mid_stage_is_taken_over_and_the_result_equals_a_clean_run() {
    let db = TestDb::new().await;
    let dir = fixture();
    let run_id = enqueue(&db, dir.path()).await;
    // SYNC, EXTRACT and BM25_INDEX run; the first attempt of CODE_EMBEDDINGS stalls, long
    // enough to be killed in the middle of the run.
    let mut a = worker(&db, "code_embeddings:sleep:60000", &[]);
    wait_until_stage_runs(&db, run_id, "code_embeddings", 60).await;
    a.kill().unwrap();
    a.wait().unwrap();

    let killed_at = std::time::Instant::now();
    let mut b = worker(&db, "code_embeddings:sleep:60000", &[]);
    wait_until_finished(&db, run_id, 90).await;
    let taken_over_in = killed_at.elapsed();
    b.kill().unwrap();
    b.wait().unwrap();
    let run = db.store.run(run_id).await.unwrap();
    assert_eq!(run.status, "succeeded", "{run:?}");
    assert_eq!(
        stage_status(&db, run_id, "code_embeddings").await,
        ("succeeded".to_string(), 2),
        "the rescued stage ran a second time"
    );
    for earlier in ["sync", "extract", "bm25_index"] {
        assert_eq!(
            stage_status(&db, run_id, earlier).await.1,
            1,
            "{earlier} ran once"
        );
    }
    assert!(
        taken_over_in < Duration::from_secs(30),
        "recovery took {taken_over_in:?}"
    );

    // The same repository indexed cleanly elsewhere leaves the same state.
    let clean = TestDb::new().await;
    let clean_run = enqueue(&clean, dir.path()).await;
    let ctx = trawl::pipeline::PipelineContext::with_faults(
        clean.store.clone(),
        clean.config(),
        Default::default(),
    );
    let done = trawl::service::index::wait_for_run(ctx, clean_run, |_| {})
        .await
        .unwrap();
    assert_eq!(done.status, "succeeded");
    assert_eq!(files_of(&db).await, files_of(&clean).await);
    let (rescued, clean_state) = (indexed_state(&db).await, indexed_state(&clean).await);
    assert_eq!(rescued.0.len(), 20, "one snippet per fixture file");
    assert_eq!(rescued.1.len(), 20, "one code vector per snippet");
    assert_eq!(rescued, clean_state);
}

#[tokio::test]
async fn sigterm_lets_the_running_stage_finish_and_exits_zero() {
    let db = TestDb::new().await;
    let dir = fixture();
    let run_id = enqueue(&db, dir.path()).await;
    // SYNC is held at a gate, running, until the worker has taken the SIGTERM.
    let gate = Gate::hold(&db, GATE).await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut w = worker_logging_to(
        &db,
        &gate_fault("sync", GATE),
        &[
            ("TRAWL_SHUTDOWN_TIMEOUT_SECS", "30"),
            ("RUST_LOG", "trawl=info"),
        ],
        log.reopen().unwrap(),
    );
    wait_until_sync_runs(&db, run_id).await;
    sigterm(&w);
    poll_until(
        Duration::from_secs(30),
        "the worker to take the SIGTERM",
        async |seen| {
            *seen = std::fs::read_to_string(log.path()).unwrap();
            seen.contains("SIGTERM: stopping").then_some(())
        },
    )
    .await;
    assert_eq!(
        stage_status(&db, run_id, "sync").await.0,
        "running",
        "SYNC is still at work when the worker is told to stop"
    );
    gate.release().await;
    exits_zero(&mut w);
    assert_eq!(
        stage_status(&db, run_id, "sync").await.0,
        "succeeded",
        "the running stage finished"
    );
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE lock_by IS NOT NULL AND status IN ('Queued', 'Running')")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(held, 0, "nothing is left locked by the stopped worker");
}

#[tokio::test]
async fn sigterm_after_the_timeout_releases_the_stage_to_the_queue() {
    let db = TestDb::new().await;
    let dir = fixture();
    let run_id = enqueue(&db, dir.path()).await;
    let mut w = worker(
        &db,
        "sync:sleep:60000",
        &[("TRAWL_SHUTDOWN_TIMEOUT_SECS", "1")],
    );
    wait_until_sync_runs(&db, run_id).await;
    stop_gracefully(&mut w);
    let (job_status, lock_by): (String, Option<String>) = sqlx::query_as(
        "SELECT j.status, j.lock_by FROM apalis.jobs j JOIN stage_runs s ON s.job_id = j.id WHERE s.run_id = $1 AND s.stage = 'sync'",
    )
    .bind(run_id)
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        (job_status.as_str(), lock_by),
        ("Pending", None),
        "released to the queue at once"
    );
    // Another worker finishes it (its attempt is not the first, so the stall is not injected).
    let mut b = worker(&db, "sync:sleep:60000", &[]);
    wait_until_finished(&db, run_id, 60).await;
    b.kill().unwrap();
    b.wait().unwrap();
    assert_eq!(db.store.run(run_id).await.unwrap().status, "succeeded");
}

#[tokio::test]
async fn stage_order_holds_with_three_worker_processes_and_many_runs() {
    let db = TestDb::new().await;
    let dirs: Vec<tempfile::TempDir> = (0..12).map(|_| fixture()).collect();
    let mut runs = Vec::new();
    for d in &dirs {
        runs.push(enqueue(&db, d.path()).await);
    }
    let mut workers: Vec<Child> = (0..3).map(|_| worker(&db, "", &[])).collect();
    for &run_id in &runs {
        wait_until_finished(&db, run_id, 120).await;
    }
    for w in &mut workers {
        stop_gracefully(w);
    }
    for &run_id in &runs {
        let run = db.store.run(run_id).await.unwrap();
        assert_eq!(run.status, "succeeded", "{run:?}");
        let stages = db.store.stage_runs(run_id).await.unwrap();
        for pair in stages.windows(2) {
            assert!(
                pair[1].started_at.unwrap() >= pair[0].finished_at.unwrap(),
                "run {run_id}: {} started before {} finished",
                pair[1].stage,
                pair[0].stage
            );
        }
    }
    let registered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.workers WHERE worker_type = 'trawl::stage'",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(registered, 3, "three worker processes took part");
}

#[tokio::test]
async fn two_index_commands_of_one_source_at_once_make_one_repository() {
    let db = TestDb::new().await;
    let dir = fixture();
    let children: Vec<Child> = (0..4)
        .map(|_| {
            trawl_cmd()
                .envs(db.env())
                .args(["index", dir.path().to_str().unwrap()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let repos: i64 = sqlx::query_scalar("SELECT count(*) FROM repositories")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(repos, 1);
}
