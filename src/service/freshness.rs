//! What a repository's index reflects, against its source now: for a git source the
//! commit indexed and how far the tracked ref has moved on (one `ls-remote`, when asked
//! for: it goes over the network), for a directory the files changed on disk since (the
//! size-and-mtime pre-check SYNC makes, nothing read), and when the index was built.

use serde::Serialize;

use crate::config::Config;
use crate::sources::{directory, git};
use crate::store::repositories::Repository;
use crate::store::{Store, StoreError};

/// How far behind its source an index is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Freshness {
    /// When the index it reflects was built (its current version).
    pub built_at: Option<chrono::DateTime<chrono::Utc>>,
    /// A git source: the commit the last successful sync checked out.
    pub indexed_commit: Option<String>,
    /// A git source: the tracked ref's commit on the remote now (only when the remote was
    /// asked).
    pub remote_commit: Option<String>,
    /// A git source: commits the tracked ref has that the index has not (0 when the
    /// remote is at the indexed commit; counted after fetching the new commits beside the
    /// working copy); none when not asked, or when the remote or the count failed.
    pub commits_ahead: Option<i64>,
    /// A directory source: files on disk since the index, by size and mtime.
    pub changed_on_disk: Option<DiskChanges>,
    /// Why a check could not be made (a directory gone, a remote unreachable).
    pub note: Option<String>,
}

/// Files a directory source's scan finds different from what the index recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DiskChanges {
    pub added: i64,
    /// Size or mtime differs (their content may yet be the same).
    pub changed: i64,
    pub deleted: i64,
}

impl DiskChanges {
    pub fn total(&self) -> i64 {
        self.added + self.changed + self.deleted
    }
}

/// How long a process reuses a repository's freshness: the dashboard asks every second,
/// and a directory's check is a scan of it.
const REUSE_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// By database (its configured URL), repository and whether the remote was asked.
type Checked = std::collections::HashMap<(String, i64, bool), (std::time::Instant, Freshness)>;

fn checked() -> &'static std::sync::Mutex<Checked> {
    static CHECKED: std::sync::OnceLock<std::sync::Mutex<Checked>> = std::sync::OnceLock::new();
    CHECKED.get_or_init(Default::default)
}

/// The freshness of `repository`'s index, built at `built_at` (its current version's);
/// with `remote`, a git source's remote is asked where its ref is. A check made in this
/// process in the last few seconds is reused.
pub async fn of(
    store: &Store,
    config: &Config,
    repository: &Repository,
    built_at: Option<chrono::DateTime<chrono::Utc>>,
    remote: bool,
) -> Result<Freshness, StoreError> {
    let key = (config.database.url.clone(), repository.id, remote);
    if let Some((at, f)) = checked().lock().expect("freshness cache").get(&key)
        && at.elapsed() < REUSE_FOR
    {
        return Ok(Freshness {
            built_at,
            ..f.clone()
        });
    }
    let f = Freshness {
        built_at,
        ..check(store, config, repository, remote).await?
    };
    let mut all = checked().lock().expect("freshness cache");
    all.retain(|_, (at, _)| at.elapsed() < REUSE_FOR);
    all.insert(key, (std::time::Instant::now(), f.clone()));
    Ok(f)
}

async fn check(
    store: &Store,
    config: &Config,
    repository: &Repository,
    remote: bool,
) -> Result<Freshness, StoreError> {
    let mut f = Freshness::default();
    match repository.source_kind.as_str() {
        "directory" => {
            let root = std::path::PathBuf::from(&repository.source);
            let known = store.known_files(repository.id).await?;
            let deny = config.sync.deny.clone();
            let checked = tokio::task::spawn_blocking(move || {
                let deny = directory::DenyList::new(&deny)?;
                let scanned = directory::scan(&root, &deny)
                    .map_err(|e| format!("cannot read {}: {e}", root.display()))?;
                let mut c = DiskChanges::default();
                let mut seen = std::collections::HashSet::with_capacity(scanned.len());
                for s in &scanned {
                    seen.insert(s.path.as_str());
                    match known.get(&s.path) {
                        None => c.added += 1,
                        Some(k) if !k.same_stat(s.size, s.mtime_ns) => c.changed += 1,
                        Some(_) => {}
                    }
                }
                c.deleted = known.keys().filter(|k| !seen.contains(k.as_str())).count() as i64;
                Ok::<_, String>(c)
            })
            .await
            .map_err(|e| StoreError::Invalid(format!("the freshness scan: {e}")))?;
            match checked {
                Ok(c) => f.changed_on_disk = Some(c),
                Err(e) => f.note = Some(e),
            }
        }
        "git" => {
            f.indexed_commit = store.last_synced_commit(repository.id).await?;
            if remote {
                let options = git::GitOptions::from_config(config);
                let (url, git_ref) = (repository.source.clone(), repository.git_ref.clone());
                let indexed = f.indexed_commit.clone();
                let history = config.home.join("history").join(repository.id.to_string());
                let copy = git::working_copy_dir(config, repository.id);
                let (head, ahead) = tokio::task::spawn_blocking(move || {
                    let head = git::remote_head(&options, &url, &git_ref)?;
                    let ahead = match &indexed {
                        Some(i) if *i == head => Some(0),
                        Some(i) => [&history, &copy]
                            .iter()
                            .find_map(|d| git::commits_between(&options, d, &url, i, &head))
                            .or_else(|| {
                                // The new commits into the working copy, beside its
                                // checkout: the next sync needs them anyway.
                                git::fetch_for_count(&options, &copy, &url, &git_ref).ok()?;
                                git::commits_between(&options, &copy, &url, i, &head)
                            }),
                        None => None,
                    };
                    Ok::<_, git::GitError>((head, ahead))
                })
                .await
                .map_err(|e| StoreError::Invalid(format!("the remote check: {e}")))?
                .map_or_else(|e| (Err(e.to_string()), None), |(h, a)| (Ok(h), a));
                match head {
                    Ok(h) => {
                        f.remote_commit = Some(h);
                        f.commits_ahead = ahead;
                    }
                    Err(e) => f.note = Some(e),
                }
            }
        }
        _ => {}
    }
    Ok(f)
}
