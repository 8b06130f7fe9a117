//! The embedded PostgreSQL cluster trawl provisions under its home when no database URL
//! is configured.
//!
//! It owns the data directory, the unix socket directory and the server log; it starts the
//! server on demand and stops it on request. The server listens on a unix socket only
//! (`listen_addresses = ''`), in a directory only its owner may enter.
//!
//! `initdb` and `pg_ctl` refuse to run as root, so when trawl runs as root the server runs
//! as the unprivileged user [`OS_USER`] (created when missing) through `runuser`.
//!
//! This module runs processes and touches files; it never speaks SQL (that is `store`'s) and
//! never deletes a data directory: a stale pid file is the only thing it removes.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::filelock::FileLock;

/// The database and superuser names inside the embedded cluster.
pub const DB_NAME: &str = "trawl";
pub const DB_USER: &str = "trawl";
/// The unprivileged system user the server runs as when trawl runs as root.
pub const OS_USER: &str = "trawl";
/// The port number only names the socket file (`.s.PGSQL.5432`); nothing listens on TCP.
const PORT: u16 = 5432;

/// Why the embedded cluster could not be managed. All are permanent: they need the user.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL binaries not found in {dir}: run `trawl setup` to install them, or set \
         TRAWL_PG_BIN to a directory holding initdb, pg_ctl and postgres"
    )]
    BinariesMissing { dir: PathBuf },
    #[error("cannot write to {path}: {reason}; set TRAWL_HOME to a directory you can write to")]
    NotWritable { path: PathBuf, reason: String },
    #[error(
        "the data directory {data} was created by PostgreSQL {found}, but the binaries in {bin} \
         are PostgreSQL {expected}; point TRAWL_PG_BIN at PostgreSQL {found} binaries, or move \
         {data} away to start with an empty cluster (trawl never deletes it)"
    )]
    VersionMismatch {
        data: PathBuf,
        found: String,
        expected: String,
        bin: PathBuf,
    },
    #[error(
        "{data} exists and is not empty but holds no PostgreSQL cluster; move it away or set \
         TRAWL_HOME to another directory (trawl never deletes it)"
    )]
    ForeignDataDir { data: PathBuf },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error(
        "the server runs as the unprivileged user {user}, who cannot reach {path}; set \
         TRAWL_HOME (and TRAWL_PG_BIN) to directories outside /root, such as /var/lib/trawl"
    )]
    NotReachable { user: String, path: PathBuf },
    #[error("io error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `trawl db status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// No data directory yet: the first start runs initdb.
    NotInitialized,
    Stopped,
    Running {
        pid: u32,
    },
}

/// What [`Cluster::start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    AlreadyRunning {
        pid: u32,
    },
    Started {
        initialised: bool,
        recovered_stale_pid: bool,
    },
}

/// The embedded cluster: where its binaries and files are.
#[derive(Debug, Clone)]
pub struct Cluster {
    bin: PathBuf,
    home: PathBuf,
    data: PathBuf,
    run: PathBuf,
    log: PathBuf,
    /// Some when trawl runs as root: the server then runs as this user.
    os_user: Option<String>,
    /// Off for throwaway test clusters only.
    fsync: bool,
}

impl Cluster {
    /// The cluster under `home`, run with the binaries in `bin`.
    pub fn new(home: &Path, bin: PathBuf) -> Cluster {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        Cluster {
            bin,
            home: home.to_path_buf(),
            data: home.join("pgdata"),
            run: home.join("run"),
            log: home.join("log").join("postgres.log"),
            os_user: root.then(|| OS_USER.to_string()),
            fsync: true,
        }
    }

    /// A cluster whose server skips fsync: for test clusters that are thrown away.
    pub fn without_fsync(mut self) -> Cluster {
        self.fsync = false;
        self
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn log_file(&self) -> &Path {
        &self.log
    }

    pub fn socket_dir(&self) -> &Path {
        &self.run
    }

    /// The connection URL of database `db` in this cluster (unix socket, trust auth).
    pub fn url_for(&self, db: &str) -> String {
        let mut u = url::Url::parse(&format!("postgres://{DB_USER}@localhost:{PORT}/"))
            .expect("static url");
        u.set_path(db);
        u.query_pairs_mut()
            .append_pair("host", &self.run.to_string_lossy());
        u.to_string()
    }

    /// The connection URL of trawl's database.
    pub fn url(&self) -> String {
        self.url_for(DB_NAME)
    }

    pub fn status(&self) -> Status {
        if !self.data.join("PG_VERSION").exists() {
            return Status::NotInitialized;
        }
        match self.live_pid() {
            Some(pid) => Status::Running { pid },
            None => Status::Stopped,
        }
    }

    /// The postmaster's pid, when the pid file names a live postgres process.
    fn live_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        is_postgres_process(pid).then_some(pid)
    }

    /// Starts the server when it is not running, creating the cluster on first use.
    /// Safe to call from several processes at once: they serialise on a lock file.
    pub fn start(&self) -> Result<Started, ClusterError> {
        // The home first: without it nothing else can be fixed, not even by `trawl setup`.
        for dir in [
            &self.home,
            &self.run,
            self.log.parent().expect("log has a parent"),
        ] {
            ensure_writable_dir(dir)?;
        }
        self.check_binaries()?;
        let lock_path = self.home.join("cluster.lock");
        let _lock = FileLock::acquire(&lock_path).map_err(io_err(&lock_path))?;
        let initialised = match self.status() {
            Status::Running { pid } => return Ok(Started::AlreadyRunning { pid }),
            Status::NotInitialized => {
                self.initdb()?;
                true
            }
            Status::Stopped => {
                self.check_version()?;
                false
            }
        };
        self.prepare_os_user_dirs()?;
        let recovered_stale_pid = self.remove_stale_pid()?;
        let settings = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c port={PORT} -c fsync={} \
             -c max_connections=200",
            self.run.display(),
            if self.fsync { "on" } else { "off" },
        );
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log);
        cmd.args(["-w", "-t", "60", "-s", "-o", &settings]);
        self.run_checked(cmd, "starting PostgreSQL")?;
        Ok(Started::Started {
            initialised,
            recovered_stale_pid,
        })
    }

    /// Stops the server (fast shutdown: open transactions roll back) by signalling the
    /// postmaster, so it works even when the binaries have moved. Returns false when it was
    /// not running.
    pub fn stop(&self) -> Result<bool, ClusterError> {
        let Some(pid) = self.live_pid() else {
            self.remove_stale_pid()?;
            return Ok(false);
        };
        // SIGINT is PostgreSQL's "fast" shutdown, what `pg_ctl stop -m fast` sends.
        // SAFETY: kill with a pid read from the cluster's own pid file, checked to be postgres.
        if unsafe { libc::kill(pid as i32, libc::SIGINT) } != 0 {
            return Err(ClusterError::Command {
                what: "stopping PostgreSQL".into(),
                detail: format!("cannot signal pid {pid}: {}", io::Error::last_os_error()),
            });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while is_postgres_process(pid) {
            if std::time::Instant::now() > deadline {
                return Err(ClusterError::Command {
                    what: "stopping PostgreSQL".into(),
                    detail: format!(
                        "the server (pid {pid}) did not stop within 60 s; see {}",
                        self.log.display()
                    ),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(true)
    }

    fn check_binaries(&self) -> Result<(), ClusterError> {
        let missing = ["initdb", "pg_ctl", "postgres"]
            .iter()
            .any(|b| !self.bin.join(b).is_file());
        if missing {
            return Err(ClusterError::BinariesMissing {
                dir: self.bin.clone(),
            });
        }
        Ok(())
    }

    /// The major version of the binaries, from `postgres --version`.
    pub fn binaries_major(&self) -> Result<String, ClusterError> {
        self.check_binaries()?;
        let out = Command::new(self.bin.join("postgres"))
            .arg("--version")
            .output()
            .map_err(io_err(&self.bin))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "postgres (PostgreSQL) 18.3"
        let version = text.split_whitespace().last().unwrap_or_default();
        let major = version.split('.').next().unwrap_or_default().to_string();
        if major.is_empty() {
            return Err(ClusterError::Command {
                what: "postgres --version".into(),
                detail: format!("unexpected output {text:?}"),
            });
        }
        Ok(major)
    }

    fn check_version(&self) -> Result<(), ClusterError> {
        let path = self.data.join("PG_VERSION");
        let found = fs::read_to_string(&path)
            .map_err(io_err(&path))?
            .trim()
            .to_string();
        let expected = self.binaries_major()?;
        if found != expected {
            return Err(ClusterError::VersionMismatch {
                data: self.data.clone(),
                found,
                expected,
                bin: self.bin.clone(),
            });
        }
        Ok(())
    }

    fn initdb(&self) -> Result<(), ClusterError> {
        if self.data.exists() {
            let empty = fs::read_dir(&self.data)
                .map_err(io_err(&self.data))?
                .next()
                .is_none();
            if !empty {
                return Err(ClusterError::ForeignDataDir {
                    data: self.data.clone(),
                });
            }
        } else {
            fs::create_dir_all(&self.data).map_err(io_err(&self.data))?;
        }
        fs::set_permissions(&self.data, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&self.data))?;
        self.prepare_os_user_dirs()?;
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D").arg(&self.data);
        cmd.args([
            "-U",
            DB_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-instructions",
        ]);
        if !self.fsync {
            cmd.arg("--no-sync");
        }
        self.run_checked(cmd, "creating the cluster with initdb")?;
        Ok(())
    }

    /// When running as root: make sure the server's user exists, owns its directories and can
    /// reach the binaries.
    fn prepare_os_user_dirs(&self) -> Result<(), ClusterError> {
        let Some(user) = &self.os_user else {
            return Ok(());
        };
        let (uid, gid) = ensure_os_user(user)?;
        for dir in [
            &self.data,
            &self.run,
            self.log.parent().expect("log has a parent"),
        ] {
            if dir.exists() {
                chown_tree(dir, uid, gid)?;
            }
        }
        fs::set_permissions(&self.run, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&self.run))?;
        for path in [self.bin.join("postgres"), self.data.clone()] {
            let ok = Command::new("runuser")
                .args(["-u", user, "--", "test", "-r"])
                .arg(&path)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(ClusterError::NotReachable {
                    user: user.clone(),
                    path,
                });
            }
        }
        Ok(())
    }

    /// Removes the lock files a server that is gone left behind (a crash, a reboot): the
    /// data directory's pid file and the socket's lock file. PostgreSQL would clear them
    /// itself, but takes a dead server that nobody has reaped yet (a zombie) for a live one.
    /// Returns whether any was removed.
    fn remove_stale_pid(&self) -> Result<bool, ClusterError> {
        let pid_file = self.data.join("postmaster.pid");
        let socket_lock = self.run.join(format!(".s.PGSQL.{PORT}.lock"));
        let mut removed = false;
        for file in [pid_file, socket_lock] {
            let Ok(text) = fs::read_to_string(&file) else {
                continue;
            };
            let pid: Option<u32> = text.lines().next().and_then(|l| l.trim().parse().ok());
            if pid.is_some_and(is_postgres_process) {
                continue;
            }
            tracing::warn!(path = %file.display(), "removing a lock file of a server that is gone");
            fs::remove_file(&file).map_err(io_err(&file))?;
            removed = true;
        }
        Ok(removed)
    }

    /// A command for a PostgreSQL binary, run as the server's user when we are root.
    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match &self.os_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        // Keep the child off our stdio: a server that inherits a pipe holds it open.
        cmd.stdin(std::process::Stdio::null());
        // The server's own directory is a neutral working directory for both users.
        cmd.current_dir(&self.home);
        cmd.env("LC_ALL", "C");
        cmd
    }

    fn run_checked(&self, mut cmd: Command, what: &str) -> Result<Output, ClusterError> {
        let out = cmd.output().map_err(|e| ClusterError::Command {
            what: what.to_string(),
            detail: format!("cannot run {:?}: {e}", cmd.get_program()),
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let mut detail = format!("{} {}", stderr.trim(), stdout.trim())
                .trim()
                .to_string();
            if let Ok(log) = fs::read_to_string(&self.log) {
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                detail.push_str(&format!(
                    "; server log {}: {}",
                    self.log.display(),
                    tail.join(" | ")
                ));
            }
            return Err(ClusterError::Command {
                what: what.to_string(),
                detail,
            });
        }
        Ok(out)
    }
}

fn is_postgres_process(pid: u32) -> bool {
    // /proc/<pid>/stat is "pid (comm) state ...": the postmaster's comm is "postgres"; a
    // recycled pid names something else, and a killed server nobody has reaped yet is a
    // zombie (state Z) that holds nothing.
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
    comm == "postgres" && !matches!(state, "Z" | "X")
}

fn ensure_writable_dir(dir: &Path) -> Result<(), ClusterError> {
    let not_writable = |reason: String| ClusterError::NotWritable {
        path: dir.to_path_buf(),
        reason,
    };
    fs::create_dir_all(dir).map_err(|e| not_writable(e.to_string()))?;
    let probe = dir.join(format!(".trawl-write-test-{}", std::process::id()));
    fs::write(&probe, b"").map_err(|e| not_writable(e.to_string()))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Looks up (creating when missing) the unprivileged system user the server runs as.
fn ensure_os_user(user: &str) -> Result<(u32, u32), ClusterError> {
    if let Some(ids) = lookup_user(user) {
        return Ok(ids);
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
        ])
        .args(["--shell", "/usr/sbin/nologin", user])
        .output()
        .map_err(|e| ClusterError::Command {
            what: format!("creating the system user {user}"),
            detail: e.to_string(),
        })?;
    // Another process may have created it meanwhile: look again before failing.
    lookup_user(user).ok_or_else(|| ClusterError::Command {
        what: format!("creating the system user {user} (initdb refuses to run as root)"),
        detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam reads a NUL-terminated name; the result is copied out at once and we
    // only call it from the thread that starts the cluster.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to a valid passwd record until the next call.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), ClusterError> {
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    if meta.uid() == uid && meta.gid() == gid && !meta.is_dir() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err(path))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io_err(path))? {
            chown_tree(&entry.map_err(io_err(path))?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_uses_the_socket_directory() {
        let c = Cluster::new(Path::new("/var/lib/trawl"), PathBuf::from("/bin"));
        let url = c.url();
        assert_eq!(
            url,
            "postgres://trawl@localhost:5432/trawl?host=%2Fvar%2Flib%2Ftrawl%2Frun"
        );
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        assert_eq!(
            opts.get_socket(),
            Some(&PathBuf::from("/var/lib/trawl/run"))
        );
        assert_eq!(opts.get_database(), Some("trawl"));
    }

    #[test]
    fn missing_binaries_name_the_setup_command() {
        let home = tempfile::tempdir().unwrap();
        let c = Cluster::new(home.path(), PathBuf::from("/nonexistent-bin"));
        let msg = c.start().unwrap_err().to_string();
        assert!(
            msg.contains("trawl setup") && msg.contains("/nonexistent-bin"),
            "{msg}"
        );
    }

    #[test]
    fn status_of_an_empty_home_is_not_initialised() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::new(dir.path(), PathBuf::from("/bin"));
        assert_eq!(c.status(), Status::NotInitialized);
    }
}
