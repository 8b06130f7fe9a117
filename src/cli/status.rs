use crate::config::Config;
use crate::database;
use crate::service::status;

/// Show each repository's current index version, its age, and its pending or running runs.
///
/// Example:
///
///   trawl status ~/src/app --json
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One repository (its id, or the path or URL it was indexed from); all by default.
    repository: Option<String>,
    /// Print every repository's status as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    let out = status::status(&store, args.repository.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    if out.is_empty() {
        println!("no repository yet: index one with `trawl index PATH`");
    }
    let lag = crate::search::follow::local_lag(&store, config).await?;
    println!(
        "keyword index on this node: {}",
        crate::search::follow::describe_lag(lag.as_ref())
    );
    for s in &out {
        let r = &s.repository;
        match &s.index_version {
            Some(v) => println!(
                "repository {} {}: index version {} built {} ago by run {} ({}, {}, {}, {})",
                r.id,
                r.source,
                v.version,
                human_age(s.age_seconds.unwrap_or(0)),
                v.run_id.map_or("?".into(), |id| id.to_string()),
                super::count(v.files, "file", "files"),
                super::count(v.snippets, "snippet", "snippets"),
                super::count(v.vectors, "vector", "vectors"),
                v.model
            ),
            None => println!("repository {} {}: no index version yet", r.id, r.source),
        }
        if let Some(c) = s.coverage {
            println!(
                "  coverage {:.1}%: {} of {} non-blank lines are in a snippet",
                c * 100.0,
                s.lines_covered,
                s.lines_total
            );
        }
        for run in &s.unfinished_runs {
            println!(
                "  run {} {}: {} {:.1}% ({}/{} items)",
                run.run_id, run.status, run.stage, run.percent, run.items_done, run.items_total
            );
        }
    }
    Ok(0)
}

pub(super) fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} days", s / 86_400),
    }
}
