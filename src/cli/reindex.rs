use anyhow::Context as _;

use crate::config::Config;
use crate::database;
use crate::domain::PriorityClass;
use crate::pipeline::PipelineContext;
use crate::service::index;
use crate::service::reindex::{self, ReindexError, ReindexRequest, ScopeKind};

/// Reindex a registered repository now: the whole project, some directories or files, or
/// only the embeddings of its snippets. Incremental by default (only files whose content
/// changed); --full reprocesses everything in scope.
///
/// Priority classes (stage priorities SYNC..ENRICH): high 140..100 overtakes queued user
/// work; normal 90..50 is user work; low 50..10 runs with background syncs. Stage order
/// within a run is the same for all.
///
/// Without --wait it returns at once with the run id, the items queued and an estimate
/// from the throughput of recent runs; with --wait it follows the run to its end and
/// prints what it did (exit 0 when it succeeded, 1 when not). --dry-run lists what would
/// be processed and enqueues nothing.
///
/// Examples:
///
///   trawl reindex ~/src/app --scope files --path src/main.rs --wait
///
///   trawl reindex 3 --scope directory --path src --recursive --priority high
///
///   trawl reindex 3 --scope embeddings-only --full
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository: its id, or the path or URL it was indexed from.
    repository: String,
    /// What to reindex.
    #[arg(long, value_enum, default_value = "project")]
    scope: ScopeKind,
    /// A file (--scope files) or directory (--scope directory) inside the repository,
    /// relative to its root; repeat for more.
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,
    /// With --scope directory: the files below the directories too, not only in them.
    #[arg(long)]
    recursive: bool,
    /// The priority class of the run's stages in the queue: high overtakes queued user
    /// work, low waits with background work.
    #[arg(long, value_enum, default_value = "normal")]
    priority: PriorityClass,
    /// Reprocess every file (or, for embeddings-only, every snippet) in scope, changed or
    /// not.
    #[arg(long)]
    full: bool,
    /// Follow the run until it ends and print its result.
    #[arg(long)]
    wait: bool,
    /// List what would be processed; enqueue nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON (with --wait: a progress snapshot per line, the first at once, then one
    /// per stage change and per batch, the terminal one, and last the run's result).
    #[arg(long)]
    json: bool,
}

/// A refusal in the CLI's words: its flags, and where repositories are listed.
fn in_flags(e: ReindexError) -> anyhow::Error {
    match e {
        ReindexError::PathsNotTaken { scope, what } => super::usage(format!(
            "--scope {scope} takes no --path (it covers {what})"
        )),
        ReindexError::NoPaths { scope } => super::usage(format!(
            "--scope {scope} needs at least one --path inside the repository"
        )),
        ReindexError::RecursiveWithoutDirectory => {
            super::usage("--recursive applies to --scope directory only")
        }
        ReindexError::WrongKind {
            path,
            expected,
            scope,
        } => anyhow::anyhow!("{path} is not a {expected} (--scope {scope} takes {expected} paths)"),
        e @ ReindexError::Repository(_) => anyhow::anyhow!("{e} (`trawl status` lists them)"),
        e => e.into(),
    }
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    // `--wait` may work the run in this process: the pool must serve a worker's slots.
    let config = &crate::pipeline::worker::sized_for(config, config.worker.concurrency, 2);
    let store = database::open(config).await?;
    let request = ReindexRequest {
        repository: args.repository.clone(),
        scope: args.scope,
        paths: args.paths.clone(),
        recursive: args.recursive,
        priority: args.priority,
        full: args.full,
        origin: "cli".into(),
    };
    if args.dry_run {
        let plan = reindex::plan(&store, config, &request)
            .await
            .map_err(in_flags)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            println!(
                "dry run: repository {} ({}), scope {}{}: nothing enqueued",
                plan.repository.id,
                plan.repository.source,
                plan.scope.kind(),
                if plan.full { ", full" } else { "" }
            );
            match plan.snippets {
                Some(n) => println!(
                    "{} would be embedded again",
                    super::count(n, "snippet", "snippets")
                ),
                None if plan.files.is_empty() => {
                    println!("no file changed in scope: the run would find it up to date")
                }
                None => {
                    for f in &plan.files {
                        println!("{:<9} {}", f.change, f.path);
                    }
                    println!(
                        "{} would be processed",
                        super::count(plan.files.len() as i64, "file", "files")
                    );
                }
            }
        }
        return Ok(0);
    }
    let (_, queued) = reindex::reindex(&store, config, &request)
        .await
        .map_err(in_flags)?;
    let run_id = queued.run_id;
    if args.json && !args.wait {
        println!("{}", serde_json::to_string(&queued)?);
        return Ok(0);
    }
    if !args.json {
        let estimate = queued
            .estimated_seconds
            .map(|s| format!(", about {s:.0} s"))
            .unwrap_or_default();
        println!(
            "run {run_id} {}: scope {}, {}{estimate}",
            queued.status,
            queued.scope.kind(),
            super::count(queued.items_total, "item", "items")
        );
        if !args.wait {
            println!("{}", queued.message);
            return Ok(0);
        }
    }
    let ctx = PipelineContext::new(store.clone(), config.clone());
    let json = args.json;
    let run = index::wait_for_run(ctx, run_id, |s| super::index::print_progress(s, json))
        .await
        .with_context(|| format!("waiting for run {run_id}"))?;
    let result = reindex::result_of(&store, &run).await?;
    if json {
        println!("{}", serde_json::json!({ "result": result }));
    } else {
        println!(
            "run {} {} in {:.1} s: {} completed, {} failed; {} processed, {} extracted, {} generated, {} written",
            result.run_id,
            result.status,
            result.seconds.unwrap_or(0.0),
            super::count(result.items_completed, "item", "items"),
            result.items_failed,
            super::count(result.files_processed, "file", "files"),
            super::count(result.snippets_extracted, "snippet", "snippets"),
            super::count(result.embeddings_generated, "embedding", "embeddings"),
            super::count(result.summaries_written, "summary", "summaries")
        );
        if let Some(e) = &result.error {
            println!("error: {e}");
        }
        for f in &result.failures {
            println!("failed: {}: {}", f.path, f.error.as_deref().unwrap_or("?"));
        }
    }
    Ok(if run.status == "succeeded" { 0 } else { 1 })
}
