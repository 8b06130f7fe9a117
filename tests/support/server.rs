//! `trawl serve` as a child process, as a deployment runs it: started on a free loopback
//! port, asked over real HTTP, stopped with SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{TestDb, trawl_cmd};

/// The token test servers require.
pub const TOKEN: &str = "test-token-5f2c";

pub struct Served {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    log: tempfile::NamedTempFile,
}

impl Served {
    /// Starts `trawl serve` on a free port with the test token, no scheduler, quick polls,
    /// and `args` (`--workers 0`, say) and `env` (test faults, say) added.
    pub fn start(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut all = vec!["--no-scheduler"];
        all.extend_from_slice(args);
        Served::start_with(db, &all, env)
    }

    /// [`Served::start`] with the scheduler unless `args` turn it off.
    pub fn start_with(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Served {
        trawl::install_tls_provider();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = trawl_cmd()
            .envs(db.env())
            .env("TRAWL_API_TOKEN", TOKEN)
            .env("TRAWL_POLL_INTERVAL_MS", "100")
            // The tests' fixtures are temporary directories: clients may index those.
            .env("TRAWL_ALLOWED_ROOTS", std::env::temp_dir())
            .env("RUST_LOG", "trawl=info")
            .envs(env.iter().copied())
            .args(["serve", "--bind", "127.0.0.1:0", "--json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("trawl serve starts");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let listening: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "trawl serve did not say where it listens ({first:?}): {}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            )
        });
        let base = format!("http://{}", listening["listening"].as_str().unwrap());
        Served {
            child: Some(child),
            base,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// A client that sends the token.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {TOKEN}").parse().unwrap(),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    }

    /// Sends SIGTERM and waits for the exit (killing it after `secs`).
    pub fn stop(&mut self, secs: u64) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.is_some() && self.stop(20).is_none() {
            eprintln!("trawl serve had to be killed; its log:\n{}", self.log());
        }
        if std::thread::panicking() {
            eprintln!("trawl serve's log:\n{}", self.log());
        }
    }
}

/// Sends a request and returns the status and the JSON body (Null when it is not JSON).
pub async fn ask(request: reqwest::RequestBuilder) -> (reqwest::StatusCode, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The error code of an error answer, checking its shape.
pub fn code(body: &serde_json::Value) -> &str {
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error needs a message: {body}"
    );
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code: {body}"))
}
