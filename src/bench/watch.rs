//! `trawl bench watch --corpus PATH`: how long a save takes to become searchable under
//! `trawl watch`, as a person at an editor meets it.
//!
//! A copy of the corpus is indexed into a scratch database; then a watch and a worker run
//! in this process, as `trawl watch` runs them, and the benchmark saves one file at a time
//! (a new function appended, written the way an editor's atomic save does: a temporary
//! file renamed over the original) and searches until the function is found by keyword
//! and by meaning. Then files are deleted, and searched for until they are gone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, Latency};
use crate::config::Config;
use crate::pipeline::{PipelineContext, worker};
use crate::search::{Mode, Query, Searcher};
use crate::service::watch::{self, WatchOptions};
use crate::store::Store;

/// The scratch database the benchmark creates and drops.
pub const BENCH_DB: &str = "trawl_bench_watch";
/// How long one probe may take before the benchmark gives up on it.
const GIVE_UP: Duration = Duration::from_secs(60);
/// Between two searches of one probe.
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct WatchBenchOptions {
    pub corpus: PathBuf,
    /// Saves measured.
    pub saves: usize,
    /// Deletions measured.
    pub deletes: usize,
    /// Stage workers in this process.
    pub workers: usize,
    /// Pause between one probe's end and the next save.
    pub pause: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct WatchReport {
    pub corpus: String,
    pub files: i64,
    pub lines: i64,
    pub snippets: i64,
    pub initial_index_seconds: f64,
    /// Save → found by keyword search.
    pub save_to_keyword: Latency,
    /// Save → found by semantic search.
    pub save_to_semantic: Latency,
    /// Save → found by both: what "searchable" means.
    pub save_to_searchable: Latency,
    /// Deletion → no longer found by keyword search.
    pub delete_to_gone: Latency,
    /// Runs the watch enqueued for the saves and deletions (a catch-up run not counted).
    pub runs: i64,
    pub backend: String,
}

pub async fn run(
    config: &Config,
    opts: &WatchBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<WatchReport, BenchError> {
    let scratch =
        super::Scratch::create(config, BENCH_DB, "watch", &opts.corpus, &mut progress).await?;
    let result = measure(
        &scratch.config,
        &scratch.store,
        &scratch.corpus,
        opts,
        &mut progress,
    )
    .await;
    scratch.remove().await?;
    result
}

async fn measure(
    config: &Config,
    store: &Store,
    corpus: &Path,
    opts: &WatchBenchOptions,
    progress: &mut impl FnMut(&str),
) -> Result<WatchReport, BenchError> {
    let ctx = PipelineContext::new(store.clone(), config.clone());
    let source = corpus.display().to_string();
    progress("initial index");
    let started = Instant::now();
    let (run_id, _) = super::index::index_once(&ctx, config, &source).await?;
    let initial_index_seconds = started.elapsed().as_secs_f64();
    let repo = store.run(run_id).await?.repository_id;
    let contents = store.repository_contents(repo).await?;
    let (files, snippets) = (contents.files, contents.snippets);
    let lines = corpus_files(corpus)?
        .iter()
        .map(|(_, p)| {
            std::fs::read(p).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as i64)
        })
        .sum::<i64>();
    progress(&format!(
        "{files} files, {lines} lines, {snippets} snippets in {initial_index_seconds:.1} s"
    ));

    // The watch and its worker, as `trawl watch` runs them.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let worker = tokio::spawn(worker::run(ctx.clone(), opts.workers, stopped()));
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let watching = tokio::spawn(watch::watch(
        store.clone(),
        config.clone(),
        WatchOptions {
            repositories: Some(vec![repo]),
            actor: "bench".into(),
            ..WatchOptions::default()
        },
        move |e| {
            let _ = events_tx.send(e);
        },
        stopped(),
    ));
    let mut backend = String::new();
    // Its start: watching, and the catch-up run ended.
    while let Some(e) = tokio::time::timeout(GIVE_UP, events.recv())
        .await
        .map_err(|_| BenchError::Stalled("the watch did not start".into()))?
    {
        if let watch::WatchEvent::Watching { backend: b, .. } = &e {
            backend = b.to_string();
        }
        if matches!(e, watch::WatchEvent::Queued { .. }) {
            break;
        }
    }
    settle(store, repo).await?;
    let runs_before = watch_runs(store, repo).await?;

    let searcher = Searcher::new(store.clone(), config.clone());
    let targets = probe_targets(corpus, opts.saves.max(opts.deletes))?;
    let (mut kw, mut sem, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..opts.saves {
        let path = &targets[i % targets.len()];
        let name = format!("trawl_watch_probe_{i}_{}", std::process::id());
        let (a, b) = probe_words(i);
        let text = format!(
            "def {name}(ledger, entry):\n    \"\"\"Posts the {a} {b} entry to the ledger.\"\"\"\n    return ledger.post(entry, {i})\n"
        );
        save_appending(path, &text)
            .map_err(|e| BenchError::Input(format!("saving {}: {e}", path.display())))?;
        let saved = Instant::now();
        let (mut at_kw, mut at_sem) = (None, None);
        while at_kw.is_none() || at_sem.is_none() {
            if saved.elapsed() > GIVE_UP {
                return Err(BenchError::Stalled(format!(
                    "save {i} ({}) not searchable after {GIVE_UP:?}",
                    path.display()
                )));
            }
            if at_kw.is_none() && found(&searcher, repo, &name, Mode::Keyword, &name).await? {
                at_kw = Some(saved.elapsed());
            }
            if at_sem.is_none() && found(&searcher, repo, &text, Mode::Semantic, &name).await? {
                at_sem = Some(saved.elapsed());
            }
            if at_kw.is_none() || at_sem.is_none() {
                tokio::time::sleep(POLL).await;
            }
        }
        let (k, s) = (at_kw.unwrap_or_default(), at_sem.unwrap_or_default());
        kw.push(k);
        sem.push(s);
        both.push(k.max(s));
        progress(&format!(
            "save {i}: keyword {:.0} ms, semantic {:.0} ms",
            k.as_secs_f64() * 1e3,
            s.as_secs_f64() * 1e3
        ));
        settle(store, repo).await?;
        tokio::time::sleep(opts.pause).await;
    }

    let mut gone = Vec::new();
    for (i, path) in targets.iter().take(opts.deletes).enumerate() {
        let rel = path
            .strip_prefix(corpus)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A probe of this file if the saves left one, else its file name's stem.
        let name = if i < opts.saves {
            format!("trawl_watch_probe_{i}_{}", std::process::id())
        } else {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        std::fs::remove_file(path)
            .map_err(|e| BenchError::Input(format!("deleting {}: {e}", path.display())))?;
        let deleted = Instant::now();
        loop {
            if deleted.elapsed() > GIVE_UP {
                return Err(BenchError::Stalled(format!(
                    "deleted {rel} still found after {GIVE_UP:?}"
                )));
            }
            let hits = search(&searcher, repo, &name, Mode::Keyword, 50).await?;
            if !hits.iter().any(|h| h.path == rel) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let took = deleted.elapsed();
        gone.push(took);
        progress(&format!("delete {rel}: {:.0} ms", took.as_secs_f64() * 1e3));
        settle(store, repo).await?;
        tokio::time::sleep(opts.pause).await;
    }
    let runs = watch_runs(store, repo).await? - runs_before;

    let _ = stop_tx.send(true);
    let _ = watching.await;
    let _ = worker.await;
    Ok(WatchReport {
        corpus: source,
        files,
        lines,
        snippets,
        initial_index_seconds,
        save_to_keyword: Latency::of(&kw),
        save_to_semantic: Latency::of(&sem),
        save_to_searchable: Latency::of(&both),
        delete_to_gone: Latency::of(&gone),
        runs,
        backend,
    })
}

/// Whether a search of `text` in `mode` has the snippet named `name` among its first ten.
async fn found(
    searcher: &Searcher,
    repo: i64,
    text: &str,
    mode: Mode,
    name: &str,
) -> Result<bool, BenchError> {
    let hits = search(searcher, repo, text, mode, 10).await?;
    Ok(hits.iter().any(|h| h.name.as_deref() == Some(name)))
}

/// The first `limit` hits of `text` in `mode` within repository `repo`.
async fn search(
    searcher: &Searcher,
    repo: i64,
    text: &str,
    mode: Mode,
    limit: usize,
) -> Result<Vec<crate::search::Hit>, BenchError> {
    let q = Query {
        text: text.to_string(),
        mode,
        repository_ids: vec![repo],
        limit,
        ..Default::default()
    };
    Ok(searcher
        .search(&q)
        .await
        .map_err(|e| BenchError::Input(format!("search {text:?}: {e}")))?
        .hits)
}

/// Files to save into and delete: the corpus' Python (or else any) files, largest first,
/// so each save re-parses a file of real size.
fn probe_targets(corpus: &Path, n: usize) -> Result<Vec<PathBuf>, BenchError> {
    let mut files: Vec<(u64, PathBuf)> = corpus_files(corpus)?
        .into_iter()
        .filter(|(_, p)| p.extension().is_some_and(|e| e == "py"))
        .collect();
    if files.is_empty() {
        return Err(BenchError::Input(format!(
            "--corpus {} has no Python file to save into: give a directory with .py files \
             (e.g. a Python standard library)",
            corpus.display()
        )));
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(files.into_iter().take(n.max(1)).map(|(_, p)| p).collect())
}

/// The files a scan of `corpus` reads, with their sizes.
fn corpus_files(corpus: &Path) -> Result<Vec<(u64, PathBuf)>, BenchError> {
    let deny = crate::sources::directory::DenyList::new(&[]).map_err(BenchError::Input)?;
    Ok(crate::sources::directory::scan(corpus, &deny)
        .map_err(|e| BenchError::Input(format!("scanning {}: {e}", corpus.display())))?
        .into_iter()
        .filter(|f| f.skip.is_none())
        .map(|f| (f.size, corpus.join(&f.path)))
        .collect())
}

/// Words that make probe `i`'s docstring its own. Probes told apart only by a number
/// embed alike (a number is barely a token to a static model), so after a dozen saves a
/// new probe tied with the earlier ones and fell out of the semantic top 10 for good.
fn probe_words(i: usize) -> (&'static str, &'static str) {
    const WORDS: &[&str] = &[
        "amber", "basalt", "cedar", "dune", "ember", "fjord", "glacier", "harbor", "iris",
        "juniper", "kelp", "lagoon", "meadow", "nectar", "orchid", "pebble", "quartz", "reef",
        "saffron", "tundra", "umber", "violet", "willow", "yarrow", "zephyr", "birch", "coral",
        "delta", "flint", "granite", "heron", "indigo",
    ];
    (
        WORDS[i % WORDS.len()],
        WORDS[(i / WORDS.len() + 7 * i + 3) % WORDS.len()],
    )
}

/// Appends `text` to `path` as an editor's atomic save does: the new content written to a
/// temporary file beside it, then renamed over it.
fn save_appending(path: &Path, text: &str) -> std::io::Result<()> {
    let mut content = std::fs::read(path)?;
    if !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    content.extend_from_slice(text.as_bytes());
    let tmp = path.with_extension("py.trawl-save~");
    std::fs::write(&tmp, &content)?;
    std::fs::rename(&tmp, path)
}

/// Waits until the repository has no unfinished run.
async fn settle(store: &Store, repo: i64) -> Result<(), BenchError> {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let open = store.unfinished_runs(repo).await?.len();
        if open == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Stalled(format!(
                "{open} runs of the repository still open after {GIVE_UP:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn watch_runs(store: &Store, repo: i64) -> Result<i64, BenchError> {
    Ok(store.count_runs_of_origin(repo, watch::ORIGIN).await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_probe_of_a_long_bench_has_words_of_its_own() {
        let pairs: std::collections::HashSet<_> = (0..1024).map(super::probe_words).collect();
        assert_eq!(pairs.len(), 1024);
    }
}
