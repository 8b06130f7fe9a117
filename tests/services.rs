//! The services every adapter calls: one resolution of a repository selector and one
//! search request, refused the same way from the CLI and over HTTP.

use trawl::service::repositories::{self, RepositoryError};
use trawl::service::search::{SearchRequest, SearchRequestError, query_of};

use crate::support::server::{Served, TOKEN};
use crate::support::{TestDb, assert_refused, trawl_in};

/// The same URL registered at two refs is two repositories: the URL alone is ambiguous and
/// refused with both listed; `url@ref` or an id names one.
#[tokio::test]
async fn an_ambiguous_selector_is_refused_with_its_candidates() {
    let db = TestDb::new().await;
    let store = &db.store;
    let url = "https://example.com/org/lib.git";
    let main = store
        .register_repository("git", url, "main", "lib")
        .await
        .unwrap();
    let dev = store
        .register_repository("git", url, "dev", "lib")
        .await
        .unwrap();
    let solo = store
        .register_repository("directory", "/srv/solo", "", "solo")
        .await
        .unwrap();

    let err = repositories::resolve(store, url).await.unwrap_err();
    let RepositoryError::Ambiguous { candidates, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        candidates,
        &[
            format!("id {}: {url}@dev", dev.id),
            format!("id {}: {url}@main", main.id)
        ]
    );
    assert!(
        err.to_string()
            .contains("give one of them by id or as source@ref"),
        "{err}"
    );
    assert_eq!(
        repositories::resolve(store, &format!("{url}@main"))
            .await
            .unwrap()
            .id,
        main.id
    );
    assert_eq!(
        repositories::resolve(store, &dev.id.to_string())
            .await
            .unwrap()
            .id,
        dev.id
    );
    assert_eq!(
        repositories::resolve(store, "/srv/solo").await.unwrap().id,
        solo.id
    );
    assert!(matches!(
        repositories::resolve(store, "/srv/none").await,
        Err(RepositoryError::Unknown { .. })
    ));

    // The CLI says the same, and where to look.
    let r = trawl_in(&db, &["search", "anything", "--repo", url]);
    assert_refused(&r, "names 2 repositories");
    let r = trawl_in(&db, &["search", "anything", "--repo", "/srv/none"]);
    assert_refused(&r, "no repository /srv/none");
    assert!(r.stderr.contains("trawl status"), "{}", r.stderr);
}

/// A misspelt language or kind matched nothing, silently: it is refused, naming the valid
/// ones, by the service and so by the CLI and the API.
#[tokio::test]
async fn unknown_languages_and_kinds_are_refused_everywhere() {
    let db = TestDb::new().await;
    let request = |languages: &[&str], kinds: &[&str]| SearchRequest {
        query: "parse".into(),
        languages: languages.iter().map(|s| s.to_string()).collect(),
        kinds: kinds.iter().map(|s| s.to_string()).collect(),
        ..SearchRequest::default()
    };
    let q = query_of(&db.store, request(&["Rust"], &["Function"]))
        .await
        .unwrap();
    assert_eq!(
        (q.languages, q.kinds),
        (vec!["rust".into()], vec!["function".into()])
    );
    let err = query_of(&db.store, request(&["rustt"], &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SearchRequestError::UnknownLanguage { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("rust, python"), "{err}");
    let err = query_of(&db.store, request(&[], &["klass"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("klass") && err.to_string().contains("class"),
        "{err}"
    );
    let err = query_of(
        &db.store,
        SearchRequest {
            limit: Some(0),
            ..request(&[], &[])
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SearchRequestError::Limit(0)), "{err}");

    crate::support::assert_usage(
        &trawl_in(&db, &["search", "x", "--lang", "rustt"]),
        "unknown language rustt",
    );
    crate::support::assert_usage(
        &trawl_in(&db, &["search", "x", "--kind", "klass"]),
        "unknown kind klass",
    );

    let served = Served::start(&db, &["--workers", "0"], &[]);
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/search?q=x&kind=klass", served.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown kind klass"),
        "{body}"
    );
}

/// A task filter of an unknown status matched nothing, silently: it is refused, listing
/// the statuses (stage and job ones) it takes; any case of a known one is taken.
#[tokio::test]
async fn tasks_list_refuses_an_unknown_status() {
    let db = TestDb::new().await;
    let r = trawl_in(&db, &["tasks", "list", "--status", "bogus"]);
    assert_refused(&r, "unknown status \"bogus\"");
    assert!(
        r.stderr.contains("skipped") && r.stderr.contains("killed"),
        "{}",
        r.stderr
    );
    for ok in ["Pending", "skipped", "QUEUED"] {
        let r = trawl_in(&db, &["tasks", "list", "--status", ok, "--json"]);
        assert_eq!(r.code, 0, "{ok}: {}", r.stderr);
    }
}

/// A pool smaller than a worker's slots need starved claims and heartbeats, and the run
/// never ended: the worker's pool is sized to its slots, and the run ends.
#[tokio::test]
async fn a_worker_with_a_tiny_pool_still_finishes_its_run() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..12 {
        std::fs::write(
            dir.path().join(format!("m{i}.py")),
            format!("def f{i}(x):\n    return x + {i}\n"),
        )
        .unwrap();
    }
    let mut cmd = crate::support::trawl_cmd();
    cmd.envs(db.env())
        .env("TRAWL_DATABASE_MAX_CONNECTIONS", "2")
        .env("TRAWL_WORKER_CONCURRENCY", "8")
        .args(["index", dir.path().to_str().unwrap(), "--wait"]);
    let r = crate::support::run(&mut cmd);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("succeeded"), "{}", r.stdout);
    assert!(
        r.stderr.contains("too few for worker.concurrency"),
        "the raise is said: {}",
        r.stderr
    );
    let snippets: i64 = sqlx::query_scalar("SELECT count(*) FROM snippets")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(snippets, 12);
}
