use std::time::Duration;

use anyhow::Context as _;

use crate::api::{self, AppState, Parts};
use crate::config::Config;
use crate::database;
use crate::pipeline::{PipelineContext, worker};
use crate::service::scheduler;

/// Serve the HTTP API, the MCP endpoint, the operator dashboard and /metrics, and run
/// stage workers and the scheduler, in one process.
///
/// Every route but /healthz and the dashboard page / (which holds no data; its script asks
/// the API with the token) needs `Authorization: Bearer <token>` when a token is set
/// (TRAWL_API_TOKEN or serve.token); a non-loopback --bind is refused without one. The
/// dashboard opens at http://ADDR/?token=TOKEN. Each part can be turned off, so API nodes
/// and worker nodes can run apart against one database. SIGTERM or SIGINT stops taking
/// new requests and jobs, lets what runs finish (workers: up to
/// worker.shutdown_timeout_secs), and exits 0 (1 when a worker or the watch stopped
/// abnormally). With --watch it also keeps directory sources fresh as `trawl watch` does.
///
/// Examples:
///
///   trawl serve
///
///   TRAWL_API_TOKEN=s3cret trawl serve --bind 0.0.0.0:7700 --workers 0
///
///   trawl serve --no-api --no-dashboard --no-mcp --workers 4
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address and port to listen on (default: serve.bind, 127.0.0.1:7700).
    #[arg(long, value_name = "HOST:PORT")]
    bind: Option<String>,
    /// Stage jobs this process runs at once; 0 runs no worker (default: worker.concurrency).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Run no scheduler (background syncs are enqueued elsewhere, or not at all).
    #[arg(long)]
    no_scheduler: bool,
    /// Serve no JSON API under /api/v1 (the dashboard needs it, so it goes too).
    #[arg(long)]
    no_api: bool,
    /// Serve no MCP endpoint at /mcp.
    #[arg(long)]
    no_mcp: bool,
    /// Serve no dashboard at /.
    #[arg(long)]
    no_dashboard: bool,
    /// Also watch every directory source and reindex what changes, as `trawl watch` does
    /// (its events go to the log).
    #[arg(long)]
    watch: bool,
    /// Print the address once listening, as JSON ({"listening": "127.0.0.1:7700"}).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<i32> {
    let signalled = super::worker::shutdown_signal();
    let bind = args
        .bind
        .clone()
        .unwrap_or_else(|| config.serve.bind.clone());
    let token = Some(config.serve.token.as_str()).filter(|t| !t.is_empty());
    let addr = api::listen_address(&bind, token)?;
    // The pool serves the API and the scheduler as well as the worker's slots.
    let workers = args.workers.unwrap_or(config.worker.concurrency);
    let config = &crate::pipeline::worker::sized_for(config, workers, 4);
    let store = database::open(config).await?;
    let listener = api::bind(addr).await?;
    let local = listener.local_addr().context("the listening address")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_watch = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_watch.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let state = AppState::new(store.clone(), config.clone(), stop_rx.clone());
    let parts = Parts {
        api: !args.no_api,
        dashboard: !args.no_api && !args.no_dashboard,
    };
    let mcp = (!args.no_mcp).then(|| crate::mcp::http_router(state.clone(), stopped()));
    let app = api::router(state, parts, mcp);
    let server = tokio::spawn({
        let stopped = stopped();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }
    });

    let concurrency = workers;
    let worker = (concurrency > 0).then(|| {
        let ctx = PipelineContext::new(store.clone(), config.clone());
        tokio::spawn(worker::run(ctx, concurrency, stopped()))
    });
    let scheduler = (!args.no_scheduler)
        .then(|| tokio::spawn(run_scheduler(store.clone(), config.clone(), stopped())));
    let watcher = args.watch.then(|| {
        let options = crate::service::watch::WatchOptions {
            actor: "serve".into(),
            ..Default::default()
        };
        tokio::spawn(crate::service::watch::watch(
            store.clone(),
            config.clone(),
            options,
            log_watch_event,
            stopped(),
        ))
    });

    if args.json {
        println!("{}", serde_json::json!({ "listening": local.to_string() }));
    } else {
        println!(
            "trawl serving on http://{local} (API {}, MCP {}, dashboard {}, {} worker slots, scheduler {}, watch {})",
            on(parts.api),
            on(!args.no_mcp),
            on(parts.dashboard),
            concurrency,
            on(!args.no_scheduler),
            on(args.watch)
        );
    }
    tracing::info!(%local, "listening");

    let mut server = server;
    tokio::select! {
        _ = signalled => {}
        // The server cannot stop on its own; if it does, it failed.
        ended = &mut server => {
            let _ = stop_tx.send(true);
            ended.context("the HTTP server task")?.context("the HTTP server")?;
            anyhow::bail!("the HTTP server stopped on its own");
        }
    }
    let _ = stop_tx.send(true);
    let mut failed = false;
    if let Some(worker) = worker
        && let Err(e) = worker.await.context("the worker task")?
    {
        tracing::error!(error = %e, "the worker stopped abnormally");
        failed = true;
    }
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    if let Some(watcher) = watcher
        && let Err(e) = watcher.await.context("the watch task")?
    {
        tracing::error!(error = %e, "the watch stopped abnormally");
        failed = true;
    }
    // Open streams end when they see the stop; a connection that still will not close is
    // not waited on for ever.
    match tokio::time::timeout(Duration::from_secs(10), &mut server).await {
        Ok(ended) => ended
            .context("the HTTP server task")?
            .context("the HTTP server")?,
        Err(_) => {
            tracing::warn!("connections still open 10 s after the stop: closing them");
            server.abort();
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// A watch event in the log: warnings as warnings, the rest as information.
fn log_watch_event(e: crate::service::watch::WatchEvent) {
    let json = serde_json::to_string(&e).unwrap_or_default();
    match e {
        crate::service::watch::WatchEvent::Warning { .. }
        | crate::service::watch::WatchEvent::Gone { .. } => {
            tracing::warn!(event = %json, "watch")
        }
        _ => tracing::info!(event = %json, "watch"),
    }
}

fn on(enabled: bool) -> &'static str {
    if enabled { "on" } else { "off" }
}

/// Enqueues background syncs at the scheduler's interval until `stop` resolves. A failed
/// look is logged and tried again at the next tick.
async fn run_scheduler(
    store: crate::store::Store,
    config: Config,
    stop: impl std::future::Future<Output = ()>,
) {
    let every = Duration::from_secs(config.scheduler.every_secs);
    let period = scheduler::tick_period(every);
    tokio::pin!(stop);
    loop {
        match scheduler::tick(
            &store,
            every,
            config.worker.max_attempts,
            &config.run_settings(),
        )
        .await
        {
            Ok(tick) => {
                for (repo, run) in &tick.enqueued {
                    tracing::info!(repository = repo, run, "background run queued");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the scheduler could not look for due repositories")
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}
