//! Downstream pipelines: events recorded with the index version, routing by rules and
//! flags, references and history answers, retries and failures kept apart from the base
//! index and the other pipeline, a killed pipeline worker's job taken up again.

use std::time::Duration;

use trawl::config::Config;
use trawl::domain::pipelines::{Pipeline, PipelineStatus};
use trawl::pipeline::PipelineContext;
use trawl::pipeline::faults::Faults;
use trawl::service::index::{SourceAccess, index};
use trawl::store::pipelines::{PipelineRun, PipelineRunFilter};

use crate::support::{
    GATE, Gate, KillOnDrop, TestDb, git, path_str, poll_until, spawn_worker, trawl_cmd, trawl_in,
};

fn config(db: &TestDb) -> Config {
    let mut c = db.config();
    c.worker.backoff_base_ms = 100;
    c.worker.backoff_max_ms = 300;
    c.worker.poll_interval_ms = 50;
    c.worker.shutdown_timeout_secs = 5;
    c.worker.orphan_timeout_secs = 3;
    c.worker.max_attempts = 3;
    c
}

/// A small Python project: `helper` defined in util.py, imported and called by main.py,
/// and a `Widget` class used as a type.
fn project(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("util.py"),
        "def helper(x):\n    \"\"\"Doubles.\"\"\"\n    return x * 2\n\n\nclass Widget:\n    def size(self):\n        return helper(3)\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("main.py"),
        "from util import helper, Widget\n\n\ndef main(w: Widget):\n    print(helper(1))\n    return w.size()\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("lib.rs"),
        "pub fn helper() -> u8 { 1 }\npub fn caller() -> u8 { helper() }\n",
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "# project\n").unwrap();
}

/// A git repository of [`project`] with two commits; the second says "retry backoff".
fn git_project(dir: &std::path::Path) -> String {
    project(dir);
    git(dir, &["init", "-q"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "Start the project"]);
    std::fs::write(
        dir.join("util.py"),
        "def helper(x):\n    \"\"\"Doubles.\"\"\"\n    return x * 2\n\n\nclass Widget:\n    def size(self):\n        # retried with backoff\n        return helper(3)\n",
    )
    .unwrap();
    git(dir, &["commit", "-qam", "Add retry backoff to Widget.size"]);
    format!("file://{}", dir.display())
}

async fn index_and_wait(db: &TestDb, config: &Config, source: &str) -> i64 {
    let asked = index(&db.store, config, source, "", "test", SourceAccess::Local)
        .await
        .unwrap();
    let run = asked.enqueued.run_id();
    poll_until(Duration::from_secs(90), "the run to end", async |seen| {
        let r = db.store.run(run).await.unwrap();
        *seen = format!("{} {:?}", r.status, r.error);
        r.status.is_finished().then_some(())
    })
    .await;
    run
}

async fn runs_of(db: &TestDb, pipeline: Pipeline) -> Vec<PipelineRun> {
    db.store
        .pipeline_runs(&PipelineRunFilter {
            pipeline: Some(pipeline),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Waits until every run of `pipeline` has ended; returns them.
async fn ended(db: &TestDb, pipeline: Pipeline, at_least: usize) -> Vec<PipelineRun> {
    poll_until(
        Duration::from_secs(60),
        &format!("the {pipeline} runs to end"),
        async |seen| {
            let runs = runs_of(db, pipeline).await;
            *seen = format!(
                "{:?}",
                runs.iter()
                    .map(|r| (r.id, r.status, r.attempt, r.error_message.clone()))
                    .collect::<Vec<_>>()
            );
            (runs.len() >= at_least && runs.iter().all(|r| !r.status.is_open())).then_some(runs)
        },
    )
    .await
}

/// An event per language batch, with the version, in the stamp's transaction; a run that
/// fails before its version records none; references and history answer for a git source.
#[tokio::test]
async fn events_feed_both_pipelines_which_answer_references_and_history() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let source = git_project(&tree.path().join("app"));
    let c = config(&db);
    let (stop, worker) = spawn_worker(PipelineContext::new(db.store.clone(), c.clone()), 2);
    let run = index_and_wait(&db, &c, &source).await;
    assert_eq!(db.store.run(run).await.unwrap().status, "succeeded");

    let events = db.store.events_of_run(run).await.unwrap();
    let mut seen: Vec<(String, Option<String>, Vec<String>)> = events
        .iter()
        .map(|e| {
            assert_eq!(e.index_version, 1);
            assert_eq!(e.source_kind, "git");
            assert!(e.metadata["commit"].as_str().is_some_and(|c| c.len() == 40));
            let paths = serde_json::from_value(e.metadata["paths"].clone()).unwrap();
            (e.name.clone(), e.language.clone(), paths)
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            // Prose has no language.
            ("snippets.ingested".into(), None, vec!["README.md".into()]),
            (
                "snippets.ingested".into(),
                Some("python".into()),
                vec!["main.py".into(), "util.py".into()]
            ),
            (
                "snippets.ingested".into(),
                Some("rust".into()),
                vec!["lib.rs".into()]
            ),
        ]
    );

    // References: the repository's first run takes every file, and stands for the other
    // events of the version (python and rust); history: one for the version.
    let refs = ended(&db, Pipeline::References, 1).await;
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(refs[0].paths, None, "{refs:?}");
    assert!(
        refs.iter().all(|r| r.status == PipelineStatus::Success),
        "{refs:?}"
    );
    let history = ended(&db, Pipeline::History, 1).await;
    assert_eq!(history.len(), 1);
    assert_eq!(
        history[0].status,
        PipelineStatus::Success,
        "{:?}",
        history[0].error_message
    );

    let callers = trawl_in(&db, &["callers", "helper", "--json"]);
    assert_eq!(callers.code, 0, "{}", callers.stderr);
    let answer: serde_json::Value = serde_json::from_str(&callers.stdout).unwrap();
    let calls: Vec<(String, i64, String, String)> = answer["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["line"].as_i64().unwrap(),
                r["from"].as_str().unwrap_or("").to_string(),
                r["resolution"]["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("lib.rs".into(), 2, "caller".into(), "local".into()),
            ("main.py".into(), 5, "main".into(), "imported".into()),
            ("util.py".into(), 9, "size".into(), "local".into()),
        ],
        "helper is defined in util.py and lib.rs: main.py imports the Python one"
    );
    assert_eq!(answer["freshness"][0]["lagging"], false);
    let only_py = trawl_in(&db, &["refs", "Widget", "--kind", "type", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&only_py.stdout).unwrap();
    let types: Vec<(String, String)> = v["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().into(),
                r["resolution"]["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(types, vec![("main.py".to_string(), "imported".to_string())]);
    let callees = trawl_in(&db, &["callees", "main"]);
    assert_eq!(callees.code, 0, "{}", callees.stderr);
    assert!(
        callees.stdout.contains("print") && callees.stdout.contains("helper"),
        "{}",
        callees.stdout
    );

    // History: the file's commits, newest first; the changed lines' commit; messages.
    let h = trawl_in(&db, &["history", "util.py", "--json"]);
    assert_eq!(h.code, 0, "{}", h.stderr);
    let v: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    let subjects: Vec<&str> = v["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        vec!["Add retry backoff to Widget.size", "Start the project"]
    );
    let lines = trawl_in(&db, &["history", "util.py:8"]);
    assert!(
        lines.stdout.contains("Add retry backoff") && !lines.stdout.contains("Start the project"),
        "{}",
        lines.stdout
    );
    // A snippet's history: the commits that last changed its lines (`size` holds the
    // retry commit's comment).
    let found = trawl_in(&db, &["search", "size", "--mode", "keyword", "--json"]);
    let hits: serde_json::Value = serde_json::from_str(&found.stdout).unwrap();
    let size = hits
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "Widget.size")
        .unwrap_or_else(|| panic!("{hits}"));
    let by_snippet = trawl_in(
        &db,
        &["history", "--snippet", &size["snippet_id"].to_string()],
    );
    assert_eq!(by_snippet.code, 0, "{}", by_snippet.stderr);
    assert!(
        by_snippet.stdout.contains("Add retry backoff"),
        "{}",
        by_snippet.stdout
    );
    let missing = trawl_in(&db, &["history", "--snippet", "999999"]);
    assert_eq!(missing.code, 1, "{}", missing.stdout);
    assert!(
        missing.stderr.contains("no snippet 999999"),
        "{}",
        missing.stderr
    );
    // What `Widget.size` calls: `helper`, resolved to util.py's.
    let callees = trawl_in(&db, &["callees", "size", "--json"]);
    assert_eq!(callees.code, 0, "{}", callees.stderr);
    let v: serde_json::Value = serde_json::from_str(&callees.stdout).unwrap();
    let text = v.to_string();
    assert!(
        text.contains("\"helper\"") && text.contains("util.py"),
        "{v}"
    );
    let first = trawl_in(&db, &["history", "util.py:1-2"]);
    assert!(
        first.stdout.contains("Start the project") && !first.stdout.contains("retry"),
        "{}",
        first.stdout
    );
    // A question finds the commit holding most of its words (stemmed: "retries", "retry").
    let found = trawl_in(
        &db,
        &[
            "search",
            "--commits",
            "when were retries with backoff added?",
        ],
    );
    assert_eq!(found.code, 0, "{}", found.stderr);
    assert!(
        found.stdout.contains("Add retry backoff"),
        "{}",
        found.stdout
    );
    // The web-search syntax means what it says: a phrase in its order.
    let phrase = trawl_in(
        &db,
        &["search", "--commits", "\"retry backoff\" project", "--json"],
    );
    let hits: serde_json::Value = serde_json::from_str(&phrase.stdout).unwrap();
    assert_eq!(
        hits.as_array().map(Vec::len),
        Some(0),
        "every word must be there with the syntax: {hits}"
    );
    let phrase = trawl_in(&db, &["search", "--commits", "\"backoff retry\"", "--json"]);
    let hits: serde_json::Value = serde_json::from_str(&phrase.stdout).unwrap();
    assert_eq!(hits.as_array().map(Vec::len), Some(0), "{hits}");
    let found = trawl_in(&db, &["search", "--commits", "retries backoff"]);
    assert!(
        found.stdout.contains("Add retry backoff"),
        "{}",
        found.stdout
    );
    assert!(
        !found.stdout.contains("Start the project"),
        "{}",
        found.stdout
    );

    // `trawl pipelines list` shows both, up to date.
    let list = trawl_in(&db, &["pipelines", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.contains("references")
            && list.stdout.contains("history")
            && list.stdout.contains("up to date"),
        "{}",
        list.stdout
    );

    // --pipeline narrows the counts as well as the runs.
    let only = trawl_in(
        &db,
        &["pipelines", "list", "--pipeline", "history", "--json"],
    );
    assert_eq!(only.code, 0, "{}", only.stderr);
    let only: serde_json::Value = serde_json::from_str(&only.stdout).unwrap();
    let names: Vec<&str> = only["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pipeline"].as_str())
        .collect();
    assert_eq!(names, ["history"], "{only}");
    assert!(only["pipelines"][0]["success"].as_i64() > Some(0), "{only}");
    let runs = only["runs"].as_array().unwrap();
    assert!(
        !runs.is_empty() && runs.iter().all(|r| r["pipeline"] == "history"),
        "{only}"
    );

    // A run that fails before its version is stamped records no event.
    let _ = stop.send(());
    worker.await.unwrap();
    std::fs::write(
        tree.path().join("app/new.py"),
        "def fresh():\n    return helper(2)\n",
    )
    .unwrap();
    git(&tree.path().join("app"), &["add", "."]);
    git(&tree.path().join("app"), &["commit", "-qm", "fresh"]);
    let failing = PipelineContext::with_faults(
        db.store.clone(),
        c.clone(),
        Faults::parse("enrich:permanent:1"),
    );
    let (stop, worker) = spawn_worker(failing, 2);
    let failed = index_and_wait(&db, &c, &source).await;
    assert_eq!(db.store.run(failed).await.unwrap().status, "failed");
    assert!(db.store.events_of_run(failed).await.unwrap().is_empty());
    let _ = stop.send(());
    worker.await.unwrap();
}

/// A pipeline that keeps failing is retried with backoff and fails for good after its
/// attempts; the base index and the other pipeline are untouched. An operator's retry
/// runs it again.
#[tokio::test]
async fn a_failing_pipeline_fails_alone() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let source = git_project(&tree.path().join("app"));
    let c = config(&db);
    let ctx = PipelineContext::with_faults(
        db.store.clone(),
        c.clone(),
        Faults::parse("history:retryable:3"),
    );
    let (stop, worker) = spawn_worker(ctx, 2);
    let run = index_and_wait(&db, &c, &source).await;
    assert_eq!(db.store.run(run).await.unwrap().status, "succeeded");
    let history = ended(&db, Pipeline::History, 1).await;
    let h = &history[0];
    assert_eq!(h.status, PipelineStatus::Failed);
    assert_eq!(h.attempt, 3);
    assert!(
        h.error_message
            .as_deref()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{h:?}"
    );
    // The backoff was waited: three attempts take at least the two delays' base.
    let span = h.finished_at.unwrap() - h.created_at;
    assert!(span >= chrono::Duration::milliseconds(100), "{span:?}");
    let refs = ended(&db, Pipeline::References, 1).await;
    assert!(refs.iter().all(|r| r.status == PipelineStatus::Success));
    let version = db
        .store
        .current_index_version(db.store.run(run).await.unwrap().repository_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(version.version, 1);
    let s = trawl_in(&db, &["search", "helper", "--mode", "keyword", "--json"]);
    assert!(s.stdout.contains("util.py"), "{}", s.stdout);
    let callers = trawl_in(&db, &["callers", "helper"]);
    assert!(callers.stdout.contains("main.py"), "{}", callers.stdout);

    // A retry gives fresh attempts (the attempt counter starts again: a worker without the
    // fault takes it).
    let _ = stop.send(());
    worker.await.unwrap();
    let (stop, worker) = spawn_worker(PipelineContext::new(db.store.clone(), c.clone()), 2);
    let retried = trawl_in(&db, &["pipelines", "retry", &h.id.to_string()]);
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    poll_until(
        Duration::from_secs(30),
        "the retried history run to succeed",
        async |seen| {
            let r = db.store.pipeline_run(h.id).await.unwrap().unwrap();
            *seen = format!("{:?} {:?}", r.status, r.error_message);
            (r.status == PipelineStatus::Success).then_some(())
        },
    )
    .await;
    let r = db.store.pipeline_run(h.id).await.unwrap().unwrap();
    assert_eq!(r.attempt, 1, "a retry starts the attempts again: {r:?}");
    assert!(r.error_message.is_none(), "{r:?}");
    let again = trawl_in(&db, &["pipelines", "retry", &h.id.to_string()]);
    assert_eq!(again.code, 1);
    assert!(
        again
            .stderr
            .contains("only a failed or cancelled pipeline run can be retried"),
        "{}",
        again.stderr
    );
    let audit: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'retry_pipeline_run'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(audit, 2, "done and refused retries are both audited");
    let _ = stop.send(());
    worker.await.unwrap();
}

/// Routing follows the source kind, the configuration's flags and a repository's switch,
/// and routing an event again makes no second run.
#[tokio::test]
async fn routing_follows_rules_and_flags_and_is_idempotent() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let dir = tree.path().join("plain");
    project(&dir);
    let mut c = config(&db);
    c.pipelines.references.enabled = false;
    let asked = index(
        &db.store,
        &c,
        &path_str(&dir),
        "",
        "test",
        SourceAccess::Local,
    )
    .await
    .unwrap();
    let ctx = PipelineContext::new(db.store.clone(), c.clone());
    let (stop, worker) = spawn_worker(ctx, 2);
    let run = asked.enqueued.run_id();
    poll_until(Duration::from_secs(90), "the run to end", async |_| {
        db.store
            .run(run)
            .await
            .unwrap()
            .status
            .is_finished()
            .then_some(())
    })
    .await;
    let _ = stop.send(());
    worker.await.unwrap();
    trawl::pipeline::downstream::route_all(&PipelineContext::new(db.store.clone(), c.clone()))
        .await;
    // A directory: no history; references off in the run's settings: none.
    assert!(runs_of(&db, Pipeline::History).await.is_empty());
    assert!(runs_of(&db, Pipeline::References).await.is_empty());

    // Switched on for this repository, a new run's events route to references.
    let repo = db.store.run(run).await.unwrap().repository_id;
    let on = trawl_in(
        &db,
        &[
            "pipelines",
            "enable",
            "references",
            "--repo",
            &repo.to_string(),
        ],
    );
    assert_eq!(on.code, 0, "{}", on.stderr);
    std::fs::write(dir.join("util.py"), "def helper(x):\n    return x\n").unwrap();
    let (stop, worker) = spawn_worker(PipelineContext::new(db.store.clone(), c.clone()), 2);
    let second = index_and_wait(&db, &c, &path_str(&dir)).await;
    let refs = ended(&db, Pipeline::References, 1).await;
    assert_eq!(refs.len(), 1);
    assert_eq!(
        refs[0].paths, None,
        "a pipeline's first run for a repository takes every file"
    );
    let _ = stop.send(());
    worker.await.unwrap();
    // This run's events routed again (as they are when a router routes an event another
    // routed meanwhile): no second run.
    sqlx::query("UPDATE events SET routed_at = NULL WHERE run_id = $1")
        .bind(second)
        .execute(db.store.pool())
        .await
        .unwrap();
    let again = db.store.route_events(100, 3).await.unwrap();
    assert!(again.events > 0);
    assert_eq!(again.runs, 0);
    assert_eq!(runs_of(&db, Pipeline::References).await.len(), 1);
    // Files the run did not change were taken too.
    let callers = trawl_in(&db, &["callers", "helper"]);
    assert!(
        callers.stdout.contains("main.py") && callers.stdout.contains("lib.rs"),
        "{}",
        callers.stdout
    );

    // A deleted file loses its references.
    std::fs::remove_file(dir.join("main.py")).unwrap();
    let (stop, worker) = spawn_worker(PipelineContext::new(db.store.clone(), c.clone()), 2);
    index_and_wait(&db, &c, &path_str(&dir)).await;
    let refs = ended(&db, Pipeline::References, 2).await;
    assert!(refs.iter().any(|r| r.deleted == ["main.py"]), "{refs:?}");
    let callers = trawl_in(&db, &["callers", "helper"]);
    assert!(!callers.stdout.contains("main.py"), "{}", callers.stdout);
    assert!(callers.stdout.contains("lib.rs"), "{}", callers.stdout);
    let _ = stop.send(());
    worker.await.unwrap();

    // Input the commands find wrong themselves is a usage error too (exit 2).
    crate::support::assert_usage(&trawl_in(&db, &["callers", "two words"]), "is not a name");
    crate::support::assert_usage(
        &trawl_in(&db, &["search", "--commits", "   "]),
        "give words",
    );

    // Unknown names are refused with the list.
    let bad = trawl_in(&db, &["pipelines", "list", "--pipeline", "refs"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("the pipelines are references, history"),
        "{}",
        bad.stderr
    );
    let bad = trawl_in(&db, &["worker", "--queues", "nope"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("the queues are stages, references, history"),
        "{}",
        bad.stderr
    );
}

/// A pipeline worker killed at work: its job goes back to the queue when its heartbeat is
/// old, and another worker (of the pipeline's queue only) finishes it.
#[tokio::test]
async fn a_killed_pipeline_workers_job_is_taken_up_again() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let dir = tree.path().join("plain");
    project(&dir);
    let c = config(&db);
    let (stop, worker) = spawn_worker(
        {
            let mut stages_only = c.clone();
            stages_only.worker.queues = vec!["stages".into()];
            PipelineContext::new(db.store.clone(), stages_only)
        },
        2,
    );
    index_and_wait(&db, &c, &path_str(&dir)).await;
    let _ = stop.send(());
    worker.await.unwrap();
    let gate = Gate::hold(&db, GATE).await;
    let spawn = |faults: &str| {
        KillOnDrop::new(
            trawl_cmd()
                .envs(db.env())
                .env("TRAWL_TEST_FAULTS", faults)
                .env("TRAWL_ORPHAN_TIMEOUT_SECS", "3")
                .env("TRAWL_POLL_INTERVAL_MS", "50")
                .args(["worker", "--queues", "references"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut first = spawn(&format!("references:gate:{GATE}"));
    let held = poll_until(
        Duration::from_secs(60),
        "a references run to be at work",
        async |seen| {
            let runs = runs_of(&db, Pipeline::References).await;
            *seen = format!("{:?}", runs.iter().map(|r| r.status).collect::<Vec<_>>());
            runs.into_iter()
                .find(|r| r.status == PipelineStatus::Running)
        },
    )
    .await;
    // SAFETY: killing our own child.
    unsafe { libc::kill(first.child().id() as i32, libc::SIGKILL) };
    let _ = first.child().wait();
    gate.release().await;
    let mut second = spawn("");
    poll_until(
        Duration::from_secs(60),
        "the run to be finished by the second worker",
        async |seen| {
            let r = db.store.pipeline_run(held.id).await.unwrap().unwrap();
            *seen = format!("{:?} attempt {}", r.status, r.attempt);
            (r.status == PipelineStatus::Success).then_some(r.attempt)
        },
    )
    .await;
    let r = db.store.pipeline_run(held.id).await.unwrap().unwrap();
    assert_eq!(r.attempt, 2, "the killed attempt counts");
    second.stop();
}

/// The SQL of a pipeline run's life (`store/lifecycle.sql`) against its model
/// (`PipelineStatus::apply`): random sequences of a worker's and operators' events, the
/// stored status compared with the model's after each; an event the model refuses leaves
/// the stored status as it was.
#[tokio::test]
async fn pipeline_runs_follow_their_model() {
    use rand::{Rng as _, SeedableRng as _};
    use trawl::domain::pipelines::PipelineEvent as E;
    const WORKER: &str = "model-worker";
    let db = TestDb::new().await;
    let store = &db.store;
    let repo = store
        .register_repository("directory", "/pipeline-model", "", "model")
        .await
        .unwrap()
        .id;
    let mut tx = store.pool().begin().await.unwrap();
    trawl::store::workers::register_worker(&mut tx, WORKER, Pipeline::References.queue(), "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let events = [
        E::Begin,
        E::Succeed,
        E::Retry,
        E::Fail,
        E::Abandon,
        E::Cancel,
        E::RetryRun,
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261207);
    let mut seen = std::collections::HashSet::new();
    for sequence in 0..60 {
        let id = store
            .enqueue_pipeline_run(Pipeline::References, repo, 3)
            .await
            .unwrap();
        let job = store.pipeline_run(id).await.unwrap().unwrap().job_id;
        let mut model = PipelineStatus::Pending;
        let mut trail = Vec::new();
        for _ in 0..rng.random_range(1..25) {
            let event = events[rng.random_range(0..events.len())];
            trail.push(event);
            match event {
                E::Begin => {
                    // As a claim does: the job held by the worker (a running one's as if
                    // it came back without a word and was claimed again).
                    let claimed = sqlx::query(
                        "UPDATE apalis.jobs SET status = 'Running', lock_by = $2, lock_at = now()
                          WHERE id = $1 AND status IN ('Pending', 'Queued', 'Failed', 'Running')",
                    )
                    .bind(&job)
                    .bind(WORKER)
                    .execute(store.pool())
                    .await
                    .unwrap()
                    .rows_affected();
                    if claimed == 0 {
                        trail.pop();
                        continue;
                    }
                    store.begin_pipeline_run(&job).await.unwrap();
                }
                E::Succeed => {
                    store
                        .succeed_pipeline_run(&job, &serde_json::json!({}))
                        .await
                        .unwrap();
                }
                E::Retry => store
                    .retry_pipeline_run(&job, "retryable", Duration::from_millis(1))
                    .await
                    .unwrap(),
                E::Fail => store.fail_pipeline_run(&job, "permanent").await.unwrap(),
                E::Abandon => {
                    store
                        .abandon_jobs(WORKER, Some(std::slice::from_ref(&job)))
                        .await
                        .unwrap();
                }
                E::Cancel => {
                    let _ = store.cancel_pipeline_run(id, "test").await;
                }
                E::RetryRun => {
                    let _ = store.retry_failed_pipeline_run(id).await;
                }
            }
            if let Ok(next) = model.apply(event) {
                model = next;
            }
            let stored = store.pipeline_run(id).await.unwrap().unwrap().status;
            assert_eq!(stored, model, "sequence {sequence}: {trail:?}");
            // The job goes with the run: a pending run's can be claimed, an ended run's is
            // closed.
            let job_status: String =
                sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
                    .bind(&job)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            let expected: &[&str] = match model {
                PipelineStatus::Pending => &["Pending", "Queued", "Failed"],
                PipelineStatus::Running => &["Running"],
                PipelineStatus::Success => &["Done"],
                PipelineStatus::Failed | PipelineStatus::Cancelled => &["Killed"],
            };
            assert!(
                expected.contains(&job_status.as_str()),
                "sequence {sequence}: {trail:?}: a {model} run's job is {job_status}"
            );
            seen.insert(model);
        }
    }
    assert_eq!(seen.len(), 5, "every status was reached: {seen:?}");
}

/// `trawl index --wait` with no worker alive works the pipelines its run fed too, before
/// its own worker stops: their answers are there when it returns.
#[tokio::test]
async fn index_wait_works_the_pipelines_too() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let source = git_project(&tree.path().join("app"));
    // A file whose name git would take for an option: blamed as a path, not obeyed.
    let app = tree.path().join("app");
    std::fs::write(app.join("-n.py"), "def dash():\n    return helper(2)\n").unwrap();
    git(&app, &["add", "--", "-n.py"]);
    git(&app, &["commit", "-qm", "Add a file named like an option"]);
    let indexed = trawl_in(&db, &["index", &source, "--wait"]);
    assert_eq!(indexed.code, 0, "{}", indexed.stderr);
    assert!(
        indexed.stdout.contains("pipeline references: ")
            && indexed.stdout.contains("pipeline history: 1 success"),
        "{}",
        indexed.stdout
    );
    assert!(!indexed.stdout.contains("pending"), "{}", indexed.stdout);
    let callers = trawl_in(&db, &["callers", "helper"]);
    assert!(callers.stdout.contains("main.py"), "{}", callers.stdout);
    let history = trawl_in(&db, &["history", "util.py"]);
    assert!(
        history.stdout.contains("Add retry backoff"),
        "{}",
        history.stdout
    );
    let dashed = trawl_in(&db, &["history", "--", "-n.py:1"]);
    assert_eq!(dashed.code, 0, "{}", dashed.stderr);
    assert!(
        dashed.stdout.contains("named like an option"),
        "{}",
        dashed.stdout
    );
}
