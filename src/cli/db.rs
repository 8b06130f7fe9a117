use anyhow::bail;

use crate::cluster::Status;
use crate::config::Config;
use crate::database;

/// Manage the embedded PostgreSQL cluster (used when no database URL is configured).
///
/// Any command that needs the database starts the cluster on demand; `trawl db stop`
/// stops it.
///
/// Example:
///
///   trawl db status
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Start the cluster, creating it on first use. Exit 0 when it already runs.
    Start,
    /// Stop the cluster (fast shutdown). Exit 0 when it is not running.
    Stop,
    /// Say whether the cluster runs, where its data and log are.
    Status,
    /// Print the URL to connect to trawl's database (psql accepts it).
    Url,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    if !config.uses_embedded_database() {
        bail!(
            "a database URL is configured ({}), so trawl does not run its own cluster; unset \
             TRAWL_DATABASE_URL and DATABASE_URL to use the embedded one",
            crate::config::redact_url(&config.database.url)
        );
    }
    let cluster = database::cluster(config);
    match args.action {
        Action::Start => {
            let before = cluster.status();
            database::ensure_available(config).await?;
            match before {
                Status::Running { pid } => {
                    println!("the embedded cluster is already running (pid {pid})")
                }
                _ => println!(
                    "started the embedded cluster ({})",
                    cluster.data_dir().display()
                ),
            }
        }
        Action::Stop => {
            let stopped = tokio::task::spawn_blocking(move || cluster.stop()).await??;
            println!(
                "{}",
                if stopped {
                    "stopped the embedded cluster"
                } else {
                    "the embedded cluster is not running"
                }
            );
        }
        Action::Status => {
            let state = match cluster.status() {
                Status::Running { pid } => format!("running (pid {pid})"),
                Status::Stopped => "stopped".to_string(),
                Status::NotInitialized => {
                    "not created yet (the first command that needs it creates it)".to_string()
                }
            };
            println!("status: {state}");
            println!("data:   {}", cluster.data_dir().display());
            println!("socket: {}", cluster.socket_dir().display());
            println!("log:    {}", cluster.log_file().display());
            println!("url:    {}", cluster.url());
        }
        Action::Url => println!("{}", cluster.url()),
    }
    Ok(0)
}
