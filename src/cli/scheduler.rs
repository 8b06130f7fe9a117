use crate::config::Config;
use crate::database;
use crate::service::scheduler;

/// Enqueue background syncs of every repository whose last sync is older than the interval.
///
/// Runs until stopped (SIGINT or SIGTERM). A repository with a queued or running run is
/// left alone, so the scheduler never doubles a pending run, and since it reads what is due
/// from the database it can be restarted (or run twice) without enqueueing twice. Background
/// runs have the low priorities (SYNC 50 … ENRICH 10): user work overtakes them.
///
/// Examples:
///
///   trawl scheduler --every 30m
///
///   trawl scheduler --once --json
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sync a repository when its last sync is older than this (90s, 15m, 1h, 2d; default:
    /// scheduler.every_secs).
    #[arg(long, value_parser = scheduler::parse_duration)]
    every: Option<std::time::Duration>,
    /// Look once, enqueue what is due, and exit.
    #[arg(long)]
    once: bool,
    /// Print what each look enqueued as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    let every = args
        .every
        .unwrap_or(std::time::Duration::from_secs(config.scheduler.every_secs));
    let period = scheduler::tick_period(every);
    let stop = super::worker::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let tick = scheduler::tick(
            &store,
            every,
            config.worker.max_attempts,
            &config.run_settings(),
        )
        .await?;
        if args.json {
            println!("{}", serde_json::to_string(&tick)?);
        } else if !tick.enqueued.is_empty() || args.once {
            for (repo, run) in &tick.enqueued {
                println!("repository {repo}: background run {run} queued");
            }
            if tick.due == 0 {
                println!(
                    "nothing due: every repository was synced within the interval or has a run not ended"
                );
            } else if tick.enqueued.is_empty() {
                println!(
                    "nothing enqueued: {} due, but a run of each was already pending",
                    super::count(tick.due as i64, "repository", "repositories")
                );
            }
        }
        if args.once {
            return Ok(0);
        }
        tokio::select! {
            _ = &mut stop => return Ok(0),
            _ = tokio::time::sleep(period) => {}
        }
    }
}
