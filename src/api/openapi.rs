//! The OpenAPI 3.1 document, built from the route table ([`super::routes::ROUTES`]) the
//! router is built from: every route is documented, and nothing else is.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::routes::{Kind, NDJSON, NOT_BLANK, ROUTES, path_kind};
use crate::search::MAX_QUERY_CHARS;

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
                json!({ "name": name, "in": "path", "required": true, "schema": kind_schema(path_kind(name)) })
            })
            .collect();
        for param in route.query {
            parameters.push(json!({
                "name": param.name, "in": "query", "required": param.required,
                "description": param.description, "schema": kind_schema(param.kind),
            }));
        }
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = &route.body {
            let schema =
                serde_json::to_value((body.schema)(&mut generator)).expect("schemas serialise");
            operation.insert(
                "requestBody".into(),
                json!({ "required": body.required, "content": { "application/json": { "schema": schema } } }),
            );
        }
        operation.insert("responses".into(), responses(route, &mut generator));
        if route.public {
            operation.insert("security".into(), json!([]));
        }
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.method.to_lowercase()] = Value::Object(operation);
    }
    add_links(&mut paths);
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
            "description": "Index code repositories and search them; steer the indexing queue. Every route but /healthz and the dashboard page / (which holds no data) needs `Authorization: Bearer <TRAWL_API_TOKEN>` when the server has a token. Errors are JSON: {\"error\": {\"code\", \"message\"}}.",
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

/// Where answers name a run (a JSON pointer into the body), so a client (or a stateful
/// fuzzer) can follow from them to the run's routes.
const RUN_LINKS: &[(&str, &str, &str, &str)] = &[
    ("/api/v1/repositories", "post", "202", "/enqueued/run_id"),
    (
        "/api/v1/repositories/{repository}/reindex",
        "post",
        "202",
        "/run_id",
    ),
];

/// Adds OpenAPI links from the answers of [`RUN_LINKS`] to every operation on `{run}`.
fn add_links(paths: &mut Map<String, Value>) {
    let mut targets = Vec::new();
    for (path, item) in paths.iter() {
        if path_parameters(path).any(|p| p == "run") {
            for operation in item.as_object().into_iter().flat_map(|o| o.values()) {
                targets.push(operation["operationId"].as_str().unwrap_or("").to_string());
            }
        }
    }
    for (path, method, status, pointer) in RUN_LINKS {
        let links: Map<String, Value> = targets
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    json!({ "operationId": id, "parameters": { "run": format!("$response.body#{pointer}") } }),
                )
            })
            .collect();
        if let Some(answer) = paths
            .get_mut(*path)
            .and_then(|item| item.get_mut(*method))
            .and_then(|operation| operation["responses"].get_mut(*status))
        {
            answer["links"] = Value::Object(links);
        }
    }
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

/// "Holds no NUL character" (which the handlers refuse in query values and paths).
const NO_NUL: &str = "^[^\\u0000]*$";

/// The schema of a parameter of `kind`.
fn kind_schema(kind: Kind) -> Value {
    match kind {
        Kind::Text => json!({ "type": "string", "minLength": 1, "pattern": NO_NUL }),
        Kind::Words => {
            json!({
                "type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS,
                "allOf": [{ "pattern": NOT_BLANK }, { "pattern": NO_NUL }],
            })
        }
        Kind::Integer { min, max } => {
            json!({ "type": "integer", "format": "int64", "minimum": min, "maximum": max })
        }
        Kind::Boolean => json!({ "type": "boolean" }),
        Kind::OneOf(names) => json!({ "type": "string", "enum": names }),
        Kind::Since => json!({
            "type": "string",
            "anyOf": [
                { "pattern": "^[0-9]{1,6}[smhd]$", "description": "A duration back from now: 30m, 12h, 7d." },
                { "format": "date-time" },
            ],
        }),
    }
}

/// Why each error status is answered; every route may answer these (the body ones only
/// routes that take a body, 401 only routes behind the token).
const ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "The request is not valid: a parameter, the path or the body (invalid_query, invalid_path, invalid_body, invalid_source, invalid_scope, …).",
    ),
    ("401", "No bearer token, or a wrong one (unauthorized)."),
    (
        "403",
        "Refused: a source outside serve.allowed_roots (source_not_allowed), a cross-site request (cross_origin), or a host name other than loopback on a server without a token (forbidden_host).",
    ),
    (
        "404",
        "No such repository, run, task or route (unknown_repository, unknown_run, unknown_task, no_route).",
    ),
    (
        "405",
        "The path does not take this method (method_not_allowed); Allow lists those it takes.",
    ),
    (
        "409",
        "The run or task is not in a state that allows this (wrong_state), or the repository cannot be read (repository_unreadable).",
    ),
    ("413", "The body is over the server's limit (invalid_body)."),
    (
        "415",
        "The body is not sent as application/json (invalid_body).",
    ),
    (
        "503",
        "The database, the search tiers or git are not available, or the server is stopping.",
    ),
];

fn responses(route: &super::routes::Route, generator: &mut schemars::SchemaGenerator) -> Value {
    let media = match route.path {
        "/metrics" => "text/plain",
        "/" => "text/html",
        _ => "application/json",
    };
    let mut all = Map::new();
    for answer in route.answers {
        let schema = serde_json::to_value((answer.schema)(generator)).expect("schemas serialise");
        let mut content = json!({ media: { "schema": schema } });
        if route.streams && answer.status == 200 {
            content[NDJSON] = json!({
                "schema": { "type": "string", "description": "One progress snapshot per line, the first at once, the terminal one last." }
            });
        }
        all.insert(
            answer.status.to_string(),
            json!({ "description": answer.description, "content": content }),
        );
    }
    // A streamed answer is a 200 even where the plain answer is a 202.
    if route.streams && !all.contains_key("200") {
        all.insert(
            "200".into(),
            json!({
                "description": "With Accept: application/x-ndjson, the run's progress.",
                "content": { NDJSON: { "schema": { "type": "string", "description": "One progress snapshot per line, the first at once, the terminal one last." } } },
            }),
        );
    }
    for (status, description) in ERRORS {
        let takes_body = matches!(*status, "413" | "415");
        if (takes_body && route.body.is_none()) || (*status == "401" && route.public) {
            continue;
        }
        all.insert(
            status.to_string(),
            json!({
                "description": description,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
            }),
        );
    }
    Value::Object(all)
}
