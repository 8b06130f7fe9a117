//! Several nodes on one database: two homes stand for two machines (each its own working
//! copies and keyword index), sharing the suite's PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use trawl::config::Config;
use trawl::domain::Stage;
use trawl::pipeline::PipelineContext;
use trawl::pipeline::faults::Faults;
use trawl::search::{Mode, Query, Searcher};
use trawl::service::index::{SourceAccess, index};

use crate::support::{
    GATE, Gate, KillOnDrop, TestDb, gate_fault, git, path_str, poll_until, spawn_worker, temp_home,
    trawl_cmd,
};

/// A node: its own home on the shared database, its worker taking `stages` (all if empty).
fn node(db: &TestDb, home: &std::path::Path, stages: &[Stage]) -> Config {
    let mut c = db.config();
    c.home = home.to_path_buf();
    c.worker.stages = stages.to_vec();
    c.worker.backoff_base_ms = 100;
    c.worker.backoff_max_ms = 500;
    c.worker.poll_interval_ms = 50;
    c.worker.shutdown_timeout_secs = 5;
    c.worker.orphan_timeout_secs = 3;
    c
}

/// A node's own pool on the shared database, as a machine of its own has.
async fn pool_of(db: &TestDb) -> trawl::store::Store {
    trawl::store::Store::open(&db.url, &crate::support::settings())
        .await
        .unwrap()
}

/// Four sources, each defining a function of its own name: two git repositories (file://
/// URLs) and two directories.
fn sources(root: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..4 {
        let dir = root.join(format!("source{i}"));
        std::fs::create_dir_all(dir.join("pkg")).unwrap();
        let marker = format!("marker_of_source{i}");
        std::fs::write(
            dir.join("pkg/mod.py"),
            format!("def {marker}():\n    \"\"\"Source {i}.\"\"\"\n    return {i}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("lib.rs"),
            format!("/// Adds for {i}.\npub fn add_{i}(a: i32) -> i32 {{ a + {i} }}\n"),
        )
        .unwrap();
        let source = if i < 2 {
            git(&dir, &["init", "-q"]);
            git(&dir, &["add", "."]);
            git(&dir, &["commit", "-qm", "one"]);
            format!("file://{}", dir.display())
        } else {
            path_str(&dir)
        };
        out.push((source, marker));
    }
    out
}

async fn enqueue_all(db: &TestDb, config: &Config, sources: &[(String, String)]) -> Vec<i64> {
    let mut runs = Vec::new();
    for (source, _) in sources {
        let asked = index(&db.store, config, source, "", "test", SourceAccess::Local)
            .await
            .unwrap();
        runs.push(asked.enqueued.run_id());
    }
    runs
}

async fn wait_all(db: &TestDb, runs: &[i64], secs: u64) {
    for &run in runs {
        poll_until(
            Duration::from_secs(secs),
            &format!("run {run} to end"),
            async |seen| {
                let r = db.store.run(run).await.unwrap();
                *seen = format!("{:?}", db.store.stage_runs(run).await.unwrap());
                r.status.is_finished().then_some(())
            },
        )
        .await;
        let r = db.store.run(run).await.unwrap();
        assert_eq!(r.status, "succeeded", "run {run}: {:?}", r.error);
    }
}

/// Waits for run `run` to fail; its error.
async fn failure_of(db: &TestDb, run: i64) -> String {
    wait_ended(db, run).await;
    let run = db.store.run(run).await.unwrap();
    assert_eq!(run.status, "failed");
    run.error.unwrap_or_default()
}

/// Waits for run `run` to end, whatever its outcome.
async fn wait_ended(db: &TestDb, run: i64) {
    poll_until(Duration::from_secs(60), "the run to end", async |_| {
        db.store
            .run(run)
            .await
            .unwrap()
            .status
            .is_finished()
            .then_some(())
    })
    .await;
}

/// Each source's snippets and code vectors, keyed by what they are (ids differ between
/// databases).
async fn contents_of(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT concat_ws('|', regexp_replace(r.source, '^.*/', ''), s.path, s.kind, s.name,
                          s.start_line, s.end_line, s.content_hash, v.model, v.embedding::text)
           FROM snippets s JOIN repositories r ON r.id = s.repository_id
           LEFT JOIN snippet_vectors v ON v.snippet_id = s.id AND v.kind = 'code'
          ORDER BY 1",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap()
}

async fn finds(searcher: &Searcher, text: &str) -> Vec<String> {
    let q = Query {
        text: text.into(),
        mode: Mode::Keyword,
        repository_ids: vec![],
        languages: vec![],
        kinds: vec![],
        path: None,
        limit: 10,
    };
    searcher
        .search(&q)
        .await
        .map(|r| r.hits.into_iter().filter_map(|h| h.name).collect())
        .unwrap_or_default()
}

/// A follower ends, without a warning loop, when whoever could stop it is gone or its
/// pool is closed (a `bench api` run once logged 27k warnings after its server stopped).
#[tokio::test]
async fn a_follower_ends_when_its_stopper_or_pool_is_gone() {
    let db = TestDb::new().await;
    let home = temp_home();
    let config = node(&db, home.path(), &[]);
    for close_pool in [false, true] {
        let store = pool_of(&db).await;
        let follower = Arc::new(Searcher::new(store.clone(), config.clone()));
        let (stopper, following) = tokio::sync::watch::channel(false);
        let followed = tokio::spawn(follower.follow(following));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !followed.is_finished(),
            "the follower follows while asked to"
        );
        if close_pool {
            store.pool().close().await;
            // The sender is kept: the closed pool alone must end it.
            tokio::time::timeout(Duration::from_secs(30), followed)
                .await
                .expect("a follower of a closed pool ends")
                .unwrap();
            drop(stopper);
        } else {
            drop(stopper);
            tokio::time::timeout(Duration::from_secs(30), followed)
                .await
                .expect("a follower whose stopper is gone ends")
                .unwrap();
        }
    }
}

/// Stages alternate between two nodes (one takes SYNC, BM25_INDEX and ENRICH, the other
/// EXTRACT and CODE_EMBEDDINGS): every source ends with the snippets and vectors one node
/// alone makes, the git working copies exist on the SYNC node only, and a search on either
/// node finds every source, the one following the log without being asked.
#[tokio::test]
async fn stages_alternate_between_two_nodes_and_both_find_everything() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let sources = sources(tree.path());
    let home_b = temp_home();
    let a = node(
        &db,
        db.home.path(),
        &[Stage::Sync, Stage::Bm25Index, Stage::Enrich],
    );
    let b = node(&db, home_b.path(), &[Stage::Extract, Stage::CodeEmbeddings]);
    // Node B serves search: its searcher follows the change log.
    let (store_a, store_b) = (pool_of(&db).await, pool_of(&db).await);
    let follower = Arc::new(Searcher::new(store_b.clone(), b.clone()));
    let (stop_following, following) = tokio::sync::watch::channel(false);
    let followed = tokio::spawn(follower.clone().follow(following));

    let runs = enqueue_all(&db, &a, &sources).await;
    let (stop_a, worker_a) = spawn_worker(PipelineContext::new(store_a.clone(), a.clone()), 2);
    let (stop_b, worker_b) = spawn_worker(PipelineContext::new(store_b, b.clone()), 2);
    wait_all(&db, &runs, 120).await;

    assert!(
        a.home.join("repos").read_dir().unwrap().count() == 2,
        "node A cloned the git sources"
    );
    assert!(
        !b.home.join("repos").exists(),
        "node B never needed a working copy"
    );
    // Both nodes' searches find every source: B's follower applied what A published.
    for (_, marker) in &sources {
        poll_until(
            Duration::from_secs(10),
            &format!("node B's follower to find {marker}"),
            async |seen| {
                let names = finds(&follower, marker).await;
                *seen = format!("{names:?}");
                names.contains(marker).then_some(())
            },
        )
        .await;
        let on_a = Searcher::new(store_a.clone(), a.clone());
        on_a.catch_up().await.unwrap();
        assert!(
            finds(&on_a, marker).await.contains(marker),
            "node A: {marker}"
        );
    }

    // A change on one node reaches the other's index with no search asking for it.
    let changed = std::path::Path::new(&sources[2].0).join("pkg/new.py");
    std::fs::write(&changed, "def freshly_added_marker():\n    return 9\n").unwrap();
    let again = enqueue_all(&db, &a, &sources[2..3]).await;
    wait_all(&db, &again, 60).await;
    poll_until(
        Duration::from_secs(10),
        "node B's follower to apply the new change",
        async |seen| {
            let lag = trawl::search::follow::local_lag(&db.store, &b)
                .await
                .unwrap()
                .expect("node B's index is built");
            *seen = format!("{lag:?}");
            (lag.pending == 0
                && finds(&follower, "freshly_added_marker")
                    .await
                    .contains(&"freshly_added_marker".to_string()))
            .then_some(())
        },
    )
    .await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    worker_a.await.unwrap();
    worker_b.await.unwrap();
    stop_following.send(true).unwrap();
    followed.await.unwrap();
    let two_nodes = contents_of(&db).await;

    // The same sources on one node with one worker.
    let single = TestDb::new().await;
    let one = node(&single, single.home.path(), &[]);
    let runs = enqueue_all(&single, &one, &sources).await;
    let (stop, worker) = spawn_worker(PipelineContext::new(single.store.clone(), one), 2);
    wait_all(&single, &runs, 120).await;
    stop.send(()).unwrap();
    worker.await.unwrap();
    let one_node = contents_of(&single).await;
    assert!(
        one_node.iter().filter(|r| !r.ends_with('|')).count() >= 8,
        "vectors: {one_node:?}"
    );
    assert_eq!(two_nodes, one_node);
}

/// A worker SIGKILLed in the middle of a stage: the other node's worker takes the job over
/// once the dead one's heartbeat is old, and the run succeeds.
#[tokio::test]
async fn a_run_survives_the_sigkill_of_one_nodes_worker() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let sources = sources(tree.path());
    let home_b = temp_home();
    let a = node(&db, db.home.path(), &[]);
    let gate = Gate::hold(&db, GATE).await;
    let mut b = KillOnDrop::new(
        trawl_cmd()
            .envs(db.env())
            .env("TRAWL_HOME", home_b.path())
            .env("TRAWL_TEST_FAULTS", gate_fault("extract", GATE))
            .env("TRAWL_ORPHAN_TIMEOUT_SECS", "3")
            .env("TRAWL_POLL_INTERVAL_MS", "50")
            .args(["worker", "--concurrency", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let runs = enqueue_all(&db, &a, &sources[..1]).await;
    poll_until(
        Duration::from_secs(60),
        "node B's EXTRACT to start",
        async |seen| {
            let stages = db.store.stage_runs(runs[0]).await.unwrap();
            *seen = format!("{stages:?}");
            (stages[1].status.as_str() == "running").then_some(())
        },
    )
    .await;
    b.child().kill().unwrap();
    let _ = b.child().wait();
    gate.release().await;
    let (stop, worker) = spawn_worker(PipelineContext::new(db.store.clone(), a.clone()), 2);
    wait_all(&db, &runs, 60).await;
    stop.send(()).unwrap();
    worker.await.unwrap();
    let on_a = Searcher::new(db.store.clone(), a);
    on_a.catch_up().await.unwrap();
    assert!(finds(&on_a, &sources[0].1).await.contains(&sources[0].1));
}

/// A run whose stored contents are lost between SYNC and EXTRACT fails (after its retries)
/// instead of succeeding with an empty index.
#[tokio::test]
async fn a_run_that_lost_its_files_fails() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let sources = sources(tree.path());
    let mut config = node(&db, db.home.path(), &[]);
    config.worker.max_attempts = 2;
    let ctx = PipelineContext::with_faults(
        db.store.clone(),
        config.clone(),
        Faults::parse(&gate_fault("extract", GATE)),
    );
    let gate = Gate::hold(&db, GATE).await;
    let runs = enqueue_all(&db, &config, &sources[3..]).await;
    let (stop, worker) = spawn_worker(ctx, 1);
    poll_until(Duration::from_secs(60), "EXTRACT to start", async |_| {
        let stages = db.store.stage_runs(runs[0]).await.unwrap();
        (stages[1].status.as_str() == "running").then_some(())
    })
    .await;
    sqlx::query("DELETE FROM file_contents")
        .execute(db.store.pool())
        .await
        .unwrap();
    gate.release().await;
    let error = failure_of(&db, runs[0]).await;
    stop.send(()).unwrap();
    worker.await.unwrap();
    assert!(
        error.contains("every one of the 2 files the run changed failed")
            && error.contains("not in the database"),
        "{error}"
    );
}

/// A worker configured for another embedding model than the process that asked for the run
/// refuses its embedding stage, naming both; the sync settings recorded with the run are
/// the ones every worker follows.
#[tokio::test]
async fn a_worker_of_another_model_refuses_and_sync_follows_the_runs_settings() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let sources = sources(tree.path());
    let mut asking = node(&db, db.home.path(), &[]);
    asking.embedding.kind = trawl::config::EmbeddingKind::Transformer;
    // lib.rs is 50-odd bytes, pkg/mod.py 60-odd: the asking process skips files above 55.
    asking.sync.max_file_size = 55;
    let runs = enqueue_all(&db, &asking, &sources[3..]).await;
    let worker_config = node(&db, db.home.path(), &[]);
    let (stop, worker) = spawn_worker(PipelineContext::new(db.store.clone(), worker_config), 1);
    let error = failure_of(&db, runs[0]).await;
    stop.send(()).unwrap();
    worker.await.unwrap();
    assert!(
        error.contains("embedding model all-MiniLM-L6-v2 (provider local)")
            && error.contains("this worker embeds with all-MiniLM-L6-v2+static256"),
        "{error}"
    );
    let skipped: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT path, skip_reason FROM files ORDER BY path")
            .fetch_all(db.store.pool())
            .await
            .unwrap();
    let too_large: Vec<&str> = skipped
        .iter()
        .filter(|(_, r)| r.as_deref().is_some_and(|r| r.contains("too large")))
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(too_large, ["pkg/mod.py"], "{skipped:?}");
}

/// A second run of a repository waits, parked and without spending an attempt, while the
/// first holds the repository's lease; it proceeds when the first ends.
#[tokio::test]
async fn a_second_run_of_a_repository_waits_for_the_first() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let sources = sources(tree.path());
    let config = node(&db, db.home.path(), &[]);
    let ctx = PipelineContext::with_faults(
        db.store.clone(),
        config.clone(),
        Faults::parse(&gate_fault("extract", GATE)),
    );
    let gate = Gate::hold(&db, GATE).await;
    let first = enqueue_all(&db, &config, &sources[2..3]).await[0];
    let (stop, worker) = spawn_worker(ctx, 2);
    poll_until(
        Duration::from_secs(60),
        "the first run's EXTRACT",
        async |_| {
            let stages = db.store.stage_runs(first).await.unwrap();
            (stages[1].status.as_str() == "running").then_some(())
        },
    )
    .await;
    std::fs::write(
        std::path::Path::new(&sources[2].0).join("more.py"),
        "def more():\n    return 1\n",
    )
    .unwrap();
    let second = enqueue_all(&db, &config, &sources[2..3]).await[0];
    assert_ne!(first, second);
    let sync = poll_until(
        Duration::from_secs(30),
        "the second SYNC to wait",
        async |seen| {
            let sync = db.store.stage_runs(second).await.unwrap().remove(0);
            *seen = format!("{sync:?}");
            (sync.status.as_str() == "waiting").then_some(sync)
        },
    )
    .await;
    assert_eq!(sync.attempts, 0);
    assert_eq!(
        sync.current_item.as_deref(),
        Some(format!("waiting for run {first} of this repository to end").as_str())
    );
    gate.release().await;
    wait_all(&db, &[first, second], 60).await;
    stop.send(()).unwrap();
    worker.await.unwrap();
    let stages = db.store.stage_runs(second).await.unwrap();
    assert!(
        stages[0].started_at.unwrap() >= db.store.run(first).await.unwrap().finished_at.unwrap(),
        "the second run began after the first ended"
    );
}

/// A directory source this node does not see fails for good, naming the node and the path.
#[tokio::test]
async fn a_directory_a_node_cannot_see_fails_naming_the_node() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let sources = sources(tree.path());
    let config = node(&db, db.home.path(), &[]);
    let runs = enqueue_all(&db, &config, &sources[2..3]).await;
    std::fs::remove_dir_all(&sources[2].0).unwrap();
    let (stop, worker) = spawn_worker(PipelineContext::new(db.store.clone(), config), 1);
    let error = failure_of(&db, runs[0]).await;
    stop.send(()).unwrap();
    worker.await.unwrap();
    assert!(
        error.contains(&format!(
            "the source directory {} is not a directory on node",
            sources[2].0
        )) && error.contains(&path_str(db.home.path())),
        "{error}"
    );
    let sync = &db.store.stage_runs(runs[0]).await.unwrap()[0];
    assert_eq!(sync.attempts, 1, "a permanent failure: no retry");
}

/// An unknown stage name is a usage error listing the stages.
#[test]
fn worker_stages_refuses_an_unknown_stage() {
    let r = crate::support::run(trawl_cmd().args(["worker", "--stages", "sync,bogus"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("\"bogus\" is not a stage")
            && r.stderr
                .contains("sync, extract, bm25_index, code_embeddings, enrich"),
        "{}",
        r.stderr
    );
}

/// The change log is pruned: old changes go, the newest stay, and a node whose index is
/// older than what the log keeps rebuilds it instead of applying only the changes left
/// (which would lose the pruned ones' files).
#[tokio::test]
async fn a_node_behind_the_pruned_change_log_rebuilds_its_index() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let sources = sources(tree.path());
    let home_b = temp_home();
    let a = node(&db, db.home.path(), &[]);
    let b = node(&db, home_b.path(), &[]);
    let (stop, worker) = spawn_worker(PipelineContext::new(db.store.clone(), a.clone()), 2);
    let first = enqueue_all(&db, &a, &sources[2..3]).await;
    wait_all(&db, &first, 60).await;
    // Node B's index catches up with the first change, then its node is switched off.
    let on_b = Searcher::new(pool_of(&db).await, b.clone());
    let seen = on_b.catch_up().await.unwrap().unwrap();
    assert!(seen.applied > 0, "{seen:?}");
    let later = enqueue_all(&db, &a, &sources[3..4]).await;
    wait_all(&db, &later, 60).await;
    let last = enqueue_all(&db, &a, &sources[1..2]).await;
    wait_all(&db, &last, 60).await;
    stop.send(()).unwrap();
    worker.await.unwrap();

    let head = db.store.keyword_head().await.unwrap();
    assert!(
        head > seen.applied + 1,
        "head {head}, B applied {}",
        seen.applied
    );
    // Nothing is old enough yet: a prune deletes nothing.
    let none = db
        .store
        .prune_keyword_changes(Duration::from_secs(3600), 1)
        .await
        .unwrap();
    assert_eq!((none.deleted, none.horizon), (0, 0));
    // Two weeks later every change but the newest is pruned.
    sqlx::query("UPDATE keyword_changes SET committed_at = now() - interval '15 days'")
        .execute(db.store.pool())
        .await
        .unwrap();
    let pruned = db
        .store
        .prune_keyword_changes(Duration::from_secs(14 * 24 * 3600), 1)
        .await
        .unwrap();
    assert_eq!(pruned.horizon, head - 1, "{pruned:?}");
    assert!(pruned.deleted >= 2, "{pruned:?}");
    let left: Vec<i64> = sqlx::query_scalar("SELECT seq FROM keyword_changes ORDER BY seq")
        .fetch_all(db.store.pool())
        .await
        .unwrap();
    assert_eq!(left, vec![head]);
    assert_eq!(db.store.keyword_horizon().await.unwrap(), head - 1);

    // Node B comes back: applying the one change left would miss source 3, which only a
    // pruned change carried; it rebuilds and finds it.
    let back = on_b.catch_up().await.unwrap().unwrap();
    assert!(back.rebuilt, "{back:?}");
    assert_eq!(back.applied, head);
    let marker = &sources[3].1;
    assert!(finds(&on_b, marker).await.contains(marker), "{marker}");
    // Caught up, it does not rebuild again.
    let again = on_b.catch_up().await.unwrap().unwrap();
    assert!(!again.rebuilt, "{again:?}");
}
