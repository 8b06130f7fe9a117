//! The operator dashboard end to end in headless Chromium (Debian's `chromium`, installed
//! by the test support when missing): it loads with the token, shows a run progressing,
//! shows a failed task, and a click on Retry re-queues it.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::browser::Browser;
use crate::support::server::{Served, TOKEN};
use crate::support::{
    GATE, Gate, KillOnDrop, TestDb, gate_fault, path_str, spawn_worker, trawl_cmd,
};

const WAIT: Duration = Duration::from_secs(60);

/// The server's /metrics text.
async fn metrics_of(served: &Served) -> String {
    served
        .client()
        .get(served.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_dashboard_shows_a_run_progressing_and_retry_requeues_a_failed_task() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        std::fs::write(
            dir.path().join(format!("m{i}.py")),
            format!("def f{i}():\n    return {i}\n"),
        )
        .unwrap();
    }
    // The server runs no worker; a worker process with faults does: SYNC waits at a gate
    // (so the page can show it at work, for as long as that takes) and EXTRACT fails for
    // good.
    let served = Served::start(&db, &["--workers", "0"], &[]);
    let gate = Gate::hold(&db, GATE).await;
    let faulty = trawl_cmd()
        .envs(db.env())
        .env(
            "TRAWL_TEST_FAULTS",
            format!("{};extract:permanent:1", gate_fault("sync", GATE)),
        )
        .env("TRAWL_POLL_INTERVAL_MS", "100")
        .args(["worker", "--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut faulty = KillOnDrop::new(faulty);

    let browser = Browser::launch().await.expect("headless Chromium starts");
    let page = browser.page().await.unwrap();
    page.goto(&served.url(&format!("/?token={TOKEN}")))
        .await
        .unwrap();
    page.wait_for(
        "document.getElementById('status').textContent.startsWith('updated')",
        WAIT,
    )
    .await
    .expect("the dashboard loads its data");
    let href = page.eval("location.href").await.unwrap();
    assert!(
        !href.as_str().unwrap().contains("token"),
        "the token is taken out of the address bar: {href}"
    );
    let sections = page
        .eval("[...document.querySelectorAll('section h2')].map(h => h.textContent)")
        .await
        .unwrap();
    for section in [
        "Queue depth",
        "Running stages",
        "Failed tasks",
        "Recent runs",
        "Repositories",
        "Pipelines",
    ] {
        assert!(
            sections.to_string().contains(section),
            "{section}: {sections}"
        );
    }

    let queued: Value = served
        .client()
        .post(served.url("/api/v1/repositories"))
        .json(&json!({ "source": path_str(dir.path()) }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = queued["enqueued"]["run_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{queued}"));

    // The run at work: its row says running, SYNC is in the running stages with a progress
    // bar, and the run's timeline shows SYNC running.
    let at_work = format!(
        "(() => {{
            const row = document.querySelector('#runs tr[data-run=\"{run}\"]');
            const running = [...document.querySelectorAll('#running tr[data-task]')]
                .some(r => r.textContent.includes('run {run}') && r.textContent.includes('sync') && r.querySelector('.bar'));
            return !!row && row.querySelector('.run-status').textContent.trim() === 'running'
                && !!row.querySelector('.timeline span.s-running') && running;
        }})()"
    );
    page.wait_for(&at_work, WAIT)
        .await
        .expect("the page shows the run at work");
    gate.release().await;

    // Then EXTRACT fails: the failed task shows with its error and a Retry button.
    let failed = format!(
        "(() => {{
            const row = [...document.querySelectorAll('#failed tr[data-task]')]
                .find(r => r.textContent.includes('run {run}') && r.textContent.includes('extract'));
            return !!row && !!row.querySelector('button.retry') && row.querySelector('.error-text').textContent.length > 0;
        }})()"
    );
    page.wait_for(&failed, WAIT)
        .await
        .expect("the page shows the failed task");
    let run_row_failed = format!(
        "document.querySelector('#runs tr[data-run=\"{run}\"] .run-status').textContent.trim() === 'failed'"
    );
    page.wait_for(&run_row_failed, WAIT).await.unwrap();
    // A task failed for good is a failure, not queue depth.
    let metrics = metrics_of(&served).await;
    assert!(
        !metrics.contains("trawl_queue_depth{stage=\"extract\",status=\"failed\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("trawl_stage_failures{stage=\"extract\"} 1"),
        "{metrics}"
    );

    // Swap the faulty worker for a sound one, then click Retry.
    faulty.stop();
    let ctx = trawl::pipeline::PipelineContext::new(db.store.clone(), db.config());
    let (stop, worker) = spawn_worker(ctx, 2);
    page.click("#failed button.retry").await.unwrap();

    // The task was re-queued and the run goes on to succeed; the page follows it.
    let succeeded = format!(
        "document.querySelector('#runs tr[data-run=\"{run}\"] .run-status')?.textContent.trim() === 'succeeded'"
    );
    page.wait_for(&succeeded, WAIT)
        .await
        .expect("the retried run succeeds on the page");
    // The last hour: the run's five stage jobs and the run itself ended in it.
    page.wait_for(
        "Number(document.querySelector('#hour .t-stages')?.textContent) >= 5 && Number(document.querySelector('#hour .t-runs')?.textContent) >= 1 && document.querySelectorAll('#hour svg rect').length === 180",
        WAIT,
    )
    .await
    .expect("the last hour's chart counts the run");
    // The run's page: its five stages on a time line with durations and items, no failed
    // file, and the reports its stages made.
    page.click(&format!("#runs tr[data-run=\"{run}\"] a.run-link"))
        .await
        .unwrap();
    page.wait_for(
        &format!(
            "(() => {{
                const p = document.getElementById('run-page');
                return !p.hidden && p.querySelector('.run-title').textContent.startsWith('{run} ')
                    && p.querySelectorAll('.stage-row').length === 5
                    && [...p.querySelectorAll('.stage-row .took')].every(t => t.textContent.endsWith(' s'))
                    && p.querySelectorAll('.stage-row .track span.s-succeeded').length === 5
                    && !!p.querySelector('.no-failures')
                    && p.querySelectorAll('tr.report').length > 0;
            }})()"
        ),
        WAIT,
    )
    .await
    .expect("the run's page shows its stages, failures and reports");
    page.click("#run-page a.close").await.unwrap();
    page.wait_for("document.getElementById('run-page').hidden", WAIT)
        .await
        .expect("the run's page closes");
    // The repository's freshness against the disk (its files, whose EXTRACT failed once,
    // are marked to be read again by the next sync: they count as changed), then a file
    // added on disk is counted.
    page.wait_for(
        "[...document.querySelectorAll('#repositories tr[data-repository] .freshness')].some(c => c.textContent.includes('0 added'))",
        WAIT,
    )
    .await
    .expect("the repository shows its freshness");
    std::fs::write(dir.path().join("new.py"), "def new():\n    return 0\n").unwrap();
    page.wait_for(
        "[...document.querySelectorAll('#repositories .freshness')].some(c => c.textContent.includes('1 added'))",
        WAIT,
    )
    .await
    .expect("the repository shows the file added on disk");
    page.wait_for(
        "document.querySelectorAll('#failed tr[data-task]').length === 0",
        WAIT,
    )
    .await
    .expect("no failed task is left");
    // What is over is one line of totals, not rows pushing the rest down; the failed
    // tasks' panel comes first.
    page.wait_for(
        "(() => {
            const ended = document.querySelector('#queue .ended');
            const rows = [...document.querySelectorAll('#queue td')].some(td => td.textContent.trim() === 'succeeded');
            return !!ended && ended.textContent.includes('succeeded') && !rows
                && document.querySelector('section:not([hidden])').id === 'failed';
        })()",
        WAIT,
    )
    .await
    .expect("ended tasks are summed up");
    let retried: (String, i64) = sqlx::query_as(
        "SELECT actor, run_id FROM audit_log WHERE action = 'retry_task' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        retried,
        ("api".to_string(), run),
        "the click went through the API"
    );
    let extract: (String, i32) = sqlx::query_as(
        "SELECT status, attempts FROM stage_runs WHERE run_id = $1 AND stage = 'extract'",
    )
    .bind(run)
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(extract.0, "succeeded");

    // The run's events fed the references pipeline: its run shows, succeeded.
    page.wait_for(
        "(() => {
            const row = document.querySelector('#pipelines tr[data-pipeline=\"references\"]');
            const run = [...document.querySelectorAll('#pipelines tr[data-pipeline-run]')]
                .some(r => r.textContent.includes('references') && r.querySelector('.pipeline-status').textContent.trim() === 'success');
            return !!row && row.querySelector('.lag').textContent === 'up to date' && run;
        })()",
        WAIT,
    )
    .await
    .expect("the page shows the references run");
    // And /metrics counts it, per pipeline.
    let metrics = metrics_of(&served).await;
    let success = metrics
        .lines()
        .find(|l| l.starts_with("trawl_pipeline_runs{pipeline=\"references\",status=\"success\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_ne!(success.rsplit(' ').next(), Some("0"), "{success}");
    assert!(
        metrics.contains("trawl_pipeline_lag_versions{pipeline=\"references\"} 0"),
        "{metrics}"
    );
    let _ = stop.send(());
    worker.await.unwrap();

    // With no worker, a reingest of the pipeline stays pending: Cancel, then Retry.
    let repo = db.store.run(run).await.unwrap().repository_id;
    let asked = trawl_cmd()
        .envs(db.env())
        .args([
            "reingest",
            "--pipelines",
            "references",
            "--repo",
            &repo.to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        asked.status.success(),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    let asked: Value = serde_json::from_slice(&asked.stdout).unwrap();
    let id = asked["pipeline_run_ids"][0]
        .as_i64()
        .unwrap_or_else(|| panic!("{asked}"));
    let status_is = |status: &str| {
        format!(
            "document.querySelector('#pipelines tr[data-pipeline-run=\"{id}\"] .pipeline-status')?.textContent.trim() === '{status}'"
        )
    };
    page.wait_for(&status_is("pending"), WAIT)
        .await
        .expect("the pending pipeline run shows");
    page.click(&format!(
        "#pipelines tr[data-pipeline-run=\"{id}\"] button.cancel-pipeline"
    ))
    .await
    .unwrap();
    page.wait_for(&status_is("cancelled"), WAIT)
        .await
        .expect("Cancel cancels it");
    page.click(&format!(
        "#pipelines tr[data-pipeline-run=\"{id}\"] button.retry-pipeline"
    ))
    .await
    .unwrap();
    page.wait_for(&status_is("pending"), WAIT)
        .await
        .expect("Retry makes it pending again");
    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT actor, action FROM audit_log WHERE action IN ('cancel_pipeline_run', 'retry_pipeline_run') ORDER BY id",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            ("api".to_string(), "cancel_pipeline_run".to_string()),
            ("api".to_string(), "retry_pipeline_run".to_string())
        ],
        "the clicks went through the API, audited"
    );
}
