//! Summaries of snippets: from an OpenAI-compatible chat model when one is configured, and
//! otherwise a heuristic one (kind, qualified name, signature, first sentence of the doc
//! comment), stored as `heuristic` so the two are never confused.

use crate::store::vectors::SummaryInput;

/// The first sentence of a doc comment: up to the first `. ` or blank line.
pub fn first_sentence(doc: &str) -> String {
    let paragraph = doc.split("\n\n").next().unwrap_or(doc);
    let flat = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(i) => flat[..=i].to_string(),
        None => flat,
    }
}

/// A summary made from the snippet itself, without a model.
pub fn heuristic(s: &SummaryInput) -> String {
    let kind = match s.kind.as_str() {
        "chunk" => "Lines".to_string(),
        k => {
            let mut c = k.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
    };
    let mut out = match &s.qualified_name {
        Some(name) => format!("{kind} {name} in {}", s.path),
        None => format!("{kind} of {}", s.path),
    };
    if let Some(lang) = &s.language {
        out.push_str(&format!(" ({lang})"));
    }
    if let Some(sig) = &s.signature {
        out.push_str(&format!(": {sig}"));
    }
    out.push('.');
    if let Some(doc) = s
        .doc
        .as_deref()
        .map(first_sentence)
        .filter(|d| !d.is_empty())
    {
        out.push(' ');
        out.push_str(&doc);
    }
    out
}

/// What the chat model is told about a snippet besides its code.
pub fn context_line(s: &SummaryInput) -> String {
    format!(
        "{} {} in {}{}",
        s.kind,
        s.qualified_name.as_deref().unwrap_or("(anonymous)"),
        s.path,
        s.language
            .as_deref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_summaries_name_kind_signature_and_doc() {
        let s = SummaryInput {
            snippet_id: 1,
            path: "src/config.rs".into(),
            language: Some("rust".into()),
            kind: "function".into(),
            qualified_name: Some("config::parse".into()),
            signature: Some("pub fn parse(path: &str) -> Config".into()),
            doc: Some("Parses the file. Then checks it.\n\nMore.".into()),
            code: String::new(),
            content_hash: String::new(),
        };
        assert_eq!(
            heuristic(&s),
            "Function config::parse in src/config.rs (rust): pub fn parse(path: &str) -> Config. Parses the file."
        );
        assert_eq!(first_sentence("No period here"), "No period here");
    }
}
