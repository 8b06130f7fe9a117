//! Freshness: what an index reflects against its source now, in `trawl status --json`
//! and the API — a directory's files changed on disk since the index, a git source's
//! indexed commit and how many commits its ref has moved on.

use crate::support::{TestDb, git, path_str, run, trawl_cmd, trawl_in};

fn freshness_of(db: &TestDb, source: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["status", source, "--json"];
    args.extend_from_slice(extra);
    let r = trawl_in(db, &args);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let all: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    all[0]["freshness"].clone()
}

/// `f` counts `[added, changed, deleted]` files on disk.
fn assert_disk(f: &serde_json::Value, [added, changed, deleted]: [i64; 3]) {
    assert_eq!(
        f["changed_on_disk"],
        serde_json::json!({ "added": added, "changed": changed, "deleted": deleted }),
        "{f}"
    );
}

#[tokio::test]
async fn a_directory_counts_the_files_changed_on_disk_since_the_index() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    for (f, body) in [
        ("a.py", "def a():\n    return 1\n"),
        ("b.py", "def b():\n    return 2\n"),
        ("c.py", "x = 3\n"),
    ] {
        std::fs::write(dir.path().join(f), body).unwrap();
    }
    let source = path_str(dir.path());
    let r = trawl_in(&db, &["index", &source, "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let f = freshness_of(&db, &source, &[]);
    assert_disk(&f, [0, 0, 0]);
    assert!(f["built_at"].is_string(), "{f}");

    std::fs::write(dir.path().join("d.py"), "def d():\n    return 4\n").unwrap();
    std::fs::write(dir.path().join("a.py"), "def a():\n    return 10\n").unwrap();
    std::fs::remove_file(dir.path().join("c.py")).unwrap();
    let f = freshness_of(&db, &source, &[]);
    assert_disk(&f, [1, 1, 1]);
    let r = trawl_in(&db, &["status", &source]);
    assert!(
        r.stdout.contains("1 added, 1 changed, 1 deleted"),
        "{}",
        r.stdout
    );

    // A reindex brings it in: fresh again.
    let r = trawl_in(&db, &["reindex", &source, "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let f = freshness_of(&db, &source, &[]);
    assert_disk(&f, [0, 0, 0]);
    // The directory gone: said, not failed.
    let gone = dir.path().to_path_buf();
    drop(dir);
    let f = freshness_of(&db, &path_str(&gone), &[]);
    assert!(
        f["note"]
            .as_str()
            .is_some_and(|n| n.contains("cannot read")),
        "{f}"
    );
}

#[tokio::test]
async fn a_git_source_says_its_indexed_commit_and_how_far_its_ref_moved_on() {
    let db = TestDb::new().await;
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "--quiet"]);
    std::fs::write(repo.path().join("lib.py"), "def one():\n    return 1\n").unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "--quiet", "-m", "one"]);
    let url = format!("file://{}", repo.path().display());
    let r = trawl_in(&db, &["index", &url, "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let head = |dir: &std::path::Path| {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(dir)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let first = head(repo.path());
    let f = freshness_of(&db, &url, &[]);
    assert_eq!(f["indexed_commit"], first.as_str(), "{f}");
    assert_eq!(f["remote_commit"], first.as_str(), "{f}");
    assert_eq!(f["commits_ahead"], 0, "{f}");

    for n in ["two", "three"] {
        std::fs::write(
            repo.path().join(format!("{n}.py")),
            format!("def {n}():\n    return 0\n"),
        )
        .unwrap();
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "--quiet", "-m", n]);
    }
    let f = freshness_of(&db, &url, &[]);
    assert_eq!(f["indexed_commit"], first.as_str(), "{f}");
    assert_eq!(f["remote_commit"], head(repo.path()).as_str(), "{f}");
    assert_eq!(f["commits_ahead"], 2, "{f}");
    let r = trawl_in(&db, &["status", &url]);
    assert!(
        r.stdout.contains("the remote is 2 commits ahead"),
        "{}",
        r.stdout
    );
    // Without the remote: the indexed commit alone, nothing asked over the network.
    let f = freshness_of(&db, &url, &["--no-remote"]);
    assert_eq!(f["indexed_commit"], first.as_str(), "{f}");
    assert!(
        f["remote_commit"].is_null() && f["commits_ahead"].is_null(),
        "{f}"
    );
    // A sync catches up; the fetch for the count left the index as it was until then.
    let r = run(trawl_cmd().envs(db.env()).args(["reindex", &url, "--wait"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let f = freshness_of(&db, &url, &[]);
    assert_eq!(f["commits_ahead"], 0, "{f}");
    assert_eq!(f["indexed_commit"], head(repo.path()).as_str(), "{f}");
    // An unreachable remote: said in a note, the status still answers.
    drop(repo);
    let f = freshness_of(&db, &url, &[]);
    assert!(f["note"].is_string() && f["commits_ahead"].is_null(), "{f}");
}
