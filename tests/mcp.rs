//! The MCP server driven by a real MCP client (rmcp's): over stdio (`trawl mcp` as a child
//! process) and over streamable HTTP (`trawl serve`'s /mcp, with the token).

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};

use crate::support::server::{Served, TOKEN};
use crate::support::{TestDb, path_str, poll_until, trawl_cmd, trawl_in};

type Client = RunningService<RoleClient, ()>;

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pkg")).unwrap();
    std::fs::write(
        dir.path().join("pkg/store.py"),
        "def save_snapshot(state):\n    \"\"\"Write the state to disk.\"\"\"\n    return state\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pkg/load.py"),
        "def load_snapshot(path):\n    return open(path).read()\n",
    )
    .unwrap();
    dir
}

/// Calls `tool` and returns whether it was an error, and its JSON answer.
async fn call(client: &Client, tool: &'static str, args: Value) -> (bool, Value) {
    let mut params = CallToolRequestParams::new(tool);
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    let result: CallToolResult = client.call_tool(params).await.unwrap();
    let text: String = result
        .content
        .iter()
        .filter_map(|c| c.as_text())
        .map(|t| t.text.clone())
        .collect();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (result.is_error == Some(true), value)
}

/// What every transport must offer: the tools, their schemas, and answers and refusals.
async fn exercise(client: &Client, repo: &str) {
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "callees",
            "callers",
            "cancel_reindex",
            "find_references",
            "force_reindex",
            "get_reindex_status",
            "history",
            "list_repositories",
            "pause_reindex",
            "remove_repository",
            "resume_reindex",
            "search",
            "search_commits"
        ]
    );
    // force_reindex takes seed 001's arguments.
    let schema = &tools
        .iter()
        .find(|t| t.name == "force_reindex")
        .unwrap()
        .input_schema;
    for field in [
        "scope",
        "paths",
        "priority",
        "embeddings_only",
        "async",
        "incremental",
    ] {
        assert!(
            schema["properties"].get(field).is_some(),
            "force_reindex takes {field}: {schema:?}"
        );
    }
    assert_eq!(schema["required"], json!(["scope"]), "{schema:?}");

    let (error, listed) = call(client, "list_repositories", json!({})).await;
    assert!(!error, "{listed}");
    assert_eq!(
        listed["repositories"][0]["repository"]["source"], repo,
        "{listed}"
    );
    // Its freshness: nothing changed on disk since the index, and when it was built.
    let fresh = &listed["repositories"][0]["freshness"];
    assert_eq!(
        fresh["changed_on_disk"],
        json!({"added": 0, "changed": 0, "deleted": 0}),
        "{listed}"
    );
    assert!(fresh["built_at"].is_string(), "{listed}");
    assert_eq!(
        listed["repositories"][0]["index_version"]["version"], 1,
        "{listed}"
    );

    let (error, found) = call(
        client,
        "search",
        json!({ "query": "save snapshot", "mode": "keyword", "limit": 3 }),
    )
    .await;
    assert!(!error, "{found}");
    assert_eq!(found["hits"][0]["name"], "save_snapshot", "{found}");
    // remove_repository says what would go (a dry run: the repository stays for the rest).
    let (error, plan) = call(
        client,
        "remove_repository",
        json!({ "repository": repo, "dry_run": true }),
    )
    .await;
    assert!(!error, "{plan}");
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert!(plan["contents"]["snippets"].as_i64().unwrap() > 0, "{plan}");
    let (error, refused) = call(
        client,
        "remove_repository",
        json!({ "repository": "/nowhere" }),
    )
    .await;
    assert!(error, "{refused}");
    assert_eq!(refused["error"]["code"], "unknown_repository", "{refused}");
    // The pipelines' tools answer, and refuse what is not a name.
    let (error, refs) = call(
        client,
        "find_references",
        json!({ "symbol": "save_snapshot" }),
    )
    .await;
    assert!(!error, "{refs}");
    assert!(
        refs["references"].is_array() && refs["freshness"].is_array(),
        "{refs}"
    );
    let (error, refused) = call(client, "callers", json!({ "symbol": "two words" })).await;
    assert!(error, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_symbol", "{refused}");
    let (error, refused) = call(client, "search", json!({ "query": "   " })).await;
    assert!(error, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_query", "{refused}");
    // Arguments that do not fit a tool's schema are refused with the error JSON too.
    for (tool, args, names) in [
        ("search", json!({ "limit": 3 }), "query"),
        ("search", json!({ "query": "x", "mode": "fuzzy" }), "fuzzy"),
        ("force_reindex", json!({ "paths": ["a.py"] }), "scope"),
        (
            "force_reindex",
            json!({ "scope": "everything" }),
            "everything",
        ),
        (
            "force_reindex",
            json!({ "scope": "project", "priority": "urgent" }),
            "urgent",
        ),
        ("get_reindex_status", json!({ "task_id": 12 }), "string"),
    ] {
        let (error, refused) = call(client, tool, args.clone()).await;
        assert!(error, "{tool} {args}: {refused}");
        assert_eq!(
            refused["error"]["code"], "invalid_arguments",
            "{tool} {args}: {refused}"
        );
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(tool) && message.contains(names),
            "{message}"
        );
    }

    // A blocking reindex of one file returns its result.
    let (error, done) = call(
        client,
        "force_reindex",
        json!({ "scope": "file", "paths": ["pkg/store.py"], "async": false }),
    )
    .await;
    assert!(!error, "{done}");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["items_completed"], 1, "{done}");
    let task = done["task_id"].as_str().unwrap().to_string();
    let (error, status) = call(client, "get_reindex_status", json!({ "task_id": task })).await;
    assert!(!error, "{status}");
    assert_eq!(status["status"], "succeeded");
    assert_eq!(status["progress"]["terminal"], true, "{status}");
    // Steering an ended task is refused with the reason.
    for tool in ["pause_reindex", "resume_reindex", "cancel_reindex"] {
        let (error, refused) = call(client, tool, json!({ "task_id": task })).await;
        assert!(error, "{tool}: {refused}");
        assert_eq!(refused["error"]["code"], "wrong_state", "{tool}: {refused}");
    }
    for (args, code) in [
        (
            json!({ "scope": "file", "paths": ["../../etc/passwd"] }),
            "invalid_scope",
        ),
        (
            json!({ "scope": "file", "paths": ["a.py", "b.py"] }),
            "invalid_scope",
        ),
        (
            json!({ "scope": "project", "repository": "nowhere" }),
            "unknown_repository",
        ),
        (
            json!({ "scope": "files", "paths": ["pkg/load.py"], "embeddings_only": true }),
            "invalid_scope",
        ),
    ] {
        let (error, refused) = call(client, "force_reindex", args.clone()).await;
        assert!(error, "{args}: {refused}");
        assert_eq!(refused["error"]["code"], code, "{args}: {refused}");
    }
    let (error, refused) = call(client, "get_reindex_status", json!({ "task_id": "soon" })).await;
    assert!(error);
    assert_eq!(refused["error"]["code"], "invalid_task_id", "{refused}");
    let (error, refused) = call(client, "get_reindex_status", json!({ "task_id": "424242" })).await;
    assert!(error);
    assert_eq!(refused["error"]["code"], "unknown_task", "{refused}");
}

/// Indexes the fixture through the CLI (working the run in-process).
fn index(db: &TestDb, dir: &std::path::Path) -> String {
    let source = path_str(dir);
    let r = trawl_in(db, &["index", &source, "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    source
}

#[tokio::test]
async fn mcp_over_stdio_with_a_real_client() {
    let db = TestDb::new().await;
    let dir = fixture();
    let source = index(&db, dir.path());
    let mut command = trawl_cmd();
    command.envs(db.env()).arg("mcp");
    let transport = TokioChildProcess::new(tokio::process::Command::from(command)).unwrap();
    let client = ().serve(transport).await.expect("the MCP session starts");
    let info = client.peer_info().expect("the server introduced itself");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("trawl")
    );
    // With no worker yet, a task stays queued while it is steered.
    let (error, queued) = call(&client, "force_reindex", json!({ "scope": "project" })).await;
    assert!(!error, "{queued}");
    assert_eq!(queued["status"], "queued", "{queued}");
    let task = queued["task_id"].as_str().unwrap().to_string();
    for (tool, expected) in [
        ("pause_reindex", "paused"),
        ("resume_reindex", "queued"),
        ("cancel_reindex", "cancelled"),
    ] {
        let (error, steered) = call(&client, tool, json!({ "task_id": task })).await;
        assert!(!error, "{tool}: {steered}");
        assert_eq!(steered["status"], expected, "{tool}: {steered}");
    }
    let (_, status) = call(&client, "get_reindex_status", json!({ "task_id": task })).await;
    assert_eq!(status["status"], "cancelled", "{status}");
    // The blocking reindex needs a worker: this process runs one.
    let ctx = trawl::pipeline::PipelineContext::new(db.store.clone(), db.config());
    let (stop, worker) = crate::support::spawn_worker(ctx, 2);
    exercise(&client, &source).await;
    client.cancel().await.unwrap();
    let _ = stop.send(());
    worker.await.unwrap();
}

#[tokio::test]
async fn mcp_over_streamable_http_with_the_token() {
    let db = TestDb::new().await;
    let dir = fixture();
    let source = index(&db, dir.path());
    let served = Served::start(&db, &["--workers", "2"], &[]);
    let url = served.url("/mcp");

    let anonymous = ().serve(StreamableHttpClientTransport::from_uri(url.clone())).await;
    assert!(anonymous.is_err(), "no token, no session");
    let wrong = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.clone()).auth_header("wrong"),
    );
    assert!(().serve(wrong).await.is_err(), "a wrong token, no session");

    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).auth_header(TOKEN),
    );
    let client = ().serve(transport).await.expect("the MCP session starts");
    exercise(&client, &source).await;

    // The transport's own refusals are the error JSON too: a body over its limit (4 MiB)
    // and a request that accepts neither JSON nor an event stream.
    let http = served.client();
    let big = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping", "params": { "pad": "x".repeat(5 << 20) } });
    // (On a connection of its own: the server closes it without reading the rest, and a
    // client reusing it would fail its next request.)
    let response = served
        .client()
        .post(served.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    let response = http
        .post(served.url("/mcp"))
        .header("accept", "text/html")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NOT_ACCEPTABLE);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "not_acceptable", "{body}");

    // In the background (the default), then followed to its end.
    let (error, queued) = call(
        &client,
        "force_reindex",
        json!({ "scope": "directory", "paths": ["pkg"], "priority": "high", "incremental": true }),
    )
    .await;
    assert!(!error, "{queued}");
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(queued["result"], Value::Null);
    let task = queued["task_id"].as_str().unwrap().to_string();
    let status = poll_until(
        std::time::Duration::from_secs(60),
        &format!("task {task} to succeed"),
        async |seen| {
            let (error, status) =
                call(&client, "get_reindex_status", json!({ "task_id": task })).await;
            assert!(!error, "{status}");
            *seen = status.to_string();
            (status["status"] == "succeeded").then_some(status)
        },
    )
    .await;
    assert_eq!(status["result"]["status"], "succeeded", "{status}");
    client.cancel().await.unwrap();
}
