-- Scale-out: everything a stage needs comes from the database, on whichever node takes it.

-- File contents, content-addressed by their hex sha-256 (files.content_hash): SYNC stores
-- each new content once, whatever repository or run it came from, and EXTRACT reads them
-- from here instead of from a working copy that may be on another node. Compressed by
-- TOAST (pglz: this build has no lz4).
CREATE TABLE file_contents (
    hash       TEXT PRIMARY KEY,
    content    BYTEA NOT NULL,
    -- when a sync last stored or found it: the sweep leaves recently touched contents alone,
    -- so a sync that found a content present and is about to reference it never loses it
    touched_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX files_content_hash ON files (content_hash) WHERE content_hash IS NOT NULL;

-- The content each item of a run had when its SYNC read it: EXTRACT parses exactly that,
-- whatever a later sync (or the forgetting of a failed run's hashes) wrote on the files row.
ALTER TABLE run_items ADD COLUMN content_hash TEXT;
CREATE INDEX run_items_unextracted_content ON run_items (content_hash)
    WHERE status IN ('pending', 'failed');

-- Contents a sync stopped referencing: swept (deleted when no file references them) once
-- they are old enough (see file_contents.touched_at).
CREATE TABLE file_content_garbage (
    hash  TEXT PRIMARY KEY,
    since TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The keyword index's change log: BM25_INDEX publishes one change per run (the files whose
-- documents must be replaced by their current snippets), and every node's keyword index
-- applies the changes after the last one it applied, in seq order. Changes are numbered
-- under an advisory lock, so seq order is commit order and a follower never skips one that
-- commits late.
CREATE SEQUENCE keyword_changes_seq;
CREATE TABLE keyword_changes (
    seq           BIGINT PRIMARY KEY,
    repository_id BIGINT NOT NULL,
    run_id        BIGINT,
    -- relative paths; NULL means every file of the repository (it was removed)
    paths         TEXT[],
    committed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What the process that asked for a run was configured with (embedding model and provider,
-- file-size limit, ignore rules): every worker follows these, or refuses the job.
ALTER TABLE runs ADD COLUMN settings JSONB;

-- At most one run of a repository works at a time: the run holding the lease. Taken when a
-- stage of the run begins, given up when the run ends; a run whose worker died keeps it.
ALTER TABLE repositories ADD COLUMN lease_run_id BIGINT;

-- trawl_claim_stages gains the stages a worker takes (lifecycle.sql defines the new one).
DROP FUNCTION IF EXISTS trawl_claim_stages(TEXT, TEXT, INT, TIMESTAMPTZ);
