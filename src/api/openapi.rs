//! The OpenAPI 3.1 document, built from the route table ([`super::routes::ROUTES`]) the
//! router is built from: every route is documented, and nothing else is.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::routes::{NDJSON, ROUTES};

/// The document served at `/api/v1/openapi.json`.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas/".into())
        .into_generator();
    let mut paths = Map::new();
    for route in ROUTES {
        let mut operation = Map::new();
        operation.insert("summary".into(), json!(route.summary));
        operation.insert("tags".into(), json!([route.tag]));
        operation.insert(
            "operationId".into(),
            json!(operation_id(route.method, route.path)),
        );
        let mut parameters: Vec<Value> = path_parameters(route.path)
            .map(|name| {
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
            })
            .collect();
        for (name, kind, description) in route.query {
            parameters.push(json!({
                "name": name, "in": "query", "required": false,
                "description": description, "schema": { "type": kind },
            }));
        }
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = route.body {
            let schema = serde_json::to_value(body(&mut generator)).expect("schemas serialise");
            operation.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { "application/json": { "schema": schema } } }),
            );
        }
        operation.insert("responses".into(), responses(route));
        if route.public {
            operation.insert("security".into(), json!([]));
        }
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.method.to_lowercase()] = Value::Object(operation);
    }
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": { "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "description": "Stable, for programs: invalid_body, unknown_run, wrong_state, unauthorized, …" },
                    "message": { "type": "string", "description": "For people: what was wrong and what to do." },
                },
            } },
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "trawl",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Index code repositories and search them; steer the indexing queue. Every route but /healthz needs `Authorization: Bearer <TRAWL_API_TOKEN>` when the server has a token. Errors are JSON: {\"error\": {\"code\", \"message\"}}.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas,
        },
    })
}

/// The names of a path's `{parameters}`.
pub fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// `GET /api/v1/runs/{run}/items` → `get_runs_run_items`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_lowercase();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if segment == "api" || segment == "v1" {
            continue;
        }
        id.push('_');
        id.push_str(
            &segment
                .trim_matches(|c| c == '{' || c == '}')
                .replace(['.', '-'], "_"),
        );
    }
    if id == method.to_lowercase() {
        id.push_str("_root");
    }
    id
}

fn responses(route: &super::routes::Route) -> Value {
    let error = json!({
        "description": "An error: {\"error\": {\"code\": \"...\", \"message\": \"...\"}}",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    });
    let media = match route.path {
        "/metrics" => "text/plain",
        "/" => "text/html",
        _ => "application/json",
    };
    let mut ok = json!({
        "description": "Success.",
        "content": { media: { "schema": { "type": if media == "application/json" { "object" } else { "string" } } } },
    });
    if route.streams {
        ok["content"][NDJSON] = json!({
            "schema": { "type": "string", "description": "One progress snapshot per line, the first at once, the terminal one last." }
        });
    }
    let accepted = json!({
        "description": "Accepted: queued for the workers.",
        "content": { "application/json": { "schema": { "type": "object" } } },
    });
    let mut all = json!({
        "200": ok,
        "400": error,
        "401": error,
        "404": error,
        "409": error,
        "503": error,
    });
    if route.method == "POST" {
        all["202"] = accepted;
    }
    all
}
