use anyhow::bail;

use crate::config::Config;
use crate::database;
use crate::domain::pipelines::{Pipeline, PipelineStatus};
use crate::service::pipelines as service;
use crate::store::pipelines::{PipelineControlError, PipelineRun, PipelineRunFilter};

/// Inspect and steer the downstream pipelines (references, history).
///
/// When a run's base ingestion succeeds it records events (snippets.ingested,
/// files.deleted) with its new index version; every worker routes them to the pipelines
/// that are on, as pipeline runs on each pipeline's own queue. A pipeline run is retried
/// with the stages' backoff and fails for good after worker.max_attempts; it never touches
/// the base index or another pipeline. Switch one off everywhere with
/// `[pipelines.<name>] enabled = false` (TRAWL_PIPELINE_REFERENCES, TRAWL_PIPELINE_HISTORY),
/// or for one repository here.
///
/// Examples:
///
///   trawl pipelines list
///
///   trawl pipelines list --pipeline history --status failed
///
///   trawl pipelines retry 12
///
///   trawl pipelines disable history --repo ~/src/app
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Each pipeline's runs by status and how far behind the newest index versions it is,
    /// then its newest runs.
    List {
        /// Only this pipeline (its counts and its runs): references or history.
        #[arg(long, value_parser = Pipeline::parse_or_list)]
        pipeline: Option<Pipeline>,
        /// Only this repository's counts and runs: its id, or the path or URL it was
        /// indexed from.
        #[arg(long)]
        repo: Option<String>,
        /// Only the runs in this status: pending, running, success, failed or cancelled.
        #[arg(long, value_parser = status_name)]
        status: Option<PipelineStatus>,
        /// How many pipeline runs to list, newest first.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10000))]
        limit: i64,
        /// Print the overview (each pipeline's counts and lag, the runs) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One pipeline run: its files, attempts, error and report.
    Show {
        /// The pipeline run's id (`trawl pipelines list` lists them).
        id: i64,
        /// Print the pipeline run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a failed or cancelled pipeline run again, with a fresh budget of attempts.
    Retry {
        /// The pipeline run's id (`trawl pipelines list` lists them).
        id: i64,
    },
    /// Cancel a pending or running pipeline run (one at work finishes its attempt, and its
    /// result is dropped).
    Cancel {
        /// The pipeline run's id (`trawl pipelines list` lists them).
        id: i64,
    },
    /// Switch a pipeline on for one repository, whatever the configuration says.
    Enable {
        /// The pipeline: references or history.
        #[arg(value_parser = Pipeline::parse_or_list)]
        pipeline: Pipeline,
        /// The repository: its id, or the path or URL it was indexed from.
        #[arg(long)]
        repo: String,
    },
    /// Switch a pipeline off for one repository: its events are no longer routed to it.
    Disable {
        /// The pipeline: references or history.
        #[arg(value_parser = Pipeline::parse_or_list)]
        pipeline: Pipeline,
        /// The repository: its id, or the path or URL it was indexed from.
        #[arg(long)]
        repo: String,
    },
    /// Let the configuration's flag decide again for one repository.
    Reset {
        /// The pipeline: references or history.
        #[arg(value_parser = Pipeline::parse_or_list)]
        pipeline: Pipeline,
        /// The repository: its id, or the path or URL it was indexed from.
        #[arg(long)]
        repo: String,
    },
}

fn status_name(s: &str) -> Result<PipelineStatus, String> {
    PipelineStatus::parse(s.trim()).ok_or_else(|| {
        format!("{s:?} is not a status: pending, running, success, failed or cancelled")
    })
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    match args.action {
        Action::List {
            pipeline,
            repo,
            status,
            limit,
            json,
        } => {
            let repository_id = super::repository_id(&store, repo).await?;
            let overview = service::overview(
                &store,
                &PipelineRunFilter {
                    pipeline,
                    repository_id,
                    status,
                    limit,
                },
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&overview)?);
                return Ok(0);
            }
            println!(
                "{:<11} {:>8} {:>8} {:>8} {:>7} {:>10}  LAG",
                "PIPELINE", "PENDING", "RUNNING", "SUCCESS", "FAILED", "CANCELLED"
            );
            for p in &overview.pipelines {
                let behind = if p.lagging_repositories == 0 {
                    "up to date".to_string()
                } else {
                    format!(
                        "{} by up to {}",
                        super::count(p.lagging_repositories, "repository", "repositories"),
                        super::count(p.max_versions_behind, "version", "versions")
                    )
                };
                println!(
                    "{:<11} {:>8} {:>8} {:>8} {:>7} {:>10}  {behind}",
                    p.pipeline, p.pending, p.running, p.success, p.failed, p.cancelled
                );
            }
            if overview.runs.is_empty() {
                println!("\nno pipeline runs yet: they follow each successful index run");
                return Ok(0);
            }
            println!(
                "\n{:>6}  {:<11} {:>5} {:>8}  {:<10} {:>7}  ERROR",
                "ID", "PIPELINE", "REPO", "VERSION", "STATUS", "ATTEMPT"
            );
            for r in &overview.runs {
                println!(
                    "{:>6}  {:<11} {:>5} {:>8}  {:<10} {:>7}  {}",
                    r.id,
                    r.pipeline,
                    r.repository_id,
                    r.index_version,
                    r.status,
                    format!("{}/{}", r.attempt, r.max_attempts),
                    super::for_terminal(r.error_message.as_deref().unwrap_or(""))
                );
            }
        }
        Action::Show { id, json } => {
            let Some(r) = store.pipeline_run(id).await? else {
                bail!("no pipeline run {id} (`trawl pipelines list` lists them)");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_run(&r);
            }
        }
        Action::Retry { id } | Action::Cancel { id } => {
            let retry = matches!(args.action, Action::Retry { .. });
            match service::control(&store, "cli", retry, id).await {
                Ok(r) => println!("{} run {} is {}", r.pipeline, r.id, r.status),
                Err(e @ PipelineControlError::Unknown(_)) => {
                    bail!("{e} (`trawl pipelines list` lists them)")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Action::Enable { pipeline, repo } => switch(&store, pipeline, &repo, Some(true)).await?,
        Action::Disable { pipeline, repo } => switch(&store, pipeline, &repo, Some(false)).await?,
        Action::Reset { pipeline, repo } => switch(&store, pipeline, &repo, None).await?,
    }
    Ok(0)
}

async fn switch(
    store: &crate::store::Store,
    pipeline: Pipeline,
    repo: &str,
    on: Option<bool>,
) -> anyhow::Result<()> {
    let repository = crate::service::repositories::resolve(store, repo)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (`trawl status` lists them)"))?;
    service::switch(store, "cli", repository.id, pipeline, on).await?;
    let now = match on {
        Some(true) => "on",
        Some(false) => "off",
        None => "as the configuration says",
    };
    println!("{pipeline} is {now} for {}", repository.label());
    Ok(())
}

fn print_run(r: &PipelineRun) {
    println!("pipeline run {} ({})", r.id, r.pipeline);
    println!("  repository     {}", r.repository_id);
    println!("  index version  {}", r.index_version);
    println!("  from           {}", r.key);
    println!("  status         {}", r.status);
    println!("  attempt        {} of {}", r.attempt, r.max_attempts);
    let files = match &r.paths {
        None => "every file".to_string(),
        Some(p) => super::count(p.len() as i64, "file", "files"),
    };
    println!("  files          {files}, {} deleted", r.deleted.len());
    println!("  created        {}", r.created_at);
    if let Some(t) = r.started_at {
        println!("  started        {t}");
    }
    if let Some(t) = r.finished_at {
        println!("  finished       {t}");
    }
    if let Some(t) = r.retry_at {
        println!("  next attempt   {t}");
    }
    if let Some(e) = &r.error_message {
        println!("  error          {}", super::for_terminal(e));
    }
    if let Some(v) = &r.result {
        println!("  report         {v}");
    }
}
