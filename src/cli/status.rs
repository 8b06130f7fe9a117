use crate::config::Config;
use crate::database;
use crate::service::status;

/// Show each repository's current index version, its age, its freshness against its
/// source, and its pending or running runs.
///
/// Freshness: for a directory, the files changed on disk since the index (by size and
/// mtime, as SYNC's pre-check sees them; nothing is read); for a git source, the commit
/// indexed and how many commits the tracked ref is ahead, from one `git ls-remote` per
/// source (--no-remote skips it).
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
    /// Do not ask git sources' remotes where their refs are (no network).
    #[arg(long)]
    no_remote: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    let out = status::status(&store, config, args.repository.as_deref(), !args.no_remote).await?;
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
        if let Some(line) = freshness_line(&s.freshness) {
            println!("  {line}");
        }
        for run in &s.unfinished_runs {
            println!(
                "  run {} {} {:.1}%: {} {:.1}% ({}/{} items){}",
                run.run_id,
                run.status,
                run.overall_percent,
                run.stage,
                run.percent,
                run.items_done,
                run.items_total,
                run.eta_seconds
                    .map(|e| format!(", about {e:.0} s left"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(0)
}

/// What a repository's index reflects against its source, for people.
fn freshness_line(f: &crate::service::freshness::Freshness) -> Option<String> {
    if let Some(c) = f.changed_on_disk {
        return Some(if c.total() == 0 {
            "fresh: no file changed on disk since the index".to_string()
        } else {
            format!(
                "on disk since the index: {} added, {} changed, {} deleted (`trawl reindex` or `trawl watch` brings them in)",
                c.added, c.changed, c.deleted
            )
        });
    }
    let short = |c: &str| c.chars().take(12).collect::<String>();
    match (
        &f.indexed_commit,
        &f.remote_commit,
        f.commits_ahead,
        &f.note,
    ) {
        (_, _, _, Some(note)) => Some(format!("freshness unknown: {}", super::for_terminal(note))),
        (Some(i), Some(_), Some(0), _) => {
            Some(format!("fresh: commit {} is the remote's", short(i)))
        }
        (Some(i), Some(r), Some(n), _) => Some(format!(
            "indexed commit {}; the remote is {} ahead, at {}",
            short(i),
            super::count(n, "commit", "commits"),
            short(r)
        )),
        (Some(i), Some(r), None, _) => Some(format!(
            "indexed commit {}; the remote has moved on to {} (the next sync brings it)",
            short(i),
            short(r)
        )),
        (Some(i), None, _, _) => Some(format!("indexed commit {}", short(i))),
        _ => None,
    }
}

pub(super) fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} days", s / 86_400),
    }
}
