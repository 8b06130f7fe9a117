//! Git sources: a working copy under `<home>/repos/<repository id>`, cloned on the first
//! sync and fetched and reset on later ones, with the `git` command.
//!
//! Only the chosen ref's tip is fetched (depth 1). A token for private https remotes comes
//! from `TRAWL_GIT_TOKEN` and is passed as an HTTP header for the one command, never
//! written to the working copy's config. Checkout only rewrites files that changed, so the
//! size+mtime pre-check of SYNC keeps working.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::config::Config;

/// The environment variable holding a token for private https remotes.
pub const TOKEN_ENV: &str = "TRAWL_GIT_TOKEN";
/// How long `git ls-remote` may take when a source is registered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git is not installed or not on PATH ({0}): install git to index git URLs")]
    NoGit(String),
    #[error("cannot reach the git repository {url}: {detail}")]
    Unreachable { url: String, detail: String },
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

fn git(args: &[&str], dir: Option<&Path>, url: &str) -> Command {
    let mut cmd = Command::new("git");
    if let Ok(token) = std::env::var(TOKEN_ENV)
        && !token.is_empty()
        && url.starts_with("http")
    {
        use base64::Engine;
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
        cmd.args([
            "-c",
            &format!("http.extraHeader=Authorization: Basic {basic}"),
        ]);
    }
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    // Never prompt: a missing credential is an error, not a hang.
    // Only the transports trawl means: never `ext::` (a command) or others.
    cmd.env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    cmd
}

fn run(mut cmd: Command) -> Result<String, String> {
    match cmd.output() {
        Err(e) => Err(format!("cannot run git: {e}")),
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(last_line(&out.stderr).unwrap_or_else(|| "git exited with an error".into())),
    }
}

/// The last non-empty line git wrote to stderr: its error.
fn last_line(stderr: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
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
pub fn probe(url: &str, git_ref: &str) -> Result<(), GitError> {
    check_input(url, git_ref)?;
    let want = if git_ref.is_empty() { "HEAD" } else { git_ref };
    let mut cmd = git(&["ls-remote", "--exit-code", "--", url, want], None, url);
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| GitError::NoGit(e.to_string()))?;
    let out = wait_with_timeout(child, PROBE_TIMEOUT);
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => {
            let detail = last_line(&out.stderr).unwrap_or_else(|| match out.status.code() {
                Some(2) if !git_ref.is_empty() => format!("it has no ref {git_ref}"),
                _ => "git ls-remote failed".to_string(),
            });
            Err(GitError::Unreachable {
                url: crate::config::redact_url(url),
                detail,
            })
        }
        Err(detail) => Err(GitError::Unreachable {
            url: crate::config::redact_url(url),
            detail,
        }),
    }
}

fn wait_with_timeout(
    mut child: std::process::Child,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", timeout.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Brings the working copy in `dir` to the tip of `git_ref` (the remote's default branch
/// when empty), cloning it first if needed. Returns the commit checked out.
pub fn update(url: &str, git_ref: &str, dir: &Path) -> Result<String, GitError> {
    let fail = |action: &'static str| {
        let dir = dir.display().to_string();
        move |detail: String| GitError::Failed {
            action,
            dir,
            detail,
        }
    };
    if !dir.join(".git").is_dir() {
        std::fs::create_dir_all(dir).map_err(|e| fail("init")(e.to_string()))?;
        run(git(&["init", "--quiet"], Some(dir), url)).map_err(fail("init"))?;
    }
    check_input(url, git_ref)?;
    let want = if git_ref.is_empty() { "HEAD" } else { git_ref };
    run(git(
        &[
            "fetch",
            "--quiet",
            "--depth",
            "1",
            "--no-tags",
            "--",
            url,
            want,
        ],
        Some(dir),
        url,
    ))
    .map_err(|detail| GitError::Unreachable {
        url: crate::config::redact_url(url),
        detail,
    })?;
    run(git(
        &["checkout", "--quiet", "--force", "--detach", "FETCH_HEAD"],
        Some(dir),
        url,
    ))
    .map_err(fail("checkout"))?;
    run(git(&["clean", "--quiet", "-ffdx"], Some(dir), url)).map_err(fail("clean"))?;
    let head = run(git(&["rev-parse", "HEAD"], Some(dir), url)).map_err(fail("rev-parse"))?;
    Ok(head.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::check_input;

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
