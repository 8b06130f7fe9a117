//! The code-aware tokenizer of the keyword index.
//!
//! Every identifier is indexed as itself (lowercased) and as its words: `parseConfigFile`,
//! `parse_config_file` and `ParseConfigFile` all give `parse`, `config`, `file`, so the query
//! "parse config file" finds each; the whole identifier is a token too, rarer than its words,
//! so a query naming it exactly ranks the exact match first.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// The name the tokenizer is registered under.
pub const CODE_TOKENIZER: &str = "trawl_code";

/// Longer identifiers are cut: nobody searches for them whole, and tantivy caps terms.
const MAX_TOKEN_CHARS: usize = 64;

#[derive(Clone, Default)]
pub struct CodeTokenizer;

pub struct CodeTokenStream {
    tokens: Vec<Token>,
    index: usize,
}

impl Tokenizer for CodeTokenizer {
    type TokenStream<'a> = CodeTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CodeTokenStream {
        let mut tokens = Vec::new();
        for_each_token(text, |text, from, to| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position: tokens.len(),
                text,
                position_length: 1,
            })
        });
        CodeTokenStream { tokens, index: 0 }
    }
}

impl TokenStream for CodeTokenStream {
    fn advance(&mut self) -> bool {
        self.index += 1;
        self.index <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.index - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.index - 1]
    }
}

/// The name the exact-identifier tokenizer is registered under.
pub const EXACT_TOKENIZER: &str = "trawl_exact";

/// Whole identifiers as written (case kept): a query naming `parseConfigFile` exactly ranks
/// it above `ParseConfigFile`.
#[derive(Clone, Default)]
pub struct ExactTokenizer;

impl Tokenizer for ExactTokenizer {
    type TokenStream<'a> = CodeTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CodeTokenStream {
        let mut tokens = Vec::new();
        for (from, to) in identifiers(text) {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position: tokens.len(),
                text: text[from..to].chars().take(MAX_TOKEN_CHARS).collect(),
                position_length: 1,
            });
        }
        CodeTokenStream { tokens, index: 0 }
    }
}

/// The tokens of `text`, in order (used for queries, and by tests).
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_token(text, |t, _, _| out.push(t));
    out
}

/// The identifiers of `text` as written (for the exact field).
pub fn exact_tokens(text: &str) -> Vec<String> {
    identifiers(text)
        .into_iter()
        .map(|(a, b)| text[a..b].chars().take(MAX_TOKEN_CHARS).collect())
        .collect()
}

/// English words too common to say anything in a query ("convert a file to text"); dropped
/// from keyword queries that have other words, never from the index.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "how", "in", "into", "is",
    "it", "of", "on", "or", "that", "the", "this", "to", "what", "when", "where", "which", "with",
];

/// The query's tokens without stopwords, unless that would leave none.
pub fn query_tokens(text: &str) -> Vec<String> {
    let all = tokens(text);
    let kept: Vec<String> = all
        .iter()
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .cloned()
        .collect();
    if kept.is_empty() { all } else { kept }
}

/// Byte ranges of the identifiers (runs of letters, digits and `_`, outer `_` trimmed).
fn identifiers(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        let word_char = c.is_alphanumeric() || c == '_';
        match (start, word_char) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                let ident = &text[s..i];
                let lead = ident.len() - ident.trim_start_matches('_').len();
                let trimmed = ident.trim_matches('_');
                if !trimmed.is_empty() {
                    out.push((s + lead, s + lead + trimmed.len()));
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Calls `emit(token, byte_from, byte_to)` for each identifier of `text` and each of its
/// words.
fn for_each_token(text: &str, mut emit: impl FnMut(String, usize, usize)) {
    for (from, to) in identifiers(text) {
        identifier(&text[from..to], from, &mut emit);
    }
}

fn identifier(trimmed: &str, base: usize, emit: &mut impl FnMut(String, usize, usize)) {
    let whole = lower_cut(trimmed);
    let words = split_words(trimmed);
    emit(whole.clone(), base, base + trimmed.len());
    if words.len() > 1 {
        for (from, to) in words {
            let word = lower_cut(&trimmed[from..to]);
            if word != whole {
                emit(word, base + from, base + to);
            }
        }
    }
}

fn lower_cut(s: &str) -> String {
    s.chars()
        .take(MAX_TOKEN_CHARS)
        .flat_map(char::to_lowercase)
        .collect()
}

/// Byte ranges of the words of an identifier: split at `_`, at lower→upper case changes,
/// before the last capital of an acronym (`HTTPServer` → `HTTP`, `Server`), and between
/// letters and digits.
fn split_words(ident: &str) -> Vec<(usize, usize)> {
    let chars: Vec<(usize, char)> = ident.char_indices().collect();
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    for (k, &(i, c)) in chars.iter().enumerate() {
        if c == '_' {
            if let Some(s) = start.take() {
                words.push((s, i));
            }
            continue;
        }
        if let Some(s) = start {
            let prev = chars[k - 1].1;
            let next = chars.get(k + 1).map(|p| p.1);
            let boundary = (prev.is_lowercase() && c.is_uppercase())
                || (prev.is_uppercase()
                    && c.is_uppercase()
                    && next.is_some_and(|n| n.is_lowercase()))
                || (prev.is_alphabetic() && c.is_numeric())
                || (prev.is_numeric() && c.is_alphabetic());
            if boundary && s < i {
                words.push((s, i));
                start = Some(i);
            }
        } else {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push((s, ident.len()));
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_split_into_words_and_keep_themselves() {
        assert_eq!(
            tokens("parseConfigFile"),
            ["parseconfigfile", "parse", "config", "file"]
        );
        assert_eq!(
            tokens("parse_config_file"),
            ["parse_config_file", "parse", "config", "file"]
        );
        assert_eq!(
            tokens("ParseConfigFile"),
            ["parseconfigfile", "parse", "config", "file"]
        );
        assert_eq!(
            tokens("HTTPServer2go"),
            ["httpserver2go", "http", "server", "2", "go"]
        );
        assert_eq!(tokens("__init__"), ["init"]);
        assert_eq!(tokens("parse config file"), ["parse", "config", "file"]);
        assert_eq!(exact_tokens("x = _fooBar(y2);"), ["x", "fooBar", "y2"]);
        assert_eq!(
            query_tokens("convert a file to text"),
            ["convert", "file", "text"]
        );
        assert_eq!(query_tokens("the a"), ["the", "a"]);
        assert_eq!(
            tokens("fn área(x: u8) -> Vec<u8>"),
            ["fn", "área", "x", "u8", "u", "8", "vec", "u8", "u", "8"]
        );
    }

    #[test]
    fn offsets_point_at_the_words() {
        let text = "let x = _fooBar;";
        let mut stream = CodeTokenizer.token_stream(text);
        let mut seen = Vec::new();
        while stream.advance() {
            let t = stream.token();
            seen.push((t.text.clone(), &text[t.offset_from..t.offset_to]));
        }
        assert_eq!(
            seen,
            [
                ("let".to_string(), "let"),
                ("x".to_string(), "x"),
                ("foobar".to_string(), "fooBar"),
                ("foo".to_string(), "foo"),
                ("bar".to_string(), "Bar"),
            ]
        );
    }
}
