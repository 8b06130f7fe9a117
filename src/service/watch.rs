//! Watching directory sources: the operating system's file notifications (a polling
//! watcher where they cannot be had), filtered by SYNC's ignore rules, debounced, and
//! turned into files-scope runs at the `high` class. Changes that arrive while such a run
//! waits join it, so a burst (an editor's atomic save, a `git checkout`) is one run.
//!
//! A watched directory that disappears (moved or deleted) is reported and looked for
//! again; when it is back, a project-scope run catches up. A database that cannot be
//! reached keeps the changes pending and tries again. Nothing here blocks on another
//! repository: each has its own watcher.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::domain::scope::Scope;
use crate::domain::{PriorityClass, Trigger};
use crate::sources::directory;
use crate::store::repositories::Repository;
use crate::store::runs::{Joined, NewRun};
use crate::store::{Store, StoreError};

/// The origin of the runs a watcher enqueues, and of those it lets changes join.
pub const ORIGIN: &str = "watch";

/// A burst of more changed paths than this becomes a project-scope run: the same work
/// (the scan's size-and-mtime pre-check reads only what changed), a smaller run row.
const MAX_FILES: usize = 5_000;

/// How often the watched directories are checked for being there, and (watching every
/// directory source) the registered repositories looked at again.
const CHECK_EVERY: Duration = Duration::from_millis(500);
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// A failed enqueue is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How a watch runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Quiet time after the last change of a burst before it is enqueued.
    pub debounce: Duration,
    /// A burst that goes on longer is enqueued after this long; the rest joins it.
    pub max_delay: Duration,
    /// Poll the files at this interval instead of using the OS notifications.
    pub poll: Option<Duration>,
    /// The polling interval when the notifications cannot be had.
    pub fallback_poll: Duration,
    /// These repositories; none means every directory source, including those registered
    /// while watching.
    pub repositories: Option<Vec<i64>>,
    /// Who watches, for the audit log (cli, serve).
    pub actor: String,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(50),
            max_delay: Duration::from_millis(1000),
            poll: None,
            fallback_poll: Duration::from_secs(1),
            repositories: None,
            actor: "cli".into(),
        }
    }
}

/// What a watch reports, one event at a time.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    /// Watching `root`, by OS notifications (`notify`) or by polling (`poll`).
    Watching {
        repository_id: i64,
        root: String,
        backend: &'static str,
    },
    /// Changes were enqueued: a new run, or joined to a queued watch run.
    Queued {
        repository_id: i64,
        run_id: i64,
        joined: bool,
        /// files, or project (a catch-up, a changed ignore file, a very large burst).
        scope: &'static str,
        /// Files of the scope after this change (0 for a project scope).
        files: usize,
    },
    /// The directory is gone (moved or deleted): not watched until it is back.
    Gone { repository_id: i64, root: String },
    /// The directory is back: watched again, a project-scope run catching up.
    Back { repository_id: i64, root: String },
    /// The repository was removed, or is not a directory source: no longer watched.
    Stopped { repository_id: i64, reason: String },
    /// Something went wrong that the watch survives (it says what it does about it).
    Warning {
        repository_id: Option<i64>,
        message: String,
    },
}

/// Why a watch cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "repository {id} ({source_url}) is a git source: watch follows directory sources, \
         the scheduler keeps git sources synced"
    )]
    NotADirectory { id: i64, source_url: String },
    #[error("no directory source to watch: index a directory first (`trawl index DIR`)")]
    Nothing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Notice = (i64, notify::Result<Event>);

struct Watched {
    repo: Repository,
    root: PathBuf,
    /// None while the directory is gone.
    watcher: Option<Box<dyn notify::Watcher + Send + Sync>>,
    /// The watcher watches each directory SYNC walks on its own (the OS notifications),
    /// so a directory that appears is added to it; false for a recursive poller.
    per_directory: bool,
    /// An ignore file changed: every directory is walked for watches again when the burst
    /// is enqueued (once, however many ignore files it changed).
    rewalk: bool,
    /// Changed paths, relative to the root, not enqueued yet.
    pending: BTreeSet<String>,
    /// The next run covers the whole project.
    project: bool,
    first: Option<Instant>,
    last: Option<Instant>,
    retry_at: Option<Instant>,
    failing: bool,
}

impl Watched {
    /// `repo`, not watched yet, nothing pending.
    fn new(repo: Repository) -> Watched {
        Watched {
            root: PathBuf::from(&repo.source),
            repo,
            watcher: None,
            per_directory: false,
            rewalk: false,
            pending: BTreeSet::new(),
            project: false,
            first: None,
            last: None,
            retry_at: None,
            failing: false,
        }
    }

    fn changed(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When its pending changes are due to be enqueued.
    fn due(&self, options: &WatchOptions) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        let at = (last + options.debounce).min(first + options.max_delay);
        Some(self.retry_at.map_or(at, |r| r.max(at)))
    }
}

/// The repositories a watch starts with: `selectors` resolved (each a directory source),
/// or every directory source.
pub async fn repositories(
    store: &Store,
    selectors: &[String],
) -> Result<Option<Vec<i64>>, anyhow::Error> {
    if selectors.is_empty() {
        let any = store
            .list_repositories()
            .await?
            .iter()
            .any(|r| r.source_kind == "directory");
        if !any {
            return Err(WatchError::Nothing.into());
        }
        return Ok(None);
    }
    let mut ids = Vec::new();
    for s in selectors {
        let r = super::repositories::resolve(store, s).await?;
        if r.source_kind != "directory" {
            return Err(WatchError::NotADirectory {
                id: r.id,
                source_url: r.label(),
            }
            .into());
        }
        if !ids.contains(&r.id) {
            ids.push(r.id);
        }
    }
    Ok(Some(ids))
}

/// Watches until `stop` resolves, reporting through `on`. Fails only when the
/// repositories cannot be listed at the start; later failures are reported and survived.
pub async fn watch(
    store: Store,
    config: Config,
    options: WatchOptions,
    mut on: impl FnMut(WatchEvent) + Send,
    stop: impl Future<Output = ()>,
) -> Result<(), StoreError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Notice>();
    let mut watched: HashMap<i64, Watched> = HashMap::new();
    refresh(&store, &options, &mut watched, &tx, &mut on).await?;
    tokio::pin!(stop);
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refreshed = Instant::now();
    // Whether the last look at the repositories failed: said once per outage.
    let mut listing_failed = false;
    loop {
        let next = watched.values().filter_map(|w| w.due(&options)).min();
        let sleep =
            tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + CHECK_EVERY).into());
        tokio::select! {
            _ = &mut stop => break,
            notice = rx.recv() => {
                let Some((id, event)) = notice else { break };
                if let Some(w) = watched.get_mut(&id) {
                    noted(w, event, &mut on);
                }
                // Take what else has arrived before deciding anything.
                while let Ok((id, event)) = rx.try_recv() {
                    if let Some(w) = watched.get_mut(&id) {
                        noted(w, event, &mut on);
                    }
                }
            }
            _ = check.tick() => {
                for w in watched.values_mut() {
                    look_for_root(w, &options, &tx, &mut on);
                }
                if refreshed.elapsed() >= REFRESH_EVERY {
                    refreshed = Instant::now();
                    match refresh(&store, &options, &mut watched, &tx, &mut on).await {
                        Err(e) if !listing_failed => {
                            listing_failed = true;
                            on(WatchEvent::Warning {
                                repository_id: None,
                                message: format!(
                                    "cannot list the repositories ({e}); watching those known, \
                                     trying again"
                                ),
                            });
                        }
                        Err(_) => {}
                        Ok(()) => listing_failed = false,
                    }
                }
            }
            _ = sleep, if next.is_some() => {}
        }
        let now = Instant::now();
        for w in watched.values_mut() {
            if w.due(&options).is_some_and(|t| t <= now) {
                flush(&store, &config, w, &mut on).await;
            }
        }
    }
    Ok(())
}

/// Starts watching new repositories of the selection and stops those removed.
async fn refresh(
    store: &Store,
    options: &WatchOptions,
    watched: &mut HashMap<i64, Watched>,
    tx: &mpsc::UnboundedSender<Notice>,
    on: &mut impl FnMut(WatchEvent),
) -> Result<(), StoreError> {
    let all = store.list_repositories().await?;
    let wanted: Vec<&Repository> = all
        .iter()
        .filter(|r| r.source_kind == "directory")
        .filter(|r| {
            options
                .repositories
                .as_ref()
                .is_none_or(|ids| ids.contains(&r.id))
        })
        .collect();
    let gone: Vec<i64> = watched
        .keys()
        .filter(|id| !wanted.iter().any(|r| r.id == **id))
        .copied()
        .collect();
    for id in gone {
        watched.remove(&id);
        on(WatchEvent::Stopped {
            repository_id: id,
            reason: "the repository was removed".into(),
        });
    }
    for r in wanted {
        if watched.contains_key(&r.id) {
            continue;
        }
        let mut w = Watched::new(r.clone());
        let entry = crate::store::audit::NewAuditEntry {
            actor: &options.actor,
            action: "watch",
            repository_id: Some(r.id),
            run_id: None,
            parameters: serde_json::json!({ "root": r.source }),
            outcome: Ok(None),
        };
        if let Err(e) = store.audit(&entry).await {
            tracing::warn!(error = %e, "could not write the audit entry of a watch");
        }
        if w.root.is_dir() {
            start(&mut w, options, tx, on);
        } else {
            on(WatchEvent::Gone {
                repository_id: r.id,
                root: r.source.clone(),
            });
        }
        watched.insert(r.id, w);
    }
    Ok(())
}

/// Starts the watcher of `w` and asks for a project-scope run catching up with what
/// changed while nobody watched.
fn start(
    w: &mut Watched,
    options: &WatchOptions,
    tx: &mpsc::UnboundedSender<Notice>,
    on: &mut impl FnMut(WatchEvent),
) {
    match watcher_of(&w.root, w.repo.id, tx, options) {
        Ok((watcher, backend, fallback)) => {
            w.per_directory = backend == "notify";
            w.rewalk = false;
            if let Some(reason) = fallback {
                on(WatchEvent::Warning {
                    repository_id: Some(w.repo.id),
                    message: format!(
                        "no file notifications for {} ({reason}): polling every {} ms",
                        w.root.display(),
                        options.fallback_poll.as_millis()
                    ),
                });
            }
            w.watcher = Some(watcher);
            on(WatchEvent::Watching {
                repository_id: w.repo.id,
                root: w.repo.source.clone(),
                backend,
            });
            w.project = true;
            let now = Instant::now();
            w.changed(now.checked_sub(options.max_delay).unwrap_or(now));
        }
        Err(e) => on(WatchEvent::Warning {
            repository_id: Some(w.repo.id),
            message: format!(
                "cannot watch {}: {e}; looking again in {} ms",
                w.root.display(),
                CHECK_EVERY.as_millis()
            ),
        }),
    }
}

/// A watcher of `root`: the OS notifications of each directory SYNC walks (not of ignored
/// or skipped ones: a `target/` or `node_modules/` of thousands of directories would use
/// up the system's watches for nothing), or a recursive poller when asked for or when they
/// fail, as when the watches run out (the reason comes back).
fn watcher_of(
    root: &Path,
    id: i64,
    tx: &mpsc::UnboundedSender<Notice>,
    options: &WatchOptions,
) -> notify::Result<(
    Box<dyn notify::Watcher + Send + Sync>,
    &'static str,
    Option<String>,
)> {
    let handler = {
        let tx = tx.clone();
        move |event: notify::Result<Event>| {
            let _ = tx.send((id, event));
        }
    };
    let mut fallback = None;
    if options.poll.is_none() {
        match notify::RecommendedWatcher::new(handler.clone(), notify::Config::default()) {
            Ok(w) => {
                let mut w: Box<dyn notify::Watcher + Send + Sync> = Box::new(w);
                match watch_dirs(w.as_mut(), root, "") {
                    Ok(()) => return Ok((w, "notify", None)),
                    Err(e) => fallback = Some(e.to_string()),
                }
            }
            Err(e) => fallback = Some(e.to_string()),
        }
    }
    let interval = options.poll.unwrap_or(options.fallback_poll);
    let mut w = notify::PollWatcher::new(
        handler,
        notify::Config::default().with_poll_interval(interval),
    )?;
    w.watch(root, RecursiveMode::Recursive)?;
    Ok((Box::new(w), "poll", fallback))
}

/// Adds a watch of its own to `watcher` for each directory SYNC walks at `rel` and below
/// (see [`directory::walked_dirs`]); the first failure stops it.
fn watch_dirs(watcher: &mut dyn notify::Watcher, root: &Path, rel: &str) -> notify::Result<()> {
    let mut outcome = Ok(());
    directory::walked_dirs(root, rel, |dir| {
        if outcome.is_ok() {
            outcome = watcher.watch(dir, RecursiveMode::NonRecursive);
        }
    });
    outcome
}

/// Adds watches to `w`'s watcher for the directories SYNC walks at `rel` and below, when
/// it watches directory by directory; a failure is reported (the others stay watched).
fn add_watches(w: &mut Watched, rel: &str, on: &mut impl FnMut(WatchEvent)) {
    if !w.per_directory {
        return;
    }
    let Some(watcher) = w.watcher.as_mut() else {
        return;
    };
    if let Err(e) = watch_dirs(watcher.as_mut(), &w.root, rel) {
        on(WatchEvent::Warning {
            repository_id: Some(w.repo.id),
            message: format!(
                "cannot watch the directory {} of {}: {e}; changes in it are missed until \
                 the watch starts again (raise fs.inotify.max_user_watches, or watch with \
                 --poll-ms)",
                if rel.is_empty() { "." } else { rel },
                w.root.display()
            ),
        });
    }
}

/// A watched directory that went is reported and its watcher dropped; one that came
/// back is watched again.
fn look_for_root(
    w: &mut Watched,
    options: &WatchOptions,
    tx: &mpsc::UnboundedSender<Notice>,
    on: &mut impl FnMut(WatchEvent),
) {
    let there = w.root.is_dir();
    if w.watcher.is_some() && !there {
        w.watcher = None;
        w.pending.clear();
        w.project = false;
        (w.first, w.last) = (None, None);
        on(WatchEvent::Gone {
            repository_id: w.repo.id,
            root: w.repo.source.clone(),
        });
    } else if w.watcher.is_none() && there {
        on(WatchEvent::Back {
            repository_id: w.repo.id,
            root: w.repo.source.clone(),
        });
        start(w, options, tx, on);
    }
}

/// Whether an event can change what SYNC reads: opening or reading a file cannot (SYNC's
/// own reads would otherwise wake the watcher), nor can permissions or access times.
fn matters(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(m)) => *m == MetadataKind::WriteTime,
        _ => true,
    }
}

/// Takes one notification into `w`'s pending changes.
fn noted(w: &mut Watched, event: notify::Result<Event>, on: &mut impl FnMut(WatchEvent)) {
    let event = match event {
        Ok(e) => e,
        Err(e) => {
            // Lost events (a full queue) cannot be told apart: look at everything.
            on(WatchEvent::Warning {
                repository_id: Some(w.repo.id),
                message: format!("file notifications of {}: {e}", w.root.display()),
            });
            w.project = true;
            w.changed(Instant::now());
            return;
        }
    };
    if w.watcher.is_none() {
        return;
    }
    if event.need_rescan() {
        w.project = true;
        w.changed(Instant::now());
        return;
    }
    if !matters(&event.kind) {
        return;
    }
    let mut any = false;
    for path in &event.paths {
        let Some(rel) = path
            .strip_prefix(&w.root)
            .ok()
            .and_then(|p| p.to_str())
            .map(|p| p.replace('\\', "/"))
        else {
            continue;
        };
        if rel.is_empty() || directory::in_skipped_dir(&rel) {
            continue;
        }
        // A changed ignore file changes what every other file is.
        let ignore_file = matches!(rel.rsplit('/').next(), Some(".gitignore" | ".ignore"));
        if ignore_file {
            // It may show directories it hid: walked for watches when the burst goes.
            w.project = true;
            w.rewalk = w.per_directory;
        }
        // A directory that appeared (made, or moved in) is watched with what is in it. Its
        // files made before the watch are the pending directory's, which the run scans.
        let appeared = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
        ) && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        if appeared {
            add_watches(w, &rel, on);
        }
        w.pending.insert(rel);
        any = true;
    }
    if any {
        w.changed(Instant::now());
    }
}

/// Enqueues `w`'s pending changes (or joins them to its queued watch run). A failure keeps
/// them pending for another try.
async fn flush(store: &Store, config: &Config, w: &mut Watched, on: &mut impl FnMut(WatchEvent)) {
    // Before the run is enqueued, so its scan comes after the new watches: a file made in
    // between is the scan's or a watch's.
    if std::mem::take(&mut w.rewalk) {
        add_watches(w, "", on);
    }
    match enqueue(store, config, w).await {
        Ok(event) => {
            if w.failing {
                on(WatchEvent::Warning {
                    repository_id: Some(w.repo.id),
                    message: "the database answers again: changes enqueued".into(),
                });
            }
            w.failing = false;
            w.retry_at = None;
            w.pending.clear();
            w.project = false;
            (w.first, w.last) = (None, None);
            if let Some(e) = event {
                on(e);
            }
        }
        Err(e) => {
            if !w.failing {
                on(WatchEvent::Warning {
                    repository_id: Some(w.repo.id),
                    message: format!(
                        "cannot enqueue the changes of {} ({e}): kept, trying again every {} s",
                        w.root.display(),
                        RETRY_AFTER.as_secs()
                    ),
                });
            }
            w.failing = true;
            w.retry_at = Some(Instant::now() + RETRY_AFTER);
        }
    }
}

async fn enqueue(
    store: &Store,
    config: &Config,
    w: &Watched,
) -> Result<Option<WatchEvent>, StoreError> {
    let scope = if w.project || w.pending.len() > MAX_FILES {
        Scope::Project
    } else {
        let root = w.root.clone();
        let paths: Vec<String> = w.pending.iter().cloned().collect();
        let changed = tokio::task::spawn_blocking(move || directory::changed_files(&root, &paths))
            .await
            .map_err(|e| StoreError::Invalid(format!("the watch's scan task: {e}")))?;
        let mut files = changed.files;
        if !changed.gone.is_empty() {
            // What went: the files the index has at those paths or below them.
            let known = store.known_files(w.repo.id).await?;
            for gone in &changed.gone {
                let below = format!("{gone}/");
                files.extend(
                    known
                        .keys()
                        .filter(|k| *k == gone || k.starts_with(&below))
                        .cloned(),
                );
            }
        }
        files.sort();
        files.dedup();
        if files.is_empty() {
            // Ignored files, or a temporary file come and gone: nothing to index.
            return Ok(None);
        }
        Scope::Files { paths: files }
    };
    let new = NewRun {
        repository_id: w.repo.id,
        trigger: Trigger::User,
        origin: ORIGIN.into(),
        priority: PriorityClass::High,
        scope,
        full: false,
        max_attempts: [config.worker.max_attempts; 5],
        settings: Some(config.run_settings()),
    };
    let done = store.enqueue_or_join(&new).await?;
    let (joined, scope) = match &done {
        Joined::Joined { scope, .. } => (true, scope.clone()),
        Joined::Enqueued(_) => (false, new.scope.clone()),
    };
    Ok(Some(WatchEvent::Queued {
        repository_id: w.repo.id,
        run_id: done.run_id(),
        joined,
        scope: if matches!(scope, Scope::Project) {
            "project"
        } else {
            "files"
        },
        files: match &scope {
            Scope::Files { paths } => paths.len(),
            _ => 0,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_permission_changes_do_not_matter() {
        use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};
        assert!(!matters(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!matters(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!matters(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::Permissions
        ))));
        assert!(!matters(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::Any
        ))));
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Any,
        ] {
            assert!(matters(&kind), "{kind:?}");
        }
    }

    #[test]
    fn a_burst_is_due_after_its_quiet_time_or_its_cap() {
        let options = WatchOptions::default();
        let t0 = Instant::now();
        let mut w = Watched::new(Repository {
            id: 1,
            source_kind: "directory".into(),
            source: "/x".into(),
            git_ref: String::new(),
            name: "x".into(),
            created_at: chrono::Utc::now(),
            last_synced_at: None,
        });
        assert_eq!(w.due(&options), None);
        w.changed(t0);
        assert_eq!(w.due(&options), Some(t0 + options.debounce));
        // Changes every 10 ms: the cap, not the quiet time, decides.
        for i in 1..200 {
            w.changed(t0 + Duration::from_millis(10 * i));
        }
        assert_eq!(w.due(&options), Some(t0 + options.max_delay));
        // A failed enqueue waits for its retry.
        w.retry_at = Some(t0 + Duration::from_secs(5));
        assert_eq!(w.due(&options), Some(t0 + Duration::from_secs(5)));
    }
}
