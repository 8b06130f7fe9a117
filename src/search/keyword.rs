//! The keyword index: tantivy over snippets, with the code-aware tokenizer.
//!
//! Derived from Postgres: every document is a stored snippet, and the whole index can be
//! rebuilt from the snippets table. Writes replace a file's documents (delete by the file's
//! term, then add) and become visible to readers only at commit, so a search never sees a
//! half-written file. One writer at a time per directory: callers serialise writes across
//! processes (a file lock beside the directory, see `search::follow`), and [`KeywordIndex`]
//! serialises them within one. Each commit records the last change of the database's
//! keyword change log it applied.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{Bm25StatisticsProvider, BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::tokenizer::{
    CODE_TOKENIZER, CodeTokenizer, EXACT_TOKENIZER, ExactTokenizer, exact_tokens, query_tokens,
};
use crate::store::snippets::StoredSnippet;

/// Bumped when the schema or tokenizer changes: an index of another version is rebuilt.
const SCHEMA_VERSION: &str = "2";
const VERSION_FILE: &str = "trawl-schema-version";
/// Memory the writer may buffer before flushing a segment.
const WRITER_MEMORY: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeywordError {
    #[error("the keyword index in {dir} cannot be used: {detail}")]
    Open { dir: String, detail: String },
    #[error("the keyword index failed: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
}

impl KeywordError {
    /// Whether running the stage again can help: another writer's lock, an I/O error (a
    /// full disk may be freed) or a thread that died may pass; a corrupt or incompatible
    /// index, an unusable directory or a schema mismatch will not (rebuild the index with
    /// `trawl keyword-index rebuild`).
    pub fn is_retryable(&self) -> bool {
        use tantivy::TantivyError as T;
        match self {
            KeywordError::Open { .. } => false,
            KeywordError::Tantivy(e) => matches!(
                e,
                T::LockFailure(..)
                    | T::IoError(_)
                    | T::Poisoned
                    | T::ErrorInThread(_)
                    | T::SystemError(_)
                    | T::OpenReadError(_)
                    | T::OpenWriteError(_)
            ),
        }
    }
}

#[derive(Clone, Copy)]
struct Fields {
    snippet_id: Field,
    repository_id: Field,
    file_key: Field,
    path: Field,
    language: Field,
    kind: Field,
    name: Field,
    doc: Field,
    code: Field,
    /// Identifiers of the name and code as written, case kept.
    exact: Field,
}

/// Filters every search can take.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub repository_ids: Vec<i64>,
    pub languages: Vec<String>,
    pub kinds: Vec<String>,
}

pub struct KeywordIndex {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    writer: Mutex<()>,
    /// Set when the directory was empty, of another schema version, or without the number
    /// of the last change applied: it must be rebuilt from Postgres before incremental
    /// updates make sense.
    needs_rebuild: AtomicBool,
}

/// What a commit records beside the documents: the last change of the database's keyword
/// change log it applied (`store::keyword_log`), so the index and its position in the log
/// move together.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    applied_seq: i64,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(CODE_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        snippet_id: b.add_u64_field("snippet_id", INDEXED | FAST),
        repository_id: b.add_u64_field("repository_id", INDEXED | FAST),
        file_key: b.add_text_field("file_key", STRING),
        path: b.add_text_field("path", text.clone()),
        language: b.add_text_field("language", STRING),
        kind: b.add_text_field("kind", STRING),
        name: b.add_text_field("name", text.clone()),
        doc: b.add_text_field("doc", text.clone()),
        code: b.add_text_field("code", text),
        exact: b.add_text_field(
            "exact",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(EXACT_TOKENIZER)
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        ),
    };
    (b.build(), fields)
}

/// Commits what `writer` holds with the number of the last change applied.
fn commit(writer: &mut IndexWriter, applied: i64) -> Result<(), KeywordError> {
    let payload = serde_json::to_string(&Payload {
        applied_seq: applied,
    })
    .expect("a payload serialises");
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&payload);
    prepared.commit()?;
    Ok(())
}

/// The term that names one file of one repository.
fn file_key(repository_id: i64, path: &str) -> String {
    format!("{repository_id}\u{0}{path}")
}

impl KeywordIndex {
    /// Opens the index in `dir` for writing, creating it (or replacing one of another
    /// schema version). Call it while holding the writers' lock.
    pub fn open(dir: &Path) -> Result<KeywordIndex, KeywordError> {
        KeywordIndex::open_with(dir, true)
    }

    /// Opens the index in `dir` for searching only: never creates or clears it.
    pub fn open_reader(dir: &Path) -> Result<KeywordIndex, KeywordError> {
        KeywordIndex::open_with(dir, false)
    }

    fn open_with(dir: &Path, writable: bool) -> Result<KeywordIndex, KeywordError> {
        let fail = |detail: String| KeywordError::Open {
            dir: dir.display().to_string(),
            detail,
        };
        let version_path = dir.join(VERSION_FILE);
        let version = std::fs::read_to_string(&version_path).ok();
        let fresh = version.as_deref().map(str::trim) != Some(SCHEMA_VERSION);
        if fresh && !writable {
            return Err(fail(
                "it has not been built yet, or by another version of trawl; index a repository, \
                 or run `trawl keyword-index rebuild` to build it from the database"
                    .into(),
            ));
        }
        if fresh && dir.exists() {
            // Derived data of an older schema (or a half-created directory): start over.
            std::fs::remove_dir_all(dir).map_err(|e| fail(format!("cannot clear it: {e}")))?;
        }
        crate::sources::private_dir(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
        let (schema, fields) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(dir).map_err(|e| fail(e.to_string()))?;
        let index = Index::open_or_create(mmap, schema).map_err(|e| fail(e.to_string()))?;
        index.tokenizers().register(CODE_TOKENIZER, CodeTokenizer);
        index.tokenizers().register(EXACT_TOKENIZER, ExactTokenizer);
        if fresh {
            std::fs::write(&version_path, SCHEMA_VERSION)
                .map_err(|e| fail(format!("cannot write {VERSION_FILE}: {e}")))?;
        }
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
            .map_err(|e: tantivy::TantivyError| fail(e.to_string()))?;
        let out = KeywordIndex {
            dir: dir.to_path_buf(),
            index,
            reader,
            fields,
            writer: Mutex::new(()),
            needs_rebuild: AtomicBool::new(fresh),
        };
        if out.applied_seq().is_none() {
            out.needs_rebuild.store(true, Ordering::SeqCst);
        }
        Ok(out)
    }

    /// The last change of the keyword change log the index applied; None for an index
    /// built before it recorded one (it is rebuilt).
    pub fn applied_seq(&self) -> Option<i64> {
        let metas = self.index.load_metas().ok()?;
        let payload = metas.payload?;
        serde_json::from_str::<Payload>(&payload)
            .ok()
            .map(|p| p.applied_seq)
    }

    /// Whether the index must be rebuilt from Postgres (see [`KeywordIndex::rebuild`]).
    pub fn needs_rebuild(&self) -> bool {
        self.needs_rebuild.load(Ordering::SeqCst)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` with the index's writer and commits what it did. Serialised per process;
    /// across processes the caller holds the lock (see the module doc).
    /// The commit records `applied` as the last change applied.
    fn write<T>(
        &self,
        applied: i64,
        f: impl FnOnce(&mut IndexWriter, &Fields) -> Result<T, KeywordError>,
    ) -> Result<T, KeywordError> {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut writer: IndexWriter = self.index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let out = f(&mut writer, &self.fields)?;
        commit(&mut writer, applied)?;
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        Ok(out)
    }

    /// Replaces the documents of `paths` (a repository's files) with `snippets`, the files'
    /// current snippets, in one commit recording `applied`. Returns the number of documents
    /// added.
    pub fn replace_files(
        &self,
        repository_id: i64,
        paths: &[String],
        snippets: &[StoredSnippet],
        applied: i64,
    ) -> Result<usize, KeywordError> {
        self.write(applied, |w, f| {
            for path in paths {
                w.delete_term(Term::from_field_text(
                    f.file_key,
                    &file_key(repository_id, path),
                ));
            }
            add_documents(w, f, snippets)?;
            Ok(snippets.len())
        })
    }

    /// Removes every document of a repository, in one commit recording `applied`.
    pub fn remove_repository(&self, repository_id: i64, applied: i64) -> Result<(), KeywordError> {
        self.write(applied, |w, f| {
            w.delete_term(Term::from_field_u64(f.repository_id, repository_id as u64));
            Ok(())
        })
    }

    /// Removes every document, then adds the snippets `pages` yields until it ends: a
    /// rebuild from Postgres, as of change `applied` of the change log. Nothing is
    /// committed when `pages` reports an error.
    pub fn rebuild<E>(
        &self,
        pages: impl Iterator<Item = Result<Vec<StoredSnippet>, E>>,
        applied: i64,
    ) -> Result<Result<usize, E>, KeywordError> {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut writer: IndexWriter = self.index.writer_with_num_threads(1, WRITER_MEMORY)?;
        writer.delete_all_documents()?;
        let mut added = 0;
        for page in pages {
            match page {
                Ok(page) => {
                    add_documents(&mut writer, &self.fields, &page)?;
                    added += page.len();
                }
                Err(e) => {
                    writer.rollback()?;
                    return Ok(Err(e));
                }
            }
        }
        commit(&mut writer, applied)?;
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        self.needs_rebuild.store(false, Ordering::SeqCst);
        Ok(Ok(added))
    }

    /// Documents in the last committed state.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The best `limit` snippets for `query` as (snippet id, BM25 score), best first.
    /// A match in a name counts most, then in doc comments, then in code and path.
    pub fn search(
        &self,
        query: &str,
        filters: &Filters,
        limit: usize,
    ) -> Result<Vec<(i64, f32)>, KeywordError> {
        let f = &self.fields;
        let mut terms = query_tokens(query);
        terms.sort();
        terms.dedup();
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        // An identifier written exactly as in the code counts double.
        let mut exact = exact_tokens(query);
        exact.sort();
        exact.dedup();
        for t in exact.iter().filter(|t| t.len() > 2) {
            let q = TermQuery::new(
                Term::from_field_text(f.exact, t),
                IndexRecordOption::WithFreqs,
            );
            should.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), 2.0))));
        }
        for t in &terms {
            for (field, boost) in [(f.name, 3.0), (f.doc, 1.5), (f.code, 1.0), (f.path, 0.5)] {
                let q = TermQuery::new(
                    Term::from_field_text(field, t),
                    IndexRecordOption::WithFreqs,
                );
                should.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), boost))));
            }
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, Box::new(BooleanQuery::new(should)))];
        let any_of = |terms: Vec<Term>| -> Box<dyn Query> {
            Box::new(BooleanQuery::new(
                terms
                    .into_iter()
                    .map(|t| {
                        let q: Box<dyn Query> =
                            Box::new(TermQuery::new(t, IndexRecordOption::Basic));
                        (Occur::Should, q)
                    })
                    .collect(),
            ))
        };
        let repositories = (!filters.repository_ids.is_empty()).then(|| {
            any_of(
                filters
                    .repository_ids
                    .iter()
                    .map(|&id| Term::from_field_u64(f.repository_id, id as u64))
                    .collect(),
            )
        });
        if let Some(r) = &repositories {
            clauses.push((Occur::Must, r.box_clone()));
        }
        if !filters.languages.is_empty() {
            let t = filters
                .languages
                .iter()
                .map(|l| Term::from_field_text(f.language, l))
                .collect();
            clauses.push((Occur::Must, any_of(t)));
        }
        if !filters.kinds.is_empty() {
            let t = filters
                .kinds
                .iter()
                .map(|k| Term::from_field_text(f.kind, k))
                .collect();
            clauses.push((Occur::Must, any_of(t)));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let collector = TopDocs::with_limit(limit).order_by_score();
        // A search within some repositories weighs words by how rare they are there, not
        // in everything indexed: "router" says little in a router library.
        let top = match repositories {
            Some(scope) => searcher.search_with_statistics_provider(
                &query,
                &collector,
                &ScopedStatistics {
                    searcher: &searcher,
                    scope,
                    docs: std::cell::OnceCell::new(),
                },
            )?,
            None => searcher.search(&query, &collector)?,
        };
        let mut out = Vec::with_capacity(top.len());
        let mut columns: Vec<Option<tantivy::columnar::Column<u64>>> =
            vec![None; searcher.segment_readers().len()];
        for (score, addr) in top {
            let slot = &mut columns[addr.segment_ord as usize];
            if slot.is_none() {
                *slot = Some(
                    searcher
                        .segment_reader(addr.segment_ord)
                        .fast_fields()
                        .u64("snippet_id")?,
                );
            }
            if let Some(id) = slot.as_ref().and_then(|c| c.first(addr.doc_id)) {
                out.push((id as i64, score));
            }
        }
        Ok(out)
    }
}

/// BM25's statistics over the documents a query `scope` matches (some repositories'):
/// their count and each term's document frequency among them, counted at search time; the
/// average field length stays the whole index's (the total tokens scaled by the share of
/// documents in scope), which keeps the count to one query per term.
struct ScopedStatistics<'a> {
    searcher: &'a tantivy::Searcher,
    scope: Box<dyn Query>,
    /// The documents in scope, counted once (every term's weight asks).
    docs: std::cell::OnceCell<u64>,
}

impl ScopedStatistics<'_> {
    fn count(&self, also: Option<&Term>) -> tantivy::Result<u64> {
        let query: Box<dyn Query> = match also {
            None => self.scope.box_clone(),
            Some(term) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, self.scope.box_clone()),
                (
                    Occur::Must,
                    Box::new(TermQuery::new(term.clone(), IndexRecordOption::Basic)),
                ),
            ])),
        };
        Ok(self.searcher.search(&query, &Count)? as u64)
    }
}

impl Bm25StatisticsProvider for ScopedStatistics<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let all = Bm25StatisticsProvider::total_num_tokens(self.searcher, field)?;
        let docs = Bm25StatisticsProvider::total_num_docs(self.searcher)?.max(1);
        let scoped = self.total_num_docs()?;
        Ok(((all as f64) * scoped as f64 / docs as f64).round() as u64)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        if let Some(n) = self.docs.get() {
            return Ok(*n);
        }
        let n = self.count(None)?;
        Ok(*self.docs.get_or_init(|| n))
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        self.count(Some(term))
    }
}

fn add_documents(
    w: &mut IndexWriter,
    f: &Fields,
    snippets: &[StoredSnippet],
) -> Result<(), KeywordError> {
    for s in snippets {
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.snippet_id, s.id as u64);
        doc.add_u64(f.repository_id, s.repository_id as u64);
        doc.add_text(f.file_key, file_key(s.repository_id, &s.path));
        doc.add_text(f.path, &s.path);
        if let Some(l) = &s.language {
            doc.add_text(f.language, l);
        }
        doc.add_text(f.kind, &s.kind);
        if let Some(n) = s.qualified_name.as_ref().or(s.name.as_ref()) {
            doc.add_text(f.name, n);
        }
        if let Some(d) = &s.doc {
            doc.add_text(f.doc, d);
        }
        doc.add_text(f.code, &s.code);
        if let Some(n) = &s.name {
            doc.add_text(f.exact, n);
        }
        doc.add_text(f.exact, &s.code);
        w.add_document(doc)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another writer's lock may pass, so the stage retries; a corrupt index will not, so
    /// it fails for good (and says to rebuild).
    #[test]
    fn lock_contention_is_retryable_and_corruption_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = KeywordIndex::open(dir.path()).unwrap();
        let b = KeywordIndex::open(dir.path()).unwrap();
        let held: IndexWriter = a.index.writer_with_num_threads(1, WRITER_MEMORY).unwrap();
        let err = b.replace_files(1, &[], &file_version(0), 1).unwrap_err();
        assert!(
            matches!(
                err,
                KeywordError::Tantivy(tantivy::TantivyError::LockFailure(..))
            ),
            "{err}"
        );
        assert!(err.is_retryable(), "{err}");
        drop(held);
        b.replace_files(1, &[], &file_version(0), 1).unwrap();
        drop((a, b));

        std::fs::write(dir.path().join("meta.json"), "{ not json").unwrap();
        let err = KeywordIndex::open(dir.path())
            .err()
            .expect("a corrupt index does not open");
        assert!(!err.is_retryable(), "{err}");
    }

    /// Version `v` of one file's snippets: the same two functions, bodies naming `v`, new
    /// snippet ids each time (as re-extracting a changed file gives).
    fn file_version(v: i64) -> Vec<StoredSnippet> {
        ["alpha_function", "beta_function"]
            .iter()
            .enumerate()
            .map(|(k, name)| StoredSnippet {
                id: v * 10 + k as i64 + 1,
                repository_id: 1,
                path: "pkg/mod.py".into(),
                language: Some("python".into()),
                kind: "function".into(),
                name: Some((*name).into()),
                parent_name: None,
                qualified_name: Some((*name).into()),
                start_line: 1,
                end_line: 3,
                doc: None,
                signature: None,
                code: format!("def {name}():\n    return generation_{v}\n"),
                part: None,
                content_hash: format!("{v}-{k}"),
            })
            .collect()
    }

    /// A snippet of repository `repo` in file `path` whose code is `code`.
    fn snippet(id: i64, repo: i64, path: &str, code: &str) -> StoredSnippet {
        StoredSnippet {
            id,
            repository_id: repo,
            path: path.into(),
            language: Some("python".into()),
            kind: "chunk".into(),
            name: None,
            parent_name: None,
            qualified_name: None,
            start_line: 1,
            end_line: 1,
            doc: None,
            signature: None,
            code: code.into(),
            part: None,
            content_hash: id.to_string(),
        }
    }

    /// Within one repository a word is weighed by how rare it is there: in a router
    /// library, "router" says little and "timeout" much, however common "timeout" is in
    /// another repository. Searching everything weighs by the whole index.
    #[test]
    fn a_repository_search_weighs_words_by_their_rarity_in_that_repository() {
        let dir = tempfile::tempdir().unwrap();
        let index = KeywordIndex::open(dir.path()).unwrap();
        let routers: Vec<StoredSnippet> = (1..=3)
            .map(|i| snippet(i, 1, &format!("r{i}.py"), "router dispatch"))
            .chain([snippet(4, 1, "t.py", "timeout dispatch")])
            .collect();
        let paths: Vec<String> = routers.iter().map(|s| s.path.clone()).collect();
        index.replace_files(1, &paths, &routers, 1).unwrap();
        let timeouts: Vec<StoredSnippet> = (0..20)
            .map(|i| snippet(100 + i, 2, &format!("o{i}.py"), "timeout wait"))
            .collect();
        let paths: Vec<String> = timeouts.iter().map(|s| s.path.clone()).collect();
        index.replace_files(2, &paths, &timeouts, 2).unwrap();

        let in_repo = Filters {
            repository_ids: vec![1],
            ..Filters::default()
        };
        let hits = index.search("router timeout", &in_repo, 10).unwrap();
        assert_eq!(hits.first().map(|h| h.0), Some(4), "{hits:?}");
        assert_eq!(hits.len(), 4, "{hits:?}");
        // Over both repositories "timeout" is the common word and "router" the rare one.
        let everywhere = index
            .search("router timeout", &Filters::default(), 30)
            .unwrap();
        assert!(
            [1, 2, 3].contains(&everywhere[0].0),
            "{:?}",
            &everywhere[..4]
        );
        // A repository filter with two repositories counts over both.
        let both = Filters {
            repository_ids: vec![1, 2],
            ..Filters::default()
        };
        assert_eq!(
            index.search("router timeout", &both, 30).unwrap()[0].0,
            everywhere[0].0
        );
        // A repository with no documents: nothing, no error.
        let none = Filters {
            repository_ids: vec![99],
            ..Filters::default()
        };
        assert!(
            index
                .search("router timeout", &none, 10)
                .unwrap()
                .is_empty()
        );
    }

    /// A search while a file's documents are replaced commit after commit sees the old
    /// version or the new one, whole: never the file missing, never it twice. The reader
    /// is a second instance on the directory, as `trawl search` in another process is,
    /// and picks up the last commit by itself.
    #[test]
    fn searches_during_writes_see_whole_commits_and_readers_reload() {
        let dir = tempfile::tempdir().unwrap();
        let writer = KeywordIndex::open(dir.path()).unwrap();
        let paths = vec!["pkg/mod.py".to_string()];
        writer
            .replace_files(1, &paths, &file_version(0), 0)
            .unwrap();
        let reader = KeywordIndex::open_reader(dir.path()).unwrap();
        const VERSIONS: i64 = 60;
        let done = std::sync::atomic::AtomicBool::new(false);
        let searches = std::thread::scope(|scope| {
            let searching = scope.spawn(|| {
                let mut searches = 0;
                while !done.load(Ordering::SeqCst) {
                    for name in ["alpha_function", "beta_function"] {
                        let hits = reader.search(name, &Filters::default(), 10).unwrap();
                        let exact: Vec<_> = hits
                            .iter()
                            .filter(|(id, _)| {
                                id % 10 == if name == "alpha_function" { 1 } else { 2 }
                            })
                            .collect();
                        assert_eq!(exact.len(), 1, "{name}: {hits:?}");
                        assert_eq!(
                            hits.len(),
                            2,
                            "{name}: the file's two snippets, whole: {hits:?}"
                        );
                    }
                    searches += 1;
                }
                searches
            });
            for v in 1..=VERSIONS {
                writer
                    .replace_files(1, &paths, &file_version(v), v)
                    .unwrap();
            }
            done.store(true, Ordering::SeqCst);
            searching.join().unwrap()
        });
        assert!(searches > 10, "the reader searched only {searches} times");
        // Each commit records the last change it applied, with its documents.
        assert_eq!(writer.applied_seq(), Some(VERSIONS));
        assert!(!KeywordIndex::open(dir.path()).unwrap().needs_rebuild());
        // The other instance reloads on its own after the last commit.
        let last = format!("generation_{VERSIONS}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let hits = reader.search(&last, &Filters::default(), 10).unwrap();
            if hits.len() == 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the reader never saw {last}: {hits:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(writer.num_docs(), 2);
    }
}
