//! `trawl bench index --corpus PATH`: the five stages on a real corpus, in this process.
//!
//! A copy of the corpus (the files trawl would index: .gitignore honoured) is indexed into
//! a scratch database and a scratch index directory; then one file is edited and the
//! incremental run timed; then 100 queries derived from the corpus run in each search
//! mode. The local embedder is also timed on the first texts CODE_EMBEDDINGS embedded, and,
//! when a Python with sentence-transformers is given, PyTorch on exactly the same texts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, Latency};
use crate::config::Config;
use crate::pipeline::PipelineContext;
use crate::search::{Mode, Query, Searcher};
use crate::service::index;
use crate::store::Store;
use crate::store::runs::StageRun;

/// The scratch database the benchmark creates and drops.
pub const BENCH_DB: &str = "trawl_bench_index";
/// The PyTorch baseline, written next to the texts when a Python is given.
const ST_BASELINE: &str = include_str!("../../benches/st_baseline.py");

#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub corpus: PathBuf,
    /// Queries per search mode.
    pub queries: usize,
    /// Texts embedded side by side with PyTorch.
    pub embed_sample: usize,
    /// A Python with torch and sentence-transformers, for the side-by-side baseline.
    pub python: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageFigure {
    pub stage: String,
    pub seconds: f64,
    /// Files of the run per second of this stage.
    pub files_per_sec: f64,
    pub items: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SideBySide {
    pub texts: usize,
    pub trawl_per_sec: f64,
    pub pytorch_per_sec: Option<f64>,
    /// Why there is no PyTorch figure, when there is none.
    pub pytorch_note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryFigures {
    pub keyword: Latency,
    pub semantic: Latency,
    pub hybrid: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexReport {
    pub corpus: String,
    pub files: i64,
    pub snippets: i64,
    pub code_vectors: i64,
    pub total_seconds: f64,
    pub stages: Vec<StageFigure>,
    /// CODE_EMBEDDINGS: vectors stored per second of the stage.
    pub embeddings_per_sec: f64,
    pub side_by_side: SideBySide,
    /// One file edited: enqueue → run finished, in this (warm) process.
    pub incremental_seconds: f64,
    pub incremental_stages: Vec<StageFigure>,
    pub queries: QueryFigures,
    pub peak_rss_mib: Option<f64>,
}

pub async fn run(
    config: &Config,
    opts: &IndexOptions,
    mut progress: impl FnMut(&str),
) -> Result<IndexReport, BenchError> {
    if !opts.corpus.is_dir() {
        return Err(BenchError::Input(format!(
            "--corpus {} is not a directory: give a directory of source files (e.g. a Python standard library)",
            opts.corpus.display()
        )));
    }
    let scratch =
        super::Scratch::create(config, BENCH_DB, "index", &opts.corpus, &mut progress).await?;
    let result = measure(
        &scratch.config,
        &scratch.store,
        &scratch.corpus,
        &scratch.home,
        opts,
        &mut progress,
    )
    .await;
    scratch.remove().await?;
    result
}

/// Indexes `corpus` and measures; `dir` takes the PyTorch baseline's files.
async fn measure(
    config: &Config,
    store: &Store,
    corpus: &Path,
    dir: &Path,
    opts: &IndexOptions,
    progress: &mut impl FnMut(&str),
) -> Result<IndexReport, BenchError> {
    let ctx = PipelineContext::new(store.clone(), config.clone());
    let source = corpus.display().to_string();

    progress("full run: the five stages");
    let started = Instant::now();
    let (run_id, stages) = index_once(&ctx, config, &source).await?;
    let total_seconds = started.elapsed().as_secs_f64();
    let repo = store.run(run_id).await?.repository_id;
    let (files, snippets, code_vectors) = counts(store, repo).await?;
    let figures = stage_figures(&stages, files);
    let embeddings_per_sec = figures
        .iter()
        .find(|f| f.stage == "code_embeddings")
        .map(|f| {
            if f.seconds > 0.0 {
                code_vectors as f64 / f.seconds
            } else {
                0.0
            }
        })
        .unwrap_or(0.0);

    progress("incremental run: one file edited");
    let edited = edit_one_file(store, repo, corpus).await?;
    let started = Instant::now();
    let (_, inc_stages) = index_once(&ctx, config, &source).await?;
    let incremental_seconds = started.elapsed().as_secs_f64();
    let incremental_stages = stage_figures(&inc_stages, 1);
    progress(&format!("edited {edited}: {incremental_seconds:.2} s"));

    progress(&format!("{} queries per search mode", opts.queries));
    let queries = query_latencies(store, config, opts.queries).await?;

    progress(&format!(
        "embedding {} texts side by side",
        opts.embed_sample
    ));
    let side_by_side = side_by_side(&ctx, store, repo, dir, opts).await?;

    Ok(IndexReport {
        corpus: source,
        files,
        snippets,
        code_vectors,
        total_seconds,
        stages: figures,
        embeddings_per_sec,
        side_by_side,
        incremental_seconds,
        incremental_stages,
        queries,
        peak_rss_mib: super::peak_rss_mib(),
    })
}

/// Indexes `source` once, worked in this process; returns the run and its stages.
pub(super) async fn index_once(
    ctx: &std::sync::Arc<PipelineContext>,
    config: &Config,
    source: &str,
) -> Result<(i64, Vec<StageRun>), BenchError> {
    let requested = index::index(
        &ctx.store,
        config,
        source,
        "",
        "bench",
        index::SourceAccess::Local,
    )
    .await
    .map_err(|e| BenchError::Input(e.to_string()))?;
    let run_id = requested.enqueued.run_id();
    let run = index::wait_for_run(ctx.clone(), run_id, |_| {})
        .await
        .map_err(|e| BenchError::Input(e.to_string()))?;
    if run.status != "succeeded" {
        return Err(BenchError::Stalled(format!(
            "run {run_id} {}: {}",
            run.status,
            run.error.unwrap_or_default()
        )));
    }
    Ok((run_id, ctx.store.stage_runs(run_id).await?))
}

fn stage_figures(stages: &[StageRun], files: i64) -> Vec<StageFigure> {
    stages
        .iter()
        .map(|s| {
            let seconds = match (s.started_at, s.finished_at) {
                (Some(a), Some(b)) => (b - a).as_seconds_f64(),
                _ => 0.0,
            };
            StageFigure {
                stage: s.stage.clone(),
                seconds,
                files_per_sec: if seconds > 0.0 {
                    files as f64 / seconds
                } else {
                    0.0
                },
                items: s.items_done,
            }
        })
        .collect()
}

pub(super) async fn counts(store: &Store, repo: i64) -> Result<(i64, i64, i64), BenchError> {
    Ok(store.bench_counts(repo).await?)
}

/// Appends a small function to the first Python file (by path) that has snippets, or else
/// the first file with snippets; returns its path.
async fn edit_one_file(store: &Store, repo: i64, corpus: &Path) -> Result<String, BenchError> {
    let path = store
        .bench_file_to_edit(repo)
        .await?
        .ok_or_else(|| BenchError::Input("the corpus gave no snippets".into()))?;
    let file = corpus.join(&path);
    let mut text = std::fs::read(&file).map_err(|e| BenchError::Input(format!("{path}: {e}")))?;
    text.extend_from_slice(
        b"\n\ndef trawl_bench_added(values):\n    \"\"\"Sum the squares of values.\"\"\"\n    return sum(v * v for v in values)\n",
    );
    std::fs::write(&file, text).map_err(|e| BenchError::Input(format!("{path}: {e}")))?;
    Ok(path)
}

/// Queries made from the corpus itself: the words of definition names (`parse_config_file`
/// → "parse config file") and the opening words of docstrings.
pub(super) async fn corpus_queries(store: &Store, n: usize) -> Result<Vec<String>, BenchError> {
    let rows = store.bench_names_and_docs((n * 4) as i64).await?;
    let mut out = Vec::with_capacity(n);
    for (i, (name, doc)) in rows.into_iter().enumerate() {
        let q = match (i % 2, name, doc) {
            (1, _, Some(doc)) => doc.split_whitespace().take(6).collect::<Vec<_>>().join(" "),
            (_, Some(name), _) => name.replace('_', " ").trim().to_string(),
            _ => continue,
        };
        if q.split_whitespace().count() >= 2 || q.len() >= 4 {
            out.push(q);
        }
        if out.len() == n {
            break;
        }
    }
    Ok(out)
}

async fn query_latencies(
    store: &Store,
    config: &Config,
    n: usize,
) -> Result<QueryFigures, BenchError> {
    let queries = corpus_queries(store, n).await?;
    let searcher = Searcher::new(store.clone(), config.clone());
    let mut per_mode = Vec::new();
    for mode in [Mode::Keyword, Mode::Semantic, Mode::Hybrid] {
        let q = |text: &str| Query {
            text: text.to_string(),
            mode,
            limit: 10,
            ..Default::default()
        };
        // Warm-up: the model and the reader load on first use.
        if let Some(first) = queries.first() {
            let _ = searcher.search(&q(first)).await;
        }
        let mut took: Vec<Duration> = Vec::with_capacity(queries.len());
        for text in &queries {
            let t = Instant::now();
            match searcher.search(&q(text)).await {
                Ok(_) => took.push(t.elapsed()),
                Err(e) => return Err(BenchError::Input(format!("query {text:?}: {e}"))),
            }
        }
        per_mode.push(Latency::of(&took));
    }
    Ok(QueryFigures {
        keyword: per_mode[0],
        semantic: per_mode[1],
        hybrid: per_mode[2],
    })
}

/// The local embedder and (optionally) PyTorch on the same first texts of the corpus.
async fn side_by_side(
    ctx: &PipelineContext,
    store: &Store,
    repo: i64,
    dir: &Path,
    opts: &IndexOptions,
) -> Result<SideBySide, BenchError> {
    // Texts in snippet order, as CODE_EMBEDDINGS reads them (no vectors of this model name).
    let page = store
        .code_without_vectors(repo, "trawl-bench-none", 0, opts.embed_sample as i64)
        .await?;
    let texts: Vec<String> = page.into_iter().map(|p| p.text).collect();
    let embedder = ctx
        .embedder()
        .await
        .map_err(|e| BenchError::Input(e.to_string()))?;
    let _ = embedder
        .embed(texts.iter().take(8).cloned().collect())
        .await;
    let t = Instant::now();
    embedder
        .embed(texts.clone())
        .await
        .map_err(|e| BenchError::Input(e.to_string()))?;
    let trawl_per_sec = texts.len() as f64 / t.elapsed().as_secs_f64();

    let (pytorch_per_sec, pytorch_note) = match &opts.python {
        None => (
            None,
            Some("no --python given: PyTorch not measured".to_string()),
        ),
        Some(py) => match pytorch(py, &texts, dir, &ctx.config.model_dir()) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        },
    };
    Ok(SideBySide {
        texts: texts.len(),
        trawl_per_sec,
        pytorch_per_sec,
        pytorch_note,
    })
}

/// Runs the sentence-transformers baseline on `texts`; its snippets per second.
fn pytorch(python: &Path, texts: &[String], dir: &Path, model: &Path) -> Result<f64, String> {
    let script = dir.join("st_baseline.py");
    let input = dir.join("texts.jsonl");
    std::fs::write(&script, ST_BASELINE).map_err(|e| e.to_string())?;
    let lines: String = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
        .collect();
    std::fs::write(&input, lines).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg("--texts")
        .arg(&input)
        .arg("--model")
        .arg(model)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_string();
        return Err(format!("{} failed: {last}", python.display()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
    v["snippets_per_sec"]
        .as_f64()
        .ok_or_else(|| format!("no snippets_per_sec in {line}"))
}

/// Copies the files trawl would index (ignore files honoured, no symlinks) from `from` to
/// `to`; returns how many.
pub(super) fn copy_corpus(from: &Path, to: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in ignore::WalkBuilder::new(from).hidden(true).build() {
        let entry = entry.map_err(std::io::Error::other)?;
        let Some(ft) = entry.file_type() else {
            continue;
        };
        if !ft.is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(from)
            .map_err(std::io::Error::other)?;
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::copy(entry.path(), &dest).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}
