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

/// What removing a repository did (or, dry, would do).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Removal {
    pub repository: Repository,
    pub dry_run: bool,
    /// What it held (and, unless dry, no longer does).
    pub contents: crate::store::repositories::RepositoryContents,
    /// This node's directories of it (working copy, history), deleted unless dry; other
    /// nodes' are derived data their next use of the id would never find.
    pub directories: Vec<String>,
}

/// Removes the repository `selector` names, with everything it holds (`dry_run`: says
/// what would go), on behalf of `actor`; audited either way.
pub async fn remove(
    store: &Store,
    config: &crate::config::Config,
    actor: &str,
    selector: &str,
    dry_run: bool,
) -> Result<Removal, RepositoryError> {
    let repository = resolve(store, selector).await?;
    let contents = store.repository_contents(repository.id).await?;
    let history = config.home.join("history").join(repository.id.to_string());
    let directories: Vec<std::path::PathBuf> = [
        crate::sources::git::working_copy_dir(config, repository.id),
        history.with_extension("lock"),
        history,
    ]
    .into_iter()
    .filter(|d| d.exists())
    .collect();
    let removal = Removal {
        repository,
        dry_run,
        contents,
        directories: directories
            .iter()
            .map(|d| d.display().to_string())
            .collect(),
    };
    if dry_run {
        return Ok(removal);
    }
    let id = removal.repository.id;
    let reason = format!("repository {id} was removed");
    let removed = store.remove_repository(id, &reason).await?;
    let audited = store
        .audit(&crate::store::audit::NewAuditEntry {
            actor,
            action: "remove_repository",
            repository_id: None,
            run_id: None,
            parameters: serde_json::json!({
                "repository_id": id,
                "repository": removal.repository.label(),
                "contents": removal.contents,
            }),
            outcome: if removed {
                Ok(None)
            } else {
                Err("it was removed meanwhile".into())
            },
        })
        .await;
    if let Err(e) = audited {
        // The removal is done: a failed audit write is said, not made its failure.
        tracing::warn!(error = %e, "could not write the audit entry of a repository removal");
    }
    if !removed {
        // Removed meanwhile by someone else.
        return Err(RepositoryError::Unknown {
            selector: selector.to_string(),
        });
    }
    // Derived data: what cannot be deleted is said, not fatal (the rows are gone).
    for d in &directories {
        let gone = if d.is_dir() {
            std::fs::remove_dir_all(d)
        } else {
            std::fs::remove_file(d)
        };
        if let Err(e) = gone {
            tracing::warn!(path = %d.display(), error = %e, "could not delete a directory of the removed repository");
        }
    }
    Ok(removal)
}
