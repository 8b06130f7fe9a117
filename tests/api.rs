//! The HTTP API of `trawl serve`, over real HTTP against a real server process: the token,
//! every route's happy path and its refusals, the NDJSON progress stream, the OpenAPI
//! document against the routes, metrics, and a clean stop on SIGTERM.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::schema;
use crate::support::server::{Served, TOKEN, ask, code};
use crate::support::{TestDb, path_str, poll_until, trawl_in};

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("src/config.py"),
        "def parse_config_file(path):\n    \"\"\"Read the settings file.\"\"\"\n    return open(path).read()\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("src/net.py"),
        "def retry_with_backoff(call, attempts=3):\n    for i in range(attempts):\n        call()\n",
    )
    .unwrap();
    dir
}

/// Reads an NDJSON progress stream to its end.
async fn frames(request: reqwest::RequestBuilder) -> Vec<Value> {
    let response = request
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ndjson",
        "the stream's media type"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l:?}")))
        .collect()
}

/// Checks a finished progress stream: `preparing_index` first, one terminal frame and it
/// last, percentages within 5 points of done/total.
fn check_stream(frames: &[Value], status: &str) {
    assert!(frames.len() >= 2, "{frames:?}");
    assert_eq!(frames[0]["stage"], "preparing_index", "{frames:?}");
    assert_eq!(frames[0]["terminal"], false);
    let last = frames.last().unwrap();
    assert_eq!(last["terminal"], true, "{frames:?}");
    assert_eq!(last["status"], status, "{last}");
    assert_eq!(
        frames.iter().filter(|f| f["terminal"] == true).count(),
        1,
        "one terminal frame"
    );
    for f in frames {
        let (done, total) = (
            f["items_done"].as_f64().unwrap(),
            f["items_total"].as_f64().unwrap(),
        );
        if total > 0.0 && f["status"] == "running" {
            let expected = 100.0 * done / total;
            assert!(
                (f["percent"].as_f64().unwrap() - expected).abs() <= 5.0,
                "percent off: {f}"
            );
        }
    }
}

#[tokio::test]
async fn every_route_but_healthz_needs_the_token() {
    let db = TestDb::new().await;
    let served = Served::start(&db, &["--workers", "0"], &[]);
    let anonymous = reqwest::Client::new();

    let (status, body) = ask(anonymous.get(served.url("/healthz"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");

    for path in [
        "/api/v1/repositories",
        "/api/v1/runs",
        "/api/v1/dashboard",
        "/metrics",
        "/api/v1/openapi.json",
    ] {
        let response = anonymous.get(served.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{path}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(code(&body), "unauthorized", "{path}");

        let (status, body) = ask(anonymous.get(served.url(path)).bearer_auth("wrong-token")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("wrong"),
            "{body}"
        );
    }
    // The MCP endpoint too.
    let response = anonymous
        .post(served.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (status, _) = ask(served.client().get(served.url("/api/v1/repositories"))).await;
    assert_eq!(status, StatusCode::OK);
    // The dashboard page is public: it holds no data, its script asks the API with the
    // token. The API takes no token in the query string.
    let page = anonymous.get(served.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.text().await.unwrap().contains("<title>trawl"));
    let (status, _) = ask(anonymous.get(served.url(&format!("/api/v1/runs?token={TOKEN}")))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A browser's cross-site POST is refused even with the token; so is one from an
    // opaque origin (`Origin: null`: a sandboxed frame, a file:// page).
    for origin in ["http://evil.example", "null"] {
        let (status, body) = ask(served
            .client()
            .post(served.url("/api/v1/runs/1/cancel"))
            .header("origin", origin))
        .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "cross_origin"),
            "{origin}: {body}"
        );
    }
}

#[tokio::test]
async fn serve_refuses_an_open_address_without_a_token_and_stops_cleanly_on_sigterm() {
    let db = TestDb::new().await;
    let r = trawl_in(&db, &["serve", "--bind", "0.0.0.0:0", "--no-scheduler"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("TRAWL_API_TOKEN"), "{}", r.stderr);
    let r = trawl_in(&db, &["serve", "--bind", "not-an-address"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("host:port"), "{}", r.stderr);

    // Without a token, only requests to a loopback name are answered (DNS rebinding).
    let open = Served::start(&db, &["--workers", "0"], &[("TRAWL_API_TOKEN", "")]);
    let (status, _) = ask(reqwest::Client::new().get(open.url("/api/v1/runs"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = ask(reqwest::Client::new()
        .get(open.url("/api/v1/runs"))
        .header("host", "rebound.example:7700"))
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_host"),
        "{body}"
    );
    drop(open);

    // SIGTERM with a progress stream open on a run no worker takes: the stream ends with
    // `shutting_down` and the process exits 0.
    let dir = fixture();
    let mut served = Served::start(&db, &["--workers", "0"], &[]);
    let http = served.client();
    let (status, body) = ask(http
        .post(served.url("/api/v1/repositories"))
        .json(&json!({ "source": path_str(dir.path()) })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = body["enqueued"]["run_id"].as_i64().unwrap();
    let mut response = http
        .get(served.url(&format!("/api/v1/runs/{run}/progress")))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The first frame has come: the server is following the run when it is told to stop.
    let mut read = Vec::new();
    while !read.contains(&b'\n') {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("a first frame before the stream ends");
        read.extend_from_slice(&chunk);
    }
    let reading = tokio::spawn(async move {
        while let Some(chunk) = response.chunk().await? {
            read.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>(String::from_utf8(read).unwrap())
    });
    let exit = tokio::task::spawn_blocking(move || {
        let exit = served.stop(30);
        (exit, served.log())
    })
    .await
    .unwrap();
    assert!(
        exit.0.expect("trawl serve stops on SIGTERM").success(),
        "{}",
        exit.1
    );
    let text = reading.await.unwrap().unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "shutting_down", "{text}");
}

/// A server with two workers and the fixture indexed through it, the run's progress
/// followed as NDJSON: what most of the API's tests start from.
struct Indexed {
    served: Served,
    source: String,
    /// The indexing run.
    run_id: i64,
    repo_id: i64,
    _dir: tempfile::TempDir,
    _db: TestDb,
}

impl Indexed {
    async fn new() -> Indexed {
        let db = TestDb::new().await;
        let dir = fixture();
        let source = path_str(dir.path());
        let served = Served::start(&db, &["--workers", "2"], &[]);
        let http = served.client();
        // Index, following the run's progress as NDJSON.
        let stream = frames(
            http.post(served.url("/api/v1/repositories"))
                .json(&json!({ "source": source })),
        )
        .await;
        check_stream(&stream, "succeeded");
        let run_id = stream[0]["run_id"].as_i64().unwrap();
        let (status, body) = ask(http.get(served.url("/api/v1/repositories"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let repo_id = body["repositories"][0]["repository"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{body}"));
        Indexed {
            served,
            source,
            run_id,
            repo_id,
            _dir: dir,
            _db: db,
        }
    }

    /// A files reindex streamed (the high priority class) and a directory reindex waited
    /// for, without streaming: three runs in all. The files reindex's run.
    async fn reindexed(&self) -> i64 {
        let (http, url) = (self.served.client(), |p: &str| self.served.url(p));
        let reindex = format!("/api/v1/repositories/{}/reindex", self.repo_id);
        let stream = frames(http.post(url(&reindex)).json(
            &json!({ "scope": "files", "paths": ["src/net.py"], "full": true, "priority": "high" }),
        ))
        .await;
        check_stream(&stream, "succeeded");
        let reindex_run = stream[0]["run_id"].as_i64().unwrap();
        // And waited for, without streaming.
        let (status, body) = ask(http
            .post(url(&reindex))
            .json(&json!({ "scope": "directory", "paths": ["src"], "full": true, "wait": true })))
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"]["status"], "succeeded", "{body}");
        assert_eq!(body["result"]["items_completed"], 2, "{body}");
        reindex_run
    }
}

#[tokio::test]
async fn the_api_indexes_following_the_progress_and_refuses_bad_sources() {
    // Indexing, its progress followed as NDJSON, is checked by `Indexed::new`.
    let ix = Indexed::new().await;
    let (http, url) = (ix.served.client(), |p: &str| ix.served.url(p));

    // Bad sources: a missing directory under an allowed root is said to be missing; one
    // outside every root is refused as such, whether it exists or not.
    let missing = std::env::temp_dir().join("trawl-no-such-dir-7c1d");
    let (status, body) = ask(http
        .post(url("/api/v1/repositories"))
        .json(&json!({ "source": path_str(&missing) })))
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_source"),
        "{body}"
    );
    let (status, body) = ask(http
        .post(url("/api/v1/repositories"))
        .json(&json!({ "source": "/no/such/dir" })))
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "source_not_allowed"),
        "{body}"
    );
    let (status, body) = ask(http
        .post(url("/api/v1/repositories"))
        .json(&json!({ "path": "x" })))
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body"),
        "{body}"
    );
    let (status, body) = ask(http
        .post(url("/api/v1/repositories"))
        .header("content-type", "application/json")
        .body("{not json"))
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body"),
        "{body}"
    );
}

#[tokio::test]
async fn repositories_are_listed_with_their_freshness_and_found_by_id_or_path() {
    let ix = Indexed::new().await;
    let (http, url) = (ix.served.client(), |p: &str| ix.served.url(p));
    let (source, repo_id) = (&ix.source, ix.repo_id);

    // Repositories.
    let (status, body) = ask(http.get(url("/api/v1/repositories"))).await;
    assert_eq!(status, StatusCode::OK);
    let repos = body["repositories"].as_array().unwrap();
    assert_eq!(repos.len(), 1, "{body}");
    assert_eq!(repos[0]["index_version"]["version"], 1, "{body}");
    assert!(
        repos[0]["age_seconds"].as_i64().is_some(),
        "freshness: {body}"
    );
    assert_eq!(repos[0]["repository"]["id"], repo_id, "{body}");
    let (status, body) = ask(http.get(url(&format!("/api/v1/repositories/{repo_id}")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["repository"]["source"], source.as_str());
    // By the path it was indexed from, URL-encoded.
    let encoded: String = url::form_urlencoded::byte_serialize(source.as_bytes()).collect();
    let (status, body) = ask(http.get(url(&format!("/api/v1/repositories/{encoded}")))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["repository"]["id"], repo_id);
    let (status, body) = ask(http.get(url("/api/v1/repositories/9999"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_repository")
    );
}

#[tokio::test]
async fn search_answers_get_and_post_with_filters_and_refuses_bad_queries() {
    let ix = Indexed::new().await;
    let (http, url) = (ix.served.client(), |p: &str| ix.served.url(p));
    let repo_id = ix.repo_id;

    // Search, GET and POST, with filters.
    let (status, body) = ask(http.get(url(
        "/api/v1/search?q=parse+config+file&mode=keyword&lang=python&limit=5",
    )))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hits"][0]["name"], "parse_config_file", "{body}");
    let (status, body) = ask(http.post(url("/api/v1/search")).json(&json!({
        "query": "retry a call with backoff", "mode": "hybrid", "path": "src/**",
        "repositories": [repo_id.to_string()], "kinds": ["function"], "limit": 1,
    })))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hits"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["hits"][0]["name"], "retry_with_backoff", "{body}");
    let (status, body) = ask(http.get(url("/api/v1/search?q=x&lang=go"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["hits"],
        json!([]),
        "a filter that matches nothing: {body}"
    );
    for (bad, expected) in [
        ("/api/v1/search", "invalid_query"),
        ("/api/v1/search?q=x&mode=fuzzy", "invalid_query"),
        ("/api/v1/search?q=x&limit=0", "invalid_query"),
        ("/api/v1/search?q=x&limit=many", "invalid_query"),
        ("/api/v1/search?q=x&colour=red", "invalid_query"),
        ("/api/v1/search?q=%20%20", "invalid_query"),
    ] {
        let (status, body) = ask(http.get(url(bad))).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, expected),
            "{bad}: {body}"
        );
    }
    let (status, body) = ask(http.get(url("/api/v1/search?q=x&repo=nowhere"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_repository")
    );
}

#[tokio::test]
async fn reindex_plans_refuses_bad_scopes_and_runs_streamed_or_waited() {
    let ix = Indexed::new().await;
    let (http, url) = (ix.served.client(), |p: &str| ix.served.url(p));
    let repo_id = ix.repo_id;

    // Reindex: dry run, bad scopes, then a files reindex streamed and a directory one
    // waited for (`Indexed::reindexed`).
    let reindex = format!("/api/v1/repositories/{repo_id}/reindex");
    let (status, body) = ask(http.post(url(&reindex)).json(
        &json!({ "scope": "files", "paths": ["src/net.py"], "full": true, "dry_run": true }),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["plan"]["files"][0]["path"], "src/net.py", "{body}");
    for (bad, expected) in [
        (
            json!({ "scope": "files", "paths": ["../etc/passwd"] }),
            "invalid_scope",
        ),
        (
            json!({ "scope": "files", "paths": ["src/missing.py"] }),
            "invalid_scope",
        ),
        (json!({ "scope": "files" }), "invalid_scope"),
        (json!({ "scope": "everything" }), "invalid_body"),
        (json!({ "priority": "urgent" }), "invalid_body"),
        (json!({ "full": "yes" }), "invalid_body"),
    ] {
        let (status, body) = ask(http.post(url(&reindex)).json(&bad)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, expected),
            "{bad}: {body}"
        );
    }
    // HTTP clients are told in the body's words, not the CLI's flags.
    let (_, body) = ask(http
        .post(url(&reindex))
        .json(&json!({ "scope": "directory" })))
    .await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("needs at least one path") && !message.contains("--"),
        "{body}"
    );
    let (status, body) = ask(http
        .post(url("/api/v1/repositories/9999/reindex"))
        .json(&json!({})))
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_repository")
    );
    ix.reindexed().await;
}

#[tokio::test]
async fn runs_are_listed_and_shown_and_bad_run_requests_are_4xx() {
    let ix = Indexed::new().await;
    let (http, url) = (ix.served.client(), |p: &str| ix.served.url(p));
    let (run_id, repo_id) = (ix.run_id, ix.repo_id);
    let reindex_run = ix.reindexed().await;

    // Runs.
    let (status, body) = ask(http.get(url(&format!("/api/v1/runs?repo={repo_id}&limit=2")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["runs"].as_array().unwrap().len(), 2, "{body}");
    let (status, body) = ask(http.get(url("/api/v1/runs?status=succeeded&limit=1"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["runs"][0]["status"], "succeeded", "{body}");
    let (status, body) = ask(http.get(url("/api/v1/runs?status=done"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query"),
        "{body}"
    );
    let (status, body) = ask(http.get(url(&format!("/api/v1/runs/{reindex_run}")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["run"]["status"], "succeeded");
    assert_eq!(
        body["stages"].as_array().unwrap().len(),
        5,
        "the stage timeline: {body}"
    );
    assert_eq!(body["progress"]["terminal"], true);
    assert_eq!(body["result"]["items_completed"], 1, "{body}");
    let (status, body) = ask(http.get(url(&format!("/api/v1/runs/{run_id}/items")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"].as_array().unwrap().len(), 2, "{body}");
    let (status, body) =
        ask(http.get(url(&format!("/api/v1/runs/{run_id}/items?failures=true")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], json!([]), "{body}");
    let (status, body) = ask(http.get(url(&format!("/api/v1/runs/{run_id}/progress")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "succeeded", "{body}");
    // The stream of an ended run is its terminal frame alone.
    let ended = frames(http.get(url(&format!("/api/v1/runs/{run_id}/progress")))).await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["terminal"], true);
    for (bad, status_code, expected) in [
        ("/api/v1/runs/abc", StatusCode::BAD_REQUEST, "invalid_path"),
        ("/api/v1/runs/99999", StatusCode::NOT_FOUND, "unknown_run"),
        (
            "/api/v1/runs/99999/items",
            StatusCode::NOT_FOUND,
            "unknown_run",
        ),
        (
            "/api/v1/runs?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/v1/runs?repo=nowhere",
            StatusCode::NOT_FOUND,
            "unknown_repository",
        ),
        (
            "/api/v1/runs/1/items?failures=maybe",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ] {
        let (status, body) = ask(http.get(url(bad))).await;
        assert_eq!(
            (status, code(&body)),
            (status_code, expected),
            "{bad}: {body}"
        );
    }
    let (status, body) = ask(http.post(url(&format!("/api/v1/runs/{run_id}/pause")))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "wrong_state"),
        "{body}"
    );
}

#[tokio::test]
async fn tasks_and_the_queue_are_listed_and_a_finished_task_is_not_steered() {
    let ix = Indexed::new().await;
    let (http, url) = (ix.served.client(), |p: &str| ix.served.url(p));
    let run_id = ix.run_id;
    ix.reindexed().await;

    // Tasks and the queue.
    let (status, body) = ask(http.get(url(&format!("/api/v1/tasks?run={run_id}")))).await;
    assert_eq!(status, StatusCode::OK);
    let tasks = body["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 5, "{body}");
    let task = tasks[0]["job_id"].as_str().unwrap().to_string();
    let (status, body) = ask(http.get(url(&format!("/api/v1/tasks/{task}")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["task"]["run_id"], run_id);
    let (status, body) = ask(http.post(url(&format!("/api/v1/tasks/{task}/retry")))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "wrong_state"),
        "{body}"
    );
    let (status, body) = ask(http.post(url(&format!("/api/v1/tasks/{task}/cancel")))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "wrong_state"),
        "{body}"
    );
    let (status, body) = ask(http.get(url("/api/v1/tasks/no-such-task"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_task")
    );
    let (status, body) = ask(http.get(url("/api/v1/tasks?stage=parse"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query"),
        "{body}"
    );
    let (status, body) = ask(http.get(url("/api/v1/tasks?stage=sync&status=succeeded"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tasks"].as_array().unwrap().len(), 3, "{body}");
    let (status, body) = ask(http.get(url("/api/v1/queue"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body["cells"].as_array().unwrap().is_empty(), "{body}");
    assert_eq!(
        body["workers"].as_array().unwrap().len(),
        1,
        "the server's worker: {body}"
    );
}

#[tokio::test]
async fn the_audit_lists_what_the_api_did_and_refused() {
    let ix = Indexed::new().await;
    let (http, url) = (ix.served.client(), |p: &str| ix.served.url(p));
    let (run_id, repo_id) = (ix.run_id, ix.repo_id);
    // What the API did (reindexes) and refused (pausing a finished run).
    ix.reindexed().await;
    let (status, body) = ask(http.post(url(&format!("/api/v1/runs/{run_id}/pause")))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "wrong_state"),
        "{body}"
    );

    // Audit.
    let (status, body) =
        ask(http.get(url(&format!("/api/v1/audit?repo={repo_id}&since=1h")))).await;
    assert_eq!(status, StatusCode::OK);
    let entries = body["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "api" && e["action"] == "reindex"),
        "{body}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "api" && e["action"] == "pause" && e["outcome"] == "refused"),
        "refused actions are audited too: {body}"
    );
    let (status, body) = ask(http.get(url("/api/v1/audit?since=yesterday"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query"),
        "{body}"
    );
}

#[tokio::test]
async fn admin_reingest_plans_refuses_bad_requests_and_enqueues() {
    let ix = Indexed::new().await;
    let (http, url) = (ix.served.client(), |p: &str| ix.served.url(p));
    let repo_id = ix.repo_id;

    // Admin reingest: a dry run, refusals, then for real.
    let (status, body) = ask(http
        .post(url("/api/v1/admin/reingest"))
        .json(&json!({ "all": true, "languages": ["python"], "dry_run": true })))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["repository_ids"], json!([repo_id]), "{body}");
    assert_eq!(body["dry_run"], true);
    for bad in [
        json!({}),
        json!({ "all": true, "repositories": ["1"] }),
        json!({ "all": true, "languages": ["cobol"] }),
        json!({ "all": true, "batch_size": 0 }),
        json!({ "all": "yes" }),
    ] {
        let (status, body) = ask(http.post(url("/api/v1/admin/reingest")).json(&bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            matches!(code(&body), "invalid_reingest" | "invalid_body"),
            "{body}"
        );
    }
    // An id as a number, as the repositories' answers give it.
    let (status, body) = ask(http
        .post(url("/api/v1/admin/reingest"))
        .json(&json!({ "repositories": [repo_id], "batch_size": 1 })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["enqueued"], 1, "{body}");
}

#[tokio::test]
async fn unknown_routes_and_methods_and_malformed_input_are_client_errors() {
    let db = TestDb::new().await;
    let served = Served::start(&db, &["--workers", "0"], &[]);
    let (http, url) = (served.client(), |p: &str| served.url(p));

    // Unknown routes and methods.
    let (status, body) = ask(http.get(url("/api/v1/nothing"))).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "no_route"));
    let (status, body) = ask(http.delete(url("/api/v1/runs/1"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    // Input that reaches the database badly formed is the client's fault, not a 500.
    for bad in [
        "/api/v1/tasks/%00",
        "/api/v1/runs?repo=%00",
        "/api/v1/audit?since=%C3%A9",
        "/api/v1/audit?since=999999999999d",
    ] {
        let (status, body) = ask(http.get(url(bad))).await;
        assert!(status.is_client_error(), "{bad}: {status} {body}");
        code(&body);
    }
}

#[tokio::test]
async fn the_dashboard_data_lists_runs_and_repositories() {
    let ix = Indexed::new().await;
    let (http, url) = (ix.served.client(), |p: &str| ix.served.url(p));

    // The dashboard's data.
    let (status, body) = ask(http.get(url("/api/v1/dashboard"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body["runs"].as_array().unwrap().is_empty());
    assert_eq!(body["repositories"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn runs_and_tasks_are_steered_over_http() {
    let db = TestDb::new().await;
    let dir = fixture();
    // No worker: runs stay queued while they are steered.
    let served = Served::start(&db, &["--workers", "0"], &[]);
    let http = served.client();
    let url = |p: &str| served.url(p);

    let (status, body) = ask(http
        .post(url("/api/v1/repositories"))
        .json(&json!({ "source": path_str(dir.path()) })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let repo_id = body["repository"]["id"].as_i64().unwrap();
    let first_run = body["enqueued"]["run_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{body}"));

    for (action, expected) in [
        ("pause", "paused"),
        ("resume", "queued"),
        ("cancel", "cancelled"),
    ] {
        let (status, body) =
            ask(http.post(url(&format!("/api/v1/runs/{first_run}/{action}")))).await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        assert_eq!(body["run"]["status"], expected, "{action}: {body}");
        if action == "pause" {
            // A stream joining the paused run starts where it is, at once.
            let mut stream = http
                .get(url(&format!("/api/v1/runs/{first_run}/progress")))
                .header("accept", "application/x-ndjson")
                .send()
                .await
                .unwrap();
            let chunk = stream.chunk().await.unwrap().expect("a first frame");
            let first: Value =
                serde_json::from_slice(chunk.split(|b| *b == b'\n').next().unwrap()).unwrap();
            assert_eq!(first["status"], "paused", "{first}");
            assert_eq!(first["terminal"], false, "{first}");
        }
    }
    let (status, body) = ask(http.post(url(&format!("/api/v1/runs/{first_run}/resume")))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "wrong_state"),
        "{body}"
    );
    let (status, body) = ask(http.post(url("/api/v1/runs/424242/cancel"))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "unknown_run")
    );

    // A reindex answers at once with what it queued.
    let (status, queued) = ask(http
        .post(url(&format!("/api/v1/repositories/{repo_id}/reindex")))
        .json(&json!({ "priority": "low" })))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(queued["priority"], "low", "{queued}");
    let run_id = queued["run_id"].as_i64().unwrap();

    // Cancel its SYNC task, then retry it.
    let (_, body) = ask(http.get(url(&format!("/api/v1/tasks?run={run_id}&stage=sync")))).await;
    let task = body["tasks"][0]["job_id"].as_str().unwrap().to_string();
    let (status, body) = ask(http.post(url(&format!("/api/v1/tasks/{task}/cancel")))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["task"]["stage_status"], "cancelled", "{body}");
    let (status, body) = ask(http.post(url(&format!("/api/v1/tasks/{task}/retry")))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["task"]["stage_status"], "queued", "{body}");
    let (_, audit) = ask(http.get(url("/api/v1/audit"))).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "api")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "pause",
        "resume",
        "cancel",
        "reindex",
        "cancel_task",
        "retry_task",
    ] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes_and_every_answer_its_schema() {
    let db = TestDb::new().await;
    // Data to answer with: a repository, an ended run and its tasks.
    let dir = fixture();
    let r = trawl_in(&db, &["index", &path_str(dir.path()), "--wait"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let served = Served::start(&db, &["--workers", "0"], &[]);
    let http = served.client();
    let (status, doc) = ask(http.get(served.url("/api/v1/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let (_, tasks) = ask(http.get(served.url("/api/v1/tasks?run=1"))).await;
    let task = tasks["tasks"][0]["job_id"].as_str().unwrap().to_string();
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    let mut checked = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            // Path parameters are declared, run ids as integers.
            for name in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            {
                let declared = operation["parameters"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["name"] == name && p["in"] == "path"))
                    .unwrap_or_else(|| panic!("{method} {path} declares {name}"));
                let kind = if matches!(name, "run" | "pipeline_run") {
                    "integer"
                } else {
                    "string"
                };
                assert_eq!(declared["schema"]["type"], kind, "{method} {path} {name}");
            }
            // Every error it may answer is documented with the error schema.
            let responses = operation["responses"].as_object().unwrap();
            for status in ["400", "403", "404", "405", "503"] {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path} {status}"
                );
            }
            if operation.get("requestBody").is_some() {
                assert!(responses.contains_key("413") && responses.contains_key("415"));
            }
            // The server answers it (not an unknown route, not a wrong method, never a
            // 5xx), and what it answers is what the document says for that status.
            let concrete = path
                .replace("{repository}", "1")
                .replace("{run}", "1")
                .replace("{pipeline_run}", "1")
                .replace("{task}", &task);
            let request = match method.as_str() {
                "get" => http.get(served.url(&concrete)),
                "post" => http.post(served.url(&concrete)).json(&json!({})),
                // A dry run: the data stays for the other routes.
                "delete" => http.delete(served.url(&format!("{concrete}?dry_run=true"))),
                other => panic!("unexpected method {other}"),
            };
            let response = request.send().await.unwrap();
            let status = response.status();
            let media = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .to_string();
            let text = response.text().await.unwrap();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !status.is_server_error(),
                "{method} {path}: {status} {text}"
            );
            let answer = &responses
                .get(status.as_str())
                .unwrap_or_else(|| panic!("{method} {path} answered an undocumented {status}"));
            let schema =
                answer["content"].get(&media).unwrap_or_else(|| {
                    panic!("{method} {path} {status}: {media} is not documented")
                })["schema"]
                    .clone();
            if media == "application/json" {
                let body: Value = serde_json::from_str(&text).unwrap();
                assert_ne!(body["error"]["code"], "no_route", "{method} {path}");
                let wrong = schema::violations(&doc, &schema, &body);
                assert!(
                    wrong.is_empty(),
                    "{method} {path} {status}: {wrong:#?}\n{body}"
                );
            }
            checked.push(format!("{method} {path} {}", status.as_u16()));
        }
    }
    assert!(operations >= 20, "{operations} operations documented");
    // The answers checked include real data, not only refusals.
    for answer in [
        "get /api/v1/repositories 200",
        "get /api/v1/runs/{run} 200",
        "get /api/v1/tasks/{task} 200",
        "get /api/v1/dashboard 200",
        "get /api/v1/pipelines 200",
        "delete /api/v1/repositories/{repository} 200",
        "post /api/v1/repositories/{repository}/reindex 202",
    ] {
        assert!(
            checked.iter().any(|c| c == answer),
            "{answer}: {checked:#?}"
        );
    }
    // The references answers with data (index --wait worked the references pipeline),
    // checked against their schemas too.
    for (path, query) in [
        ("/api/v1/references/callers", "symbol=call"),
        ("/api/v1/references/callees", "symbol=retry_with_backoff"),
        ("/api/v1/references", "symbol=open&kind=call"),
    ] {
        let (status, answer) = ask(http.get(served.url(&format!("{path}?{query}")))).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        assert!(
            answer.to_string().contains("net.py") || answer.to_string().contains("config.py"),
            "{path}: {answer}"
        );
        let schema =
            &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        let wrong = schema::violations(&doc, schema, &answer);
        assert!(wrong.is_empty(), "{path}: {wrong:#?}");
    }
    let (status, refused) =
        ask(http.get(served.url("/api/v1/references?symbol=x&limit=5000"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit 5000"),
        "{refused}"
    );
    assert_eq!(refused["error"]["code"], "invalid_query", "{refused}");
    let long = "x".repeat(trawl::search::MAX_QUERY_CHARS + 1);
    let (status, refused) = ask(http.get(served.url(&format!("/api/v1/commits?q={long}")))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_query", "{refused}");
    // Hostile input to the pipelines' and the removal's routes: refused, nothing read or
    // deleted outside what trawl indexed.
    let huge = "a".repeat(10_000);
    let (status, refused) =
        ask(http.get(served.url(&format!("/api/v1/references?symbol={huge}")))).await;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::BAD_REQUEST, "invalid_symbol"),
        "{refused}"
    );
    let (status, refused) =
        ask(http.get(served.url("/api/v1/history?path=..%2F..%2F..%2Fetc%2Fpasswd"))).await;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::NOT_FOUND, "unknown_file"),
        "{refused}"
    );
    assert!(!refused.to_string().contains("root:"), "{refused}");
    let (status, refused) = ask(http.delete(served.url("/api/v1/repositories/%2Fetc"))).await;
    assert_eq!(
        (status, code(&refused)),
        (StatusCode::NOT_FOUND, "unknown_repository"),
        "{refused}"
    );
    let (status, refused) =
        ask(http.delete(served.url("/api/v1/repositories/1?dry_run=maybe"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, kept) = ask(http.get(served.url("/api/v1/repositories/1"))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a refused removal removes nothing: {kept}"
    );
    // A search with hits, checked against its schema too.
    let (status, found) = ask(http.get(served.url("/api/v1/search?q=parse+config&limit=3"))).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert!(!found["hits"].as_array().unwrap().is_empty(), "{found}");
    let schema = &doc["paths"]["/api/v1/search"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    let wrong = schema::violations(&doc, schema, &found);
    assert!(wrong.is_empty(), "{wrong:#?}");
    // A query of words the model does not know has no semantic hits (its vector is zero,
    // near nothing), and says so; it once answered every snippet with a null score.
    let (status, found) =
        ask(http.get(served.url("/api/v1/search?q=%EB%AA%99&mode=semantic"))).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["hits"], json!([]), "{found}");
    assert!(
        found["warnings"][0]
            .as_str()
            .unwrap()
            .contains("knows none"),
        "{found}"
    );
    assert!(schema::violations(&doc, schema, &found).is_empty());

    // The document and the handlers agree on what is refused.
    for (request, code_wanted) in [
        (http.get(served.url("/api/v1/runs/abc")), "invalid_path"),
        (
            http.get(served.url("/api/v1/search?q=x&mode=")),
            "invalid_query",
        ),
        (
            http.get(served.url("/api/v1/runs?status=")),
            "invalid_query",
        ),
        (
            http.get(served.url("/api/v1/tasks?status=sleeping")),
            "invalid_query",
        ),
        (http.get(served.url("/api/v1/tasks/a%00b")), "invalid_path"),
        (
            http.get(served.url("/api/v1/runs?repo=a%00b")),
            "invalid_query",
        ),
        (
            http.post(served.url("/api/v1/repositories/1/reindex"))
                .json(&json!([])),
            "invalid_body",
        ),
        (
            http.post(served.url("/api/v1/repositories/1/reindex"))
                .json(&json!(["project"])),
            "invalid_body",
        ),
    ] {
        let (status, body) = ask(request).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, code_wanted),
            "{body}"
        );
    }
    // A reindex may leave its body out: the defaults (project, normal, incremental).
    let (status, body) = ask(http.post(served.url("/api/v1/repositories/1/reindex"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["scope"]["kind"], "project", "{body}");
    // A body of the wrong type is a documented 415, one over the limit a documented 413.
    let (status, body) = ask(http
        .post(served.url("/api/v1/search"))
        .header("content-type", "text/plain")
        .body("query=x"))
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_body")
    );
    // (On a connection of its own: the server closes it without reading the rest.)
    let (status, body) = ask(served
        .client()
        .post(served.url("/api/v1/search"))
        .header("content-type", "application/json")
        .body(format!("{{\"query\": \"{}\"}}", "x".repeat(3 << 20))))
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "invalid_body")
    );

    // What is not documented is not served.
    for (method, path) in [
        ("DELETE", "/api/v1/runs/1"),
        ("PUT", "/api/v1/search"),
        ("GET", "/api/v2/runs"),
    ] {
        let response = http
            .request(method.parse().unwrap(), served.url(path))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(
                response.status(),
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ),
            "{method} {path}: {}",
            response.status()
        );
        let documented = paths
            .get(path)
            .is_some_and(|item| item.get(method.to_lowercase()).is_some());
        assert!(!documented, "{method} {path}");
    }
}

/// The value of one metric series (`name{labels}`), or None when absent.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_are_present_and_change_after_a_run() {
    let db = TestDb::new().await;
    let dir = fixture();
    let served = Served::start(&db, &["--workers", "2"], &[]);
    let http = served.client();
    let scrape = async || {
        let response = http.get(served.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        response.text().await.unwrap()
    };
    let before = scrape().await;
    for name in [
        "trawl_queue_depth",
        "trawl_stage_duration_seconds",
        "trawl_stage_attempts",
        "trawl_stage_failures",
        "trawl_items_processed",
        "trawl_embeddings_per_second",
        "trawl_search_duration_seconds",
        "trawl_http_request_duration_seconds",
    ] {
        assert!(
            before.contains(&format!("# TYPE {name} ")),
            "{name} declared"
        );
    }
    assert_eq!(metric(&before, "trawl_embeddings_per_second"), Some(0.0));
    // The server's worker registers a moment after the server listens.
    poll_until(
        std::time::Duration::from_secs(30),
        "the server's worker to be counted",
        async |seen| {
            let workers = metric(&scrape().await, "trawl_workers");
            *seen = format!("trawl_workers {workers:?}");
            (workers == Some(1.0)).then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(
            &before,
            "trawl_stage_duration_seconds_count{stage=\"sync\"}"
        ),
        None
    );

    let stream = frames(
        http.post(served.url("/api/v1/repositories"))
            .json(&json!({ "source": path_str(dir.path()) })),
    )
    .await;
    check_stream(&stream, "succeeded");
    let (status, _) = ask(http.get(served.url("/api/v1/search?q=parse+config&mode=keyword"))).await;
    assert_eq!(status, StatusCode::OK);

    let after = scrape().await;
    assert_eq!(
        metric(&after, "trawl_stage_duration_seconds_count{stage=\"sync\"}"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        metric(&after, "trawl_runs{status=\"succeeded\"}"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        metric(&after, "trawl_stage_attempts{stage=\"extract\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&after, "trawl_items_processed{stage=\"extract\"}"),
        Some(2.0),
        "{after}"
    );
    assert!(
        !after.contains("trawl_queue_depth{"),
        "nothing waits or runs: {after}"
    );
    assert!(
        metric(&after, "trawl_embeddings_per_second").unwrap() > 0.0,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "trawl_search_duration_seconds_count{mode=\"keyword\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        after.contains("trawl_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/search\",status=\"200\"} 1"),
        "{after}"
    );
}

#[tokio::test]
async fn serve_runs_the_scheduler_and_its_worker() {
    let db = TestDb::new().await;
    let dir = fixture();
    let served = Served::start_with(
        &db,
        &["--workers", "1"],
        &[("TRAWL_SCHEDULE_EVERY_SECS", "1")],
    );
    let http = served.client();
    let stream = frames(
        http.post(served.url("/api/v1/repositories"))
            .json(&json!({ "source": path_str(dir.path()) })),
    )
    .await;
    check_stream(&stream, "succeeded");
    // The scheduler finds the repository due again and enqueues a background sync, which
    // the server's worker runs.
    poll_until(
        std::time::Duration::from_secs(60),
        "a background run to succeed",
        async |seen| {
            let (_, body) = ask(http.get(served.url("/api/v1/runs?status=succeeded"))).await;
            let background = body["runs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["trigger"] == "background");
            *seen = format!("{body}\n{}", served.log());
            background.then_some(())
        },
    )
    .await;
}
