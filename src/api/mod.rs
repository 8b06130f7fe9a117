//! `trawl serve`'s HTTP side: the JSON API under `/api/v1`, the MCP endpoint at `/mcp`, the
//! operator dashboard at `/`, `/metrics` and `/healthz`. Every handler is a thin adapter
//! over the application services the CLI uses (`crate::service`), so the two cannot
//! drift apart.
//!
//! - [`routes`]: the route table and handlers; the router and the OpenAPI document are
//!   both built from the table.
//! - [`error`]: JSON errors with stable codes; extractors that turn bad input into 4xx.
//! - [`openapi`]: the OpenAPI 3.1 document.
//! - [`answers`]: the success answers as types, which the document's response schemas
//!   come from.
//! - [`metrics`]: Prometheus text: queue and stage figures from the database, request and
//!   search latencies from this process.
//! - [`dashboard`]: the operator page (one HTML file, no build step) and its data.

pub mod answers;
pub mod dashboard;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod pipelines;
pub mod routes;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::search::Searcher;
use crate::store::Store;
use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub config: Config,
    /// Its keyword index follows the database's change log while the server runs.
    pub searcher: Arc<Searcher>,
    pub metrics: metrics::Metrics,
    /// The bearer token every route but `/healthz` and the dashboard page `/` requires;
    /// `None` when none is set.
    pub token: Option<String>,
    /// True once the server is stopping: open streams and waits end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The state of a server that stops when `stopping` turns true.
    pub fn new(
        store: Store,
        config: Config,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> AppState {
        let token = Some(config.serve.token.clone()).filter(|t| !t.is_empty());
        let searcher = Arc::new(Searcher::new(store.clone(), config.clone()));
        tokio::spawn(searcher.clone().follow(stopping.clone()));
        AppState(Arc::new(Inner {
            searcher,
            store,
            config,
            metrics: metrics::Metrics::default(),
            token,
            stopping,
        }))
    }

    /// Resolves when the server starts stopping (or whoever could stop it is gone).
    pub async fn stopped(&self) {
        let mut stopping = self.stopping.clone();
        let _ = stopping.wait_for(|s| *s).await;
    }
}

/// Which parts the server answers.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    /// The JSON API under /api/v1.
    pub api: bool,
    /// The operator dashboard at /.
    pub dashboard: bool,
}

/// The router: the routes of [`routes::ROUTES`] that `parts` enables, behind the token
/// check, plus `extra` (the MCP endpoint), also behind it.
pub fn router(state: AppState, parts: Parts, extra: Option<Router>) -> Router {
    let mut public = Router::new();
    let mut protected = Router::new();
    for route in routes::ROUTES {
        let enabled = match route.tag {
            "meta" => true,
            "dashboard" => parts.dashboard,
            _ => parts.api,
        };
        if !enabled {
            continue;
        }
        if route.public {
            public = public.route(route.path, (route.handler)());
        } else {
            protected = protected.route(route.path, (route.handler)());
        }
    }
    let mut protected = protected.with_state(state.clone());
    if let Some(extra) = extra {
        protected = protected.merge(extra);
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    public
        .with_state(state.clone())
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state, observe))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not a method of {}: see /api/v1/openapi.json for the routes",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Refuses what a browser could be tricked into sending. Without a token, a request must
/// be addressed to a loopback host (a web page rebinding its own name to 127.0.0.1 cannot
/// reach the API). With or without one, a browser's cross-site POST is refused (a form on
/// another site cannot cancel runs).
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if state.token.is_none() && !is_loopback_host(host) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            format!(
                "this server has no token, so it answers only requests to localhost, 127.0.0.1 or [::1], not to {host:?}: set TRAWL_API_TOKEN to serve other names"
            ),
        )
        .into_response();
    }
    let safe = matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    // `Origin: null` (a sandboxed frame, a file:// page, a redirect) is foreign too.
    let foreign_origin = headers.get(header::ORIGIN).is_some_and(|v| {
        v.to_str().map_or(true, |origin| {
            origin
                .split_once("://")
                .is_none_or(|(_, authority)| authority != host)
        })
    });
    if !safe && (cross_site || foreign_origin) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a request from another site's page is refused",
        )
        .into_response();
    }
    next.run(request).await
}

/// `localhost`, `127.0.0.1`, `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(
        "no_route",
        format!(
            "no route {} {}: see /api/v1/openapi.json for the routes",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Refuses a request without the right bearer token (`Authorization: Bearer …`; the
/// dashboard page also takes `?token=` so a browser can open it).
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let from_query = (request.uri().path() == "/")
        .then(|| request.uri().query())
        .flatten()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
    let given = bearer.map(str::to_string).or(from_query);
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => unauthorized("the bearer token is wrong").into_response(),
        None => unauthorized(
            "this route needs a bearer token: send Authorization: Bearer <TRAWL_API_TOKEN>",
        )
        .into_response(),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"trawl\""),
    );
    response
}

/// Compares without stopping at the first difference, so the time taken says nothing of
/// how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts and times every request by route and status for `/metrics`.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // A fixed set, so that odd methods cannot grow the metrics without bound.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.metrics.observe_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Why the server would not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {addr} without a token: anyone who reaches it could steer the queue. Set TRAWL_API_TOKEN (or serve.token), or bind a loopback address such as 127.0.0.1:7700"
    )]
    NoTokenOffLoopback { addr: SocketAddr },
    #[error("{bind:?} is not an address to listen on: give host:port, as in 127.0.0.1:7700")]
    BadAddress { bind: String },
    #[error(
        "cannot listen on {addr}: {source}; is another server using the port? Pick another with --bind"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The address to listen on, checked: a non-loopback address needs a token.
pub fn listen_address(bind: &str, token: Option<&str>) -> Result<SocketAddr, ServeError> {
    use std::net::ToSocketAddrs as _;
    let addr = bind
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ServeError::BadAddress {
            bind: bind.to_string(),
        })?;
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(ServeError::NoTokenOffLoopback { addr });
    }
    Ok(addr)
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_no_token_but_any_other_address_does() {
        assert!(listen_address("127.0.0.1:7700", None).is_ok());
        assert!(listen_address("[::1]:7700", None).is_ok());
        let err = listen_address("0.0.0.0:7700", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("TRAWL_API_TOKEN"), "{err}");
        assert!(listen_address("0.0.0.0:7700", Some("")).is_err());
        assert!(listen_address("0.0.0.0:7700", Some("s3cret")).is_ok());
        let err = listen_address("nowhere", None).unwrap_err().to_string();
        assert!(err.contains("host:port"), "{err}");
    }

    #[test]
    fn loopback_hosts_are_told_apart() {
        for host in [
            "localhost",
            "localhost:7700",
            "127.0.0.1:7700",
            "[::1]:7700",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example:7700",
            "10.0.0.1:7700",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
