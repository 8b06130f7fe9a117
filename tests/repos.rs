//! `trawl repos list` and `trawl repos remove`: a removed repository leaves nothing behind
//! (rows, keyword documents, working copy), its unfinished runs are cancelled, another
//! repository is untouched, and indexing the source again starts afresh.

use crate::support::{TestDb, assert_refused, path_str, trawl_in};

fn project(dir: &std::path::Path, word: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("lib.py"),
        format!(
            "def {word}_parser(text):\n    \"\"\"Parses {word}.\"\"\"\n    return text.split()\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("main.py"),
        format!(
            "from lib import {word}_parser\n\n\ndef main():\n    return {word}_parser('a b')\n"
        ),
    )
    .unwrap();
}

async fn count(db: &TestDb, table: &str, repository_id: i64) -> i64 {
    let sql = format!("SELECT count(*) FROM {table} WHERE repository_id = $1");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(repository_id)
        .fetch_one(db.store.pool())
        .await
        .unwrap()
}

fn search_paths(db: &TestDb, query: &str) -> String {
    let s = trawl_in(db, &["search", query, "--mode", "keyword", "--json"]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    s.stdout
}

#[tokio::test]
async fn a_removed_repository_leaves_nothing_behind() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let (a, b) = (tree.path().join("alpha"), tree.path().join("beta"));
    project(&a, "zebra");
    project(&b, "walrus");
    for dir in [&a, &b] {
        let r = trawl_in(&db, &["index", &path_str(dir), "--wait"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let listed = trawl_in(&db, &["repos", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed.stdout.contains("alpha") && listed.stdout.contains("beta"),
        "{}",
        listed.stdout
    );
    let repos: serde_json::Value =
        serde_json::from_str(&trawl_in(&db, &["repos", "list", "--json"]).stdout).unwrap();
    let id_of = |name: &str| {
        repos
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["repository"]["source"].as_str().unwrap().ends_with(name))
            .unwrap()["repository"]["id"]
            .as_i64()
            .unwrap()
    };
    let (alpha, beta) = (id_of("alpha"), id_of("beta"));
    assert!(search_paths(&db, "zebra").contains("alpha"));

    // A dry run says what would go, and removes nothing.
    let dry = trawl_in(
        &db,
        &["repos", "remove", &path_str(&a), "--dry-run", "--json"],
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let plan: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["contents"]["files"], 2, "{plan}");
    assert!(
        plan["contents"]["snippets"].as_i64().unwrap() >= 2,
        "{plan}"
    );
    assert!(plan["contents"]["vectors"].as_i64().unwrap() >= 2, "{plan}");
    assert!(plan["contents"]["symbols"].as_i64().unwrap() > 0, "{plan}");
    assert_eq!(count(&db, "files", alpha).await, 2);

    // An unfinished run (no worker takes it) is cancelled by the removal.
    std::fs::write(a.join("extra.py"), "def extra():\n    pass\n").unwrap();
    let queued = trawl_in(&db, &["index", &path_str(&a), "--json"]);
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    let run: serde_json::Value = serde_json::from_str(&queued.stdout).unwrap();
    let run_id = run["enqueued"]["run_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{run}"));
    let job: String =
        sqlx::query_scalar("SELECT job_id FROM stage_runs WHERE run_id = $1 AND stage = 'sync'")
            .bind(run_id)
            .fetch_one(db.store.pool())
            .await
            .unwrap();

    let removed = trawl_in(&db, &["repos", "remove", &alpha.to_string()]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(
        removed.stdout.contains("removed repository") && removed.stdout.contains("1 unfinished"),
        "{}",
        removed.stdout
    );
    for table in [
        "files",
        "snippets",
        "runs",
        "index_versions",
        "events",
        "pipeline_runs",
        "symbol_defs",
        "symbol_refs",
    ] {
        assert_eq!(count(&db, table, alpha).await, 0, "{table}");
    }
    let vectors: i64 = sqlx::query_scalar("SELECT count(*) FROM snippet_vectors v JOIN snippets s ON s.id = v.snippet_id WHERE s.repository_id = $1")
        .bind(alpha)
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(vectors, 0);
    let job_status: String = sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
        .bind(&job)
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(job_status, "Killed", "the unfinished run's jobs are killed");
    let garbage: i64 = sqlx::query_scalar("SELECT count(*) FROM file_content_garbage")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert!(garbage >= 2, "its contents go to the sweep");
    // The keyword index drops its documents; the other repository is untouched.
    // (The hits carry their repository's source.)
    assert!(!search_paths(&db, "zebra").contains("alpha"));
    assert!(search_paths(&db, "walrus").contains("beta"));
    assert_eq!(count(&db, "files", beta).await, 2);
    let callers = trawl_in(&db, &["callers", "walrus_parser"]);
    assert!(callers.stdout.contains("main.py"), "{}", callers.stdout);
    let audit: (Option<i64>, serde_json::Value) = sqlx::query_as(
        "SELECT repository_id, parameters FROM audit_log WHERE action = 'remove_repository'",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(audit.1["repository_id"], alpha, "{:?}", audit);
    assert!(
        audit.1["repository"].as_str().unwrap().ends_with("alpha"),
        "{:?}",
        audit
    );

    // Gone: a second removal is refused, naming the command that lists repositories.
    let again = trawl_in(&db, &["repos", "remove", &alpha.to_string()]);
    assert_refused(&again, "`trawl repos list` lists them");
    let listed = trawl_in(&db, &["repos", "list"]);
    assert!(
        !listed.stdout.contains("alpha") && listed.stdout.contains("beta"),
        "{}",
        listed.stdout
    );

    // Indexing the source again starts afresh, under a new id.
    let r = trawl_in(&db, &["index", &path_str(&a), "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(search_paths(&db, "zebra").contains("alpha"));
    assert!(search_paths(&db, "extra").contains("extra.py"));
}

/// A git source's working copy and history clone on this node go with it.
#[tokio::test]
async fn removing_a_git_source_deletes_its_working_copy_and_history() {
    let db = TestDb::new().await;
    let tree = tempfile::tempdir().unwrap();
    let dir = tree.path().join("gamma");
    project(&dir, "gamma");
    crate::support::git(&dir, &["init", "-q"]);
    crate::support::git(&dir, &["add", "."]);
    crate::support::git(&dir, &["commit", "-qm", "Gamma parser"]);
    let source = format!("file://{}", dir.display());
    let r = trawl_in(&db, &["index", &source, "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id: i64 = sqlx::query_scalar("SELECT id FROM repositories")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    let copy = db.home.path().join("repos").join(id.to_string());
    let history = db.home.path().join("history").join(id.to_string());
    assert!(copy.is_dir() && history.is_dir(), "{copy:?} {history:?}");
    let removed = trawl_in(&db, &["repos", "remove", &source, "--json"]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let v: serde_json::Value = serde_json::from_str(&removed.stdout).unwrap();
    assert_eq!(v["contents"]["commits"], 1, "{v}");
    assert_eq!(v["directories"].as_array().map(Vec::len), Some(3), "{v}");
    assert!(!copy.exists() && !history.exists());
    assert_eq!(count(&db, "commits", id).await, 0);
}
