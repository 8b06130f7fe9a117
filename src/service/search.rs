//! Searching, as every adapter offers it: the request as users give it (repositories by
//! selector, filters by name), checked and resolved here once, then the search itself.

use crate::search::{Mode, Query, Results, SearchError, Searcher};
use crate::service::repositories::{self, RepositoryError};
use crate::store::Store;

/// Hits returned when the request does not say.
pub const DEFAULT_LIMIT: u16 = 10;
/// The most hits one search returns.
pub const MAX_LIMIT: u16 = 1000;

/// A search as a user asks for it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    pub mode: Mode,
    /// Repository selectors (ids, or the paths or URLs they were indexed from); none: all.
    pub repositories: Vec<String>,
    pub languages: Vec<String>,
    pub kinds: Vec<String>,
    /// A glob over repository-relative paths.
    pub path: Option<String>,
    /// How many hits ([`DEFAULT_LIMIT`] when not given).
    pub limit: Option<u16>,
}

/// Why a search request was refused, or failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchRequestError {
    #[error("limit {0} is out of range: give 1 to {MAX_LIMIT}")]
    Limit(u16),
    #[error("unknown language {given}: trawl knows {known}")]
    UnknownLanguage { given: String, known: String },
    #[error("unknown kind {given}: snippets are of kind {known}")]
    UnknownKind { given: String, known: String },
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Search(#[from] SearchError),
}

impl From<crate::store::StoreError> for SearchRequestError {
    fn from(e: crate::store::StoreError) -> Self {
        SearchRequestError::Search(e.into())
    }
}

/// Checks and resolves `request`, then searches.
pub async fn search(
    store: &Store,
    searcher: &Searcher,
    request: SearchRequest,
) -> Result<Results, SearchRequestError> {
    let query = query_of(store, request).await?;
    Ok(searcher.search(&query).await?)
}

/// The query `request` asks for: the limit in range, every repository known, every
/// language and kind one that exists (a misspelt filter would match nothing, silently).
pub async fn query_of(store: &Store, request: SearchRequest) -> Result<Query, SearchRequestError> {
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(SearchRequestError::Limit(limit));
    }
    let mut repository_ids = Vec::new();
    for selector in &request.repositories {
        let id = repositories::resolve(store, selector).await?.id;
        if !repository_ids.contains(&id) {
            repository_ids.push(id);
        }
    }
    let languages = known(
        &request.languages,
        crate::sources::directory::LANGUAGES,
        |given, known| SearchRequestError::UnknownLanguage { given, known },
    )?;
    let kinds = known(&request.kinds, &crate::extract::kinds(), |given, known| {
        SearchRequestError::UnknownKind { given, known }
    })?;
    Ok(Query {
        text: request.query,
        mode: request.mode,
        repository_ids,
        languages,
        kinds,
        path: request.path,
        limit: usize::from(limit),
    })
}

/// `given`, lower-cased, each one of `valid`; else the refusal `refuse` makes of the first
/// that is not, with the valid ones listed.
fn known(
    given: &[String],
    valid: &[&str],
    refuse: impl Fn(String, String) -> SearchRequestError,
) -> Result<Vec<String>, SearchRequestError> {
    given
        .iter()
        .map(|g| {
            let g = g.trim().to_lowercase();
            if valid.contains(&g.as_str()) {
                Ok(g)
            } else {
                Err(refuse(g, valid.join(", ")))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_against_what_exists() {
        let langs = crate::sources::directory::LANGUAGES;
        let ok = known(&["Rust".into(), " python".into()], langs, |g, k| {
            SearchRequestError::UnknownLanguage { given: g, known: k }
        })
        .unwrap();
        assert_eq!(ok, ["rust", "python"]);
        let err = known(&["rustt".into()], langs, |g, k| {
            SearchRequestError::UnknownLanguage { given: g, known: k }
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("unknown language rustt: trawl knows rust, python"),
            "{err}"
        );
        let kinds = crate::extract::kinds();
        for k in ["function", "method", "class", "struct", "chunk"] {
            assert!(kinds.contains(&k), "{k} in {kinds:?}");
        }
    }
}
