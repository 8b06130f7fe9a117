//! What an attacker tries, through the real server and CLI: a git token lured to a foreign
//! host or onto a command line, server directories read over the API, links and FIFOs
//! swapped in under EXTRACT, huge queries, a stalling remote, credentials in URLs, secret
//! files, world-readable working copies.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::remote::{Remote, bare_repo};
use crate::support::server::{Served, ask, code};
use crate::support::{
    GATE, Gate, KillOnDrop, TestDb, gate_fault, path_str, poll_until, trawl_cmd, trawl_in,
};

const TOKEN: &str = "tok-1b9e-not-for-strangers";

#[tokio::test]
async fn git_token_is_sent_to_no_host_without_a_host_list_and_never_over_plain_http() {
    let db = TestDb::new().await;
    let remote = Remote::start(None, None);
    let register = |served: &Served| {
        let (http, url) = (served.client(), served.url("/api/v1/repositories"));
        let source = remote.url("/private.git");
        async move { ask(http.post(url).json(&json!({ "source": source }))).await }
    };

    // A token and no host list: the registration check asks the host, without it.
    let served = Served::start(&db, &["--workers", "0"], &[("TRAWL_GIT_TOKEN", TOKEN)]);
    let (status, body) = register(&served).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "git_failed"),
        "{body}"
    );
    assert!(!body.to_string().contains(TOKEN), "{body}");
    drop(served);
    let seen = remote.seen();
    assert!(!seen.is_empty(), "git asked the remote");
    assert!(
        seen.iter().all(|s| s.header("authorization").is_none()),
        "the token went to a host nobody named: {seen:?}"
    );

    // The host named, but over plain http: still not sent.
    let served = Served::start(
        &db,
        &["--workers", "0"],
        &[
            ("TRAWL_GIT_TOKEN", TOKEN),
            ("TRAWL_GIT_TOKEN_HOSTS", &remote.authority()),
        ],
    );
    let before = remote.seen().len();
    let (status, _) = register(&served).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let seen = remote.seen();
    assert!(seen.len() > before, "git asked the remote again");
    assert!(
        seen.iter().all(|s| s.header("authorization").is_none()),
        "the token went over plain http: {seen:?}"
    );

    // doctor says why a token without hosts goes nowhere.
    let r = crate::support::run(
        trawl_cmd()
            .envs(db.env())
            .env("TRAWL_GIT_TOKEN", TOKEN)
            .args(["doctor", "--json"]),
    );
    assert!(
        r.stdout.contains("git.token_hosts") && !r.stdout.contains(TOKEN),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn git_token_for_a_named_https_host_is_never_on_a_command_line() {
    use base64::Engine as _;
    let db = TestDb::new().await;
    let header =
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"));
    // git connects for TLS; while it does, every process's command line and environment
    // is looked at.
    let remote = Remote::start(None, Some(header));
    let url = format!("https://{}/private.git", remote.authority());
    let r = crate::support::run(
        trawl_cmd()
            .envs(db.env())
            .env("TRAWL_GIT_TOKEN", TOKEN)
            .env("TRAWL_GIT_TOKEN_HOSTS", remote.authority())
            .args(["index", &url]),
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!r.stderr.contains(TOKEN), "{}", r.stderr);
    let seen = remote.seen();
    assert!(!seen.is_empty(), "git connected: {}", r.stderr);
    assert!(
        seen.iter().any(|s| s.needle_in_environ),
        "the named host gets the token (through git's environment): {seen:?}"
    );
    assert!(
        seen.iter().all(|s| !s.needle_in_cmdline),
        "the token was on a command line (ps shows it): {seen:?}"
    );
}

#[tokio::test]
async fn api_clients_index_directories_under_allowed_roots_only() {
    let db = TestDb::new().await;
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("app")).unwrap();
    std::fs::write(root.path().join("app/a.py"), "def a():\n    return 1\n").unwrap();
    std::fs::write(outside.path().join("secret.py"), "PRIVATE_KEY = 1\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
    let git_outside = bare_repo(outside.path(), &[("s.py", "X = 1\n")]);

    // No roots: directories are refused, the setting named, whether they exist or not.
    let served = Served::start(&db, &["--workers", "0"], &[("TRAWL_ALLOWED_ROOTS", "")]);
    let http = served.client();
    let post = |source: String| {
        let (http, url) = (http.clone(), served.url("/api/v1/repositories"));
        async move { ask(http.post(url).json(&json!({ "source": source }))).await }
    };
    for source in [
        "/".to_string(),
        path_str(outside.path()),
        "/no/such/dir".to_string(),
        format!("file://{}", git_outside.display()),
        ".".to_string(),
    ] {
        let (status, body) = post(source.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "source_not_allowed"),
            "{source}: {body}"
        );
        assert!(body.to_string().contains("serve.allowed_roots"), "{body}");
    }
    drop(served);

    // One root: what lies under it is indexed; nothing else, by `..`, a link or file://.
    let served = Served::start(
        &db,
        &["--workers", "0"],
        &[("TRAWL_ALLOWED_ROOTS", &path_str(root.path()))],
    );
    let http = served.client();
    let post = |source: String| {
        let (http, url) = (http.clone(), served.url("/api/v1/repositories"));
        async move { ask(http.post(url).json(&json!({ "source": source }))).await }
    };
    let (status, body) = post(path_str(&root.path().join("app"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for source in [
        "/".to_string(),
        path_str(outside.path()),
        format!("{}/../", root.path().display()),
        path_str(&root.path().join("escape")),
        format!("file://{}", git_outside.display()),
        "/etc/no-such".to_string(),
    ] {
        let (status, body) = post(source.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "source_not_allowed"),
            "{source}: {body}"
        );
    }
    let (status, body) = post("app".to_string()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_source"),
        "relative: {body}"
    );
    let (status, body) = post(path_str(&root.path().join("missing"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_source"),
        "{body}"
    );
    let (_, listed) = ask(http.get(served.url("/api/v1/repositories"))).await;
    assert_eq!(
        listed["repositories"].as_array().unwrap().len(),
        1,
        "{listed}"
    );

    // The CLI, the machine's own user, still indexes any directory it can read.
    let r = trawl_in(&db, &["index", &path_str(outside.path())]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[tokio::test]
async fn credentials_in_a_git_url_are_never_stored_or_shown() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path(), &[("a.py", "def a():\n    return 1\n")]);
    let remote = Remote::start(Some(bare), None);
    let with_secret = remote
        .url("/repo.git")
        .replace("http://", "http://alice:s3cr3t-pw@");
    let served = Served::start(&db, &["--workers", "0"], &[]);
    let http = served.client();
    let (status, body) = ask(http
        .post(served.url("/api/v1/repositories"))
        .json(&json!({ "source": with_secret })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["repository"]["source"],
        remote.url("/repo.git"),
        "{body}"
    );
    let token_url = remote
        .url("/repo.git")
        .replace("http://", "http://ghp_tokenAsUser@");
    let r = trawl_in(&db, &["index", &token_url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for shown in [
        ask(http.get(served.url("/api/v1/repositories")))
            .await
            .1
            .to_string(),
        ask(http.get(served.url("/api/v1/dashboard")))
            .await
            .1
            .to_string(),
        ask(http.get(served.url("/api/v1/audit")))
            .await
            .1
            .to_string(),
        trawl_in(&db, &["status", "--json"]).stdout,
        trawl_in(&db, &["audit", "--json"]).stdout,
    ] {
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("ghp_tokenAsUser"),
            "{shown}"
        );
    }
    let stored: Vec<String> = sqlx::query_scalar("SELECT source FROM repositories")
        .fetch_all(db.store.pool())
        .await
        .unwrap();
    assert_eq!(
        stored,
        vec![remote.url("/repo.git")],
        "one repository, no credentials"
    );
}

#[tokio::test]
async fn a_stalling_remote_fails_sync_as_retryable_naming_the_remote() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path(), &[("a.py", "def a():\n    return 1\n")]);
    let remote = Remote::start(Some(bare), None);
    let url = remote.url("/repo.git");
    // Registered (the remote answers), the run queued with one attempt per stage.
    let r = crate::support::run(
        trawl_cmd()
            .envs(db.env())
            .env("TRAWL_MAX_ATTEMPTS", "1")
            .args(["index", &url]),
    );
    assert_eq!(r.code, 0, "registered: {}", r.stderr);
    // From now on the remote reads requests and never answers; a worker takes the run.
    remote.stall();
    let started = std::time::Instant::now();
    let mut worker = KillOnDrop::new(
        trawl_cmd()
            .envs(db.env())
            .env("TRAWL_GIT_TIMEOUT_SECS", "3")
            .env("TRAWL_MAX_ATTEMPTS", "1")
            .args(["worker"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status = poll_until(
        Duration::from_secs(60),
        "the run of the stalled remote to end (git was not bounded?)",
        async |seen| {
            let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = 1")
                .fetch_one(db.store.pool())
                .await
                .unwrap();
            *seen = status.clone();
            (!matches!(status.as_str(), "queued" | "running")).then_some(status)
        },
    )
    .await;
    let _ = worker.child().kill();
    let _ = worker.child().wait();
    assert_eq!(
        status,
        "failed",
        "git was not bounded: {:?}",
        started.elapsed()
    );
    let shown = trawl_in(&db, &["runs", "show", "1", "--json"]).stdout;
    assert!(
        shown.contains(&url) && shown.contains("was stopped after 3 s"),
        "the error names the remote and the limit: {shown}"
    );
    assert!(
        shown.contains("gave up after 1 attempt)"),
        "a stalled remote is a retryable failure: {shown}"
    );
}

#[tokio::test]
/// EXTRACT parses the contents SYNC read and stored, never the working tree again: a link
/// or a FIFO swapped in after SYNC is neither followed nor waited on, and the files are
/// indexed as SYNC saw them.
async fn extract_parses_what_sync_read_never_a_link_or_fifo_swapped_in_after_it() {
    let db = TestDb::new().await;
    let repo = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.py"),
        "def leaked_secret_function():\n    return 'hunter2'\n",
    )
    .unwrap();
    for (file, function) in [
        ("a.py", "plain_function"),
        ("b.py", "other_function"),
        ("c.py", "kept_function"),
    ] {
        std::fs::write(
            repo.path().join(file),
            format!("def {function}():\n    return 1\n"),
        )
        .unwrap();
    }

    // EXTRACT waits at the gate before its work; SYNC has recorded the files.
    let gate = Gate::hold(&db, GATE).await;
    let mut child = KillOnDrop::new(
        trawl_cmd()
            .envs(db.env())
            .env("TRAWL_TEST_FAULTS", gate_fault("extract", GATE))
            .args(["index", &path_str(repo.path()), "--wait"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    poll_until(Duration::from_secs(60), "EXTRACT to start", async |seen| {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM stage_runs WHERE stage = 'extract'")
                .fetch_optional(db.store.pool())
                .await
                .unwrap();
        *seen = format!("{status:?}");
        (status.as_deref() == Some("running")).then_some(())
    })
    .await;
    std::fs::remove_file(repo.path().join("a.py")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.py"), repo.path().join("a.py")).unwrap();
    std::fs::remove_file(repo.path().join("b.py")).unwrap();
    let fifo = std::ffi::CString::new(repo.path().join("b.py").to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    gate.release().await;

    let status = poll_until(
        Duration::from_secs(120),
        "the run to end (EXTRACT hung on the FIFO?)",
        async |_| child.child().try_wait().unwrap(),
    )
    .await;
    assert!(status.success(), "the run ended");
    let r = trawl_in(
        &db,
        &[
            "search",
            "leaked_secret_function",
            "--mode",
            "keyword",
            "--json",
        ],
    );
    assert!(
        !r.stdout.contains("hunter2"),
        "a file outside was indexed: {}",
        r.stdout
    );
    let r = trawl_in(
        &db,
        &["search", "kept_function", "--mode", "keyword", "--json"],
    );
    assert!(
        r.stdout.contains("c.py"),
        "the other files are indexed: {}",
        r.stdout
    );
    for (function, file) in [("plain_function", "a.py"), ("other_function", "b.py")] {
        let r = trawl_in(&db, &["search", function, "--mode", "keyword", "--json"]);
        assert!(
            r.stdout.contains(file),
            "{file} is indexed as SYNC read it: {}",
            r.stdout
        );
    }
    let items = trawl_in(&db, &["runs", "show", "1", "--failures"]).stdout;
    assert!(items.contains("no failed file"), "{items}");
}

#[tokio::test]
async fn huge_queries_are_refused_naming_the_limit_everywhere() {
    let db = TestDb::new().await;
    let served = Served::start(&db, &["--workers", "0"], &[]);
    let http = served.client();
    let long = "a".repeat(trawl::search::MAX_QUERY_CHARS + 1);
    let many: String = (0..(trawl::search::MAX_QUERY_TERMS + 1))
        .map(|i| format!("word{i} "))
        .collect();
    for q in [&long, &many] {
        let (status, body) = ask(http
            .post(served.url("/api/v1/search"))
            .json(&json!({ "query": q })))
        .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{body}"
        );
        assert!(body.to_string().contains("limit"), "{body}");
        let r = trawl_in(&db, &["search", q, "--mode", "keyword"]);
        assert!(r.code != 0 && r.stderr.contains("limit"), "{}", r.stderr);
    }
    // A two-megabyte body of distinct words is refused fast, not searched.
    let huge: String = (0..200_000).map(|i| format!("w{i} ")).collect();
    let (status, _) = ask(http
        .post(served.url("/api/v1/search"))
        .json(&json!({ "query": huge })))
    .await;
    assert!(status.is_client_error(), "{status}");
}

#[tokio::test]
async fn secret_files_are_not_indexed_and_working_copies_are_private() {
    let db = TestDb::new().await;
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join(".env"), "API_SECRET=swordfish42\n").unwrap();
    std::fs::write(
        repo.path().join("server.pem"),
        "-----BEGIN PRIVATE KEY-----\nswordfish42\n",
    )
    .unwrap();
    std::fs::write(
        repo.path().join("app.py"),
        "def serve_app():\n    return 1\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(
        dir.path(),
        &[("lib.py", "def lib_function():\n    return 1\n")],
    );
    let r = trawl_in(&db, &["index", &path_str(repo.path()), "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = trawl_in(
        &db,
        &["search", "swordfish42", "--mode", "keyword", "--json"],
    );
    assert!(!r.stdout.contains("swordfish42"), "{}", r.stdout);
    let items = trawl_in(&db, &["runs", "show", "1", "--items", "--json"]).stdout;
    assert!(
        items.contains("sync.deny"),
        "skipped with the reason: {items}"
    );

    let r = trawl_in(
        &db,
        &["index", &format!("file://{}", bare.display()), "--wait"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    use std::os::unix::fs::PermissionsExt as _;
    for dir in ["repos", "repos/2", "index", "index/keyword"] {
        let mode = std::fs::metadata(db.home.path().join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{dir} is readable by others: {mode:o}");
    }
}

#[tokio::test]
async fn control_characters_in_file_names_never_reach_the_terminal_raw() {
    let db = TestDb::new().await;
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("evil\u{1b}]0;pwned\u{7}.py"),
        "def terminal_title_trick():\n    return '\u{1b}[2J'\n",
    )
    .unwrap();
    let r = trawl_in(&db, &["index", &path_str(repo.path()), "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let items = trawl_in(&db, &["runs", "show", "1", "--items"]);
    assert!(items.stdout.contains("evil"), "{}", items.stdout);
    let hits = trawl_in(
        &db,
        &["search", "terminal_title_trick", "--mode", "keyword"],
    );
    assert!(hits.stdout.contains("evil"), "{}", hits.stdout);
    for out in [&items.stdout, &hits.stdout] {
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    }
}

#[tokio::test]
async fn every_write_over_the_api_is_audited_bounded_and_escaped() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.py"), "def a():\n    return 1\n").unwrap();
    let served = Served::start(&db, &["--workers", "0"], &[]);
    let http = served.client();
    let (status, body) = ask(http
        .post(served.url("/api/v1/repositories"))
        .json(&json!({ "source": path_str(dir.path()) })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let repo = body["repository"]["id"].as_i64().unwrap();
    let reindex = served.url(&format!("/api/v1/repositories/{repo}/reindex"));
    // A NUL in a path: refused, and the refusal is audited.
    let (status, _) = ask(http
        .post(&reindex)
        .json(&json!({ "scope": "files", "paths": ["a\u{0}.py"] })))
    .await;
    assert!(status.is_client_error(), "{status}");
    // Twenty thousand paths: refused, audited with the list cut.
    let many: Vec<String> = (0..20_000)
        .map(|i| format!("no/such/file-{i}.py"))
        .collect();
    let (status, _) = ask(http
        .post(&reindex)
        .json(&json!({ "scope": "files", "paths": many })))
    .await;
    assert!(status.is_client_error(), "{status}");

    let (_, audit) = ask(http.get(served.url("/api/v1/audit"))).await;
    let entries = audit["entries"].as_array().expect("entries");
    let index = entries
        .iter()
        .find(|e| e["action"] == "index")
        .expect("index audited");
    assert_eq!(index["actor"], "api", "{index}");
    assert_eq!(index["outcome"], "ok", "{index}");
    let refused: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "reindex" && e["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 2, "{audit}");
    let cut = refused
        .iter()
        .find(|e| {
            e["parameters"]["paths"]
                .as_array()
                .is_some_and(|p| p.len() > 2)
        })
        .expect("the long request");
    assert_eq!(
        cut["parameters"]["paths"].as_array().unwrap().len(),
        101,
        "{cut}"
    );
    assert!(
        audit.to_string().contains("a\\\\u{0}.py"),
        "the NUL escaped: {audit}"
    );
}
