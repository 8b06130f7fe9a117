use anyhow::bail;

use crate::config::Config;
use crate::database;
use crate::pipeline::stages::results::RunResult;
use crate::service::control::{RunAction, control_run};

/// Inspect runs: one indexing pass of one repository, with its five stages.
///
/// Example:
///
///   trawl runs show 12 --json
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// The most recent runs, newest first.
    List {
        /// Only runs of this repository: its id, or the path or URL it was indexed from.
        #[arg(long)]
        repo: Option<String>,
        /// At most this many runs, the newest.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print the runs as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Follow a run until it ends: progress snapshots (with --json one JSON line each, the
    /// first at once, one per stage change and per batch, the last terminal). Only
    /// watches: workers do the work. Exit 0 when the run succeeded, 1 when not.
    Watch {
        /// The run id (`trawl runs list` lists them).
        run: i64,
        /// Print each progress snapshot as one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Pause a queued or running run: no new stage or batch of it starts (a stage at work
    /// stops after its current batch). Kept across worker restarts.
    Pause {
        /// The run id (`trawl runs list` lists them).
        run: i64,
    },
    /// Resume a paused run where it stopped; finished items are not done again.
    Resume {
        /// The run id (`trawl runs list` lists them).
        run: i64,
    },
    /// Cancel a run that has not ended: what remains is cancelled, what it committed stays,
    /// and the repository's last index version stays the searchable one.
    Cancel {
        /// The run id (`trawl runs list` lists them).
        run: i64,
    },
    /// One run with its stage breakdown; with --items or --failures, its files too.
    Show {
        /// The run id (`trawl runs list` lists them).
        run: i64,
        /// Every file the run touched: change, status, error or reason, duration.
        #[arg(long)]
        items: bool,
        /// Only the files that failed, with their errors.
        #[arg(long, conflicts_with = "items")]
        failures: bool,
        /// Print the run with its stages (and the items or failures asked for) as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    match args.action {
        Action::List { repo, limit, json } => {
            let runs = match crate::service::runs::list(&store, repo.as_deref(), None, limit).await
            {
                Ok(r) => r,
                Err(e @ crate::service::runs::RunError::Repository(_)) => {
                    bail!("{e} (`trawl status` lists them)")
                }
                Err(e) => return Err(e.into()),
            };
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
        Action::Pause { run } => {
            let r = control_run(&store, "cli", RunAction::Pause, run).await?;
            println!("run {} {}", r.id, r.status);
        }
        Action::Resume { run } => {
            let r = control_run(&store, "cli", RunAction::Resume, run).await?;
            println!("run {} {}", r.id, r.status);
        }
        Action::Cancel { run } => {
            let r = control_run(&store, "cli", RunAction::Cancel, run).await?;
            println!("run {} {}", r.id, r.status);
        }
        Action::Watch { run, json } => {
            if let Err(crate::service::runs::RunError::Unknown(_)) =
                crate::service::runs::existing(&store, run).await
            {
                bail!("no run {run}: see `trawl runs list` for run ids");
            }
            let last = crate::service::progress::follow(&store, run, |s| {
                super::index::print_progress(s, json)
            })
            .await?;
            if !json {
                println!("run {} {}", last.run_id, last.status);
                if let Some(e) = &last.error {
                    println!("error: {e}");
                }
            }
            return Ok(if last.status == "succeeded" { 0 } else { 1 });
        }
        Action::Show {
            run,
            items,
            failures,
            json,
        } => {
            let view = match crate::service::runs::show(&store, run).await {
                Ok(view) => view,
                Err(crate::service::runs::RunError::Unknown(_)) => {
                    bail!("no run {run}: see `trawl runs list` for run ids")
                }
                Err(e) => return Err(e.into()),
            };
            let (r, stages) = (view.run, view.stages);
            let listed = if items || failures {
                Some(crate::service::runs::items(&store, run, failures).await?)
            } else {
                None
            };
            if json {
                let mut out = serde_json::json!({ "run": r, "stages": stages });
                if let Some(listed) = &listed {
                    out[if failures { "failures" } else { "items" }] =
                        serde_json::to_value(listed)?;
                }
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if let Some(listed) = listed {
                if listed.is_empty() {
                    println!(
                        "run {run}: {}",
                        if failures {
                            "no failed file"
                        } else {
                            "no file"
                        }
                    );
                }
                for i in listed {
                    println!(
                        "{:<10} {:<9} {:>7} {}{}",
                        i.status,
                        i.change,
                        i.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
                        super::for_terminal(&i.path),
                        i.message
                            .map(|m| format!(" — {}", super::for_terminal(&m)))
                            .unwrap_or_default()
                    );
                }
            } else {
                println!(
                    "run {} of repository {}: {} ({}, priority base {})",
                    r.id, r.repository_id, r.status, r.trigger, r.priority_base
                );
                if let Some(e) = &r.error {
                    println!("error: {e}");
                }
                for w in RunResult::of(&r.result).warnings() {
                    println!("warning: {}", super::for_terminal(&w));
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
