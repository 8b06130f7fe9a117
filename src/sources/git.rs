//! Git sources: a working copy under `<home>/repos/<repository id>`, cloned on the first
//! sync and fetched and reset on later ones, with the `git` command.
//!
//! Only the chosen ref's tip is fetched (depth 1). A token for private https remotes
//! (`git.token`, `TRAWL_GIT_TOKEN`) is sent to the hosts of `git.token_hosts` only, over
//! https only, as an HTTP header scoped to that host's URLs; it reaches git through its
//! environment (`GIT_CONFIG_*`), never its command line (which `ps` shows) or the working
//! copy's config. Every git command is bounded: an ssh connect or an https transfer that
//! receives nothing for `git.connect_timeout_secs` is given up, and the whole command is
//! killed (with its helpers: it runs in its own process group) after `git.timeout_secs`.
//! What git says on failure is kept with credentials masked. Checkout only rewrites files
//! that changed, so the size+mtime pre-check of SYNC keeps working.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Config, GitConfig};
use crate::redact;

/// The environment variable holding a token for private https remotes.
pub const TOKEN_ENV: &str = "TRAWL_GIT_TOKEN";
/// How long `git ls-remote` may take when a source is registered, at most.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git is not installed or not on PATH ({0}): install git to index git URLs")]
    NoGit(String),
    #[error("cannot reach the git repository {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error(
        "git {action} of {url} was stopped after {secs} s without finishing \
         (git.timeout_secs, git.connect_timeout_secs): the remote stalled or is too slow"
    )]
    TimedOut {
        action: &'static str,
        url: String,
        secs: u64,
    },
    #[error("{what} {value:?} is not valid: {why}")]
    BadInput {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("git {action} failed in {dir}: {detail}")]
    Failed {
        action: &'static str,
        dir: String,
        detail: String,
    },
}

impl GitError {
    /// Whether running the command again may succeed: the network, not the input.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GitError::Unreachable { .. } | GitError::TimedOut { .. }
        )
    }
}

/// How git is run: the credential and its hosts, the time limits.
#[derive(Debug, Clone)]
pub struct GitOptions {
    token: String,
    token_hosts: Vec<String>,
    connect_timeout: Duration,
    timeout: Duration,
}

impl GitOptions {
    pub fn new(config: &GitConfig) -> GitOptions {
        GitOptions {
            token: config.token.clone(),
            token_hosts: config
                .token_hosts
                .iter()
                .map(|h| {
                    let h = h.trim().to_ascii_lowercase();
                    let h = h.strip_prefix("https://").unwrap_or(&h);
                    h.trim_end_matches('/').to_string()
                })
                .filter(|h| !h.is_empty())
                .collect(),
            connect_timeout: Duration::from_secs(config.connect_timeout_secs.max(1)),
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
        }
    }

    pub fn from_config(config: &Config) -> GitOptions {
        GitOptions::new(&config.git)
    }

    /// The authority (`host` or `host:port`) of `url` the token is sent to, when it is: an
    /// https URL whose host is one of `token_hosts`. Never for plain http, ssh or others.
    pub fn token_authority(&self, url: &str) -> Option<String> {
        if self.token.is_empty() {
            return None;
        }
        let u = url::Url::parse(url).ok()?;
        if u.scheme() != "https" {
            return None;
        }
        let host = u.host_str()?.to_ascii_lowercase();
        let authority = match u.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        self.token_hosts
            .iter()
            .any(|h| *h == authority || (u.port().is_none() && *h == format!("{host}:443")))
            .then_some(authority)
    }

    /// Why the token is not used anywhere, when it is set but cannot be: for `trawl doctor`.
    pub fn token_warning(&self) -> Option<String> {
        (!self.token.is_empty() && self.token_hosts.is_empty()).then(|| {
            "a git token is set (git.token, TRAWL_GIT_TOKEN) but no host is named for it: \
             it is sent nowhere; set git.token_hosts (TRAWL_GIT_TOKEN_HOSTS), e.g. github.com"
                .to_string()
        })
    }

    /// A git command for work on `url`: the token's header (when `url` is one of its
    /// hosts) and the connect limits through the environment, prompts and foreign
    /// transports off.
    fn command(&self, args: &[&str], dir: Option<&Path>, url: &str) -> Command {
        let mut cmd = Command::new("git");
        let connect = self.connect_timeout.as_secs().to_string();
        // http: fewer than 1 byte/s for that long is a stall.
        let mut config: Vec<(String, String)> = vec![
            ("http.lowSpeedLimit".into(), "1".into()),
            ("http.lowSpeedTime".into(), connect.clone()),
        ];
        if let Some(authority) = self.token_authority(url) {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("x-access-token:{}", self.token));
            // Scoped to the host's URLs: git sends it to no other.
            config.push((
                format!("http.https://{authority}/.extraHeader"),
                format!("Authorization: Basic {basic}"),
            ));
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (key, value)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        cmd.args(args);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        // Never prompt: a missing credential is an error, not a hang.
        // Only the transports trawl means: never `ext::` (a command) or others.
        cmd.env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env(
                "GIT_SSH_COMMAND",
                format!("ssh -o BatchMode=yes -o ConnectTimeout={connect}"),
            )
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove(TOKEN_ENV);
        cmd
    }
}

/// Where the working copy of repository `id` lives.
pub fn working_copy_dir(config: &Config, id: i64) -> PathBuf {
    config.home.join("repos").join(id.to_string())
}

/// Whether `source` names a git remote rather than a local path.
pub fn is_git_url(source: &str) -> bool {
    source.starts_with("https://")
        || source.starts_with("http://")
        || source.starts_with("ssh://")
        || source.starts_with("git://")
        || source.starts_with("file://")
        || (source.contains('@') && source.contains(':') && !Path::new(source).exists())
}

/// The local path a git URL names, when git would read it from this machine's disk:
/// `file://` URLs, and anything git takes for a path (a slash before the first colon).
/// Such a source is a directory for the allowed-roots rule.
pub fn local_path_of(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        let u = url::Url::parse(url).ok()?;
        if u.host_str()
            .is_some_and(|h| !h.is_empty() && h != "localhost")
        {
            return Some(PathBuf::from(rest));
        }
        return u.to_file_path().ok().or_else(|| Some(PathBuf::from(rest)));
    }
    if ["https://", "http://", "ssh://", "git://"]
        .iter()
        .any(|p| url.starts_with(p))
    {
        return None;
    }
    // scp-like `user@host:path` has no slash before its first colon.
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) if slash < colon => Some(PathBuf::from(url)),
        (Some(_), _) => None,
        _ => Some(PathBuf::from(url)),
    }
}

/// Runs `cmd` (stdout and stderr captured) until it ends or `limit` passes; then kills it
/// and every process it started. `Ok(None)` is a timeout.
fn run_bounded(
    mut cmd: Command,
    limit: Duration,
) -> Result<Option<std::process::Output>, std::io::Error> {
    use std::io::Read as _;
    use std::os::unix::process::CommandExt as _;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // SAFETY: killpg only sends a signal to the group this child leads.
            unsafe { libc::killpg(pid, libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(status.map(|status| std::process::Output {
        status,
        stdout,
        stderr,
    }))
}

/// The lines of git's stderr that say what failed (`fatal:`, `error:`, `remote:`), or its
/// last line, credentials masked.
fn what_git_said(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let telling: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            ["fatal:", "error:", "remote:"]
                .iter()
                .any(|p| l.to_ascii_lowercase().starts_with(p))
        })
        .collect();
    let chosen = if telling.is_empty() {
        lines.last().map(|l| vec![*l])?
    } else {
        telling
    };
    let mut joined = chosen
        .iter()
        .rev()
        .take(6)
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join("; ");
    if joined.len() > 2000 {
        let mut cut = 2000;
        while !joined.is_char_boundary(cut) {
            cut -= 1;
        }
        joined.truncate(cut);
        joined.push('…');
    }
    Some(redact::text(&joined))
}

/// Why a git command did not succeed.
enum Failure {
    /// It ran and failed: what it said.
    Said(String),
    TimedOut,
    NotRun(String),
}

impl GitOptions {
    fn run(&self, cmd: Command, limit: Duration) -> Result<String, Failure> {
        match run_bounded(cmd, limit) {
            Err(e) => Err(Failure::NotRun(e.to_string())),
            Ok(None) => Err(Failure::TimedOut),
            Ok(Some(out)) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(Some(out)) => Err(Failure::Said(
                what_git_said(&out.stderr).unwrap_or_else(|| "git exited with an error".into()),
            )),
        }
    }
}

/// Refuses a URL or ref git could take for an option (`--upload-pack=…`) or that holds
/// control characters; both come from users, over the network too.
pub fn check_input(url: &str, git_ref: &str) -> Result<(), GitError> {
    let bad = |what, value: &str, why| GitError::BadInput {
        what,
        value: value.to_string(),
        why,
    };
    if url.starts_with('-') {
        return Err(bad("the git URL", url, "it may not start with '-'"));
    }
    if url.chars().any(char::is_control) {
        return Err(bad("the git URL", url, "it holds control characters"));
    }
    if git_ref.starts_with('-')
        || git_ref
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
        || git_ref.contains("..")
    {
        return Err(bad(
            "the git ref",
            git_ref,
            "give a branch, tag or commit name (no leading '-', spaces, '..' or ~^:?*[\\)",
        ));
    }
    Ok(())
}

/// Checks that `url` answers and has `git_ref` (or a default branch), without cloning.
pub fn probe(options: &GitOptions, url: &str, git_ref: &str) -> Result<(), GitError> {
    ls_remote(options, url, git_ref).map(|_| ())
}

/// The commit `git_ref` (the default branch when empty) of `url` is at now, by one
/// `ls-remote` (bounded like [`probe`]).
pub fn remote_head(options: &GitOptions, url: &str, git_ref: &str) -> Result<String, GitError> {
    let listed = ls_remote(options, url, git_ref)?;
    listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|sha| sha.len() >= 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .ok_or_else(|| GitError::Unreachable {
            url: redact::url(url),
            detail: format!(
                "ls-remote listed no commit for {}",
                if git_ref.is_empty() { "HEAD" } else { git_ref }
            ),
        })
}

/// What `git ls-remote --exit-code URL REF` lists (REF: HEAD when empty), bounded by
/// [`PROBE_TIMEOUT`]; a remote that does not answer, or lacks the ref, is unreachable.
fn ls_remote(options: &GitOptions, url: &str, git_ref: &str) -> Result<String, GitError> {
    check_input(url, git_ref)?;
    let want = if git_ref.is_empty() { "HEAD" } else { git_ref };
    let cmd = options.command(&["ls-remote", "--exit-code", "--", url, want], None, url);
    let limit = PROBE_TIMEOUT.min(options.timeout);
    match run_bounded(cmd, limit) {
        Err(e) => Err(GitError::NoGit(e.to_string())),
        Ok(None) => Err(GitError::TimedOut {
            action: "ls-remote",
            url: redact::url(url),
            secs: limit.as_secs(),
        }),
        Ok(Some(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Some(out)) => Err(GitError::Unreachable {
            url: redact::url(url),
            detail: what_git_said(&out.stderr).unwrap_or_else(|| match out.status.code() {
                Some(2) if !git_ref.is_empty() => format!("it has no ref {git_ref}"),
                _ => "git ls-remote failed".to_string(),
            }),
        }),
    }
}

/// How many commits `to` has that `from` has not, counted in the local repository `dir`
/// (a working copy or a bare history clone); None when `dir` lacks either commit.
pub fn commits_between(
    options: &GitOptions,
    dir: &Path,
    url: &str,
    from: &str,
    to: &str,
) -> Option<i64> {
    let hex = |c: &str| c.len() >= 7 && c.bytes().all(|b| b.is_ascii_hexdigit());
    if !dir.is_dir() || !hex(from) || !hex(to) {
        return None;
    }
    let range = format!("{from}..{to}");
    options
        .local("rev-list", &["rev-list", "--count", &range], dir, url)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Fetches `git_ref` (the default branch when empty) of `url` into the local repository
/// `dir` as `refs/trawl/freshness`, leaving FETCH_HEAD and the checkout alone: only the
/// commits after those `dir` has come, so counting them afterwards is cheap.
pub fn fetch_for_count(
    options: &GitOptions,
    dir: &Path,
    url: &str,
    git_ref: &str,
) -> Result<(), GitError> {
    check_input(url, git_ref)?;
    let want = if git_ref.is_empty() { "HEAD" } else { git_ref };
    let spec = format!("+{want}:refs/trawl/freshness");
    options
        .local(
            "fetch",
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--",
                url,
                &spec,
            ],
            dir,
            url,
        )
        .map(|_| ())
}

/// Brings the working copy in `dir` to the tip of `git_ref` (the remote's default branch
/// when empty), cloning it first if needed. Returns the commit checked out.
pub fn update(
    options: &GitOptions,
    url: &str,
    git_ref: &str,
    dir: &Path,
) -> Result<String, GitError> {
    check_input(url, git_ref)?;
    if !dir.join(".git").is_dir() {
        private_dir(dir)?;
        options.local("init", &["init", "--quiet"], dir, url)?;
    }
    options.fetch(url, git_ref, 1, dir)?;
    options.local(
        "checkout",
        &["checkout", "--quiet", "--force", "--detach", "FETCH_HEAD"],
        dir,
        url,
    )?;
    options.local("clean", &["clean", "--quiet", "-ffdx"], dir, url)?;
    let head = options.local("rev-parse", &["rev-parse", "HEAD"], dir, url)?;
    Ok(head.trim().to_string())
}

fn private_dir(dir: &Path) -> Result<(), GitError> {
    crate::sources::private_dir(dir).map_err(|e| GitError::Failed {
        action: "init",
        dir: dir.display().to_string(),
        detail: e.to_string(),
    })
}

impl GitOptions {
    /// Runs git `args` in `dir` (of the source `url`, for the credential's scope).
    fn local(
        &self,
        action: &'static str,
        args: &[&str],
        dir: &Path,
        url: &str,
    ) -> Result<String, GitError> {
        let limit = self.timeout;
        match self.run(self.command(args, Some(dir), url), limit) {
            Ok(out) => Ok(out),
            Err(Failure::Said(detail)) => Err(GitError::Failed {
                action,
                dir: dir.display().to_string(),
                detail,
            }),
            Err(Failure::NotRun(e)) => Err(GitError::NoGit(e)),
            Err(Failure::TimedOut) => Err(GitError::TimedOut {
                action,
                url: redact::url(url),
                secs: limit.as_secs(),
            }),
        }
    }

    /// Fetches `git_ref` (the default branch when empty) of `url` into `dir`, `depth`
    /// commits deep, as FETCH_HEAD.
    fn fetch(&self, url: &str, git_ref: &str, depth: u32, dir: &Path) -> Result<(), GitError> {
        let limit = self.timeout;
        let want = if git_ref.is_empty() { "HEAD" } else { git_ref };
        let depth = depth.max(1).to_string();
        let fetch = self.command(
            &[
                "fetch",
                "--quiet",
                "--depth",
                &depth,
                "--no-tags",
                "--",
                url,
                want,
            ],
            Some(dir),
            url,
        );
        match self.run(fetch, limit) {
            Ok(_) => Ok(()),
            Err(Failure::Said(detail)) => Err(GitError::Unreachable {
                url: redact::url(url),
                detail,
            }),
            Err(Failure::NotRun(e)) => Err(GitError::NoGit(e)),
            Err(Failure::TimedOut) => Err(GitError::TimedOut {
                action: "fetch",
                url: redact::url(url),
                secs: limit.as_secs(),
            }),
        }
    }
}

/// A git source's history, kept apart from its working copy (which stays a clone of depth
/// 1 and may be at work for the next sync): a bare repository fetched `depth` commits deep.
pub mod history {
    use std::path::Path;

    use super::{GitError, GitOptions, check_input, private_dir};
    use crate::store::history::NewCommit;

    /// Fetches `git_ref` of `url` into the bare repository `dir`, `depth` commits deep
    /// (creating it); returns the commit fetched.
    pub fn fetch(
        options: &GitOptions,
        url: &str,
        git_ref: &str,
        dir: &Path,
        depth: u32,
    ) -> Result<String, GitError> {
        check_input(url, git_ref)?;
        if !dir.join("HEAD").is_file() {
            private_dir(dir)?;
            options.local("init", &["init", "--quiet", "--bare"], dir, url)?;
        }
        options.fetch(url, git_ref, depth, dir)?;
        let head = options.local("rev-parse", &["rev-parse", "FETCH_HEAD"], dir, url)?;
        Ok(head.trim().to_string())
    }

    /// Whether `commit` is in the repository `dir`.
    pub fn has(options: &GitOptions, dir: &Path, url: &str, commit: &str) -> bool {
        is_hash(commit)
            && options
                .local(
                    "cat-file",
                    &["cat-file", "-e", &format!("{commit}^{{commit}}")],
                    dir,
                    url,
                )
                .is_ok()
    }

    fn is_hash(s: &str) -> bool {
        (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// The commits reachable from `commit`, newest first, at most `max`, with the files each
    /// touched.
    pub fn log(
        options: &GitOptions,
        dir: &Path,
        url: &str,
        commit: &str,
        max: u32,
    ) -> Result<Vec<NewCommit>, GitError> {
        if !is_hash(commit) {
            return Err(GitError::BadInput {
                what: "commit",
                value: commit.into(),
                why: "not a commit hash",
            });
        }
        let out = options.local(
            "log",
            &[
                "log",
                &format!("--max-count={max}"),
                "--no-renames",
                "--format=%x1e%H%x1f%an%x1f%cI%x1f%B%x1f",
                "--name-status",
                "-z",
                commit,
                "--",
            ],
            dir,
            url,
        )?;
        Ok(parse_log(&out))
    }

    /// Parses `git log --format=%x1e%H%x1f%an%x1f%cI%x1f%B%x1f --name-status -z`.
    pub fn parse_log(out: &str) -> Vec<NewCommit> {
        out.split('\x1e')
            .filter(|r| !r.trim().is_empty())
            .filter_map(|record| {
                let mut fields = record.splitn(5, '\x1f');
                let hash = fields.next()?.trim().to_string();
                let author = fields.next()?.to_string();
                let time = fields.next()?;
                let message = fields.next()?.trim().to_string();
                let committed_at = chrono::DateTime::parse_from_rfc3339(time.trim())
                    .ok()?
                    .with_timezone(&chrono::Utc);
                let rest = fields.next().unwrap_or("");
                let mut parts = rest.split('\0').map(|p| p.trim_start_matches('\n'));
                let mut files = Vec::new();
                while let Some(status) = parts.next() {
                    if status.is_empty() {
                        continue;
                    }
                    let Some(path) = parts.next() else { break };
                    files.push((path.to_string(), status[..1].to_string()));
                }
                Some(NewCommit {
                    hash,
                    author,
                    committed_at,
                    message,
                    files,
                })
            })
            .collect()
    }

    /// The paths that differ between commits `from` and `to`.
    pub fn changed(
        options: &GitOptions,
        dir: &Path,
        url: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<String>, GitError> {
        let out = options.local(
            "diff",
            &["diff", "--no-renames", "--name-only", "-z", from, to, "--"],
            dir,
            url,
        )?;
        Ok(out
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect())
    }

    /// Which commit last changed each line of `path` at `commit`: ranges (first line, last
    /// line, commit), by line.
    pub fn blame(
        options: &GitOptions,
        dir: &Path,
        url: &str,
        commit: &str,
        path: &str,
    ) -> Result<Vec<(i32, i32, String)>, GitError> {
        let out = options.local(
            "blame",
            &["blame", "--incremental", commit, "--", path],
            dir,
            url,
        )?;
        Ok(parse_blame(&out))
    }

    /// Parses `git blame --incremental`: each group starts `<hash> <orig> <final> <count>`.
    pub fn parse_blame(out: &str) -> Vec<(i32, i32, String)> {
        let mut ranges: Vec<(i32, i32, String)> = out
            .lines()
            .filter_map(|line| {
                let mut f = line.split(' ');
                let hash = f.next()?;
                if hash.len() < 40 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                let _orig: i32 = f.next()?.parse().ok()?;
                let start: i32 = f.next()?.parse().ok()?;
                let count: i32 = f.next()?.parse().ok()?;
                Some((start, start + count - 1, hash.to_string()))
            })
            .collect();
        ranges.sort();
        ranges
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn log_and_blame_output_parse() {
            // As git 2.x writes it (checked against a real repository).
            let out = "\x1eaaaa111\x1fAda\x1f2026-01-02T03:04:05+01:00\x1fAdd retry backoff\n\nBody.\n\x1f\0\nM\0src/a.rs\0A\0b c.txt\0\x1ebbbb222\x1fBo\x1f2025-12-31T00:00:00Z\x1fInitial\n\x1f\0\nA\0src/a.rs\0";
            let c = parse_log(out);
            assert_eq!(c.len(), 2);
            assert_eq!(c[0].hash, "aaaa111");
            assert_eq!(c[0].author, "Ada");
            assert_eq!(c[0].message, "Add retry backoff\n\nBody.");
            assert_eq!(c[0].committed_at.to_rfc3339(), "2026-01-02T02:04:05+00:00");
            assert_eq!(
                c[0].files,
                vec![
                    ("src/a.rs".into(), "M".into()),
                    ("b c.txt".into(), "A".into())
                ]
            );
            assert_eq!(c[1].files, vec![("src/a.rs".into(), "A".into())]);

            let h1 = "1".repeat(40);
            let h2 = "2".repeat(40);
            let blame = format!(
                "{h2} 5 5 2\nauthor X\nfilename a.rs\n{h1} 1 1 4\nsummary y\nfilename a.rs\n"
            );
            assert_eq!(
                parse_blame(&blame),
                vec![(1, 4, h1.clone()), (5, 6, h2.clone())]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(hosts: &[&str]) -> GitOptions {
        GitOptions::new(&GitConfig {
            token: "tok-123".into(),
            token_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..GitConfig::default()
        })
    }

    #[test]
    fn a_remote_that_does_not_answer_is_named_without_its_credentials() {
        // Loopback port 1: refused at once. The freshness check reports this error.
        let url = "https://user:s3cr3t-pw@127.0.0.1:1/o/r.git";
        let e = remote_head(&options(&[]), url, "main")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cr3t-pw"), "{e}");
        assert!(e.contains("127.0.0.1:1"), "{e}");
        // A ref that is an option is refused before git runs.
        let e = remote_head(
            &options(&[]),
            "https://127.0.0.1:1/r.git",
            "--upload-pack=x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ref"), "{e}");
    }

    #[test]
    fn the_token_goes_to_named_https_hosts_only() {
        let o = options(&["GitHub.com", "https://git.example.com:8443/"]);
        assert_eq!(
            o.token_authority("https://github.com/o/r.git").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            o.token_authority("https://git.example.com:8443/r.git")
                .as_deref(),
            Some("git.example.com:8443")
        );
        for url in [
            "http://github.com/o/r.git",
            "https://evil.example/o/r.git",
            "https://github.com.evil.example/o/r.git",
            "https://git.example.com/r.git",
            "ssh://git@github.com/o/r.git",
            "git@github.com:o/r.git",
        ] {
            assert_eq!(o.token_authority(url), None, "{url}");
        }
        assert_eq!(options(&[]).token_authority("https://github.com/o/r"), None);
        assert!(options(&[]).token_warning().is_some());
        assert!(o.token_warning().is_none());
    }

    #[test]
    fn the_token_travels_in_the_environment_scoped_to_its_host() {
        let cmd = options(&["github.com"]).command(
            &["ls-remote", "--", "https://github.com/o/r.git"],
            None,
            "https://github.com/o/r.git",
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            args.iter()
                .all(|a| !a.contains("tok-123") && !a.contains("extraHeader")),
            "{args:?}"
        );
        let env: std::collections::HashMap<String, String> = cmd
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        let count: usize = env["GIT_CONFIG_COUNT"].parse().unwrap();
        let scoped = (0..count)
            .find(|i| env[&format!("GIT_CONFIG_KEY_{i}")] == "http.https://github.com/.extraHeader")
            .expect("a header scoped to the host");
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode("x-access-token:tok-123");
        assert_eq!(
            env[&format!("GIT_CONFIG_VALUE_{scoped}")],
            format!("Authorization: Basic {basic}")
        );
        // Another host's command carries no header at all.
        let other =
            options(&["github.com"]).command(&["ls-remote"], None, "https://gitlab.com/o/r");
        assert!(
            other
                .get_envs()
                .all(|(_, v)| v.is_none_or(|v| !v.to_string_lossy().contains("Basic")))
        );
    }

    #[test]
    fn urls_and_refs_that_git_would_take_for_options_are_refused() {
        assert!(check_input("https://example.com/a.git", "main").is_ok());
        assert!(check_input("git@example.com:a/b.git", "v1.2").is_ok());
        assert!(check_input("https://example.com/a.git", "").is_ok());
        for (url, git_ref) in [
            ("--upload-pack=touch /tmp/x #@x:y", ""),
            ("https://example.com/a.git", "--upload-pack=x"),
            ("https://example.com/a.git", "main branch"),
            ("https://example.com/a.git", "a..b"),
            ("https://example.com/\na.git", ""),
        ] {
            let err = check_input(url, git_ref).unwrap_err().to_string();
            assert!(err.contains("is not valid"), "{url} {git_ref}: {err}");
        }
    }
}
