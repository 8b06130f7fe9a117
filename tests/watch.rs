//! Watching: `trawl watch`, a real process with its own worker, brings a directory
//! source's saves, renames and deletions to keyword and semantic search; ignored files stay
//! out; a burst of files is one run, not one per file; a watched directory moved away is
//! reported, the others are watched on, and it is watched again when it is back; changes
//! made while the database is down are indexed once it is up again.
//!
//! The latency a person sees (save → searchable) is measured by `trawl bench watch`, not
//! here: these tests wait generously for each result and assert what it is.

use std::io::BufRead as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{self, KillOnDrop, TestDb, path_str, poll_until, run, trawl_cmd};

/// Long enough for a loaded CI machine; a healthy watch takes about a second.
const WAIT: Duration = Duration::from_secs(60);

/// A `trawl watch --json` process and the events it prints.
struct Watch {
    child: KillOnDrop,
    events: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Watch {
    fn spawn(env: &[(String, String)], args: &[&str]) -> Watch {
        let mut child = trawl_cmd()
            .envs(env.iter().cloned())
            .args(["watch", "--json"])
            .args(if args.contains(&"--workers") {
                &[][..]
            } else {
                &["--workers", "1"][..]
            })
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("trawl watch starts");
        let out = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("watch printed a line that is not JSON ({e}): {line}")
                });
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Watch {
            child: KillOnDrop::new(child),
            events,
            seen: Vec::new(),
        }
    }

    /// The next event `want` accepts (the others are kept in `seen`).
    fn wait_for(
        &mut self,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if want(&e) {
                        return e;
                    }
                }
                Err(_) => panic!("no {what} event within {WAIT:?}; seen: {:?}", self.seen),
            }
        }
    }
}

fn event_is(e: &serde_json::Value, name: &str, repository_id: i64) -> bool {
    e["event"] == name && e["repository_id"] == repository_id
}

/// Registers and indexes `dir`; its repository id.
fn index(env: &[(String, String)], dir: &Path) -> i64 {
    let r = run(trawl_cmd().envs(env.iter().cloned()).args([
        "index",
        &path_str(dir),
        "--wait",
        "--json",
    ]));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let r = run(trawl_cmd()
        .envs(env.iter().cloned())
        .args(["repos", "list", "--json"]));
    let repos: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    repos
        .iter()
        .find(|x| x["repository"]["source"] == path_str(dir).as_str())
        .and_then(|x| x["repository"]["id"].as_i64())
        .unwrap_or_else(|| panic!("{dir:?} not registered: {}", r.stdout))
}

/// The (path, name) of each hit of `query` in `mode`, in rank order.
fn hits(env: &[(String, String)], query: &str, mode: &str) -> Vec<(String, String)> {
    let r = run(trawl_cmd()
        .envs(env.iter().cloned())
        .args(["search", query, "--mode", mode, "--json", "--limit", "5"]));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let found: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    found
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap_or_default().to_string(),
                h["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until `check` holds of the hits of `query` in `mode`.
async fn until_hits(
    env: &[(String, String)],
    query: &str,
    mode: &str,
    what: &str,
    check: impl Fn(&[(String, String)]) -> bool,
) {
    poll_until(WAIT, what, async |seen| {
        let found = hits(env, query, mode);
        *seen = format!("{found:?}");
        check(&found).then_some(())
    })
    .await
}

fn has(found: &[(String, String)], path: &str, name: &str) -> bool {
    found.iter().any(|(p, n)| p == path && n == name)
}

fn project(dir: &Path) {
    std::fs::create_dir_all(dir.join("pkg")).unwrap();
    std::fs::write(dir.join(".gitignore"), "ignored/\n").unwrap();
    std::fs::write(
        dir.join("pkg/ledger.py"),
        "def post_entry(book, entry):\n    \"\"\"Posts an entry.\"\"\"\n    book.append(entry)\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("pkg/report.py"),
        "def summarise(book):\n    return len(book)\n",
    )
    .unwrap();
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

async fn watch_runs(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs WHERE origin = 'watch'")
        .fetch_one(db.store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_renames_and_deletes_reach_search_and_ignored_files_stay_out() {
    let db = TestDb::new().await;
    let env = db.env();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let id = index(&env, dir.path());
    let mut watch = Watch::spawn(&env, &[&path_str(dir.path())]);
    let e = watch.wait_for("watching", |e| event_is(e, "watching", id));
    assert_eq!(e["backend"], "notify", "{e}");
    // Starting catches up with what changed while nobody watched: a project-scope run.
    let e = watch.wait_for("catch-up", |e| event_is(e, "queued", id));
    assert_eq!(e["scope"], "project", "{e}");

    // A save: the new function is found by keyword and by meaning.
    append(
        &dir.path().join("pkg/ledger.py"),
        "\ndef reconcile_kestrel_accounts(book):\n    \"\"\"Matches kestrel accounts.\"\"\"\n    return sorted(book)\n",
    );
    until_hits(
        &env,
        "reconcile_kestrel_accounts",
        "keyword",
        "the saved function by keyword",
        |f| has(f, "pkg/ledger.py", "reconcile_kestrel_accounts"),
    )
    .await;
    until_hits(
        &env,
        "reconcile_kestrel_accounts(book): Matches kestrel accounts",
        "semantic",
        "the saved function by meaning",
        |f| has(f, "pkg/ledger.py", "reconcile_kestrel_accounts"),
    )
    .await;
    let e = watch.wait_for("the save's run", |e| {
        event_is(e, "queued", id) && e["scope"] == "files"
    });
    assert_eq!(e["files"], 1, "{e}");

    // An ignored file and a real one saved together: one run, without the ignored file.
    std::fs::create_dir_all(dir.path().join("ignored")).unwrap();
    std::fs::write(
        dir.path().join("ignored/scratch.py"),
        "def ignored_osprey_helper():\n    return 0\n",
    )
    .unwrap();
    append(
        &dir.path().join("pkg/report.py"),
        "\ndef osprey_totals(book):\n    return sum(book)\n",
    );
    until_hits(
        &env,
        "osprey_totals",
        "keyword",
        "the real file's function",
        |f| has(f, "pkg/report.py", "osprey_totals"),
    )
    .await;
    assert!(
        hits(&env, "ignored_osprey_helper", "keyword")
            .iter()
            .all(|(p, _)| !p.starts_with("ignored/")),
        "an ignored file was indexed"
    );
    let scopes: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT scope FROM runs WHERE origin = 'watch' AND repository_id = $1")
            .bind(id)
            .fetch_all(db.store.pool())
            .await
            .unwrap();
    assert!(
        scopes.iter().all(|s| !s.to_string().contains("ignored/")),
        "{scopes:?}"
    );

    // A rename: found at its new path only.
    std::fs::rename(
        dir.path().join("pkg/ledger.py"),
        dir.path().join("pkg/journal.py"),
    )
    .unwrap();
    until_hits(
        &env,
        "reconcile_kestrel_accounts",
        "keyword",
        "the renamed file",
        |f| {
            has(f, "pkg/journal.py", "reconcile_kestrel_accounts")
                && !f.iter().any(|(p, _)| p == "pkg/ledger.py")
        },
    )
    .await;
    // A deletion: gone from keyword and semantic results.
    std::fs::remove_file(dir.path().join("pkg/journal.py")).unwrap();
    until_hits(
        &env,
        "reconcile_kestrel_accounts",
        "keyword",
        "the deleted file gone",
        |f| !f.iter().any(|(p, _)| p == "pkg/journal.py"),
    )
    .await;
    assert!(
        !hits(
            &env,
            "reconcile_kestrel_accounts(book): Matches kestrel accounts",
            "semantic"
        )
        .iter()
        .any(|(p, _)| p == "pkg/journal.py" || p == "pkg/ledger.py"),
        "a deleted file is still found by meaning"
    );

    // A burst (a checkout of 200 files into a new directory): a run or two, not 200, and
    // every file indexed.
    let before = watch_runs(&db).await;
    let burst = dir.path().join("burst");
    std::fs::create_dir_all(&burst).unwrap();
    for i in 0..200 {
        std::fs::write(
            burst.join(format!("m{i}.py")),
            format!("def burst_heron_{i}():\n    return {i}\n"),
        )
        .unwrap();
    }
    for name in ["burst_heron_0", "burst_heron_199"] {
        until_hits(&env, name, "keyword", "the burst's files", |f| {
            f.iter().any(|(_, n)| n == name)
        })
        .await;
    }
    let files: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM files WHERE repository_id = $1 AND path LIKE 'burst/%'",
    )
    .bind(id)
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(files, 200);
    let runs = watch_runs(&db).await - before;
    assert!((1..=3).contains(&runs), "{runs} runs for one burst");
    watch.child.stop();
}

/// The inotify watches process `pid` holds, from the kernel's own account of its
/// descriptors (`/proc/<pid>/fdinfo`: a line `inotify wd:…` per watch).
fn inotify_watches(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_directories_sync_reads_are_watched_and_new_ones_join() {
    let db = TestDb::new().await;
    let env = db.env();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    // Trees SYNC never reads: skipped by name, and ignored by .gitignore ("ignored/").
    for tree in ["node_modules", "target", "ignored"] {
        for i in 0..30 {
            std::fs::create_dir_all(dir.path().join(format!("{tree}/d{i}/e"))).unwrap();
        }
    }
    // A link to a directory outside the root is not followed: nothing out there is watched.
    let outside = tempfile::tempdir().unwrap();
    for i in 0..5 {
        std::fs::create_dir_all(outside.path().join(format!("o{i}"))).unwrap();
    }
    std::os::unix::fs::symlink(outside.path(), dir.path().join("elsewhere")).unwrap();
    let id = index(&env, dir.path());
    let mut watch = Watch::spawn(&env, &[&path_str(dir.path())]);
    let e = watch.wait_for("watching", |e| event_is(e, "watching", id));
    assert_eq!(e["backend"], "notify", "{e}");
    let pid = watch.child.child().id();
    // The root and pkg/: two watches, not the 182 directories a recursive watch takes, nor
    // any through the link.
    assert_eq!(inotify_watches(pid), 2);

    // Nor one linked in while watching.
    std::os::unix::fs::symlink(outside.path().join("o1"), dir.path().join("pkg/late")).unwrap();

    // A directory made while watching is watched, and so is the one made inside it.
    let fresh = dir.path().join("fresh/deeper");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(
        fresh.join("tern.py"),
        "def tern_migration_route():\n    return 1\n",
    )
    .unwrap();
    until_hits(
        &env,
        "tern_migration_route",
        "keyword",
        "the new directory's file",
        |f| has(f, "fresh/deeper/tern.py", "tern_migration_route"),
    )
    .await;
    poll_until(WAIT, "the new directories' watches", async |seen| {
        let n = inotify_watches(pid);
        *seen = format!("{n} watches");
        (n == 4).then_some(())
    })
    .await;
    // A later save inside it is seen through its own watch.
    append(
        &fresh.join("tern.py"),
        "\ndef tern_flock_census():\n    return 2\n",
    );
    until_hits(
        &env,
        "tern_flock_census",
        "keyword",
        "the later save",
        |f| has(f, "fresh/deeper/tern.py", "tern_flock_census"),
    )
    .await;
    // Renamed, its watches follow it: a save there is found at the new path.
    std::fs::rename(dir.path().join("fresh"), dir.path().join("moved")).unwrap();
    until_hits(
        &env,
        "tern_flock_census",
        "keyword",
        "the renamed directory",
        |f| {
            has(f, "moved/deeper/tern.py", "tern_flock_census")
                && !f.iter().any(|(p, _)| p.starts_with("fresh/"))
        },
    )
    .await;
    append(
        &dir.path().join("moved/deeper/tern.py"),
        "\ndef tern_colony_atlas():\n    return 3\n",
    );
    until_hits(
        &env,
        "tern_colony_atlas",
        "keyword",
        "a save after the rename",
        |f| has(f, "moved/deeper/tern.py", "tern_colony_atlas"),
    )
    .await;
    assert_eq!(inotify_watches(pid), 4, "a rename adds no watches");
    // The .gitignore no longer hides ignored/: its 61 directories are watched too, and a
    // file made deep in it afterwards is found.
    std::fs::write(dir.path().join(".gitignore"), "").unwrap();
    poll_until(WAIT, "the un-ignored directories' watches", async |seen| {
        let n = inotify_watches(pid);
        *seen = format!("{n} watches");
        (n == 65).then_some(())
    })
    .await;
    std::fs::write(
        dir.path().join("ignored/d7/e/kite.py"),
        "def kite_updraft_gauge():\n    return 4\n",
    )
    .unwrap();
    until_hits(
        &env,
        "kite_updraft_gauge",
        "keyword",
        "a file in the un-ignored tree",
        |f| has(f, "ignored/d7/e/kite.py", "kite_updraft_gauge"),
    )
    .await;
    watch.child.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_moved_away_is_reported_the_others_watched_on_and_it_is_watched_again_when_back()
 {
    let db = TestDb::new().await;
    let env = db.env();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    project(a.path());
    project(b.path());
    let (ida, idb) = (index(&env, a.path()), index(&env, b.path()));
    // No repository named: every directory source.
    let mut watch = Watch::spawn(&env, &[]);
    watch.wait_for("watching a", |e| event_is(e, "watching", ida));
    watch.wait_for("watching b", |e| event_is(e, "watching", idb));

    let away = a.path().with_extension("away");
    std::fs::rename(a.path(), &away).unwrap();
    let e = watch.wait_for("gone", |e| event_is(e, "gone", ida));
    assert_eq!(e["root"], path_str(a.path()).as_str(), "{e}");
    // The other is watched on.
    append(
        &b.path().join("pkg/report.py"),
        "\ndef plover_digest(book):\n    return book[:1]\n",
    );
    until_hits(
        &env,
        "plover_digest",
        "keyword",
        "the other repository's save",
        |f| f.iter().any(|(_, n)| n == "plover_digest"),
    )
    .await;
    // A file changed while it was away, then it comes back: caught up and watched again.
    append(
        &away.join("pkg/ledger.py"),
        "\ndef curlew_while_away(book):\n    return book\n",
    );
    std::fs::rename(&away, a.path()).unwrap();
    watch.wait_for("back", |e| event_is(e, "back", ida));
    until_hits(
        &env,
        "curlew_while_away",
        "keyword",
        "the change made while away",
        |f| f.iter().any(|(_, n)| n == "curlew_while_away"),
    )
    .await;
    append(
        &a.path().join("pkg/report.py"),
        "\ndef curlew_after_return(book):\n    return book\n",
    );
    until_hits(
        &env,
        "curlew_after_return",
        "keyword",
        "a save after the return",
        |f| f.iter().any(|(_, n)| n == "curlew_after_return"),
    )
    .await;
    watch.child.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_saved_while_the_database_is_down_are_indexed_when_it_is_back() {
    // A home of the test's own, with the embedded cluster trawl starts on demand.
    let s = support::suite().await;
    let home = support::temp_home();
    let pg_bin = trawl::setup::pg_bin(&s.installed);
    let installed = support::installed_config();
    let env: Vec<(String, String)> = vec![
        ("TRAWL_HOME".into(), path_str(home.path())),
        ("TRAWL_PG_BIN".into(), path_str(&pg_bin)),
        ("TRAWL_MODEL_DIR".into(), path_str(&installed.model_dir())),
        (
            "TRAWL_ONNXRUNTIME".into(),
            path_str(&installed.onnxruntime_lib()),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let id = index(&env, dir.path());
    let mut watch = Watch::spawn(&env, &[&path_str(dir.path())]);
    watch.wait_for("watching", |e| event_is(e, "watching", id));
    watch.wait_for("catch-up", |e| event_is(e, "queued", id));

    let stopped = run(trawl_cmd().envs(env.iter().cloned()).args(["db", "stop"]));
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    append(
        &dir.path().join("pkg/ledger.py"),
        "\ndef dunlin_while_down(book):\n    return book\n",
    );
    let e = watch.wait_for("a warning that the database is down", |e| {
        e["event"] == "warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot enqueue"))
    });
    assert_eq!(e["repository_id"], id, "{e}");
    let started = run(trawl_cmd().envs(env.iter().cloned()).args(["db", "start"]));
    assert_eq!(started.code, 0, "{}", started.stderr);
    watch.wait_for("the kept changes enqueued", |e| {
        event_is(e, "queued", id) && e["scope"] == "files"
    });
    until_hits(
        &env,
        "dunlin_while_down",
        "keyword",
        "the change saved while down",
        |f| f.iter().any(|(_, n)| n == "dunlin_while_down"),
    )
    .await;
    watch.child.stop();
    let _ = run(trawl_cmd().envs(env.iter().cloned()).args(["db", "stop"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_watch_keeps_a_directory_fresh_for_the_api() {
    let db = TestDb::new().await;
    let env = db.env();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    index(&env, dir.path());
    let served = crate::support::server::Served::start(&db, &["--workers", "1", "--watch"], &[]);
    let search = |q: &'static str| {
        let (client, url) = (
            served.client(),
            served.url(&format!("/api/v1/search?q={q}&mode=keyword")),
        );
        async move {
            let found: serde_json::Value =
                client.get(url).send().await.unwrap().json().await.unwrap();
            found["hits"]
                .as_array()
                .map(|h| h.iter().any(|x| x["name"] == q))
                .unwrap_or(false)
        }
    };
    // The watch is up once its catch-up run was enqueued (the serve log says so too).
    poll_until(WAIT, "the server's watch catch-up run", async |seen| {
        let n = watch_runs(&db).await;
        *seen = format!("{n} watch runs");
        (n >= 1).then_some(())
    })
    .await;
    append(
        &dir.path().join("pkg/report.py"),
        "\ndef sandpiper_served(book):\n    return book\n",
    );
    poll_until(WAIT, "the saved function through the API", async |seen| {
        let ok = search("sandpiper_served").await;
        *seen = format!("found: {ok}");
        ok.then_some(())
    })
    .await;
}

#[tokio::test]
async fn watch_refuses_what_it_cannot_watch_naming_it() {
    let db = TestDb::new().await;
    let env = db.env();
    let r = run(trawl_cmd().envs(env.clone()).args(["watch"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no directory source to watch"),
        "{}",
        r.stderr
    );
    let r = run(trawl_cmd()
        .envs(env.clone())
        .args(["watch", "/no/such/dir"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no repository /no/such/dir"),
        "{}",
        r.stderr
    );
    // A git source is synced by the scheduler, not watched.
    let repo = tempfile::tempdir().unwrap();
    crate::support::git(repo.path(), &["init", "--quiet"]);
    std::fs::write(repo.path().join("a.py"), "x = 1\n").unwrap();
    crate::support::git(repo.path(), &["add", "."]);
    crate::support::git(repo.path(), &["commit", "--quiet", "-m", "a"]);
    let url = format!("file://{}", repo.path().display());
    let r = run(trawl_cmd()
        .envs(env.clone())
        .args(["index", &url, "--wait"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(trawl_cmd().envs(env.clone()).args(["watch", &url]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("is a git source"), "{}", r.stderr);
    // A polling interval too short to be sane is a usage error.
    let r = run(trawl_cmd()
        .envs(env.clone())
        .args(["watch", "--poll-ms", "1"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--poll-ms"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_watch_finds_a_save_too() {
    let db = TestDb::new().await;
    let env = db.env();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let id = index(&env, dir.path());
    let mut watch = Watch::spawn(&env, &["--poll-ms", "100", &path_str(dir.path())]);
    let e = watch.wait_for("watching", |e| event_is(e, "watching", id));
    assert_eq!(e["backend"], "poll", "{e}");
    append(
        &dir.path().join("pkg/ledger.py"),
        "\ndef turnstone_polled(book):\n    return book\n",
    );
    until_hits(
        &env,
        "turnstone_polled",
        "keyword",
        "the save seen by polling",
        |f| has(f, "pkg/ledger.py", "turnstone_polled"),
    )
    .await;
    watch.child.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_arriving_while_a_watch_run_waits_join_it() {
    let db = TestDb::new().await;
    let env = db.env();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let id = index(&env, dir.path());
    // No worker: the watch's runs stay queued, so later changes find one to join.
    let mut watch = Watch::spawn(&env, &["--workers", "0", &path_str(dir.path())]);
    let catch_up = watch.wait_for("the catch-up run", |e| event_is(e, "queued", id));
    assert_eq!(catch_up["scope"], "project", "{catch_up}");
    let r = run(trawl_cmd().envs(env.clone()).args([
        "runs",
        "cancel",
        &catch_up["run_id"].to_string(),
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);

    // A save: a files run of its own. A second save, a burst later: joins it.
    append(
        &dir.path().join("pkg/ledger.py"),
        "\ndef knot_one(b):\n    return b\n",
    );
    let first = watch.wait_for("the first save's run", |e| {
        event_is(e, "queued", id) && e["scope"] == "files"
    });
    assert_eq!(first["joined"], false, "{first}");
    std::thread::sleep(Duration::from_millis(300));
    append(
        &dir.path().join("pkg/report.py"),
        "\ndef knot_two(b):\n    return b\n",
    );
    let second = watch.wait_for("the second save", |e| {
        event_is(e, "queued", id) && e["run_id"] == first["run_id"]
    });
    assert_eq!(
        (second["joined"].clone(), second["files"].clone()),
        (true.into(), 2.into()),
        "{second}"
    );
    let scope: serde_json::Value = sqlx::query_scalar("SELECT scope FROM runs WHERE id = $1")
        .bind(first["run_id"].as_i64().unwrap())
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(
        scope,
        serde_json::json!({"kind": "files", "paths": ["pkg/ledger.py", "pkg/report.py"]})
    );
    assert_eq!(
        watch_runs(&db).await,
        2,
        "the cancelled catch-up and one run for both saves"
    );
    // A worker now runs the joined run: both saves are found.
    watch.child.stop();
    let ctx = trawl::pipeline::PipelineContext::new(db.store.clone(), db.config());
    let (stop, worker) = crate::support::spawn_worker(ctx, 1);
    for name in ["knot_one", "knot_two"] {
        until_hits(&env, name, "keyword", "a joined save", |f| {
            f.iter().any(|(_, n)| n == name)
        })
        .await;
    }
    stop.send(()).unwrap();
    worker.await.unwrap();
}
