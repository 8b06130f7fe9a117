//! Working copies: where a repository's files are read from. A local directory is read in
//! place; git URLs are cloned under trawl's home ([`git`]).

pub mod directory;
pub mod git;
