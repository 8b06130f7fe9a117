//! trawl's integration tests: one binary, one module per area, all against a real
//! PostgreSQL with pgvector (see `support`).

mod support;

mod code;
mod foundation;
mod pipeline;
mod recovery;
mod reindex;
