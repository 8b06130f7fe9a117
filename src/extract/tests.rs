use super::*;

/// The 1-based numbers of the non-blank lines of `src` that no snippet covers.
fn uncovered(src: &str, snippets: &[Snippet]) -> Vec<usize> {
    src.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| i + 1)
        .filter(|&n| {
            !snippets
                .iter()
                .any(|s| s.start_line as usize <= n && n <= s.end_line as usize)
        })
        .collect()
}

/// (kind, qualified name, start line, end line) of each whole definition (the windows
/// between definitions left out; every non-blank line must be in some snippet).
fn outline(language: &str, src: &str) -> Vec<(String, String, i32, i32)> {
    let x = extract(Some(language), src.as_bytes());
    assert_eq!(
        uncovered(src, &x.snippets),
        Vec::<usize>::new(),
        "{language}: lines in no snippet"
    );
    x.snippets
        .iter()
        .filter(|s| s.part.is_none() && s.kind != "chunk")
        .map(|s| {
            (
                s.kind.clone(),
                s.qualified_name.clone().unwrap_or_default(),
                s.start_line,
                s.end_line,
            )
        })
        .collect()
}

fn o(kind: &str, name: &str, a: i32, b: i32) -> (String, String, i32, i32) {
    (kind.to_string(), name.to_string(), a, b)
}

fn find<'a>(x: &'a Extraction, qualified: &str) -> &'a Snippet {
    x.snippets
        .iter()
        .find(|s| s.qualified_name.as_deref() == Some(qualified))
        .unwrap_or_else(|| panic!("no snippet {qualified} in {:#?}", x.snippets))
}

#[test]
fn rust_items_methods_and_docs() {
    let src = "\
/// Parses a config file.
#[inline]
pub fn parse_config_file(path: &str) -> Config {
    todo!()
}

struct Point { x: i32 }

impl Point {
    /// Makes one.
    fn new() -> Self { Point { x: 0 } }
}

trait Shape {
    fn area(&self) -> f64;
}
";
    assert_eq!(
        outline("rust", src),
        vec![
            o("function", "parse_config_file", 2, 5),
            o("struct", "Point", 7, 7),
            o("impl", "Point", 9, 12),
            o("method", "Point::new", 11, 11),
            o("trait", "Shape", 14, 16),
            o("method", "Shape::area", 15, 15),
        ]
    );
    let x = extract(Some("rust"), src.as_bytes());
    assert_eq!(
        find(&x, "parse_config_file").doc.as_deref(),
        Some("Parses a config file.")
    );
    assert_eq!(find(&x, "Point::new").doc.as_deref(), Some("Makes one."));
    assert_eq!(find(&x, "Point::new").parent.as_deref(), Some("Point"));
    let imp = find(&x, "Point");
    assert_eq!(imp.kind, "struct");
    let imp = x.snippets.iter().find(|s| s.kind == "impl").unwrap();
    assert_eq!(imp.code, "impl Point {\n    /// Makes one.\n    ...\n}");
    assert_eq!(
        find(&x, "parse_config_file").signature.as_deref(),
        Some("pub fn parse_config_file(path: &str) -> Config")
    );
}

#[test]
fn python_classes_methods_docstrings_decorators() {
    let src = r#"import os

def top(a, b):
    """Adds two numbers.

    Really.
    """
    return a + b

class Greeter(Base):
    """Says hello."""

    @staticmethod
    def hello(name):
        return "hi " + name
"#;
    assert_eq!(
        outline("python", src),
        vec![
            o("function", "top", 3, 8),
            o("class", "Greeter", 10, 15),
            o("method", "Greeter.hello", 13, 15),
        ]
    );
    let x = extract(Some("python"), src.as_bytes());
    assert_eq!(
        find(&x, "top").doc.as_deref(),
        Some("Adds two numbers.\n\nReally.")
    );
    assert_eq!(find(&x, "Greeter").doc.as_deref(), Some("Says hello."));
    assert!(
        find(&x, "Greeter.hello")
            .code
            .starts_with("    @staticmethod")
    );
}

#[test]
fn go_functions_methods_and_types() {
    let src = "package main

// Server serves.
type Server struct {
	addr string
}

type Handler interface {
	Serve()
}

// Start starts it.
func (s *Server) Start() error {
	return nil
}

func main() {}
";
    assert_eq!(
        outline("go", src),
        vec![
            o("struct", "Server", 4, 6),
            o("interface", "Handler", 8, 10),
            o("method", "Server.Start", 13, 15),
            o("function", "main", 17, 17),
        ]
    );
    let x = extract(Some("go"), src.as_bytes());
    assert_eq!(
        find(&x, "Server.Start").doc.as_deref(),
        Some("Start starts it.")
    );
    assert_eq!(find(&x, "Server").doc.as_deref(), Some("Server serves."));
}

#[test]
fn javascript_and_typescript() {
    let js = "/** Adds. */
export function add(a, b) { return a + b; }
const mul = (a, b) => a * b;
class Calc {
  run() { return 1; }
}
";
    assert_eq!(
        outline("javascript", js),
        vec![
            o("function", "add", 2, 2),
            o("function", "mul", 3, 3),
            o("class", "Calc", 4, 6),
            o("method", "Calc.run", 5, 5),
        ]
    );
    let x = extract(Some("javascript"), js.as_bytes());
    assert_eq!(find(&x, "add").doc.as_deref(), Some("Adds."));
    let ts = "interface Shape { area(): number }
type Id = string;
enum Color { Red }
export class Box implements Shape {
  area(): number { return 0; }
}
";
    assert_eq!(
        outline("typescript", ts),
        vec![
            o("interface", "Shape", 1, 1),
            o("type", "Id", 2, 2),
            o("enum", "Color", 3, 3),
            o("class", "Box", 4, 6),
            o("method", "Box.area", 5, 5),
        ]
    );
    let tsx = "export const App = () => <div>hi</div>;\n";
    assert_eq!(outline("tsx", tsx), vec![o("function", "App", 1, 1)]);
}

#[test]
fn java_csharp_php() {
    let java = "package x;
/** A thing. */
public class Thing {
    private int n;
    public Thing() {}
    @Override
    public String toString() { return \"\"; }
}
interface Named { String name(); }
";
    assert_eq!(
        outline("java", java),
        vec![
            o("class", "Thing", 3, 8),
            o("constructor", "Thing.Thing", 5, 5),
            o("method", "Thing.toString", 6, 7),
            o("interface", "Named", 9, 9),
            o("method", "Named.name", 9, 9),
        ]
    );
    let x = extract(Some("java"), java.as_bytes());
    assert_eq!(find(&x, "Thing").doc.as_deref(), Some("A thing."));
    assert!(find(&x, "Thing").code.contains("private int n;"));
    let cs = "namespace App {
    /// <summary>Counts.</summary>
    public class Counter {
        public int Next() { return 1; }
    }
}
";
    assert_eq!(
        outline("csharp", cs),
        vec![
            o("namespace", "App", 1, 6),
            o("class", "App.Counter", 3, 5),
            o("method", "App.Counter.Next", 4, 4),
        ]
    );
    let php = "<?php
function helper($x) { return $x; }
class Repo {
    public function find($id) { return null; }
}
";
    assert_eq!(
        outline("php", php),
        vec![
            o("function", "helper", 2, 2),
            o("class", "Repo", 3, 5),
            o("method", "Repo::find", 4, 4),
        ]
    );
}

#[test]
fn c_cpp_ruby_bash_lua() {
    let c = "/* Sums. */
int sum(int a, int b) { return a + b; }
struct point { int x; };
typedef struct { int y; } pair_t;
static char *name(void) { return 0; }
";
    assert_eq!(
        outline("c", c),
        vec![
            o("function", "sum", 2, 2),
            o("struct", "point", 3, 3),
            o("struct", "pair_t", 4, 4),
            o("function", "name", 5, 5),
        ]
    );
    let cpp = "namespace geo {
class Shape {
public:
    virtual double area() const { return 0; }
};
}
template <typename T>
T max(T a, T b) { return a > b ? a : b; }
double geo::Shape::perimeter() { return 1; }
";
    assert_eq!(
        outline("cpp", cpp),
        vec![
            o("namespace", "geo", 1, 6),
            o("class", "geo::Shape", 2, 5),
            o("method", "geo::Shape::area", 4, 4),
            o("function", "max", 7, 8),
            o("method", "geo::Shape::perimeter", 9, 9),
        ]
    );
    let rb = "# Greets.
module Greet
  class Person
    def hello
      'hi'
    end
    def self.build; end
  end
end
def helper; end
";
    assert_eq!(
        outline("ruby", rb),
        vec![
            o("module", "Greet", 2, 9),
            o("class", "Greet::Person", 3, 8),
            o("method", "Greet::Person::hello", 4, 6),
            o("method", "Greet::Person::build", 7, 7),
            o("function", "helper", 10, 10),
        ]
    );
    let sh = "# Deploys.\ndeploy() {\n  echo hi\n}\n";
    assert_eq!(outline("bash", sh), vec![o("function", "deploy", 2, 4)]);
    let x = extract(Some("bash"), sh.as_bytes());
    assert_eq!(x.snippets[0].doc.as_deref(), Some("Deploys."));
    let lua =
        "local function add(a, b)\n  return a + b\nend\nfunction M.sub(a, b) return a - b end\n";
    assert_eq!(
        outline("lua", lua),
        vec![o("function", "add", 1, 3), o("function", "M.sub", 4, 4)]
    );
}

#[test]
fn long_definitions_are_split_into_linked_overlapping_parts() {
    let body: String = (0..250).map(|i| format!("    x{i} = {i}\n")).collect();
    let src = format!("def long():\n{body}");
    let x = extract(Some("python"), src.as_bytes());
    let whole = &x.snippets[0];
    assert_eq!(
        (whole.start_line, whole.end_line, whole.part),
        (1, 251, None)
    );
    let parts: Vec<_> = x.snippets[1..].iter().collect();
    assert!(parts.len() >= 5, "{} parts", parts.len());
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.whole_ordinal, Some(0));
        assert_eq!(p.part, Some(i as i32 + 1));
        assert!(p.end_line - p.start_line < WINDOW_LINES as i32);
    }
    assert_eq!(parts[0].start_line, 1);
    assert_eq!(
        parts[1].start_line,
        parts[0].end_line - OVERLAP_LINES as i32 + 1
    );
    assert_eq!(parts.last().unwrap().end_line, 251);
}

#[test]
fn text_and_unknown_languages_become_windows() {
    let text: String = (1..=130).map(|i| format!("line {i}\n")).collect();
    let x = extract(None, text.as_bytes());
    let ranges: Vec<_> = x
        .snippets
        .iter()
        .map(|s| (s.start_line, s.end_line))
        .collect();
    assert_eq!(ranges, vec![(1, 60), (51, 110), (101, 130)]);
    assert!(x.snippets.iter().all(|s| s.kind == "chunk"));
    // A Python file without definitions is windowed too.
    let x = extract(Some("python"), b"print('hi')\n");
    assert_eq!(x.snippets.len(), 1);
    assert_eq!(x.snippets[0].kind, "chunk");
}

#[test]
fn bad_input_is_survived() {
    let x = extract(
        Some("rust"),
        b"fn ok() {}\nfn broken( {\n\xff\xfe fn after() {}\n",
    );
    assert!(x.lossy);
    assert!(x.syntax_errors);
    assert!(x.snippets.iter().any(|s| s.name.as_deref() == Some("ok")));
    assert!(extract(Some("rust"), b"").snippets.is_empty());
    assert!(extract(None, b"  \n\n").snippets.is_empty());
}

#[test]
fn hashes_follow_content_not_position() {
    let a = extract(Some("python"), b"def f():\n    return 1\n");
    let b = extract(Some("python"), b"\n\n# moved\ndef f():\n    return 1\n");
    let c = extract(Some("python"), b"def f():\n    return 2\n");
    assert_eq!(a.snippets[0].hash, b.snippets[0].hash);
    assert_ne!(a.snippets[0].start_line, b.snippets[0].start_line);
    assert_ne!(a.snippets[0].hash, c.snippets[0].hash);
}

#[test]
fn the_lines_between_definitions_become_windows() {
    let src = "\
import os
import sys

def first():
    return 1

LIMIT = 10
app.handler = function_of(LIMIT)

def second():
    return 2
";
    let x = extract(Some("python"), src.as_bytes());
    let chunks: Vec<(i32, i32, &str)> = x
        .snippets
        .iter()
        .filter(|s| s.kind == "chunk")
        .map(|s| (s.start_line, s.end_line, s.code.as_str()))
        .collect();
    assert_eq!(
        chunks,
        vec![
            (1, 2, "import os\nimport sys"),
            (7, 8, "LIMIT = 10\napp.handler = function_of(LIMIT)"),
        ]
    );
}

/// Every non-blank line of real files (the CPython standard library and the crate sources
/// cargo downloaded, where present) is in some snippet, for each language found there.
#[test]
fn every_line_of_real_files_is_covered() {
    let mut roots = vec![std::path::PathBuf::from("/usr/lib/python3.11")];
    if let Ok(out) = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
    {
        roots.push(String::from_utf8_lossy(&out.stdout).trim().into());
    }
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
    {
        roots.push(home.join("registry/src"));
    }
    let mut per_language: std::collections::BTreeMap<&str, usize> = Default::default();
    for root in roots.iter().filter(|r| r.is_dir()) {
        for entry in ignore::WalkBuilder::new(root)
            .standard_filters(false)
            .build()
            .flatten()
        {
            let path = entry.path();
            let Some(language) = crate::sources::directory::language_of(&path.to_string_lossy())
            else {
                continue;
            };
            let seen = per_language.entry(language).or_default();
            if *seen >= 25 || !path.is_file() {
                continue;
            }
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            if bytes.len() > 200_000 {
                continue;
            }
            let x = extract(Some(language), &bytes);
            let text = String::from_utf8_lossy(&bytes);
            let missing = uncovered(&text, &x.snippets);
            assert!(
                missing.is_empty(),
                "{}: lines {missing:?} in no snippet",
                path.display()
            );
            assert_eq!(x.lines_total, x.lines_covered, "{}", path.display());
            *seen += 1;
        }
    }
    for language in ["python", "rust", "c"] {
        assert!(
            per_language.get(language).copied().unwrap_or(0) > 0,
            "no {language} files found: {per_language:?}"
        );
    }
    eprintln!("files checked per language: {per_language:?}");
}
