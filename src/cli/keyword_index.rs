use crate::config::Config;
use crate::database;
use crate::pipeline::PipelineContext;
use crate::search::follow;

/// Manage the keyword (tantivy) index.
///
/// The keyword index is derived data: Postgres holds every snippet, and `rebuild` makes the
/// index again from it alone (after a disk loss, on a new search node, or to compact it).
/// Searches keep reading the old index until the rebuilt one is committed.
///
/// Example:
///
///   trawl keyword-index rebuild
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Rebuild the keyword index from the snippets in the database.
    Rebuild,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    match args.command {
        Sub::Rebuild => {
            let ctx = PipelineContext::new(store, config.clone());
            let started = std::time::Instant::now();
            let _lock = follow::lock(config).await?;
            let index = ctx.keyword_index()?;
            let head = ctx.store.keyword_head().await?;
            let documents = follow::rebuild(&ctx.store, &index, head).await?;
            println!(
                "rebuilt the keyword index in {} from the database: {documents} documents in {:.1} s",
                index.dir().display(),
                started.elapsed().as_secs_f64()
            );
            Ok(0)
        }
    }
}
