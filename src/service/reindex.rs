//! Forcing a reindex of a registered repository: a scope (the project, directories, files,
//! or the embeddings only), a priority class, incremental or full; planned before it is
//! enqueued, so that bad paths are refused with nothing enqueued and a dry run can list
//! what would be processed. The CLI calls it; the HTTP API and MCP server will too.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::domain::scope::Scope;
use crate::domain::{PriorityClass, RunStatus, Trigger};
use crate::pipeline::stages::results::RunResult;
use crate::pipeline::stages::sync::plan_sync;
use crate::store::audit::NewAuditEntry;
use crate::store::repositories::Repository;
pub use crate::store::runs::ItemFailure;
use crate::store::runs::{Enqueued, NewRun, Run};
use crate::store::{Store, StoreError};

/// The kinds of scope, as the CLI and API name them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum ScopeKind {
    /// The whole repository.
    Project,
    /// The files in the directories given with --path (with --recursive, below them too).
    Directory,
    /// The files given with --path.
    Files,
    /// No sync or parse: embed the existing snippets again (after a model change, say).
    EmbeddingsOnly,
}

/// A reindex as asked for.
#[derive(Debug, Clone)]
pub struct ReindexRequest {
    /// The repository's id, or the path or URL it was indexed from.
    pub repository: String,
    pub scope: ScopeKind,
    /// For `directory` and `files`: paths inside the repository, relative to its root (or
    /// absolute, inside it).
    pub paths: Vec<String>,
    pub recursive: bool,
    pub priority: PriorityClass,
    /// Reprocess every file in scope (every snippet, for embeddings-only), not only those
    /// whose content changed.
    pub full: bool,
    /// Who asks: cli, api, mcp.
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    #[error(transparent)]
    Repository(#[from] crate::service::repositories::RepositoryError),
    #[error("the {scope} scope takes no paths (it covers {what})")]
    PathsNotTaken {
        scope: &'static str,
        what: &'static str,
    },
    #[error("the {scope} scope needs at least one path inside the repository")]
    NoPaths { scope: &'static str },
    #[error("recursive applies to the directory scope only")]
    RecursiveWithoutDirectory,
    #[error(
        "{path} is outside the repository {root}: give a path inside it (relative to its root)"
    )]
    Outside { path: String, root: String },
    #[error("{path} does not exist in the repository {root}")]
    NoSuchPath { path: String, root: String },
    #[error("{path} is not a {expected} (the {scope} scope takes {expected} paths)")]
    WrongKind {
        path: String,
        expected: &'static str,
        scope: &'static str,
    },
    #[error("cannot read the repository's files at {root}: {detail}")]
    Unreadable { root: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A file a run would process, and why.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PlannedFile {
    pub path: String,
    /// added, modified (or, with --full, unchanged but reprocessed), deleted
    pub change: String,
}

/// What a reindex would process.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ReindexPlan {
    pub repository: Repository,
    pub scope: Scope,
    pub priority: PriorityClass,
    pub full: bool,
    /// The files SYNC would record (none for embeddings-only).
    pub files: Vec<PlannedFile>,
    /// For embeddings-only: the snippets whose code would be embedded.
    pub snippets: Option<i64>,
}

impl ReindexPlan {
    /// Items a run of this plan has in all: files, or snippets for embeddings-only.
    pub fn items(&self) -> i64 {
        self.snippets.unwrap_or(self.files.len() as i64)
    }
}

/// What `reindex` did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ReindexQueued {
    pub run_id: i64,
    pub repository_id: i64,
    pub scope: Scope,
    pub priority: PriorityClass,
    pub full: bool,
    pub status: &'static str,
    pub items_total: i64,
    pub items_queued: i64,
    /// From the throughput of the last runs that succeeded; none without history.
    pub estimated_seconds: Option<f64>,
    pub message: String,
}

/// Resolves the repository and the scope, checks the paths, and plans the run: nothing is
/// written. A path outside the repository, escaping it with `..`, absent, or of the wrong
/// kind is refused.
pub async fn plan(
    store: &Store,
    config: &Config,
    request: &ReindexRequest,
) -> Result<ReindexPlan, ReindexError> {
    let repository = crate::service::repositories::resolve(store, &request.repository).await?;
    let root = crate::pipeline::stages::source_dir(config, &repository).map_err(|detail| {
        ReindexError::Unreadable {
            root: repository.source.clone(),
            detail,
        }
    })?;
    let scope = resolve_scope(&root, request)?;
    if scope == Scope::EmbeddingsOnly {
        let model = &config.vector_model();
        let snippets = if request.full {
            store.count_snippets(repository.id).await?
        } else {
            store
                .count_code_without_vectors(repository.id, model)
                .await?
        };
        return Ok(ReindexPlan {
            repository,
            scope,
            priority: request.priority,
            full: request.full,
            files: Vec::new(),
            snippets: Some(snippets),
        });
    }
    let known = store.known_files(repository.id).await?;
    let (rules, full, planned_scope) = (config.sync.clone(), request.full, scope.clone());
    let scan_root = root.clone();
    let sync = tokio::task::spawn_blocking(move || {
        plan_sync(
            &scan_root,
            &known,
            &rules,
            full,
            &planned_scope,
            &mut |_, _| {},
        )
    })
    .await
    .map_err(|e| ReindexError::Unreadable {
        root: root.display().to_string(),
        detail: e.to_string(),
    })?
    .map_err(|e| ReindexError::Unreadable {
        root: root.display().to_string(),
        detail: e.to_string(),
    })?;
    let files = sync
        .items
        .into_iter()
        .map(|i| PlannedFile {
            path: i.path,
            change: i.change.to_string(),
        })
        .collect();
    Ok(ReindexPlan {
        repository,
        scope,
        priority: request.priority,
        full: request.full,
        files,
        snippets: None,
    })
}

/// Plans the reindex and enqueues its run; returns at once. Audited, refused or done.
pub async fn reindex(
    store: &Store,
    config: &Config,
    request: &ReindexRequest,
) -> Result<(ReindexPlan, ReindexQueued), ReindexError> {
    let outcome = plan_and_enqueue(store, config, request).await;
    let repository_id = match &outcome {
        Ok((plan, _)) => Some(plan.repository.id),
        Err(_) => store
            .find_repository(&request.repository)
            .await
            .ok()
            .flatten()
            .map(|r| r.id),
    };
    let entry = NewAuditEntry {
        actor: &request.origin,
        action: "reindex",
        repository_id,
        run_id: outcome.as_ref().ok().map(|(_, q)| q.run_id),
        parameters: serde_json::json!({
            "repository": request.repository,
            "scope": request.scope,
            "paths": request.paths,
            "recursive": request.recursive,
            "priority": request.priority,
            "full": request.full,
        }),
        outcome: match &outcome {
            Ok((_, q)) => Ok(Some(format!(
                "run {} {}, {} {}",
                q.run_id,
                q.status,
                q.items_total,
                if q.items_total == 1 { "item" } else { "items" }
            ))),
            Err(e) => Err(e.to_string()),
        },
    };
    if let Err(e) = store.audit(&entry).await {
        tracing::warn!(error = %e, "could not write the audit entry of a reindex");
    }
    outcome
}

async fn plan_and_enqueue(
    store: &Store,
    config: &Config,
    request: &ReindexRequest,
) -> Result<(ReindexPlan, ReindexQueued), ReindexError> {
    let plan = plan(store, config, request).await?;
    let enqueued = store
        .enqueue_run(&NewRun {
            repository_id: plan.repository.id,
            trigger: Trigger::User,
            origin: request.origin.clone(),
            priority: request.priority,
            scope: plan.scope.clone(),
            full: request.full,
            max_attempts: [config.worker.max_attempts; 5],
            settings: Some(config.run_settings()),
        })
        .await?;
    let run_id = enqueued.run_id();
    let items = plan.items();
    let per_item = if plan.scope == Scope::EmbeddingsOnly {
        store.seconds_per_embedding().await?
    } else {
        store.seconds_per_item().await?
    };
    let estimated_seconds = per_item.map(|per| (per * items.max(1) as f64 * 10.0).round() / 10.0);
    let queued = ReindexQueued {
        run_id,
        repository_id: plan.repository.id,
        scope: plan.scope.clone(),
        priority: plan.priority,
        full: plan.full,
        status: match enqueued {
            Enqueued::Created { .. } => "queued",
            Enqueued::AlreadyPending { .. } => "already_pending",
        },
        items_total: items,
        items_queued: items,
        estimated_seconds,
        message: format!(
            "follow it with `trawl runs watch {run_id}`; `trawl runs show {run_id}` shows it, \
             `trawl runs cancel {run_id}` stops it"
        ),
    };
    Ok((plan, queued))
}

/// What a finished run did, for `--wait`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ReindexResult {
    pub run_id: i64,
    pub status: RunStatus,
    pub error: Option<String>,
    pub seconds: Option<f64>,
    pub items_completed: i64,
    pub items_failed: i64,
    pub failures: Vec<ItemFailure>,
    pub files_processed: i64,
    pub snippets_extracted: i64,
    pub embeddings_generated: i64,
    pub summaries_written: i64,
}

/// Sums up a finished run from its result and items.
pub async fn result_of(store: &Store, run: &Run) -> Result<ReindexResult, StoreError> {
    let stages = RunResult::of(&run.result);
    let (completed, failed) = if *run.scope == Scope::EmbeddingsOnly {
        // Its items are the snippets it embeds (as queued), not files: it records none.
        let embedded = stages.code_embeddings.as_ref().map_or(0, |x| x.embedded);
        (embedded, 0)
    } else {
        store.item_counts(run.id).await?
    };
    let failures = store.failed_items(run.id).await?;
    Ok(ReindexResult {
        run_id: run.id,
        status: run.status,
        error: run.error.clone(),
        seconds: match (run.started_at, run.finished_at) {
            (Some(s), Some(f)) => Some((f - s).num_milliseconds() as f64 / 1000.0),
            _ => None,
        },
        items_completed: completed,
        items_failed: failed,
        failures,
        files_processed: stages.extract.as_ref().map_or(0, |x| x.files),
        snippets_extracted: stages.extract.as_ref().map_or(0, |x| x.snippets),
        embeddings_generated: stages.code_embeddings.as_ref().map_or(0, |x| x.embedded),
        summaries_written: stages.enrich.as_ref().map_or(0, |x| x.summaries),
    })
}

/// The scope `request` asks for, its paths checked against the repository at `root`.
fn resolve_scope(root: &Path, request: &ReindexRequest) -> Result<Scope, ReindexError> {
    if request.recursive && request.scope != ScopeKind::Directory {
        return Err(ReindexError::RecursiveWithoutDirectory);
    }
    let (name, expected) = match request.scope {
        ScopeKind::Project | ScopeKind::EmbeddingsOnly => {
            if !request.paths.is_empty() {
                return Err(ReindexError::PathsNotTaken {
                    scope: if request.scope == ScopeKind::Project {
                        "project"
                    } else {
                        "embeddings-only"
                    },
                    what: "every file of the repository",
                });
            }
            return Ok(if request.scope == ScopeKind::Project {
                Scope::Project
            } else {
                Scope::EmbeddingsOnly
            });
        }
        ScopeKind::Directory => ("directory", "directory"),
        ScopeKind::Files => ("files", "file"),
    };
    if request.paths.is_empty() {
        return Err(ReindexError::NoPaths { scope: name });
    }
    let mut paths = Vec::new();
    for p in &request.paths {
        let rel = inside(root, p)?;
        let on_disk = root.join(&rel);
        let ok = if expected == "file" {
            on_disk.is_file()
        } else {
            on_disk.is_dir()
        };
        if !ok {
            return Err(ReindexError::WrongKind {
                path: p.clone(),
                expected,
                scope: name,
            });
        }
        if !paths.contains(&rel) {
            paths.push(rel);
        }
    }
    Ok(match request.scope {
        ScopeKind::Directory => Scope::Directory {
            paths,
            recursive: request.recursive,
        },
        _ => Scope::Files { paths },
    })
}

/// `path` as a '/'-separated path relative to `root` ("." for the root itself), if it
/// names something that exists inside the repository. Symbolic links are resolved, so a
/// link out of the repository is outside too.
fn inside(root: &Path, path: &str) -> Result<String, ReindexError> {
    let shown_root = root.display().to_string();
    let outside = || ReindexError::Outside {
        path: path.to_string(),
        root: shown_root.clone(),
    };
    let given = Path::new(path);
    // `..` is taken lexically (`src/../lib` is `lib`); one that climbs above the root is
    // outside. What is then named is checked again below, symbolic links resolved.
    let joined = if given.is_absolute() {
        given.to_path_buf()
    } else {
        root.join(crate::sources::lexically_normal(given).ok_or_else(outside)?)
    };
    let canonical_root = std::fs::canonicalize(root).map_err(|e| ReindexError::Unreadable {
        root: shown_root.clone(),
        detail: e.to_string(),
    })?;
    let canonical = match std::fs::canonicalize(&joined) {
        Ok(c) => c,
        // An absolute path elsewhere is outside, whether it exists or not.
        Err(_) if given.is_absolute() && !joined.starts_with(&canonical_root) => {
            return Err(outside());
        }
        Err(_) => {
            return Err(ReindexError::NoSuchPath {
                path: path.to_string(),
                root: shown_root,
            });
        }
    };
    let rel = canonical
        .strip_prefix(&canonical_root)
        .map_err(|_| outside())?;
    if rel.components().any(|c| c.as_os_str() == ".git") {
        return Err(outside());
    }
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Ok(if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(scope: ScopeKind, paths: &[&str], recursive: bool) -> ReindexRequest {
        ReindexRequest {
            repository: "1".into(),
            scope,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            recursive,
            priority: PriorityClass::Normal,
            full: false,
            origin: "cli".into(),
        }
    }

    #[test]
    fn paths_must_exist_inside_the_repository_and_be_of_the_scope_s_kind() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("repo");
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        std::fs::write(root.join("src/a.py"), "x = 1\n").unwrap();
        std::fs::write(outer.path().join("secret.py"), "x = 2\n").unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret.py"), root.join("link.py")).unwrap();

        let files = resolve_scope(&root, &request(ScopeKind::Files, &["src/a.py"], false));
        assert_eq!(
            files.unwrap(),
            Scope::Files {
                paths: vec!["src/a.py".into()]
            }
        );
        let abs = root.join("src/a.py").display().to_string();
        let files = resolve_scope(&root, &request(ScopeKind::Files, &[&abs], false));
        assert_eq!(
            files.unwrap(),
            Scope::Files {
                paths: vec!["src/a.py".into()]
            }
        );
        let dir = resolve_scope(&root, &request(ScopeKind::Directory, &["src"], true));
        assert_eq!(
            dir.unwrap(),
            Scope::Directory {
                paths: vec!["src".into()],
                recursive: true
            }
        );

        let refused = |scope, paths: &[&str], recursive| {
            resolve_scope(&root, &request(scope, paths, recursive))
                .unwrap_err()
                .to_string()
        };
        assert!(
            refused(ScopeKind::Files, &["../secret.py"], false).contains("outside the repository")
        );
        assert!(refused(ScopeKind::Files, &["src/../../secret.py"], false).contains("outside"));
        // A `..` that stays inside is harmless.
        let files = resolve_scope(
            &root,
            &request(ScopeKind::Files, &["lib/../src/./a.py"], false),
        );
        assert_eq!(
            files.unwrap(),
            Scope::Files {
                paths: vec!["src/a.py".into()]
            }
        );
        let elsewhere = outer.path().join("secret.py").display().to_string();
        assert!(refused(ScopeKind::Files, &[&elsewhere], false).contains("outside"));
        assert!(refused(ScopeKind::Files, &["/nonexistent/x.py"], false).contains("outside"));
        assert!(
            refused(ScopeKind::Files, &["link.py"], false).contains("outside"),
            "a link out"
        );
        assert!(refused(ScopeKind::Files, &["src/missing.py"], false).contains("does not exist"));
        assert!(refused(ScopeKind::Files, &["src"], false).contains("is not a file"));
        assert!(refused(ScopeKind::Directory, &["src/a.py"], false).contains("is not a directory"));
        assert!(refused(ScopeKind::Files, &[], false).contains("needs at least one path"));
        assert!(refused(ScopeKind::Project, &["src"], false).contains("takes no paths"));
        assert!(
            refused(ScopeKind::Files, &["src/a.py"], true)
                .contains("recursive applies to the directory scope")
        );
    }
}
