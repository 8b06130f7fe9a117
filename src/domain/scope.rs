//! What a run indexes: the whole repository, some directories, some files, or only the
//! embeddings of the snippets it has. Stored as JSON in `runs.scope` and each stage job's
//! payload.

use serde::{Deserialize, Serialize};

/// A run's scope. Paths are relative to the repository root, '/'-separated, and checked to
/// exist inside it when the run is asked for (see `service::reindex`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scope {
    /// Every file of the repository.
    #[default]
    Project,
    /// The files under these directories: their direct children, or with `recursive`
    /// everything below them.
    Directory {
        paths: Vec<String>,
        #[serde(default)]
        recursive: bool,
    },
    /// These files.
    Files { paths: Vec<String> },
    /// The files of these languages (as trawl names them: rust, python, …), anywhere in
    /// the repository: a reingest restricted by language.
    Languages { languages: Vec<String> },
    /// No file is synced or parsed: the existing snippets are embedded again.
    EmbeddingsOnly,
}

impl Scope {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a scope serialises")
    }

    /// The scope's kind as the CLI and API name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Project => "project",
            Scope::Directory { .. } => "directory",
            Scope::Files { .. } => "files",
            Scope::Languages { .. } => "languages",
            Scope::EmbeddingsOnly => "embeddings-only",
        }
    }

    /// Whether SYNC looks at files at all (it does not for embeddings-only).
    pub fn syncs_files(&self) -> bool {
        !matches!(self, Scope::EmbeddingsOnly)
    }

    /// Whether the file `path` (relative, '/'-separated; of `language`, when trawl knows
    /// it) is in scope for SYNC.
    pub fn contains(&self, path: &str, language: Option<&str>) -> bool {
        match self {
            Scope::Project => true,
            Scope::Languages { languages } => {
                language.is_some_and(|l| languages.iter().any(|x| x == l))
            }
            Scope::EmbeddingsOnly => false,
            Scope::Files { paths } => paths.iter().any(|p| p == path),
            Scope::Directory { paths, recursive } => paths.iter().any(|dir| {
                let rest = if dir.is_empty() || dir == "." {
                    Some(path)
                } else {
                    path.strip_prefix(dir.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                };
                rest.is_some_and(|r| *recursive || !r.contains('/'))
            }),
        }
    }
}

impl Scope {
    /// The scope of a run asked for `self`, joined by a request for `other` while it waits
    /// (a watch run): files make the union of both lists, sorted; anything else covers the
    /// whole project.
    pub fn joined(&self, other: &Scope) -> Scope {
        match (self, other) {
            (Scope::Files { paths: a }, Scope::Files { paths: b }) => {
                let mut paths: Vec<String> = a.iter().chain(b).cloned().collect();
                paths.sort();
                paths.dedup();
                Scope::Files { paths }
            }
            _ => Scope::Project,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_joined_while_it_waits_covers_both() {
        let files = |p: &[&str]| Scope::Files {
            paths: p.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            files(&["b.py", "a.py"]).joined(&files(&["a.py", "c.py"])),
            files(&["a.py", "b.py", "c.py"])
        );
        assert_eq!(files(&["a.py"]).joined(&Scope::Project), Scope::Project);
        assert_eq!(Scope::Project.joined(&files(&["a.py"])), Scope::Project);
    }

    #[test]
    fn scopes_contain_what_they_name() {
        assert!(Scope::Project.contains("a/b.py", None));
        assert!(!Scope::EmbeddingsOnly.contains("a/b.py", Some("python")));
        let langs = Scope::Languages {
            languages: vec!["rust".into()],
        };
        assert!(
            langs.contains("a/b.rs", Some("rust")) && !langs.contains("a/b.py", Some("python"))
        );
        assert!(!langs.contains("README", None));
        let files = Scope::Files {
            paths: vec!["a/b.py".into()],
        };
        assert!(
            files.contains("a/b.py", None)
                && !files.contains("a/b.pyc", None)
                && !files.contains("b.py", None)
        );
        let flat = Scope::Directory {
            paths: vec!["src".into()],
            recursive: false,
        };
        assert!(flat.contains("src/x.rs", None));
        assert!(!flat.contains("src/deep/x.rs", None), "not recursive");
        assert!(
            !flat.contains("srcx/y.rs", None),
            "a sibling with the same prefix"
        );
        let deep = Scope::Directory {
            paths: vec!["src".into()],
            recursive: true,
        };
        assert!(deep.contains("src/deep/x.rs", None) && !deep.contains("lib/x.rs", None));
        let root = Scope::Directory {
            paths: vec![".".into()],
            recursive: false,
        };
        assert!(root.contains("top.py", None) && !root.contains("d/x.py", None));
    }

    #[test]
    fn scopes_round_trip_and_unknown_ones_are_refused() {
        let s = Scope::Directory {
            paths: vec!["src".into()],
            recursive: true,
        };
        assert_eq!(
            s.to_json(),
            serde_json::json!({"kind": "directory", "paths": ["src"], "recursive": true})
        );
        let read = |v: serde_json::Value| serde_json::from_value::<Scope>(v);
        assert_eq!(read(s.to_json()).unwrap(), s);
        assert_eq!(
            read(serde_json::json!({"kind": "project"})).unwrap(),
            Scope::Project
        );
        // An unreadable scope is an error, never the whole project.
        assert!(read(serde_json::json!({"kind": "everything"})).is_err());
        assert!(
            read(serde_json::json!({"kind": "files"})).is_err(),
            "files without paths"
        );
        assert_eq!(
            Scope::EmbeddingsOnly.to_json(),
            serde_json::json!({"kind": "embeddings_only"})
        );
    }
}
