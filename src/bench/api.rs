//! `trawl bench api --corpus PATH`: the HTTP API's search under concurrent clients.
//!
//! The corpus is indexed into a scratch database (as `bench index` does), then the API is
//! served on a loopback port in this process, with a token, and N clients send
//! `GET /api/v1/search` back to back for a while, in each mode asked, with queries
//! derived from the corpus. Clients and server share this machine's cores, as they would
//! on one host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, Latency, Scratch};
use crate::api::{self, AppState, Parts};
use crate::config::Config;
use crate::pipeline::PipelineContext;
use crate::search::Mode;

/// The scratch database the benchmark creates and drops.
pub const BENCH_DB: &str = "trawl_bench_api";

#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub corpus: std::path::PathBuf,
    /// Concurrent clients.
    pub clients: usize,
    /// How long each mode is measured.
    pub seconds: f64,
    pub modes: Vec<Mode>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiFigure {
    pub mode: Mode,
    pub clients: usize,
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiReport {
    pub corpus: String,
    pub files: i64,
    pub snippets: i64,
    pub figures: Vec<ApiFigure>,
}

pub async fn run(
    config: &Config,
    opts: &ApiOptions,
    mut progress: impl FnMut(&str),
) -> Result<ApiReport, BenchError> {
    let scratch = Scratch::create(config, BENCH_DB, "api", &opts.corpus, &mut progress).await?;
    let result = measure(&scratch, opts, &mut progress).await;
    scratch.remove().await?;
    result
}

async fn measure(
    scratch: &Scratch,
    opts: &ApiOptions,
    progress: &mut impl FnMut(&str),
) -> Result<ApiReport, BenchError> {
    let store = &scratch.store;
    progress("indexing the corpus");
    let ctx = PipelineContext::new(store.clone(), scratch.config.clone());
    let source = scratch.corpus.display().to_string();
    let (run_id, _) = super::index::index_once(&ctx, &scratch.config, &source).await?;
    let repo = store.run(run_id).await?.repository_id;
    let (files, snippets, _) = super::index::counts(store, repo).await?;
    let queries = Arc::new(super::index::corpus_queries(store, 200).await?);
    if queries.is_empty() {
        return Err(BenchError::Input(format!(
            "--corpus {}: no named snippet to derive queries from",
            opts.corpus.display()
        )));
    }

    // The API, served in this process with a token, as a deployment would.
    let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut config = scratch.config.clone();
    config.serve.token = token.clone();
    let (_running, stopping) = tokio::sync::watch::channel(false);
    let state = AppState::new(store.clone(), config, stopping);
    let app = api::router(
        state,
        Parts {
            api: true,
            dashboard: false,
        },
        None,
    );
    let listener = api::bind("127.0.0.1:0".parse().expect("an address"))
        .await
        .map_err(|e| BenchError::Input(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Input(e.to_string()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.clients)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| BenchError::Input(format!("an HTTP client: {e}")))?;

    let mut figures = Vec::new();
    for &mode in &opts.modes {
        let mode_name = serde_json::to_value(mode).expect("modes serialise");
        let mode_name = mode_name.as_str().unwrap_or("hybrid").to_string();
        progress(&format!(
            "{mode_name}: {} clients for {:.0} s",
            opts.clients, opts.seconds
        ));
        let url = format!("http://{addr}/api/v1/search");
        // Warm-up: the keyword reader and the model load on first use.
        let _ = search(&client, &url, &token, &queries[0], &mode_name).await;
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(opts.seconds);
        let mut clients = Vec::new();
        for c in 0..opts.clients {
            let (client, url, token, queries, mode_name) = (
                client.clone(),
                url.clone(),
                token.clone(),
                queries.clone(),
                mode_name.clone(),
            );
            clients.push(tokio::spawn(async move {
                let mut took = Vec::new();
                let mut errors = 0;
                let mut i = c;
                while Instant::now() < deadline {
                    let query = &queries[i % queries.len()];
                    i += QUERY_STRIDE;
                    let t = Instant::now();
                    match search(&client, &url, &token, query, &mode_name).await {
                        Ok(()) => took.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (took, errors)
            }));
        }
        let mut took = Vec::new();
        let mut errors = 0;
        for c in clients {
            let (t, e) = c
                .await
                .map_err(|e| BenchError::Stalled(format!("a client task failed: {e}")))?;
            took.extend(t);
            errors += e;
        }
        let seconds = started.elapsed().as_secs_f64();
        figures.push(ApiFigure {
            mode,
            clients: opts.clients,
            requests: took.len(),
            errors,
            seconds,
            requests_per_sec: took.len() as f64 / seconds,
            latency: Latency::of(&took),
        });
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(ApiReport {
        corpus: opts.corpus.display().to_string(),
        files,
        snippets,
        figures,
    })
}

/// Clients step through the queries by a prime, so they do not ask the same thing in step.
const QUERY_STRIDE: usize = 7;

async fn search(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    mode: &str,
) -> Result<(), String> {
    let encoded: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("q", query)
        .append_pair("mode", mode)
        .append_pair("limit", "10")
        .finish();
    let response = client
        .get(format!("{url}?{encoded}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // Read the whole answer: the latency a client sees.
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}
