//! What a definition looks like in each grammar: the node kinds that become snippets, which
//! of them contain other definitions, the wrappers that carry their decorators, comments or
//! `export`, and how their doc comments are written.

use tree_sitter::Language;

/// How a language documents a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocStyle {
    /// Comments directly above the definition (`///`, `/** */`, `#`, `--`).
    Preceding,
    /// A string literal as the first statement of the body (Python).
    Docstring,
}

/// One grammar's definitions.
pub struct LangSpec {
    pub name: &'static str,
    pub language: fn() -> Language,
    /// Node kind → snippet kind.
    pub defs: &'static [(&'static str, &'static str)],
    /// Node kinds whose nested definitions become snippets of their own.
    pub containers: &'static [&'static str],
    /// Node kinds that wrap a definition together with its decorators, template header,
    /// `export` or declaration keyword: the snippet starts at the wrapper.
    pub wrappers: &'static [&'static str],
    /// Node kinds between a doc comment and its definition (attributes, annotations).
    pub between: &'static [&'static str],
    pub doc: DocStyle,
    /// Joins a container's name and a member's: `Foo::bar`, `Foo.bar`.
    pub separator: &'static str,
}

const RUST: LangSpec = LangSpec {
    name: "rust",
    language: || tree_sitter_rust::LANGUAGE.into(),
    defs: &[
        ("function_item", "function"),
        ("function_signature_item", "function"),
        ("struct_item", "struct"),
        ("enum_item", "enum"),
        ("union_item", "union"),
        ("trait_item", "trait"),
        ("impl_item", "impl"),
        ("mod_item", "module"),
        ("macro_definition", "macro"),
        ("type_item", "type"),
    ],
    containers: &["trait_item", "impl_item", "mod_item"],
    wrappers: &[],
    between: &["attribute_item"],
    doc: DocStyle::Preceding,
    separator: "::",
};

const PYTHON: LangSpec = LangSpec {
    name: "python",
    language: || tree_sitter_python::LANGUAGE.into(),
    defs: &[
        ("function_definition", "function"),
        ("class_definition", "class"),
    ],
    containers: &["class_definition"],
    wrappers: &["decorated_definition"],
    between: &[],
    doc: DocStyle::Docstring,
    separator: ".",
};

const GO: LangSpec = LangSpec {
    name: "go",
    language: || tree_sitter_go::LANGUAGE.into(),
    defs: &[
        ("function_declaration", "function"),
        ("method_declaration", "method"),
        ("type_spec", "type"),
    ],
    containers: &[],
    wrappers: &["type_declaration"],
    between: &[],
    doc: DocStyle::Preceding,
    separator: ".",
};

const JS_DEFS: &[(&str, &str)] = &[
    ("function_declaration", "function"),
    ("generator_function_declaration", "function"),
    ("class_declaration", "class"),
    ("method_definition", "method"),
    ("variable_declarator", "function"),
];
const JS_WRAPPERS: &[&str] = &[
    "export_statement",
    "lexical_declaration",
    "variable_declaration",
];

const JAVASCRIPT: LangSpec = LangSpec {
    name: "javascript",
    language: || tree_sitter_javascript::LANGUAGE.into(),
    defs: JS_DEFS,
    containers: &["class_declaration"],
    wrappers: JS_WRAPPERS,
    between: &["decorator"],
    doc: DocStyle::Preceding,
    separator: ".",
};

const TS_DEFS: &[(&str, &str)] = &[
    ("function_declaration", "function"),
    ("generator_function_declaration", "function"),
    ("class_declaration", "class"),
    ("abstract_class_declaration", "class"),
    ("method_definition", "method"),
    ("abstract_method_signature", "method"),
    ("variable_declarator", "function"),
    ("interface_declaration", "interface"),
    ("type_alias_declaration", "type"),
    ("enum_declaration", "enum"),
    ("internal_module", "namespace"),
];
const TS_CONTAINERS: &[&str] = &[
    "class_declaration",
    "abstract_class_declaration",
    "internal_module",
];

const TYPESCRIPT: LangSpec = LangSpec {
    name: "typescript",
    language: || tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
    defs: TS_DEFS,
    containers: TS_CONTAINERS,
    wrappers: &[
        "export_statement",
        "lexical_declaration",
        "variable_declaration",
        "expression_statement",
    ],
    between: &["decorator"],
    doc: DocStyle::Preceding,
    separator: ".",
};

const TSX: LangSpec = LangSpec {
    name: "tsx",
    language: || tree_sitter_typescript::LANGUAGE_TSX.into(),
    ..TYPESCRIPT
};

const JAVA: LangSpec = LangSpec {
    name: "java",
    language: || tree_sitter_java::LANGUAGE.into(),
    defs: &[
        ("class_declaration", "class"),
        ("interface_declaration", "interface"),
        ("enum_declaration", "enum"),
        ("record_declaration", "record"),
        ("annotation_type_declaration", "annotation"),
        ("method_declaration", "method"),
        ("constructor_declaration", "constructor"),
    ],
    containers: &[
        "class_declaration",
        "interface_declaration",
        "enum_declaration",
        "record_declaration",
    ],
    wrappers: &[],
    between: &[],
    doc: DocStyle::Preceding,
    separator: ".",
};

const C: LangSpec = LangSpec {
    name: "c",
    language: || tree_sitter_c::LANGUAGE.into(),
    defs: &[
        ("function_definition", "function"),
        ("struct_specifier", "struct"),
        ("union_specifier", "union"),
        ("enum_specifier", "enum"),
        ("type_definition", "type"),
    ],
    containers: &[],
    wrappers: &[],
    between: &[],
    doc: DocStyle::Preceding,
    separator: "::",
};

const CPP: LangSpec = LangSpec {
    name: "cpp",
    language: || tree_sitter_cpp::LANGUAGE.into(),
    defs: &[
        ("function_definition", "function"),
        ("class_specifier", "class"),
        ("struct_specifier", "struct"),
        ("union_specifier", "union"),
        ("enum_specifier", "enum"),
        ("type_definition", "type"),
        ("namespace_definition", "namespace"),
    ],
    containers: &[
        "class_specifier",
        "struct_specifier",
        "namespace_definition",
    ],
    wrappers: &["template_declaration"],
    between: &[],
    doc: DocStyle::Preceding,
    separator: "::",
};

const CSHARP: LangSpec = LangSpec {
    name: "csharp",
    language: || tree_sitter_c_sharp::LANGUAGE.into(),
    defs: &[
        ("class_declaration", "class"),
        ("struct_declaration", "struct"),
        ("interface_declaration", "interface"),
        ("enum_declaration", "enum"),
        ("record_declaration", "record"),
        ("method_declaration", "method"),
        ("constructor_declaration", "constructor"),
        ("local_function_statement", "function"),
        ("namespace_declaration", "namespace"),
        ("file_scoped_namespace_declaration", "namespace"),
    ],
    containers: &[
        "class_declaration",
        "struct_declaration",
        "interface_declaration",
        "record_declaration",
        "namespace_declaration",
        "file_scoped_namespace_declaration",
    ],
    wrappers: &[],
    between: &["attribute_list"],
    doc: DocStyle::Preceding,
    separator: ".",
};

const RUBY: LangSpec = LangSpec {
    name: "ruby",
    language: || tree_sitter_ruby::LANGUAGE.into(),
    defs: &[
        ("method", "method"),
        ("singleton_method", "method"),
        ("class", "class"),
        ("module", "module"),
    ],
    containers: &["class", "module"],
    wrappers: &[],
    between: &[],
    doc: DocStyle::Preceding,
    separator: "::",
};

const PHP: LangSpec = LangSpec {
    name: "php",
    language: || tree_sitter_php::LANGUAGE_PHP.into(),
    defs: &[
        ("function_definition", "function"),
        ("method_declaration", "method"),
        ("class_declaration", "class"),
        ("interface_declaration", "interface"),
        ("trait_declaration", "trait"),
        ("enum_declaration", "enum"),
    ],
    containers: &[
        "class_declaration",
        "interface_declaration",
        "trait_declaration",
        "enum_declaration",
    ],
    wrappers: &[],
    between: &["attribute_list"],
    doc: DocStyle::Preceding,
    separator: "::",
};

const BASH: LangSpec = LangSpec {
    name: "bash",
    language: || tree_sitter_bash::LANGUAGE.into(),
    defs: &[("function_definition", "function")],
    containers: &[],
    wrappers: &[],
    between: &[],
    doc: DocStyle::Preceding,
    separator: ".",
};

const LUA: LangSpec = LangSpec {
    name: "lua",
    language: || tree_sitter_lua::LANGUAGE.into(),
    defs: &[("function_declaration", "function")],
    containers: &[],
    wrappers: &[],
    between: &[],
    doc: DocStyle::Preceding,
    separator: ".",
};

/// Every language with a grammar, by the name `sources::directory::language_of` gives.
pub const ALL: &[&LangSpec] = &[
    &RUST,
    &PYTHON,
    &GO,
    &JAVASCRIPT,
    &TYPESCRIPT,
    &TSX,
    &JAVA,
    &C,
    &CPP,
    &CSHARP,
    &RUBY,
    &PHP,
    &BASH,
    &LUA,
];

/// The grammar of `language`, if trawl has one.
pub fn spec(language: &str) -> Option<&'static LangSpec> {
    ALL.iter().copied().find(|s| s.name == language)
}

impl LangSpec {
    pub fn kind_of(&self, node_kind: &str) -> Option<&'static str> {
        self.defs
            .iter()
            .find(|(k, _)| *k == node_kind)
            .map(|(_, kind)| *kind)
    }

    pub fn is_container(&self, node_kind: &str) -> bool {
        self.containers.contains(&node_kind)
    }
}
