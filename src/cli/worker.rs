use crate::config::Config;
use crate::database;
use crate::domain::Stage;
use crate::pipeline::{PipelineContext, worker};

/// Run stage jobs until stopped (SIGINT or SIGTERM).
///
/// On a signal the worker stops taking jobs, lets running stages finish for up to
/// worker.shutdown_timeout_secs, releases what still runs back to the queue, and exits 0
/// (1 when the worker stopped abnormally).
/// Run as many workers, on as many machines, as you like against one database.
///
/// Examples:
///
///   trawl worker --concurrency 4
///
///   trawl worker --stages code_embeddings,enrich   # a node that only embeds
///
///   trawl worker --queues references,history       # a node for the pipelines only
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stage jobs to run at once, 1 or more (default: worker.concurrency).
    #[arg(long, value_parser = at_least_one)]
    concurrency: Option<usize>,
    /// Take only these stages, comma-separated: sync, extract, bm25_index,
    /// code_embeddings, enrich (default: worker.stages; empty means every stage). A run's
    /// stages wait in the queue until a worker that takes them is free.
    #[arg(long, value_delimiter = ',', value_parser = stage_name)]
    stages: Vec<Stage>,
    /// Take jobs from these queues only, comma-separated: stages (the five stages and
    /// batch jobs), references, history (default: worker.queues; empty means every queue).
    /// A heavy pipeline can so scale on nodes of its own.
    #[arg(long, value_delimiter = ',', value_parser = queue_name)]
    queues: Vec<String>,
    /// Run every stage as a no-op that succeeds at once (for `trawl bench queue` only).
    #[arg(long, hide = true)]
    noop_stages: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let concurrency = args.concurrency.unwrap_or(config.worker.concurrency).max(1);
    let mut config = crate::pipeline::worker::sized_for(config, concurrency, 0);
    if !args.stages.is_empty() {
        config.worker.stages = args.stages;
    }
    if !args.queues.is_empty() {
        config.worker.queues = args.queues;
    }
    let config = &config;
    let store = database::open(config).await?;
    let ctx = if args.noop_stages {
        PipelineContext::without_stage_work(store, config.clone())
    } else {
        PipelineContext::new(store, config.clone())
    };
    worker::run(ctx, concurrency, shutdown_signal()).await?;
    Ok(0)
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed at the call, not
/// at the first poll, so a signal that comes early is not lost.
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    }
}

/// A stage by its name.
fn stage_name(s: &str) -> Result<Stage, String> {
    Stage::parse(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        format!("{s:?} is not a stage; the stages are {}", names.join(", "))
    })
}

/// A queue by its name.
fn queue_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s == "stages" || crate::domain::pipelines::Pipeline::parse(s).is_some() {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a queue; the queues are stages, {}",
            crate::domain::pipelines::Pipeline::names()
        ))
    }
}

/// A count of slots: a whole number of at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("a worker needs at least 1 slot".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}
