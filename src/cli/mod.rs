//! The command line: clap definitions and one module per subcommand, each an `Args` struct
//! and a `run` function. Commands only parse, call library code and print; they hold no
//! business rules.

mod audit;
mod batch;
mod bench;
mod config_cmd;
mod db;
mod doctor;
mod history;
mod index;
mod keyword_index;
mod mcp;
mod migrate;
mod pipelines;
mod queue;
mod refs;
mod reindex;
mod reingest;
mod repos;
mod runs;
mod scheduler;
mod search;
mod serve;
mod setup;
mod status;
mod tasks;
mod watch;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;

/// trawl: a code indexer whose indexing runs as a durable task queue on Postgres.
///
/// With no database configured, trawl runs its own PostgreSQL under its home directory
/// (TRAWL_HOME), started on demand. Run `trawl setup` once to install it and the local
/// embedding model.
#[derive(Debug, Parser)]
#[command(
    name = "trawl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Config file (TOML); defaults to $TRAWL_CONFIG when set.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// trawl's home directory (overrides TRAWL_HOME and the config file).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Postgres URL (overrides TRAWL_DATABASE_URL / DATABASE_URL); none means the embedded
    /// cluster.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Setup(setup::Args),
    Db(db::Args),
    Migrate(migrate::Args),
    Config(config_cmd::Args),
    Doctor(doctor::Args),
    Index(index::Args),
    Reindex(reindex::Args),
    Status(status::Args),
    Repos(repos::Args),
    Reingest(reingest::Args),
    Batch(batch::Args),
    Audit(audit::Args),
    Worker(worker::Args),
    Runs(runs::Args),
    Tasks(tasks::Args),
    Queue(queue::Args),
    Search(search::Args),
    Refs(refs::RefsArgs),
    Callers(refs::CallersArgs),
    Callees(refs::CalleesArgs),
    History(history::Args),
    Pipelines(pipelines::Args),
    Scheduler(scheduler::Args),
    Serve(serve::Args),
    Watch(watch::Args),
    Mcp(mcp::Args),
    KeywordIndex(keyword_index::Args),
    Bench(bench::Args),
}

impl Cli {
    /// The default log filter for this command: quiet for commands whose stdout is the
    /// point, informative for long-running ones.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Worker(_) | Command::Scheduler(_) | Command::Serve(_) => {
                "trawl=info,sqlx=warn,tantivy=warn,apalis=warn"
            }
            _ => "trawl=warn,sqlx=warn,tantivy=warn,apalis=warn",
        }
    }

    /// Loads and validates the configuration from the process environment and the flags.
    fn load_config(&self) -> anyhow::Result<Config> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let mut overrides: Vec<(&str, String)> = Vec::new();
        if let Some(home) = &self.home {
            let home =
                std::path::absolute(home).with_context(|| format!("--home {}", home.display()))?;
            overrides.push(("home", home.to_string_lossy().into_owned()));
        }
        if let Some(url) = &self.database_url {
            overrides.push(("database.url", url.clone()));
        }
        let config = Config::load(self.config.as_deref(), &env, &overrides)?;
        config.validate()?;
        Ok(config)
    }
}

/// Runs the parsed command; the returned code is the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let config = cli.load_config()?;
    match cli.command {
        Command::Setup(args) => setup::run(args, &config).await,
        Command::Db(args) => db::run(args, &config).await,
        Command::Migrate(args) => migrate::run(args, &config).await,
        Command::Config(args) => config_cmd::run(args, &config),
        Command::Doctor(args) => doctor::run(args, &config).await,
        Command::Index(args) => index::run(args, &config).await,
        Command::Reindex(args) => reindex::run(args, &config).await,
        Command::Status(args) => status::run(args, &config).await,
        Command::Repos(args) => repos::run(args, &config).await,
        Command::Reingest(args) => reingest::run(args, &config).await,
        Command::Batch(args) => batch::run(args, &config).await,
        Command::Audit(args) => audit::run(args, &config).await,
        Command::Worker(args) => worker::run(args, &config).await,
        Command::Runs(args) => runs::run(args, &config).await,
        Command::Tasks(args) => tasks::run(args, &config).await,
        Command::Queue(args) => queue::run(args, &config).await,
        Command::Search(args) => search::run(args, &config).await,
        Command::Refs(args) => refs::refs(args, &config).await,
        Command::Callers(args) => refs::callers(args, &config).await,
        Command::Callees(args) => refs::callees(args, &config).await,
        Command::History(args) => history::run(args, &config).await,
        Command::Pipelines(args) => pipelines::run(args, &config).await,
        Command::Scheduler(args) => scheduler::run(args, &config).await,
        Command::Serve(args) => serve::run(args, &config).await,
        Command::Watch(args) => watch::run(args, &config).await,
        Command::Mcp(args) => mcp::run(args, &config).await,
        Command::KeywordIndex(args) => keyword_index::run(args, &config).await,
        Command::Bench(args) => bench::run(args, &config).await,
    }
}

/// Resolves `--repo` (a repository id, or the path/URL it was indexed from) to an id.
async fn repository_id(
    store: &crate::store::Store,
    selector: Option<String>,
) -> anyhow::Result<Option<i64>> {
    crate::service::repositories::resolve_id(store, selector.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("{e} (`trawl status` lists them)"))
}

/// A usage error the command found itself (a flag missing, flags that exclude each other,
/// a value out of place): the binary exits 2 for it, as clap does for its own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A [`Usage`] error, for `?` and `bail`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// `n` and the noun, singular for one: "1 file", "3 files", "2 repositories".
pub fn count(n: impl Into<i64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `s` for a terminal: control characters (an escape sequence hidden in a file name or a
/// file's text) written as visible escapes, so what is printed cannot drive the terminal.
/// Tabs stay.
pub fn for_terminal(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    c.escape_default().collect::<String>()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod terminal_tests {
    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(super::for_terminal("src/a.py"), "src/a.py");
        assert_eq!(
            super::for_terminal("evil\u{1b}]0;pwned\u{7}.py\n"),
            "evil\\u{1b}]0;pwned\\u{7}.py\\n"
        );
        assert_eq!(super::for_terminal("a\tb"), "a\tb");
    }
}
