//! Vectors in pgvector, and summaries: what CODE_EMBEDDINGS and ENRICH write and semantic
//! search reads.
//!
//! Each vector is stored with its model and dimension. An HNSW cosine index per (model,
//! kind) is created the first time a model stores vectors of that kind: a partial index
//! over `embedding::vector(dim)`, which every query repeats so the planner can use it.

use pgvector::Vector;
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// Which text of a snippet a vector encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorKind {
    Code,
    Summary,
}

impl VectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VectorKind::Code => "code",
            VectorKind::Summary => "summary",
        }
    }
}

/// Text that needs a vector: a snippet's code, or its summary.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingText {
    pub snippet_id: i64,
    pub text: String,
    /// What the vector is computed from: stored with it, so a changed text is re-embedded.
    pub source_hash: String,
}

/// A summary to write.
#[derive(Debug, Clone)]
pub struct NewSummary {
    pub snippet_id: i64,
    pub summary: String,
    pub llm_model: Option<String>,
}

/// A snippet that needs a summary, with what a summary is made from.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SummaryInput {
    pub snippet_id: i64,
    pub path: String,
    pub language: Option<String>,
    pub kind: String,
    pub qualified_name: Option<String>,
    pub signature: Option<String>,
    pub doc: Option<String>,
    pub code: String,
    pub content_hash: String,
}

/// The hash a summary's vector is keyed by.
pub fn text_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HNSW graph's build parameters. Against pgvector's defaults (m 16,
/// ef_construction 64) they make an insert about 2.8 times cheaper (6.4k real 256-d
/// vectors: 1.3 s instead of 3.5 s), which is most of CODE_EMBEDDINGS with a static model.
/// The graph is searched [`EF_SEARCH`] wide (in `nearest_snippets`). Against exact
/// search, for 300 code vectors of other repositories as queries among the 76k of a
/// 1M-line Python corpus (91k in the index), the exact ten nearest are among the 50
/// returned 91.8 % of the time at ef_search 100, 93.1 % at 200 and 91.1 % at 80 (recall@50:
/// 0.860, 0.891, 0.846); on 8.8k stdlib vectors recall@50 is 0.976 at 100 and 0.987 at
/// 200. A query's scan takes about 2.3 ms at 80 or 100 and 3.0 ms at 200 there, and the
/// search quality of 200 and of exact search were measured the same within the noise of
/// the graph's build order.
const HNSW_WITH: &str = "m = 8, ef_construction = 32";

/// `hnsw.ef_search` of a vector search: the candidate list the graph walk keeps (see
/// [`HNSW_WITH`] for what it was chosen by).
const EF_SEARCH: u32 = 100;

/// The name of the HNSW index of one (model, kind), for the build parameters of
/// [`HNSW_WITH`].
fn hnsw_index_name(model: &str, kind: VectorKind, dimension: usize) -> String {
    let h = text_hash(&format!(
        "{model}\u{0}{}\u{0}{dimension}\u{0}{HNSW_WITH}",
        kind.as_str()
    ));
    format!("snippet_vectors_hnsw_{}", &h[..16])
}

/// The name the index had before [`HNSW_WITH`] (pgvector's default parameters): dropped
/// once the new one is built.
fn legacy_hnsw_index_name(model: &str, kind: VectorKind, dimension: usize) -> String {
    let h = text_hash(&format!("{model}\u{0}{}\u{0}{dimension}", kind.as_str()));
    format!("snippet_vectors_hnsw_{}", &h[..16])
}

/// What a snippet's code vector is computed from: a first line of its name and the last
/// two parts of its path (`Router binding/json.go`), then its doc comment (when the code
/// does not hold it already) and its code. The first line was measured to earn its place
/// (static tier, semantic NDCG@10: semble benchmark 0.827 -> 0.843, TypeScript 0.688 ->
/// 0.781; CodeSearchNet-style stdlib set 0.219 -> 0.224): a short snippet's words alone
/// seldom say which part of the program it is.
const CODE_TEXT: &str =
    "concat_ws(' ', coalesce(s.qualified_name, s.name), substring(s.path from '([^/]*/?[^/]+)$'))
     || E'\\n' || CASE WHEN s.doc IS NULL OR position(s.doc IN s.code) > 0 THEN s.code
     ELSE s.doc || E'\\n' || s.code END";

/// The source hash a current code vector is stored with: the snippet's content hash
/// behind the version of [`CODE_TEXT`]'s recipe (`t2:`), so vectors computed by an
/// earlier recipe (the bare content hash) count as lacking and the next embedding pass
/// replaces them, searchable until then.
const CODE_SOURCE: &str = "('t2:' || s.content_hash)";

/// The snippets of repository $1 without a current code vector of model $2 (one stored
/// with [`CODE_SOURCE`]).
const CODE_WITHOUT_VECTOR: &str = "FROM snippets s
     LEFT JOIN snippet_vectors v ON v.snippet_id = s.id AND v.kind = 'code' AND v.model = $2
     WHERE s.repository_id = $1 AND (v.snippet_id IS NULL OR v.source_hash <> ('t2:' || s.content_hash))";

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Which snippets a vector search looks among: none of the lists empty means any.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnippetFilter<'a> {
    pub repository_ids: &'a [i64],
    pub languages: &'a [String],
    pub kinds: &'a [String],
    /// A Postgres regex over repository-relative paths.
    pub path_regex: Option<&'a str>,
}

impl Store {
    /// Up to `limit` snippets of a repository (ids above `after_id`, in id order) whose code
    /// has no vector of `model`, or one computed from other code.
    pub async fn code_without_vectors(
        &self,
        repository_id: i64,
        model: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<PendingText>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT s.id AS snippet_id, {CODE_TEXT} AS text, {CODE_SOURCE} AS source_hash
             {CODE_WITHOUT_VECTOR} AND s.id > $3
             ORDER BY s.id LIMIT $4"
        )))
        .bind(repository_id)
        .bind(model)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks every `kind` vector of `model` of a repository's snippets as computed from
    /// something else, so that the next embedding pass computes them all again. They stay
    /// searchable until each is replaced. Returns how many.
    pub async fn mark_vectors_stale(
        &self,
        repository_id: i64,
        model: &str,
        kind: VectorKind,
    ) -> Result<u64, StoreError> {
        let kind = match kind {
            VectorKind::Code => "code",
            VectorKind::Summary => "summary",
        };
        Ok(sqlx::query(
            "UPDATE snippet_vectors v SET source_hash = 'stale:' || v.source_hash
             FROM snippets s
             WHERE s.id = v.snippet_id AND s.repository_id = $1 AND v.model = $2 AND v.kind = $3
               AND NOT starts_with(v.source_hash, 'stale:')",
        )
        .bind(repository_id)
        .bind(model)
        .bind(kind)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// The code texts of these snippets (those that exist), as embedding takes them.
    pub async fn code_texts(&self, ids: &[i64]) -> Result<Vec<PendingText>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT s.id AS snippet_id, {CODE_TEXT} AS text, {CODE_SOURCE} AS source_hash
             FROM snippets s WHERE s.id = ANY($1) ORDER BY s.id"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many snippets a repository has.
    pub async fn count_snippets(&self, repository_id: i64) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM snippets WHERE repository_id = $1")
                .bind(repository_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// How many snippets of a repository lack a current code vector of `model`.
    pub async fn count_code_without_vectors(
        &self,
        repository_id: i64,
        model: &str,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) {CODE_WITHOUT_VECTOR}"
        )))
        .bind(repository_id)
        .bind(model)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Summaries of a repository without a current vector of `model`.
    pub async fn summaries_without_vectors(
        &self,
        repository_id: i64,
        model: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<PendingText>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT m.snippet_id, m.summary AS text, m.source_hash
             FROM snippet_summaries m
             JOIN snippets s ON s.id = m.snippet_id
             LEFT JOIN snippet_vectors v ON v.snippet_id = m.snippet_id AND v.kind = 'summary' AND v.model = $2
             WHERE s.repository_id = $1 AND m.snippet_id > $3
               AND (v.snippet_id IS NULL OR v.source_hash <> m.source_hash)
             ORDER BY m.snippet_id LIMIT $4",
        )
        .bind(repository_id)
        .bind(model)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores vectors (replacing older ones of the same snippet, kind and model), creating
    /// the model's HNSW index first if this is its first vector of this kind.
    pub async fn store_vectors(
        &self,
        kind: VectorKind,
        model: &str,
        rows: &[(i64, String, Vec<f32>)],
    ) -> Result<(), StoreError> {
        let Some(dimension) = rows.first().map(|r| r.2.len()) else {
            return Ok(());
        };
        if let Some((id, _, v)) = rows.iter().find(|r| r.2.len() != dimension) {
            return Err(StoreError::Invalid(format!(
                "model {model} gave a {}-d vector for snippet {id} and {dimension}-d ones for others",
                v.len()
            )));
        }
        self.ensure_hnsw_index(kind, model, dimension).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let hashes: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
        let vectors: Vec<Vector> = rows.iter().map(|r| Vector::from(r.2.clone())).collect();
        sqlx::query(
            "INSERT INTO snippet_vectors (snippet_id, kind, model, dimension, embedding, source_hash)
             SELECT u.id, $1, $2, $3, u.embedding, u.hash
             FROM UNNEST($4::bigint[], $5::vector[], $6::text[]) AS u(id, embedding, hash)
             JOIN snippets s ON s.id = u.id
             ON CONFLICT (snippet_id, kind, model) DO UPDATE SET
                 dimension = EXCLUDED.dimension, embedding = EXCLUDED.embedding,
                 source_hash = EXCLUDED.source_hash, created_at = now()",
        )
        .bind(kind.as_str())
        .bind(model)
        .bind(dimension as i32)
        .bind(&ids)
        .bind(&vectors)
        .bind(&hashes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Creates the partial HNSW index of (model, kind) unless it exists. Serialised on an
    /// advisory lock so concurrent workers do not race on the catalog.
    async fn ensure_hnsw_index(
        &self,
        kind: VectorKind,
        model: &str,
        dimension: usize,
    ) -> Result<(), StoreError> {
        let name = hnsw_index_name(model, kind, dimension);
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&name)
            .fetch_one(&self.pool)
            .await?;
        if exists {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('trawl.hnsw'))")
            .execute(&mut *tx)
            .await?;
        let sql = format!(
            "CREATE INDEX IF NOT EXISTS {name} ON snippet_vectors
             USING hnsw ((embedding::vector({dimension})) vector_cosine_ops) WITH ({HNSW_WITH})
             WHERE model = {} AND kind = '{}' AND dimension = {dimension}",
            sql_literal(model),
            kind.as_str()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
        // The index built with the old parameters, if any, is replaced by this one.
        let legacy = legacy_hnsw_index_name(model, kind, dimension);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP INDEX IF EXISTS {legacy}"
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` snippets of a repository without a summary of the current content.
    /// Each repository's current index version's model (what its vectors were made with).
    pub async fn current_models(&self) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT ON (repository_id) repository_id, model FROM index_versions
              ORDER BY repository_id, version DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The dimension of the vectors stored under `model` (None: none yet).
    pub async fn stored_dimension(&self, model: &str) -> Result<Option<i32>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT dimension FROM snippet_vectors WHERE model = $1 LIMIT 1")
                .bind(model)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// How many of repository `repository_id`'s snippets want a summary (none, or one of
    /// an older content): what ENRICH has to do.
    pub async fn count_snippets_without_summary(
        &self,
        repository_id: i64,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM snippets s
             LEFT JOIN snippet_summaries m ON m.snippet_id = s.id
             WHERE s.repository_id = $1 AND s.part IS NULL
               AND (m.snippet_id IS NULL OR m.source_hash <> s.content_hash)",
        )
        .bind(repository_id)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn snippets_without_summary(
        &self,
        repository_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<SummaryInput>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.id AS snippet_id, s.path, s.language, s.kind, s.qualified_name, s.signature, s.doc,
                    s.code, s.content_hash
             FROM snippets s
             LEFT JOIN snippet_summaries m ON m.snippet_id = s.id
             WHERE s.repository_id = $1 AND s.id > $2 AND s.part IS NULL
               AND (m.snippet_id IS NULL OR m.source_hash <> s.content_hash)
             ORDER BY s.id LIMIT $3",
        )
        .bind(repository_id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores summaries; `source_hashes` are the snippets' content hashes they describe.
    pub async fn store_summaries(&self, rows: &[(NewSummary, String)]) -> Result<(), StoreError> {
        let ids: Vec<i64> = rows.iter().map(|r| r.0.snippet_id).collect();
        let texts: Vec<String> = rows.iter().map(|r| r.0.summary.clone()).collect();
        let sources: Vec<String> = rows
            .iter()
            .map(|r| {
                if r.0.llm_model.is_some() {
                    "llm"
                } else {
                    "heuristic"
                }
                .to_string()
            })
            .collect();
        let models: Vec<Option<String>> = rows.iter().map(|r| r.0.llm_model.clone()).collect();
        let hashes: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
        sqlx::query(
            "INSERT INTO snippet_summaries (snippet_id, summary, source, model, source_hash)
             SELECT u.* FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
                 AS u(id, summary, source, model, hash)
             JOIN snippets s ON s.id = u.id
             ON CONFLICT (snippet_id) DO UPDATE SET summary = EXCLUDED.summary, source = EXCLUDED.source,
                 model = EXCLUDED.model, source_hash = EXCLUDED.source_hash, created_at = now()",
        )
        .bind(&ids)
        .bind(&texts)
        .bind(&sources)
        .bind(&models)
        .bind(&hashes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// For each of `kinds`, the `limit` snippets whose vectors of that kind and `model` are
    /// nearest (cosine) to `vector`, with their similarity, within `filter`: one ranking per
    /// kind, in the order asked, best first.
    ///
    /// One statement answers every kind (a `UNION ALL` of one ordered scan per kind), and
    /// the scan settings are set in one more round trip: a hybrid search pays four round
    /// trips to the server for its vectors instead of ten.
    pub async fn nearest_snippets(
        &self,
        vector: &[f32],
        model: &str,
        kinds: &[VectorKind],
        filter: &SnippetFilter<'_>,
        limit: usize,
    ) -> Result<Vec<Vec<(i64, f64)>>, StoreError> {
        let dim = vector.len();
        if dim == 0 || kinds.is_empty() {
            return Ok(vec![Vec::new(); kinds.len()]);
        }
        let mut conditions = String::new();
        if !filter.repository_ids.is_empty() {
            conditions.push_str(" AND s.repository_id = ANY($2)");
        }
        if !filter.languages.is_empty() {
            conditions.push_str(" AND s.language = ANY($3)");
        }
        if !filter.kinds.is_empty() {
            conditions.push_str(" AND s.kind = ANY($4)");
        }
        if filter.path_regex.is_some() {
            conditions.push_str(" AND s.path ~ $5");
        }
        // Model, kind and dimension are literals so the planner matches the partial HNSW
        // index of that model and kind (a bind parameter would hide the predicate from it).
        let sql = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                format!(
                    "(SELECT {i} AS ranking, v.snippet_id,
                            (1 - (v.embedding::vector({dim}) <=> $1))::float8 AS score
                     FROM snippet_vectors v JOIN snippets s ON s.id = v.snippet_id
                     WHERE v.model = {} AND v.kind = '{}' AND v.dimension = {dim}{conditions}
                     ORDER BY v.embedding::vector({dim}) <=> $1 LIMIT {})",
                    sql_literal(model),
                    kind.as_str(),
                    limit.max(1)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let mut tx = self.pool.begin().await?;
        // Filters are applied while walking the graph, not after a fixed candidate list
        // (iterative scan); the graph is searched [`EF_SEARCH`] wide.
        sqlx::query(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),
                    set_config('hnsw.ef_search', $1, true)",
        )
        .bind(EF_SEARCH.to_string())
        .execute(&mut *tx)
        .await?;
        let rows: Vec<(i32, i64, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(Vector::from(vector.to_vec()))
            .bind(filter.repository_ids)
            .bind(filter.languages)
            .bind(filter.kinds)
            .bind(filter.path_regex.unwrap_or(""))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut rankings = vec![Vec::new(); kinds.len()];
        for (ranking, id, score) in rows {
            if let Some(r) = usize::try_from(ranking)
                .ok()
                .and_then(|i| rankings.get_mut(i))
            {
                r.push((id, score));
            }
        }
        // relaxed_order may return neighbours slightly out of order.
        for r in &mut rankings {
            r.sort_by(|a: &(i64, f64), b| b.1.total_cmp(&a.1));
        }
        Ok(rankings)
    }

    /// The paths of snippets, by id.
    pub async fn snippet_paths(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, String>, StoreError> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, path FROM snippets WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// The models of the code vectors of some repositories (all when empty), with their
    /// dimension and count.
    pub async fn vector_models_of(
        &self,
        repository_ids: &[i64],
    ) -> Result<Vec<(String, i32, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT v.model, v.dimension, count(*) FROM snippet_vectors v JOIN snippets s ON s.id = v.snippet_id
             WHERE v.kind = 'code' AND (cardinality($1::bigint[]) = 0 OR s.repository_id = ANY($1))
             GROUP BY v.model, v.dimension ORDER BY 3 DESC",
        )
        .bind(repository_ids)
        .fetch_all(&self.pool)
        .await?)
    }
}
