use anyhow::Context as _;

use crate::config::Config;
use crate::database;
use crate::pipeline::PipelineContext;
use crate::service::index;

/// Index a directory or a git repository: register it (once) and enqueue a user-initiated
/// run of the five stages. Prints the run id; with --wait, follows the run until it ends.
///
/// A git URL (https://, http://, ssh://, git://, file://, or user@host:path) is cloned
/// under trawl's home and fetched again on every later sync. A token for private https
/// remotes is git.token (TRAWL_GIT_TOKEN), sent only to the hosts of git.token_hosts
/// (TRAWL_GIT_TOKEN_HOSTS), only over https.
///
/// With --wait and no worker alive, the run is worked in this process under the same queue
/// rules; when workers are alive, they do the work.
///
/// Examples:
///
///   trawl index ~/src/myproject --wait
///
///   trawl index https://github.com/rust-lang/log --ref master
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory or git URL to index.
    source: String,
    /// For a git URL: the branch, tag or commit to index (default: the remote's HEAD).
    #[arg(
        long = "ref",
        value_name = "REF",
        default_value = "",
        hide_default_value = true
    )]
    git_ref: String,
    /// Follow the run until it ends; exit 0 when it succeeds, 1 when it fails.
    #[arg(long)]
    wait: bool,
    /// Print JSON (with --wait: a progress snapshot per line, the first at once, then one
    /// per stage change and per batch, the last terminal).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    // `--wait` may work the run in this process: the pool must serve a worker's slots.
    let config = &crate::pipeline::worker::sized_for(config, config.worker.concurrency, 2);
    let store = database::open(config).await?;
    let requested = index::index(
        &store,
        config,
        &args.source,
        &args.git_ref,
        "cli",
        index::SourceAccess::Local,
    )
    .await?;
    let run_id = requested.enqueued.run_id();
    if args.json && !args.wait {
        println!("{}", serde_json::to_string(&requested)?);
    } else if !args.json {
        println!(
            "repository {} ({}): run {run_id} queued",
            requested.repository.id, requested.repository.source
        );
    }
    if !args.wait {
        if !args.json {
            println!("follow it with: trawl runs show {run_id}");
        }
        return Ok(0);
    }
    let ctx_store = store.clone();
    let ctx = PipelineContext::new(store, config.clone());
    let json = args.json;
    let run = index::wait_for_run(ctx, run_id, |s| print_progress(s, json))
        .await
        .with_context(|| format!("waiting for run {run_id}"))?;
    if !json {
        println!("run {} {}", run.id, run.status);
        if let Some(e) = &run.error {
            println!("error: {e}");
        }
        for w in crate::pipeline::stages::results::RunResult::of(&run.result).warnings() {
            println!("warning: {}", super::for_terminal(&w));
        }
        print_pipelines(&ctx_store, &run).await;
    }
    Ok(if run.status == "succeeded" { 0 } else { 1 })
}

/// One line per downstream pipeline that run `run`'s events fed: how its runs ended (or
/// that they wait for a worker).
async fn print_pipelines(store: &crate::store::Store, run: &crate::store::runs::Run) {
    let filter = crate::store::pipelines::PipelineRunFilter {
        repository_id: Some(run.repository_id),
        limit: 1000,
        ..Default::default()
    };
    let Ok(runs) = store.pipeline_runs(&filter).await else {
        return;
    };
    let mut by: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for r in runs.iter().filter(|r| r.created_at >= run.created_at) {
        by.entry(r.pipeline.as_str())
            .or_default()
            .push(r.status.to_string());
    }
    for (pipeline, statuses) in by {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for s in &statuses {
            *counts.entry(s.as_str()).or_default() += 1;
        }
        let said: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        println!(
            "pipeline {pipeline}: {} (`trawl pipelines list`)",
            said.join(", ")
        );
    }
}

/// Prints a progress snapshot: one JSON line with `json`, else for people (see
/// [`show_progress`]).
pub(super) fn print_progress(snapshot: &crate::service::progress::Snapshot, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(snapshot).expect("a snapshot serialises")
        );
        return;
    }
    show_progress(snapshot);
}

/// A snapshot for people, on stderr: on a terminal a progress bar redrawn in place (a
/// new line when the stage changes or the run ends); elsewhere a line each.
pub(super) fn show_progress(s: &crate::service::progress::Snapshot) {
    use std::io::{IsTerminal as _, Write as _};
    let mut err = std::io::stderr();
    let failed = if s.items_failed > 0 {
        format!(", {} failed", s.items_failed)
    } else {
        String::new()
    };
    let counts = format!("{}/{} items{failed}", s.items_done, s.items_total);
    let pace = s
        .items_per_second
        .map(|r| format!(", {r:.0} items/s"))
        .unwrap_or_default();
    let eta = s
        .eta_seconds
        .map(|e| format!(", about {} left", seconds_for_people(e)))
        .unwrap_or_default();
    if !err.is_terminal() {
        let _ = writeln!(
            err,
            "run {} {} {:.1}%: {} {:.1}% ({counts}{pace}){eta}",
            s.run_id, s.status, s.overall_percent, s.stage, s.percent
        );
        return;
    }
    // The bar is the whole run's; the stage's own figures follow it.
    const WIDTH: usize = 30;
    let filled = ((s.overall_percent / 100.0) * WIDTH as f64).round() as usize;
    let bar = format!(
        "{}{}",
        "#".repeat(filled.min(WIDTH)),
        "-".repeat(WIDTH - filled.min(WIDTH))
    );
    let item = s.current_item.as_deref().unwrap_or("");
    let _ = write!(
        err,
        "\r\x1b[2Krun {} [{bar}] {:>5.1}%{eta} · {:<16} {counts}{pace} {item}",
        s.run_id, s.overall_percent, s.stage
    );
    if s.terminal || s.percent >= 100.0 {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

/// "4 s", "2 min 5 s", "1 h 3 min".
fn seconds_for_people(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}
