use crate::config::Config;
use crate::database;

/// Bring the database schema up to date (trawl's tables and apalis' queue tables).
///
/// Every command that opens the database does this too; this command only makes it explicit.
/// Safe to run from several processes at once.
///
/// Example:
///
///   trawl migrate
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    let state = store.migration_state().await?;
    println!(
        "schema is current: {} migrations applied, queue tables ready",
        state.known
    );
    Ok(0)
}
