//! Code understanding end to end: a git fixture in many languages through the five real
//! stages (real grammars, real tantivy, the real model, real pgvector), search in every
//! mode, incremental runs, bad files, and the HTTP providers against a local stub.

use std::collections::HashSet;
use std::sync::Arc;

use trawl::pipeline::PipelineContext;
use trawl::search::{Mode, Query, Searcher};
use trawl::store::runs::Run;

use crate::support::git;
use crate::support::{TestDb, trawl_cmd, trawl_in};

const FILES: &[(&str, &str)] = &[
    (
        "src/config.rs",
        "/// Reads the configuration file at `path`.\npub fn parse_config_file(path: &str) -> String {\n    std::fs::read_to_string(path).unwrap()\n}\n\npub struct Config {\n    pub name: String,\n}\n\nimpl Config {\n    pub fn new() -> Self {\n        Config { name: String::new() }\n    }\n}\n",
    ),
    (
        "tools/temps.py",
        "def celsius_to_fahrenheit(c):\n    \"\"\"Degrees C to degrees F.\"\"\"\n    return c * 9 / 5 + 32\n\n\nclass Reader:\n    def read_lines(self, path):\n        with open(path) as f:\n            return f.read().splitlines()\n",
    ),
    (
        "server/main.go",
        "package main\n\n// Server answers requests.\ntype Server struct {\n\taddr string\n}\n\n// ParseConfigFile loads settings.\nfunc (s *Server) ParseConfigFile(p string) error {\n\treturn nil\n}\n",
    ),
    (
        "web/app.js",
        "export function parseConfigFile(text) {\n  return JSON.parse(text);\n}\n\nclass Cart {\n  total() { return 0; }\n}\n",
    ),
    (
        "web/types.ts",
        "interface Shape {\n  area(): number;\n}\n\nexport class Square implements Shape {\n  area(): number { return 1; }\n}\n",
    ),
    (
        "java/Greeter.java",
        "public class Greeter {\n    public String greet(String name) {\n        return \"Hello \" + name;\n    }\n}\n",
    ),
    (
        "native/sum.c",
        "int sum_all(const int *xs, int n) {\n    int s = 0;\n    for (int i = 0; i < n; i++) s += xs[i];\n    return s;\n}\n",
    ),
    (
        "native/shape.cpp",
        "namespace geo {\nclass Circle {\npublic:\n    double area() const { return 3.14; }\n};\n}\n",
    ),
    (
        "App/Counter.cs",
        "namespace App {\n    public class Counter {\n        public int Next() { return 1; }\n    }\n}\n",
    ),
    (
        "lib/queue.rb",
        "class JobQueue\n  def push(job)\n    @jobs << job\n  end\nend\n",
    ),
    (
        "site/repo.php",
        "<?php\nclass UserRepo {\n    public function find($id) { return null; }\n}\n",
    ),
    ("scripts/deploy.sh", "deploy() {\n  echo deploying\n}\n"),
    (
        "README.md",
        "# Fixture\n\nA repository in many languages.\n",
    ),
];

/// A git repository with the fixture files, one commit.
fn git_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in FILES {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "fixture"]);
    dir
}

/// A plain directory with the fixture files.
fn dir_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in FILES {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn context(db: &TestDb) -> Arc<PipelineContext> {
    let mut c = db.config();
    c.worker.backoff_base_ms = 200;
    c.worker.poll_interval_ms = 50;
    PipelineContext::new(db.store.clone(), c)
}

/// Indexes `source` as a user would (`trawl index --wait` with no worker alive) and returns
/// the finished run.
async fn index(ctx: &Arc<PipelineContext>, source: &str) -> Run {
    let requested = trawl::service::index::index(
        &ctx.store,
        &ctx.config,
        source,
        "",
        "test",
        trawl::service::index::SourceAccess::Local,
    )
    .await
    .unwrap();
    let run_id = requested.enqueued.run_id();
    let run = trawl::service::index::wait_for_run(ctx.clone(), run_id, |_| {})
        .await
        .unwrap();
    assert_eq!(
        run.status, "succeeded",
        "run {run_id}: {:?} {:?}",
        run.error, run.result
    );
    run
}

/// (path, kind, qualified name, start, end) of every snippet.
async fn outline(db: &TestDb) -> HashSet<(String, String, String, i32, i32)> {
    let rows: Vec<(String, String, Option<String>, i32, i32)> = sqlx::query_as(
        "SELECT path, kind, qualified_name, start_line, end_line FROM snippets WHERE part IS NULL",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(p, k, n, a, b)| (p, k, n.unwrap_or_default(), a, b))
        .collect()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(db.store.pool())
        .await
        .unwrap()
}

fn query(text: &str, mode: Mode) -> Query {
    Query {
        text: text.into(),
        mode,
        limit: 10,
        ..Query::default()
    }
}

async fn names(searcher: &Searcher, q: &Query) -> Vec<String> {
    searcher
        .search(q)
        .await
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.name.unwrap_or_else(|| h.path.clone()))
        .collect()
}

#[tokio::test]
async fn a_git_fixture_in_many_languages_gives_the_expected_snippets_vectors_and_documents() {
    let db = TestDb::new().await;
    let ctx = context(&db);
    let repo = git_fixture();
    let url = format!("file://{}", repo.path().display());
    let run = index(&ctx, &url).await;
    assert!(
        run.result["sync"]["commit"]
            .as_str()
            .is_some_and(|c| c.len() == 40)
    );

    let got = outline(&db).await;
    let o = |p: &str, k: &str, n: &str, a: i32, b: i32| (p.into(), k.into(), n.into(), a, b);
    for want in [
        o("src/config.rs", "function", "parse_config_file", 2, 4),
        o("src/config.rs", "struct", "Config", 6, 8),
        o("src/config.rs", "method", "Config::new", 11, 13),
        o("tools/temps.py", "function", "celsius_to_fahrenheit", 1, 3),
        o("tools/temps.py", "method", "Reader.read_lines", 7, 9),
        o("server/main.go", "struct", "Server", 4, 6),
        o("server/main.go", "method", "Server.ParseConfigFile", 9, 11),
        o("web/app.js", "function", "parseConfigFile", 1, 3),
        o("web/app.js", "method", "Cart.total", 6, 6),
        o("web/types.ts", "interface", "Shape", 1, 3),
        o("web/types.ts", "method", "Square.area", 6, 6),
        o("java/Greeter.java", "method", "Greeter.greet", 2, 4),
        o("native/sum.c", "function", "sum_all", 1, 5),
        o("native/shape.cpp", "method", "geo::Circle::area", 4, 4),
        o("App/Counter.cs", "method", "App.Counter.Next", 3, 3),
        o("lib/queue.rb", "method", "JobQueue::push", 2, 4),
        o("site/repo.php", "method", "UserRepo::find", 3, 3),
        o("scripts/deploy.sh", "function", "deploy", 1, 3),
        o("README.md", "chunk", "", 1, 3),
    ] {
        assert!(got.contains(&want), "missing {want:?} in {got:#?}");
    }
    let doc: Option<String> =
        sqlx::query_scalar("SELECT doc FROM snippets WHERE qualified_name = 'parse_config_file'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(
        doc.as_deref(),
        Some("Reads the configuration file at `path`.")
    );

    // Every snippet has a code vector of the default model (the static table distilled
    // from all-MiniLM-L6-v2) and a heuristic summary with its vector; the
    // keyword index holds one document per snippet; the version is stamped.
    let snippets = count(&db, "SELECT count(*) FROM snippets").await;
    assert!(snippets >= 25, "{snippets} snippets");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM snippet_vectors WHERE kind = 'code' AND dimension = 256 \
             AND model = 'all-MiniLM-L6-v2+static256'"
        )
        .await,
        snippets
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM snippet_summaries WHERE source = 'heuristic'"
        )
        .await,
        count(&db, "SELECT count(*) FROM snippets WHERE part IS NULL").await
    );
    // Heuristic summaries get no vectors (they were measured to lower search quality).
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM snippet_vectors WHERE kind = 'summary'"
        )
        .await,
        0
    );
    assert_eq!(ctx.keyword_index().unwrap().num_docs() as i64, snippets);
    let version = ctx
        .store
        .current_index_version(run.repository_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((version.version, version.snippets as i64), (1, snippets));
    assert_eq!(version.files, FILES.len() as i32);
    assert_eq!(version.model, "all-MiniLM-L6-v2+static256");

    // A new commit is fetched on the next sync.
    std::fs::write(
        repo.path().join("native/sum.c"),
        "int twice(int x) { return 2 * x; }\n",
    )
    .unwrap();
    git(repo.path(), &["commit", "-q", "-am", "twice"]);
    let second = index(&ctx, &url).await;
    assert_eq!(second.result["sync"]["modified"], 1);
    let got = outline(&db).await;
    assert!(got.contains(&o("native/sum.c", "function", "twice", 1, 1)));
    assert!(!got.iter().any(|s| s.2 == "sum_all"));
}

#[tokio::test]
async fn keyword_search_finds_identifiers_by_their_words_and_filters() {
    let db = TestDb::new().await;
    let ctx = context(&db);
    let repo = dir_fixture();
    index(&ctx, repo.path().to_str().unwrap()).await;
    let searcher = Searcher::new(db.store.clone(), ctx.config.clone());

    let found = names(&searcher, &query("parse config file", Mode::Keyword)).await;
    for want in [
        "parse_config_file",
        "parseConfigFile",
        "Server.ParseConfigFile",
    ] {
        assert!(found.iter().any(|n| n == want), "{want} not in {found:?}");
    }
    // The exact identifier ranks first, for each spelling.
    assert_eq!(
        names(&searcher, &query("parse_config_file", Mode::Keyword)).await[0],
        "parse_config_file"
    );
    assert_eq!(
        names(&searcher, &query("parseConfigFile", Mode::Keyword)).await[0],
        "parseConfigFile"
    );

    let mut q = query("parse config file", Mode::Keyword);
    q.languages = vec!["go".into()];
    // The definition first; the file's other lines (its imports) may follow, Go's only.
    let go = names(&searcher, &q).await;
    assert_eq!(go[0], "Server.ParseConfigFile", "{go:?}");
    assert!(go[1..].iter().all(|n| n == "server/main.go"), "{go:?}");
    let mut q = query("parse config file", Mode::Keyword);
    q.path = Some("web/**".into());
    assert_eq!(names(&searcher, &q).await, ["parseConfigFile"]);
    let mut q = query("parse config file", Mode::Keyword);
    q.path = Some("src".into());
    let hits = searcher.search(&q).await.unwrap().hits;
    assert_eq!(hits[0].name.as_deref(), Some("parse_config_file"));
    assert!(hits.iter().all(|h| h.path.starts_with("src/")), "{hits:?}");

    // The CLI prints the same as stable JSON.
    let r = trawl_in(
        &db,
        &[
            "search",
            "parse config file",
            "--mode",
            "keyword",
            "--lang",
            "rust",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let hits: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let first = &hits[0];
    assert_eq!(first["name"], "parse_config_file");
    assert_eq!(first["path"], "src/config.rs");
    assert_eq!(
        (first["start_line"].as_i64(), first["end_line"].as_i64()),
        (Some(2), Some(4))
    );
    for field in ["repository", "kind", "language", "score", "snippet"] {
        assert!(!first[field].is_null(), "{field} missing in {first}");
    }
    // The keyword index is derived: lost, the next search builds it again from Postgres
    // alone, and `keyword-index rebuild` does so on demand.
    let snippets = count(&db, "SELECT count(*) FROM snippets").await;
    std::fs::remove_dir_all(ctx.config.keyword_index_dir()).unwrap();
    let r = trawl_in(
        &db,
        &["search", "parse config file", "--mode", "keyword", "--json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("parse_config_file"), "{}", r.stdout);
    let r = trawl_in(&db, &["keyword-index", "rebuild"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!("{snippets} documents")),
        "{}",
        r.stdout
    );
    let r = trawl_in(
        &db,
        &["search", "parse_config_file", "--mode", "keyword", "--json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("\"name\": \"parse_config_file\""),
        "{}",
        r.stdout
    );

    let r = trawl_in(&db, &["search", "  ", "--json"]);
    assert_eq!(r.code, 2, "a usage error: {}", r.stderr);
    assert!(r.stderr.contains("the query is empty"), "{}", r.stderr);
}

#[tokio::test]
async fn semantic_search_finds_a_paraphrase_and_hybrid_fuses() {
    let db = TestDb::new().await;
    let ctx = context(&db);
    let repo = dir_fixture();
    index(&ctx, repo.path().to_str().unwrap()).await;
    let searcher = Searcher::new(db.store.clone(), ctx.config.clone());
    // No word of the query is in the function (its words: celsius, to, fahrenheit, c, 9,
    // 5, 32, degrees, f, return, def).
    let q = query("convert a temperature between units", Mode::Semantic);
    let found = names(&searcher, &q).await;
    assert_eq!(found[0], "celsius_to_fahrenheit", "{found:?}");
    assert!(
        searcher
            .search(&query("convert a temperature between units", Mode::Keyword))
            .await
            .unwrap()
            .hits
            .iter()
            .all(|h| h.name.as_deref() != Some("celsius_to_fahrenheit"))
    );
    let hybrid = names(
        &searcher,
        &query("convert a temperature between units", Mode::Hybrid),
    )
    .await;
    assert_eq!(hybrid[0], "celsius_to_fahrenheit", "{hybrid:?}");
    let hybrid = names(&searcher, &query("parse config file", Mode::Hybrid)).await;
    assert!(
        hybrid[..3].contains(&"parse_config_file".to_string()),
        "{hybrid:?}"
    );

    // Vectors of another model never answer: a searcher configured with a different model
    // finds nothing semantically and says how to embed with it.
    let mut other = ctx.config.clone();
    other.embedding.model = "other-model".into();
    other.embedding.model_dir = ctx.config.model_dir().display().to_string();
    let results = Searcher::new(db.store.clone(), other)
        .search(&query(
            "convert a temperature between units",
            Mode::Semantic,
        ))
        .await
        .unwrap();
    assert!(results.hits.is_empty(), "{:?}", results.hits);
    assert!(
        results
            .warnings
            .iter()
            .any(|w| w.contains("all-MiniLM-L6-v2+static256") && w.contains("embeddings-only")),
        "{:?}",
        results.warnings
    );
}

#[tokio::test]
async fn incremental_runs_touch_only_what_changed() {
    let db = TestDb::new().await;
    let ctx = context(&db);
    let repo = dir_fixture();
    let root = repo.path();
    index(&ctx, root.to_str().unwrap()).await;
    let ids = |path: &'static str| {
        let pool = db.store.pool().clone();
        async move {
            let v: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, coalesce(qualified_name, '') FROM snippets WHERE path = $1 ORDER BY id",
            )
            .bind(path)
            .fetch_all(&pool)
            .await
            .unwrap();
            v
        }
    };
    let py_before = ids("tools/temps.py").await;
    let rs_before = ids("src/config.rs").await;

    // Edit one function of one file: that file's other snippets keep their ids, other files
    // are untouched, the changed function gets a new id and new vectors.
    std::fs::write(
        root.join("src/config.rs"),
        FILES[0].1.replace(
            "read_to_string(path).unwrap()",
            "read_to_string(path).expect(\"config\")",
        ),
    )
    .unwrap();
    let run = index(&ctx, root.to_str().unwrap()).await;
    assert_eq!(run.result["sync"]["modified"], 1);
    assert_eq!(run.result["extract"]["files"], 1);
    assert_eq!(ids("tools/temps.py").await, py_before);
    let rs_after = ids("src/config.rs").await;
    let kept: Vec<_> = rs_before.iter().filter(|s| rs_after.contains(s)).collect();
    assert_eq!(
        kept.len(),
        rs_before.len() - 1,
        "{rs_before:?} → {rs_after:?}"
    );
    assert!(
        !rs_after.contains(
            &rs_before
                .iter()
                .find(|s| s.1 == "parse_config_file")
                .unwrap()
                .clone()
        )
    );
    assert_eq!(run.result["code_embeddings"]["embedded"], 1);
    assert_eq!(
        ctx.store
            .current_index_version(run.repository_id)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );

    // Delete a file: its snippets leave Postgres and the keyword index.
    std::fs::remove_file(root.join("lib/queue.rb")).unwrap();
    // Rename one: the old path disappears, the new one appears with the same snippets.
    std::fs::rename(root.join("java/Greeter.java"), root.join("java/Hello.java")).unwrap();
    let run = index(&ctx, root.to_str().unwrap()).await;
    assert_eq!(run.result["sync"]["deleted"], 2);
    assert_eq!(run.result["sync"]["added"], 1);
    assert!(ids("lib/queue.rb").await.is_empty());
    assert!(ids("java/Greeter.java").await.is_empty());
    assert!(
        ids("java/Hello.java")
            .await
            .iter()
            .any(|s| s.1 == "Greeter.greet")
    );
    let searcher = Searcher::new(db.store.clone(), ctx.config.clone());
    assert!(
        names(&searcher, &query("JobQueue push", Mode::Keyword))
            .await
            .is_empty()
    );
    let greet = searcher
        .search(&query("greet", Mode::Keyword))
        .await
        .unwrap();
    assert_eq!(greet.hits[0].path, "java/Hello.java");
    assert_eq!(
        ctx.keyword_index().unwrap().num_docs() as i64,
        count(&db, "SELECT count(*) FROM snippets").await
    );
}

#[tokio::test]
async fn bad_files_are_recorded_and_skipped_and_the_run_succeeds() {
    let db = TestDb::new().await;
    let ctx = context(&db);
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    std::fs::write(root.join("good.py"), "def fine():\n    return 1\n").unwrap();
    std::fs::write(root.join("blob.bin"), b"\x7fELF\0\0\x01binary").unwrap();
    let big = std::fs::File::create(root.join("huge.py")).unwrap();
    big.set_len(50 * 1024 * 1024).unwrap();
    std::fs::write(
        root.join("latin1.py"),
        b"def caf\xe9():\n    return '\xe9t\xe9'\n",
    )
    .unwrap();
    std::fs::create_dir(root.join("loop")).unwrap();
    std::os::unix::fs::symlink(root, root.join("loop/again")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("outside")).unwrap();
    let locked = root.join("locked.py");
    std::fs::write(&locked, "def secret():\n    pass\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let as_root = std::fs::read(&locked).is_ok();

    let run = index(&ctx, root.to_str().unwrap()).await;
    let reasons: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT path, skip_reason FROM files ORDER BY path")
            .fetch_all(db.store.pool())
            .await
            .unwrap();
    let reason = |p: &str| reasons.iter().find(|r| r.0 == p).and_then(|r| r.1.clone());
    assert_eq!(reason("blob.bin").as_deref(), Some("binary"));
    assert!(
        reason("huge.py").is_some_and(|r| r.starts_with("too large")),
        "{reasons:?}"
    );
    assert_eq!(
        reason("loop/again").as_deref(),
        Some("symbolic link: not followed")
    );
    assert_eq!(
        reason("outside").as_deref(),
        Some("symbolic link: not followed")
    );
    if !as_root {
        assert!(
            reason("locked.py").is_some_and(|r| r.starts_with("unreadable")),
            "{reasons:?}"
        );
    }
    let items: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT path, status, message FROM run_items WHERE run_id = $1 ORDER BY path",
    )
    .bind(run.id)
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    let item = |p: &str| items.iter().find(|i| i.0 == p).unwrap().clone();
    assert_eq!(item("blob.bin").1, "skipped");
    assert_eq!(item("good.py").1, "completed");
    // Invalid UTF-8 is read lossily, with a note, and its function is found.
    let latin = item("latin1.py");
    assert_eq!(latin.1, "completed");
    assert!(latin.2.is_some_and(|m| m.contains("UTF-8")));
    let got = outline(&db).await;
    assert!(
        got.iter()
            .any(|s| s.0 == "latin1.py" && s.2.starts_with("caf")),
        "{got:?}"
    );
    assert!(got.iter().any(|s| s.2 == "fine"));
    assert!(!got.iter().any(|s| s.0 == "huge.py" || s.0 == "blob.bin"));
}

/// Embeds the reference texts with `model`, all at once (batching and padding must not
/// change any vector), and compares with sentence-transformers' vectors; returns the
/// largest difference of any component.
fn compare_with_reference(model: &trawl::providers::local::LocalEmbedder) -> f32 {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/minilm_reference.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let cases = fixture["texts"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let got = model.embed(&texts).unwrap();
    let mut worst = 0f32;
    for (case, v) in cases.iter().zip(&got) {
        let want: Vec<f32> = case["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v.len(), 384);
        let cos: f32 = v.iter().zip(&want).map(|(a, b)| a * b).sum();
        let max_diff = v
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let text = case["text"].as_str().unwrap();
        assert!(
            cos > 0.9999 && max_diff < 2e-3,
            "{} on {:?}: cosine {cos}, max difference {max_diff}",
            model.engine(),
            &text[..text.floor_char_boundary(20)]
        );
        worst = worst.max(max_diff);
    }
    worst
}

#[tokio::test]
async fn the_distilled_static_table_embeds_by_look_up_and_keeps_meaning() {
    use trawl::providers::static_model::{StaticEmbedder, StaticTable, table_path};
    let db = TestDb::new().await;
    let dir = db.config().model_dir();
    let table = StaticTable::read(&table_path(&dir)).expect("set-up distilled the table");
    assert_eq!(table.dim, trawl::providers::static_model::STATIC_DIMS);
    let embedder = StaticEmbedder::load(&dir, &table_path(&dir)).unwrap();
    // A text's vector is the unit mean of its tokens' rows, computed here from the table
    // and the tokenizer alone.
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let text = "def parse_config_file(path): return toml.load(path)";
    let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    let mut want = vec![0f32; table.dim];
    for &id in &ids {
        for (w, r) in want.iter_mut().zip(&table.rows[id as usize * table.dim..]) {
            *w += r;
        }
    }
    let norm = want.iter().map(|x| x * x).sum::<f32>().sqrt();
    let got = embedder.embed(&[text]).unwrap().remove(0);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w / norm).abs() < 1e-5, "{got:?}");
    }
    // The distilled table keeps what the transformer knows: related code is nearer.
    let v = embedder
        .embed(&[
            "read the settings from the configuration file",
            "def load_config(path):\n    with open(path) as f:\n        return parse_settings(f.read())",
            "def matmul(a, b):\n    return [[sum(x * y for x, y in zip(r, c)) for c in zip(*b)] for r in a]",
        ])
        .unwrap();
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(
        cos(&v[0], &v[1]) > cos(&v[0], &v[2]) + 0.05,
        "config {} vs matmul {}",
        cos(&v[0], &v[1]),
        cos(&v[0], &v[2])
    );
}

#[tokio::test]
async fn the_local_model_matches_sentence_transformers_reference_vectors() {
    use trawl::config::EmbeddingRuntime;
    use trawl::providers::local::LocalEmbedder;
    let db = TestDb::new().await;
    let config = db.config();
    let dir = config.model_dir();
    // The default engine is ONNX Runtime on the model.onnx set-up built.
    let onnx =
        LocalEmbedder::load_with(&dir, EmbeddingRuntime::Auto, &config.onnxruntime_lib()).unwrap();
    assert_eq!(onnx.engine(), "onnx");
    let onnx_worst = compare_with_reference(&onnx);
    // The graph computes what sentence-transformers computes, in fp32: no more than
    // rounding apart.
    assert!(onnx_worst < 1e-4, "onnx: max difference {onnx_worst}");
    // The candle engine, in builds that have it.
    #[cfg(feature = "candle")]
    {
        let candle =
            LocalEmbedder::load_with(&dir, EmbeddingRuntime::Candle, &config.onnxruntime_lib())
                .unwrap();
        assert_eq!(candle.engine(), "candle");
        compare_with_reference(&candle);
    }
    // Asked for ONNX Runtime where there is none: a clear error, not a silent fallback.
    let err = LocalEmbedder::load_with(
        &dir,
        EmbeddingRuntime::Onnx,
        std::path::Path::new("/nonexistent/libonnxruntime.so"),
    )
    .err()
    .expect("no library, no ONNX engine")
    .to_string();
    assert!(
        err.contains("/nonexistent/libonnxruntime.so") && err.contains("trawl setup"),
        "{err}"
    );
}

/// A local HTTP stub: answers each request with the next scripted (status, body) (the last
/// one repeats) and records the JSON bodies it received.
async fn stub(
    script: Vec<(u16, String)>,
) -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    let n = std::sync::atomic::AtomicUsize::new(0);
    stub_with(move |_| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        script[i.min(script.len() - 1)].clone()
    })
    .await
}

/// A local HTTP stub answering each JSON request with `answer(request)`; records the JSON
/// bodies it received.
async fn stub_with(
    answer: impl Fn(&serde_json::Value) -> (u16, String) + Send + Sync + 'static,
) -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let body = loop {
                let read = sock.read(&mut chunk).await.unwrap_or(0);
                if read == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..read]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            let Some(body) = body else { continue };
            // A GET (doctor's /models) has no body.
            let request: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let (status, answer) = answer(&request);
            log.lock().unwrap().push(request);
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nretry-after: 0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    (url, seen)
}

#[tokio::test]
async fn the_http_embedder_batches_retries_429_and_refuses_401() {
    use trawl::providers::http::{EMBED_BATCH, HttpClient, HttpEmbedder};
    // The stub answers with vectors [batch size, index]: checks order and batching at once.
    let ok = |n: usize| {
        let data: Vec<_> = (0..n)
            .map(|i| serde_json::json!({ "index": i, "embedding": [n as f32, i as f32] }))
            .collect();
        (200, serde_json::json!({ "data": data }).to_string())
    };
    let texts: Vec<String> = (0..150).map(|i| format!("text {i}")).collect();
    let (url, seen) = stub(vec![
        (429, r#"{"error":{"message":"slow down"}}"#.into()),
        ok(EMBED_BATCH),
        ok(EMBED_BATCH),
        ok(150 - 2 * EMBED_BATCH),
    ])
    .await;
    let client = HttpClient::new(&url, "sk-test", std::time::Duration::from_secs(5))
        .unwrap()
        .with_backoff_base(std::time::Duration::from_millis(1));
    let vectors = HttpEmbedder::new(client, "text-embedding-3-small")
        .embed(&texts)
        .await
        .unwrap();
    assert_eq!(vectors.len(), 150);
    assert_eq!(vectors[0], [64.0, 0.0]);
    assert_eq!(vectors[63], [64.0, 63.0]);
    assert_eq!(vectors[149], [22.0, 21.0]);
    let sizes: Vec<usize> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["input"].as_array().unwrap().len())
        .collect();
    assert_eq!(
        sizes,
        [64, 64, 64, 22],
        "the first batch is sent again after the 429"
    );
    assert_eq!(seen.lock().unwrap()[0]["model"], "text-embedding-3-small");

    let (url, seen) = stub(vec![(401, r#"{"error":{"message":"bad key"}}"#.into())]).await;
    let client = HttpClient::new(&url, "wrong", std::time::Duration::from_secs(5)).unwrap();
    let err = HttpEmbedder::new(client, "m")
        .embed(&texts[..3])
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(
        msg.contains("401") && msg.contains("bad key") && msg.contains("API key"),
        "{msg}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "a 401 is not retried");

    let (url, seen) = stub(vec![(503, "overloaded".into())]).await;
    let client = HttpClient::new(&url, "", std::time::Duration::from_secs(5))
        .unwrap()
        .with_backoff_base(std::time::Duration::from_millis(1));
    let err = HttpEmbedder::new(client, "m")
        .embed(&texts[..3])
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 4);
}

/// `trawl doctor` embeds a text with the configured provider and holds the dimension to
/// the vectors stored under the model's name. (Two threads: the stub answers while the
/// test waits for the doctor process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_embeds_a_text_and_checks_the_stored_dimension() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dimension = Arc::new(AtomicUsize::new(3));
    let d = dimension.clone();
    let (url, _) = stub_with(move |r| {
        let n = r["input"].as_array().map_or(0, Vec::len);
        let data: Vec<_> = (0..n)
            .map(|i| serde_json::json!({ "index": i, "embedding": vec![0.5f32; d.load(Ordering::SeqCst)] }))
            .collect();
        (200, serde_json::json!({ "data": data }).to_string())
    })
    .await;
    let db = TestDb::new().await;
    let mut config = db.config();
    config.embedding.provider = trawl::config::EmbeddingProvider::Http;
    config.embedding.base_url = url.clone();
    config.embedding.model = "stub-embed".into();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.py"), "def f():\n    return 1\n").unwrap();
    let run = index(
        &PipelineContext::new(db.store.clone(), config),
        dir.path().to_str().unwrap(),
    )
    .await;
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    let doctor = || {
        crate::support::run(
            trawl_cmd()
                .envs(db.env())
                .env("TRAWL_EMBEDDING_PROVIDER", "http")
                .env("TRAWL_EMBEDDING_BASE_URL", &url)
                .env("TRAWL_EMBEDDING_MODEL", "stub-embed")
                .args(["doctor"]),
        )
    };
    let r = doctor();
    assert!(
        r.stdout.contains("ok   embedding works") && r.stdout.contains("stub-embed: 3-dimensional"),
        "{}",
        r.stdout
    );
    // The provider now answers another dimension under the same name.
    dimension.store(4, Ordering::SeqCst);
    let r = doctor();
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("FAIL embedding works")
            && r.stdout.contains("answers 4-dimensional vectors; the vectors stored under that name are 3-dimensional"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn the_llm_enricher_writes_summaries_through_a_chat_endpoint() {
    let answer = serde_json::json!({
        "choices": [{ "message": { "role": "assistant", "content": " Converts Celsius to Fahrenheit. " } }]
    })
    .to_string();
    let (url, seen) = stub(vec![(429, "{}".into()), (200, answer)]).await;
    let db = TestDb::new().await;
    let mut config = db.config();
    config.enrich.base_url = url;
    config.enrich.model = "tiny-llm".into();
    let ctx = PipelineContext::new(db.store.clone(), config);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.py"),
        "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32\n",
    )
    .unwrap();
    let run = index(&ctx, dir.path().to_str().unwrap()).await;
    assert_eq!(run.result["enrich"]["summary_source"], "llm");
    // A chat model's summaries are embedded (heuristic ones are not).
    let (vectors, summaries): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM snippet_vectors WHERE kind = 'summary'), \
                (SELECT count(*) FROM snippet_summaries)",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert!(
        summaries > 0 && vectors == summaries,
        "{vectors} vectors, {summaries} summaries"
    );
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT summary, source, model FROM snippet_summaries")
            .fetch_all(db.store.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        [(
            "Converts Celsius to Fahrenheit.".to_string(),
            "llm".to_string(),
            Some("tiny-llm".to_string())
        )]
    );
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one 429, then the answer");
    assert_eq!(bodies[1]["model"], "tiny-llm");
    assert!(
        bodies[1]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("celsius_to_fahrenheit")
    );
}

/// 8-d vectors an embeddings stub makes of texts: letter counts folded into 8 buckets,
/// normalised. Not meaningful, but stable: the same text, the same vector.
fn toy_vector(text: &str) -> Vec<f32> {
    let mut v = [1f32; 8];
    for c in text.chars().filter(|c| c.is_alphanumeric()) {
        v[(c as usize) % 8] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

#[tokio::test]
async fn a_model_change_then_an_embeddings_only_reindex_moves_search_to_the_new_model() {
    use trawl::service::reindex::{ReindexRequest, ScopeKind, reindex};
    let db = TestDb::new().await;
    let ctx = context(&db);
    let repo = dir_fixture();
    index(&ctx, repo.path().to_str().unwrap()).await;
    let snippets: i64 = sqlx::query_scalar("SELECT count(*) FROM snippets")
        .fetch_one(db.store.pool())
        .await
        .unwrap();

    // The configured model becomes an 8-d one behind an OpenAI-compatible endpoint.
    let (url, seen) = stub_with(|request| {
        let data: Vec<serde_json::Value> = request["input"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"index": i, "embedding": toy_vector(t.as_str().unwrap())}))
            .collect();
        (200, serde_json::json!({"data": data, "model": "toy-8"}).to_string())
    })
    .await;
    let mut changed = ctx.config.clone();
    changed.embedding.provider = trawl::config::EmbeddingProvider::Http;
    changed.embedding.base_url = url;
    changed.embedding.model = "toy-8".into();
    let searcher = Searcher::new(db.store.clone(), changed.clone());
    let before = searcher
        .search(&query("temperature", Mode::Semantic))
        .await
        .unwrap();
    assert!(before.hits.is_empty(), "no vector of the new model yet");
    assert!(
        before
            .warnings
            .iter()
            .any(|w| w.contains("embeddings-only")),
        "{:?}",
        before.warnings
    );

    let request = ReindexRequest {
        repository: repo.path().display().to_string(),
        scope: ScopeKind::EmbeddingsOnly,
        paths: vec![],
        recursive: false,
        priority: trawl::domain::PriorityClass::Normal,
        full: false,
        origin: "test".into(),
    };
    let (plan, queued) = reindex(&db.store, &changed, &request).await.unwrap();
    assert_eq!(
        plan.snippets,
        Some(snippets),
        "every snippet lacks a toy-8 vector"
    );
    let changed_ctx = PipelineContext::new(db.store.clone(), changed.clone());
    let run = trawl::service::index::wait_for_run(changed_ctx, queued.run_id, |_| {})
        .await
        .unwrap();
    assert_eq!(run.status, "succeeded", "{run:?}");
    let (n, dims): (i64, Vec<i32>) = sqlx::query_as(
        "SELECT count(*), array_agg(DISTINCT dimension) FROM snippet_vectors WHERE model = 'toy-8' AND kind = 'code'",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!((n, dims), (snippets, vec![8]));
    assert!(!seen.lock().unwrap().is_empty());
    // Search now answers from the new model's vectors, and the old model's stay apart.
    let after = searcher
        .search(&query("temperature", Mode::Semantic))
        .await
        .unwrap();
    assert!(!after.hits.is_empty(), "{:?}", after.warnings);
    let minilm: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM snippet_vectors WHERE model = 'all-MiniLM-L6-v2+static256' AND kind = 'code'",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(minilm, snippets, "the old model's vectors are untouched");
    // (A new searcher: one reads the repositories' models at most every 2 s.)
    let fresh = Searcher::new(db.store.clone(), changed.clone())
        .search(&query("temperature", Mode::Semantic))
        .await
        .unwrap();
    assert!(
        !fresh
            .warnings
            .iter()
            .any(|w| w.contains("was indexed with model")),
        "{:?}",
        fresh.warnings
    );

    // A second repository indexed with the old model: search still answers from the first,
    // and says the second is missing from semantic results, and how to fix it.
    let second = tempfile::tempdir().unwrap();
    std::fs::write(
        second.path().join("heat.py"),
        "def kelvin(c):\n    return c + 273.15\n",
    )
    .unwrap();
    let old_run = index(&ctx, second.path().to_str().unwrap()).await;
    let both = Searcher::new(db.store.clone(), changed.clone())
        .search(&query("temperature", Mode::Semantic))
        .await
        .unwrap();
    assert!(!both.hits.is_empty(), "{:?}", both.warnings);
    let repo2 = old_run.repository_id;
    assert!(
        both.warnings
            .iter()
            .any(|w| w.contains(&format!(
                "repository {repo2} was indexed with model all-MiniLM-L6-v2+static256"
            )) && w.contains(&format!("trawl reindex {repo2} --scope embeddings-only"))),
        "{:?}",
        both.warnings
    );
}

#[tokio::test]
async fn status_reports_line_coverage_and_every_line_is_in_a_snippet() {
    let db = TestDb::new().await;
    let repo = tempfile::tempdir().unwrap();
    // Module-level code and assignments of functions, the kind of file (express's) whose
    // lines once were mostly in no snippet.
    std::fs::write(
        repo.path().join("app.js"),
        "'use strict';\nvar debug = require('debug')('app');\n\napp.use = function use(fn) {\n  this.stack.push(fn);\n  return this;\n};\n\nfunction listen(port) {\n  return port;\n}\n\nmodule.exports = app;\n",
    )
    .unwrap();
    std::fs::write(repo.path().join("notes.md"), "# Notes\n\nSome words.\n").unwrap();
    let r = crate::support::trawl_in(&db, &["index", repo.path().to_str().unwrap(), "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = crate::support::trawl_in(&db, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(status[0]["coverage"], 1.0, "{}", r.stdout);
    assert_eq!(status[0]["lines_total"], 12, "{}", r.stdout);
    let r = crate::support::trawl_in(
        &db,
        &["search", "stack push", "--mode", "keyword", "--json"],
    );
    assert!(
        r.stdout.contains("app.js"),
        "module-level code is searchable: {}",
        r.stdout
    );
    let human = crate::support::trawl_in(&db, &["status"]).stdout;
    assert!(human.contains("coverage 100.0%"), "{human}");
}

/// A batch job whose provider refuses it for good (a 401) fails at once instead of being
/// retried until its attempts are spent; a 503 is retried.
#[tokio::test]
async fn a_batch_job_fails_for_good_on_a_401_and_retries_a_503() {
    use trawl::pipeline::batch::{self, BatchPayload};
    let db = TestDb::new().await;
    let ctx = context(&db);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.py"),
        "def double(x):\n    return 2 * x\n",
    )
    .unwrap();
    index(&ctx, dir.path().to_str().unwrap()).await;
    let snippet: i64 = sqlx::query_scalar("SELECT min(id) FROM snippets")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    for (status, want, attempts) in [(401, "Killed", 1), (503, "Failed", 1)] {
        let (url, seen) = stub(vec![(status, r#"{"error":{"message":"no"}}"#.into())]).await;
        let mut config = db.config();
        config.embedding.provider = trawl::config::EmbeddingProvider::Http;
        config.embedding.base_url = url;
        config.embedding.model = "stub-model".into();
        let http = PipelineContext::new(db.store.clone(), config);
        let payload = BatchPayload {
            repositories: vec![],
            snippets: vec![snippet],
            priority: trawl::domain::PriorityClass::Normal,
        };
        let job = batch::submit(&db.store, &payload).await.unwrap();
        batch::handle(http, job.clone(), serde_json::to_vec(&payload).unwrap()).await;
        let (job_status, job_attempts): (String, i32) =
            sqlx::query_as("SELECT status, attempts FROM apalis.jobs WHERE id = $1")
                .bind(&job)
                .fetch_one(db.store.pool())
                .await
                .unwrap();
        assert_eq!(
            (job_status.as_str(), job_attempts),
            (want, attempts),
            "a {status}"
        );
        assert!(!seen.lock().unwrap().is_empty(), "the provider was asked");
    }
}

/// A hybrid search whose embedding provider refuses degrades to keyword results with a
/// warning; a semantic search, which has nothing else, fails.
#[tokio::test]
async fn hybrid_search_falls_back_to_keyword_when_the_provider_is_down() {
    let db = TestDb::new().await;
    let ctx = context(&db);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.py"),
        "def convert_celsius(x):\n    return x * 9 / 5 + 32\n",
    )
    .unwrap();
    index(&ctx, dir.path().to_str().unwrap()).await;
    let (url, _) = stub(vec![(400, r#"{"error":{"message":"down"}}"#.into()); 4]).await;
    let mut down = db.config();
    down.embedding.provider = trawl::config::EmbeddingProvider::Http;
    down.embedding.base_url = url;
    down.embedding.model = "stub-model".into();
    let searcher = Searcher::new(db.store.clone(), down);
    searcher.catch_up().await.unwrap();
    let results = searcher
        .search(&query("convert_celsius", Mode::Hybrid))
        .await
        .unwrap();
    assert_eq!(
        results.hits.first().and_then(|h| h.name.as_deref()),
        Some("convert_celsius")
    );
    assert!(
        results
            .warnings
            .iter()
            .any(|w| w.contains("results are keyword only")),
        "{:?}",
        results.warnings
    );
    assert!(
        searcher
            .search(&query("convert_celsius", Mode::Semantic))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn one_vector_query_ranks_code_and_summary_vectors_apart_within_the_filter() {
    use trawl::store::vectors::{SnippetFilter, VectorKind};
    let db = TestDb::new().await;
    let ctx = context(&db);
    let repo = dir_fixture();
    let run = index(&ctx, repo.path().to_str().unwrap()).await;
    let other = dir_fixture();
    index(&ctx, other.path().to_str().unwrap()).await;
    // One snippet of the first repository gets a summary vector: its code vector, stored
    // as its summary's.
    let (model, id, vector): (String, i64, pgvector::Vector) = sqlx::query_as(
        "SELECT v.model, v.snippet_id, v.embedding FROM snippet_vectors v
         JOIN snippets s ON s.id = v.snippet_id
         WHERE s.repository_id = $1 AND s.name = 'celsius_to_fahrenheit' AND v.kind = 'code'",
    )
    .bind(run.repository_id)
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO snippet_vectors (snippet_id, kind, model, dimension, embedding, source_hash)
         SELECT snippet_id, 'summary', model, dimension, embedding, 'test'
         FROM snippet_vectors WHERE snippet_id = $1 AND kind = 'code'",
    )
    .bind(id)
    .execute(db.store.pool())
    .await
    .unwrap();
    let vector = vector.to_vec();
    let repos = [run.repository_id];
    let filter = SnippetFilter {
        repository_ids: &repos,
        ..Default::default()
    };
    let in_repo: std::collections::HashSet<i64> =
        sqlx::query_scalar("SELECT id FROM snippets WHERE repository_id = $1")
            .bind(run.repository_id)
            .fetch_all(db.store.pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    let nearest = |kinds: &'static [VectorKind]| {
        let (store, vector, model, filter) = (&db.store, &vector, &model, &filter);
        async move {
            store
                .nearest_snippets(vector, model, kinds, filter, 5)
                .await
                .unwrap()
        }
    };
    let rankings = nearest(&[VectorKind::Code, VectorKind::Summary]).await;
    assert_eq!(rankings.len(), 2);
    let (code, summary) = (&rankings[0], &rankings[1]);
    // The code ranking: five of the filtered repository's snippets, best first, the
    // snippet itself (similarity 1) at the top.
    assert_eq!(code.len(), 5, "{code:?}");
    assert_eq!(code[0].0, id);
    assert!((code[0].1 - 1.0).abs() < 1e-4, "{code:?}");
    assert!(code.windows(2).all(|w| w[0].1 >= w[1].1), "{code:?}");
    assert!(code.iter().all(|(s, _)| in_repo.contains(s)), "{code:?}");
    // The summary ranking holds only the one snippet with a summary vector.
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(summary[0].0, id);
    // Asked the other way round, the rankings come back in that order.
    let swapped = nearest(&[VectorKind::Summary, VectorKind::Code]).await;
    assert_eq!(swapped, [summary.clone(), code.clone()]);
    // No kinds asked: nothing, without a query.
    assert!(nearest(&[]).await.is_empty());
}
