use crate::config::Config;
use crate::database;
use crate::domain::PriorityClass;
use crate::pipeline::batch::{self, BatchPayload, RepositoryItem};

/// Batch reindex jobs (job type reindex.batch): many repositories to reindex, or snippets
/// to embed again, as one job that worker processes run beside the stage jobs.
///
/// A repository already at a newer index version than when the batch was submitted is
/// skipped; one item's failure is recorded and the batch goes on; an invalid payload fails
/// at once. Attempts: 3, each at most 30 minutes, 10 s apart.
///
/// Examples:
///
///   trawl batch submit --repo 1 --repo 2
///
///   trawl batch submit --snippet 10 --snippet 11
///
///   trawl batch list
///
///   trawl batch show JOB --json
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Submit a batch: repositories (--repo, repeatable) or snippets (--snippet).
    Submit {
        /// A repository (its id, or the path or URL it was indexed from).
        #[arg(long = "repo", value_name = "REPO", conflicts_with = "snippets")]
        repositories: Vec<String>,
        /// A snippet id whose code vector is computed again.
        #[arg(long = "snippet", value_name = "ID")]
        snippets: Vec<i64>,
        /// The priority class of the runs the batch enqueues.
        #[arg(long, value_enum, default_value = "low")]
        priority: PriorityClass,
        /// Print the job id and the payload submitted as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The newest batch jobs: id, status, attempts, items recorded (and failed), when due
    /// or done.
    List {
        /// How many, newest first.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10000))]
        limit: i64,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// A batch job's status and what happened to each item.
    Show {
        /// The batch job's id (`trawl batch list` lists them; `batch submit` prints it).
        job: String,
        /// Print the job's status and items as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the payload's JSON Schema.
    Schema,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    if let Action::Schema = args.action {
        println!("{}", batch::PAYLOAD_SCHEMA);
        return Ok(0);
    }
    let store = database::open(config).await?;
    match args.action {
        Action::Submit {
            repositories,
            snippets,
            priority,
            json,
        } => {
            if repositories.is_empty() && snippets.is_empty() {
                return Err(super::usage(
                    "give --repo REPO (repeatable) or --snippet ID (repeatable)",
                ));
            }
            let mut items = Vec::new();
            for sel in &repositories {
                let repo = crate::service::repositories::resolve(&store, sel)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e} (`trawl status` lists them)"))?;
                let version = store
                    .current_index_version(repo.id)
                    .await?
                    .map_or(0, |v| v.version);
                items.push(RepositoryItem {
                    repository_id: repo.id,
                    version,
                });
            }
            let payload = BatchPayload {
                repositories: items,
                snippets,
                priority,
            };
            let job = batch::submit(&store, &payload).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "job_id": job, "payload": payload })
                );
            } else {
                println!("batch job {job} queued; follow it with `trawl batch show {job}`");
            }
        }
        Action::List { limit, json } => {
            let jobs = store.batch_jobs(batch::QUEUE, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(0);
            }
            if jobs.is_empty() {
                println!("no batch job yet: submit one with `trawl batch submit`");
                return Ok(0);
            }
            println!(
                "{:<26}  {:<8} {:>8} {:>7} {:>7}  WHEN",
                "JOB", "STATUS", "ATTEMPTS", "ITEMS", "FAILED"
            );
            for j in &jobs {
                let when = match j.done_at {
                    Some(t) => format!("done {}", t.format("%Y-%m-%d %H:%M:%S")),
                    None => format!("due {}", j.run_at.format("%Y-%m-%d %H:%M:%S")),
                };
                println!(
                    "{:<26}  {:<8} {:>8} {:>7} {:>7}  {when}",
                    j.job_id,
                    j.status,
                    format!("{}/{}", j.attempts, j.max_attempts),
                    j.items,
                    j.items_failed
                );
            }
        }
        Action::Show { job, json } => {
            let Some(status) = batch::status(&store, &job).await? else {
                anyhow::bail!("no batch job {job}: `trawl batch list` lists them");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!(
                    "batch job {}: {} (attempts {}/{})",
                    status.job_id, status.status, status.attempts, status.max_attempts
                );
                if let Some(r) = &status.last_result {
                    println!("result: {r}");
                }
                for i in &status.items {
                    println!(
                        "  {:<20} {:<8} {}",
                        i.item,
                        i.status,
                        i.message.as_deref().unwrap_or("")
                    );
                }
            }
        }
        Action::Schema => unreachable!("answered above"),
    }
    Ok(0)
}
