-- The progress of runs, a row per stage start and per batch, as stages report it: the
-- source of the progress snapshots (`trawl runs watch`, `--wait --json`), so that a
-- follower sees every batch, however quick, not only the state it happens to poll.
CREATE TABLE run_progress (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage        TEXT NOT NULL,
    items_total  INT NOT NULL,
    items_done   INT NOT NULL,
    items_failed INT NOT NULL,
    current_item TEXT,
    at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX run_progress_run ON run_progress (run_id, id);
