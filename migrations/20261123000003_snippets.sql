-- What EXTRACT, CODE_EMBEDDINGS and ENRICH produce: snippets, their vectors and summaries,
-- and the index versions a successful run stamps.

-- A definition (function, method, class, …) or a line window of a file.
CREATE TABLE snippets (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository_id  BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    path           TEXT NOT NULL,
    -- position in the file's list of snippets
    ordinal        INT NOT NULL,
    language       TEXT,
    kind           TEXT NOT NULL,
    name           TEXT,
    -- the enclosing container's qualified name
    parent_name    TEXT,
    qualified_name TEXT,
    -- 1-based, inclusive
    start_line     INT NOT NULL,
    end_line       INT NOT NULL,
    doc            TEXT,
    signature      TEXT,
    code           TEXT NOT NULL,
    -- a part (1..) of a long definition, and the whole it belongs to
    part           INT,
    whole_id       BIGINT REFERENCES snippets (id) ON DELETE SET NULL,
    -- sha-256 over kind, qualified name, doc and code: a definition that only moved keeps
    -- its hash, and so its id and its vectors
    content_hash   TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX snippets_file ON snippets (repository_id, path);
CREATE INDEX snippets_whole ON snippets (whole_id) WHERE whole_id IS NOT NULL;

-- Vectors of a snippet: its code ('code') or its summary ('summary'), per model. Vectors of
-- different models never meet in one search: every query names the model. An HNSW index
-- per (model, kind) is created when a model first stores vectors (see store::vectors).
CREATE TABLE snippet_vectors (
    snippet_id BIGINT NOT NULL REFERENCES snippets (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('code', 'summary')),
    model      TEXT NOT NULL,
    dimension  INT NOT NULL,
    embedding  vector NOT NULL,
    -- the snippet's content_hash (or the summary's hash) the vector was computed from
    source_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (snippet_id, kind, model)
);
CREATE INDEX snippet_vectors_model ON snippet_vectors (model, kind);

-- What a snippet does, in a paragraph: from an LLM, or a heuristic when none is configured.
CREATE TABLE snippet_summaries (
    snippet_id  BIGINT PRIMARY KEY REFERENCES snippets (id) ON DELETE CASCADE,
    summary     TEXT NOT NULL,
    -- 'llm' or 'heuristic'
    source      TEXT NOT NULL CHECK (source IN ('llm', 'heuristic')),
    -- the chat model that wrote it; NULL for heuristic summaries
    model       TEXT,
    source_hash TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A repository's index after a fully successful run.
CREATE TABLE index_versions (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    version       INT NOT NULL,
    run_id        BIGINT REFERENCES runs (id) ON DELETE SET NULL,
    built_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    files         INT NOT NULL,
    snippets      INT NOT NULL,
    vectors       INT NOT NULL,
    -- sha-256 over the sorted (path, content hash) pairs of the indexed files
    checksum      TEXT NOT NULL,
    model         TEXT NOT NULL,
    PRIMARY KEY (repository_id, version),
    UNIQUE (run_id)
);
