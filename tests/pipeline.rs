//! The pipeline's mechanics against the real queue: order, retries, failures, priorities,
//! pile-up rules, bad payloads.

use std::sync::Arc;
use std::time::Duration;

use trawl::domain::{PriorityClass, Trigger};
use trawl::pipeline::PipelineContext;
use trawl::pipeline::faults::Faults;
use trawl::store::lifecycle::STAGE_QUEUE;
use trawl::store::runs::{Enqueued, NewRun, Run, StageRun};

use crate::support::{TestDb, assert_refused, poll_until, run, spawn_worker, trawl_cmd, trawl_in};

/// A small repository on disk.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("src/lib.rs"),
        "/// Adds.\npub fn add(a: i32, b: i32) -> i32 { a + b }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tool.py"),
        "def main():\n    \"\"\"Entry.\"\"\"\n    print('hi')\n",
    )
    .unwrap();
    dir
}

fn fast_config(db: &TestDb) -> trawl::config::Config {
    let mut c = db.config();
    c.worker.backoff_base_ms = 200;
    c.worker.backoff_max_ms = 2_000;
    c.worker.poll_interval_ms = 50;
    c.worker.shutdown_timeout_secs = 5;
    c
}

async fn wait_finished(ctx: &PipelineContext, run_id: i64, secs: u64) -> (Run, Vec<StageRun>) {
    poll_until(
        Duration::from_secs(secs),
        &format!("run {run_id} to finish"),
        async |seen| {
            let run = ctx.store.run(run_id).await.unwrap();
            let stages = ctx.store.stage_runs(run_id).await.unwrap();
            if run.status.is_finished() {
                return Some((run, stages));
            }
            *seen = format!("{stages:?}");
            None
        },
    )
    .await
}

async fn repo(ctx: &PipelineContext, dir: &std::path::Path) -> i64 {
    let path = std::fs::canonicalize(dir).unwrap();
    ctx.store
        .register_repository("directory", &path.to_string_lossy(), "", "fixture")
        .await
        .unwrap()
        .id
}

fn new_run(repository_id: i64, trigger: Trigger) -> NewRun {
    NewRun {
        repository_id,
        trigger,
        origin: "test".into(),
        priority: PriorityClass::default_for(trigger),
        scope: trawl::domain::scope::Scope::Project,
        full: false,
        max_attempts: [5; 5],
        settings: None,
    }
}

async fn job_row(ctx: &PipelineContext, job_id: &str) -> (String, i32, i32) {
    sqlx::query_as("SELECT status, attempts, priority FROM apalis.jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(ctx.store.pool())
        .await
        .unwrap()
}

/// Enqueues one user run of a fresh fixture and works it with one in-process worker under
/// `faults`; returns the context (its database stays alive with `db`) and the ended run.
async fn work_one_run(db: &TestDb, faults: &str) -> (Arc<PipelineContext>, Run, Vec<StageRun>) {
    let ctx =
        PipelineContext::with_faults(db.store.clone(), fast_config(db), Faults::parse(faults));
    let dir = fixture();
    let id = ctx
        .store
        .enqueue_run(&new_run(repo(&ctx, dir.path()).await, Trigger::User))
        .await
        .unwrap()
        .run_id();
    let (stop, handle) = spawn_worker(ctx.clone(), 1);
    let (run, stages) = wait_finished(&ctx, id, 60).await;
    stop.send(()).unwrap();
    handle.await.unwrap();
    (ctx, run, stages)
}

#[tokio::test]
async fn a_run_goes_through_five_stages_in_order_and_an_unchanged_repo_is_up_to_date() {
    let db = TestDb::new().await;
    let ctx = PipelineContext::with_faults(db.store.clone(), fast_config(&db), Faults::default());
    let dir = fixture();
    let requested = trawl::service::index::index(
        &ctx.store,
        &ctx.config,
        dir.path().to_str().unwrap(),
        "",
        "test",
        trawl::service::index::SourceAccess::Local,
    )
    .await
    .unwrap();
    let id = requested.enqueued.run_id();

    // All five jobs are in the task table at once; only SYNC may run.
    let stages = ctx.store.stage_runs(id).await.unwrap();
    let statuses: Vec<&str> = stages.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["queued", "waiting", "waiting", "waiting", "waiting"]
    );
    let priorities: Vec<i32> =
        futures::future::join_all(stages.iter().map(|s| job_row(&ctx, &s.job_id)))
            .await
            .iter()
            .map(|j| j.2)
            .collect();
    assert_eq!(priorities, [90, 80, 70, 60, 50]);

    let (stop, handle) = spawn_worker(ctx.clone(), 2);
    let (run_done, stages) = wait_finished(&ctx, id, 60).await;
    assert_eq!(run_done.status, "succeeded", "{run_done:?}");
    for pair in stages.windows(2) {
        assert_eq!(pair[0].status, "succeeded");
        assert!(
            pair[1].started_at.unwrap() >= pair[0].finished_at.unwrap(),
            "{} started before {} finished",
            pair[1].stage,
            pair[0].stage
        );
    }
    for s in &stages {
        assert_eq!(s.attempts, 1, "{}", s.stage);
        assert_eq!(job_row(&ctx, &s.job_id).await.0, "Done");
    }
    assert_eq!(run_done.result["sync"]["added"], 2);

    // Nothing changed: SYNC ends the run as up to date and the rest are skipped.
    let again = trawl::service::index::index(
        &ctx.store,
        &ctx.config,
        dir.path().to_str().unwrap(),
        "",
        "test",
        trawl::service::index::SourceAccess::Local,
    )
    .await
    .unwrap();
    assert_eq!(
        again.repository.id, requested.repository.id,
        "one repository per source"
    );
    let (run2, stages2) = wait_finished(&ctx, again.enqueued.run_id(), 60).await;
    assert_eq!(run2.status, "succeeded");
    assert_eq!(run2.result["up_to_date"], true);
    let statuses: Vec<&str> = stages2.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["succeeded", "skipped", "skipped", "skipped", "skipped"]
    );

    // An edit is seen.
    std::fs::write(dir.path().join("tool.py"), "def main():\n    return 2\n").unwrap();
    let third = trawl::service::index::index(
        &ctx.store,
        &ctx.config,
        dir.path().to_str().unwrap(),
        "",
        "test",
        trawl::service::index::SourceAccess::Local,
    )
    .await
    .unwrap();
    let (run3, _) = wait_finished(&ctx, third.enqueued.run_id(), 60).await;
    assert_eq!(
        (
            run3.result["sync"]["modified"].as_i64(),
            run3.result["sync"]["added"].as_i64()
        ),
        (Some(1), Some(0))
    );
    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_stage_failing_twice_is_retried_on_its_own_with_backoff() {
    let db = TestDb::new().await;
    let (ctx, run_done, stages) = work_one_run(&db, "extract:retryable:2").await;
    assert_eq!(run_done.status, "succeeded", "{run_done:?}");
    assert_eq!(stages[0].attempts, 1, "SYNC ran once");
    assert_eq!(
        stages[1].attempts, 3,
        "EXTRACT failed twice, then succeeded"
    );
    assert_eq!(
        job_row(&ctx, &stages[1].job_id).await.1,
        3,
        "the job's attempts count all three"
    );
    // Two backoffs of at least 100 ms and 200 ms (base 200 ms, jitter from 0.5).
    let spent = stages[1].finished_at.unwrap() - stages[1].started_at.unwrap();
    assert!(
        spent >= chrono::Duration::milliseconds(300),
        "retries were not spaced: {spent}"
    );
    assert!(
        stages[2..]
            .iter()
            .all(|s| s.attempts == 1 && s.status == "succeeded")
    );
}

#[tokio::test]
async fn a_permanent_failure_fails_the_run_and_cancels_later_stages() {
    let db = TestDb::new().await;
    let (ctx, run_done, stages) = work_one_run(&db, "code_embeddings:permanent:1").await;
    assert_eq!(run_done.status, "failed");
    assert!(
        run_done
            .error
            .as_deref()
            .unwrap()
            .contains("code_embeddings"),
        "{run_done:?}"
    );
    assert_eq!(stages[3].status, "failed");
    assert_eq!(stages[3].attempts, 1, "a permanent error is not retried");
    assert_eq!(stages[4].status, "cancelled");
    assert!(
        stages[4]
            .last_error
            .as_deref()
            .unwrap()
            .contains("stage code_embeddings failed"),
        "{:?}",
        stages[4]
    );
    assert_eq!(job_row(&ctx, &stages[4].job_id).await.0, "Killed");
    assert_eq!(job_row(&ctx, &stages[3].job_id).await.0, "Killed");
    // A failed run stamps no index version.
    assert_eq!(
        ctx.store
            .current_index_version(run_done.repository_id)
            .await
            .unwrap()
            .map(|v| v.version),
        None
    );
}

#[tokio::test]
async fn queued_user_work_is_taken_before_queued_background_work() {
    let db = TestDb::new().await;
    let ctx = PipelineContext::with_faults(db.store.clone(), fast_config(&db), Faults::default());
    let (a, b) = (fixture(), fixture());
    // The background run is older, yet the user run must go first.
    let background = ctx
        .store
        .enqueue_run(&new_run(repo(&ctx, a.path()).await, Trigger::Background))
        .await
        .unwrap()
        .run_id();
    let user = ctx
        .store
        .enqueue_run(&new_run(repo(&ctx, b.path()).await, Trigger::User))
        .await
        .unwrap()
        .run_id();
    let bg_priorities: Vec<i32> = futures::future::join_all(
        ctx.store
            .stage_runs(background)
            .await
            .unwrap()
            .iter()
            .map(|s| job_row(&ctx, &s.job_id)),
    )
    .await
    .iter()
    .map(|j| j.2)
    .collect();
    assert_eq!(bg_priorities, [50, 40, 30, 20, 10]);

    let (stop, handle) = spawn_worker(ctx.clone(), 1);
    let (_, user_stages) = wait_finished(&ctx, user, 60).await;
    let (_, bg_stages) = wait_finished(&ctx, background, 60).await;
    // One slot: every user stage (priorities 90..50) precedes the background SYNC (50)
    // except ENRICH, which ties with it; ties go to the oldest.
    let bg_sync_start = bg_stages[0].started_at.unwrap();
    for s in &user_stages[..4] {
        assert!(
            s.finished_at.unwrap() <= bg_sync_start,
            "user stage {} ran after the background SYNC",
            s.stage
        );
    }
    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_high_priority_run_overtakes_queued_user_work() {
    let db = TestDb::new().await;
    let ctx = PipelineContext::with_faults(db.store.clone(), fast_config(&db), Faults::default());
    let (a, b) = (fixture(), fixture());
    let normal = ctx
        .store
        .enqueue_run(&new_run(repo(&ctx, a.path()).await, Trigger::User))
        .await
        .unwrap()
        .run_id();
    let high = ctx
        .store
        .enqueue_run(&NewRun {
            priority: PriorityClass::High,
            ..new_run(repo(&ctx, b.path()).await, Trigger::User)
        })
        .await
        .unwrap()
        .run_id();
    let (stop, handle) = spawn_worker(ctx.clone(), 1);
    let (_, high_stages) = wait_finished(&ctx, high, 60).await;
    let (_, normal_stages) = wait_finished(&ctx, normal, 60).await;
    // One slot: the older normal run's SYNC (90) waits behind every stage of the high run
    // (140..100), whose stage order is unchanged.
    let normal_sync_start = normal_stages[0].started_at.unwrap();
    for pair in high_stages.windows(2) {
        assert!(pair[0].finished_at.unwrap() <= pair[1].started_at.unwrap());
    }
    for s in &high_stages {
        assert!(
            s.finished_at.unwrap() <= normal_sync_start,
            "high stage {} ran after the normal SYNC",
            s.stage
        );
    }
    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn background_runs_never_pile_up_and_user_runs_supersede_them() {
    let db = TestDb::new().await;
    let ctx = PipelineContext::with_faults(db.store.clone(), fast_config(&db), Faults::default());
    let dir = fixture();
    let repo_id = repo(&ctx, dir.path()).await;
    let first = ctx
        .store
        .enqueue_run(&new_run(repo_id, Trigger::Background))
        .await
        .unwrap();
    let Enqueued::Created { run_id: bg, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        ctx.store
            .enqueue_run(&new_run(repo_id, Trigger::Background))
            .await
            .unwrap(),
        Enqueued::AlreadyPending { run_id: bg }
    );
    let user = ctx
        .store
        .enqueue_run(&new_run(repo_id, Trigger::User))
        .await
        .unwrap();
    let Enqueued::Created {
        run_id: user_id,
        superseded,
    } = user
    else {
        panic!("{user:?}")
    };
    assert_eq!(superseded, vec![bg]);
    let bg_run = ctx.store.run(bg).await.unwrap();
    assert_eq!(bg_run.status, "cancelled");
    assert!(
        bg_run
            .error
            .unwrap()
            .contains(&format!("superseded by user run {user_id}"))
    );
    for s in ctx.store.stage_runs(bg).await.unwrap() {
        assert_eq!(s.status, "cancelled");
        assert_eq!(job_row(&ctx, &s.job_id).await.0, "Killed");
    }
    // The automatic cancellation is audited, with the run that superseded it.
    let audited: (String, String, Option<i64>, serde_json::Value) =
        sqlx::query_as("SELECT actor, action, run_id, parameters FROM audit_log WHERE run_id = $1")
            .bind(bg)
            .fetch_one(ctx.store.pool())
            .await
            .unwrap();
    assert_eq!(
        (audited.0.as_str(), audited.1.as_str(), audited.2),
        ("trawl", "cancel", Some(bg))
    );
    assert_eq!(audited.3["superseded_by"], user_id);
    // While the user run is pending, a background run is not added either.
    assert_eq!(
        ctx.store
            .enqueue_run(&new_run(repo_id, Trigger::Background))
            .await
            .unwrap(),
        Enqueued::AlreadyPending { run_id: user_id }
    );
}

#[tokio::test]
async fn a_malformed_payload_fails_for_good_and_affects_nothing_else() {
    let db = TestDb::new().await;
    let ctx = PipelineContext::with_faults(db.store.clone(), fast_config(&db), Faults::default());
    let bad_id = ulid::Ulid::generate().to_string();
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
         VALUES ($1, $2, convert_to('{\"bogus\": 1}', 'UTF8'), 'Pending', 0, 5, now(), 500)",
    )
    .bind(&bad_id)
    .bind(STAGE_QUEUE)
    .execute(ctx.store.pool())
    .await
    .unwrap();
    let dir = fixture();
    let id = ctx
        .store
        .enqueue_run(&new_run(repo(&ctx, dir.path()).await, Trigger::User))
        .await
        .unwrap()
        .run_id();
    let (stop, handle) = spawn_worker(ctx.clone(), 1);
    let (run_done, _) = wait_finished(&ctx, id, 60).await;
    assert_eq!(run_done.status, "succeeded");
    let (status, attempts, _) = job_row(&ctx, &bad_id).await;
    assert_eq!((status.as_str(), attempts), ("Killed", 1));
    let last: serde_json::Value =
        sqlx::query_scalar("SELECT last_result FROM apalis.jobs WHERE id = $1")
            .bind(&bad_id)
            .fetch_one(ctx.store.pool())
            .await
            .unwrap();
    assert!(
        last.to_string().contains("malformed stage job payload"),
        "{last}"
    );
    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn index_cli_waits_in_process_and_refuses_bad_sources() {
    let db = TestDb::new().await;
    let dir = fixture();
    let r = run(trawl_cmd()
        .envs(db.env())
        .args(["index", dir.path().to_str().unwrap(), "--wait"]));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("succeeded"), "{}", r.stdout);

    assert_refused(
        &trawl_in(&db, &["index", "/nonexistent/project"]),
        "/nonexistent/project does not exist",
    );
    let file = dir.path().join("tool.py");
    assert_refused(
        &trawl_in(&db, &["index", file.to_str().unwrap()]),
        "is not a directory",
    );
    assert_refused(&trawl_in(&db, &["runs", "show", "999999"]), "no run 999999");
}

#[tokio::test]
async fn operators_list_retry_and_cancel_tasks() {
    let db = TestDb::new().await;
    let (ctx, failed_run, stages) = work_one_run(&db, "code_embeddings:permanent:1").await;
    assert_eq!(failed_run.status, "failed");
    let failed_job = stages[3].job_id.clone();

    let r = run(trawl_cmd()
        .envs(db.env())
        .args(["tasks", "list", "--status", "failed", "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["job_id"], failed_job.as_str());
    assert_eq!(listed[0]["stage"], "code_embeddings");

    // Retrying a succeeded task, or an unknown one, is refused.
    assert_refused(
        &trawl_in(&db, &["tasks", "retry", &stages[0].job_id]),
        "only failed or cancelled tasks can be retried",
    );
    assert_refused(
        &trawl_in(&db, &["tasks", "show", "NOSUCHTASK"]),
        "no task NOSUCHTASK",
    );

    // Retry the failed stage: it and the cancelled one after it run again (the fault was a
    // one-off: a worker without it), the run succeeds.
    let r = run(trawl_cmd()
        .envs(db.env())
        .args(["tasks", "retry", &failed_job]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let healed =
        PipelineContext::with_faults(db.store.clone(), fast_config(&db), Faults::default());
    let (stop, handle) = spawn_worker(healed, 1);
    let (again, stages) = wait_finished(&ctx, failed_run.id, 60).await;
    stop.send(()).unwrap();
    handle.await.unwrap();
    assert_eq!(again.status, "succeeded", "{again:?}");
    assert_eq!(stages[0].attempts, 1, "earlier stages did not run again");
    assert_eq!(stages[4].status, "succeeded");
    // A retry is a fresh budget: the retried stage's count starts again (not "attempts 2/N"
    // of a budget the worker would then judge spent), in `runs show` as in `tasks show`.
    assert_eq!(stages[3].attempts, 1, "{:?}", stages[3]);
    let r = trawl_in(&db, &["runs", "show", &failed_run.id.to_string()]);
    let line = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("code_embeddings"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(
        line.contains(&format!("attempts 1/{}", stages[3].max_attempts)),
        "{line}"
    );

    // Cancel a queued run's SYNC: the whole run is cancelled; cancelling again is refused.
    let dir = fixture();
    let queued = ctx
        .store
        .enqueue_run(&new_run(repo(&ctx, dir.path()).await, Trigger::User))
        .await
        .unwrap()
        .run_id();
    let sync_job = ctx.store.stage_runs(queued).await.unwrap()[0]
        .job_id
        .clone();
    let r = run(trawl_cmd()
        .envs(db.env())
        .args(["tasks", "cancel", &sync_job]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(ctx.store.run(queued).await.unwrap().status, "cancelled");
    assert!(
        ctx.store
            .stage_runs(queued)
            .await
            .unwrap()
            .iter()
            .all(|s| s.status == "cancelled")
    );
    assert_refused(
        &trawl_in(&db, &["tasks", "cancel", &sync_job]),
        "only queued, waiting or running tasks can be cancelled",
    );
    // Each retry and cancel is audited, done or refused.
    let r = trawl_in(&db, &["audit", "--json"]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    for (action, outcome) in [
        ("retry_task", "ok"),
        ("retry_task", "refused"),
        ("cancel_task", "ok"),
        ("cancel_task", "refused"),
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e["action"] == action && e["outcome"] == outcome && e["actor"] == "cli"),
            "no {action} {outcome}: {entries:?}"
        );
    }
    // A refused action names the task's run and repository too.
    let refused = entries
        .iter()
        .find(|e| e["action"] == "cancel_task" && e["outcome"] == "refused")
        .unwrap();
    assert_eq!(refused["run_id"], queued, "{refused}");
    assert!(refused["repository_id"].is_i64(), "{refused}");

    let r = run(trawl_cmd()
        .envs(db.env())
        .args(["queue", "stats", "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let stats: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let cancelled: i64 = stats["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["stage_status"] == "cancelled")
        .map(|c| c["count"].as_i64().unwrap())
        .sum();
    assert_eq!(cancelled, 5);
}

#[tokio::test]
async fn the_scheduler_enqueues_due_repositories_once_across_restarts() {
    let db = TestDb::new().await;
    let ctx = PipelineContext::with_faults(db.store.clone(), fast_config(&db), Faults::default());
    let synced = fixture();
    let requested = trawl::service::index::index(
        &ctx.store,
        &ctx.config,
        synced.path().to_str().unwrap(),
        "",
        "test",
        trawl::service::index::SourceAccess::Local,
    )
    .await
    .unwrap();
    let id = requested.enqueued.run_id();
    let run = trawl::service::index::wait_for_run(ctx.clone(), id, |_| {})
        .await
        .unwrap();
    assert_eq!(run.status, "succeeded");
    let never = fixture();
    let never_id = repo(&ctx, never.path()).await;

    let tick = |every: &str| {
        let r = trawl_in(&db, &["scheduler", "--once", "--every", every, "--json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
        v["enqueued"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    // Only the never-synced repository is due within the hour.
    assert_eq!(tick("1h"), [never_id]);
    // A restarted scheduler finds its run pending and does not double it.
    assert_eq!(tick("1h"), Vec::<i64>::new());
    // With no interval, the synced one is due too; the pending one still is not doubled.
    assert_eq!(tick("0s"), [requested.repository.id]);
    assert_eq!(tick("0s"), Vec::<i64>::new());
    // Each background run the scheduler enqueued is audited.
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE actor = 'scheduler' AND action = 'background_sync'",
    )
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!(audited, 2);
    let background: Vec<(i64, i32, String)> = sqlx::query_as(
        "SELECT repository_id, priority_base, origin FROM runs WHERE trigger = 'background' ORDER BY repository_id",
    )
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    assert_eq!(
        background,
        [
            (requested.repository.id, 10, "scheduler".to_string()),
            (never_id, 10, "scheduler".to_string())
        ]
    );
    let r = trawl_in(&db, &["scheduler", "--every", "soon"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not a duration"), "{}", r.stderr);
}

#[tokio::test]
async fn bench_queue_drains_its_backlog_with_worker_processes_and_reports_figures() {
    let db = TestDb::new().await;
    let r = trawl_in(
        &db,
        &[
            "bench",
            "queue",
            "--runs",
            "12",
            "--processes",
            "1",
            "--concurrency",
            "2",
            "--latency-runs",
            "3",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let passes: serde_json::Value = serde_json::from_str(&r.stdout).expect(&r.stdout);
    let pass = &passes[0];
    // Every stage of every backlog run was worked by the worker process, none skipped.
    assert_eq!(pass["tasks"], 60, "{pass}");
    assert!(pass["tasks_per_sec"].as_f64().unwrap() > 0.0, "{pass}");
    assert_eq!(pass["enqueue_to_start"]["samples"], 15, "{pass}");
    // Its scratch database is gone; the test's own database was not touched.
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(runs, 0);
}

#[tokio::test]
async fn a_user_run_superseding_a_background_run_being_claimed_never_fails() {
    // A user run cancels the queued background run (locking the run, then its stages and
    // jobs) while a worker claims that run's SYNC (the job, then the stage, then the run):
    // they once locked in opposite orders and Postgres killed one of them now and then
    // (after its one-second deadlock timeout). The enqueue now locks as the claim does:
    // neither fails, and no deadlock is left for the retry to cover.
    let db = TestDb::new().await;
    let ctx = PipelineContext::with_faults(db.store.clone(), fast_config(&db), Faults::default());
    let dir = fixture();
    let repo_id = repo(&ctx, dir.path()).await;
    let mut tx = ctx.store.pool().begin().await.unwrap();
    trawl::store::workers::register_worker(&mut tx, "stress", STAGE_QUEUE, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (mut claims_lost, mut superseded_rounds) = (0, 0);
    for round in 0..150 {
        let bg = ctx
            .store
            .enqueue_run(&new_run(repo_id, Trigger::Background))
            .await
            .unwrap()
            .run_id();
        let store = ctx.store.clone();
        let claim = tokio::spawn(async move { store.claim_stages("stress", 1).await });
        let user = ctx
            .store
            .enqueue_run(&new_run(repo_id, Trigger::User))
            .await;
        let user = user.unwrap_or_else(|e| panic!("round {round}: the user run failed: {e}"));
        if matches!(&user, Enqueued::Created { superseded, .. } if superseded.contains(&bg)) {
            superseded_rounds += 1;
        }
        match claim.await.unwrap() {
            Ok(_) => {}
            Err(e) if e.is_retryable() => claims_lost += 1,
            Err(e) => panic!("round {round}: the claim failed for good: {e}"),
        }
        // Whichever won, both runs end here so the next round starts from nothing.
        assert_ne!(bg, user.run_id(), "round {round}");
        for run in ctx.store.unfinished_runs(repo_id).await.unwrap() {
            ctx.store.cancel_run(run, "test round over").await.unwrap();
        }
        let open = ctx.store.unfinished_runs(repo_id).await.unwrap();
        assert!(open.is_empty(), "round {round}: runs left open: {open:?}");
    }
    eprintln!(
        "of 150 rounds the user run superseded the background run in {superseded_rounds}, \
         the claim began it first in the others"
    );
    assert_eq!(claims_lost, 0, "claims that lost a deadlock");
}
