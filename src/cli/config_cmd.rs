use crate::config::Config;

/// Print the effective configuration (defaults < trawl.toml < TRAWL_* env < flags), with
/// secrets redacted.
///
/// Example:
///
///   TRAWL_WORKER_CONCURRENCY=4 trawl config
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of TOML.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let text = config.to_redacted_toml();
    if args.json {
        let value: toml::Value = toml::from_str(&text)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{text}");
    }
    Ok(0)
}
