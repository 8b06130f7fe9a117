-- Vectors of heuristic summaries are no longer made: measured on the semble benchmark,
-- searching them lowered hybrid NDCG@10 (0.831 without them, 0.824 with). Summaries from a
-- chat model keep theirs.
DELETE FROM snippet_vectors v
USING snippet_summaries s
WHERE v.kind = 'summary' AND v.snippet_id = s.snippet_id AND s.source = 'heuristic';
