//! Ranking rules over the candidates a search retrieved: pure functions, no I/O.
//!
//! Retrieval (BM25, vectors, their fusion) scores a snippet alone; these rules use what
//! it knows of the snippet's place in the repository, as code search tools that rank well
//! do (semble's ranker among them):
//!
//! - **Query type.** A query that looks like an identifier (`parseConfig`, `HTTPServer`,
//!   `fmt::format`, `_private`) is a *symbol* query; anything else is *natural language*.
//!   Hybrid fusion leans on keywords for symbols and on vectors for language
//!   ([`semantic_weight`]).
//! - **Definitions.** A snippet that defines the symbol asked for gains 3 × the best score
//!   (× 1.5 more when its file is named after it); in a natural-language query, each
//!   identifier written in it gives half that to its definition.
//! - **File names.** When at least 10 % of a natural-language query's words name a
//!   candidate's file or its directories, it gains the best score × that share; a file
//!   named like the symbol asked for gains the best score (a definition of it, 3 ×).
//! - **Files as a whole.** The best snippet of each file gains 0.2 × the best score ×
//!   its file's share of the summed candidate scores, so a file hit many times ranks up.
//! - **Paths.** Tests, examples, docs and benchmarks × 0.3 (unless the query asks for
//!   tests or examples), compatibility shims × 0.3, `__init__.py` × 0.5, `.d.ts` × 0.7,
//!   non-code files × 0.5.
//! - **Variety.** Each further snippet of a file already ranked is worth half the one
//!   before (× 0.5, × 0.25, …), so ten hits are not one file's.

use std::collections::HashMap;

use super::tokenizer;

/// What kind of query a text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Symbol,
    Natural,
}

/// A symbol query is one token that only an identifier would be: it holds `_`, `::`, `.`
/// or `->` between word characters, an inner capital (camelCase, PascalCase, ACRONYM),
/// or is a single Capitalised word.
pub fn query_kind(query: &str) -> QueryKind {
    let q = query.trim();
    if q.is_empty() || q.split_whitespace().count() != 1 {
        return QueryKind::Natural;
    }
    let word = |c: char| c.is_alphanumeric() || c == '_';
    if !q.chars().all(|c| word(c) || ":.->$#@".contains(c)) {
        return QueryKind::Natural;
    }
    let letters: Vec<char> = q.chars().filter(|c| c.is_alphabetic()).collect();
    let inner_capital = letters.iter().skip(1).any(|c| c.is_uppercase());
    let capitalised = letters.first().is_some_and(|c| c.is_uppercase());
    let joined = q.contains('_') || q.contains("::") || q.contains('.') || q.contains("->");
    if joined || inner_capital || capitalised {
        QueryKind::Symbol
    } else {
        QueryKind::Natural
    }
}

/// The weight of the semantic ranking in hybrid fusion (the keyword ranking gets the
/// rest).
pub fn semantic_weight(kind: QueryKind) -> f64 {
    match kind {
        QueryKind::Symbol => 0.3,
        QueryKind::Natural => 0.5,
    }
}

/// What the rules look at of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: i64,
    pub score: f64,
    /// Repository-relative, '/'-separated.
    pub path: String,
    /// The definition's name (the last part of a qualified name is used).
    pub name: Option<String>,
    /// The snippet's kind: a definition kind, or `chunk` for a window between them.
    pub kind: String,
    /// None for files in no language trawl parses (Markdown, config, …).
    pub language: Option<String>,
}

const DEFINITION_BOOST: f64 = 3.0;
const STEM_BOOST: f64 = 1.5;
const FILE_SHARE_BOOST: f64 = 0.2;
const MIN_STEM_SHARE: f64 = 0.1;
const REPEAT_DECAY: f64 = 0.5;

/// Applies the rules to `candidates` (any order) and returns them best first.
pub fn rerank(query: &str, candidates: Vec<Candidate>) -> Vec<Candidate> {
    if candidates.is_empty() {
        return candidates;
    }
    let kind = query_kind(query);
    let best = candidates
        .iter()
        .map(|c| c.score)
        .fold(f64::MIN, f64::max)
        .max(f64::MIN_POSITIVE);
    let words: Vec<String> = tokenizer::query_tokens(query);
    let symbol = normalise(last_part(query.trim()));
    let identifiers: Vec<String> = identifiers_in(query);
    let asks_for_tests = words.iter().any(|w| w.starts_with("test") || w == "spec");
    let asks_for_examples = words
        .iter()
        .any(|w| w.starts_with("example") || w == "demo");

    // The share of each file in the candidates' summed scores.
    let mut file_sum: HashMap<&str, f64> = HashMap::new();
    for c in &candidates {
        *file_sum.entry(c.path.as_str()).or_default() += c.score.max(0.0);
    }
    let max_file_sum = file_sum
        .values()
        .copied()
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let mut best_of_file: HashMap<&str, (i64, f64)> = HashMap::new();
    for c in &candidates {
        let e = best_of_file
            .entry(c.path.as_str())
            .or_insert((c.id, c.score));
        if c.score > e.1 {
            *e = (c.id, c.score);
        }
    }

    let mut scored: Vec<(f64, Candidate)> = candidates
        .iter()
        .map(|c| {
            let mut s = c.score;
            let name = c.name.as_deref().map(|n| normalise(last_part(n)));
            let stem = normalise(file_stem(&c.path));
            let defines = |ident: &str| name.as_deref() == Some(ident) && c.kind != "chunk";
            match kind {
                QueryKind::Symbol => {
                    if defines(&symbol) {
                        let stem_bonus = if stem == symbol { STEM_BOOST } else { 1.0 };
                        s += DEFINITION_BOOST * best * stem_bonus;
                    } else if stem == symbol {
                        s += best;
                    }
                }
                QueryKind::Natural => {
                    if identifiers.iter().any(|i| defines(i)) {
                        s += DEFINITION_BOOST * best * 0.5;
                    }
                    let share = path_share(&words, &c.path);
                    if share >= MIN_STEM_SHARE {
                        s += best * share;
                    }
                }
            }
            if best_of_file.get(c.path.as_str()).map(|b| b.0) == Some(c.id) {
                s += FILE_SHARE_BOOST * best * file_sum[c.path.as_str()] / max_file_sum;
            }
            s *= path_factor(
                &c.path,
                c.language.is_some(),
                asks_for_tests,
                asks_for_examples,
            );
            (s, c.clone())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));

    // Variety: a file's later snippets are worth less each time, then sort again.
    let mut seen: HashMap<String, i32> = HashMap::new();
    for (s, c) in &mut scored {
        let n = seen.entry(c.path.clone()).or_default();
        *s *= REPEAT_DECAY.powi(*n);
        *n += 1;
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .map(|(s, mut c)| {
            c.score = s;
            c
        })
        .collect()
}

/// `a::b::c`, `a.b.c`, `a->c`: the last part.
fn last_part(s: &str) -> &str {
    s.rsplit([':', '.', '>', '#'])
        .find(|p| !p.is_empty())
        .unwrap_or(s)
}

/// Lowercase, without `_`, so `parse_config`, `parseConfig` and `ParseConfig` agree.
fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '$')
        .flat_map(char::to_lowercase)
        .collect()
}

fn file_stem(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.split('.').next().unwrap_or(name)
}

/// The identifiers written in a natural-language query (camelCase, snake_case, dotted):
/// normalised.
fn identifiers_in(query: &str) -> Vec<String> {
    query
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'))
        .filter(|w| query_kind(w) == QueryKind::Symbol && w.chars().count() > 2)
        .map(|w| normalise(last_part(w)))
        .collect()
}

/// The share of the query's words found in the file's stem or its directories' names.
fn path_share(words: &[String], path: &str) -> f64 {
    if words.is_empty() {
        return 0.0;
    }
    let parts: Vec<String> = path
        .split('/')
        .rev()
        .take(4)
        .flat_map(|p| tokenizer::tokens(file_stem(p)))
        .collect();
    let parts: Vec<String> = parts.iter().map(|p| root(p)).collect();
    let hits = words.iter().filter(|w| parts.contains(&root(w))).count();
    hits as f64 / words.len() as f64
}

/// A word without its common English endings, so that a query's "throttling", "logging"
/// or "rewriting" meets a file named `throttle`, `logger` or `rewrite`: -ing, -ed, -er(s),
/// -es, -s and -ion(s) come off (then an -er left behind; 3 letters stay at least), then a
/// doubled final consonant and a final e. Not a full stemmer: only for comparing a query's
/// words with file and directory names, both sides the same way.
pub fn root(word: &str) -> String {
    let mut w = word.to_lowercase();
    let strip = |w: &mut String, suffixes: &[&str]| {
        if let Some(suffix) = suffixes
            .iter()
            .find(|s| w.len() >= s.len() + 3 && w.ends_with(*s) && !w.ends_with("ss"))
        {
            w.truncate(w.len() - suffix.len());
        }
    };
    strip(
        &mut w,
        &["ings", "ing", "ions", "ion", "ers", "er", "ed", "es", "s"],
    );
    // "buffering" → "buffer" → "buff".
    strip(&mut w, &["er"]);
    let b = w.as_bytes();
    if b.len() >= 4 && b[b.len() - 1] == b[b.len() - 2] && !b"aeiouls".contains(&b[b.len() - 1]) {
        w.pop();
    }
    if w.len() >= 4 && w.ends_with('e') {
        w.pop();
    }
    w
}

/// The multiplier a file's place gives its snippets.
pub fn path_factor(path: &str, code: bool, asks_for_tests: bool, asks_for_examples: bool) -> f64 {
    let lower = path.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    let dirs: Vec<&str> = lower.split('/').rev().skip(1).collect();
    let in_dir = |names: &[&str]| dirs.iter().any(|d| names.contains(d));
    let mut f = 1.0;
    let test = in_dir(&[
        "test",
        "tests",
        "spec",
        "specs",
        "__tests__",
        "testing",
        "testdata",
    ]) || name.starts_with("test_")
        || name.contains("_test.")
        || name.contains(".test.")
        || name.contains(".spec.")
        || name.contains("_spec.")
        || name.ends_with("tests.py")
        || name.ends_with("test.java");
    if test && !asks_for_tests {
        f *= 0.3;
    }
    let example = in_dir(&[
        "example",
        "examples",
        "_examples",
        "docs",
        "doc",
        "docs_src",
        "benchmarks",
        "bench",
        "samples",
        "demo",
    ]);
    if example && !asks_for_examples {
        f *= 0.3;
    }
    if in_dir(&["compat", "legacy", "deprecated"]) {
        f *= 0.3;
    }
    if name == "__init__.py" {
        f *= 0.5;
    }
    if name.ends_with(".d.ts") {
        f *= 0.7;
    }
    if !code {
        f *= 0.5;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: i64, score: f64, path: &str, name: Option<&str>, kind: &str) -> Candidate {
        Candidate {
            id,
            score,
            path: path.into(),
            name: name.map(str::to_string),
            kind: kind.into(),
            language: if path.ends_with(".md") {
                None
            } else {
                Some("go".into())
            },
        }
    }

    fn order(query: &str, cands: Vec<Candidate>) -> Vec<i64> {
        rerank(query, cands).into_iter().map(|c| c.id).collect()
    }

    #[test]
    fn word_roots_meet_across_endings() {
        for (a, b) in [
            ("throttling", "throttle"),
            ("logging", "logger"),
            ("rewriting", "rewrite"),
            ("stripping", "strip"),
            ("buffering", "buffers"),
            ("routing", "router"),
            ("handlers", "handle"),
            ("responses", "response"),
        ] {
            assert_eq!(root(a), root(b), "{a} {b}");
        }
        for (a, b) in [("class", "clas"), ("status", "state"), ("log", "login")] {
            assert_ne!(root(a), root(b), "{a} {b}");
        }
        assert_eq!(root("class"), "class");
        assert_eq!(root("pass"), "pass");
        // A query's word meets a file named by another form of it.
        let words = tokenizer::query_tokens("request throttling middleware");
        assert!(path_share(&words, "middleware/throttle.go") > 0.6);
        assert!(path_share(&words, "middleware/logger.go") < 0.4);
    }

    #[test]
    fn query_kinds() {
        for (q, want) in [
            ("parseConfig", QueryKind::Symbol),
            ("parse_config", QueryKind::Symbol),
            ("HTTPServer", QueryKind::Symbol),
            ("Router", QueryKind::Symbol),
            ("fmt::format", QueryKind::Symbol),
            ("http.ListenAndServe", QueryKind::Symbol),
            ("router", QueryKind::Natural),
            ("how are routes matched", QueryKind::Natural),
            ("Router middleware", QueryKind::Natural),
            ("", QueryKind::Natural),
        ] {
            assert_eq!(query_kind(q), want, "{q}");
        }
        assert!(semantic_weight(QueryKind::Symbol) < semantic_weight(QueryKind::Natural));
    }

    /// One row per rule: a query, candidates, the order the rule must give.
    #[test]
    fn each_rule_orders_as_its_table_row_says() {
        let rows: Vec<(&str, &str, Vec<Candidate>, Vec<i64>)> = vec![
            (
                "definition of the symbol asked for",
                "Router",
                vec![
                    c(1, 1.0, "chi.go", Some("Routes"), "function"),
                    c(2, 0.5, "mux.go", Some("Router"), "struct"),
                ],
                vec![2, 1],
            ),
            (
                "a window named like the symbol is no definition",
                "Router",
                vec![
                    c(1, 1.0, "chi.go", Some("Routes"), "function"),
                    c(2, 0.5, "mux.go", Some("Router"), "chunk"),
                ],
                vec![1, 2],
            ),
            (
                "a file named like the symbol, with no definition of it",
                "Tokenizer",
                vec![
                    c(1, 1.0, "utils.py", None, "chunk"),
                    c(
                        2,
                        0.6,
                        "tokenizer/tokenizer.py",
                        Some("replace_vocabulary"),
                        "function",
                    ),
                ],
                vec![2, 1],
            ),
            (
                "a definition still outranks a file named like the symbol",
                "Tokenizer",
                vec![
                    c(1, 0.6, "tokenizer.py", Some("load"), "function"),
                    c(2, 0.5, "base.py", Some("Tokenizer"), "class"),
                ],
                vec![2, 1],
            ),
            (
                "an identifier inside a sentence",
                "where is newRouteContext built",
                vec![
                    c(1, 1.0, "tree.go", Some("routeKey"), "function"),
                    c(2, 0.6, "context.go", Some("NewRouteContext"), "function"),
                ],
                vec![2, 1],
            ),
            (
                "files named by the query's words",
                "compress middleware for responses",
                vec![
                    c(1, 1.0, "mux.go", Some("handle"), "function"),
                    c(2, 0.7, "middleware/compress.go", Some("New"), "function"),
                ],
                vec![2, 1],
            ),
            (
                "tests below sources",
                "parse the url",
                vec![
                    c(1, 1.0, "url_test.go", Some("TestParse"), "function"),
                    c(2, 0.5, "url.go", Some("parse"), "function"),
                ],
                vec![2, 1],
            ),
            (
                "unless the query asks for tests",
                "test for parsing",
                vec![
                    c(1, 1.0, "url_test.go", Some("TestParse"), "function"),
                    c(2, 0.5, "url.go", Some("parse"), "function"),
                ],
                vec![1, 2],
            ),
            (
                "examples and docs below sources",
                "rest api handler",
                vec![
                    c(1, 1.0, "_examples/rest/main.go", Some("main"), "function"),
                    c(2, 0.6, "handler.go", Some("serve"), "function"),
                ],
                vec![2, 1],
            ),
            (
                "non-code files below code",
                "install the package",
                vec![
                    c(1, 1.0, "README.md", None, "chunk"),
                    c(2, 0.6, "setup.go", Some("run"), "function"),
                ],
                vec![2, 1],
            ),
            (
                "a file hit many times ranks its best snippet up",
                "render a template",
                vec![
                    c(1, 1.0, "alpha.go", Some("x"), "function"),
                    c(2, 0.96, "beta.go", Some("y"), "function"),
                    c(3, 0.5, "beta.go", Some("z"), "function"),
                    c(4, 0.5, "beta.go", Some("w"), "function"),
                ],
                vec![2, 1, 3, 4],
            ),
            (
                "variety: a file's further snippets are worth less",
                "render a template",
                vec![
                    c(1, 1.0, "alpha.go", Some("x"), "function"),
                    c(2, 0.9, "alpha.go", Some("y"), "function"),
                    c(3, 0.6, "beta.go", Some("z"), "function"),
                ],
                vec![1, 3, 2],
            ),
        ];
        for (rule, query, cands, want) in rows {
            assert_eq!(order(query, cands), want, "{rule}");
        }
    }

    #[test]
    fn path_factors() {
        assert_eq!(path_factor("src/lib.rs", true, false, false), 1.0);
        assert_eq!(path_factor("pkg/__init__.py", true, false, false), 0.5);
        assert_eq!(path_factor("types/index.d.ts", true, false, false), 0.7);
        assert_eq!(path_factor("tests/test_app.py", true, false, false), 0.3);
        assert_eq!(path_factor("tests/test_app.py", true, true, false), 1.0);
        assert_eq!(path_factor("docs/guide.md", false, false, false), 0.15);
    }
}
