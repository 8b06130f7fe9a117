use crate::config::Config;
use crate::doctor;

/// Check that everything trawl needs is in place; each failed check says how to fix it.
///
/// Checks: database reachable, server version, pgvector, migrations, queue tables, that
/// this node's keyword index follows the database (no lag over 10 s), the embedding model,
/// the index directory, the hosts a configured git token is sent to (git.token_hosts),
/// configured HTTP providers, and that the model embeds a text into vectors of the
/// dimension already stored under its name. Exit 1 when any check fails.
///
/// Example:
///
///   trawl doctor --json
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the checks as a JSON array.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let checks = doctor::run(config).await;
    let ok = checks.iter().all(|c| c.ok);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            println!(
                "{} {:<28} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
            if !c.ok {
                println!("     {:<28} fix: {}", "", c.fix);
            }
        }
        println!(
            "{}",
            if ok {
                "all checks passed"
            } else {
                "some checks failed"
            }
        );
    }
    Ok(if ok { 0 } else { 1 })
}
