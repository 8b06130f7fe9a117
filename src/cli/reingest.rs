use crate::config::Config;
use crate::database;
use crate::domain::PriorityClass;
use crate::service::reingest::{self, ReingestError, ReingestRequest};

/// Reingest repositories: a full run of each (every file reprocessed), optionally only the
/// files of some languages, enqueued in batches. Prints what it selected and enqueued.
///
/// Runs go in at the low priority class by default, with background work, so that user
/// work is not held up; --priority normal or high to hurry them.
///
/// Examples:
///
///   trawl reingest --all --lang python --dry-run
///
///   trawl reingest --repo 3 --repo ~/src/app --batch-size 10
///
///   trawl reingest --all --pipelines references   # the references pipeline alone
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A repository (its id, or the path or URL it was indexed from); repeatable.
    #[arg(long = "repo", value_name = "REPO")]
    repositories: Vec<String>,
    /// Every registered repository.
    #[arg(long)]
    all: bool,
    /// Only files of this language (rust, python, go, javascript, typescript, tsx, java, c,
    /// cpp, csharp, ruby, php, bash, lua); repeatable.
    #[arg(long = "lang", value_name = "LANG")]
    languages: Vec<String>,
    /// Say what would be enqueued; enqueue nothing.
    #[arg(long)]
    dry_run: bool,
    /// Runs enqueued per transaction.
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// The priority class of the runs' stages in the queue: low (with background work),
    /// normal or high to hurry them.
    #[arg(long, value_enum, default_value = "low")]
    priority: PriorityClass,
    /// Run only these downstream pipelines again over every file, comma-separated:
    /// references, history. No base run is made; `trawl pipelines list` shows their runs.
    #[arg(long, value_delimiter = ',', value_parser = crate::domain::pipelines::Pipeline::parse_or_list)]
    pipelines: Vec<crate::domain::pipelines::Pipeline>,
    /// Print what was (or, dry, would be) enqueued as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    let outcome = reingest::reingest(
        &store,
        config,
        &ReingestRequest {
            repositories: args.repositories,
            all: args.all,
            languages: args.languages,
            dry_run: args.dry_run,
            batch_size: args.batch_size,
            priority: args.priority,
            origin: "cli".into(),
            pipelines: args.pipelines,
        },
    )
    .await
    .map_err(|e| match e {
        ReingestError::NothingSelected => {
            super::usage("say which repositories: --repo R (repeatable) or --all")
        }
        ReingestError::AllAndSome => super::usage("--all and --repo exclude each other: give one"),
        ReingestError::BatchSize => super::usage("--batch-size must be at least 1"),
        ReingestError::PipelinesWithLanguages => {
            super::usage("--pipelines runs over every file: --lang does not apply to it")
        }
        e @ ReingestError::UnknownLanguage { .. } => super::usage(format!("--lang: {e}")),
        e @ ReingestError::Repository(_) => anyhow::anyhow!("{e} (`trawl status` lists them)"),
        e => e.into(),
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(0);
    }
    let langs = if outcome.filters.languages.is_empty() {
        "all languages".to_string()
    } else {
        outcome.filters.languages.join(", ")
    };
    if !outcome.pipeline_run_ids.is_empty() {
        println!(
            "{} enqueued for {}: {:?} (`trawl pipelines list` shows them)",
            super::count(
                outcome.pipeline_run_ids.len() as i64,
                "pipeline run",
                "pipeline runs"
            ),
            super::count(
                outcome.repository_ids.len() as i64,
                "repository",
                "repositories"
            ),
            outcome.pipeline_run_ids
        );
        return Ok(0);
    }
    if outcome.dry_run && !outcome.filters.pipelines.is_empty() {
        println!(
            "dry run: {} would get a run of {} each, over every file (no base run): {:?}",
            super::count(
                outcome.repository_ids.len() as i64,
                "repository",
                "repositories"
            ),
            outcome.filters.pipelines.join(", "),
            outcome.repository_ids
        );
    } else if outcome.dry_run {
        println!(
            "dry run: {} ({langs}) would get a full run, in {}: {:?}",
            super::count(
                outcome.repository_ids.len() as i64,
                "repository",
                "repositories"
            ),
            super::count(outcome.batches as i64, "batch", "batches"),
            outcome.repository_ids
        );
    } else {
        println!(
            "{} enqueued for {} ({langs}) in {}; {} already pending; runs {:?}",
            super::count(outcome.enqueued as i64, "run", "runs"),
            super::count(
                outcome.repository_ids.len() as i64,
                "repository",
                "repositories"
            ),
            super::count(outcome.batches as i64, "batch", "batches"),
            outcome.already_pending,
            outcome.run_ids
        );
    }
    Ok(0)
}
