-- trawl's own schema. apalis' queue tables live in the `apalis` schema and are created by
-- apalis-postgres' own migrations, run right after these.
CREATE EXTENSION IF NOT EXISTS vector;
-- apalis-postgres stores job metadata as hstore; creating it here lets a database owner
-- without superuser rights run the queue's migrations (hstore is a trusted extension).
CREATE EXTENSION IF NOT EXISTS hstore;

-- A repository: a local directory indexed in place, or a git URL cloned under trawl's home.
CREATE TABLE repositories (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_kind  TEXT NOT NULL CHECK (source_kind IN ('directory', 'git')),
    -- canonical absolute path, or the URL as given (credentials never stored)
    source       TEXT NOT NULL,
    -- branch, tag or commit for git sources; '' for the default branch and directories
    git_ref      TEXT NOT NULL DEFAULT '',
    name         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_synced_at TIMESTAMPTZ,
    UNIQUE (source, git_ref)
);
