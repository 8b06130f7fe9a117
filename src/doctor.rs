//! `trawl doctor`: checks that everything trawl needs is in place, each check with a
//! one-line fix when it fails. The checks run in order and later ones are skipped when the
//! database cannot be reached, since they would only repeat that failure.

use serde::Serialize;

use crate::config::{Config, EmbeddingProvider};
use crate::database;
use crate::providers::local::LocalEmbedder;
use crate::store::Store;

/// apalis' queue tables (schema `apalis`).
pub const QUEUE_TABLES: &[&str] = &["apalis.jobs", "apalis.workers"];
/// The oldest PostgreSQL trawl supports (`NULLS NOT DISTINCT`, `WITH (FORCE)`, pgvector HNSW).
const MIN_SERVER_MAJOR: u32 = 15;

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found (a version, a path) or what went wrong.
    pub detail: String,
    /// One line saying how to fix a failure; empty when ok.
    pub fix: String,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            ok: true,
            detail: crate::redact::text(&detail.into()),
            fix: String::new(),
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            ok: false,
            detail: crate::redact::text(&detail.into()),
            fix: fix.into(),
        }
    }
}

/// Runs every check.
pub async fn run(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut opened = None;
    match database::open(config).await {
        Ok(store) => {
            let where_ = if config.uses_embedded_database() {
                format!(
                    "embedded cluster in {}",
                    database::cluster(config).data_dir().display()
                )
            } else {
                crate::store::describe_target(&config.database.url)
            };
            checks.push(Check::pass("database reachable", where_));
            database_checks(&store, &mut checks).await;
            checks.push(keyword_lag_check(&store, config).await);
            opened = Some(store);
        }
        Err(e) => {
            let fix = if config.uses_embedded_database() {
                "run `trawl setup`, then `trawl db start` to see the server's own error"
            } else {
                "check TRAWL_DATABASE_URL, or unset it to use the embedded database"
            };
            checks.push(Check::fail("database reachable", format!("{e}"), fix));
        }
    }
    checks.push(model_check(config));
    checks.push(index_dir_check(config));
    checks.extend(git_token_check(config));
    checks.extend(provider_checks(config).await);
    checks.push(embed_check(config, opened.as_ref()).await);
    checks
}

/// Embeds one text with the configured model, and holds the vector's dimension to the
/// vectors already stored under the model's name: a provider that changed its model
/// behind the same name would otherwise fail every CODE_EMBEDDINGS stage.
async fn embed_check(config: &Config, store: Option<&Store>) -> Check {
    const NAME: &str = "embedding works";
    let embedder = match crate::providers::Embedder::load(config.clone()).await {
        Ok(e) => e,
        Err(e) => {
            return Check::fail(
                NAME,
                e.to_string(),
                "run `trawl setup` for the local model, or fix the embedding provider settings",
            );
        }
    };
    let model = embedder.model().to_string();
    let dimension = match embedder
        .embed(vec!["fn parse_config(path: &str)".into()])
        .await
    {
        Ok(v) => v.first().map_or(0, Vec::len),
        Err(e) => {
            return Check::fail(
                NAME,
                format!("{model}: {e}"),
                "check the embedding provider (TRAWL_EMBEDDING_BASE_URL, the API key, the model name)",
            );
        }
    };
    if dimension == 0 {
        return Check::fail(
            NAME,
            format!("{model} answered an empty vector"),
            "check the embedding model name",
        );
    }
    if let Some(store) = store
        && let Ok(Some(stored)) = store.stored_dimension(&model).await
        && stored as usize != dimension
    {
        return Check::fail(
            NAME,
            format!(
                "{model} answers {dimension}-dimensional vectors; the vectors stored under that name are {stored}-dimensional"
            ),
            "configure the model those vectors were made with, or embed again under a new model name: `trawl reindex REPO --scope embeddings-only --full`",
        );
    }
    Check::pass(NAME, format!("{model}: {dimension}-dimensional vectors"))
}

/// When a git token is configured: the hosts it goes to, or why it goes nowhere.
fn git_token_check(config: &Config) -> Option<Check> {
    if config.git.token.is_empty() {
        return None;
    }
    let options = crate::sources::git::GitOptions::from_config(config);
    Some(match options.token_warning() {
        Some(why) => Check::fail(
            "git token",
            why,
            "set git.token_hosts (TRAWL_GIT_TOKEN_HOSTS=github.com) to the hosts the token is for",
        ),
        None => Check::pass(
            "git token",
            format!(
                "sent over https to {} only",
                config.git.token_hosts.join(", ")
            ),
        ),
    })
}

async fn database_checks(store: &Store, checks: &mut Vec<Check>) {
    match store.server_version().await {
        Ok(v) => {
            let major: u32 = v
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major >= MIN_SERVER_MAJOR {
                checks.push(Check::pass("server version", format!("PostgreSQL {v}")));
            } else {
                checks.push(Check::fail(
                    "server version",
                    format!("PostgreSQL {v} is older than {MIN_SERVER_MAJOR}"),
                    format!("use PostgreSQL {MIN_SERVER_MAJOR} or newer"),
                ));
            }
        }
        Err(e) => checks.push(Check::fail(
            "server version",
            e.to_string(),
            "check the database connection",
        )),
    }
    match store.extension_version("vector").await {
        Ok(Some(v)) => checks.push(Check::pass("pgvector", format!("vector {v}"))),
        Ok(None) => checks.push(Check::fail(
            "pgvector",
            "not installed in the database",
            "run `trawl migrate` as a database superuser",
        )),
        Err(e) => checks.push(Check::fail(
            "pgvector",
            e.to_string(),
            "check the database connection",
        )),
    }
    match store.migration_state().await {
        Ok(s) if s.pending == 0 && s.unknown == 0 => checks.push(Check::pass(
            "migrations current",
            format!("{} applied", s.known),
        )),
        Ok(s) if s.unknown > 0 => checks.push(Check::fail(
            "migrations current",
            format!("{} migrations were applied by a newer trawl", s.unknown),
            "upgrade trawl to the version that migrated this database",
        )),
        Ok(s) => checks.push(Check::fail(
            "migrations current",
            format!("{} pending", s.pending),
            "run `trawl migrate`",
        )),
        Err(e) => checks.push(Check::fail(
            "migrations current",
            e.to_string(),
            "run `trawl migrate`",
        )),
    }
    match store.missing_tables(QUEUE_TABLES).await {
        Ok(missing) if missing.is_empty() => {
            checks.push(Check::pass("queue tables", QUEUE_TABLES.join(", ")))
        }
        Ok(missing) => checks.push(Check::fail(
            "queue tables",
            format!("missing {}", missing.join(", ")),
            "run `trawl migrate`",
        )),
        Err(e) => checks.push(Check::fail(
            "queue tables",
            e.to_string(),
            "run `trawl migrate`",
        )),
    }
}

fn model_check(config: &Config) -> Check {
    if config.embedding.provider != EmbeddingProvider::Local {
        return Check::pass(
            "embedding model",
            format!("HTTP embedder {}", config.embedding.base_url),
        );
    }
    let dir = config.model_dir();
    if config.embedding.kind == crate::config::EmbeddingKind::Static {
        let table = crate::providers::static_model::table_path(&dir);
        return match crate::providers::static_model::StaticEmbedder::load(&dir, &table)
            .and_then(|m| m.embed(&["fn main() {}"]).map(|v| (m.dimension(), v)))
        {
            Ok((dim, v)) if v.first().map(Vec::len) == Some(dim) => Check::pass(
                "embedding model",
                format!(
                    "{} ({dim}-d static table distilled from {}) in {}",
                    crate::providers::static_model_name(&config.embedding.model),
                    config.embedding.model,
                    table.display()
                ),
            ),
            Ok((dim, _)) => Check::fail(
                "embedding model",
                format!("the static table gave vectors not of {dim} dimensions"),
                "run `trawl setup` to distil it again",
            ),
            Err(e) => Check::fail(
                "embedding model",
                e.to_string(),
                "run `trawl setup` (it distils the static table), or set TRAWL_EMBEDDING_KIND=transformer",
            ),
        };
    }
    match LocalEmbedder::load_with(&dir, config.embedding.runtime, &config.onnxruntime_lib())
        .and_then(|m| {
            m.embed(&["fn main() {}"])
                .map(|v| (m.dimension(), m.engine(), v))
        }) {
        Ok((dim, engine, v)) if v.first().map(Vec::len) == Some(dim) => Check::pass(
            "embedding model",
            format!(
                "{} ({dim}-d, on {engine}) in {}",
                config.embedding.model,
                dir.display()
            ),
        ),
        Ok((dim, _, _)) => Check::fail(
            "embedding model",
            format!("the model gave vectors not of {dim} dimensions"),
            "run `trawl setup` to reinstall it",
        ),
        // The configured engine is not in this build: the error names the setting.
        Err(e @ crate::providers::ProviderError::Unavailable(_)) => Check::fail(
            "embedding model",
            e.to_string(),
            "set embedding.runtime (TRAWL_EMBEDDING_RUNTIME) to onnx or auto, or use a build with `--features candle`",
        ),
        Err(e) => Check::fail(
            "embedding model",
            e.to_string(),
            "run `trawl setup`, or set TRAWL_MODEL_DIR to the model's directory",
        ),
    }
}

/// Changes older than this not applied by this node's keyword index fail the check: no
/// process here follows the log.
const KEYWORD_LAG_LIMIT_SECS: f64 = 10.0;

async fn keyword_lag_check(store: &Store, config: &Config) -> Check {
    const NAME: &str = "keyword index follows the database";
    match crate::search::follow::local_lag(store, config).await {
        Ok(lag) if lag.is_none_or(|l| l.pending == 0 || l.seconds <= KEYWORD_LAG_LIMIT_SECS) => {
            Check::pass(NAME, crate::search::follow::describe_lag(lag.as_ref()))
        }
        Ok(lag) => Check::fail(
            NAME,
            crate::search::follow::describe_lag(lag.as_ref()),
            "keep `trawl serve` (or `trawl mcp`) running on this node, or run `trawl search`, \
             which catches up first; `trawl keyword-index rebuild` builds it again",
        ),
        Err(e) => Check::fail(NAME, e.to_string(), "check the database connection"),
    }
}

fn index_dir_check(config: &Config) -> Check {
    let dir = config.index_dir();
    let probe = dir.join(format!(".trawl-doctor-{}", std::process::id()));
    let result = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&probe, b""))
        .and_then(|_| std::fs::remove_file(&probe));
    match result {
        Ok(()) => Check::pass("index directory writable", dir.display().to_string()),
        Err(e) => Check::fail(
            "index directory writable",
            format!("{}: {e}", dir.display()),
            "set TRAWL_INDEX_DIR (or TRAWL_HOME) to a directory you can write to",
        ),
    }
}

async fn provider_checks(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                "HTTP providers",
                e.to_string(),
                "check the TLS set-up",
            )];
        }
    };
    let endpoints = [
        (
            "embedding provider reachable",
            config.embedding.provider == EmbeddingProvider::Http,
            &config.embedding.base_url,
            &config.embedding.api_key,
            "TRAWL_EMBEDDING_BASE_URL",
        ),
        (
            "LLM provider reachable",
            !config.enrich.base_url.is_empty(),
            &config.enrich.base_url,
            &config.enrich.api_key,
            "TRAWL_LLM_BASE_URL",
        ),
    ];
    for (name, configured, base, key, var) in endpoints {
        if !configured {
            continue;
        }
        let url = format!("{}/models", crate::providers::http::api_root(base));
        let mut req = client.get(&url);
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                out.push(Check::pass(name, format!("{base} answered {}", r.status())))
            }
            Ok(r) if r.status().as_u16() == 401 || r.status().as_u16() == 403 => {
                out.push(Check::fail(
                    name,
                    format!("{base} answered {}", r.status()),
                    "check the API key",
                ))
            }
            // Some servers (TEI) have no /models route: an answer still proves reachability.
            Ok(r) => out.push(Check::pass(name, format!("{base} answered {}", r.status()))),
            Err(e) => out.push(Check::fail(
                name,
                format!("{base}: {e}"),
                format!("check that the server runs, or fix {var}"),
            )),
        }
    }
    out
}
