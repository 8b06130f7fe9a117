use crate::config::Config;
use crate::database;

/// Show the audit log: every index, reindex, reingest, pause, resume, cancel, retry,
/// repository removal, pipeline action and background sync, who asked (cli, api, mcp,
/// scheduler, or trawl itself), what was asked and how it ended. Newest first.
///
/// Actor trawl is what trawl does of itself: a background run cancelled because a user's
/// run superseded it.
///
/// Examples:
///
///   trawl audit --since 1d
///
///   trawl audit --repo ~/src/app --json
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only entries of this repository (its id, or the path or URL it was indexed from).
    #[arg(long)]
    repo: Option<String>,
    /// Only entries since then: a duration back from now (30m, 12h, 7d) or an RFC 3339
    /// time (2026-11-24T08:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// At most this many entries, the newest.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// Print the entries as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let since = args
        .since
        .as_deref()
        .map(|s| crate::domain::parse_since(s).map_err(|e| anyhow::anyhow!("--since {e}")))
        .transpose()?;
    let store = database::open(config).await?;
    let repository_id = super::repository_id(&store, args.repo).await?;
    let entries = store
        .audit_entries(repository_id, since, args.limit.max(1))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(0);
    }
    for e in entries {
        println!(
            "{} {:<5} {:<12} {:<8} repo {:<4} run {:<6} {} {}",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.actor,
            e.action,
            e.outcome,
            e.repository_id.map_or("-".into(), |id| id.to_string()),
            e.run_id.map_or("-".into(), |id| id.to_string()),
            e.parameters,
            e.message.unwrap_or_default()
        );
    }
    Ok(0)
}
