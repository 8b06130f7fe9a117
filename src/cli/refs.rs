use crate::config::Config;
use crate::database;
use crate::extract::references::RefKind;
use crate::service::references::{
    self as service, Freshness, Reference, ReferencesError, ReferencesRequest, Resolution,
};

/// What `trawl refs`, `trawl callers` and `trawl callees` take.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The symbol's name: `parse`, or qualified (`Config::parse`, `os.path.join`: the last
    /// part is looked up).
    symbol: String,
    /// Only this repository (its id, or the path or URL it was indexed from); repeatable.
    #[arg(long = "repo", value_name = "REPO")]
    repos: Vec<String>,
    /// Only files under this path (a prefix, relative to the repository's root): where the
    /// references are (refs, callers) or where the function is defined (callees).
    #[arg(long, value_name = "PREFIX")]
    path: Option<String>,
    /// At most this many references (or definitions, for callees).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Print JSON: the definitions, the references with their resolution, and which index
    /// version the answer reflects.
    #[arg(long)]
    json: bool,
}

/// Where a symbol is used: calls, imports and type uses, each resolved to its definition
/// (the same file; the one file of the repository that defines it, imported or not) or
/// marked ambiguous (several files define it) or unresolved (a library's).
///
/// From the references pipeline, which follows each index run; the answer says when it
/// lags behind the newest index version.
///
/// Examples:
///
///   trawl refs parse_config
///
///   trawl refs Config --kind type --repo ~/src/app --json
#[derive(Debug, clap::Args)]
pub struct RefsArgs {
    #[command(flatten)]
    common: Args,
    /// Only references of this kind: call, import, type; repeatable.
    #[arg(long = "kind", value_parser = ref_kind)]
    kinds: Vec<RefKind>,
}

fn ref_kind(s: &str) -> Result<RefKind, String> {
    RefKind::parse(s.trim())
        .ok_or_else(|| format!("{s:?} is not a kind of reference: call, import or type"))
}

/// Who calls a function: every call of the name, with the function each call is in.
///
/// Examples:
///
///   trawl callers stamp_index_version
///
///   trawl callers run --path src/pipeline
#[derive(Debug, clap::Args)]
pub struct CallersArgs {
    #[command(flatten)]
    common: Args,
}

/// What a function calls: for each definition of it, the calls inside it, resolved.
///
/// Example:
///
///   trawl callees handle --path src/pipeline/worker.rs
#[derive(Debug, clap::Args)]
pub struct CalleesArgs {
    #[command(flatten)]
    common: Args,
}

fn request(a: &Args, kinds: Vec<RefKind>) -> ReferencesRequest {
    ReferencesRequest {
        symbol: a.symbol.clone(),
        repositories: a.repos.clone(),
        path: a.path.clone(),
        kinds,
        limit: Some(a.limit),
    }
}

fn worded(e: ReferencesError) -> anyhow::Error {
    match e {
        e @ ReferencesError::Repository(_) => anyhow::anyhow!("{e} (`trawl status` lists them)"),
        e @ (ReferencesError::NoSymbol
        | ReferencesError::BadSymbol(_)
        | ReferencesError::Limit(_)) => super::usage(e.to_string()),
        e => e.into(),
    }
}

pub async fn refs(args: RefsArgs, config: &Config) -> anyhow::Result<i32> {
    answer(config, &args.common, args.kinds).await
}

pub async fn callers(args: CallersArgs, config: &Config) -> anyhow::Result<i32> {
    answer(config, &args.common, vec![RefKind::Call]).await
}

/// Prints the references of `kinds` to the symbol `common` names.
async fn answer(config: &Config, common: &Args, kinds: Vec<RefKind>) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    let answer = service::references(&store, &request(common, kinds))
        .await
        .map_err(worded)?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(0);
    }
    print_references(
        &answer.symbol,
        &answer.references,
        answer.truncated,
        &answer.freshness,
    );
    Ok(0)
}

pub async fn callees(args: CalleesArgs, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    let answer = service::callees(&store, &request(&args.common, Vec::new()))
        .await
        .map_err(worded)?;
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(0);
    }
    if answer.definitions.is_empty() {
        println!("no definition of {} is known", answer.function);
    }
    for c in &answer.definitions {
        let d = &c.definition.def;
        println!(
            "{} {}:{} ({})",
            d.qualified.as_deref().unwrap_or(&d.name),
            super::for_terminal(&d.path),
            d.line,
            super::for_terminal(&c.definition.repository)
        );
        if c.calls.is_empty() {
            println!("  calls nothing known");
        }
        for call in &c.calls {
            println!(
                "  {:<5} {}{}  {}",
                call.line,
                call.qualifier
                    .as_deref()
                    .map(|q| format!("{}.", super::for_terminal(q)))
                    .unwrap_or_default(),
                call.name,
                resolution(&call.resolution)
            );
        }
    }
    print_freshness(&answer.freshness);
    Ok(0)
}

fn resolution(r: &Resolution) -> String {
    match r {
        Resolution::Local { line, .. } => format!("→ this file:{line}"),
        Resolution::Imported { path, line } => {
            format!("→ {}:{line} (imported)", super::for_terminal(path))
        }
        Resolution::Unique { path, line } | Resolution::Qualified { path, line } => {
            format!("→ {}:{line}", super::for_terminal(path))
        }
        Resolution::Ambiguous { candidates } => format!("? defined in {candidates} files"),
        Resolution::Unresolved => "(not defined here)".into(),
    }
}

fn print_references(symbol: &str, refs: &[Reference], truncated: bool, fresh: &[Freshness]) {
    if refs.is_empty() {
        println!("no references to {symbol}");
    }
    for r in refs {
        println!(
            "{}:{}:{}  {:<6} in {}  {}",
            super::for_terminal(&r.path),
            r.line,
            r.column,
            r.kind,
            r.from
                .as_deref()
                .map_or("(top level)".to_string(), |f| super::for_terminal(f)
                    .into_owned()),
            resolution(&r.resolution)
        );
    }
    if truncated {
        println!("… more: raise --limit");
    }
    print_freshness(fresh);
}

fn print_freshness(fresh: &[Freshness]) {
    for f in fresh.iter().filter(|f| f.lagging) {
        eprintln!(
            "note: {}: references reflect index version {}, the newest is {} (the pipeline is catching up; `trawl pipelines list`)",
            super::for_terminal(&f.repository),
            f.reflects_version
                .map_or("none".to_string(), |v| v.to_string()),
            f.current_version
                .map_or("none".to_string(), |v| v.to_string()),
        );
    }
}
