-- EXTRACT records, per file, its non-blank lines and how many of them some snippet covers,
-- so `trawl status` can report a repository's coverage. NULL: not extracted since.
ALTER TABLE files ADD COLUMN lines_total INT, ADD COLUMN lines_covered INT;
