use anyhow::bail;

use crate::config::Config;
use crate::database;
use crate::service::tasks::{self, TaskQuery, TaskQueryError};
use crate::store::tasks::Task;

/// Inspect and steer stage tasks: the jobs in apalis' queue, with the run each belongs to.
///
/// Example:
///
///   trawl tasks list --status failed
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Tasks, newest run first.
    List {
        /// A stage status (queued, waiting, running, succeeded, failed, cancelled, skipped)
        /// or a job status (pending, done, killed, …).
        #[arg(long)]
        status: Option<String>,
        /// sync, extract, bm25_index, code_embeddings or enrich.
        #[arg(long)]
        stage: Option<String>,
        /// Only tasks of this repository: its id, or the path or URL it was indexed from.
        #[arg(long)]
        repo: Option<String>,
        /// Only the tasks of this run.
        #[arg(long)]
        run: Option<i64>,
        /// At most this many tasks.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print the tasks as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// One task with its job row and last result.
    Show {
        /// The task id (its job id: the TASK column of `trawl tasks list`).
        id: String,
        /// Print the task as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a failed or cancelled task back in the queue with a fresh budget of attempts.
    ///
    /// Its run goes on from its first stage that did not succeed: retrying a later stage
    /// of a run whose earlier stage was also cancelled starts that earlier one, and the
    /// later ones wait for it.
    Retry {
        /// The task id (its job id: the TASK column of `trawl tasks list`).
        id: String,
    },
    /// Cancel a task that has not finished, and with it its run (every unfinished stage of
    /// it; a stage at work stops after its current batch).
    Cancel {
        /// The task id (its job id: the TASK column of `trawl tasks list`).
        id: String,
    },
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    match args.action {
        Action::List {
            status,
            stage,
            repo,
            run,
            limit,
            json,
        } => {
            let query = TaskQuery {
                status,
                stage,
                repository: repo,
                run_id: run,
                limit,
            };
            let tasks = match tasks::list(&store, query).await {
                Ok(t) => t,
                Err(e @ TaskQueryError::Repository(_)) => {
                    bail!("{e} (`trawl status` lists them)")
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&tasks)?);
            } else {
                println!(
                    "{:<26} {:>6} {:<16} {:<10} {:<8} {:>4} {:>5}  LAST ERROR",
                    "TASK", "RUN", "STAGE", "STATUS", "JOB", "PRIO", "TRIES"
                );
                for t in tasks {
                    println!(
                        "{:<26} {:>6} {:<16} {:<10} {:<8} {:>4} {:>2}/{:<2}  {}",
                        t.job_id,
                        t.run_id,
                        t.stage,
                        t.stage_status,
                        t.job_status,
                        t.priority.unwrap_or(0),
                        t.attempts,
                        t.max_attempts,
                        t.last_error.unwrap_or_default()
                    );
                }
            }
        }
        Action::Show { id, json } => {
            let t = match tasks::show(&store, &id).await {
                Ok(t) => t,
                Err(TaskQueryError::UnknownTask(_)) => {
                    bail!("no task {id}: see `trawl tasks list` for task ids")
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                print_task(&t);
            }
        }
        Action::Retry { id } => {
            let t = crate::service::control::control_task(&store, "cli", true, &id).await?;
            println!(
                "task {} ({} of run {}) is {} again",
                t.job_id, t.stage, t.run_id, t.stage_status
            );
        }
        Action::Cancel { id } => {
            let t = crate::service::control::control_task(&store, "cli", false, &id).await?;
            println!(
                "task {} ({} of run {}) cancelled; run {} is {}",
                t.job_id, t.stage, t.run_id, t.run_id, t.run_status
            );
        }
    }
    Ok(0)
}

fn print_task(t: &Task) {
    println!("task      {}", t.job_id);
    println!(
        "stage     {} of run {} (repository {}, {})",
        t.stage, t.run_id, t.repository_id, t.trigger
    );
    println!(
        "status    stage {}, job {}, run {}",
        t.stage_status, t.job_status, t.run_status
    );
    println!(
        "priority  {} ({})",
        t.priority.unwrap_or(0),
        t.priority_class
    );
    println!("attempts  {}/{}", t.attempts, t.max_attempts);
    println!("run_at    {}", t.run_at.to_rfc3339());
    if let Some(w) = &t.lock_by {
        println!("locked by {w}");
    }
    println!(
        "items     {} done, {} failed, of {}",
        t.items_done, t.items_failed, t.items_total
    );
    if let Some(e) = &t.last_error {
        println!("error     {e}");
    }
    if let Some(r) = &t.last_result {
        println!("result    {r}");
    }
}
