//! Credentials kept out of what trawl stores and shows.
//!
//! A URL may carry a secret in its user name (`https://TOKEN@host/…`), its password
//! (`postgres://u:pw@db/…`) or a query parameter (`?password=…`, `?api_key=…`). These
//! functions are the one place that knows it: [`url`] masks one URL for a message,
//! [`strip_credentials`] removes them before a URL is stored, and [`text`] masks every URL
//! inside free text (git's stderr, a provider's error) before it reaches a log, an answer
//! or the database. Pure; no I/O.

use std::sync::LazyLock;

/// What a masked secret reads as.
pub const MASK: &str = "***";

/// Query parameters whose values are secrets (compared case-insensitively).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "sslpassword",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "auth",
    "private_token",
];

fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// `s` with its password, secret query values and (over http and https) user name replaced
/// by `***`; text that is not a URL with an authority passes unchanged.
pub fn url(s: &str) -> String {
    let Ok(mut u) = url::Url::parse(s) else {
        return s.to_string();
    };
    if u.cannot_be_a_base() {
        return s.to_string();
    }
    let mut changed = false;
    // Over http(s) a user name is often a token (`https://ghp_…@github.com/…`); a database
    // role or an ssh user is not a secret, and diagnostics need it.
    if !u.username().is_empty() && matches!(u.scheme(), "http" | "https") {
        let _ = u.set_username(MASK);
        changed = true;
    }
    if u.password().is_some() {
        let _ = u.set_password(Some(MASK));
        changed = true;
    }
    if u.query_pairs().any(|(k, _)| is_secret_param(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    MASK.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        u.to_string()
    } else {
        s.to_string()
    }
}

/// `s` without user name and password (a git URL as trawl stores it); text that is not a
/// URL with an authority passes unchanged. Secret query parameters are masked too: a
/// remote's query string is never a place for them.
pub fn strip_credentials(s: &str) -> String {
    let Ok(mut u) = url::Url::parse(s) else {
        return s.to_string();
    };
    if u.cannot_be_a_base() || (u.username().is_empty() && u.password().is_none()) {
        return url(s);
    }
    let _ = u.set_username("");
    let _ = u.set_password(None);
    url(u.as_str())
}

/// Whether `s` is a URL that carries a user name or password.
pub fn has_credentials(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| {
        !u.cannot_be_a_base() && (!u.username().is_empty() || u.password().is_some())
    })
}

static URL_IN_TEXT: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r#"[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>`]+"#).expect("valid regex")
});

/// `s` with every URL in it masked by [`url`].
pub fn text(s: &str) -> String {
    URL_IN_TEXT
        .replace_all(s, |m: &regex::Captures| {
            let found = &m[0];
            // Trailing punctuation of a sentence is not part of the URL.
            let trimmed = found.trim_end_matches(['.', ',', ';', ')', ':']);
            let tail = &found[trimmed.len()..];
            format!("{}{tail}", url(trimmed))
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_passwords_and_secret_parameters_are_masked() {
        for (given, want) in [
            ("https://user:pass@host/r.git", "https://***:***@host/r.git"),
            ("http://TOKEN@host/r.git", "http://***@host/r.git"),
            (
                "postgres://trawl@db/trawl?password=hunter2&sslmode=require",
                "postgres://trawl@db/trawl?password=***&sslmode=require",
            ),
            (
                "https://host/v1?api_key=sk-1",
                "https://host/v1?api_key=***",
            ),
            ("https://host/v1", "https://host/v1"),
            ("git@github.com:o/r.git", "git@github.com:o/r.git"),
            ("postgres://u:pw@db/t", "postgres://u:***@db/t"),
            ("/srv/code", "/srv/code"),
        ] {
            assert_eq!(url(given), want, "{given}");
        }
    }

    #[test]
    fn stored_urls_lose_their_credentials() {
        assert_eq!(
            strip_credentials("https://user:pass@host/r.git"),
            "https://host/r.git"
        );
        assert_eq!(
            strip_credentials("http://ghp_abc@host:8080/r.git"),
            "http://host:8080/r.git"
        );
        assert_eq!(
            strip_credentials("https://host/r.git"),
            "https://host/r.git"
        );
        assert!(has_credentials("https://t@host/r"));
        assert!(!has_credentials("https://host/r"));
        assert!(!has_credentials("git@host:o/r"));
    }

    #[test]
    fn urls_inside_text_are_masked_and_the_rest_kept() {
        let msg = "fatal: unable to access 'https://ghp_secret@github.com/o/r.git/': \
                   error from http://u:pw@proxy:3128.";
        let out = text(msg);
        assert!(!out.contains("ghp_secret") && !out.contains("pw@"), "{out}");
        assert!(out.contains("https://***@github.com/o/r.git/'"), "{out}");
        assert!(out.ends_with("http://***:***@proxy:3128/."), "{out}");
        assert_eq!(text("no url here"), "no url here");
    }
}
