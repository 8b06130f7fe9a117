//! A minimal headless-Chromium driver for integration tests that check web pages, such as
//! the operator dashboard, in a real browser.
//!
//! It speaks the Chrome DevTools Protocol (CDP) over `--remote-debugging-pipe`: Chromium
//! reads commands from its fd 3 and writes answers and events to its fd 4, each message one
//! JSON object followed by a NUL byte. So there is no port to pick, no websocket, and no
//! browser-automation crate: only std, tokio, serde_json, libc, anyhow and tempfile.
//!
//! ```ignore
//! let browser = Browser::launch().await?;          // installs Debian's chromium if needed
//! let page = browser.page().await?;                 // a new tab with its own CDP session
//! page.set_headers(&[("Authorization", "Bearer t")]).await?; // sent with every request
//! page.goto(&format!("http://{addr}/dashboard")).await?;     // returns after `load`
//! page.click("#refresh").await?;                    // error if nothing matches
//! let jobs = page.wait_for("window.jobs?.length", Duration::from_secs(10)).await?;
//! let title = page.eval("document.title").await?;   // any JSON value, promises awaited
//! ```
//!
//! How it works:
//! - [`chromium_path`] finds the browser: `$TRAWL_CHROMIUM` (a path or a command on PATH)
//!   if set, else `chromium` on PATH (for Debian's launcher script, the binary it execs).
//!   When neither is there and the tests run as root it installs Debian's `chromium`
//!   package with apt-get (about 15 s, 400 MB), once per machine: a process-wide mutex
//!   serialises threads and an exclusive lock on [`INSTALL_LOCK`] serialises test
//!   processes. Not root: it fails, saying what to install.
//! - [`Browser::launch`] starts Chromium (`--headless=new`, `--no-sandbox` since tests run
//!   as root in containers) in its own process group with a throw-away profile, and kills
//!   the whole group when dropped. Closing the pipe also makes Chromium quit, so a test
//!   process that dies does not leave it running (only its temporary directory stays).
//!   Chromium's stdout and stderr (mostly harmless D-Bus complaints) go to a file in that
//!   directory; its tail is part of the error when the browser dies.
//! - Two threads per browser move bytes: one writes queued commands to the pipe, one reads
//!   answers (matched by id to the waiting call) and events. Neither needs a tokio runtime,
//!   so a browser works from any test runtime.
//! - Events kept per page: console calls, uncaught exceptions and browser log entries
//!   (e.g. "Failed to load resource: ... 401") go to [`Page::log`], which timeouts and
//!   failed clicks print; JavaScript dialogs (`alert`, `confirm`, `prompt`) are accepted
//!   at once, and logged, so a click that asks for confirmation does not hang.
//! - Every CDP command has a deadline ([`COMMAND_TIMEOUT`]) so a test never hangs.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// How long any one CDP command, and a page load, may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The file whose exclusive lock serialises installs of Chromium across test processes.
pub const INSTALL_LOCK: &str = "/tmp/trawl-chromium-install.lock";

/// How often [`Page::wait_for`] evaluates its expression.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Console and log lines kept per page (the oldest are dropped).
const LOG_LINES_KEPT: usize = 500;

/// Lines of the page's log, and characters of its text, that diagnostics show.
const DIAGNOSTIC_LOG_LINES: usize = 40;
const DIAGNOSTIC_TEXT_CHARS: usize = 2000;

/// The command name looked up on PATH, and where Debian's package puts it.
const CHROMIUM_COMMAND: &str = "chromium";
const DEBIAN_CHROMIUM: &str = "/usr/bin/chromium";

/// What Debian's `/usr/bin/chromium` shell script finally runs. The script sources
/// /etc/chromium.d (adding flags such as `--enable-gpu-rasterization`, and on machines with
/// /dev/shm mounted twice printing a shell error) before exec'ing it; running the binary
/// directly gives exactly our flags and a cleaner output log.
const DEBIAN_CHROMIUM_BINARY: &str = "/usr/lib/chromium/chromium";

/// Flags for a quiet, headless browser that runs as root in a container and never talks
/// to the network on its own. `--user-data-dir` is added per launch.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--remote-debugging-pipe",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--password-store=basic",
    "--metrics-recording-only",
    "--mute-audio",
    "--hide-scrollbars",
    "--window-size=1280,900",
];

// ---------------------------------------------------------------------------------------
// Finding and installing Chromium
// ---------------------------------------------------------------------------------------

/// The path found by the first successful [`chromium_path`] of this process.
static CHROMIUM: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The Chromium binary to run: `$TRAWL_CHROMIUM` if set, else `chromium` on PATH,
/// installing Debian's package first if it is missing and we are root. Blocking (apt-get
/// can take a minute): from async code call it through `spawn_blocking`, as
/// [`Browser::launch`] does.
pub fn chromium_path() -> Result<PathBuf> {
    let mut found = lock(&CHROMIUM);
    if let Some(path) = found.as_ref() {
        return Ok(path.clone());
    }
    let path = find_or_install_chromium()?;
    *found = Some(path.clone());
    Ok(path)
}

fn find_or_install_chromium() -> Result<PathBuf> {
    if let Some(chosen) = std::env::var_os("TRAWL_CHROMIUM") {
        let chosen = PathBuf::from(chosen);
        return find_executable(&chosen).ok_or_else(|| {
            anyhow!(
                "TRAWL_CHROMIUM={} is neither an executable file nor a command on PATH",
                chosen.display()
            )
        });
    }
    if let Some(path) = find_installed_chromium() {
        return Ok(path);
    }
    install_chromium()?;
    find_installed_chromium().ok_or_else(|| {
        anyhow!("apt-get installed chromium, yet neither `{CHROMIUM_COMMAND}` on PATH nor {DEBIAN_CHROMIUM} exists")
    })
}

/// `chromium` on PATH, or where Debian puts it; for Debian's launcher script, the binary
/// it runs (see [`DEBIAN_CHROMIUM_BINARY`]).
fn find_installed_chromium() -> Option<PathBuf> {
    let launcher = find_executable(Path::new(CHROMIUM_COMMAND)).or_else(|| {
        is_executable(Path::new(DEBIAN_CHROMIUM)).then(|| PathBuf::from(DEBIAN_CHROMIUM))
    })?;
    let is_debian_launcher =
        std::fs::canonicalize(&launcher).is_ok_and(|real| real == Path::new(DEBIAN_CHROMIUM));
    if is_debian_launcher && is_executable(Path::new(DEBIAN_CHROMIUM_BINARY)) {
        return Some(PathBuf::from(DEBIAN_CHROMIUM_BINARY));
    }
    Some(launcher)
}

/// `name` itself if it contains a slash, else the first executable `dir/name` on PATH.
fn find_executable(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return is_executable(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Installs Debian's `chromium` package, unless another test process did while we waited
/// for the install lock.
fn install_chromium() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "browser tests need Chromium, which is not installed, and they cannot install it \
             because they are not running as root: install Debian's `chromium` package \
             (apt-get install --no-install-recommends chromium) or set TRAWL_CHROMIUM to a \
             Chromium or Chrome binary"
        );
    }
    let _install_lock = lock_file(Path::new(INSTALL_LOCK))?;
    if find_installed_chromium().is_some() {
        return Ok(());
    }
    eprintln!(
        "browser tests: chromium is not installed; installing Debian's chromium package with apt-get"
    );
    run_apt_get(&["update"])?;
    run_apt_get(&["install", "-y", "--no-install-recommends", "chromium"])
}

/// Opens `path` and takes an exclusive `flock` on it, waiting for other holders; the lock
/// goes with the returned file.
fn lock_file(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening the install lock file {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {} (flock)", path.display()))?;
    Ok(file)
}

fn run_apt_get(args: &[&str]) -> Result<()> {
    let command = format!("apt-get {}", args.join(" "));
    let output = Command::new("apt-get")
        // Wait for dpkg's own lock rather than failing when something else is installing.
        .args(["-o", "DPkg::Lock::Timeout=600"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command}"))?;
    if !output.status.success() {
        bail!(
            "{command} failed ({}):\n{}\n{}",
            output.status,
            last_lines(&String::from_utf8_lossy(&output.stdout), 20),
            last_lines(&String::from_utf8_lossy(&output.stderr), 20)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The browser process
// ---------------------------------------------------------------------------------------

/// A headless Chromium with a throw-away profile; killed, with all its processes, on drop.
pub struct Browser {
    conn: Arc<Conn>,
    child: Child,
    version: String,
    /// Holds the profile and Chromium's output; removed after the browser is killed.
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Finds (or installs) Chromium, starts it and waits until it answers over the pipe.
    pub async fn launch() -> Result<Browser> {
        let binary = tokio::task::spawn_blocking(chromium_path)
            .await
            .context("the task finding Chromium panicked")??;
        let dir = tempfile::Builder::new()
            .prefix("trawl-chromium-")
            .tempdir()
            .context("creating a temporary directory for Chromium's profile")?;
        let (child, conn) = spawn_chromium(&binary, dir.path())?;
        let mut browser = Browser {
            conn,
            child,
            version: String::new(),
            _dir: dir,
        };
        let version = browser
            .conn
            .call(None, "Browser.getVersion", json!({}), COMMAND_TIMEOUT)
            .await
            .with_context(|| {
                format!(
                    "{} started but did not answer over the DevTools pipe; its output ends with:\n{}",
                    binary.display(),
                    browser.conn.output_tail()
                )
            })?;
        browser.version = version["product"].as_str().unwrap_or("unknown").to_string();
        Ok(browser)
    }

    /// The browser's product and version, e.g. `Chrome/156.0.8078.79`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Opens a new tab on `about:blank`, attached with its own CDP session.
    pub async fn page(&self) -> Result<Page> {
        let created = self
            .conn
            .call(
                None,
                "Target.createTarget",
                json!({"url": "about:blank"}),
                COMMAND_TIMEOUT,
            )
            .await
            .context("opening a new tab (Target.createTarget)")?;
        let target = string_field(&created, "targetId", "Target.createTarget")?;
        let attached = self
            .conn
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
                COMMAND_TIMEOUT,
            )
            .await
            .context("attaching to the new tab (Target.attachToTarget)")?;
        let session = string_field(&attached, "sessionId", "Target.attachToTarget")?;
        let page = Page {
            conn: self.conn.clone(),
            session,
            target,
        };
        page.enable_events().await?;
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium leads its own process group (see spawn_chromium), so this also kills its
        // renderers, zygotes and crash handler. The leader is not reaped yet, so the group
        // id cannot have been reused.
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Starts Chromium with the command pipe on its fd 3 and the answer pipe on its fd 4.
fn spawn_chromium(binary: &Path, dir: &Path) -> Result<(Child, Arc<Conn>)> {
    let (commands_read, commands_write) =
        cloexec_pipe().context("creating the DevTools command pipe")?;
    let (answers_read, answers_write) =
        cloexec_pipe().context("creating the DevTools answer pipe")?;
    let output_path = dir.join("chromium-output.log");
    let output = File::create(&output_path)
        .with_context(|| format!("creating {}", output_path.display()))?;
    let output_too = output
        .try_clone()
        .with_context(|| format!("duplicating the handle of {}", output_path.display()))?;

    let mut command = Command::new(binary);
    command
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(output_too)
        .process_group(0);
    let (child_reads, child_writes) = (commands_read.as_raw_fd(), answers_write.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and only calls dup2, which is
    // async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            move_fd(child_reads, 3)?;
            move_fd(child_writes, 4)
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    // Our copies of Chromium's ends must go, or we would never see the answer pipe close.
    drop(commands_read);
    drop(answers_write);
    let conn = Conn::start(
        File::from(commands_write),
        File::from(answers_read),
        output_path,
    )?;
    Ok((child, conn))
}

/// A pipe whose both ends are close-on-exec, so no other child inherits them, and are
/// numbered above 4, so the child's dup2s onto 3 and 4 cannot clobber one with the other.
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_child_fds(read)?, above_child_fds(write)?))
}

fn above_child_fds(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 4 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor returns a new one or -1.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 5) };
    if moved == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just created `moved`; the original closes when `fd` drops.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// In the forked child: makes `target` a copy of `source`. dup2 clears close-on-exec on
/// the copy, so it survives exec; `source` (always above 4) still closes.
fn move_fd(source: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on descriptors is async-signal-safe and has no memory preconditions.
    if unsafe { libc::dup2(source, target) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The DevTools connection
// ---------------------------------------------------------------------------------------

/// One CDP connection: commands out, answers matched by id, events recorded per session.
struct Conn {
    next_id: AtomicU64,
    /// Complete, NUL-terminated messages for the writer thread.
    outgoing: mpsc::Sender<Vec<u8>>,
    calls: Mutex<Calls>,
    sessions: Mutex<HashMap<String, SessionEvents>>,
    /// Chromium's stdout and stderr.
    output_path: PathBuf,
}

#[derive(Default)]
struct Calls {
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    /// Why the connection is gone, once it is.
    closed: Option<String>,
}

/// A command's `result`, or its `error` described.
type Reply = std::result::Result<Value, String>;

/// What the reader thread records for one page session.
struct SessionEvents {
    log: VecDeque<String>,
    /// Loader ids (one per navigation) of the latest main-document `load` events.
    loads: watch::Sender<VecDeque<String>>,
}

impl SessionEvents {
    fn new() -> SessionEvents {
        SessionEvents {
            log: VecDeque::new(),
            loads: watch::channel(VecDeque::new()).0,
        }
    }
}

impl Conn {
    /// Starts the writer and reader threads on the two pipe ends.
    fn start(to_browser: File, from_browser: File, output_path: PathBuf) -> Result<Arc<Conn>> {
        let (outgoing, queue) = mpsc::channel();
        let conn = Arc::new(Conn {
            next_id: AtomicU64::new(1),
            outgoing,
            calls: Mutex::new(Calls::default()),
            sessions: Mutex::new(HashMap::new()),
            output_path,
        });
        std::thread::Builder::new()
            .name("cdp-writer".into())
            .spawn(move || write_messages(to_browser, queue))
            .context("starting the DevTools writer thread")?;
        let reader_conn = conn.clone();
        std::thread::Builder::new()
            .name("cdp-reader".into())
            .spawn(move || read_messages(reader_conn, from_browser))
            .context("starting the DevTools reader thread")?;
        Ok(conn)
    }

    /// Sends a command (to a page's session, or to the browser) and waits up to `limit`
    /// for its answer.
    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer_rx) = oneshot::channel();
        {
            let mut calls = lock(&self.calls);
            if let Some(reason) = &calls.closed {
                bail!("CDP {method}: {reason}");
            }
            calls.pending.insert(id, answer_tx);
        }
        if let Err(error) = self.send(id, session, method, params) {
            lock(&self.calls).pending.remove(&id);
            return Err(error);
        }
        match tokio::time::timeout(limit, answer_rx).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(error))) => bail!("CDP {method} failed: {error}"),
            Ok(Err(_)) => bail!("CDP {method}: {}", self.closed_reason()),
            Err(_) => {
                lock(&self.calls).pending.remove(&id);
                bail!("CDP {method} got no answer within {limit:?}")
            }
        }
    }

    /// Queues a command without waiting for (or keeping) its answer.
    fn send(&self, id: u64, session: Option<&str>, method: &str, params: Value) -> Result<()> {
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = Value::from(session);
        }
        let mut bytes =
            serde_json::to_vec(&message).with_context(|| format!("encoding CDP {method}"))?;
        bytes.push(0);
        self.outgoing.send(bytes).map_err(|_| {
            anyhow!(
                "CDP {method}: the pipe writer has stopped; {}",
                self.closed_reason()
            )
        })
    }

    /// Fire-and-forget command, for the reader thread and for drops.
    fn send_detached(&self, session: Option<&str>, method: &str, params: Value) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.send(id, session, method, params);
    }

    fn closed_reason(&self) -> String {
        lock(&self.calls)
            .closed
            .clone()
            .unwrap_or_else(|| "the DevTools connection is gone".into())
    }

    fn is_closed(&self) -> bool {
        lock(&self.calls).closed.is_some()
    }

    /// The last lines of Chromium's output, without its D-Bus complaints (there is no
    /// D-Bus in a container; Chromium works without it).
    fn output_tail(&self) -> String {
        let Ok(output) = std::fs::read_to_string(&self.output_path) else {
            return format!("(could not read {})", self.output_path.display());
        };
        let useful: Vec<&str> = output
            .lines()
            .filter(|line| !line.contains("dbus") && !line.contains("D-Bus"))
            .collect();
        last_lines(&useful.join("\n"), 30)
    }

    /// Handles one message from Chromium: an answer to a pending command, or an event.
    fn dispatch(&self, mut message: Value) {
        if let Some(id) = message.get("id").and_then(Value::as_u64) {
            self.answer(id, &mut message);
        } else if let (Some(method), Some(session)) =
            (message["method"].as_str(), message["sessionId"].as_str())
        {
            self.on_event(method, session, &message["params"]);
        }
    }

    fn answer(&self, id: u64, message: &mut Value) {
        let Some(waiter) = lock(&self.calls).pending.remove(&id) else {
            return; // timed out already, or sent detached
        };
        let reply = match message.get("error") {
            Some(error) => Err(describe_protocol_error(error)),
            None => Ok(message
                .get_mut("result")
                .map(Value::take)
                .unwrap_or(Value::Null)),
        };
        let _ = waiter.send(reply);
    }

    fn on_event(&self, method: &str, session: &str, params: &Value) {
        match method {
            "Runtime.consoleAPICalled" => self.log(session, describe_console_call(params)),
            "Runtime.exceptionThrown" => self.log(
                session,
                format!(
                    "uncaught exception: {}",
                    describe_exception(&params["exceptionDetails"])
                ),
            ),
            "Log.entryAdded" => self.log(session, describe_log_entry(&params["entry"])),
            "Page.javascriptDialogOpening" => self.accept_dialog(session, params),
            "Page.lifecycleEvent" if params["name"] == "load" => {
                if let Some(loader) = params["loaderId"].as_str() {
                    self.loaded(session, loader);
                }
            }
            "Inspector.targetCrashed" => self.log(session, "the page's renderer crashed".into()),
            _ => {}
        }
    }

    fn accept_dialog(&self, session: &str, params: &Value) {
        let kind = params["type"].as_str().unwrap_or("dialog");
        let text = params["message"].as_str().unwrap_or("");
        self.log(session, format!("{kind} dialog {text:?} accepted"));
        self.send_detached(
            Some(session),
            "Page.handleJavaScriptDialog",
            json!({"accept": true}),
        );
    }

    fn log(&self, session: &str, line: String) {
        self.with_session(session, |events| {
            events.log.push_back(line);
            if events.log.len() > LOG_LINES_KEPT {
                events.log.pop_front();
            }
        });
    }

    fn loaded(&self, session: &str, loader: &str) {
        self.with_session(session, |events| {
            events.loads.send_modify(|loads| {
                loads.push_back(loader.to_string());
                if loads.len() > 16 {
                    loads.pop_front();
                }
            });
        });
    }

    fn with_session<R>(&self, session: &str, f: impl FnOnce(&mut SessionEvents) -> R) -> R {
        let mut sessions = lock(&self.sessions);
        f(sessions
            .entry(session.to_string())
            .or_insert_with(SessionEvents::new))
    }

    /// Called by the reader thread when Chromium's end of the pipe closes: fails every
    /// waiting command with the reason, including the end of Chromium's output.
    fn close(&self) {
        let reason = format!(
            "Chromium closed the DevTools pipe (it exited or was killed); its output ends with:\n{}",
            self.output_tail()
        );
        let waiting: Vec<_> = {
            let mut calls = lock(&self.calls);
            calls.closed = Some(reason.clone());
            calls.pending.drain().map(|(_, waiter)| waiter).collect()
        };
        for waiter in waiting {
            let _ = waiter.send(Err(reason.clone()));
        }
        // Replacing the load senders wakes page loads waiting on them with an error.
        for events in lock(&self.sessions).values_mut() {
            events.loads = watch::channel(VecDeque::new()).0;
        }
    }
}

/// The writer thread: sends queued messages until the queue or the pipe closes.
fn write_messages(mut to_browser: File, queue: mpsc::Receiver<Vec<u8>>) {
    for message in queue {
        if to_browser.write_all(&message).is_err() {
            break;
        }
    }
}

/// The reader thread: splits the pipe on NUL bytes and dispatches each JSON message.
fn read_messages(conn: Arc<Conn>, from_browser: File) {
    let mut reader = BufReader::with_capacity(1 << 16, from_browser);
    let mut message = Vec::new();
    loop {
        message.clear();
        match reader.read_until(0, &mut message) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if message.last() == Some(&0) {
            message.pop();
        }
        if let Ok(parsed) = serde_json::from_slice::<Value>(&message) {
            conn.dispatch(parsed);
        }
    }
    conn.close();
}

// ---------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------

/// One tab, driven through its own CDP session. Closed when dropped.
pub struct Page {
    conn: Arc<Conn>,
    session: String,
    target: String,
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.conn
            .call(Some(&self.session), method, params, COMMAND_TIMEOUT)
            .await
    }

    /// Turns on the events this driver uses: load lifecycle, console, exceptions, log
    /// entries, dialogs; and the network domain, which extra headers need.
    async fn enable_events(&self) -> Result<()> {
        for method in [
            "Page.enable",
            "Runtime.enable",
            "Network.enable",
            "Log.enable",
        ] {
            self.call(method, json!({}))
                .await
                .with_context(|| format!("preparing the new tab ({method})"))?;
        }
        self.call("Page.setLifecycleEventsEnabled", json!({"enabled": true}))
            .await
            .context("preparing the new tab (Page.setLifecycleEventsEnabled)")?;
        Ok(())
    }

    /// Sends these headers, e.g. `("Authorization", "Bearer …")`, with every request the
    /// page makes from now on (documents, fetches, scripts), replacing earlier ones.
    pub async fn set_headers(&self, headers: &[(&str, &str)]) -> Result<()> {
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), Value::from(*value)))
            .collect();
        self.call("Network.setExtraHTTPHeaders", json!({"headers": headers}))
            .await
            .context("setting extra HTTP headers")?;
        Ok(())
    }

    /// Navigates to `url` and waits for its `load` event. Fails if the navigation fails
    /// (refused connection, bad URL); an HTTP error status still loads (check the page).
    pub async fn goto(&self, url: &str) -> Result<()> {
        let mut loads = self
            .conn
            .with_session(&self.session, |events| events.loads.subscribe());
        let navigation = self
            .call("Page.navigate", json!({"url": url}))
            .await
            .with_context(|| format!("navigating to {url}"))?;
        if let Some(error) = navigation["errorText"]
            .as_str()
            .filter(|error| !error.is_empty())
        {
            bail!("navigating to {url} failed: {error}");
        }
        let Some(loader) = navigation["loaderId"].as_str() else {
            return Ok(()); // a same-document navigation (only the #fragment changed)
        };
        let loaded = tokio::time::timeout(
            COMMAND_TIMEOUT,
            loads.wait_for(|done| done.iter().any(|id| id == loader)),
        )
        .await
        // Drop the watch's read guard here: it must not be held across an await.
        .map(|waited| waited.map(drop));
        match loaded {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => bail!("loading {url}: {}", self.conn.closed_reason()),
            Err(_) => bail!(
                "{url} did not finish loading within {COMMAND_TIMEOUT:?}\n{}",
                self.diagnostics().await
            ),
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value as JSON
    /// (`undefined` is null; a promise is awaited). Fails if it throws.
    pub async fn eval(&self, js: &str) -> Result<Value> {
        let object = self.evaluate(js, COMMAND_TIMEOUT).await?;
        Ok(remote_value(&object))
    }

    /// Evaluates `js` every 100 ms until its value is truthy, and returns that value.
    /// Evaluations that throw count as not yet (the element may not exist yet). On timeout
    /// the error shows the last value or error, the page's text and its console log.
    pub async fn wait_for(&self, js: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let last = loop {
            let limit = deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_secs(1), COMMAND_TIMEOUT);
            let last = match self.evaluate(js, limit).await {
                Ok(object) if remote_truthy(&object) => return Ok(remote_value(&object)),
                Ok(object) => remote_value(&object).to_string(),
                Err(_) if self.conn.is_closed() => {
                    bail!("waiting for `{js}`: {}", self.conn.closed_reason())
                }
                Err(error) => format!("an error: {error:#}"),
            };
            let now = Instant::now();
            if now >= deadline {
                break last;
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        };
        bail!(
            "timed out after {timeout:?} waiting for `{js}` to become truthy; it last gave {last}\n{}",
            self.diagnostics().await
        )
    }

    /// Clicks the first element matching the CSS `selector` (scrolled into view first).
    /// Fails if none matches or it is disabled.
    pub async fn click(&self, selector: &str) -> Result<()> {
        let selector_literal = serde_json::to_string(selector).context("quoting the selector")?;
        let js = format!(
            "(() => {{
                const el = document.querySelector({selector_literal});
                if (!el) return 'missing';
                if (el.disabled) return 'disabled';
                el.scrollIntoView({{block: 'center'}});
                if (typeof el.click === 'function') el.click();
                else el.dispatchEvent(new MouseEvent('click', {{bubbles: true, cancelable: true, view: window}}));
                return 'clicked';
            }})()"
        );
        let outcome = self
            .eval(&js)
            .await
            .with_context(|| format!("clicking `{selector}`"))?;
        match outcome.as_str() {
            Some("clicked") => Ok(()),
            Some("missing") => bail!(
                "clicking `{selector}`: no element matches it\n{}",
                self.diagnostics().await
            ),
            Some("disabled") => bail!("clicking `{selector}`: the element is disabled"),
            _ => bail!("clicking `{selector}`: unexpected answer {outcome}"),
        }
    }

    /// The page's console calls, uncaught exceptions, log entries and dialogs so far.
    pub fn log(&self) -> Vec<String> {
        self.conn
            .with_session(&self.session, |events| events.log.iter().cloned().collect())
    }

    /// Runs `Runtime.evaluate` and returns its `result` (a CDP RemoteObject).
    async fn evaluate(&self, js: &str, limit: Duration) -> Result<Value> {
        let params = json!({
            "expression": js,
            "returnByValue": true,
            "awaitPromise": true,
            "userGesture": true,
        });
        let mut reply = self
            .conn
            .call(Some(&self.session), "Runtime.evaluate", params, limit)
            .await
            .with_context(|| format!("evaluating `{}`", excerpt(js, 200)))?;
        if let Some(details) = reply.get("exceptionDetails") {
            bail!(
                "evaluating `{}` threw: {}",
                excerpt(js, 200),
                describe_exception(details)
            );
        }
        Ok(reply
            .get_mut("result")
            .map(Value::take)
            .unwrap_or(Value::Null))
    }

    /// The page's URL and text and the end of its log, for error messages.
    async fn diagnostics(&self) -> String {
        let state = self
            .evaluate(
                "({url: location.href, text: document.body ? document.body.innerText : '(no body)'})",
                Duration::from_secs(5),
            )
            .await
            .map(|object| remote_value(&object));
        let page = match state {
            Ok(state) => format!(
                "--- page {} shows (first {DIAGNOSTIC_TEXT_CHARS} characters):\n{}",
                state["url"].as_str().unwrap_or("?"),
                excerpt(state["text"].as_str().unwrap_or(""), DIAGNOSTIC_TEXT_CHARS)
            ),
            Err(error) => format!("--- the page's text could not be read: {error:#}"),
        };
        let log = self.log();
        let shown = &log[log.len().saturating_sub(DIAGNOSTIC_LOG_LINES)..];
        format!(
            "{page}\n--- its console and log (last {} of {} lines):\n{}",
            shown.len(),
            log.len(),
            shown.join("\n")
        )
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.conn
            .send_detached(None, "Target.closeTarget", json!({"targetId": self.target}));
        lock(&self.conn.sessions).remove(&self.session);
    }
}

// ---------------------------------------------------------------------------------------
// Reading CDP values
// ---------------------------------------------------------------------------------------

/// A RemoteObject returned by value as plain JSON: `undefined` becomes null, and values
/// JSON cannot hold (NaN, Infinity, -0, bigints) their JavaScript spelling as a string.
fn remote_value(object: &Value) -> Value {
    if let Some(value) = object.get("value") {
        return value.clone();
    }
    match object["unserializableValue"].as_str() {
        Some(spelling) => Value::from(spelling),
        None => Value::Null,
    }
}

/// JavaScript truthiness of a RemoteObject.
fn remote_truthy(object: &Value) -> bool {
    if let Some(spelling) = object["unserializableValue"].as_str() {
        return !matches!(spelling, "NaN" | "-0" | "0n");
    }
    match object.get("value") {
        None => object["type"] != "undefined" && object["subtype"] != "null",
        Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(Value::Number(number)) => number.as_f64() != Some(0.0),
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

fn string_field(reply: &Value, field: &str, method: &str) -> Result<String> {
    reply[field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{method} answered without a {field}: {reply}"))
}

fn describe_protocol_error(error: &Value) -> String {
    let message = error["message"].as_str().unwrap_or("unknown error");
    let code = &error["code"];
    match error["data"].as_str() {
        Some(data) => format!("{message} (code {code}): {data}"),
        None => format!("{message} (code {code})"),
    }
}

fn describe_exception(details: &Value) -> String {
    let text = details["exception"]["description"]
        .as_str()
        .or_else(|| details["text"].as_str())
        .unwrap_or("unknown exception");
    match details["url"].as_str().filter(|url| !url.is_empty()) {
        Some(url) => format!(
            "{text} (at {url}:{}:{})",
            details["lineNumber"].as_u64().map_or(0, |line| line + 1),
            details["columnNumber"]
                .as_u64()
                .map_or(0, |column| column + 1)
        ),
        None => text.to_string(),
    }
}

fn describe_console_call(params: &Value) -> String {
    let args: Vec<String> = params["args"]
        .as_array()
        .map(|args| args.iter().map(describe_remote_object).collect())
        .unwrap_or_default();
    format!(
        "console.{}: {}",
        params["type"].as_str().unwrap_or("log"),
        args.join(" ")
    )
}

fn describe_remote_object(object: &Value) -> String {
    match object.get("value") {
        Some(Value::String(text)) => text.clone(),
        Some(value) => value.to_string(),
        None => object["unserializableValue"]
            .as_str()
            .or_else(|| object["description"].as_str())
            .or_else(|| object["type"].as_str())
            .unwrap_or("?")
            .to_string(),
    }
}

fn describe_log_entry(entry: &Value) -> String {
    let line = format!(
        "{} {}: {}",
        entry["level"].as_str().unwrap_or("info"),
        entry["source"].as_str().unwrap_or("other"),
        entry["text"].as_str().unwrap_or("")
    );
    match entry["url"].as_str().filter(|url| !url.is_empty()) {
        Some(url) => format!("{line} ({url})"),
        None => line,
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// Locks a mutex, carrying on if a panicking test poisoned it (the data stays usable).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// At most `max` characters of `text`, marked when cut.
fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}
