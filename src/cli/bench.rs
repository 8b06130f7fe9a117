use std::io::IsTerminal as _;

use anyhow::Context as _;

use crate::bench::{api, index, queue, watch};
use crate::config::Config;

/// Measure trawl on this machine: the stage queue alone, indexing a real corpus, or the
/// HTTP API's search under concurrent clients.
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
    Index(IndexArgs),
    Api(ApiArgs),
    Watch(WatchArgs),
}

/// Save → searchable under `trawl watch`: latency p50 / p99 of a one-file save until the
/// new function is found by keyword and by semantic search, and of a deletion until the
/// file is no longer found.
///
/// The corpus is copied and indexed into a scratch database first (removed afterwards);
/// then a watch and --workers stage workers run in this process, as `trawl watch` runs
/// them, and the benchmark saves into the largest Python files one at a time (an editor's
/// atomic save: a temporary file renamed over the original) and searches every 10 ms.
///
/// Example:
///
///   trawl bench watch --corpus /usr/lib/python3.11 --saves 50
#[derive(Debug, clap::Args)]
struct WatchArgs {
    /// The directory to index and save into (with Python files, e.g. a Python standard
    /// library).
    #[arg(long, value_name = "PATH")]
    corpus: std::path::PathBuf,
    /// Saves measured.
    #[arg(long, default_value_t = 30)]
    saves: usize,
    /// Deletions measured.
    #[arg(long, default_value_t = 10)]
    deletes: usize,
    /// Stage workers in this process (default: worker.concurrency).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Pause after each probe, in ms (a person does not save continuously).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pause_ms: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// The HTTP API's search under concurrent clients: requests per second and latency p50 /
/// p99 per search mode.
///
/// The corpus is indexed into a scratch database first (removed afterwards); the API is
/// then served on a loopback port in this process, with a token, and --clients clients
/// search back to back for --seconds in each mode.
///
/// Example:
///
///   trawl bench api --corpus /usr/lib/python3.11/asyncio --clients 50
#[derive(Debug, clap::Args)]
struct ApiArgs {
    /// The directory to index and search.
    #[arg(long, value_name = "PATH")]
    corpus: std::path::PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Seconds each mode is measured.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Search modes to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "keyword,hybrid"
    )]
    modes: Vec<crate::search::Mode>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Index a corpus with the five stages in this process and report files/s per stage,
/// snippets, embeddings/s, peak RSS, the time of an incremental run after one edited file,
/// and keyword / semantic / hybrid query latency.
///
/// The corpus is copied first (it is never modified) and indexed into a scratch database
/// and index directory, both removed afterwards. With --python, the sentence-transformers
/// baseline (PyTorch, CPU) embeds the same texts as trawl's local embedder, side by side.
///
/// Example:
///
///   trawl bench index --corpus /usr/lib/python3.11 --python ~/venv/bin/python
#[derive(Debug, clap::Args)]
struct IndexArgs {
    /// The directory to index (e.g. a Python standard library).
    #[arg(long, value_name = "PATH")]
    corpus: std::path::PathBuf,
    /// Queries per search mode.
    #[arg(long, default_value_t = 100)]
    queries: usize,
    /// Texts embedded side by side with PyTorch.
    #[arg(long, default_value_t = 512)]
    embed_sample: usize,
    /// A Python with torch and sentence-transformers installed, for the PyTorch baseline.
    #[arg(long, value_name = "PYTHON")]
    python: Option<std::path::PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// The stage queue with no-op stages: tasks worked per second with 1 and with 4 worker
/// processes, and enqueue→start latency p50/p99 on an idle queue.
///
/// Example:
///
///   trawl bench queue --runs 2000 --processes 1,4
#[derive(Debug, clap::Args)]
struct QueueArgs {
    /// Runs enqueued as a backlog per pass (five stage tasks each).
    #[arg(long, default_value_t = 2000)]
    runs: usize,
    /// Worker process counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    processes: Vec<usize>,
    /// Stage jobs each worker process runs at once. No-op stages end at once, so more
    /// slots mean bigger claims and completion batches: the queue's own ceiling.
    #[arg(long, default_value_t = 32)]
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
        BenchCommand::Index(a) => run_index(a, config).await,
        BenchCommand::Api(a) => run_api(a, config).await,
        BenchCommand::Watch(a) => run_watch(a, config).await,
    }
}

async fn run_watch(args: WatchArgs, config: &Config) -> anyhow::Result<i32> {
    let workers = args.workers.unwrap_or(config.worker.concurrency).max(1);
    let config = &crate::pipeline::worker::sized_for(config, workers, 4);
    let opts = watch::WatchBenchOptions {
        corpus: std::path::absolute(&args.corpus)
            .with_context(|| format!("--corpus {}", args.corpus.display()))?,
        saves: args.saves.max(1),
        deletes: args.deletes,
        workers,
        pause: std::time::Duration::from_millis(args.pause_ms),
    };
    let r = watch::run(config, &opts, |msg| eprintln!("bench watch: {msg}")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    println!("corpus              {}", r.corpus);
    println!(
        "indexed             {} files, {} lines, {} snippets in {:.1} s; watched by {}",
        r.files, r.lines, r.snippets, r.initial_index_seconds, r.backend
    );
    for (what, l) in [
        ("save → keyword", r.save_to_keyword),
        ("save → semantic", r.save_to_semantic),
        ("save → searchable", r.save_to_searchable),
        ("delete → gone", r.delete_to_gone),
    ] {
        println!(
            "{what:<19} p50 {:>6.0} ms  p99 {:>6.0} ms  max {:>6.0} ms  ({} samples)",
            l.p50_ms, l.p99_ms, l.max_ms, l.samples
        );
    }
    println!("runs enqueued       {}", r.runs);
    Ok(0)
}

async fn run_index(args: IndexArgs, config: &Config) -> anyhow::Result<i32> {
    let opts = index::IndexOptions {
        corpus: std::path::absolute(&args.corpus)
            .with_context(|| format!("--corpus {}", args.corpus.display()))?,
        queries: args.queries.max(1),
        embed_sample: args.embed_sample.max(1),
        python: args.python,
    };
    let r = index::run(config, &opts, |msg| eprintln!("bench index: {msg}")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    println!("corpus     {}", r.corpus);
    println!(
        "indexed    {} files, {} snippets, {} code vectors in {:.1} s (peak RSS {})",
        r.files,
        r.snippets,
        r.code_vectors,
        r.total_seconds,
        r.peak_rss_mib
            .map(|m| format!("{m:.0} MiB"))
            .unwrap_or_else(|| "unknown".into())
    );
    println!(
        "{:<16} {:>9} {:>10} {:>9}",
        "stage", "seconds", "files/s", "items"
    );
    for s in &r.stages {
        println!(
            "{:<16} {:>9.2} {:>10.0} {:>9}",
            s.stage, s.seconds, s.files_per_sec, s.items
        );
    }
    println!(
        "embeddings {:.1}/s in CODE_EMBEDDINGS",
        r.embeddings_per_sec
    );
    let sbs = &r.side_by_side;
    match sbs.pytorch_per_sec {
        Some(py) => println!(
            "same {} texts: trawl {:.1}/s, PyTorch sentence-transformers {:.1}/s (ratio {:.2})",
            sbs.texts,
            sbs.trawl_per_sec,
            py,
            sbs.trawl_per_sec / py
        ),
        None => println!(
            "same {} texts: trawl {:.1}/s ({})",
            sbs.texts,
            sbs.trawl_per_sec,
            sbs.pytorch_note.as_deref().unwrap_or("")
        ),
    }
    println!(
        "incremental run after one edited file: {:.2} s",
        r.incremental_seconds
    );
    for (name, l) in [
        ("keyword", &r.queries.keyword),
        ("semantic", &r.queries.semantic),
        ("hybrid", &r.queries.hybrid),
    ] {
        println!(
            "{name:<9} {} queries: p50 {:.1} ms, p99 {:.1} ms",
            l.samples, l.p50_ms, l.p99_ms
        );
    }
    Ok(0)
}

async fn run_api(args: ApiArgs, config: &Config) -> anyhow::Result<i32> {
    if args.clients == 0 || args.seconds <= 0.0 || args.modes.is_empty() {
        return Err(super::usage(
            "--clients, --seconds and --modes must be at least 1",
        ));
    }
    let opts = api::ApiOptions {
        corpus: std::path::absolute(&args.corpus)
            .with_context(|| format!("--corpus {}", args.corpus.display()))?,
        clients: args.clients,
        seconds: args.seconds,
        modes: args.modes,
    };
    let r = api::run(config, &opts, |msg| eprintln!("bench api: {msg}")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    println!(
        "corpus {}: {} files, {} snippets",
        r.corpus, r.files, r.snippets
    );
    println!(
        "{:<9} {:>7} {:>9} {:>7} {:>10} {:>8} {:>8}",
        "mode", "clients", "requests", "errors", "requests/s", "p50 ms", "p99 ms"
    );
    for f in &r.figures {
        println!(
            "{:<9} {:>7} {:>9} {:>7} {:>10.0} {:>8.1} {:>8.1}",
            serde_json::to_value(f.mode)?.as_str().unwrap_or("?"),
            f.clients,
            f.requests,
            f.errors,
            f.requests_per_sec,
            f.latency.p50_ms,
            f.latency.p99_ms
        );
    }
    Ok(0)
}

async fn run_queue(args: QueueArgs, config: &Config) -> anyhow::Result<i32> {
    if args.runs == 0 || args.processes.contains(&0) || args.concurrency == 0 {
        return Err(super::usage(
            "--runs, --processes and --concurrency must be at least 1",
        ));
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
