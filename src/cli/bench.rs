use std::io::IsTerminal as _;

use anyhow::Context as _;

use crate::bench::queue;
use crate::config::Config;

/// Measure trawl on this machine: the stage queue alone, or indexing a real corpus.
///
/// Benchmarks run against the configured database (the embedded cluster by default) in a
/// scratch database of their own, which they drop afterwards; nothing indexed is touched.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    Queue(QueueArgs),
}

/// The stage queue with no-op stages: tasks worked per second with 1 and with 4 worker
/// processes, and enqueue→start latency p50/p99 on an idle queue.
///
/// Example: trawl bench queue --runs 2000 --processes 1,4
#[derive(Debug, clap::Args)]
struct QueueArgs {
    /// Runs enqueued as a backlog per pass (five stage tasks each).
    #[arg(long, default_value_t = 2000)]
    runs: usize,
    /// Worker process counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    processes: Vec<usize>,
    /// Stage jobs each worker process runs at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Runs enqueued one at a time on an idle queue to measure latency.
    #[arg(long, default_value_t = 200)]
    latency_runs: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    match args.command {
        BenchCommand::Queue(a) => run_queue(a, config).await,
    }
}

async fn run_queue(args: QueueArgs, config: &Config) -> anyhow::Result<i32> {
    if args.runs == 0 || args.processes.iter().any(|&p| p == 0) || args.concurrency == 0 {
        anyhow::bail!("--runs, --processes and --concurrency must be at least 1");
    }
    let exe = std::env::current_exe().context("locating the trawl binary")?;
    let opts = queue::QueueOptions {
        runs: args.runs,
        processes: args.processes,
        concurrency: args.concurrency,
        latency_runs: args.latency_runs.max(1),
    };
    let chatty = std::io::stderr().is_terminal() || !args.json;
    let passes = queue::run(config, &exe, &opts, |msg| {
        if chatty {
            eprintln!("bench queue: {msg}");
        }
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&passes)?);
        return Ok(0);
    }
    println!(
        "{:>9} {:>6} {:>7} {:>8} {:>9} {:>12} {:>12}",
        "processes", "slots", "tasks", "seconds", "tasks/s", "start p50 ms", "start p99 ms"
    );
    for p in &passes {
        println!(
            "{:>9} {:>6} {:>7} {:>8.2} {:>9.0} {:>12.2} {:>12.2}",
            p.processes,
            p.concurrency,
            p.tasks,
            p.seconds,
            p.tasks_per_sec,
            p.enqueue_to_start.p50_ms,
            p.enqueue_to_start.p99_ms
        );
    }
    Ok(0)
}
