use anyhow::Context as _;

use crate::config::Config;
use crate::database;
use crate::pipeline::{PipelineContext, worker};
use crate::service::watch::{self, WatchEvent, WatchOptions};

/// Keep directory sources' index fresh as their files change: a saved file is searchable
/// (keyword and semantic) within about a second.
///
/// Follows the files through the operating system's notifications (inotify on Linux,
/// FSEvents on macOS; polling with --poll-ms, or where notifications cannot be had),
/// honours the ignore rules SYNC does (.gitignore, .ignore, skipped directories such as
/// .git, node_modules and target: with notifications only the directories SYNC reads are
/// watched, so ignored trees use up no inotify watches), and waits for a burst to go quiet
/// (--debounce-ms) so an editor's atomic save or a `git checkout` of many files is one
/// run. Each burst becomes a files-scope run at the high class (origin "watch"); changes
/// that arrive while such a run is still queued join it. A changed .gitignore, lost
/// notifications, and every start make a project-scope run (incremental: unchanged files
/// are not read).
///
/// A watched directory that is moved or deleted is reported and looked for again (the
/// others are watched on); when it is back a run catches up. When the database cannot be
/// reached the changes are kept and enqueued once it answers. With no repository named,
/// every directory source is watched, including those indexed later. Runs its own stage
/// workers (--workers; 0 leaves the runs to another process's workers). SIGTERM or SIGINT
/// stops it; exit 0.
///
/// Examples:
///
///   trawl watch
///
///   trawl watch ~/src/app --json
///
///   trawl watch 3 4 --workers 0
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repositories to watch: id, or the directory they were indexed from (default: every
    /// directory source).
    #[arg(value_name = "REPOSITORY")]
    repositories: Vec<String>,
    /// Stage jobs this process runs at once; 0 runs no worker (default: worker.concurrency).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Quiet time after the last change of a burst before it is enqueued.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    debounce_ms: u64,
    /// Poll the files at this interval instead of using the operating system's
    /// notifications (network file systems, some container mounts).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(50..))]
    poll_ms: Option<u64>,
    /// Print each event as one JSON object per line (event: watching, queued, gone, back,
    /// stopped, warning).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let signalled = super::worker::shutdown_signal();
    let workers = args.workers.unwrap_or(config.worker.concurrency);
    let config = &worker::sized_for(config, workers, 2);
    let store = database::open(config).await?;
    let repositories = watch::repositories(&store, &args.repositories).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let worker = (workers > 0).then(|| {
        let ctx = PipelineContext::new(store.clone(), config.clone());
        tokio::spawn(worker::run(ctx, workers, stopped()))
    });
    let options = WatchOptions {
        debounce: std::time::Duration::from_millis(args.debounce_ms),
        poll: args.poll_ms.map(std::time::Duration::from_millis),
        repositories,
        actor: "cli".into(),
        ..WatchOptions::default()
    };
    let json = args.json;
    let watching = watch::watch(
        store.clone(),
        config.clone(),
        options,
        move |e| print_event(&e, json),
        signalled,
    );
    let watched = watching.await;
    let _ = stop_tx.send(true);
    let mut code = 0;
    if let Some(worker) = worker
        && let Err(e) = worker.await.context("the worker task")?
    {
        tracing::error!(error = %e, "the worker stopped abnormally");
        code = 1;
    }
    watched?;
    Ok(code)
}

/// One event, as a line a person reads or as JSON.
pub fn print_event(e: &WatchEvent, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(e).expect("a watch event serialises")
        );
        return;
    }
    let line = match e {
        WatchEvent::Watching {
            repository_id,
            root,
            backend,
        } => format!(
            "watching repository {repository_id} ({}){}",
            super::for_terminal(root),
            if *backend == "poll" {
                " by polling"
            } else {
                ""
            }
        ),
        WatchEvent::Queued {
            repository_id,
            run_id,
            joined,
            scope,
            files,
        } => {
            let what = if *scope == "project" {
                "the whole project".to_string()
            } else {
                super::count(*files as i64, "file", "files")
            };
            if *joined {
                format!("repository {repository_id}: changes joined queued run {run_id} ({what})")
            } else {
                format!("repository {repository_id}: run {run_id} queued ({what})")
            }
        }
        WatchEvent::Gone {
            repository_id,
            root,
        } => format!(
            "repository {repository_id}: {} is gone (moved or deleted); watching for it to \
             come back",
            super::for_terminal(root)
        ),
        WatchEvent::Back {
            repository_id,
            root,
        } => format!(
            "repository {repository_id}: {} is back; catching up",
            super::for_terminal(root)
        ),
        WatchEvent::Stopped {
            repository_id,
            reason,
        } => format!("repository {repository_id}: no longer watched ({reason})"),
        WatchEvent::Warning {
            repository_id: Some(id),
            message,
        } => format!("warning: repository {id}: {}", super::for_terminal(message)),
        WatchEvent::Warning {
            repository_id: None,
            message,
        } => format!("warning: {}", super::for_terminal(message)),
    };
    println!("{line}");
}
