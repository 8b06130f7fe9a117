//! Application services: one function per use case, called by every adapter (the CLI, the
//! HTTP API, the MCP server, the dashboard and the scheduler). No printing, no argument parsing.

pub mod control;
pub mod freshness;
pub mod history;
pub mod index;
pub mod pipelines;
pub mod progress;
pub mod references;
pub mod reindex;
pub mod reingest;
pub mod repositories;
pub mod runs;
pub mod scheduler;
pub mod search;
pub mod status;
pub mod tasks;
pub mod watch;

/// How many answers to give: `limit`, or `default`; out of 1..=`max`, `Err` with it.
pub(crate) fn answers_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, u32> {
    match limit.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n),
        n => Err(n),
    }
}
