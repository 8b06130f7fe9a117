//! The references pipeline's parser: a file's definitions and the names it refers to
//! (calls, imports, type uses), for "who calls this, what does this call, where is this
//! used". Pure: bytes in, symbols out, no I/O. Names are bare (`parse`, not
//! `Config::parse`); tying a reference to a definition happens later, against every
//! file's definitions (`service::references`).
//!
//! The walk is iterative (a [`tree_sitter::TreeCursor`] and explicit stacks), so deeply
//! nested input cannot overflow the stack.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tree_sitter::{Node, Parser};

use super::languages::{self, LangSpec};

/// Names longer than this are not recorded.
const MAX_NAME_BYTES: usize = 200;
/// A call's qualifier longer than this is dropped.
const MAX_QUALIFIER_BYTES: usize = 80;

/// A file's definitions and references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Symbols {
    /// Sorted by (line, name).
    pub defs: Vec<SymbolDef>,
    /// Sorted by (line, column, kind).
    pub refs: Vec<SymbolRef>,
}

/// A definition: a node of one of the grammar's definition kinds, with a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolDef {
    /// The bare name: `parse`, not `Config::parse`.
    pub name: String,
    /// With its container(s), joined by the language's separator: `Config::parse`. None at
    /// the top level.
    pub qualified: Option<String>,
    /// The snippet kind: "function", "method", "class", "struct", …
    pub kind: &'static str,
    /// 1-based first and last line of the definition node.
    pub line: i32,
    pub end_line: i32,
}

/// What a reference does with the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefKind {
    /// A function, method or constructor call, a macro invocation, a command.
    Call,
    /// A name the file imports.
    Import,
    /// A type named in a signature, a declaration, a base list.
    Type,
}

impl RefKind {
    const ALL: [RefKind; 3] = [RefKind::Call, RefKind::Import, RefKind::Type];

    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Call => "call",
            RefKind::Import => "import",
            RefKind::Type => "type",
        }
    }

    /// `"call"`, `"import"` or `"type"` (any case).
    pub fn parse(s: &str) -> Option<RefKind> {
        RefKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    fn rank(self) -> u8 {
        match self {
            RefKind::Call => 0,
            RefKind::Import => 1,
            RefKind::Type => 2,
        }
    }
}

/// One use of a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolRef {
    /// The bare name referred to: the last segment (`a.b.c()` → `c`, `foo::bar()` → `bar`,
    /// `new Foo()` → `Foo`).
    pub name: String,
    pub kind: RefKind,
    /// 1-based line and byte column of the name.
    pub line: i32,
    pub column: i32,
    /// The innermost enclosing definition's bare name; None at the top level.
    pub from: Option<String>,
    /// That definition's first line.
    pub from_line: Option<i32>,
    /// For calls: the receiver or path before the name (`self`, `os.path`, `Config`), when
    /// it is on one line and at most 80 bytes long.
    pub qualifier: Option<String>,
}

/// The definitions and references of a file in `language`. None when trawl has no grammar
/// for `language` or the file does not parse at all. Invalid UTF-8 is read lossily.
pub fn symbols(language: &str, bytes: &[u8]) -> Option<Symbols> {
    let spec = languages::spec(language)?;
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    let mut parser = Parser::new();
    parser.set_language(&(spec.language)()).ok()?;
    let tree = parser.parse(text.as_bytes(), None)?;
    let mut walk = Walk {
        spec,
        lang: Lang::of(spec.name),
        src: &text,
        defs: Vec::new(),
        refs: Vec::new(),
        scopes: Vec::new(),
        kinds: Vec::new(),
        excluded: HashSet::new(),
        python_types: 0,
    };
    walk.run(tree.root_node());
    let Walk {
        mut defs, mut refs, ..
    } = walk;
    defs.sort_by(|a, b| {
        (a.line, &a.name, a.end_line, a.kind).cmp(&(b.line, &b.name, b.end_line, b.kind))
    });
    refs.sort_by(|a, b| {
        (a.line, a.column, a.kind.rank(), &a.name).cmp(&(b.line, b.column, b.kind.rank(), &b.name))
    });
    refs.dedup_by(|a, b| a.line == b.line && a.column == b.column && a.name == b.name);
    Some(Symbols { defs, refs })
}

/// The grammars, for the rules that differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Rust,
    Python,
    Go,
    /// JavaScript, TypeScript and TSX.
    Js,
    Java,
    /// C and C++.
    C,
    CSharp,
    Ruby,
    Php,
    Bash,
    Lua,
}

impl Lang {
    fn of(name: &str) -> Lang {
        match name {
            "rust" => Lang::Rust,
            "python" => Lang::Python,
            "go" => Lang::Go,
            "java" => Lang::Java,
            "c" | "cpp" => Lang::C,
            "csharp" => Lang::CSharp,
            "ruby" => Lang::Ruby,
            "php" => Lang::Php,
            "bash" => Lang::Bash,
            "lua" => Lang::Lua,
            _ => Lang::Js,
        }
    }
}

/// An enclosing definition.
struct Scope {
    name: String,
    /// Its qualified name, or its name at the top level: what its members are qualified by.
    path: String,
    kind: &'static str,
    line: i32,
    container: bool,
    /// Depth of its node in the walk: the scope closes when the walk leaves it.
    depth: usize,
}

struct Walk<'a> {
    spec: &'static LangSpec,
    lang: Lang,
    src: &'a str,
    defs: Vec<SymbolDef>,
    refs: Vec<SymbolRef>,
    scopes: Vec<Scope>,
    /// The kinds of the nodes from the root down to the current one's parent.
    kinds: Vec<&'a str>,
    /// Nodes (ids) that are not references: definitions' names, calls' names (so that a
    /// constructor's type is not a type use as well).
    excluded: HashSet<usize>,
    /// Python: how many `type` annotations enclose the current node.
    python_types: usize,
}

impl<'a> Walk<'a> {
    /// Visits every node in pre-order without recursion.
    fn run(&mut self, root: Node<'a>) {
        let mut cursor = root.walk();
        let mut depth = 0usize;
        loop {
            let node = cursor.node();
            let field = cursor.field_name();
            let descend = self.visit(node, field, depth);
            if descend && cursor.goto_first_child() {
                self.enter(node);
                depth += 1;
                continue;
            }
            loop {
                self.close_scopes(depth);
                if cursor.goto_next_sibling() {
                    break;
                }
                if !cursor.goto_parent() {
                    return;
                }
                depth -= 1;
                self.leave();
            }
        }
    }

    /// The walk goes down into `node`'s children.
    fn enter(&mut self, node: Node<'a>) {
        self.kinds.push(node.kind());
        if self.lang == Lang::Python && node.kind() == "type" {
            self.python_types += 1;
        }
    }

    /// The walk goes back up to the parent of the current node's siblings.
    fn leave(&mut self) {
        if let Some(kind) = self.kinds.pop()
            && self.lang == Lang::Python
            && kind == "type"
        {
            self.python_types -= 1;
        }
    }

    fn close_scopes(&mut self, depth: usize) {
        while self.scopes.last().is_some_and(|s| s.depth >= depth) {
            self.scopes.pop();
        }
    }

    fn parent_kind(&self) -> &'a str {
        self.kinds.last().copied().unwrap_or("")
    }

    fn text(&self, node: Node) -> &'a str {
        self.src.get(node.byte_range()).unwrap_or("")
    }

    /// Records what `node` defines or refers to; false: its children hold nothing more.
    fn visit(&mut self, node: Node<'a>, field: Option<&'a str>, depth: usize) -> bool {
        if !node.is_named() {
            return false;
        }
        if let Some(kind) = self.def_kind(node) {
            self.definition(node, kind, depth);
        }
        if self.is_import(node) {
            self.imports(node);
            return false;
        }
        if let Some((name, start)) = self.callee(node) {
            self.call(name, start);
        }
        if self.lang == Lang::Rust && node.kind() == "token_tree" {
            self.macro_calls(node);
        }
        if node.kind() == "scoped_type_identifier" {
            self.type_path(node);
        }
        self.type_use(node, field);
        true
    }

    // ----- definitions -----

    /// The snippet kind of `node` when it is a definition (as mod.rs decides, except that
    /// every typedef counts).
    fn def_kind(&self, node: Node) -> Option<&'static str> {
        let kind = self.spec.kind_of(node.kind())?;
        match node.kind() {
            "variable_declarator" => super::binds_function(node).then_some(kind),
            "struct_specifier" | "union_specifier" | "enum_specifier" | "class_specifier" => {
                let has_body = node.child_by_field_name("body").is_some();
                (has_body && self.parent_kind() != "type_definition").then_some(kind)
            }
            "type_definition" => {
                let ty = node.child_by_field_name("type")?;
                let has_body = ty.child_by_field_name("body").is_some();
                Some(match ty.kind() {
                    "struct_specifier" if has_body => "struct",
                    "union_specifier" if has_body => "union",
                    "enum_specifier" if has_body => "enum",
                    _ => "type",
                })
            }
            "mod_item" => node.child_by_field_name("body").map(|_| kind),
            "type_spec" => Some(super::go_type_kind(node)),
            _ => Some(kind),
        }
    }

    fn definition(&mut self, node: Node, kind: &'static str, depth: usize) {
        let Some(name_node) = self.def_name_node(node) else {
            return;
        };
        self.excluded.insert(name_node.id());
        if node.kind() == "type_definition"
            && let Some(tag) = node
                .child_by_field_name("type")
                .and_then(|t| t.child_by_field_name("name"))
        {
            // `typedef struct Point {…} Point;`: the struct's tag names the same thing.
            self.excluded.insert(tag.id());
        }
        let (name, mut parent) = split_qualified(self.text(name_node).trim(), self.spec.separator);
        if !valid_name(&name) {
            return;
        }
        if node.kind() == "method_declaration" && self.lang == Lang::Go {
            parent = self.go_receiver(node);
        }
        let enclosing = self.scopes.last();
        let in_type =
            enclosing.is_some_and(|s| s.container && !matches!(s.kind, "module" | "namespace"));
        let parent = match (enclosing.map(|s| s.path.as_str()), parent) {
            (Some(outer), Some(p)) => Some(format!("{outer}{}{p}", self.spec.separator)),
            (Some(outer), None) => Some(outer.to_string()),
            (None, p) => p,
        };
        let kind = match kind {
            "function" if in_type => "method",
            "function"
                if parent.is_some()
                    && node.kind() == "function_definition"
                    && self.lang == Lang::C =>
            {
                "method"
            }
            "method" if enclosing.is_none() && node.kind() == "method" => "function",
            k => k,
        };
        let qualified = parent.map(|p| format!("{p}{}{name}", self.spec.separator));
        let line = node.start_position().row as i32 + 1;
        self.defs.push(SymbolDef {
            name: name.clone(),
            qualified: qualified.clone(),
            kind,
            line,
            end_line: end_row(node) as i32 + 1,
        });
        self.scopes.push(Scope {
            path: qualified.unwrap_or_else(|| name.clone()),
            name,
            kind,
            line,
            container: self.spec.is_container(node.kind()),
            depth,
        });
    }

    /// The node holding a definition's name.
    fn def_name_node<'t>(&self, node: Node<'t>) -> Option<Node<'t>> {
        match node.kind() {
            "impl_item" => {
                // `impl<T> Trait for path::Foo<T>`: `Foo`.
                let mut ty = node.child_by_field_name("type")?;
                for _ in 0..16 {
                    match ty.kind() {
                        "type_identifier" | "primitive_type" => return Some(ty),
                        "generic_type" | "reference_type" | "pointer_type" => {
                            ty = ty.child_by_field_name("type")?
                        }
                        "scoped_type_identifier" => ty = ty.child_by_field_name("name")?,
                        _ => return None,
                    }
                }
                None
            }
            "function_definition" if self.lang == Lang::C => {
                super::declarator_node(node.child_by_field_name("declarator")?)
            }
            "type_definition" => super::declarator_node(node.child_by_field_name("declarator")?),
            _ => node.child_by_field_name("name"),
        }
    }

    /// The type a Go method is declared on: `Server` for `func (s *Server[T]) …`.
    fn go_receiver(&self, node: Node) -> Option<String> {
        let receiver = node.child_by_field_name("receiver")?;
        let text = self.text(receiver.named_child(0)?.child_by_field_name("type")?);
        let name = text.trim_start_matches('*');
        let name = name.split('[').next().unwrap_or(name).trim();
        valid_name(name).then(|| name.to_string())
    }

    // ----- calls -----

    /// When `node` is a call: the node of the called name, and where the callee expression
    /// starts (what lies between is the qualifier).
    fn callee<'t>(&self, node: Node<'t>) -> Option<(Node<'t>, usize)> {
        let field = |f: &str| node.child_by_field_name(f);
        let (callee, name) = match (self.lang, node.kind()) {
            (Lang::Rust, "call_expression") => {
                let f = field("function")?;
                (f, last_segment(f)?)
            }
            (Lang::Rust, "macro_invocation") => {
                let m = field("macro")?;
                (m, last_segment(m)?)
            }
            (Lang::Python, "call")
            | (Lang::Go | Lang::Js | Lang::C, "call_expression")
            | (Lang::CSharp, "invocation_expression")
            | (Lang::Php, "function_call_expression") => {
                let f = field("function")?;
                (f, last_segment(f)?)
            }
            (Lang::C, "new_expression") => {
                let t = field("type")?;
                (t, last_segment(t)?)
            }
            (Lang::Js, "new_expression") => {
                let f = field("constructor")?;
                (f, last_segment(f)?)
            }
            (Lang::Java, "method_invocation") => (node, field("name")?),
            (Lang::Java | Lang::CSharp, "object_creation_expression") => {
                let t = field("type")?;
                (t, last_segment(t)?)
            }
            (Lang::Php, "object_creation_expression") => {
                let mut cursor = node.walk();
                let t = node
                    .named_children(&mut cursor)
                    .find(|c| matches!(c.kind(), "name" | "qualified_name"))?;
                (t, last_segment(t)?)
            }
            (
                Lang::Php,
                "member_call_expression"
                | "nullsafe_member_call_expression"
                | "scoped_call_expression",
            ) => (node, field("name")?),
            (Lang::Ruby, "call") => (node, field("method")?),
            (Lang::Bash, "command") => {
                let n = field("name")?;
                let word = n.named_child(0)?;
                if n.named_child_count() != 1 || word.kind() != "word" {
                    return None;
                }
                (n, word)
            }
            (Lang::Lua, "function_call") => {
                let f = field("name")?;
                (f, last_segment(f)?)
            }
            _ => return None,
        };
        Some((name, callee.start_byte()))
    }

    fn call(&mut self, name: Node, callee_start: usize) {
        if self.excluded.contains(&name.id()) {
            return;
        }
        let before = self
            .src
            .get(callee_start.min(name.start_byte())..name.start_byte())
            .unwrap_or("");
        let qualifier = before
            .trim_end_matches(|c: char| {
                c.is_whitespace() || matches!(c, '.' | ':' | '-' | '>' | '?' | '&' | '\\')
            })
            .trim_start();
        let qualifier = (!qualifier.is_empty()
            && qualifier.len() <= MAX_QUALIFIER_BYTES
            && !qualifier.contains('\n'))
        .then(|| qualifier.to_string());
        self.excluded.insert(name.id());
        self.push_ref(name, RefKind::Call, qualifier);
    }

    /// Rust: the calls in a macro's arguments (`assert_eq!(f(x), …)`, `format!("{}",
    /// a.b())`), which tree-sitter leaves as tokens: a name followed by a parenthesised
    /// token tree (or by `!` and one: a macro), qualified by the `a::b::` or `a.b.` before it.
    fn macro_calls(&mut self, tree: Node<'a>) {
        let mut cursor = tree.walk();
        let tokens: Vec<Node> = tree.children(&mut cursor).collect();
        for (i, t) in tokens.iter().enumerate() {
            if t.kind() != "identifier" {
                continue;
            }
            let args = match tokens.get(i + 1) {
                Some(n) if n.kind() == "!" => tokens.get(i + 2),
                n => n,
            };
            let parenthesised = args.is_some_and(|a| {
                a.kind() == "token_tree" && a.child(0).is_some_and(|open| open.kind() == "(")
            });
            // `fn f(…)` in a macro defines; `$f(…)` is a metavariable.
            let defines = i > 0 && matches!(self.text(tokens[i - 1]), "fn" | "$");
            if !parenthesised || defines {
                continue;
            }
            let mut start = i;
            while start >= 2
                && matches!(tokens[start - 1].kind(), "::" | ".")
                && matches!(
                    tokens[start - 2].kind(),
                    "identifier" | "self" | "super" | "crate"
                )
            {
                start -= 2;
            }
            self.call(*t, tokens[start].start_byte());
        }
    }

    // ----- imports -----

    fn is_import(&self, node: Node) -> bool {
        matches!(
            (self.lang, node.kind()),
            (Lang::Rust, "use_declaration")
                | (Lang::Python, "import_statement" | "import_from_statement")
                | (Lang::Go, "import_spec")
                | (Lang::Js, "import_statement")
                | (Lang::Java, "import_declaration")
                | (Lang::CSharp, "using_directive")
                | (Lang::Php, "namespace_use_clause")
        )
    }

    fn imports(&mut self, node: Node) {
        match self.lang {
            Lang::Rust => self.rust_use(node),
            Lang::Python => self.python_import(node),
            Lang::Go => self.go_import(node),
            Lang::Js => self.js_import(node),
            Lang::Java => {
                // `import java.util.List;`, not `import java.io.*;`.
                let mut cursor = node.walk();
                let children: Vec<Node> = node.named_children(&mut cursor).collect();
                if children.iter().any(|c| c.kind() == "asterisk") {
                    return;
                }
                if let Some(path) = children
                    .iter()
                    .find(|c| matches!(c.kind(), "scoped_identifier" | "identifier"))
                    && let Some(name) = last_segment(*path)
                {
                    self.push_ref(name, RefKind::Import, None);
                }
            }
            Lang::CSharp => {
                // `using A.B;`, `using static A.B;`, `using X = A.B;`: `B`.
                let alias = node.child_by_field_name("name").map(|n| n.id());
                let mut cursor = node.walk();
                let path = node.named_children(&mut cursor).find(|c| {
                    Some(c.id()) != alias
                        && matches!(c.kind(), "identifier" | "qualified_name" | "generic_name")
                });
                if let Some(name) = path.and_then(last_segment) {
                    self.push_ref(name, RefKind::Import, None);
                }
            }
            Lang::Php => {
                // `use A\B;`, `use A\B as C;`, a clause of `use A\{B, C as D};`: `B`.
                let alias = node.child_by_field_name("alias").map(|n| n.id());
                let mut cursor = node.walk();
                let path = node.named_children(&mut cursor).find(|c| {
                    Some(c.id()) != alias && matches!(c.kind(), "name" | "qualified_name")
                });
                if let Some(name) = path.and_then(last_segment) {
                    self.push_ref(name, RefKind::Import, None);
                }
            }
            _ => {}
        }
    }

    /// Every name a use tree ends in: `use a::{b, c as d, e::{self}}` → b, c, e.
    fn rust_use(&mut self, node: Node) {
        let Some(tree) = node.child_by_field_name("argument") else {
            return;
        };
        // (node, the last segment of the path its list hangs from: what `self` imports)
        let mut stack: Vec<(Node, Option<Node>)> = vec![(tree, None)];
        while let Some((n, owner)) = stack.pop() {
            match n.kind() {
                "identifier" => self.push_ref(n, RefKind::Import, None),
                "self" => {
                    if let Some(owner) = owner {
                        self.push_ref(owner, RefKind::Import, None);
                    }
                }
                "scoped_identifier" => {
                    if let Some(name) = n.child_by_field_name("name") {
                        if name.kind() == "self" {
                            if let Some(path) = n.child_by_field_name("path") {
                                stack.push((path, None));
                            }
                        } else {
                            stack.push((name, None));
                        }
                    }
                }
                "use_as_clause" => {
                    if let Some(path) = n.child_by_field_name("path") {
                        stack.push((path, owner));
                    }
                }
                "scoped_use_list" => {
                    let owner = n.child_by_field_name("path").and_then(last_segment);
                    if let Some(list) = n.child_by_field_name("list") {
                        stack.push((list, owner));
                    }
                }
                "use_list" => {
                    let mut cursor = n.walk();
                    let items: Vec<Node> = n.named_children(&mut cursor).collect();
                    stack.extend(items.into_iter().rev().map(|c| (c, owner)));
                }
                _ => {}
            }
        }
    }

    /// `import a.b, c as d` → b, c; `from m import x as y, z` → x, z.
    fn python_import(&mut self, node: Node) {
        let mut cursor = node.walk();
        let names: Vec<Node> = node.children_by_field_name("name", &mut cursor).collect();
        for n in names {
            let path = if n.kind() == "aliased_import" {
                n.child_by_field_name("name")
            } else {
                Some(n)
            };
            if let Some(name) = path.and_then(last_segment) {
                self.push_ref(name, RefKind::Import, None);
            }
        }
    }

    /// `import alias "github.com/x/yaml/v2"` → yaml: the path's last segment (a major
    /// version suffix skipped).
    fn go_import(&mut self, node: Node) {
        let Some(path) = node.child_by_field_name("path") else {
            return;
        };
        let raw = self.text(path);
        let inner = raw.trim_matches(|c| c == '"' || c == '`');
        let offset = raw.len() - raw.trim_start_matches(['"', '`']).len();
        let mut segments: Vec<(usize, &str)> = Vec::new();
        let mut at = 0;
        for seg in inner.split('/') {
            segments.push((at, seg));
            at += seg.len() + 1;
        }
        let is_version = |s: &str| {
            s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())
        };
        let Some(&(mut start, mut seg)) = segments.last() else {
            return;
        };
        if is_version(seg) && segments.len() > 1 {
            (start, seg) = segments[segments.len() - 2];
        }
        // gopkg.in/yaml.v3
        if let Some((base, version)) = seg.rsplit_once('.')
            && is_version(version)
            && !base.is_empty()
        {
            seg = base;
        }
        if !valid_name(seg) {
            return;
        }
        let point = path.start_position();
        let line = point.row as i32 + 1;
        let column = (point.column + offset + start) as i32 + 1;
        self.push(seg.to_string(), RefKind::Import, line, column, None);
    }

    /// `import d, { a, b as c } from "m"` → d, a, b.
    fn js_import(&mut self, node: Node) {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            match n.kind() {
                "import_statement" | "import_clause" | "named_imports" => {
                    let mut cursor = n.walk();
                    let items: Vec<Node> = n.named_children(&mut cursor).collect();
                    stack.extend(items.into_iter().rev());
                }
                // The default import.
                "identifier" => self.push_ref(n, RefKind::Import, None),
                "import_specifier" => {
                    if let Some(name) = n.child_by_field_name("name")
                        && name.kind() == "identifier"
                    {
                        self.push_ref(name, RefKind::Import, None);
                    }
                }
                _ => {}
            }
        }
    }

    // ----- types -----

    /// `java.util.Date`: only the last part is a type; the ones before are its path (a
    /// path nested in a path is all path).
    fn type_path(&mut self, node: Node) {
        let whole_path = self.excluded.contains(&node.id());
        let count = node.named_child_count();
        let mut cursor = node.walk();
        let parts: Vec<usize> = node
            .named_children(&mut cursor)
            .enumerate()
            .filter(|(i, _)| whole_path || i + 1 < count)
            .map(|(_, c)| c.id())
            .collect();
        self.excluded.extend(parts);
    }

    fn type_use(&mut self, node: Node, field: Option<&str>) {
        let is_type = match self.lang {
            Lang::Python => {
                self.python_types > 0
                    && node.kind() == "identifier"
                    && !(self.parent_kind() == "attribute" && field != Some("attribute"))
            }
            _ => {
                node.kind() == "type_identifier"
                    && !matches!(
                        self.parent_kind(),
                        // Declarations of type parameters and associated types.
                        "type_parameter"
                            | "type_parameters"
                            | "type_parameter_declaration"
                            | "optional_type_parameter_declaration"
                            | "variadic_type_parameter_declaration"
                            | "associated_type"
                    )
                    && !(self.parent_kind() == "constrained_type_parameter"
                        && field == Some("left"))
            }
        };
        if is_type && !self.excluded.contains(&node.id()) {
            self.push_ref(node, RefKind::Type, None);
        }
    }

    // ----- recording -----

    fn push_ref(&mut self, name: Node, kind: RefKind, qualifier: Option<String>) {
        let text = self.text(name);
        if !valid_name(text) {
            return;
        }
        let point = name.start_position();
        self.push(
            text.to_string(),
            kind,
            point.row as i32 + 1,
            point.column as i32 + 1,
            qualifier,
        );
    }

    fn push(
        &mut self,
        name: String,
        kind: RefKind,
        line: i32,
        column: i32,
        qualifier: Option<String>,
    ) {
        let scope = self.scopes.last();
        self.refs.push(SymbolRef {
            name,
            kind,
            line,
            column,
            from: scope.map(|s| s.name.clone()),
            from_line: scope.map(|s| s.line),
            qualifier,
        });
    }
}

/// The last name of a path or member expression: `a.b.c` → `c`, `foo::bar` → `bar`,
/// `Foo<T>` → `Foo`, `obj:m` → `m`. None when the expression is not a name (a call's
/// result, a closure, a subscript).
fn last_segment(node: Node) -> Option<Node> {
    let mut node = node;
    for _ in 0..64 {
        let next = match node.kind() {
            "identifier"
            | "type_identifier"
            | "field_identifier"
            | "property_identifier"
            | "private_property_identifier"
            | "constant"
            | "name"
            | "word"
            | "command_name"
            | "namespace_identifier" => return Some(node),
            // rust, c++: `a::b`; c#: `A.B`
            "scoped_identifier" | "qualified_identifier" | "qualified_name"
                if node.child_by_field_name("name").is_some() =>
            {
                node.child_by_field_name("name")
            }
            "field_expression" => node.child_by_field_name("field"),
            "generic_function" => node.child_by_field_name("function"),
            "attribute" => node.child_by_field_name("attribute"),
            "selector_expression" => node.child_by_field_name("field"),
            "member_expression" => node.child_by_field_name("property"),
            "member_access_expression" => node.child_by_field_name("name"),
            "dot_index_expression" => node.child_by_field_name("field"),
            "method_index_expression" => node.child_by_field_name("method"),
            "template_function" | "template_type" => node.child_by_field_name("name"),
            "generic_type" => node
                .child_by_field_name("type")
                .or_else(|| node.named_child(0)),
            "generic_name" => node.named_child(0),
            // Last named child: java `a.b.C`, python `a.b`, php `A\B`, c# `A.B`.
            "scoped_type_identifier" | "dotted_name" | "qualified_name" | "scoped_identifier" => {
                node.named_child(u32::try_from(node.named_child_count().checked_sub(1)?).ok()?)
            }
            _ => None,
        };
        node = next?;
    }
    None
}

/// `Foo::bar` → (`bar`, Some(`Foo`)); `Foo.bar`, `M:bar` likewise.
fn split_qualified(name: &str, separator: &str) -> (String, Option<String>) {
    if !name.contains(['<', '(', ' ']) {
        for sep in [separator, ".", ":"] {
            if let Some((parent, leaf)) = name.rsplit_once(sep)
                && !parent.is_empty()
                && !leaf.is_empty()
            {
                let parent = parent.trim_end_matches(':');
                return (
                    leaf.to_string(),
                    (!parent.is_empty()).then(|| parent.to_string()),
                );
            }
        }
    }
    (name.to_string(), None)
}

/// Non-empty, at most 200 bytes, no whitespace.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.contains(char::is_whitespace)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, qualified, kind, line, end_line)
    type Def<'a> = (&'a str, Option<&'a str>, &'a str, i32, i32);
    /// (name, kind, line, from)
    type Ref<'a> = (&'a str, &'a str, i32, Option<&'a str>);

    fn parse(language: &str, lines: &[&str]) -> Symbols {
        symbols(language, lines.join("\n").as_bytes()).expect("a grammar")
    }

    fn check(language: &str, lines: &[&str], defs: &[Def], refs: &[Ref]) -> Symbols {
        let s = parse(language, lines);
        let got: Vec<Def> = s
            .defs
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.qualified.as_deref(),
                    d.kind,
                    d.line,
                    d.end_line,
                )
            })
            .collect();
        assert_eq!(got, defs, "definitions in {language}");
        let got: Vec<Ref> = s
            .refs
            .iter()
            .map(|r| (r.name.as_str(), r.kind.as_str(), r.line, r.from.as_deref()))
            .collect();
        assert_eq!(got, refs, "references in {language}");
        s
    }

    /// The call of `name` on `line`.
    fn call<'s>(s: &'s Symbols, name: &str, line: i32) -> &'s SymbolRef {
        s.refs
            .iter()
            .find(|r| r.name == name && r.line == line && r.kind == RefKind::Call)
            .unwrap_or_else(|| panic!("no call of {name} on line {line}"))
    }

    #[test]
    fn rust() {
        let s = check(
            "rust",
            &[
                "use a::{b, c as d};",
                "use std::fmt::Display;",
                "struct Foo { x: Bar }",
                "impl Foo {",
                "    fn bar(&self, v: Vec<Baz>) -> Qux {",
                "        self.x.y();",
                "        Foo::new();",
                "        println!(\"{}\", 1);",
                "        helper::<u8>();",
                "    }",
                "}",
                "fn main() { run() }",
                "mod m { pub fn f() {} }",
                "impl<T> Display for Foo<T> {",
                "    fn fmt(&self) {}",
                "}",
            ],
            &[
                ("Foo", None, "struct", 3, 3),
                ("Foo", None, "impl", 4, 11),
                ("bar", Some("Foo::bar"), "method", 5, 10),
                ("main", None, "function", 12, 12),
                ("f", Some("m::f"), "function", 13, 13),
                ("m", None, "module", 13, 13),
                ("Foo", None, "impl", 14, 16),
                ("fmt", Some("Foo::fmt"), "method", 15, 15),
            ],
            &[
                ("b", "import", 1, None),
                ("c", "import", 1, None),
                ("Display", "import", 2, None),
                ("Bar", "type", 3, Some("Foo")),
                ("Vec", "type", 5, Some("bar")),
                ("Baz", "type", 5, Some("bar")),
                ("Qux", "type", 5, Some("bar")),
                ("y", "call", 6, Some("bar")),
                ("new", "call", 7, Some("bar")),
                ("println", "call", 8, Some("bar")),
                ("helper", "call", 9, Some("bar")),
                ("run", "call", 12, Some("main")),
                // `T` in `Foo<T>` is a use of the parameter; `<T>` after impl declares it.
                ("Display", "type", 14, Some("Foo")),
                ("T", "type", 14, Some("Foo")),
            ],
        );
        let y = call(&s, "y", 6);
        assert_eq!(y.qualifier.as_deref(), Some("self.x"));
        assert_eq!((y.column, y.from_line), (16, Some(5)));
        assert_eq!(call(&s, "new", 7).qualifier.as_deref(), Some("Foo"));
        assert_eq!(call(&s, "println", 8).qualifier, None);
        assert_eq!(call(&s, "helper", 9).qualifier, None);
        assert_eq!(call(&s, "run", 12).from_line, Some(12));
    }

    #[test]
    fn rust_calls_in_macro_arguments() {
        let s = parse(
            "rust",
            &[
                "fn t() {",
                "    assert_eq!(Running.apply(E::Abandon), Ok(Pending));",
                "    println!(\"{}\", super::for_terminal(&w), vec![x.y.len()]);",
                "    m!(fn inner(a: u8) {}, $f(1), format!(\"{}\", g(2)));",
                "}",
            ],
        );
        let calls: Vec<(&str, i32, Option<&str>)> = s
            .refs
            .iter()
            .filter(|r| r.kind == RefKind::Call)
            .map(|r| (r.name.as_str(), r.line, r.qualifier.as_deref()))
            .collect();
        assert_eq!(
            calls,
            [
                ("assert_eq", 2, None),
                ("apply", 2, Some("Running")),
                ("Ok", 2, None),
                ("println", 3, None),
                ("for_terminal", 3, Some("super")),
                ("len", 3, Some("x.y")),
                ("m", 4, None),
                ("format", 4, None),
                ("g", 4, None),
            ]
        );
        assert_eq!(call(&s, "apply", 2).from.as_deref(), Some("t"));
    }

    #[test]
    fn rust_use_trees() {
        check(
            "rust",
            &[
                "use crate::x::{self as y, z::{self}, w::*};",
                "use q as r;",
                "use e::*;",
                "use std::collections::HashMap;",
            ],
            &[],
            &[
                ("x", "import", 1, None),
                ("z", "import", 1, None),
                ("q", "import", 2, None),
                ("HashMap", "import", 4, None),
            ],
        );
    }

    #[test]
    fn python() {
        let s = check(
            "python",
            &[
                "import os.path",
                "from x import y as z, w",
                "@app.route(\"/\")",
                "class Runner(Base):",
                "    def run(self, n: int) -> typing.Result:",
                "        obj.run()",
                "        os.path.join(\"a\")",
                "        return helper(n)",
                "main()",
            ],
            &[
                ("Runner", None, "class", 4, 8),
                ("run", Some("Runner.run"), "method", 5, 8),
            ],
            &[
                ("path", "import", 1, None),
                ("y", "import", 2, None),
                ("w", "import", 2, None),
                ("route", "call", 3, None),
                ("int", "type", 5, Some("run")),
                ("Result", "type", 5, Some("run")),
                ("run", "call", 6, Some("run")),
                ("join", "call", 7, Some("run")),
                ("helper", "call", 8, Some("run")),
                ("main", "call", 9, None),
            ],
        );
        let run = call(&s, "run", 6);
        assert_eq!(run.qualifier.as_deref(), Some("obj"));
        assert_eq!((run.column, run.from_line), (13, Some(5)));
        assert_eq!(call(&s, "join", 7).qualifier.as_deref(), Some("os.path"));
        assert_eq!(call(&s, "route", 3).qualifier.as_deref(), Some("app"));
        assert_eq!(call(&s, "main", 9).from_line, None);
    }

    #[test]
    fn go() {
        let s = check(
            "go",
            &[
                "package main",
                "import (",
                "    \"fmt\"",
                "    alias \"os/exec\"",
                ")",
                "import \"gopkg.in/yaml.v3\"",
                "type Server struct { h Handler }",
                "func (s *Server) Start(x Foo) error {",
                "    fmt.Println(\"x\")",
                "    s.run()",
                "    go work()",
                "    return nil",
                "}",
                "var cfg = load()",
                "import \"github.com/a/b/v2\"",
            ],
            &[
                ("Server", None, "struct", 7, 7),
                ("Start", Some("Server.Start"), "method", 8, 13),
            ],
            &[
                ("fmt", "import", 3, None),
                ("exec", "import", 4, None),
                ("yaml", "import", 6, None),
                ("Handler", "type", 7, Some("Server")),
                ("Server", "type", 8, Some("Start")),
                ("Foo", "type", 8, Some("Start")),
                ("error", "type", 8, Some("Start")),
                ("Println", "call", 9, Some("Start")),
                ("run", "call", 10, Some("Start")),
                ("work", "call", 11, Some("Start")),
                ("load", "call", 14, None),
                ("b", "import", 15, None),
            ],
        );
        let println = call(&s, "Println", 9);
        assert_eq!(println.qualifier.as_deref(), Some("fmt"));
        assert_eq!(println.column, 9);
        assert_eq!(call(&s, "run", 10).qualifier.as_deref(), Some("s"));
        // The column of the path's last segment, inside the quotes.
        let exec = s.refs.iter().find(|r| r.name == "exec").unwrap();
        assert_eq!(exec.column, 15);
    }

    #[test]
    fn javascript() {
        let s = check(
            "javascript",
            &[
                "import def, { a, b as c } from \"m\";",
                "import * as ns from \"n\";",
                "const f = () => { g(); new Foo(); new a.B(); };",
                "class K extends L { m() { this.x.y(); super.z(); } }",
                "top();",
                "const lib = require(\"lib\");",
            ],
            &[
                ("f", None, "function", 3, 3),
                ("K", None, "class", 4, 4),
                ("m", Some("K.m"), "method", 4, 4),
            ],
            &[
                ("def", "import", 1, None),
                ("a", "import", 1, None),
                ("b", "import", 1, None),
                ("g", "call", 3, Some("f")),
                ("Foo", "call", 3, Some("f")),
                ("B", "call", 3, Some("f")),
                ("y", "call", 4, Some("m")),
                ("z", "call", 4, Some("m")),
                ("top", "call", 5, None),
                ("require", "call", 6, None),
            ],
        );
        assert_eq!(call(&s, "B", 3).qualifier.as_deref(), Some("a"));
        assert_eq!(call(&s, "Foo", 3).qualifier, None);
        assert_eq!(call(&s, "y", 4).qualifier.as_deref(), Some("this.x"));
        assert_eq!(call(&s, "z", 4).qualifier.as_deref(), Some("super"));
    }

    #[test]
    fn typescript() {
        let s = check(
            "typescript",
            &[
                "import { a, b as c } from \"m\";",
                "import type { T } from \"t\";",
                "interface I { x: Foo; }",
                "type Al = Bar<Baz>;",
                "class C<P> { run(x: Foo): void { new Foo(); this.go(); } }",
                "function f(a: number): Qux { return g<Zed>(1); }",
            ],
            &[
                ("I", None, "interface", 3, 3),
                ("Al", None, "type", 4, 4),
                ("C", None, "class", 5, 5),
                ("run", Some("C.run"), "method", 5, 5),
                ("f", None, "function", 6, 6),
            ],
            &[
                ("a", "import", 1, None),
                ("b", "import", 1, None),
                ("T", "import", 2, None),
                ("Foo", "type", 3, Some("I")),
                ("Bar", "type", 4, Some("Al")),
                ("Baz", "type", 4, Some("Al")),
                ("Foo", "type", 5, Some("run")),
                ("Foo", "call", 5, Some("run")),
                ("go", "call", 5, Some("run")),
                ("Qux", "type", 6, Some("f")),
                ("g", "call", 6, Some("f")),
                ("Zed", "type", 6, Some("f")),
            ],
        );
        // `new Foo()` is a call, not a type use as well.
        assert_eq!(
            s.refs
                .iter()
                .filter(|r| r.name == "Foo" && r.line == 5)
                .map(|r| (r.kind, r.column))
                .collect::<Vec<_>>(),
            [(RefKind::Type, 21), (RefKind::Call, 38)]
        );
        assert_eq!(call(&s, "go", 5).qualifier.as_deref(), Some("this"));
    }

    #[test]
    fn tsx() {
        check(
            "tsx",
            &[
                "import { useState } from \"react\";",
                "type Props = { item: Item };",
                "export const App = (p: Props) => {",
                "  const [s] = useState(0);",
                "  return <div>{render(p.item)}</div>;",
                "};",
            ],
            &[
                ("Props", None, "type", 2, 2),
                ("App", None, "function", 3, 6),
            ],
            &[
                ("useState", "import", 1, None),
                ("Item", "type", 2, Some("Props")),
                ("Props", "type", 3, Some("App")),
                ("useState", "call", 4, Some("App")),
                ("render", "call", 5, Some("App")),
            ],
        );
    }

    #[test]
    fn java() {
        let s = check(
            "java",
            &[
                "import java.util.List;",
                "import static java.lang.Math.max;",
                "import java.io.*;",
                "class A extends B implements C {",
                "    List<Foo> xs;",
                "    A() { super(); }",
                "    void m(Bar b) {",
                "        List<String> list = new ArrayList<String>();",
                "        list.add(x);",
                "        new Foo();",
                "        new java.util.Date();",
                "        foo();",
                "        this.bar();",
                "    }",
                "}",
            ],
            &[
                ("A", None, "class", 4, 15),
                ("A", Some("A.A"), "constructor", 6, 6),
                ("m", Some("A.m"), "method", 7, 14),
            ],
            &[
                ("List", "import", 1, None),
                ("max", "import", 2, None),
                ("B", "type", 4, Some("A")),
                ("C", "type", 4, Some("A")),
                ("List", "type", 5, Some("A")),
                ("Foo", "type", 5, Some("A")),
                ("Bar", "type", 7, Some("m")),
                ("List", "type", 8, Some("m")),
                ("String", "type", 8, Some("m")),
                ("ArrayList", "call", 8, Some("m")),
                ("String", "type", 8, Some("m")),
                ("add", "call", 9, Some("m")),
                ("Foo", "call", 10, Some("m")),
                ("Date", "call", 11, Some("m")),
                ("foo", "call", 12, Some("m")),
                ("bar", "call", 13, Some("m")),
            ],
        );
        assert_eq!(call(&s, "add", 9).qualifier.as_deref(), Some("list"));
        assert_eq!(call(&s, "Foo", 10).qualifier, None);
        assert_eq!(call(&s, "Date", 11).qualifier.as_deref(), Some("java.util"));
        assert_eq!(call(&s, "bar", 13).qualifier.as_deref(), Some("this"));
    }

    #[test]
    fn c() {
        let s = check(
            "c",
            &[
                "#include <stdio.h>",
                "typedef struct Point { int x; } Point;",
                "typedef struct { int y; } Anon;",
                "struct Foo { struct Bar *b; Baz z; };",
                "static int *mk(Point p, size_t n) {",
                "    printf(\"x\");",
                "    s->f(1);",
                "    s.g(2);",
                "    return 0;",
                "}",
                "typedef unsigned long ulong;",
                "ulong g(void) { return (ulong)count(); }",
            ],
            &[
                ("Point", None, "struct", 2, 2),
                ("Anon", None, "struct", 3, 3),
                ("Foo", None, "struct", 4, 4),
                ("mk", None, "function", 5, 10),
                ("ulong", None, "type", 11, 11),
                ("g", None, "function", 12, 12),
            ],
            &[
                ("Bar", "type", 4, Some("Foo")),
                ("Baz", "type", 4, Some("Foo")),
                ("Point", "type", 5, Some("mk")),
                ("printf", "call", 6, Some("mk")),
                ("f", "call", 7, Some("mk")),
                ("g", "call", 8, Some("mk")),
                ("ulong", "type", 12, Some("g")),
                ("ulong", "type", 12, Some("g")),
                ("count", "call", 12, Some("g")),
            ],
        );
        assert_eq!(call(&s, "f", 7).qualifier.as_deref(), Some("s"));
        assert_eq!(call(&s, "g", 8).qualifier.as_deref(), Some("s"));
    }

    #[test]
    fn cpp() {
        let s = check(
            "cpp",
            &[
                "#include \"x.h\"",
                "namespace ns {",
                "class Foo : public Base {",
                "  void bar(Baz b) { helper(); this->go(); std::sort(v); ns::Foo::make(); tmpl<int>(); new Qux(); }",
                "};",
                "}",
                "void Foo::baz() const { x(); }",
                "template <typename T> T id(T x) { return x; }",
            ],
            &[
                ("ns", None, "namespace", 2, 6),
                ("Foo", Some("ns::Foo"), "class", 3, 5),
                ("bar", Some("ns::Foo::bar"), "method", 4, 4),
                ("baz", Some("Foo::baz"), "method", 7, 7),
                ("id", None, "function", 8, 8),
            ],
            &[
                ("Base", "type", 3, Some("Foo")),
                ("Baz", "type", 4, Some("bar")),
                ("helper", "call", 4, Some("bar")),
                ("go", "call", 4, Some("bar")),
                ("sort", "call", 4, Some("bar")),
                ("make", "call", 4, Some("bar")),
                ("tmpl", "call", 4, Some("bar")),
                ("Qux", "call", 4, Some("bar")),
                ("x", "call", 7, Some("baz")),
                ("T", "type", 8, Some("id")),
                ("T", "type", 8, Some("id")),
            ],
        );
        assert_eq!(call(&s, "go", 4).qualifier.as_deref(), Some("this"));
        assert_eq!(call(&s, "sort", 4).qualifier.as_deref(), Some("std"));
        assert_eq!(call(&s, "make", 4).qualifier.as_deref(), Some("ns::Foo"));
        assert_eq!(call(&s, "tmpl", 4).qualifier, None);
    }

    #[test]
    fn csharp() {
        let s = check(
            "csharp",
            &[
                "using System;",
                "using System.Collections.Generic;",
                "using Alias = System.Text;",
                "namespace N {",
                "class A : B {",
                "    void M(Foo f) {",
                "        Console.WriteLine(\"x\");",
                "        Run();",
                "        var x = new Bar();",
                "        var y = new List<int>();",
                "        obj.Go<T>();",
                "    }",
                "}",
                "}",
            ],
            &[
                ("N", None, "namespace", 4, 14),
                ("A", Some("N.A"), "class", 5, 13),
                ("M", Some("N.A.M"), "method", 6, 12),
            ],
            &[
                ("System", "import", 1, None),
                ("Generic", "import", 2, None),
                ("Text", "import", 3, None),
                ("WriteLine", "call", 7, Some("M")),
                ("Run", "call", 8, Some("M")),
                ("Bar", "call", 9, Some("M")),
                ("List", "call", 10, Some("M")),
                ("Go", "call", 11, Some("M")),
            ],
        );
        assert_eq!(
            call(&s, "WriteLine", 7).qualifier.as_deref(),
            Some("Console")
        );
        assert_eq!(call(&s, "Go", 11).qualifier.as_deref(), Some("obj"));
    }

    #[test]
    fn ruby() {
        let s = check(
            "ruby",
            &[
                "require 'json'",
                "module M",
                "  class A < B",
                "    def run(x)",
                "      obj.go(1)",
                "      puts \"hi\"",
                "      helper",
                "      Foo.new",
                "      bar()",
                "    end",
                "    def self.s; end",
                "  end",
                "end",
                "def util",
                "  log(\"x\")",
                "end",
            ],
            &[
                ("M", None, "module", 2, 13),
                ("A", Some("M::A"), "class", 3, 12),
                ("run", Some("M::A::run"), "method", 4, 10),
                ("s", Some("M::A::s"), "method", 11, 11),
                ("util", None, "function", 14, 16),
            ],
            &[
                ("require", "call", 1, None),
                ("go", "call", 5, Some("run")),
                ("puts", "call", 6, Some("run")),
                ("new", "call", 8, Some("run")),
                ("bar", "call", 9, Some("run")),
                ("log", "call", 15, Some("util")),
            ],
        );
        assert_eq!(call(&s, "go", 5).qualifier.as_deref(), Some("obj"));
        assert_eq!(call(&s, "new", 8).qualifier.as_deref(), Some("Foo"));
    }

    #[test]
    fn php() {
        let s = check(
            "php",
            &[
                "<?php",
                "namespace App;",
                "use Foo\\Bar;",
                "use Foo\\{Baz, Qux as Q};",
                "function f() { g(); $o->m(); A::s(); new Foo(); \\Ns\\h(); }",
                "class K extends P { public function run(Bar $b): Baz { $this->go(); } }",
            ],
            &[
                ("f", None, "function", 5, 5),
                ("K", None, "class", 6, 6),
                ("run", Some("K::run"), "method", 6, 6),
            ],
            &[
                ("Bar", "import", 3, None),
                ("Baz", "import", 4, None),
                ("Qux", "import", 4, None),
                ("g", "call", 5, Some("f")),
                ("m", "call", 5, Some("f")),
                ("s", "call", 5, Some("f")),
                ("Foo", "call", 5, Some("f")),
                ("h", "call", 5, Some("f")),
                ("go", "call", 6, Some("run")),
            ],
        );
        assert_eq!(call(&s, "m", 5).qualifier.as_deref(), Some("$o"));
        assert_eq!(call(&s, "s", 5).qualifier.as_deref(), Some("A"));
        assert_eq!(call(&s, "h", 5).qualifier.as_deref(), Some("\\Ns"));
        assert_eq!(call(&s, "go", 6).qualifier.as_deref(), Some("$this"));
    }

    #[test]
    fn bash() {
        check(
            "bash",
            &[
                "#!/bin/bash",
                "f() { echo hi; g; }",
                "function h { f | grep x; }",
                "ls -la",
                "$(date)",
                "\"$cmd\" arg",
            ],
            &[("f", None, "function", 2, 2), ("h", None, "function", 3, 3)],
            &[
                ("echo", "call", 2, Some("f")),
                ("g", "call", 2, Some("f")),
                ("f", "call", 3, Some("h")),
                ("grep", "call", 3, Some("h")),
                ("ls", "call", 4, None),
                ("date", "call", 5, None),
            ],
        );
    }

    #[test]
    fn lua() {
        let s = check(
            "lua",
            &[
                "local m = require(\"mod\")",
                "function M.f(x) print(x); a.b.c(); obj:meth(1) end",
                "local function g() f() end",
                "function top() end",
            ],
            &[
                ("f", Some("M.f"), "function", 2, 2),
                ("g", None, "function", 3, 3),
                ("top", None, "function", 4, 4),
            ],
            &[
                ("require", "call", 1, None),
                ("print", "call", 2, Some("f")),
                ("c", "call", 2, Some("f")),
                ("meth", "call", 2, Some("f")),
                ("f", "call", 3, Some("g")),
            ],
        );
        assert_eq!(call(&s, "c", 2).qualifier.as_deref(), Some("a.b"));
        assert_eq!(call(&s, "meth", 2).qualifier.as_deref(), Some("obj"));
    }

    #[test]
    fn nested_definitions_take_the_innermost() {
        check(
            "python",
            &["def outer():", "    def inner():", "        a()", "    b()"],
            &[
                ("outer", None, "function", 1, 4),
                ("inner", Some("outer.inner"), "function", 2, 3),
            ],
            &[
                ("a", "call", 3, Some("inner")),
                ("b", "call", 4, Some("outer")),
            ],
        );
    }

    #[test]
    fn unknown_language_is_none() {
        assert_eq!(symbols("cobol", b"DISPLAY 'HI'."), None);
        assert_eq!(symbols("", b""), None);
    }

    #[test]
    fn empty_file_has_no_symbols() {
        let s = symbols("rust", b"").unwrap();
        assert!(s.defs.is_empty() && s.refs.is_empty());
    }

    #[test]
    fn invalid_utf8_is_read_lossily() {
        let bytes = b"fn f() { g(); }\n// \xff\xfe\xfd\nfn h() { \"\xc3\x28\"; i(); }\n";
        let s = symbols("rust", bytes).unwrap();
        let defs: Vec<(&str, i32)> = s.defs.iter().map(|d| (d.name.as_str(), d.line)).collect();
        assert_eq!(defs, [("f", 1), ("h", 3)]);
        let refs: Vec<(&str, i32, Option<&str>)> = s
            .refs
            .iter()
            .map(|r| (r.name.as_str(), r.line, r.from.as_deref()))
            .collect();
        assert_eq!(refs, [("g", 1, Some("f")), ("i", 3, Some("h"))]);
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        // 10 000 nested calls: every one is found, none recurses.
        let src = format!("{}1{}", "a(".repeat(10_000), ")".repeat(10_000));
        let s = symbols("javascript", src.as_bytes()).unwrap();
        assert_eq!(s.refs.len(), 10_000);
        assert!(s.refs.iter().all(|r| r.name == "a" && r.from.is_none()));
        assert_eq!(s.refs[1].column, 3);
        // Unbalanced and balanced parentheses.
        let open = format!("x = {}", "(".repeat(10_000));
        assert!(symbols("python", open.as_bytes()).is_some());
        let balanced = format!("x = {}f(){}", "(".repeat(10_000), ")".repeat(10_000));
        let s = symbols("python", balanced.as_bytes()).unwrap();
        assert_eq!(s.refs.iter().filter(|r| r.name == "f").count(), 1);
        // Deeply nested blocks of definitions keep their scopes.
        let blocks = format!(
            "{}fn f() {{ g(); }}{}",
            "mod m { ".repeat(2_000),
            "}".repeat(2_000)
        );
        let s = symbols("rust", blocks.as_bytes()).unwrap();
        let g = call(&s, "g", 1);
        assert_eq!(g.from.as_deref(), Some("f"));
        assert_eq!(s.defs.len(), 2_001);
    }

    #[test]
    fn names_are_valid() {
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let ok = "y".repeat(MAX_NAME_BYTES);
        let src = format!("{long}();\n{ok}();\n");
        let s = symbols("javascript", src.as_bytes()).unwrap();
        let names: Vec<&str> = s.refs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, [ok.as_str()]);
        // A long receiver is no qualifier.
        let src = format!("{}.run();", "a".repeat(MAX_QUALIFIER_BYTES + 1));
        let s = symbols("javascript", src.as_bytes()).unwrap();
        assert_eq!(call(&s, "run", 1).qualifier, None);
    }

    #[test]
    fn order_is_deterministic() {
        let lines = [
            "fn b() { z(); y(); }",
            "fn a() { x(); }",
            "fn c(v: T) -> T { w() }",
        ];
        let s = parse("rust", &lines);
        let defs: Vec<&str> = s.defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(defs, ["b", "a", "c"]);
        assert!(
            s.refs
                .is_sorted_by_key(|r| (r.line, r.column, r.kind.rank()))
        );
        assert_eq!(s, parse("rust", &lines));
    }

    #[test]
    fn ref_kinds_round_trip() {
        for kind in RefKind::ALL {
            assert_eq!(RefKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        assert_eq!(RefKind::parse("Call"), Some(RefKind::Call));
        assert_eq!(RefKind::parse("calls"), None);
    }
}
