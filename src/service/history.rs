//! "When and why did this change?": the history pipeline's data for the CLI, HTTP and MCP.
//!
//! - [`history`]: the commits that changed a file (every commit that touched it) or some
//!   lines of it, a snippet's included (the commits that last changed one of its lines, as
//!   git blame has it at the indexed commit), newest first.
//! - [`search_commits`]: commit messages by keyword (Postgres full-text search, English
//!   stemming). Messages are not embedded: pipelines write no vectors, and a message's
//!   words are what people search them by.

use serde::Serialize;

use crate::domain::pipelines::Pipeline;
use crate::service::references::Freshness;
use crate::service::repositories::{self, RepositoryError};
use crate::store::history::CommitRow;
use crate::store::{Store, StoreError};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 1000;

/// What a history is asked for: a path (`src/a.rs`), lines of it (`src/a.rs:10`,
/// `src/a.rs:10-40`), or a snippet by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(String),
    Lines { path: String, start: i32, end: i32 },
    Snippet(i64),
}

impl Target {
    /// Parses `PATH`, `PATH:LINE` or `PATH:START-END`.
    pub fn parse(s: &str) -> Target {
        if let Some((path, lines)) = s.rsplit_once(':') {
            let range = lines
                .split_once('-')
                .map_or_else(|| (lines, lines), |(a, b)| (a, b));
            if let (Ok(start), Ok(end)) = (range.0.parse::<i32>(), range.1.parse::<i32>())
                && start >= 1
                && end >= start
                && !path.is_empty()
            {
                return Target::Lines {
                    path: path.to_string(),
                    start,
                    end,
                };
            }
        }
        Target::Path(s.to_string())
    }
}

/// `limit`, or the default; out of 1..=[`MAX_LIMIT`] refused.
fn checked_limit(limit: Option<u32>) -> Result<u32, HistoryError> {
    super::answers_limit(limit, DEFAULT_LIMIT, MAX_LIMIT).map_err(HistoryError::Limit)
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("no snippet {0}: search results give each snippet's id")]
    NoSnippet(i64),
    #[error("give the path of a file, relative to its repository's root")]
    NoPath,
    #[error(
        "no indexed repository has a file {0}: give the path relative to the repository's root (`trawl status` lists them), and --repo when several have it"
    )]
    NoFile(String),
    #[error("{path} is in {} repositories ({}): say which repository", .candidates.len(), .candidates.join(", "))]
    AmbiguousFile {
        path: String,
        candidates: Vec<String>,
    },
    #[error("give words to search commit messages for")]
    NoQuery,
    #[error(
        "the query is {0} characters long, over the limit of {max}: search for fewer words",
        max = crate::search::MAX_QUERY_CHARS
    )]
    QueryTooLong(usize),
    #[error("limit {0} is out of range: give 1 to {MAX_LIMIT}")]
    Limit(u32),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HistoryAnswer {
    pub repository: String,
    pub repository_id: i64,
    pub path: String,
    /// The lines asked about; None: the whole file.
    pub lines: Option<(i32, i32)>,
    pub commits: Vec<CommitRow>,
    pub freshness: Freshness,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CommitHit {
    pub repository: String,
    #[serde(flatten)]
    pub commit: CommitRow,
}

async fn freshness(store: &Store, id: i64, label: &str) -> Result<Freshness, StoreError> {
    let (reflects, current) = store.pipeline_version(Pipeline::History, id).await?;
    Ok(Freshness {
        repository: label.to_string(),
        repository_id: id,
        reflects_version: reflects,
        current_version: current,
        lagging: current.is_some() && reflects < current,
    })
}

/// The commits that changed `target`, in `repository` (a selector; None: the one
/// repository that has the file).
pub async fn history(
    store: &Store,
    target: &Target,
    repository: Option<&str>,
    limit: Option<u32>,
) -> Result<HistoryAnswer, HistoryError> {
    let limit = i64::from(checked_limit(limit)?);
    let (repo_hint, path, lines) = match target {
        Target::Snippet(id) => {
            let s = store
                .snippets_by_id(&[*id])
                .await?
                .pop()
                .ok_or(HistoryError::NoSnippet(*id))?;
            (
                Some(s.repository_id),
                s.path,
                Some((s.start_line, s.end_line)),
            )
        }
        Target::Path(p) => (None, p.trim_start_matches("./").to_string(), None),
        Target::Lines { path, start, end } => (
            None,
            path.trim_start_matches("./").to_string(),
            Some((*start, *end)),
        ),
    };
    if path.is_empty() {
        return Err(HistoryError::NoPath);
    }
    let repo = match (repo_hint, repository) {
        (Some(id), _) => store.repository(id).await?,
        (None, Some(sel)) => repositories::resolve(store, sel).await?,
        (None, None) => {
            let mut having = Vec::new();
            for r in store.list_repositories().await? {
                if store
                    .indexed_paths(r.id)
                    .await?
                    .binary_search(&path)
                    .is_ok()
                {
                    having.push(r);
                }
            }
            match having.len() {
                0 => return Err(HistoryError::NoFile(path)),
                1 => having.remove(0),
                _ => {
                    return Err(HistoryError::AmbiguousFile {
                        path,
                        candidates: having
                            .iter()
                            .map(|r| format!("id {}: {}", r.id, r.label()))
                            .collect(),
                    });
                }
            }
        }
    };
    let commits = match lines {
        None => store.commits_of_path(repo.id, &path, limit).await?,
        Some((start, end)) => {
            store
                .commits_of_lines(repo.id, &path, start, end, limit)
                .await?
        }
    };
    Ok(HistoryAnswer {
        freshness: freshness(store, repo.id, &repo.label()).await?,
        repository: repo.label(),
        repository_id: repo.id,
        path,
        lines,
        commits,
    })
}

/// Commits whose messages match `query`, in `repositories` (selectors; empty: all).
pub async fn search_commits(
    store: &Store,
    query: &str,
    repositories: &[String],
    limit: Option<u32>,
) -> Result<Vec<CommitHit>, HistoryError> {
    if query.trim().is_empty() {
        return Err(HistoryError::NoQuery);
    }
    let chars = query.chars().count();
    if chars > crate::search::MAX_QUERY_CHARS {
        return Err(HistoryError::QueryTooLong(chars));
    }
    let limit = i64::from(checked_limit(limit)?);
    let repos: Vec<(i64, String)> = if repositories.is_empty() {
        store
            .list_repositories()
            .await?
            .into_iter()
            .map(|r| (r.id, r.label()))
            .collect()
    } else {
        let mut v = Vec::new();
        for s in repositories {
            let r = repositories::resolve(store, s).await?;
            v.push((r.id, r.label()));
        }
        v
    };
    let ids: Vec<i64> = repos.iter().map(|r| r.0).collect();
    Ok(store
        .search_commits(&ids, query, limit)
        .await?
        .into_iter()
        .map(|c| CommitHit {
            repository: repos
                .iter()
                .find(|r| r.0 == c.repository_id)
                .map(|r| r.1.clone())
                .unwrap_or_default(),
            commit: c,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_paths_lines_and_ranges() {
        assert_eq!(Target::parse("src/a.rs"), Target::Path("src/a.rs".into()));
        assert_eq!(
            Target::parse("src/a.rs:12"),
            Target::Lines {
                path: "src/a.rs".into(),
                start: 12,
                end: 12
            }
        );
        assert_eq!(
            Target::parse("src/a.rs:10-40"),
            Target::Lines {
                path: "src/a.rs".into(),
                start: 10,
                end: 40
            }
        );
        // Not a line range: the whole text is a path.
        assert_eq!(Target::parse("c:weird"), Target::Path("c:weird".into()));
        assert_eq!(
            Target::parse("a.rs:40-10"),
            Target::Path("a.rs:40-10".into())
        );
    }
}
