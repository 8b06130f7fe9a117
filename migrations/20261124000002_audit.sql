-- Every operator or user action on indexing, whoever asked: reindex, reingest, pause,
-- resume, cancel, retry. Refused actions are recorded too, with why.
CREATE TABLE audit_log (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- who or what triggered it: cli, api, mcp, scheduler
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    repository_id BIGINT REFERENCES repositories (id) ON DELETE SET NULL,
    run_id        BIGINT REFERENCES runs (id) ON DELETE SET NULL,
    -- what was asked, as given
    parameters    JSONB NOT NULL DEFAULT '{}',
    -- ok, or refused
    outcome       TEXT NOT NULL CHECK (outcome IN ('ok', 'refused')),
    message       TEXT
);
CREATE INDEX audit_log_at ON audit_log (at DESC);
CREATE INDEX audit_log_repository ON audit_log (repository_id, at DESC);
