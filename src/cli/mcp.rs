use crate::api::AppState;
use crate::config::Config;
use crate::database;

/// Serve MCP (the Model Context Protocol) over stdin and stdout, for an assistant that
/// starts trawl as its tool server.
///
/// Tools: search, list_repositories, force_reindex, get_reindex_status, pause_reindex,
/// resume_reindex, cancel_reindex, remove_repository, and over the pipelines' data
/// find_references, callers, callees, history and search_commits. Reindex runs are done by
/// workers (`trawl worker` or `trawl serve`); this process only enqueues and reports. Logs
/// go to stderr: stdout is the protocol's. `trawl serve` offers the same tools over
/// streamable HTTP at /mcp.
///
/// Example (an MCP client's config): {"command": "trawl", "args": ["mcp"]}
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    // Nothing stops this server but its client closing stdin.
    let (_running, stopping) = tokio::sync::watch::channel(false);
    crate::mcp::serve_stdio(AppState::new(store, config.clone(), stopping)).await?;
    Ok(0)
}
