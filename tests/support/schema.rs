//! Checks a JSON value against a schema of the OpenAPI document: the subset of JSON Schema
//! 2020-12 that schemars writes (`$ref` into the document, `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `const`, `oneOf`, `anyOf`, `allOf`, `not`,
//! `minimum`, `maximum`, `minLength`, `maxLength`, `minItems`). Enough to hold every answer to what the document
//! says of it; formats and patterns are not checked.

use serde_json::Value;

/// What in `value` breaks `schema` (resolved against `document`), one line per violation,
/// each with the JSON pointer of where; empty when it fits.
pub fn violations(document: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(document, schema, value, "", &mut out);
    out
}

fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(
                document,
                document
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("the document has no {reference}")),
            )
        }
        None => schema,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn fits_type(expected: &str, value: &Value) -> bool {
    let actual = type_name(value);
    actual == expected || (expected == "number" && actual == "integer")
}

fn check(document: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let schema = resolve(document, schema);
    let Some(rules) = schema.as_object() else {
        // `true` accepts anything, `false` nothing.
        if schema == &Value::Bool(false) {
            out.push(format!("{at}: nothing is allowed here"));
        }
        return;
    };
    if let Some(expected) = rules.get("type") {
        let names: Vec<&str> = match expected {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.iter().any(|name| fits_type(name, value)) {
            out.push(format!(
                "{at}: {} is not of type {expected}",
                type_name(value)
            ));
            return;
        }
    }
    if let Some(allowed) = rules.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(constant) = rules.get("const")
        && constant != value
    {
        out.push(format!("{at}: {value} is not {constant}"));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = rules.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push(format!("{at}: {n} is below {min}"));
        }
        if let Some(max) = rules.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.push(format!("{at}: {n} is above {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        let chars = s.chars().count() as u64;
        if rules
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|min| chars < min)
            || rules
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|max| chars > max)
        {
            out.push(format!("{at}: {s:?} has a length out of bounds"));
        }
    }
    if let Some(all) = rules.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(document, sub, value, at, out);
        }
    }
    if let Some(sub) = rules.get("not")
        && violations(document, sub, value).is_empty()
    {
        out.push(format!("{at}: {value} fits what `not` excludes"));
    }
    if let (Value::Array(items), Some(min)) = (value, rules.get("minItems").and_then(Value::as_u64))
        && (items.len() as u64) < min
    {
        out.push(format!("{at}: fewer than {min} items"));
    }
    for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(options) = rules.get(keyword).and_then(Value::as_array) {
            let fitting = options
                .iter()
                .filter(|sub| violations(document, sub, value).is_empty())
                .count();
            if fitting == 0 || (exactly_one && fitting > 1) {
                out.push(format!(
                    "{at}: fits {fitting} of the {keyword} options of {value}"
                ));
            }
        }
    }
    if let Value::Object(fields) = value {
        let properties = rules.get("properties").and_then(Value::as_object);
        for name in rules
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                out.push(format!("{at}: no required field {name}"));
            }
        }
        for (name, field) in fields {
            let here = format!("{at}/{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check(document, sub, field, &here, out),
                None => match rules.get("additionalProperties") {
                    Some(Value::Bool(false)) => out.push(format!("{here}: not in the schema")),
                    Some(sub @ Value::Object(_)) => check(document, sub, field, &here, out),
                    // Without additionalProperties a field the schema does not name is
                    // allowed by JSON Schema, but an answer should not hold one.
                    _ if properties.is_some() => out.push(format!("{here}: not in the schema")),
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(sub)) = (value, rules.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(document, sub, item, &format!("{at}/{i}"), out);
        }
    }
}
