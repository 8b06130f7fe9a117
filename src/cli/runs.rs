use anyhow::bail;

use crate::config::Config;
use crate::database;

/// Inspect runs: one indexing pass of one repository, with its five stages.
///
/// Example: trawl runs show 12 --json
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// The most recent runs, newest first.
    List {
        /// Only runs of this repository (id, or the path it was indexed from).
        #[arg(long)]
        repo: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One run with its stage breakdown.
    Show {
        run: i64,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    match args.action {
        Action::List { repo, limit, json } => {
            let repository_id = super::repository_id(&store, repo).await?;
            let runs = store.list_runs(repository_id, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                println!(
                    "{:>6} {:>5} {:<10} {:<10} {:<25}",
                    "RUN", "REPO", "TRIGGER", "STATUS", "CREATED"
                );
                for r in runs {
                    println!(
                        "{:>6} {:>5} {:<10} {:<10} {:<25}",
                        r.id,
                        r.repository_id,
                        r.trigger,
                        r.status,
                        r.created_at.to_rfc3339()
                    );
                }
            }
        }
        Action::Show { run, json } => {
            let r = match store.run(run).await {
                Ok(r) => r,
                Err(crate::store::StoreError::NotFound(_)) => {
                    bail!("no run {run}: see `trawl runs list` for run ids")
                }
                Err(e) => return Err(e.into()),
            };
            let stages = store.stage_runs(run).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "run": r, "stages": stages })
                    )?
                );
            } else {
                println!(
                    "run {} of repository {}: {} ({}, priority base {})",
                    r.id, r.repository_id, r.status, r.trigger, r.priority_base
                );
                if let Some(e) = &r.error {
                    println!("error: {e}");
                }
                for s in stages {
                    println!(
                        "  {:<16} {:<10} attempts {}/{} job {}{}",
                        s.stage,
                        s.status,
                        s.attempts,
                        s.max_attempts,
                        s.job_id,
                        s.last_error.map(|e| format!(" — {e}")).unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(0)
}
