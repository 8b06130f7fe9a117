//! Shared test support: a real PostgreSQL with pgvector for the whole suite, and one
//! freshly migrated database per test.
//!
//! The suite's cluster lives in `$TMPDIR/trawl-test-<uid>` (or `TRAWL_TEST_HOME`), run with
//! the binaries `trawl setup` installs (the suite runs set-up itself, idempotently). Each
//! test database is a copy of a migrated template, named `trawl_t_<random>`, and is dropped
//! when the test's [`TestDb`] is dropped. Set `TRAWL_TEST_DATABASE_URL` to an admin URL of
//! another server (the docker-compose one, say) to run the suite there instead.

#![allow(dead_code)]

pub mod browser;
pub mod remote;
pub mod schema;
pub mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::sync::OnceCell;
use trawl::cluster::Cluster;
use trawl::config::Config;
use trawl::store::{self, PoolSettings, Store};

/// Prefix of every test database, so leftovers of a crashed run can be found.
pub const TEST_DB_PREFIX: &str = "trawl_t_";

/// What the whole suite shares.
pub struct Suite {
    /// A URL of a database on the test server from which others are created and dropped.
    pub admin_url: String,
    /// The template every test database copies.
    pub template: String,
    /// The default configuration set-up installed into (binaries and model live there).
    pub installed: Config,
}

static SUITE: OnceCell<Suite> = OnceCell::const_new();

/// The process environment as a map (tests pass it to `Config::load`).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// The configuration `trawl setup` installs into by default (TRAWL_HOME honoured).
pub fn installed_config() -> Config {
    let mut env = process_env();
    // The suite must not install into a database-URL-shaped nowhere: set-up decides what to
    // install from the embedded default.
    env.remove("TRAWL_DATABASE_URL");
    env.remove("DATABASE_URL");
    let c = Config::load(None, &env, &[]).expect("default config loads");
    c.validate().expect("default config is valid");
    c
}

/// Root of the suite's scratch space: short (unix socket paths are limited to 107 bytes) and
/// reachable by the unprivileged server user when the suite runs as root.
pub fn scratch_root() -> PathBuf {
    if let Ok(p) = std::env::var("TRAWL_TEST_HOME") {
        return PathBuf::from(p);
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("trawl-test-{uid}"))
}

/// A new empty directory for one test (removed when dropped).
pub fn temp_home() -> tempfile::TempDir {
    let root = scratch_root().join("homes");
    std::fs::create_dir_all(&root).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("h")
        .tempdir_in(&root)
        .unwrap();
    // The server user must be able to enter it when the suite runs as root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The cluster this test process started, stopped at exit.
static STARTED: std::sync::OnceLock<Cluster> = std::sync::OnceLock::new();

extern "C" fn stop_started_cluster() {
    if let Some(cluster) = STARTED.get() {
        let _ = cluster.stop();
    }
}

pub async fn suite() -> &'static Suite {
    SUITE
        .get_or_init(|| async {
            trawl::install_tls_provider();
            let installed = installed_config();
            trawl::setup::run(&installed)
                .await
                .expect("trawl setup installs the test prerequisites");
            let admin_url = match std::env::var("TRAWL_TEST_DATABASE_URL") {
                Ok(url) => url,
                Err(_) => {
                    let home = scratch_root().join("cluster");
                    std::fs::create_dir_all(&home).unwrap();
                    let cluster =
                        Cluster::new(&home, trawl::setup::pg_bin(&installed)).without_fsync();
                    let started = tokio::task::spawn_blocking({
                        let c = cluster.clone();
                        move || c.start()
                    })
                    .await
                    .unwrap()
                    .expect("the test cluster starts");
                    // The suite stops the server it started when the test binary exits,
                    // however it was run (`cargo test` by hand included); one that was
                    // already running belongs to someone else and is left alone.
                    if matches!(started, trawl::cluster::Started::Started { .. })
                        && STARTED.set(cluster.clone()).is_ok()
                    {
                        // SAFETY: registering a plain function to run at exit.
                        unsafe {
                            libc::atexit(stop_started_cluster);
                        }
                    }
                    cluster.url_for("postgres")
                }
            };
            let template = ensure_template(&admin_url).await;
            Suite {
                admin_url,
                template,
                installed,
            }
        })
        .await
}

/// The migrated template database, named after the migrations it holds so a schema change
/// makes a new one. Created once per server under an advisory lock.
async fn ensure_template(admin_url: &str) -> String {
    use sqlx::Connection;
    let mut fingerprint = 0u64;
    for m in store::MIGRATOR.iter() {
        fingerprint = fingerprint.wrapping_mul(31).wrapping_add(m.version as u64);
        for b in m.checksum.iter() {
            fingerprint = fingerprint.wrapping_mul(131).wrapping_add(*b as u64);
        }
    }
    let name = format!("trawl_tpl_{:x}", fingerprint & 0xffff_ffff);
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("test server reachable");
    sqlx::query("SELECT pg_advisory_lock(727272)")
        .execute(&mut conn)
        .await
        .unwrap();
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)",
    )
    .bind(&name)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    if !exists {
        store::admin::drop_database(admin_url, &name).await.unwrap();
        store::admin::create_database_if_missing(admin_url, &name)
            .await
            .unwrap();
        let url = db_url(admin_url, &name);
        let s = Store::open(&url, &settings())
            .await
            .expect("template migrates");
        s.pool().close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{name}\" WITH is_template true"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::query("SELECT pg_advisory_unlock(727272)")
        .execute(&mut conn)
        .await
        .unwrap();
    name
}

pub fn settings() -> PoolSettings {
    PoolSettings {
        max_connections: 5,
        connect_timeout: std::time::Duration::from_secs(10),
    }
}

/// The URL of database `db` on the server of `admin_url`.
pub fn db_url(admin_url: &str, db: &str) -> String {
    store::admin::url_with_database(admin_url, db).expect("a valid admin URL")
}

/// Who may run: every test with a database holds a shared turn, and a test that times a
/// run against the clock ([`TestDb::alone`]) waits for a turn of its own, while no other
/// test with a database runs, so the suite's other tests do not change the pace under it.
/// Shared turns never wait for one that waits to be alone (a test may hold two
/// databases); they wait only while it runs.
struct Turns {
    /// Shared turns held, and whether a test runs alone.
    held: std::sync::Mutex<(usize, bool)>,
    changed: tokio::sync::Notify,
}

static TURNS: std::sync::LazyLock<Turns> = std::sync::LazyLock::new(|| Turns {
    held: std::sync::Mutex::new((0, false)),
    changed: tokio::sync::Notify::new(),
});

/// A turn held until dropped.
struct Turn {
    alone: bool,
}

impl Turn {
    async fn take(alone: bool) -> Turn {
        loop {
            // Made before looking, so a change in between still wakes it.
            let changed = TURNS.changed.notified();
            {
                let mut held = TURNS.held.lock().unwrap_or_else(|e| e.into_inner());
                match (alone, *held) {
                    (false, (n, false)) => {
                        *held = (n + 1, false);
                        return Turn { alone };
                    }
                    (true, (0, false)) => {
                        *held = (0, true);
                        return Turn { alone };
                    }
                    _ => {}
                }
            }
            changed.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        {
            let mut held = TURNS.held.lock().unwrap_or_else(|e| e.into_inner());
            if self.alone {
                held.1 = false;
            } else {
                held.0 -= 1;
            }
        }
        TURNS.changed.notify_waiters();
    }
}

/// A migrated database of the test's own, dropped on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub store: Store,
    /// A home directory of the test's own.
    pub home: tempfile::TempDir,
    admin_url: String,
    _turn: Turn,
}

impl TestDb {
    pub async fn new() -> TestDb {
        TestDb::with(Turn::take(false).await).await
    }

    /// A database for a test that times a run against the clock: it waits until no other
    /// test with a database runs, and none starts until it is dropped.
    pub async fn alone() -> TestDb {
        TestDb::with(Turn::take(true).await).await
    }

    async fn with(turn: Turn) -> TestDb {
        let suite = suite().await;
        let name = format!(
            "{TEST_DB_PREFIX}{}",
            uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
        );
        store::admin::create_database_from(&suite.admin_url, &name, &suite.template)
            .await
            .expect("test db created");
        let url = db_url(&suite.admin_url, &name);
        let store = Store::open(&url, &settings()).await.expect("test db opens");
        TestDb {
            name,
            url,
            store,
            home: temp_home(),
            admin_url: suite.admin_url.clone(),
            _turn: turn,
        }
    }

    /// A configuration pointing at this database, with the test's own home and the
    /// installed model.
    pub fn config(&self) -> Config {
        let mut c = Config::defaults(self.home.path().to_path_buf());
        c.database.url = self.url.clone();
        c.embedding.model_dir = suite_installed_model_dir();
        c.embedding.onnxruntime = suite_installed_onnxruntime();
        c
    }

    /// Environment for running the `trawl` binary against this database.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("TRAWL_HOME".into(), self.home.path().display().to_string()),
            ("TRAWL_DATABASE_URL".into(), self.url.clone()),
            ("TRAWL_MODEL_DIR".into(), suite_installed_model_dir()),
            ("TRAWL_ONNXRUNTIME".into(), suite_installed_onnxruntime()),
        ]
    }
}

fn suite_installed_model_dir() -> String {
    installed_config().model_dir().display().to_string()
}

fn suite_installed_onnxruntime() -> String {
    installed_config().onnxruntime_lib().display().to_string()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which this thread blocks: clean up on a thread
        // and runtime of its own, without touching the pool (its connections belong to the
        // blocked runtime). WITH (FORCE) ends those connections.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let _ = store::admin::drop_database(&admin, &name).await;
            });
        })
        .join()
        .unwrap();
    }
}

/// The `trawl` binary with a clean environment: no database URL or home inherited from the
/// developer's shell.
pub fn trawl_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trawl"));
    for var in [
        "TRAWL_DATABASE_URL",
        "DATABASE_URL",
        "TRAWL_HOME",
        "TRAWL_CONFIG",
        "TRAWL_PG_BIN",
        "TRAWL_MODEL_DIR",
        "TRAWL_API_TOKEN",
        "TRAWL_BIND",
        "TRAWL_ALLOWED_ROOTS",
        "TRAWL_GIT_TOKEN",
        "TRAWL_GIT_TOKEN_HOSTS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "trawl=warn");
    cmd
}

/// Output of a finished command, for assertions.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Ran {
    let out = cmd.output().expect("trawl runs");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// How often [`poll_until`] looks again.
pub const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Asks `probe` at once and then every [`POLL_EVERY`] until it returns `Some`, and returns
/// that value. After `timeout` it panics, naming `what` was awaited and the state the probe
/// last described: a probe may write what it saw into the `&mut String` it is given (leave
/// it empty to describe nothing).
///
/// ```ignore
/// poll_until(Duration::from_secs(30), "SYNC to run", async |seen| {
///     let status = stage_status(&db, run_id, "sync").await;
///     *seen = format!("{status:?}");
///     (status.0 == "running").then_some(())
/// })
/// .await;
/// ```
pub async fn poll_until<T>(
    timeout: std::time::Duration,
    what: &str,
    mut probe: impl AsyncFnMut(&mut String) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = String::new();
    loop {
        if let Some(v) = probe(&mut seen).await {
            return v;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            if seen.is_empty() {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}");
        }
        tokio::time::sleep(POLL_EVERY.min(deadline - now)).await;
    }
}

/// The key tests' gates use: an advisory lock of the test's own database, so tests running
/// at once do not share it.
pub const GATE: i64 = 727_001;

/// A held gate of the `STAGE:gate:KEY` test fault (see `trawl::pipeline::faults`): while
/// it is held, a stage with that fault, in a worker on `db`, is running and blocked before
/// its work, until [`Gate::release`] (or the drop of the gate) lets it go on. The test
/// holds Postgres advisory lock KEY on a connection of its own.
pub struct Gate {
    key: i64,
    conn: Option<sqlx::PgConnection>,
}

impl Gate {
    /// Takes advisory lock `key` of `db`'s database.
    pub async fn hold(db: &TestDb, key: i64) -> Gate {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&db.url)
            .await
            .expect("the gate's connection opens");
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut conn)
            .await
            .expect("the gate is taken");
        Gate {
            key,
            conn: Some(conn),
        }
    }

    /// Lets the gated stage go on.
    pub async fn release(mut self) {
        use sqlx::Connection as _;
        let mut conn = self.conn.take().expect("a held gate");
        let released: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .fetch_one(&mut conn)
            .await
            .expect("the gate is released");
        assert!(released, "gate {} was held", self.key);
        conn.close().await.expect("the gate's connection closes");
    }
}

/// The fault rule that makes `stage` wait at the gate of `key` (see [`Gate`]).
pub fn gate_fault(stage: &str, key: i64) -> String {
    format!("{stage}:gate:{key}")
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `trawl ARGS` against `db`.
pub fn trawl_in(db: &TestDb, args: &[&str]) -> Ran {
    run(trawl_cmd().envs(db.env()).args(args))
}

/// The command failed with exit 1 and said `message` on stderr.
pub fn assert_refused(r: &Ran, message: &str) {
    assert_eq!(r.code, 1, "expected a refusal: {}", r.stderr);
    assert!(
        r.stderr.contains(message),
        "expected {message:?} in: {}",
        r.stderr
    );
}

/// The command refused its usage with exit 2 and said `message` on stderr.
pub fn assert_usage(r: &Ran, message: &str) {
    assert_eq!(r.code, 2, "expected a usage error: {}", r.stderr);
    assert!(
        r.stderr.contains(message),
        "expected {message:?} in: {}",
        r.stderr
    );
}

/// A worker running in this process until the returned sender is dropped or fired.
pub fn spawn_worker(
    ctx: std::sync::Arc<trawl::pipeline::PipelineContext>,
    concurrency: usize,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        trawl::pipeline::worker::run(ctx, concurrency, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (tx, handle)
}

/// A child process that does not outlive the test: [`KillOnDrop::stop`] stops it gracefully,
/// and one still running when the test ends, even by a failed assertion or a
/// [`poll_until`] that timed out, is killed (SIGKILL: a child stuck where it should not be
/// might not heed a SIGTERM).
pub struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    pub fn new(child: std::process::Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    /// The child, while it is not stopped.
    pub fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("the child is not stopped yet")
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `git ARGS` in `dir` with a fixed identity and branch name; panics with git's
/// stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
