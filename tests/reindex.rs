//! `trawl reindex`: scopes, paths checked against the repository, dry runs, priority
//! classes, embeddings-only, and the result of --wait, through the binary as a user runs it.

use crate::support::{
    GATE, Gate, TestDb, assert_refused, gate_fault, path_str, poll_until, trawl_in,
};

/// A repository with files at three depths and in two directories.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src/deep")).unwrap();
    std::fs::create_dir_all(root.join("lib")).unwrap();
    for (path, name) in [
        ("src/a.py", "alpha"),
        ("src/b.py", "beta"),
        ("src/deep/c.py", "gamma"),
        ("lib/d.py", "delta"),
    ] {
        std::fs::write(root.join(path), format!("def {name}():\n    return 1\n")).unwrap();
    }
    dir
}

fn edit(root: &std::path::Path, path: &str) {
    let p = root.join(path);
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str("\n\ndef added_later():\n    return 2\n");
    std::fs::write(p, text).unwrap();
}

async fn items_of(db: &TestDb, run_id: i64) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT path, change, status FROM run_items WHERE run_id = $1 ORDER BY path")
        .bind(run_id)
        .fetch_all(db.store.pool())
        .await
        .unwrap()
}

async fn run_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(db.store.pool())
        .await
        .unwrap()
}

fn json_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The progress snapshots `--wait --json` printed before its result line: the first at
/// once (preparing), stages in order, percent true to the items, the last terminal.
fn assert_snapshots(stdout: &str, run_id: i64) {
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("result").is_none())
        .collect();
    assert!(lines.len() >= 3, "{stdout}");
    assert_eq!(lines[0]["stage"], "preparing_index", "{stdout}");
    assert_eq!(lines[0]["status"], "running", "{stdout}");
    let order = [
        "preparing_index",
        "sync",
        "extract",
        "bm25_index",
        "code_embeddings",
        "enrich",
    ];
    let mut at = 0;
    for s in &lines {
        assert_eq!(s["run_id"], run_id);
        let stage = order
            .iter()
            .position(|o| s["stage"] == *o)
            .expect("a known stage");
        assert!(stage >= at, "stages out of order: {stdout}");
        at = stage;
        let (done, total) = (
            s["items_done"].as_f64().unwrap(),
            s["items_total"].as_f64().unwrap(),
        );
        if total > 0.0 && s["status"] == "running" {
            let want = 100.0 * done / total;
            assert!((s["percent"].as_f64().unwrap() - want).abs() <= 5.0, "{s}");
        }
    }
    let last = lines.last().unwrap();
    assert_eq!(last["terminal"], true, "{stdout}");
    assert_eq!(last["status"], "succeeded", "{stdout}");
    assert_eq!(last["percent"], 100.0, "{stdout}");
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|s| s["terminal"] == false)
    );
}

#[tokio::test]
async fn scopes_reindex_only_what_they_name_and_bad_paths_are_refused() {
    let db = TestDb::new().await;
    let dir = fixture();
    let root = dir.path();
    let repo = path_str(root);
    let r = trawl_in(&db, &["index", &repo, "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for p in ["src/a.py", "src/deep/c.py", "lib/d.py"] {
        edit(root, p);
    }

    // A dry run lists the changed files in scope and enqueues nothing.
    let runs_before = run_count(&db).await;
    let r = trawl_in(
        &db,
        &[
            "reindex",
            &repo,
            "--scope",
            "directory",
            "--path",
            "src",
            "--recursive",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let files: Vec<&str> = plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["src/a.py", "src/deep/c.py"], "{}", r.stdout);
    assert_eq!(
        run_count(&db).await,
        runs_before,
        "a dry run enqueues nothing"
    );

    // A directory, not recursive: src/a.py alone; the other edits wait for their turn.
    let r = trawl_in(
        &db,
        &[
            "reindex",
            &repo,
            "--scope",
            "directory",
            "--path",
            "src",
            "--wait",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let result = &json_of(&r.stdout)["result"];
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["items_completed"], 1, "{result}");
    assert_eq!(result["files_processed"], 1, "{result}");
    let run_id = result["run_id"].as_i64().unwrap();
    assert_eq!(
        items_of(&db, run_id).await,
        [("src/a.py".into(), "modified".into(), "completed".into())]
    );
    assert_snapshots(&r.stdout, run_id);

    // One file by its absolute path.
    let d = path_str(&root.join("lib/d.py"));
    let r = trawl_in(
        &db,
        &[
            "reindex", &repo, "--scope", "files", "--path", &d, "--wait", "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run_id = json_of(&r.stdout)["result"]["run_id"].as_i64().unwrap();
    assert_eq!(
        items_of(&db, run_id).await,
        [("lib/d.py".into(), "modified".into(), "completed".into())]
    );

    // The project: only what is still changed (src/deep/c.py), incremental.
    let r = trawl_in(&db, &["reindex", &repo, "--wait", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run_id = json_of(&r.stdout)["result"]["run_id"].as_i64().unwrap();
    assert_eq!(
        items_of(&db, run_id).await,
        [(
            "src/deep/c.py".into(),
            "modified".into(),
            "completed".into()
        )]
    );

    // --full: every file in scope, unchanged or not.
    let r = trawl_in(
        &db,
        &[
            "reindex",
            &repo,
            "--scope",
            "directory",
            "--path",
            "src",
            "--full",
            "--dry-run",
            "--json",
        ],
    );
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["files"].as_array().unwrap().len(), 2, "{}", r.stdout);

    // Bad input: refused, nothing enqueued.
    let runs_before = run_count(&db).await;
    let outside = path_str(&dir.path().parent().unwrap().join("elsewhere.py"));
    for (args, message) in [
        (
            vec!["--scope", "files", "--path", "../x.py"],
            "outside the repository",
        ),
        (
            vec!["--scope", "files", "--path", outside.as_str()],
            "outside the repository",
        ),
        (
            vec!["--scope", "files", "--path", "src/missing.py"],
            "does not exist",
        ),
        (vec!["--scope", "files", "--path", "src"], "is not a file"),
    ] {
        let mut all = vec!["reindex", repo.as_str()];
        all.extend(args);
        assert_refused(&trawl_in(&db, &all), message);
    }
    // Flags that do not go together: usage errors (exit 2).
    for (args, message) in [
        (vec!["--scope", "directory"], "needs at least one --path"),
        (
            vec!["--scope", "project", "--path", "src"],
            "takes no --path",
        ),
    ] {
        let mut all = vec!["reindex", repo.as_str()];
        all.extend(args);
        crate::support::assert_usage(&trawl_in(&db, &all), message);
    }
    assert_refused(
        &trawl_in(&db, &["reindex", "/nowhere/registered"]),
        "no repository /nowhere/registered",
    );
    assert_eq!(
        run_count(&db).await,
        runs_before,
        "nothing enqueued for bad input"
    );
}

#[tokio::test]
async fn priority_classes_set_stage_priorities_and_embeddings_only_reembeds() {
    let db = TestDb::new().await;
    let dir = fixture();
    let repo = path_str(dir.path());
    let r = trawl_in(&db, &["index", &repo, "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Without --wait: at once, with what was queued.
    let r = trawl_in(&db, &["reindex", &repo, "--priority", "high", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let queued = json_of(&r.stdout);
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(queued["priority"], "high");
    assert!(
        queued["message"].as_str().unwrap().contains("trawl runs"),
        "{queued}"
    );
    let run_id = queued["run_id"].as_i64().unwrap();
    let priorities: Vec<i32> = sqlx::query_scalar(
        "SELECT j.priority FROM stage_runs s JOIN apalis.jobs j ON j.id = s.job_id
         WHERE s.run_id = $1 ORDER BY s.ordinal",
    )
    .bind(run_id)
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    assert_eq!(priorities, [140, 130, 120, 110, 100]);
    let r = trawl_in(&db, &["runs", "list", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_refused(
        &trawl_in(&db, &["runs", "watch", "999999"]),
        "no run 999999",
    );

    // Embeddings only, full: every snippet embedded again, no file synced or parsed; the
    // vectors stay in place meanwhile (replaced, not dropped).
    let snippets: i64 = sqlx::query_scalar("SELECT count(*) FROM snippets")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    let r = trawl_in(
        &db,
        &[
            "reindex",
            &repo,
            "--scope",
            "embeddings-only",
            "--full",
            "--wait",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let result = &json_of(&r.stdout)["result"];
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["embeddings_generated"], snippets, "{result}");
    // Its items are the snippets it embeds: as many completed as were queued.
    assert_eq!(result["items_completed"], snippets, "{result}");
    assert_eq!(result["files_processed"], 0, "{result}");
    let run_id = result["run_id"].as_i64().unwrap();
    assert!(items_of(&db, run_id).await.is_empty());
    // Watching a run that has ended: its terminal snapshot alone, exit 0.
    let r = trawl_in(&db, &["runs", "watch", &run_id.to_string(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim().lines().count(), 1, "{}", r.stdout);
    let last = json_of(&r.stdout);
    assert_eq!(
        (last["terminal"].clone(), last["status"].clone()),
        (true.into(), "succeeded".into()),
        "{}",
        r.stdout
    );
    let stale: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM snippet_vectors WHERE starts_with(source_hash, 'stale:')",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(stale, 0, "every vector recomputed");
    // Incremental embeddings-only with nothing missing: nothing to embed.
    assert_eq!(embeddings_planned(&db, &repo), 0);

    // A code vector's text starts with the snippet's name and the end of its path.
    let (id, name, path): (i64, String, String) = sqlx::query_as(
        "SELECT id, coalesce(qualified_name, name), path FROM snippets
         WHERE name IS NOT NULL AND path LIKE '%/%' ORDER BY id LIMIT 1",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    let texts = db.store.code_texts(&[id]).await.unwrap();
    let tail: Vec<&str> = path.rsplit('/').take(2).collect();
    let first = format!("{name} {}/{}", tail[1], tail[0]);
    assert_eq!(
        texts[0].text.lines().next(),
        Some(first.as_str()),
        "{}",
        texts[0].text
    );
    // A vector computed by the earlier recipe (stored with the bare content hash) counts
    // as lacking: the next embeddings pass replaces it.
    sqlx::query(
        "UPDATE snippet_vectors v SET source_hash = s.content_hash FROM snippets s
         WHERE s.id = v.snippet_id AND s.id = $1 AND v.kind = 'code'",
    )
    .bind(id)
    .execute(db.store.pool())
    .await
    .unwrap();
    assert_eq!(embeddings_planned(&db, &repo), 1);
}

/// The snippets an embeddings-only reindex of `repo` would embed (its dry run's plan).
fn embeddings_planned(db: &TestDb, repo: &str) -> i64 {
    let r = trawl_in(
        db,
        &[
            "reindex",
            repo,
            "--scope",
            "embeddings-only",
            "--dry-run",
            "--json",
        ],
    );
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    plan["snippets"]
        .as_i64()
        .unwrap_or_else(|| panic!("no snippet count in the plan: {}", r.stdout))
}

async fn stage_of(db: &TestDb, run_id: i64, stage: &str) -> (String, i32, String) {
    sqlx::query_as(
        "SELECT s.status, s.attempts, j.status FROM stage_runs s JOIN apalis.jobs j ON j.id = s.job_id
         WHERE s.run_id = $1 AND s.stage = $2",
    )
    .bind(run_id)
    .bind(stage)
    .fetch_one(db.store.pool())
    .await
    .unwrap()
}

/// Waits up to 30 s until `stage` of run `run_id` (as [`stage_of`] reads it) is as `wanted`
/// says, `what` saying what that is.
async fn until_stage(
    db: &TestDb,
    run_id: i64,
    stage: &str,
    what: &str,
    wanted: impl Fn(&(String, i32, String)) -> bool,
) {
    poll_until(
        std::time::Duration::from_secs(30),
        &format!("{stage} of run {run_id} {what}"),
        async |seen| {
            let state = stage_of(db, run_id, stage).await;
            *seen = format!("{state:?}");
            wanted(&state).then_some(())
        },
    )
    .await;
}

fn worker(
    ctx: std::sync::Arc<trawl::pipeline::PipelineContext>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    crate::support::spawn_worker(ctx, 2)
}

/// Waits up to 60 s until run `run_id` has ended.
async fn until_finished(db: &TestDb, run_id: i64) {
    poll_until(
        std::time::Duration::from_secs(60),
        &format!("run {run_id} to end"),
        async |seen| {
            let run = db.store.run(run_id).await.unwrap();
            *seen = run.status.to_string();
            run.status.is_finished().then_some(())
        },
    )
    .await;
}

/// The newest index version of any repository.
async fn max_version(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT max(version)::bigint FROM index_versions")
        .fetch_one(db.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn runs_pause_resume_and_cancel_between_batches() {
    use trawl::pipeline::PipelineContext;
    use trawl::pipeline::faults::Faults;
    use trawl::service::reindex::{ReindexRequest, ScopeKind, reindex};

    let db = TestDb::new().await;
    let dir = fixture();
    let repo = path_str(dir.path());
    let r = trawl_in(&db, &["index", &repo, "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let version_before: i64 = max_version(&db).await;
    let mut config = db.config();
    config.worker.poll_interval_ms = 50;
    // Each stage waits at a gate of its own before its work: while the test holds it, the
    // stage is running and has not begun, for as long as it takes to pause or cancel it.
    let (embeddings_gate, extract_gate) = (GATE, GATE + 1);
    let ctx = PipelineContext::with_faults(
        db.store.clone(),
        config.clone(),
        Faults::parse(&format!(
            "{};{}",
            gate_fault("code_embeddings", embeddings_gate),
            gate_fault("extract", extract_gate)
        )),
    );
    let request = |scope| ReindexRequest {
        repository: repo.clone(),
        scope,
        paths: vec![],
        recursive: false,
        priority: trawl::domain::PriorityClass::Normal,
        full: true,
        origin: "test".into(),
    };

    // Pause while CODE_EMBEDDINGS is held at the gate: let go, it stops before its first
    // batch and is parked, its attempt given back.
    let (_, queued) = reindex(&db.store, &config, &request(ScopeKind::EmbeddingsOnly))
        .await
        .unwrap();
    let run_id = queued.run_id;
    let gate = Gate::hold(&db, embeddings_gate).await;
    let (stop, handle) = worker(ctx.clone());
    until_stage(&db, run_id, "code_embeddings", "to run", |s| {
        s.0 == "running"
    })
    .await;
    let r = trawl_in(&db, &["runs", "pause", &run_id.to_string()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("paused"), "{}", r.stdout);
    assert_eq!(
        stage_of(&db, run_id, "code_embeddings").await.0,
        "running",
        "paused while the stage is at work"
    );
    gate.release().await;
    until_stage(&db, run_id, "code_embeddings", "to be parked", |s| {
        *s == ("waiting".into(), 0, "Waiting".into())
    })
    .await;
    // Across a worker restart it stays paused and nothing of it runs: the new worker runs
    // a whole run of another repository, enqueued after it at the same priority, so it has
    // claimed again and again from a queue the paused stage would be first in were it
    // claimable.
    stop.send(()).unwrap();
    handle.await.unwrap();
    let (stop, handle) = worker(ctx.clone());
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("other.py"),
        "def omega():\n    return 1\n",
    )
    .unwrap();
    let later = trawl::service::index::index(
        &db.store,
        &config,
        &path_str(other.path()),
        "",
        "test",
        trawl::service::index::SourceAccess::Local,
    )
    .await
    .unwrap()
    .enqueued
    .run_id();
    until_finished(&db, later).await;
    assert_eq!(db.store.run(later).await.unwrap().status, "succeeded");
    assert_eq!(db.store.run(run_id).await.unwrap().status, "paused");
    assert_eq!(stage_of(&db, run_id, "code_embeddings").await.0, "waiting");
    assert_refused(
        &trawl_in(&db, &["runs", "pause", &run_id.to_string()]),
        "cannot pause run",
    );

    let r = trawl_in(&db, &["runs", "resume", &run_id.to_string()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    until_finished(&db, run_id).await;
    let run = db.store.run(run_id).await.unwrap();
    assert_eq!(run.status, "succeeded", "{run:?}");
    let (status, attempts, _) = stage_of(&db, run_id, "code_embeddings").await;
    assert_eq!(
        (status.as_str(), attempts),
        ("succeeded", 1),
        "a pause spends no attempt"
    );
    assert_refused(
        &trawl_in(&db, &["runs", "resume", &run_id.to_string()]),
        "cannot resume run",
    );
    let r = trawl_in(&db, &["audit", "--json"]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    for (action, outcome) in [
        ("pause", "ok"),
        ("pause", "refused"),
        ("resume", "ok"),
        ("resume", "refused"),
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e["action"] == action && e["outcome"] == outcome && e["run_id"] == run_id),
            "no {action} {outcome} entry: {entries:?}"
        );
    }
    assert_refused(
        &trawl_in(&db, &["runs", "cancel", &run_id.to_string()]),
        "it is succeeded",
    );
    assert_refused(
        &trawl_in(&db, &["runs", "cancel", "999999"]),
        "no run 999999",
    );
    let version_after_resume: i64 = max_version(&db).await;
    assert_eq!(version_after_resume, version_before + 1);

    // Cancel while EXTRACT is held at the gate (a full project run): let go, it stops,
    // what remains is cancelled, no index version is stamped, and the next run finds the
    // files again.
    let gate = Gate::hold(&db, extract_gate).await;
    let (_, queued) = reindex(&db.store, &config, &request(ScopeKind::Project))
        .await
        .unwrap();
    let run_id = queued.run_id;
    until_stage(&db, run_id, "extract", "to run", |s| s.0 == "running").await;
    let r = trawl_in(&db, &["runs", "cancel", &run_id.to_string()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    until_stage(&db, run_id, "extract", "to be killed", |s| s.2 == "Killed").await;
    // The cancelled stage goes on past the gate and stops; the worker's graceful stop waits
    // for it, so what follows is what it left.
    gate.release().await;
    stop.send(()).unwrap();
    handle.await.unwrap();
    let run = db.store.run(run_id).await.unwrap();
    assert_eq!(run.status, "cancelled");
    for stage in ["extract", "bm25_index", "code_embeddings", "enrich"] {
        assert_eq!(stage_of(&db, run_id, stage).await.0, "cancelled", "{stage}");
    }
    let versions: i64 = max_version(&db).await;
    assert_eq!(
        versions, version_after_resume,
        "a cancelled run stamps no version"
    );
    // ... and the last version stays searchable.
    let r = trawl_in(&db, &["search", "alpha", "--mode", "keyword", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("src/a.py"), "{}", r.stdout);
    let r = trawl_in(&db, &["reindex", &repo, "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        plan["files"].as_array().unwrap().len(),
        4,
        "the cancelled run's files are found changed again: {}",
        r.stdout
    );
}

#[tokio::test]
async fn status_audit_and_failed_items() {
    use trawl::pipeline::PipelineContext;
    use trawl::pipeline::faults::Faults;

    let db = TestDb::new().await;
    let dir = fixture();
    let root = dir.path();
    let repo = path_str(root);
    let r = trawl_in(&db, &["index", &repo, "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // A file whose stored content is lost between SYNC and EXTRACT fails as an item; the
    // run goes on (one of two files lost is not most of them), with a warning.
    edit(root, "src/a.py");
    edit(root, "src/b.py");
    let r = trawl_in(&db, &["reindex", &repo, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run_id = json_of(&r.stdout)["run_id"].as_i64().unwrap();
    let r = trawl_in(&db, &["status", &repo, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let status: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(status[0]["index_version"]["version"], 1, "{status}");
    assert_eq!(
        status[0]["unfinished_runs"][0]["run_id"], run_id,
        "{status}"
    );
    assert_eq!(
        status[0]["unfinished_runs"][0]["status"], "queued",
        "{status}"
    );

    // EXTRACT waits at the gate, running, until b.py's stored content is lost.
    let ctx = PipelineContext::with_faults(
        db.store.clone(),
        db.config(),
        Faults::parse(&gate_fault("extract", GATE)),
    );
    let gate = Gate::hold(&db, GATE).await;
    let (stop, handle) = worker(ctx);
    until_stage(&db, run_id, "extract", "to run", |s| s.0 == "running").await;
    sqlx::query(
        "DELETE FROM file_contents WHERE hash =
             (SELECT content_hash FROM run_items WHERE run_id = $1 AND path = 'src/b.py')",
    )
    .bind(run_id)
    .execute(db.store.pool())
    .await
    .unwrap();
    gate.release().await;
    until_finished(&db, run_id).await;
    stop.send(()).unwrap();
    handle.await.unwrap();
    assert_eq!(db.store.run(run_id).await.unwrap().status, "succeeded");
    let r = trawl_in(
        &db,
        &["runs", "show", &run_id.to_string(), "--failures", "--json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let shown: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let failures = shown["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{shown}");
    assert_eq!(failures[0]["path"], "src/b.py");
    assert!(
        failures[0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{shown}"
    );
    let r = trawl_in(&db, &["runs", "show", &run_id.to_string()]);
    assert!(
        r.stdout
            .contains("warning: 1 of the 2 files the run changed failed"),
        "{}",
        r.stdout
    );
    let r = trawl_in(&db, &["runs", "show", &run_id.to_string(), "--items"]);
    assert!(
        r.stdout.contains("completed") && r.stdout.contains("src/a.py"),
        "{}",
        r.stdout
    );
    let r = trawl_in(&db, &["status", &repo]);
    assert!(r.stdout.contains("index version 2"), "{}", r.stdout);

    // Audit: done and refused actions, who asked, filters.
    assert_refused(
        &trawl_in(
            &db,
            &["reindex", &repo, "--scope", "files", "--path", "../x.py"],
        ),
        "outside",
    );
    let r = trawl_in(&db, &["reindex", &repo]);
    let queued = r.stdout.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(trawl_in(&db, &["runs", "cancel", &queued]).code, 0);
    assert_refused(
        &trawl_in(&db, &["runs", "cancel", &queued]),
        "cannot cancel",
    );
    let r = trawl_in(&db, &["audit", "--repo", &repo, "--since", "1h", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let cli = |a: &str, o: &str| ("cli".to_string(), a.to_string(), o.to_string());
    assert_eq!(
        seen,
        [
            cli("index", "ok"),
            cli("reindex", "ok"),
            cli("reindex", "refused"),
            cli("reindex", "ok"),
            cli("cancel", "ok"),
            cli("cancel", "refused"),
        ],
        "{entries:?}"
    );
    assert!(
        entries[0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot cancel")
    );
    assert_eq!(entries[1]["run_id"], queued.parse::<i64>().unwrap());
    let future = trawl_in(&db, &["audit", "--since", "2999-01-01T00:00:00Z", "--json"]);
    assert_eq!(future.stdout.trim(), "[]");
    assert_refused(
        &trawl_in(&db, &["audit", "--since", "yesterday"]),
        "--since yesterday",
    );
}

#[tokio::test]
async fn reingest_selects_repositories_and_languages_and_enqueues_in_batches() {
    let db = TestDb::new().await;
    let (one, two) = (fixture(), fixture());
    std::fs::write(one.path().join("src/lib.rs"), "pub fn one() -> u8 { 1 }\n").unwrap();
    for dir in [&one, &two] {
        let r = trawl_in(&db, &["index", &path_str(dir.path()), "--wait"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    crate::support::assert_usage(
        &trawl_in(&db, &["reingest"]),
        "--repo R (repeatable) or --all",
    );
    crate::support::assert_usage(
        &trawl_in(&db, &["reingest", "--all", "--repo", "1"]),
        "exclude each other",
    );
    crate::support::assert_usage(
        &trawl_in(&db, &["reingest", "--all", "--lang", "cobol"]),
        "unknown language cobol",
    );
    assert_refused(
        &trawl_in(&db, &["reingest", "--repo", "/not/registered"]),
        "no repository /not/registered",
    );

    let runs_before = run_count(&db).await;
    let r = trawl_in(
        &db,
        &[
            "reingest",
            "--all",
            "--lang",
            "Python",
            "--batch-size",
            "1",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dry: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(dry["repository_ids"].as_array().unwrap().len(), 2, "{dry}");
    assert_eq!(
        (dry["batches"].clone(), dry["enqueued"].clone()),
        (2.into(), 0.into()),
        "{dry}"
    );
    assert_eq!(
        dry["filters"]["languages"],
        serde_json::json!(["python"]),
        "{dry}"
    );
    assert_eq!(
        run_count(&db).await,
        runs_before,
        "a dry run enqueues nothing"
    );

    // Rust only, full, at the low class: only the .rs file of the first repository.
    let r = trawl_in(
        &db,
        &[
            "reingest",
            "--all",
            "--lang",
            "rust",
            "--batch-size",
            "1",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let done: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    // Only the repository with Rust files is selected.
    assert_eq!(
        (done["enqueued"].clone(), done["batches"].clone()),
        (1.into(), 1.into()),
        "{done}"
    );
    // Asked again before it ran: nothing stacked, the pending one reported.
    let again = trawl_in(&db, &["reingest", "--all", "--lang", "rust", "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let again: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        (again["enqueued"].clone(), again["already_pending"].clone()),
        (0.into(), 1.into()),
        "{again}"
    );
    let run_ids: Vec<i64> = done["run_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let priorities: Vec<i32> = sqlx::query_scalar(
        "SELECT DISTINCT j.priority FROM stage_runs s JOIN apalis.jobs j ON j.id = s.job_id
         WHERE s.run_id = ANY($1) ORDER BY 1 DESC",
    )
    .bind(&run_ids)
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    assert_eq!(priorities, [50, 40, 30, 20, 10]);
    let (stop, handle) = worker(trawl::pipeline::PipelineContext::new(
        db.store.clone(),
        db.config(),
    ));
    for &run_id in &run_ids {
        until_finished(&db, run_id).await;
    }
    stop.send(()).unwrap();
    handle.await.unwrap();
    let items: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT run_id, path, change FROM run_items WHERE run_id = ANY($1) ORDER BY run_id, path",
    )
    .bind(&run_ids)
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        items,
        [(run_ids[0], "src/lib.rs".to_string(), "modified".to_string())],
        "full, rust only"
    );
    let r = trawl_in(&db, &["audit", "--json"]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(entries[0]["action"], "reingest", "{entries:?}");
    assert_eq!(entries[0]["outcome"], "ok");
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "reingest" && e["outcome"] == "refused")
    );
}

async fn job_state(db: &TestDb, job_id: &str) -> (String, i32) {
    sqlx::query_as("SELECT status, attempts FROM apalis.jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(db.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn batch_jobs_skip_what_is_newer_record_failures_and_refuse_bad_payloads() {
    use trawl::pipeline::batch::{self, BatchPayload, RepositoryItem};
    let db = TestDb::new().await;
    let (one, two) = (fixture(), fixture());
    for dir in [&one, &two] {
        let r = trawl_in(&db, &["index", &path_str(dir.path()), "--wait"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM repositories ORDER BY id")
        .fetch_all(db.store.pool())
        .await
        .unwrap();
    // Repository one is asked for at version 0 but is at 1 already: skipped. Repository two
    // at its current version: a run. A repository that does not exist: a failed item.
    let job = batch::submit(
        &db.store,
        &BatchPayload {
            repositories: vec![
                RepositoryItem {
                    repository_id: ids[0],
                    version: 0,
                },
                RepositoryItem {
                    repository_id: ids[1],
                    version: 1,
                },
                RepositoryItem {
                    repository_id: 999_999,
                    version: 0,
                },
            ],
            snippets: vec![],
            priority: trawl::domain::PriorityClass::Normal,
        },
    )
    .await
    .unwrap();
    // Snippets: one real, one missing.
    let snippet: i64 = sqlx::query_scalar("SELECT min(id) FROM snippets")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    let vectors_job = batch::submit(
        &db.store,
        &BatchPayload {
            repositories: vec![],
            snippets: vec![snippet, 999_999],
            priority: trawl::domain::PriorityClass::Low,
        },
    )
    .await
    .unwrap();
    // A retried batch skips what it recorded: repository two is marked done already.
    let retried = batch::submit(
        &db.store,
        &BatchPayload {
            repositories: vec![RepositoryItem {
                repository_id: ids[1],
                version: 1,
            }],
            snippets: vec![],
            priority: trawl::domain::PriorityClass::Normal,
        },
    )
    .await
    .unwrap();
    sqlx::query("INSERT INTO batch_items (job_id, item, status, message) VALUES ($1, $2, 'done', 'an earlier attempt')")
        .bind(&retried)
        .bind(format!("repository:{}", ids[1]))
        .execute(db.store.pool())
        .await
        .unwrap();
    // An invalid payload, straight into the queue as another program might put it.
    let bad = ulid::Ulid::generate().to_string();
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
         VALUES ($1, $2, convert_to('{\"repos\": [1]}', 'UTF8'), 'Pending', 0, 3, now(), 0)",
    )
    .bind(&bad)
    .bind(batch::QUEUE)
    .execute(db.store.pool())
    .await
    .unwrap();

    // Not even JSON: the job fails, the worker goes on.
    let garbage = ulid::Ulid::generate().to_string();
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
         VALUES ($1, $2, '\\xff00fe'::bytea, 'Pending', 0, 3, now(), 0)",
    )
    .bind(&garbage)
    .bind(batch::QUEUE)
    .execute(db.store.pool())
    .await
    .unwrap();

    let (stop, handle) = worker(trawl::pipeline::PipelineContext::new(
        db.store.clone(),
        db.config(),
    ));
    for j in [&job, &vectors_job, &bad, &retried, &garbage] {
        poll_until(
            std::time::Duration::from_secs(60),
            &format!("job {j} to end"),
            async |seen| {
                let state = job_state(&db, j).await;
                *seen = format!("{state:?}");
                (!matches!(state.0.as_str(), "Pending" | "Queued" | "Running")).then_some(())
            },
        )
        .await;
    }
    let r = trawl_in(&db, &["batch", "show", &job, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let shown: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(shown["status"], "Done", "{shown}");
    let items: Vec<(String, String)> = shown["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["item"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            (format!("repository:{}", ids[0]), "skipped".to_string()),
            (format!("repository:{}", ids[1]), "done".to_string()),
            ("repository:999999".to_string(), "failed".to_string()),
        ],
        "{shown}"
    );
    let run_id = shown["items"][1]["run_id"].as_i64().unwrap();
    let runs_of_batches: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE origin = 'reindex.batch'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(
        runs_of_batches, 1,
        "the retried batch enqueued nothing again"
    );
    assert_eq!(job_state(&db, &retried).await.0, "Done");
    until_finished(&db, run_id).await;
    stop.send(()).unwrap();
    handle.await.unwrap();

    let vectors: serde_json::Value =
        serde_json::from_str(&trawl_in(&db, &["batch", "show", &vectors_job, "--json"]).stdout)
            .unwrap();
    assert_eq!(vectors["status"], "Done", "{vectors}");
    assert_eq!(vectors["items"][0]["item"], format!("snippet:{snippet}"));
    assert_eq!(vectors["items"][0]["status"], "done", "{vectors}");
    assert_eq!(vectors["items"][1]["status"], "failed", "{vectors}");
    assert_eq!(vectors["items"][1]["message"], "no snippet 999999");

    // The invalid payload failed at once (one attempt), with the reason.
    assert_eq!(job_state(&db, &bad).await, ("Killed".to_string(), 1));
    let r = trawl_in(&db, &["batch", "show", &bad, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        shown["last_result"]["Err"]
            .as_str()
            .unwrap()
            .contains("unknown field `repos`"),
        "{shown}"
    );
    assert_eq!(job_state(&db, &garbage).await, ("Killed".to_string(), 1));
    assert_refused(
        &trawl_in(&db, &["batch", "show", "nope"]),
        "no batch job nope: `trawl batch list` lists them",
    );
    // batch list: every batch job, newest first, with its items.
    let listed: serde_json::Value =
        serde_json::from_str(&trawl_in(&db, &["batch", "list", "--json"]).stdout).unwrap();
    let jobs: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    for j in [&job, &vectors_job, &bad, &garbage] {
        assert!(jobs.contains(&j.as_str()), "{j} in {listed}");
    }
    let v = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == vectors_job.as_str())
        .unwrap();
    assert_eq!(
        (v["items"].as_i64(), v["items_failed"].as_i64()),
        (Some(2), Some(1)),
        "{v}"
    );
    let text = trawl_in(&db, &["batch", "list"]);
    assert!(
        text.stdout.contains(&vectors_job) && text.stdout.contains("Killed"),
        "{}",
        text.stdout
    );
    let schema = trawl_in(&db, &["batch", "schema"]);
    assert!(schema.stdout.contains("\"title\": \"reindex.batch\""));
    // The schema and the payloads `batch submit` writes agree; what decode refuses, the
    // schema refuses too.
    let schema: serde_json::Value = serde_json::from_str(&schema.stdout).unwrap();
    let fits = |v: &serde_json::Value| crate::support::schema::violations(&schema, &schema, v);
    for args in [
        vec!["--repo", "1"],
        vec!["--snippet", "10", "--snippet", "11"],
    ] {
        let mut all = vec!["batch", "submit", "--json"];
        all.extend(args);
        let r = trawl_in(&db, &all);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let submitted: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let payload = &submitted["payload"];
        assert!(fits(payload).is_empty(), "{payload}: {:?}", fits(payload));
        let bytes = serde_json::to_vec(payload).unwrap();
        assert!(trawl::pipeline::batch::BatchPayload::decode(&bytes).is_ok());
    }
    for bad in [
        serde_json::json!({}),
        serde_json::json!({ "repositories": [], "snippets": [] }),
        serde_json::json!({ "snippets": [] }),
        serde_json::json!({ "repositories": [{ "repository_id": 1 }], "snippets": [2] }),
        serde_json::json!({ "repos": [1] }),
    ] {
        assert!(!fits(&bad).is_empty(), "the schema takes {bad}");
        let bytes = serde_json::to_vec(&bad).unwrap();
        assert!(
            trawl::pipeline::batch::BatchPayload::decode(&bytes).is_err(),
            "decode takes {bad}"
        );
    }
}

#[tokio::test]
async fn snapshots_of_a_run_of_many_files_follow_each_batch() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..300 {
        let p = dir.path().join(format!("pkg{}/m{i}.py", i % 7));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("def f{i}(x):\n    return x + {i}\n")).unwrap();
    }
    let r = trawl_in(&db, &["index", &path_str(dir.path()), "--wait", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run_id = json_of(&r.stdout)["run_id"].as_i64().unwrap();
    assert_snapshots(&r.stdout, run_id);
    let snapshots: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // EXTRACT works 256 files a batch, CODE_EMBEDDINGS 256 snippets: a snapshot each, with
    // percent between 0 and 100.
    for stage in ["extract", "code_embeddings"] {
        let mid: Vec<f64> = snapshots
            .iter()
            .filter(|s| s["stage"] == stage && s["status"] == "running")
            .map(|s| s["percent"].as_f64().unwrap())
            .collect();
        assert!(
            mid.iter().any(|p| *p > 0.0 && *p < 100.0),
            "{stage}: {mid:?}\n{}",
            r.stdout
        );
    }
}
