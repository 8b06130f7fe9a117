use std::collections::HashSet;
use std::io::IsTerminal;

use crate::config::Config;
use crate::database;
use crate::search::{Hit, Mode, SearchError, Searcher, tokenizer};
use crate::service::search::{SearchRequest, SearchRequestError};

/// Search indexed code.
///
/// Hybrid search (the default) fuses rankings by weighted reciprocal rank: BM25 over names,
/// doc comments, code and paths; the code vectors nearest the query's embedding (the static
/// table by default, see embedding.kind); and, when a chat model wrote summaries, the
/// summary vectors nearest it. The vectors weigh less for an identifier-like query. Ranking
/// rules then put definitions of the symbol asked for, and files named like the query,
/// first; tests, examples, docs and non-code files lower. Identifiers match by their words:
/// "parse config file" finds parseConfigFile and parse_config_file, and the exact
/// identifier ranks first. Queries over 2,000 characters or 64 distinct words are refused.
///
/// Examples:
///
///   trawl search "parse config file"
///
///   trawl search "retry with backoff" --lang rust --path 'src/**' --limit 5
///
///   trawl search HTTPServer --mode keyword --json
///
///   trawl search --commits "when was retry backoff added"
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to look for: words, identifiers, or a description of the code.
    query: String,
    /// How to search: hybrid (keyword and vectors fused), keyword (BM25) or semantic
    /// (vectors).
    #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
    mode: Mode,
    /// Only this repository (its id, or the path or URL it was indexed from); repeatable.
    #[arg(long = "repo", value_name = "REPO")]
    repos: Vec<String>,
    /// Only this language (rust, python, go, typescript, …); repeatable.
    #[arg(long = "lang", value_name = "LANG")]
    languages: Vec<String>,
    /// Only paths matching this glob (`*` and `**` match anything, `?` one character; a
    /// plain path matches that file or directory).
    #[arg(long, value_name = "GLOB")]
    path: Option<String>,
    /// Only this kind of snippet (function, method, class, struct, chunk, …); repeatable.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// How many results.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Print a JSON array of hits (repository, repository_id, path, start_line, end_line,
    /// kind, name, language, score, snippet, snippet_id).
    #[arg(long)]
    json: bool,
    /// Search the commit messages of git sources instead, best first: the messages that
    /// hold most of the words (stemmed: "retries" finds "retry"); with "a phrase", -word
    /// or OR, exactly what the query says. From the history pipeline.
    #[arg(long)]
    commits: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let store = database::open(config).await?;
    if args.commits {
        let hits = crate::service::history::search_commits(
            &store,
            &args.query,
            &args.repos,
            Some(u32::from(args.limit)),
        )
        .await
        .map_err(|e| match e {
            e @ crate::service::history::HistoryError::Repository(_) => {
                anyhow::anyhow!("{e} (`trawl status` lists them)")
            }
            e @ (crate::service::history::HistoryError::NoQuery
            | crate::service::history::HistoryError::QueryTooLong(_)
            | crate::service::history::HistoryError::Limit(_)) => super::usage(e.to_string()),
            e => e.into(),
        })?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&hits)?);
        } else if hits.is_empty() {
            println!("no commit messages match {:?}", args.query);
        } else {
            for h in &hits {
                print!("{}  ", super::for_terminal(&h.repository));
                super::history::print_commit(&h.commit);
            }
        }
        return Ok(0);
    }
    let text = args.query;
    let request = SearchRequest {
        query: text.clone(),
        mode: args.mode,
        repositories: args.repos,
        languages: args.languages,
        kinds: args.kinds,
        path: args.path,
        limit: Some(args.limit),
    };
    let searcher = Searcher::new(store.clone(), config.clone());
    // This node's keyword index applies what other nodes published since it last looked.
    if args.mode != Mode::Semantic
        && let Err(e) = searcher.catch_up().await
    {
        eprintln!(
            "warning: the keyword index did not catch up with the database ({e}); results may miss the latest changes"
        );
    }
    let results = match crate::service::search::search(&store, &searcher, request).await {
        Ok(r) => r,
        Err(e @ SearchRequestError::Repository(_)) => {
            anyhow::bail!("{e} (`trawl status` lists them)")
        }
        // What the flags or the query say is at fault: a usage error.
        Err(
            e @ (SearchRequestError::Limit(_)
            | SearchRequestError::UnknownLanguage { .. }
            | SearchRequestError::UnknownKind { .. }
            | SearchRequestError::Search(
                SearchError::EmptyQuery
                | SearchError::QueryTooLong { .. }
                | SearchError::TooManyTerms { .. }
                | SearchError::BadPath { .. },
            )),
        ) => return Err(super::usage(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    for w in &results.warnings {
        eprintln!("warning: {w}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results.hits)?);
        return Ok(0);
    }
    if results.hits.is_empty() {
        println!("no results for {text:?}");
        return Ok(0);
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let terms: HashSet<String> = tokenizer::query_tokens(&text).into_iter().collect();
    for (i, hit) in results.hits.iter().enumerate() {
        print_hit(i + 1, hit, &terms, color);
    }
    Ok(0)
}

/// Lines of a snippet shown per hit.
const SHOWN_LINES: usize = 12;

fn print_hit(rank: usize, hit: &Hit, terms: &HashSet<String>, color: bool) {
    let (bold, dim, reset) = if color {
        ("\x1b[1m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    println!(
        "{bold}{rank}. {}:{}-{}{reset}  {} {}  {dim}[{} · {} · {:.4}]{reset}",
        super::for_terminal(&hit.path),
        hit.start_line,
        hit.end_line,
        hit.kind,
        super::for_terminal(hit.name.as_deref().unwrap_or("")),
        super::for_terminal(&hit.repository),
        hit.language.as_deref().unwrap_or("text"),
        hit.score
    );
    let lines: Vec<&str> = hit.snippet.lines().collect();
    for line in lines.iter().take(SHOWN_LINES) {
        let line = super::for_terminal(line);
        let shown = if color {
            highlight(&line, terms)
        } else {
            line.into_owned()
        };
        println!("    {shown}");
    }
    if lines.len() > SHOWN_LINES {
        println!("    {dim}… {} more lines{reset}", lines.len() - SHOWN_LINES);
    }
    println!();
}

/// Wraps the identifiers of `line` that contain a query term in bold yellow.
fn highlight(line: &str, terms: &HashSet<String>) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        if tokenizer::tokens(word).iter().any(|t| terms.contains(t)) {
            out.push_str("\x1b[1;33m");
            out.push_str(word);
            out.push_str("\x1b[0m");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in line.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}
