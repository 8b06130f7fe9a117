//! A git remote on a loopback port that tests control: it serves a bare repository over
//! git's dumb HTTP protocol (plain files), or answers 404, or stalls, and records every
//! request it gets (its headers) and, for each connection, whether a needle was on any
//! process's command line or in its environment while it was open. Threads only; it stops
//! when dropped, and a stalled connection is held 120 s at most.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::git;

/// One connection as the remote saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The request line (empty when the client sent no HTTP, e.g. a TLS hello).
    pub request: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    /// The needle was on some process's command line while the connection was open.
    pub needle_in_cmdline: bool,
    /// The needle was in some process's environment.
    pub needle_in_environ: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Remote {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stall: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Remote {
    /// A remote serving the files of `dir` (a bare repository after `git
    /// update-server-info`), or answering 404 to everything when `dir` is None. `needle`
    /// is looked for in every process's command line and environment on each connection.
    pub fn start(dir: Option<PathBuf>, needle: Option<String>) -> Remote {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stall = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, sp) = (seen.clone(), stall.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s, st, sp) = (s.clone(), st.clone(), sp.clone());
                        let (dir, needle) = (dir.clone(), needle.clone());
                        std::thread::spawn(move || {
                            serve(stream, dir.as_deref(), needle.as_deref(), &s, &st, &sp)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Remote {
            port,
            seen,
            stall,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// From now on every request is read and never answered.
    pub fn stall(&self) {
        self.stall.store(true, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    stream: TcpStream,
    dir: Option<&Path>,
    needle: Option<&str>,
    seen: &Mutex<Vec<Seen>>,
    stall: &AtomicBool,
    stop: &AtomicBool,
) {
    let mut record = Seen::default();
    if let Some(needle) = needle {
        (record.needle_in_cmdline, record.needle_in_environ) = look_for(needle);
    }
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_ok() && line.contains("HTTP/") {
        record.request = line.trim().to_string();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                record
                    .headers
                    .push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    let request = record.request.clone();
    seen.lock().unwrap().push(record);
    if request.is_empty() {
        return;
    }
    if stall.load(Ordering::SeqCst) {
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    let path = request
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    let body = dir.and_then(|d| {
        let rel = path.trim_start_matches('/');
        let rel = rel.split_once('/').map(|(_, r)| r).unwrap_or("");
        (!rel.contains("..") && !rel.is_empty())
            .then(|| std::fs::read(d.join(rel)).ok())
            .flatten()
    });
    let mut stream = stream;
    let _ = match body {
        Some(b) => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            );
            stream.write_all(&b)
        }
        None => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    };
}

/// Whether `needle` is on any process's command line, and in any process's environment.
fn look_for(needle: &str) -> (bool, bool) {
    let (mut cmdline, mut environ) = (false, false);
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return (false, false);
    };
    let needle = needle.as_bytes();
    let holds = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for p in procs.flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if std::fs::read(p.path().join("cmdline")).is_ok_and(|b| holds(&b)) {
            cmdline = true;
        }
        if std::fs::read(p.path().join("environ")).is_ok_and(|b| holds(&b)) {
            environ = true;
        }
    }
    (cmdline, environ)
}

/// A bare repository at `dir/repo.git` holding one commit of `files`, ready to be served
/// over dumb HTTP. Returns its path.
pub fn bare_repo(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    for (path, text) in files {
        let p = work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(&work, &["init", "--quiet"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "first"]);
    let bare = dir.join("repo.git");
    git(
        dir,
        &[
            "clone",
            "--quiet",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(&bare, &["update-server-info"]);
    bare
}
