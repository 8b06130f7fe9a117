//! Application services: one function per use case, called by every adapter (the CLI now;
//! the HTTP API, MCP server and scheduler later). No printing, no argument parsing.

pub mod control;
pub mod index;
pub mod progress;
pub mod reindex;
pub mod reingest;
pub mod scheduler;
