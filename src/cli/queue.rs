use crate::config::Config;
use crate::database;

/// Queue statistics: tasks by stage × status × priority class, the age of the oldest queued
/// task, and what each live worker is running.
///
/// Example:
///
///   trawl queue stats --json
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Tasks by stage × status × priority class, the oldest queued task's age, and what
    /// each live worker is running.
    Stats {
        /// Print the statistics as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    let Action::Stats { json } = args.action;
    let stats = crate::service::tasks::stats(&store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(0);
    }
    println!(
        "{:<16} {:<10} {:<11} {:>6}",
        "STAGE", "STATUS", "CLASS", "COUNT"
    );
    for c in &stats.cells {
        println!(
            "{:<16} {:<10} {:<11} {:>6}",
            c.stage, c.stage_status, c.priority_class, c.count
        );
    }
    match stats.oldest_queued_age_secs {
        Some(age) => println!("oldest queued task: {age:.1} s"),
        None => println!("no task is queued"),
    }
    if stats.workers.is_empty() {
        println!("no live worker");
    }
    for w in &stats.workers {
        println!(
            "worker {} running {} (last seen {})",
            w.worker,
            w.running,
            w.last_seen.to_rfc3339()
        );
    }
    Ok(0)
}
