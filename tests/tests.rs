//! trawl's integration tests: one binary, one module per area, all against a real
//! PostgreSQL with pgvector (see `support`).

#![allow(clippy::disallowed_methods)]

mod support;

mod api;
mod code;
mod dashboard;
mod foundation;
mod freshness;
mod lifecycle;
mod mcp;
mod pipeline;
mod pipelines;
mod progress;
mod recovery;
mod reindex;
mod repos;
mod scale_out;
mod security;
mod services;
mod watch;
