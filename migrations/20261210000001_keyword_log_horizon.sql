-- The keyword change log is pruned: changes older than its retention (and not among the
-- newest kept) are deleted, and the highest number deleted is recorded here. A follower
-- whose index applied less than it has lost changes and rebuilds from the snippets table
-- instead of applying the ones left.
CREATE TABLE keyword_log_horizon (
    only_row       BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    pruned_through BIGINT NOT NULL DEFAULT 0
);
INSERT INTO keyword_log_horizon (only_row, pruned_through) VALUES (true, 0);
