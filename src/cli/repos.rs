use crate::config::Config;
use crate::database;
use crate::service::repositories::{self as service, RepositoryError};
use crate::service::status;

/// The repositories you added: list them, or remove one with all it holds.
///
/// Examples:
///
///   trawl repos list
///
///   trawl repos remove ~/src/old-project --dry-run
///
///   trawl repos remove 3
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Each repository: its id, source (with @ref), kind, index version, files and
    /// snippets, and when it was last synced.
    List {
        /// Print a JSON array (the same objects as `trawl status --json`).
        #[arg(long)]
        json: bool,
    },
    /// Remove a repository: its unfinished runs are cancelled, then its files, snippets,
    /// vectors, summaries, runs, pipeline data and keyword documents are deleted, and this
    /// node's working copy of it. Audited. Indexing the source again starts afresh.
    Remove {
        /// The repository: its id, or the path or URL it was indexed from (`url@ref` when
        /// it was added at several refs).
        repository: String,
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print what was (or would be) removed as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    match args.action {
        Action::List { json } => {
            let all = status::status(&store, config, None, false).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(0);
            }
            if all.is_empty() {
                println!("no repository yet: add one with `trawl index PATH`");
                return Ok(0);
            }
            println!(
                "{:>4}  {:<9} {:>7} {:>7} {:>9}  {:<12} SOURCE",
                "ID", "KIND", "VERSION", "FILES", "SNIPPETS", "SYNCED"
            );
            for s in &all {
                let r = &s.repository;
                let (version, files, snippets) = match &s.index_version {
                    Some(v) => (v.version.to_string(), v.files, v.snippets),
                    None => ("-".into(), 0, 0),
                };
                let synced = s.synced_seconds_ago.map_or_else(
                    || "never".to_string(),
                    |secs| format!("{} ago", super::status::human_age(secs)),
                );
                println!(
                    "{:>4}  {:<9} {:>7} {:>7} {:>9}  {:<12} {}",
                    r.id,
                    r.source_kind,
                    version,
                    files,
                    snippets,
                    synced,
                    super::for_terminal(&r.label())
                );
            }
        }
        Action::Remove {
            repository,
            dry_run,
            json,
        } => {
            let removal = service::remove(&store, config, "cli", &repository, dry_run)
                .await
                .map_err(|e| match e {
                    e @ (RepositoryError::Unknown { .. } | RepositoryError::Ambiguous { .. }) => {
                        anyhow::anyhow!("{e} (`trawl repos list` lists them)")
                    }
                    e => e.into(),
                })?;
            if !removal.dry_run {
                // This node's keyword index drops the documents now, as a search would first.
                let searcher = crate::search::Searcher::new(store.clone(), config.clone());
                if let Err(e) = searcher.catch_up().await {
                    eprintln!(
                        "warning: this node's keyword index did not drop the documents yet ({e}); the next search does"
                    );
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&removal)?);
                return Ok(0);
            }
            let c = &removal.contents;
            let what = format!(
                "{}, {}, {}, {}, {} ({} unfinished), {}, {}, {}",
                super::count(c.files, "file", "files"),
                super::count(c.snippets, "snippet", "snippets"),
                super::count(c.vectors, "vector", "vectors"),
                super::count(c.summaries, "summary", "summaries"),
                super::count(c.runs, "run", "runs"),
                c.unfinished_runs,
                super::count(c.pipeline_runs, "pipeline run", "pipeline runs"),
                super::count(c.symbols, "symbol", "symbols"),
                super::count(c.commits, "commit", "commits"),
            );
            let label = removal.repository.label();
            let label = super::for_terminal(&label);
            let id = removal.repository.id;
            if removal.dry_run {
                println!("dry run: removing repository {id} ({label}) would delete {what}");
                for d in &removal.directories {
                    println!("  and {}", super::for_terminal(d));
                }
            } else {
                println!("removed repository {id} ({label}): {what}");
                for d in &removal.directories {
                    println!("  deleted {}", super::for_terminal(d));
                }
            }
        }
    }
    Ok(0)
}
