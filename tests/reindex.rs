//! `trawl reindex`: scopes, paths checked against the repository, dry runs, priority
//! classes, embeddings-only, and the result of --wait, through the binary as a user runs it.

use crate::support::{TestDb, assert_refused, path_str, trawl_in};

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
        (vec!["--scope", "directory"], "needs at least one --path"),
        (
            vec!["--scope", "project", "--path", "src"],
            "takes no --path",
        ),
    ] {
        let mut all = vec!["reindex", repo.as_str()];
        all.extend(args);
        assert_refused(&trawl_in(&db, &all), message);
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
    assert_eq!(result["files_processed"], 0, "{result}");
    let run_id = result["run_id"].as_i64().unwrap();
    assert!(items_of(&db, run_id).await.is_empty());
    // Watching a run that has ended: its terminal snapshot, exit 0.
    let r = trawl_in(&db, &["runs", "watch", &run_id.to_string(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
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
    let r = trawl_in(
        &db,
        &[
            "reindex",
            &repo,
            "--scope",
            "embeddings-only",
            "--dry-run",
            "--json",
        ],
    );
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["snippets"], 0, "{}", r.stdout);
}
