# Developer recipes. `cargo install just --locked` if you do not have just.

# The suite, as CI runs it.
test:
    cargo test --locked

# Install PostgreSQL + pgvector and the embedding model into trawl's home.
setup:
    cargo run --release -- setup

# Check the installation.
doctor:
    cargo run --release -- doctor

lint:
    cargo fmt --check
    cargo clippy --all-targets --locked -- -D warnings
