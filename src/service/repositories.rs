//! Which repository a user means: one resolution of a selector (an id, the path or URL it
//! was indexed from, or `source@ref`) for the CLI, the HTTP API and MCP alike.

use crate::store::repositories::Repository;
use crate::store::{Store, StoreError};

/// Why a selector names no single repository. The words are the domain's; adapters add
/// where to look (a command, an endpoint).
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error(
        "no repository {selector}: give a repository id, or the path or URL it was indexed from"
    )]
    Unknown { selector: String },
    #[error(
        "{selector} names {} repositories ({}): give one of them by id or as source@ref",
        .candidates.len(),
        .candidates.join(", ")
    )]
    Ambiguous {
        selector: String,
        /// "id N: source@ref" for each.
        candidates: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The one repository `selector` names.
pub async fn resolve(store: &Store, selector: &str) -> Result<Repository, RepositoryError> {
    let mut found = store.repositories_named(selector).await?;
    match found.len() {
        0 => Err(RepositoryError::Unknown {
            selector: selector.to_string(),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(RepositoryError::Ambiguous {
            selector: selector.to_string(),
            candidates: found
                .iter()
                .map(|r| format!("id {}: {}", r.id, r.label()))
                .collect(),
        }),
    }
}

/// [`resolve`] for an optional selector (none: every repository).
pub async fn resolve_id(
    store: &Store,
    selector: Option<&str>,
) -> Result<Option<i64>, RepositoryError> {
    match selector {
        None => Ok(None),
        Some(s) => Ok(Some(resolve(store, s).await?.id)),
    }
}
