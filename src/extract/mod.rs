//! EXTRACT's parser: turns one file into snippets. Pure: bytes in, snippets out, no I/O.
//!
//! A snippet is a definition (function, method, class, struct, enum, trait, interface, …)
//! found with the file's tree-sitter grammar, with its name, the container it sits in, its
//! line range, its doc comment and its code. A container (class, impl, module) keeps its own
//! text with the bodies of its members elided, since each member is a snippet of its own.
//! Definitions longer than [`SPLIT_LINES`] are also cut into overlapping parts linked to the
//! whole. Files without a grammar, or with no definitions, become line windows.

pub mod languages;
pub mod references;

use sha2::{Digest, Sha256};
use tree_sitter::{Node, Parser};

use languages::{DocStyle, LangSpec};

/// A definition longer than this many lines is also stored as overlapping parts.
pub const SPLIT_LINES: usize = 200;
/// Lines per part of a long definition, and per window of a file without definitions.
pub const WINDOW_LINES: usize = 60;
/// Lines two consecutive parts or windows share.
pub const OVERLAP_LINES: usize = 10;
/// Doc comments are cut at this many characters.
const MAX_DOC_CHARS: usize = 2_000;
/// Signatures are cut at this many characters.
const MAX_SIGNATURE_CHARS: usize = 300;

/// One snippet of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// Position in the file's list; parts come right after their whole.
    pub ordinal: i32,
    pub kind: String,
    pub name: Option<String>,
    /// The qualified name of the enclosing container (`Foo`, `pkg::Foo`).
    pub parent: Option<String>,
    pub qualified_name: Option<String>,
    /// 1-based, inclusive.
    pub start_line: i32,
    pub end_line: i32,
    pub doc: Option<String>,
    pub signature: Option<String>,
    pub code: String,
    /// 1.. for a part of a long definition; its whole is `whole_ordinal`.
    pub part: Option<i32>,
    pub whole_ordinal: Option<i32>,
    /// sha-256 over what the snippet says (kind, names, doc, code), not where it is: a
    /// definition that only moved keeps its hash, and so its id and vectors.
    pub hash: String,
}

/// A file's snippets and what went wrong on the way.
#[derive(Debug, Clone, Default)]
pub struct Extraction {
    pub snippets: Vec<Snippet>,
    /// The grammar found syntax errors; definitions around them were still extracted.
    pub syntax_errors: bool,
    /// The file was not valid UTF-8 and was read lossily.
    pub lossy: bool,
    /// The file's non-blank lines, and how many of them some snippet covers.
    pub lines_total: usize,
    pub lines_covered: usize,
}

/// (non-blank lines of `text`, how many of them lie in some snippet).
pub fn coverage(text: &str, snippets: &[Snippet]) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut covered = vec![false; lines.len()];
    for s in snippets {
        let (a, b) = (s.start_line.max(1) as usize - 1, s.end_line.max(0) as usize);
        for c in covered.iter_mut().take(b).skip(a) {
            *c = true;
        }
    }
    let nonblank = lines.iter().filter(|l| !l.trim().is_empty()).count();
    let hit = lines
        .iter()
        .zip(&covered)
        .filter(|(l, c)| **c && !l.trim().is_empty())
        .count();
    (nonblank, hit)
}

/// Extracts the snippets of the file at `path` (for messages only) in `language` (None:
/// plain text) from its `bytes`.
pub fn extract(language: Option<&str>, bytes: &[u8]) -> Extraction {
    let (text, lossy) = match std::str::from_utf8(bytes) {
        Ok(t) => (std::borrow::Cow::Borrowed(t), false),
        Err(_) => (String::from_utf8_lossy(bytes), true),
    };
    let mut out = Extraction {
        lossy,
        ..Extraction::default()
    };
    if let Some(spec) = language.and_then(languages::spec) {
        let mut parser = Parser::new();
        if parser.set_language(&(spec.language)()).is_ok()
            && let Some(tree) = parser.parse(text.as_bytes(), None)
        {
            let root = tree.root_node();
            out.syntax_errors = root.has_error();
            let mut walk = Walk {
                spec,
                src: &text,
                lines: line_starts(&text),
                defs: Vec::new(),
            };
            walk.children(root, &mut Vec::new());
            out.snippets = walk.finish();
        }
    }
    if out.snippets.is_empty() && !text.trim().is_empty() {
        out.snippets = windows(&text);
    }
    (out.lines_total, out.lines_covered) = coverage(&text, &out.snippets);
    out
}

/// A definition found by the walk, before containers are trimmed and long ones split.
struct Def {
    kind: &'static str,
    name: Option<String>,
    parent: Option<String>,
    qualified: Option<String>,
    start_row: usize,
    end_row: usize,
    start_byte: usize,
    end_byte: usize,
    doc: Option<String>,
    signature: Option<String>,
    /// Indices (into `defs`) of the members of a container.
    members: Vec<usize>,
}

struct Walk<'a> {
    spec: &'static LangSpec,
    src: &'a str,
    lines: Vec<usize>,
    defs: Vec<Def>,
}

/// An open container: its qualified name, its kind, its index in `defs`.
type Scope = (String, &'static str, usize);

impl<'a> Walk<'a> {
    fn children(&mut self, node: Node, scopes: &mut Vec<Scope>) {
        let mut cursor = node.walk();
        for child in node.named_children(&mut cursor) {
            self.visit(child, scopes);
        }
    }

    fn visit(&mut self, node: Node, scopes: &mut Vec<Scope>) {
        let Some(kind) = self.classify(node) else {
            self.children(node, scopes);
            return;
        };
        let Some(name) = self.name_of(node) else {
            // An anonymous struct, a declarator without a function: look inside.
            self.children(node, scopes);
            return;
        };
        let (name, mut parent) = split_qualified(&name, self.spec.separator);
        if node.kind() == "method_declaration" && parent.is_none() {
            parent = self.go_receiver(node);
        }
        let enclosing = scopes.last();
        if parent.is_none() {
            parent = enclosing.map(|s| s.0.clone());
        }
        let kind = refine_kind(kind, enclosing.map(|s| s.1), parent.is_some(), node);
        let qualified = match &parent {
            Some(p) => format!("{p}{}{name}", self.spec.separator),
            None => name.clone(),
        };
        let anchor = self.anchor(node);
        let start_row = self.attributes_start(anchor);
        let index = self.defs.len();
        self.defs.push(Def {
            kind,
            name: Some(name),
            parent,
            qualified: Some(qualified.clone()),
            start_row,
            end_row: end_row(node),
            start_byte: self.lines[start_row],
            end_byte: node.end_byte(),
            doc: self.doc_of(node, anchor),
            signature: self.signature_of(node),
            members: Vec::new(),
        });
        if let Some(scope) = enclosing {
            let container = scope.2;
            self.defs[container].members.push(index);
        }
        if self.spec.is_container(node.kind()) {
            scopes.push((qualified, kind, index));
            self.children(node, scopes);
            scopes.pop();
        }
    }

    /// The snippet kind of `node`, or None when it is not a definition worth a snippet.
    fn classify(&self, node: Node) -> Option<&'static str> {
        let kind = self.spec.kind_of(node.kind())?;
        match node.kind() {
            // `const f = () => …`: only declarators bound to a function.
            "variable_declarator" => binds_function(node).then_some(kind),
            // C and C++ types count when they have a body; a typedef covers its struct.
            "struct_specifier" | "union_specifier" | "enum_specifier" | "class_specifier" => {
                let has_body = node.child_by_field_name("body").is_some();
                let in_typedef = node.parent().is_some_and(|p| p.kind() == "type_definition");
                (has_body && !in_typedef).then_some(kind)
            }
            "type_definition" => {
                let ty = node.child_by_field_name("type")?;
                ty.child_by_field_name("body")?;
                Some(match ty.kind() {
                    "struct_specifier" => "struct",
                    "union_specifier" => "union",
                    "enum_specifier" => "enum",
                    _ => "type",
                })
            }
            // Rust: only inline modules (`mod x { … }`), not `mod x;`.
            "mod_item" => node.child_by_field_name("body").map(|_| kind),
            "type_spec" => Some(go_type_kind(node)),
            _ => Some(kind),
        }
    }

    fn text(&self, node: Node) -> &'a str {
        &self.src[node.byte_range()]
    }

    /// The name of a definition: its `name` field, or what each grammar uses instead.
    fn name_of(&self, node: Node) -> Option<String> {
        let name = match node.kind() {
            "impl_item" => {
                let ty = self.text(node.child_by_field_name("type")?);
                return Some(ty.to_string());
            }
            "function_definition" if matches!(self.spec.name, "c" | "cpp") => {
                return self.declarator_name(node.child_by_field_name("declarator")?);
            }
            "type_definition" => {
                return self.declarator_name(node.child_by_field_name("declarator")?);
            }
            _ => node.child_by_field_name("name")?,
        };
        let text = self.text(name).trim();
        (!text.is_empty()).then(|| text.to_string())
    }

    /// The type a Go method is declared on: `Server` for `func (s *Server[T]) …`.
    fn go_receiver(&self, node: Node) -> Option<String> {
        let receiver = node.child_by_field_name("receiver")?;
        let text = self.text(receiver.named_child(0)?.child_by_field_name("type")?);
        let name = text.trim_start_matches('*');
        let name = name.split('[').next().unwrap_or(name).trim();
        (!name.is_empty()).then(|| name.to_string())
    }

    /// Follows C/C++ declarators (`*f(…)`, `&Foo::bar(…)`) down to the declared name.
    fn declarator_name(&self, node: Node) -> Option<String> {
        declarator_node(node).map(|n| self.text(n).to_string())
    }

    /// The node whose range the snippet takes: the definition, or the wrappers around it
    /// (decorators, `export`, `template<…>`, `const f = …`).
    fn anchor<'t>(&self, node: Node<'t>) -> Node<'t> {
        let mut anchor = node;
        while let Some(parent) = anchor.parent() {
            if self.spec.wrappers.contains(&parent.kind()) {
                anchor = parent;
            } else {
                break;
            }
        }
        anchor
    }

    /// The first row of the attributes or annotations right above `anchor`, or its own.
    fn attributes_start(&self, anchor: Node) -> usize {
        let mut row = anchor.start_position().row;
        let mut sibling = anchor.prev_named_sibling();
        while let Some(s) = sibling.filter(|s| self.spec.between.contains(&s.kind())) {
            row = s.start_position().row;
            sibling = s.prev_named_sibling();
        }
        row
    }

    fn doc_of(&self, node: Node, anchor: Node) -> Option<String> {
        let raw = match self.spec.doc {
            DocStyle::Docstring => {
                let body = node.child_by_field_name("body")?;
                let first = body.named_child(0)?;
                if first.kind() != "expression_statement" {
                    return None;
                }
                let string = first.named_child(0)?;
                if string.kind() != "string" {
                    return None;
                }
                strip_string_quotes(self.text(string))
            }
            DocStyle::Preceding => {
                let mut comments = Vec::new();
                let mut next_row = anchor.start_position().row;
                let mut sibling = anchor.prev_named_sibling();
                while let Some(s) = sibling {
                    if self.spec.between.contains(&s.kind()) {
                        next_row = s.start_position().row;
                    } else if s.kind().contains("comment") && end_row(s) + 1 >= next_row {
                        comments.push(self.text(s));
                        next_row = s.start_position().row;
                    } else {
                        break;
                    }
                    sibling = s.prev_named_sibling();
                }
                if comments.is_empty() {
                    return None;
                }
                comments.reverse();
                comments
                    .iter()
                    .flat_map(|c| c.lines())
                    .map(strip_comment_marker)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        let doc = raw.trim();
        (!doc.is_empty()).then(|| truncate_chars(doc, MAX_DOC_CHARS))
    }

    /// The definition's head: its text up to the body, whitespace collapsed.
    fn signature_of(&self, node: Node) -> Option<String> {
        let end = node
            .child_by_field_name("body")
            .map(|b| b.start_byte())
            .unwrap_or_else(|| {
                let start = node.start_byte();
                self.src[start..node.end_byte()]
                    .find('\n')
                    .map_or(node.end_byte(), |i| start + i)
            });
        let head = &self.src[node.start_byte()..end.max(node.start_byte())];
        let collapsed = head.split_whitespace().collect::<Vec<_>>().join(" ");
        let collapsed = collapsed.trim_end_matches(['{', ':', '=']).trim_end();
        (!collapsed.is_empty()).then(|| truncate_chars(collapsed, MAX_SIGNATURE_CHARS))
    }

    /// Turns the found definitions into snippets: containers lose their members' bodies,
    /// long definitions gain parts.
    fn finish(self) -> Vec<Snippet> {
        let mut out = Vec::with_capacity(self.defs.len());
        for def in &self.defs {
            let code = if def.members.is_empty() {
                self.src[def.start_byte..def.end_byte].to_string()
            } else {
                self.elide_members(def)
            };
            let ordinal = out.len() as i32;
            let mut snippet = Snippet {
                ordinal,
                kind: def.kind.to_string(),
                name: def.name.clone(),
                parent: def.parent.clone(),
                qualified_name: def.qualified.clone(),
                start_line: def.start_row as i32 + 1,
                end_line: def.end_row as i32 + 1,
                doc: def.doc.clone(),
                signature: def.signature.clone(),
                code,
                part: None,
                whole_ordinal: None,
                hash: String::new(),
            };
            snippet.hash = snippet_hash(&snippet);
            let line_count = def.end_row - def.start_row + 1;
            let parts = if def.members.is_empty() && line_count > SPLIT_LINES {
                split_parts(&snippet)
            } else {
                Vec::new()
            };
            out.push(snippet);
            for mut part in parts {
                part.ordinal = out.len() as i32;
                out.push(part);
            }
        }
        // What lies between definitions (imports, module-level code, assignments the
        // grammar rules do not take for definitions) becomes windows of its own, so every
        // line of the file is searchable.
        if !out.is_empty() {
            let lines: Vec<&str> = self.src.lines().collect();
            let mut covered = vec![false; lines.len()];
            for def in &self.defs {
                for c in covered.iter_mut().take(def.end_row + 1).skip(def.start_row) {
                    *c = true;
                }
            }
            let mut row = 0;
            while row < lines.len() {
                if covered[row] {
                    row += 1;
                    continue;
                }
                let start = row;
                while row < lines.len() && !covered[row] {
                    row += 1;
                }
                let base = out.len() as i32;
                out.extend(windows_of(&lines[start..row], start, base));
            }
        }
        out
    }

    /// A container's text with each member's lines replaced by one `…` line.
    fn elide_members(&self, def: &Def) -> String {
        let text = &self.src[def.start_byte..def.end_byte];
        let mut ranges: Vec<(usize, usize)> = def
            .members
            .iter()
            .map(|&m| (self.defs[m].start_row, self.defs[m].end_row))
            .collect();
        ranges.sort_unstable();
        let mut out = String::with_capacity(text.len() / 4);
        let mut members = ranges.iter().peekable();
        let mut elided_until = None;
        for (i, line) in text.lines().enumerate() {
            let row = def.start_row + i;
            if let Some(until) = elided_until {
                if row <= until {
                    continue;
                }
                elided_until = None;
            }
            while members.peek().is_some_and(|(_, end)| *end < row) {
                members.next();
            }
            if let Some(&&(start, end)) = members.peek()
                && start <= row
                && row > def.start_row
            {
                let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
                out.push_str(&indent);
                out.push_str("...\n");
                elided_until = Some(end);
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out.truncate(out.trim_end().len());
        out
    }
}

/// Kinds depend on where a definition sits: a function in a class is a method.
fn refine_kind(
    kind: &'static str,
    container: Option<&'static str>,
    qualified_parent: bool,
    node: Node,
) -> &'static str {
    let in_type = container.is_some_and(|c| !matches!(c, "module" | "namespace"));
    match kind {
        "function" if in_type => "method",
        // `void Foo::bar() {…}` outside the class body.
        "function" if qualified_parent && node.kind() == "function_definition" => "method",
        // Ruby: `def` at the top level is a function.
        "method" if container.is_none() && node.kind() == "method" => "function",
        k => k,
    }
}

/// `Foo::bar` → (`bar`, Some(`Foo`)); `Foo.bar` likewise for `.` languages.
fn split_qualified(name: &str, separator: &str) -> (String, Option<String>) {
    for sep in [separator, ".", ":"] {
        if let Some((parent, leaf)) = name.rsplit_once(sep)
            && !parent.is_empty()
            && !leaf.is_empty()
            && !name.contains(['<', '(', ' '])
        {
            return (leaf.to_string(), Some(parent.to_string()));
        }
    }
    (name.to_string(), None)
}

fn end_row(node: Node) -> usize {
    let end = node.end_position();
    // A node ending at column 0 ends on the line before (its trailing newline).
    if end.column == 0 && end.row > node.start_position().row {
        end.row - 1
    } else {
        end.row
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    starts
}

fn strip_comment_marker(line: &str) -> &str {
    let t = line.trim();
    for marker in [
        "///", "//!", "//", "/**", "/*!", "/*", "#", "--[[", "--", "*/", "*",
    ] {
        if let Some(rest) = t.strip_prefix(marker) {
            return rest.trim_end_matches("*/").trim();
        }
    }
    t.trim_end_matches("*/").trim()
}

fn strip_string_quotes(s: &str) -> String {
    let s = s.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    for q in ["\"\"\"", "'''", "\"", "'"] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return dedent(inner);
        }
    }
    s.to_string()
}

/// Removes the indentation common to a docstring's lines after the first.
fn dedent(s: &str) -> String {
    let indent = s
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    s.lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                l.trim()
            } else {
                l.get(indent..).unwrap_or(l.trim())
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn snippet_hash(s: &Snippet) -> String {
    let mut h = Sha256::new();
    for field in [
        Some(s.kind.as_str()),
        s.qualified_name.as_deref(),
        s.doc.as_deref(),
        Some(&s.code),
    ] {
        h.update(field.unwrap_or("").as_bytes());
        h.update([0]);
    }
    h.update(s.part.unwrap_or(0).to_le_bytes());
    let digest = h.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Overlapping windows of `lines`: (first line index, last line index), inclusive.
fn window_bounds(lines: usize) -> Vec<(usize, usize)> {
    let step = WINDOW_LINES - OVERLAP_LINES;
    let mut out = Vec::new();
    let mut start = 0;
    while start < lines {
        let end = (start + WINDOW_LINES).min(lines) - 1;
        out.push((start, end));
        if end + 1 >= lines {
            break;
        }
        start += step;
    }
    out
}

/// The parts of a long definition, linked to it by `whole_ordinal`.
fn split_parts(whole: &Snippet) -> Vec<Snippet> {
    let lines: Vec<&str> = whole.code.lines().collect();
    window_bounds(lines.len())
        .into_iter()
        .enumerate()
        .map(|(i, (a, b))| {
            let mut part = Snippet {
                ordinal: 0,
                kind: whole.kind.clone(),
                name: whole.name.clone(),
                parent: whole.parent.clone(),
                qualified_name: whole.qualified_name.clone(),
                start_line: whole.start_line + a as i32,
                end_line: whole.start_line + b as i32,
                doc: None,
                signature: whole.signature.clone(),
                code: lines[a..=b].join("\n"),
                part: Some(i as i32 + 1),
                whole_ordinal: Some(whole.ordinal),
                hash: String::new(),
            };
            part.hash = snippet_hash(&part);
            part
        })
        .collect()
}

/// A file without definitions as overlapping line windows.
fn windows(text: &str) -> Vec<Snippet> {
    let lines: Vec<&str> = text.lines().collect();
    windows_of(&lines, 0, 0)
}

/// `lines` (the file's from row `first_row` on) as overlapping windows, blank ones left
/// out, with ordinals from `ordinal`. Blank lines at either end of a window are trimmed.
fn windows_of(lines: &[&str], first_row: usize, ordinal: i32) -> Vec<Snippet> {
    window_bounds(lines.len())
        .into_iter()
        .filter_map(|(a, b)| {
            let a = (a..=b).find(|&i| !lines[i].trim().is_empty())?;
            let b = (a..=b).rev().find(|&i| !lines[i].trim().is_empty())?;
            Some((a, b))
        })
        .enumerate()
        .map(|(i, (a, b))| {
            let mut s = Snippet {
                ordinal: ordinal + i as i32,
                kind: "chunk".into(),
                name: None,
                parent: None,
                qualified_name: None,
                start_line: (first_row + a) as i32 + 1,
                end_line: (first_row + b) as i32 + 1,
                doc: None,
                signature: None,
                code: lines[a..=b].join("\n"),
                part: None,
                whole_ordinal: None,
                hash: String::new(),
            };
            s.hash = snippet_hash(&s);
            s
        })
        .collect()
}

/// The name node C/C++ declarators (`*f(…)`, `&Foo::bar(…)`) lead down to (at most 256
/// levels).
pub(crate) fn declarator_node(mut node: Node) -> Option<Node> {
    for _ in 0..256 {
        match node.kind() {
            "identifier"
            | "field_identifier"
            | "type_identifier"
            | "qualified_identifier"
            | "destructor_name"
            | "operator_name"
            | "primitive_type" => return Some(node),
            _ => {
                node = match node.child_by_field_name("declarator") {
                    Some(inner) => inner,
                    None => {
                        let mut cursor = node.walk();
                        node.named_children(&mut cursor).find(|c| {
                            c.kind().ends_with("declarator") || c.kind().ends_with("identifier")
                        })?
                    }
                };
            }
        }
    }
    None
}

/// Whether declarator `node` (`const f = …`) binds a function.
pub(crate) fn binds_function(node: Node) -> bool {
    node.child_by_field_name("value").is_some_and(|v| {
        matches!(
            v.kind(),
            "arrow_function" | "function_expression" | "function" | "generator_function"
        )
    })
}

/// The kind of Go type declaration `node` (a `type_spec`).
pub(crate) fn go_type_kind(node: Node) -> &'static str {
    match node.child_by_field_name("type").map(|t| t.kind()) {
        Some("struct_type") => "struct",
        Some("interface_type") => "interface",
        _ => "type",
    }
}

#[cfg(test)]
mod tests;

/// Every kind of snippet extraction makes, sorted: the grammars' definition kinds,
/// `method` (a function inside a type) and `chunk` (lines outside any definition).
pub fn kinds() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = languages::ALL
        .iter()
        .flat_map(|s| s.defs.iter().map(|(_, kind)| *kind))
        .chain(["method", "chunk"])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
