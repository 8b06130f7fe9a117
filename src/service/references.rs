//! "Who calls this, what does it call, where is it used": the references pipeline's data,
//! resolved to definitions when asked (the same file; a unique definition, imported or not,
//! in the repository; several: ambiguous), for the CLI, HTTP and MCP alike.

use serde::Serialize;

use crate::domain::pipelines::Pipeline;
use crate::extract::references::RefKind;
use crate::service::repositories::{self, RepositoryError};
use crate::store::symbols::{DefRow, RefRow};
use crate::store::{Store, StoreError};

/// At most this many references per answer unless asked for fewer.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// What the references services are asked.
#[derive(Debug, Clone, Default)]
pub struct ReferencesRequest {
    /// A bare name: `parse`, not `Config::parse` (a qualified one is cut to its last part).
    pub symbol: String,
    /// Repository selectors; empty: every repository.
    pub repositories: Vec<String>,
    /// Only references (callers) or definitions (callees) in files under this path prefix.
    pub path: Option<String>,
    /// Only these kinds (call, import, type); empty: all.
    pub kinds: Vec<RefKind>,
    pub limit: Option<u32>,
}

/// `limit`, or the default; out of 1..=[`MAX_LIMIT`] refused.
fn checked_limit(limit: Option<u32>) -> Result<u32, ReferencesError> {
    super::answers_limit(limit, DEFAULT_LIMIT, MAX_LIMIT).map_err(ReferencesError::Limit)
}

#[derive(Debug, thiserror::Error)]
pub enum ReferencesError {
    #[error("give a symbol name")]
    NoSymbol,
    #[error("the symbol {0:?} is not a name (letters, digits, _ and the like; no spaces)")]
    BadSymbol(String),
    #[error("limit {0} is out of range: give 1 to {MAX_LIMIT}")]
    Limit(u32),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a reference was tied to a definition.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Resolution {
    /// Defined in the same file.
    Local { path: String, line: i32 },
    /// The file imports the name, and one file of the repository defines it.
    Imported { path: String, line: i32 },
    /// One file of the repository defines it (no import seen).
    Unique { path: String, line: i32 },
    /// What the name was reached through (`database::open`, `Store::open`) names the
    /// module or type of one of its definitions.
    Qualified { path: String, line: i32 },
    /// Several files define it: which one is meant is not known.
    Ambiguous { candidates: usize },
    /// No definition in the repository (a library's, a builtin).
    Unresolved,
}

/// The module a file is (`src/database.rs` → `database`, `pkg/util/__init__.py` →
/// `util`, `a/mod.rs` → `a`).
fn module_of(path: &str) -> &str {
    let mut parts = path.rsplit('/');
    let file = parts.next().unwrap_or(path);
    let stem = file.split('.').next().unwrap_or(file);
    match stem {
        "mod" | "__init__" | "index" | "lib" => parts.next().unwrap_or(stem),
        _ => stem,
    }
}

/// The last name of a qualifier (`crate::database` → `database`, `self.store` → `store`).
fn last_name(qualifier: &str) -> &str {
    qualifier
        .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

/// Ties a reference in `path` of repository `repo` to one of `defs` (definitions of its
/// name, any repository); `imported`: the file imports the name; `qualifier`: what the
/// name was reached through.
pub fn resolve(
    repo: i64,
    path: &str,
    defs: &[DefRow],
    imported: bool,
    qualifier: Option<&str>,
) -> Resolution {
    use crate::sources::directory::language_of;
    // A Python call means a Python definition: definitions in files of another language
    // are not candidates (when both languages are known).
    let language = language_of(path);
    let mut mine: Vec<&DefRow> = defs
        .iter()
        .filter(|d| d.repository_id == repo)
        .filter(|d| match (language, language_of(&d.path)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        })
        .collect();
    // A qualifier naming a module or type: the definitions of that module or type.
    let q = qualifier.map(last_name).unwrap_or("");
    if !q.is_empty() && !matches!(q, "self" | "Self" | "this" | "super" | "crate" | "cls") {
        let owner = |d: &&&DefRow| {
            module_of(&d.path) == q
                || d.qualified
                    .as_deref()
                    .and_then(|full| full.rsplit_once(['.', ':']))
                    .is_some_and(|(owner, _)| last_name(owner) == q)
        };
        let matching: Vec<&&DefRow> = mine.iter().filter(owner).collect();
        let mut files: Vec<&str> = matching.iter().map(|d| d.path.as_str()).collect();
        files.dedup();
        if files.len() == 1 {
            let (p, line) = (matching[0].path.clone(), matching[0].line);
            return if p == path {
                Resolution::Local { path: p, line }
            } else {
                Resolution::Qualified { path: p, line }
            };
        }
        // A type (capitalised, on a path) none of them belongs to: a library's
        // (`fs::File::open`). A capitalised value (`Running.apply()`) says nothing.
        let on_path = qualifier.is_some_and(|q| q.contains("::"));
        if files.is_empty() && on_path && q.starts_with(char::is_uppercase) {
            return Resolution::Unresolved;
        }
        // A value's method (`repo.label()`): not a free function, when methods of the
        // name exist.
        if !on_path && mine.iter().any(|d| d.qualified.is_some()) {
            mine.retain(|d| d.qualified.is_some());
        }
    }
    if let Some(d) = mine.iter().find(|d| d.path == path) {
        return Resolution::Local {
            path: d.path.clone(),
            line: d.line,
        };
    }
    let mut files: Vec<&str> = mine.iter().map(|d| d.path.as_str()).collect();
    files.dedup();
    match files.len() {
        0 => Resolution::Unresolved,
        1 => {
            let (path, line) = (mine[0].path.clone(), mine[0].line);
            if imported {
                Resolution::Imported { path, line }
            } else {
                Resolution::Unique { path, line }
            }
        }
        n => Resolution::Ambiguous { candidates: n },
    }
}

/// One reference, resolved.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Reference {
    pub repository: String,
    pub repository_id: i64,
    pub path: String,
    pub line: i32,
    pub column: i32,
    /// call, import or type.
    pub kind: String,
    pub name: String,
    /// The definition the reference is in (its bare name and first line).
    pub from: Option<String>,
    pub from_line: Option<i32>,
    /// What the name was reached through (`self`, `os.path`, `Config`), when short.
    pub qualifier: Option<String>,
    pub resolution: Resolution,
}

/// A definition, with its repository's label.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Definition {
    pub repository: String,
    #[serde(flatten)]
    pub def: DefRow,
}

/// Which index version the answer's data reflects, per repository.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Freshness {
    pub repository: String,
    pub repository_id: i64,
    /// The index version the pipeline's data reflects; None: not built yet.
    pub reflects_version: Option<i32>,
    /// The repository's newest index version.
    pub current_version: Option<i32>,
    /// The data is behind the newest version (the pipeline has work queued or failed).
    pub lagging: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ReferencesAnswer {
    pub symbol: String,
    pub definitions: Vec<Definition>,
    pub references: Vec<Reference>,
    /// More references than the limit exist.
    pub truncated: bool,
    pub freshness: Vec<Freshness>,
}

/// The calls inside one definition.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Callees {
    pub definition: Definition,
    pub calls: Vec<Reference>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CalleesAnswer {
    pub function: String,
    pub definitions: Vec<Callees>,
    pub freshness: Vec<Freshness>,
}

/// The repositories asked for: (id, label) each.
async fn scope(store: &Store, selectors: &[String]) -> Result<Vec<(i64, String)>, ReferencesError> {
    if selectors.is_empty() {
        return Ok(store
            .list_repositories()
            .await?
            .into_iter()
            .map(|r| (r.id, r.label()))
            .collect());
    }
    let mut out = Vec::new();
    for s in selectors {
        let r = repositories::resolve(store, s).await?;
        if !out.iter().any(|(id, _)| *id == r.id) {
            out.push((r.id, r.label()));
        }
    }
    Ok(out)
}

/// The bare name of `symbol` (`Config::parse`, `a.b` → `parse`, `b`), checked.
fn bare(symbol: &str) -> Result<String, ReferencesError> {
    let s = symbol.trim();
    if s.is_empty() {
        return Err(ReferencesError::NoSymbol);
    }
    let last = s
        .rsplit(['.', ':', '\\', '/'])
        .find(|p| !p.is_empty())
        .unwrap_or(s)
        .trim_end_matches("()")
        .to_string();
    if last.is_empty()
        || last.len() > 200
        || last.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ReferencesError::BadSymbol(symbol.to_string()));
    }
    Ok(last)
}

fn label_of(repos: &[(i64, String)], id: i64) -> String {
    repos
        .iter()
        .find(|(r, _)| *r == id)
        .map(|(_, l)| l.clone())
        .unwrap_or_default()
}

async fn freshness(
    store: &Store,
    repos: &[(i64, String)],
    ids: &[i64],
) -> Result<Vec<Freshness>, StoreError> {
    let mut out = Vec::new();
    for &id in ids {
        let (reflects, current) = store.pipeline_version(Pipeline::References, id).await?;
        out.push(Freshness {
            repository: label_of(repos, id),
            repository_id: id,
            reflects_version: reflects,
            current_version: current,
            lagging: current.is_some() && reflects < current,
        });
    }
    Ok(out)
}

/// Resolves `rows` (references to names among `defs`).
async fn resolved(
    store: &Store,
    repos: &[(i64, String)],
    rows: Vec<RefRow>,
    defs: &[DefRow],
) -> Result<Vec<Reference>, StoreError> {
    let ids: Vec<i64> = repos.iter().map(|r| r.0).collect();
    let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut importing = Vec::new();
    for name in names {
        for (repo, path) in store.files_importing(&ids, name).await? {
            importing.push((repo, path, name.to_string()));
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let named: Vec<DefRow> = defs.iter().filter(|d| d.name == r.name).cloned().collect();
            let imported = importing.iter().any(|(repo, path, name)| {
                *repo == r.repository_id && *path == r.path && *name == r.name
            });
            Reference {
                repository: label_of(repos, r.repository_id),
                resolution: if r.kind == "import" {
                    // An import is the reference itself; where it points is the question.
                    resolve(r.repository_id, "", &named, true, None)
                } else {
                    resolve(
                        r.repository_id,
                        &r.path,
                        &named,
                        imported,
                        r.qualifier.as_deref(),
                    )
                },
                repository_id: r.repository_id,
                path: r.path,
                line: r.line,
                column: r.col,
                kind: r.kind,
                name: r.name,
                from: r.from_name,
                from_line: r.from_line,
                qualifier: r.qualifier,
            }
        })
        .collect())
}

/// Where `symbol` is used (`trawl refs`), or, with kinds = [call], who calls it
/// (`trawl callers`).
pub async fn references(
    store: &Store,
    req: &ReferencesRequest,
) -> Result<ReferencesAnswer, ReferencesError> {
    let symbol = bare(&req.symbol)?;
    let repos = scope(store, &req.repositories).await?;
    let ids: Vec<i64> = repos.iter().map(|r| r.0).collect();
    let limit = checked_limit(req.limit)?;
    let kinds: Vec<&str> = if req.kinds.is_empty() {
        vec!["call", "import", "type"]
    } else {
        req.kinds.iter().map(|k| k.as_str()).collect()
    };
    let mut rows = store
        .references_to(
            &ids,
            &symbol,
            &kinds,
            req.path.as_deref().unwrap_or(""),
            i64::from(limit) + 1,
        )
        .await?;
    let truncated = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let defs = store.definitions_named(&ids, &[symbol.as_str()]).await?;
    let mut involved: Vec<i64> = rows
        .iter()
        .map(|r| r.repository_id)
        .chain(defs.iter().map(|d| d.repository_id))
        .collect();
    involved.sort_unstable();
    involved.dedup();
    let references = resolved(store, &repos, rows, &defs).await?;
    Ok(ReferencesAnswer {
        definitions: defs
            .into_iter()
            .map(|d| Definition {
                repository: label_of(&repos, d.repository_id),
                def: d,
            })
            .collect(),
        references,
        truncated,
        freshness: freshness(store, &repos, &involved).await?,
        symbol,
    })
}

/// What `function` calls (`trawl callees`): per definition of it (under the path prefix),
/// the calls inside it, resolved.
pub async fn callees(
    store: &Store,
    req: &ReferencesRequest,
) -> Result<CalleesAnswer, ReferencesError> {
    let function = bare(&req.symbol)?;
    let repos = scope(store, &req.repositories).await?;
    let ids: Vec<i64> = repos.iter().map(|r| r.0).collect();
    let limit = checked_limit(req.limit)? as usize;
    let prefix = req.path.as_deref().unwrap_or("");
    let defs: Vec<DefRow> = store
        .definitions_named(&ids, &[function.as_str()])
        .await?
        .into_iter()
        .filter(|d| d.path.starts_with(prefix))
        .collect();
    let mut out = Vec::new();
    for d in defs.into_iter().take(limit) {
        let mut calls = store
            .calls_inside(d.repository_id, &d.path, &d.name, d.line)
            .await?;
        calls.truncate(limit);
        let mut names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let targets = store.definitions_named(&[d.repository_id], &names).await?;
        let calls = resolved(store, &repos, calls, &targets).await?;
        out.push(Callees {
            definition: Definition {
                repository: label_of(&repos, d.repository_id),
                def: d,
            },
            calls,
        });
    }
    let mut involved: Vec<i64> = out.iter().map(|c| c.definition.def.repository_id).collect();
    involved.dedup();
    Ok(CalleesAnswer {
        freshness: freshness(store, &repos, &involved).await?,
        definitions: out,
        function,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(repo: i64, path: &str, line: i32) -> DefRow {
        DefRow {
            repository_id: repo,
            path: path.into(),
            name: "f".into(),
            qualified: None,
            kind: "function".into(),
            line,
            end_line: line + 3,
        }
    }

    #[test]
    fn references_resolve_by_file_import_and_uniqueness() {
        let one = [def(1, "a.rs", 3), def(2, "x.rs", 1)];
        assert_eq!(
            resolve(1, "a.rs", &one, false, None),
            Resolution::Local {
                path: "a.rs".into(),
                line: 3
            }
        );
        assert_eq!(
            resolve(1, "b.rs", &one, true, None),
            Resolution::Imported {
                path: "a.rs".into(),
                line: 3
            }
        );
        assert_eq!(
            resolve(1, "b.rs", &one, false, None),
            Resolution::Unique {
                path: "a.rs".into(),
                line: 3
            }
        );
        // Another repository's definition is not this one's, nor another language's.
        assert_eq!(
            resolve(3, "b.rs", &one, false, None),
            Resolution::Unresolved
        );
        assert_eq!(resolve(1, "b.py", &one, true, None), Resolution::Unresolved);
        let two = [def(1, "a.rs", 3), def(1, "c.rs", 9), def(1, "c.rs", 20)];
        assert_eq!(
            resolve(1, "b.rs", &two, true, None),
            Resolution::Ambiguous { candidates: 2 }
        );
        assert_eq!(
            resolve(1, "c.rs", &two, false, None),
            Resolution::Local {
                path: "c.rs".into(),
                line: 9
            }
        );
    }

    #[test]
    fn a_qualifier_picks_the_module_or_type() {
        let mut store = def(1, "src/store/mod.rs", 61);
        store.qualified = Some("Store::open".into());
        let mut keyword = def(1, "src/search/keyword.rs", 156);
        keyword.qualified = Some("KeywordIndex::open".into());
        let defs = [def(1, "src/database.rs", 53), store, keyword];
        let at = |path: &str, line: i32| Resolution::Qualified {
            path: path.into(),
            line,
        };
        let r = |from: &str, q: &str| resolve(1, from, &defs, false, Some(q));
        assert_eq!(r("src/cli/a.rs", "database"), at("src/database.rs", 53));
        assert_eq!(
            r("src/cli/a.rs", "crate::database"),
            at("src/database.rs", 53)
        );
        // Not the function of the same name in the calling file.
        assert_eq!(r("src/database.rs", "Store"), at("src/store/mod.rs", 61));
        assert_eq!(
            r("src/search/keyword.rs", "KeywordIndex"),
            Resolution::Local {
                path: "src/search/keyword.rs".into(),
                line: 156
            }
        );
        // A type none of them belongs to is a library's.
        assert_eq!(r("src/cli/a.rs", "std::fs::File"), Resolution::Unresolved);
        // An enum variant's or a variable's method: one of the methods.
        assert_eq!(
            r("src/cli/a.rs", "Running"),
            Resolution::Ambiguous { candidates: 2 }
        );
        assert_eq!(
            r("src/cli/a.rs", "index"),
            Resolution::Ambiguous { candidates: 2 }
        );
        let free_and_method = [defs[0].clone(), defs[1].clone()];
        assert_eq!(
            resolve(1, "src/cli/a.rs", &free_and_method, false, Some("repo")),
            Resolution::Unique {
                path: "src/store/mod.rs".into(),
                line: 61
            }
        );
        // A path to a module none of them is: the other rules decide.
        assert_eq!(
            resolve(
                1,
                "src/cli/a.rs",
                &free_and_method,
                false,
                Some("other::module")
            ),
            Resolution::Ambiguous { candidates: 2 }
        );
        assert_eq!(module_of("pkg/util/__init__.py"), "util");
        assert_eq!(module_of("src/a/mod.rs"), "a");
    }

    #[test]
    fn symbols_are_cut_to_their_bare_name() {
        assert_eq!(bare("Config::parse").unwrap(), "parse");
        assert_eq!(bare("os.path.join").unwrap(), "join");
        assert_eq!(bare("run()").unwrap(), "run");
        assert!(matches!(bare("  "), Err(ReferencesError::NoSymbol)));
        assert!(matches!(
            bare("two words"),
            Err(ReferencesError::BadSymbol(_))
        ));
    }
}
