use crate::config::Config;
use crate::database;
use crate::service::history::{self as service, HistoryError, Target};
use crate::store::history::CommitRow;

/// When and why something changed: the commits of a git source that changed a file, some
/// lines of it, or a snippet, newest first.
///
/// A file's history is every commit that touched it (as deep as pipelines.history.depth,
/// 1000 by default); lines' and a snippet's are the commits that last changed one of
/// those lines, as git blame has it at the indexed commit. From the history pipeline,
/// which follows each index run of a git source.
///
/// Examples:
///
///   trawl history src/config.rs
///
///   trawl history src/config.rs:120-160 --repo https://github.com/org/app
///
///   trawl history --snippet 4711
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A file's path relative to its repository's root, with `:LINE` or `:START-END` for
    /// lines of it.
    #[arg(required_unless_present = "snippet")]
    target: Option<String>,
    /// A snippet by id (search results give it, `--json`: snippet_id).
    #[arg(long, conflicts_with = "target")]
    snippet: Option<i64>,
    /// The repository (its id, or the path or URL it was indexed from); needed when several
    /// have the file.
    #[arg(long)]
    repo: Option<String>,
    /// At most this many commits, the newest (1 to 1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Print the answer as JSON (the commits, the file and lines, freshness).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    let target = match (&args.snippet, &args.target) {
        (Some(id), _) => Target::Snippet(*id),
        (None, Some(t)) => Target::parse(t),
        (None, None) => return Err(super::usage("give a path, or --snippet ID")),
    };
    let answer = service::history(&store, &target, args.repo.as_deref(), Some(args.limit))
        .await
        .map_err(|e| match e {
            e @ HistoryError::Repository(_) => anyhow::anyhow!("{e} (`trawl status` lists them)"),
            e @ (HistoryError::NoPath | HistoryError::Limit(_)) => super::usage(e.to_string()),
            e @ HistoryError::AmbiguousFile { .. } => anyhow::anyhow!("{e}: give --repo"),
            e => e.into(),
        })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(0);
    }
    let what = match answer.lines {
        Some((a, b)) if a == b => format!("{}:{a}", answer.path),
        Some((a, b)) => format!("{}:{a}-{b}", answer.path),
        None => answer.path.clone(),
    };
    if answer.commits.is_empty() {
        println!(
            "no commits known for {} in {}",
            super::for_terminal(&what),
            super::for_terminal(&answer.repository)
        );
        if answer.freshness.reflects_version.is_none() {
            println!(
                "(the history pipeline has not run for it: only git sources have one; `trawl pipelines list`)"
            );
        }
        return Ok(0);
    }
    println!(
        "{} in {}",
        super::for_terminal(&what),
        super::for_terminal(&answer.repository)
    );
    for c in &answer.commits {
        print_commit(c);
    }
    if answer.freshness.lagging {
        eprintln!(
            "note: the history reflects index version {}, the newest is {}",
            answer.freshness.reflects_version.unwrap_or(0),
            answer.freshness.current_version.unwrap_or(0)
        );
    }
    Ok(0)
}

/// One commit on one line: short hash, date, author, subject.
pub fn print_commit(c: &CommitRow) {
    let subject = c.message.lines().next().unwrap_or("");
    println!(
        "{}  {}  {:<18}  {}{}",
        &c.hash[..c.hash.len().min(10)],
        c.committed_at.format("%Y-%m-%d"),
        super::for_terminal(&c.author),
        c.change
            .as_deref()
            .map(|ch| format!("[{ch}] "))
            .unwrap_or_default(),
        super::for_terminal(subject)
    );
}
