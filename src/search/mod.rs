//! Search: the keyword index (tantivy), semantic search over code and summary vectors
//! (pgvector), and their fusion by reciprocal rank.
//!
//! One [`Searcher`] serves the CLI, the HTTP API and MCP. Every mode reads only committed
//! state: tantivy readers see the last commit, Postgres the last committed transaction, so a
//! run writing at the same time never shows half a file.

pub mod follow;
pub mod keyword;
pub mod rank;
pub mod tokenizer;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::providers::{Embedder, ProviderError};
use crate::store::snippets::StoredSnippet;
use crate::store::vectors::{SnippetFilter, VectorKind};
use crate::store::{Store, StoreError};
use keyword::{Filters, KeywordError, KeywordIndex};

/// Reciprocal rank fusion's constant: a hit at rank r in one ranking adds 1 / (K + r).
/// A small K lets a ranking's first hits count for much more than its tenth (the usual 60
/// makes ranks 1 and 10 worth almost the same, so the ranking rules' boosts decided
/// alone). Measured, static tier, hybrid NDCG@10: semble benchmark 0.845 at 60, 0.842 at
/// 30, 0.848 at 15, 0.853 at 5; the CodeSearchNet-style stdlib set 0.295 at 60, 0.352 at 5.
const RRF_K: f64 = 5.0;
/// The share of the summary vectors' ranking in the semantic side of a search (the code
/// vectors' ranking has the rest).
const SUMMARY_SHARE: f64 = 0.3;
/// Candidates each ranking contributes to a search, at least.
const MIN_CANDIDATES: usize = 50;
/// How many more keyword candidates to fetch when a path filter is applied afterwards.
const PATH_FILTER_FACTOR: usize = 20;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Keyword, code vectors (and a chat model's summary vectors), fused by weighted
    /// reciprocal rank, then the ranking rules.
    #[default]
    Hybrid,
    /// BM25 over names, doc comments, code and paths.
    Keyword,
    /// Nearest code (and summary) vectors of the query's embedding, then the ranking rules.
    Semantic,
}

/// A search and its filters.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub text: String,
    pub mode: Mode,
    pub repository_ids: Vec<i64>,
    pub languages: Vec<String>,
    pub kinds: Vec<String>,
    /// A glob over repository-relative paths: `*` and `**` match any characters, `?` one;
    /// a pattern without wildcards matches that file or everything under that directory.
    pub path: Option<String>,
    pub limit: usize,
}

/// One result.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Hit {
    pub repository: String,
    pub repository_id: i64,
    pub path: String,
    pub start_line: i32,
    pub end_line: i32,
    pub kind: String,
    pub name: Option<String>,
    pub language: Option<String>,
    pub score: f64,
    pub snippet: String,
    pub snippet_id: i64,
}

/// The results and what the searcher wants the user to know.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Results {
    pub hits: Vec<Hit>,
    pub warnings: Vec<String>,
    pub took_ms: f64,
}

/// The longest query searched, in characters: longer ones are refused, not cut.
pub const MAX_QUERY_CHARS: usize = 2_000;
/// The most distinct words a query may hold (each one is a term of the keyword search).
pub const MAX_QUERY_TERMS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the query is empty: give words or identifiers to search for")]
    EmptyQuery,
    #[error(
        "the query is {chars} characters long, over the limit of {MAX_QUERY_CHARS}: \
         search for fewer words"
    )]
    QueryTooLong { chars: usize },
    #[error(
        "the query holds {terms} distinct words, over the limit of {MAX_QUERY_TERMS}: \
         search for fewer words"
    )]
    TooManyTerms { terms: usize },
    #[error("--path {pattern:?} is not a valid pattern: {detail}")]
    BadPath { pattern: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyword(#[from] KeywordError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// Refuses a query that is empty, too long, or holds too many distinct words, before any
/// work is spent on it (a huge query once took seconds and gigabytes).
pub fn check_query(text: &str) -> Result<(), SearchError> {
    let chars = text.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(SearchError::QueryTooLong { chars });
    }
    let tokens = tokenizer::tokens(text);
    if tokens.is_empty() {
        return Err(SearchError::EmptyQuery);
    }
    let terms = tokens
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if terms > MAX_QUERY_TERMS {
        return Err(SearchError::TooManyTerms { terms });
    }
    Ok(())
}

/// How often a following process looks at the change log without a notification.
pub const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Searches; holds the keyword reader and the embedder, both opened on first use.
pub struct Searcher {
    store: Store,
    config: Config,
    keyword: tokio::sync::OnceCell<Arc<KeywordIndex>>,
    embedder: tokio::sync::OnceCell<QueryEmbedder>,
    /// Each repository's current model, read at most every [`MODELS_TTL`].
    models: std::sync::Mutex<Option<(std::time::Instant, CurrentModels)>>,
}

/// (repository id, the model its current index version was built with), each repository.
type CurrentModels = Arc<Vec<(i64, String)>>;

/// How long the repositories' current models are taken as read: a model change is an
/// embeddings-only run, seconds at the least.
const MODELS_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Most queries one inference call embeds together.
const QUERY_BATCH: usize = 32;

type QueryReply = tokio::sync::oneshot::Sender<Result<Vec<f32>, ProviderError>>;

/// The embedder for queries, coalescing: the queries that arrive while one batch is being
/// embedded go into the next, so concurrent searches (an API under load) share inference
/// calls instead of queueing for the model one by one.
#[derive(Clone)]
struct QueryEmbedder {
    model: String,
    queue: tokio::sync::mpsc::UnboundedSender<(String, QueryReply)>,
}

impl QueryEmbedder {
    /// Starts the batching task; it ends when the last handle is dropped.
    fn start(embedder: Embedder) -> QueryEmbedder {
        let (queue, mut pending) = tokio::sync::mpsc::unbounded_channel::<(String, QueryReply)>();
        let model = embedder.model().to_string();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(QUERY_BATCH);
            while pending.recv_many(&mut batch, QUERY_BATCH).await > 0 {
                let (texts, replies): (Vec<String>, Vec<QueryReply>) = batch.drain(..).unzip();
                match embedder.embed(texts).await {
                    Ok(vectors) => {
                        for (reply, vector) in replies.into_iter().zip(vectors) {
                            let _ = reply.send(Ok(vector));
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(ProviderError::Inference(message.clone())));
                        }
                    }
                }
            }
        });
        QueryEmbedder { model, queue }
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn embed(&self, text: &str) -> Result<Vec<f32>, ProviderError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || ProviderError::Inference("the query embedder stopped".into());
        self.queue
            .send((text.to_string(), reply))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Searcher {
    pub fn new(store: Store, config: Config) -> Searcher {
        Searcher {
            store,
            config,
            keyword: tokio::sync::OnceCell::new(),
            embedder: tokio::sync::OnceCell::new(),
            models: std::sync::Mutex::new(None),
        }
    }

    /// The repositories searched whose current index was built with another model than
    /// `model`: their snippets have no vectors of it, so semantic results miss them.
    async fn stale_repositories(
        &self,
        q: &Query,
        model: &str,
    ) -> Result<Vec<(i64, String)>, SearchError> {
        let cached = self
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < MODELS_TTL)
            .map(|(_, m)| m.clone());
        let models = match cached {
            Some(m) => m,
            None => {
                let m = Arc::new(self.store.current_models().await?);
                *self.models.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((std::time::Instant::now(), m.clone()));
                m
            }
        };
        Ok(models
            .iter()
            .filter(|(repo, m)| {
                m != model && (q.repository_ids.is_empty() || q.repository_ids.contains(repo))
            })
            .cloned()
            .collect())
    }

    /// The keyword index: opened as it is, or created (under the writers' lock, as
    /// creating may clear a directory of another schema) when there is none yet; an index
    /// created so is empty until [`Searcher::catch_up`] builds it.
    async fn keyword(&self) -> Result<Arc<KeywordIndex>, KeywordError> {
        if let Some(index) = self.keyword.get() {
            return Ok(index.clone());
        }
        let dir = self.config.keyword_index_dir();
        if let Ok(index) = KeywordIndex::open_reader(&dir) {
            let index = Arc::new(index);
            return Ok(self.keyword.get_or_init(|| async { index }).await.clone());
        }
        // Taken outside the cell's initialisation: a catch-up holding the lock may be
        // initialising the cell itself (which waits for nothing).
        let _lock = follow::lock(&self.config)
            .await
            .map_err(|e| KeywordError::Open {
                dir: dir.display().to_string(),
                detail: e.to_string(),
            })?;
        self.keyword_locked().await
    }

    /// [`Searcher::keyword`] for a caller that holds the writers' lock already (taking
    /// it again from this process would wait for itself).
    async fn keyword_locked(&self) -> Result<Arc<KeywordIndex>, KeywordError> {
        let dir = self.config.keyword_index_dir();
        self.keyword
            .get_or_try_init(|| async move { KeywordIndex::open(&dir).map(Arc::new) })
            .await
            .cloned()
    }

    /// Applies the keyword changes committed anywhere since this node's index last did
    /// (see [`follow`]); None when another process of this home is at it (it brings the
    /// shared directory up to date).
    pub async fn catch_up(&self) -> Result<Option<follow::CatchUp>, follow::FollowError> {
        let Some(_lock) = follow::try_lock(&self.config)? else {
            return Ok(None);
        };
        let index = self.keyword_locked().await?;
        follow::catch_up(&self.store, &index).await.map(Some)
    }

    /// Follows the change log until `stop` turns true: applies each change as its
    /// notification arrives, and at least every [`FOLLOW_POLL`] (a notification lost with a
    /// connection is made up for by the poll). For a long-running process that searches
    /// (`trawl serve`, `trawl mcp`). It also ends when `stop`'s sender is gone or the
    /// store's pool is closed: there is nobody left to follow for.
    pub async fn follow(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut listener = None;
        loop {
            if *stop.borrow() || self.store.pool().is_closed() {
                return;
            }
            if listener.is_none() {
                match sqlx::postgres::PgListener::connect_with(self.store.pool()).await {
                    Ok(mut l) => match l.listen(crate::store::keyword_log::CHANNEL).await {
                        Ok(()) => listener = Some(l),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for keyword changes; polling")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for keyword changes; polling")
                    }
                }
            }
            match self.catch_up().await {
                Ok(Some(done)) if done.changes > 0 || done.rebuilt => tracing::debug!(
                    changes = done.changes,
                    documents = done.documents,
                    rebuilt = done.rebuilt,
                    applied = done.applied,
                    "the keyword index caught up"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the keyword index could not catch up; trying again")
                }
            }
            let wait = async {
                match listener.as_mut() {
                    Some(l) => {
                        if let Err(e) = l.recv().await {
                            tracing::warn!(error = %e, "the keyword change listener failed; reconnecting");
                            return false;
                        }
                        true
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                kept = wait => if !kept { listener = None },
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                changed = stop.changed() => if changed.is_err() { return },
            }
        }
    }

    async fn embedder(&self) -> Result<QueryEmbedder, ProviderError> {
        self.embedder
            .get_or_try_init(|| async {
                Embedder::load(self.config.clone())
                    .await
                    .map(QueryEmbedder::start)
            })
            .await
            .cloned()
    }

    pub async fn search(&self, q: &Query) -> Result<Results, SearchError> {
        let started = Instant::now();
        check_query(&q.text)?;
        let path_re = q.path.as_deref().map(path_regex).transpose()?;
        let limit = q.limit.max(1);
        // Every mode retrieves more than it shows: the ranking rules choose among them.
        let depth = MIN_CANDIDATES.max(limit * 2);
        let kind = rank::query_kind(&q.text);
        let alpha = rank::semantic_weight(kind);
        let mut warnings = Vec::new();
        // Each ranking with its weight in the fusion.
        let mut rankings: Vec<(Vec<(i64, f64)>, f64)> = Vec::new();

        if q.mode != Mode::Semantic {
            let weight = if q.mode == Mode::Hybrid {
                1.0 - alpha
            } else {
                1.0
            };
            match self.keyword_ranking(q, path_re.as_ref(), depth).await {
                Ok(r) => rankings.push((r, weight)),
                Err(e) if q.mode == Mode::Hybrid => warnings.push(format!(
                    "keyword search is unavailable, results are semantic only: {e}"
                )),
                Err(e) => return Err(e),
            }
        }
        // A hybrid search whose embedder fails (a provider down, say) degrades to its
        // keyword results, with a warning, as it degrades to semantic ones without a
        // keyword index.
        let embedded = if q.mode == Mode::Keyword {
            None
        } else {
            let embedded = async {
                let embedder = self.embedder().await?;
                let vector = embedder.embed(&q.text).await?;
                Ok::<_, ProviderError>((embedder, vector))
            }
            .await;
            match embedded {
                Ok(e) => Some(e),
                Err(e) if q.mode == Mode::Hybrid && !rankings.is_empty() => {
                    warnings.push(format!(
                        "semantic search is unavailable, results are keyword only: {e}"
                    ));
                    None
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Some((embedder, vector)) = embedded {
            let model = embedder.model().to_string();
            let semantic = if q.mode == Mode::Hybrid { alpha } else { 1.0 };
            // A query of tokens the static table does not know embeds to zero: it is
            // near nothing (its cosine distance to everything is undefined).
            let known = vector.iter().any(|x| *x != 0.0);
            if !known {
                warnings.push(format!(
                    "the embedding model knows none of the query's words, so it has no semantic \
                     results{}",
                    if q.mode == Mode::Hybrid {
                        "; these are keyword results"
                    } else {
                        ": try --mode keyword"
                    }
                ));
            }
            // The code and the summary vectors' rankings, asked in one statement.
            let searched: Vec<(VectorKind, f64)> = [
                (VectorKind::Code, 1.0 - SUMMARY_SHARE),
                (VectorKind::Summary, SUMMARY_SHARE),
            ]
            .into_iter()
            .filter(|(_, share)| *share > 0.0 && known)
            .collect();
            let kinds: Vec<VectorKind> = searched.iter().map(|(kind, _)| *kind).collect();
            let found = self
                .store
                .nearest_snippets(
                    &vector,
                    &model,
                    &kinds,
                    &SnippetFilter {
                        repository_ids: &q.repository_ids,
                        languages: &q.languages,
                        kinds: &q.kinds,
                        path_regex: path_re.as_ref().map(|r| r.sql.as_str()),
                    },
                    depth,
                )
                .await?;
            for ((kind, share), ranking) in searched.into_iter().zip(found) {
                tracing::debug!(kind = kind.as_str(), ?ranking, "semantic ranking");
                rankings.push((ranking, semantic * share));
            }
            let stale = self.stale_repositories(q, &model).await?;
            for (repo, other) in &stale {
                warnings.push(format!(
                    "repository {repo} was indexed with model {other}, not the configured {model}: its \
                     snippets are missing from semantic results until `trawl reindex {repo} \
                     --scope embeddings-only` embeds them with {model}"
                ));
            }
            if known
                && stale.is_empty()
                && rankings
                    .iter()
                    .skip(usize::from(q.mode == Mode::Hybrid))
                    .all(|(r, _)| r.is_empty())
            {
                warnings.extend(self.model_warnings(q, &model).await?);
            }
        }

        // A ranking that found nothing (no summary vectors, say) takes no part: one left
        // alone keeps its own scores, which the ranking rules weigh against.
        rankings.retain(|(r, _)| !r.is_empty());
        // Fused, every candidate's snippet is read first (in the one statement that reads
        // the hits' snippets anyway), so a ranking that found another snippet of a
        // snippet's file still speaks for it.
        let (ranked, fetched): (Vec<(i64, f64)>, Option<Snippets>) = if rankings.len() == 1 {
            (rankings.pop().map(|(r, _)| r).unwrap_or_default(), None)
        } else {
            let mut ids: Vec<i64> = rankings
                .iter()
                .flat_map(|(r, _)| r.iter().map(|h| h.0))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let snippets = self.snippets(&ids).await?;
            let files: HashMap<i64, (i64, &str)> = snippets
                .values()
                .map(|s| (s.id, (s.repository_id, s.path.as_str())))
                .collect();
            let fused = fuse_by_files(&rankings, &files);
            (fused, Some(snippets))
        };
        let ranked: Vec<(i64, f64)> = ranked.into_iter().take(depth).collect();
        let mut hits = self.hydrate(&ranked, fetched).await?;
        let candidates = hits
            .iter()
            .map(|h| rank::Candidate {
                id: h.snippet_id,
                score: h.score,
                path: h.path.clone(),
                name: h.name.clone(),
                kind: h.kind.clone(),
                language: h.language.clone(),
            })
            .collect();
        let order = rank::rerank(&q.text, candidates);
        let mut by_id: HashMap<i64, Hit> = hits.drain(..).map(|h| (h.snippet_id, h)).collect();
        let hits: Vec<Hit> = order
            .into_iter()
            .take(limit)
            .filter_map(|c| {
                let mut h = by_id.remove(&c.id)?;
                h.score = (c.score * 1e6).round() / 1e6;
                Some(h)
            })
            .collect();
        Ok(Results {
            hits,
            warnings,
            took_ms: (started.elapsed().as_secs_f64() * 1e5).round() / 100.0,
        })
    }

    async fn keyword_ranking(
        &self,
        q: &Query,
        path_re: Option<&PathPattern>,
        depth: usize,
    ) -> Result<Vec<(i64, f64)>, SearchError> {
        let index = self.keyword().await?;
        let filters = Filters {
            repository_ids: q.repository_ids.clone(),
            languages: q.languages.clone(),
            kinds: q.kinds.clone(),
        };
        let fetch = if path_re.is_some() {
            depth * PATH_FILTER_FACTOR
        } else {
            depth
        };
        let text = q.text.clone();
        let found = tokio::task::spawn_blocking(move || index.search(&text, &filters, fetch))
            .await
            .map_err(|e| KeywordError::Open {
                dir: String::new(),
                detail: e.to_string(),
            })??;
        let Some(re) = path_re else {
            return Ok(found.into_iter().map(|(id, s)| (id, s as f64)).collect());
        };
        // The path filter needs the paths: look them up, keep the matching, in rank order.
        let ids: Vec<i64> = found.iter().map(|f| f.0).collect();
        let paths = self.store.snippet_paths(&ids).await?;
        Ok(found
            .into_iter()
            .filter(|(id, _)| paths.get(id).is_some_and(|p| re.rust.is_match(p)))
            .take(depth)
            .map(|(id, s)| (id, s as f64))
            .collect())
    }

    /// Why a semantic search found nothing: vectors of another model, or none yet.
    async fn model_warnings(&self, q: &Query, model: &str) -> Result<Vec<String>, SearchError> {
        let mut out = Vec::new();
        for (other, dim, n) in self.store.vector_models_of(&q.repository_ids).await? {
            if other != model {
                let (snippets, have) = if n == 1 {
                    ("snippet", "has")
                } else {
                    ("snippets", "have")
                };
                out.push(format!(
                    "{n} {snippets} {have} {dim}-d vectors of model {other}, but the configured model is {model}: \
                     run `trawl reindex <REPO> --scope embeddings-only` to embed them with {model}"
                ));
            }
        }
        Ok(out)
    }

    /// Snippets `ids` that exist, by id.
    async fn snippets(&self, ids: &[i64]) -> Result<Snippets, SearchError> {
        Ok(self
            .store
            .snippets_by_id(ids)
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect())
    }

    /// The hits of `ranked`, from the snippets `fetched` already when given, else read.
    async fn hydrate(
        &self,
        ranked: &[(i64, f64)],
        fetched: Option<Snippets>,
    ) -> Result<Vec<Hit>, SearchError> {
        let mut snippets = match fetched {
            Some(s) => s,
            None => {
                let ids: Vec<i64> = ranked.iter().map(|r| r.0).collect();
                self.snippets(&ids).await?
            }
        };
        let names: HashMap<i64, String> = self
            .store
            .list_repositories()
            .await?
            .into_iter()
            .map(|r| (r.id, r.name))
            .collect();
        Ok(ranked
            .iter()
            .filter_map(|(id, score)| {
                // A snippet deleted since the keyword index's last commit is dropped.
                let s = snippets.remove(id)?;
                Some(Hit {
                    repository: names.get(&s.repository_id).cloned().unwrap_or_default(),
                    repository_id: s.repository_id,
                    path: s.path,
                    start_line: s.start_line,
                    end_line: s.end_line,
                    kind: s.kind,
                    name: s.qualified_name.or(s.name),
                    language: s.language,
                    score: (*score * 1e6).round() / 1e6,
                    snippet: s.code,
                    snippet_id: s.id,
                })
            })
            .collect())
    }
}

/// Reciprocal rank fusion of several rankings (best first); ties keep first-seen order.
pub fn fuse(rankings: &[Vec<(i64, f64)>]) -> Vec<(i64, f64)> {
    let weighted: Vec<(Vec<(i64, f64)>, f64)> = rankings.iter().map(|r| (r.clone(), 1.0)).collect();
    fuse_weighted(&weighted)
}

/// Reciprocal rank fusion with a weight per ranking: a hit at rank r of a ranking of
/// weight w adds w / (K + r).
pub fn fuse_weighted(rankings: &[(Vec<(i64, f64)>, f64)]) -> Vec<(i64, f64)> {
    let mut scores: HashMap<i64, f64> = HashMap::new();
    let mut order: Vec<i64> = Vec::new();
    for (ranking, weight) in rankings {
        for (rank, (id, _)) in ranking.iter().enumerate() {
            let entry = scores.entry(*id).or_insert_with(|| {
                order.push(*id);
                0.0
            });
            *entry += weight / (RRF_K + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(i64, f64)> = order.into_iter().map(|id| (id, scores[&id])).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1));
    fused
}

/// Snippets by id.
type Snippets = HashMap<i64, StoredSnippet>;

/// What a ranking gives a snippet it did not find when it found another of the snippet's
/// file, as a share of what the file's best snippet got there. Measured, static tier,
/// hybrid NDCG@10 (semble benchmark / CodeSearchNet-style stdlib set): 0.855 / 0.337
/// without, 0.860 / 0.341 at 0.5, 0.866 / 0.348 at 0.8, 0.866 / 0.342 at 1.0.
const FILE_CREDIT: f64 = 0.8;

/// Weighted reciprocal rank fusion in which a ranking also speaks for the files it found:
/// a snippet missing from a ranking that ranked another snippet of its file (`files`:
/// snippet id to repository and path) gets [`FILE_CREDIT`] of what that file's best
/// snippet got there. Two rankings that each found a different part of the same file then
/// agree on the file, as a reader would, rather than each voting alone.
pub fn fuse_by_files(
    rankings: &[(Vec<(i64, f64)>, f64)],
    files: &HashMap<i64, (i64, &str)>,
) -> Vec<(i64, f64)> {
    // Per ranking, once: the snippets it found, and each file's best rank in it.
    let found: Vec<HashSet<i64>> = rankings
        .iter()
        .map(|(ranking, _)| ranking.iter().map(|(id, _)| *id).collect())
        .collect();
    let best: Vec<HashMap<(i64, &str), usize>> = rankings
        .iter()
        .map(|(ranking, _)| {
            let mut best = HashMap::new();
            for (rank, (id, _)) in ranking.iter().enumerate() {
                if let Some(file) = files.get(id) {
                    best.entry(*file).or_insert(rank);
                }
            }
            best
        })
        .collect();
    let mut fused = fuse_weighted(rankings);
    for (id, score) in &mut fused {
        let Some(file) = files.get(id) else { continue };
        for ((ids, best), (_, weight)) in found.iter().zip(&best).zip(rankings) {
            if ids.contains(id) {
                continue;
            }
            if let Some(rank) = best.get(file) {
                *score += FILE_CREDIT * weight / (RRF_K + *rank as f64 + 1.0);
            }
        }
    }
    fused.sort_by(|a, b| b.1.total_cmp(&a.1));
    fused
}

/// A `--path` pattern, as a Rust regex and as the equivalent Postgres regex.
#[derive(Debug, Clone)]
pub struct PathPattern {
    pub rust: regex::Regex,
    pub sql: String,
}

/// Turns a path glob into an anchored regex: `*` and `**` match anything (slashes too),
/// `?` one character; a pattern without wildcards matches itself and what is under it.
pub fn path_regex(glob: &str) -> Result<PathPattern, SearchError> {
    let glob = glob.trim().trim_start_matches("./");
    if glob.is_empty() {
        return Err(SearchError::BadPath {
            pattern: glob.to_string(),
            detail: "it is empty".into(),
        });
    }
    let mut re = String::from("^");
    let literal = !glob.contains(['*', '?']);
    for c in glob.chars() {
        match c {
            '*' => {
                if !re.ends_with(".*") {
                    re.push_str(".*");
                }
            }
            '?' => re.push('.'),
            c if c.is_alphanumeric() || c == '/' || c == '_' || c == '-' => re.push(c),
            c => {
                re.push('\\');
                re.push(c);
            }
        }
    }
    if literal {
        let trimmed = re.trim_end_matches('/').to_string();
        re = format!("{trimmed}(/.*)?$");
    } else {
        re.push('$');
    }
    let rust = regex::Regex::new(&re).map_err(|e| SearchError::BadPath {
        pattern: glob.to_string(),
        detail: e.to_string(),
    })?;
    Ok(PathPattern { rust, sql: re })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement() {
        let a = vec![(1, 9.0), (2, 8.0), (3, 7.0)];
        let b = vec![(3, 0.9), (1, 0.8)];
        let fused = fuse(&[a, b]);
        let ids: Vec<i64> = fused.iter().map(|f| f.0).collect();
        assert_eq!(ids, [1, 3, 2]);
        assert!((fused[0].1 - (1.0 / 6.0 + 1.0 / 7.0)).abs() < 1e-12);
    }

    #[test]
    fn a_rankings_first_hit_outweighs_one_both_put_eighth() {
        // Snippet 1 leads the keyword ranking only; snippet 8 is eighth in both.
        let keyword: Vec<(i64, f64)> = [1, 2, 3, 4, 5, 6, 7, 8].map(|id| (id, 1.0)).to_vec();
        let semantic: Vec<(i64, f64)> = [9, 10, 11, 12, 13, 14, 15, 8].map(|id| (id, 1.0)).to_vec();
        let fused = fuse(&[keyword, semantic]);
        let place = |id: i64| fused.iter().position(|f| f.0 == id).unwrap();
        assert!(place(1) < place(8), "{fused:?}");
    }

    #[test]
    fn two_rankings_that_found_different_parts_of_one_file_agree_on_it() {
        // Snippets 1 and 2 are two parts of validator.go; 3 is binding.go. The keyword
        // ranking found part 1 first, the semantic one part 2; both found binding.go second.
        let files: HashMap<i64, (i64, &str)> = [
            (1, (7, "validator.go")),
            (2, (7, "validator.go")),
            (3, (7, "binding.go")),
            (4, (7, "other.go")),
        ]
        .into_iter()
        .collect();
        let keyword = vec![(1, 9.0), (3, 8.0), (4, 7.0)];
        let semantic = vec![(2, 0.9), (3, 0.8), (4, 0.7)];
        let rankings = [(keyword, 0.5), (semantic, 0.5)];
        // By snippets alone, binding.go, second in both, comes first.
        assert_eq!(fuse_weighted(&rankings)[0].0, 3);
        // By files, each part of validator.go has its own first place and a share of the
        // other's: both come before binding.go.
        let fused = fuse_by_files(&rankings, &files);
        let order: Vec<i64> = fused.iter().map(|f| f.0).collect();
        assert_eq!(&order[..3], &[1, 2, 3], "{fused:?}");
        let first = 0.5 / (RRF_K + 1.0);
        assert!((fused[0].1 - first * (1.0 + FILE_CREDIT)).abs() < 1e-12);
        // The same path in another repository is another file.
        let mut elsewhere = files.clone();
        elsewhere.insert(2, (8, "validator.go"));
        assert_eq!(fuse_by_files(&rankings, &elsewhere)[0].0, 3);
        // A snippet whose file is unknown keeps its own score.
        let mut unknown = files.clone();
        unknown.remove(&2);
        let fused = fuse_by_files(&rankings, &unknown);
        let two = fused.iter().find(|f| f.0 == 2).unwrap().1;
        assert!((two - first).abs() < 1e-12);
    }

    #[test]
    fn path_globs() {
        let m = |g: &str, p: &str| path_regex(g).unwrap().rust.is_match(p);
        assert!(m("*.py", "Lib/json/decoder.py"));
        assert!(!m("*.py", "Lib/json/decoder.pyc"));
        assert!(m("src/**/*.rs", "src/a/b.rs"));
        assert!(m("src", "src/a/b.rs"));
        assert!(m("src/", "src/a/b.rs"));
        assert!(!m("src", "srcx/a.rs"));
        assert!(m("a.c", "a.c"));
        assert!(!m("a.c", "abc"));
        assert!(m("lib/??.js", "lib/ab.js"));
        assert!(path_regex("  ").is_err());
    }
}
