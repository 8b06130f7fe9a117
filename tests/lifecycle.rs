//! The lifecycle's SQL (src/store/lifecycle.sql) against its model
//! (trawl::domain::lifecycle): random sequences of workers' and operators' events, each
//! applied to both, the states compared after every step; and every run, whatever was done
//! to it, can still end.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trawl::domain::lifecycle::{BeginOutcome, Event, JobStatus, Lease, Outcome, RunState};
use trawl::domain::{PriorityClass, RunStatus, Stage, StageStatus, Trigger};
use trawl::store::Store;
use trawl::store::lifecycle::{Begin, RunControlError};
use trawl::store::runs::NewRun;
use trawl::store::tasks::TaskError;

use crate::support::TestDb;

const WORKER: &str = "trawl-lifecycle-test";

/// One run's state as the database holds it.
async fn state_of(store: &Store, run_id: i64) -> RunState {
    let (run, started, lease): (String, bool, String) = sqlx::query_as(
        "SELECT r.status, r.started_at IS NOT NULL,
                CASE WHEN q.lease_run_id IS NULL THEN 'free'
                     WHEN q.lease_run_id = r.id THEN 'mine' ELSE 'other' END
         FROM runs r JOIN repositories q ON q.id = r.repository_id WHERE r.id = $1",
    )
    .bind(run_id)
    .fetch_one(store.pool())
    .await
    .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.status, j.status FROM stage_runs s JOIN apalis.jobs j ON j.id = s.job_id
         WHERE s.run_id = $1 ORDER BY s.ordinal",
    )
    .bind(run_id)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 5);
    let mut stages = [StageStatus::Waiting; 5];
    let mut jobs = [JobStatus::Waiting; 5];
    for (i, (s, j)) in rows.iter().enumerate() {
        stages[i] = StageStatus::parse(s).unwrap();
        jobs[i] = JobStatus::parse(j).unwrap();
    }
    RunState {
        run: RunStatus::parse(&run).unwrap(),
        stages,
        jobs,
        started,
        lease: match lease.as_str() {
            "free" => Lease::Free,
            "mine" => Lease::Mine,
            _ => Lease::Other,
        },
    }
}

/// What the database did with an event: its outcome as the model words it, or refused.
async fn apply_sql(
    store: &Store,
    run_id: i64,
    jobs: &[String; 5],
    event: Event,
    rival: &mut Option<i64>,
) -> Result<Outcome, String> {
    let job = |s: Stage| jobs[s.ordinal() as usize].clone();
    let run_refusal = |r: Result<_, RunControlError>| match r {
        Ok(_) => Ok(Outcome::Applied),
        Err(RunControlError::WrongState { refused, .. }) => Err(refused.to_string()),
        Err(e) => panic!("{event:?}: {e}"),
    };
    let task_refusal = |r: Result<_, TaskError>| match r {
        Ok(_) => Ok(Outcome::Applied),
        Err(e @ (TaskError::NotRetryable { .. } | TaskError::NotCancellable { .. })) => {
            Err(e.to_string())
        }
        Err(e) => panic!("{event:?}: {e}"),
    };
    match event {
        Event::Begin(s) => {
            let claims = store.claim_stages(WORKER, 1).await.unwrap();
            assert_eq!(claims.len(), 1, "{event:?}: the model has a claimable job");
            assert_eq!(
                claims[0].job_id,
                job(s),
                "{event:?}: claimed another stage's job"
            );
            Ok(Outcome::Begun(
                match claims[0].begin.clone().unwrap().unwrap() {
                    Begin::Proceed { .. } => BeginOutcome::Proceed,
                    Begin::Wait => BeginOutcome::Wait,
                    Begin::Nothing { .. } => BeginOutcome::Nothing,
                },
            ))
        }
        Event::Succeed(s) | Event::SucceedUpToDate(s) => {
            let up_to_date = matches!(event, Event::SucceedUpToDate(_));
            store
                .complete_stages(&[(job(s), serde_json::json!({}), up_to_date)])
                .await
                .unwrap();
            Ok(Outcome::Applied)
        }
        Event::Retry(s) => {
            store
                .retry_stage(&job(s), "flaky", std::time::Duration::ZERO)
                .await
                .unwrap();
            Ok(Outcome::Applied)
        }
        Event::Fail(s) => {
            store.fail_stage(&job(s), "broken").await.unwrap();
            Ok(Outcome::Applied)
        }
        Event::Stop(s) => {
            store.stop_stage(&job(s)).await.unwrap();
            Ok(Outcome::Applied)
        }
        Event::Abandon(s) => {
            store.abandon_jobs(WORKER, Some(&[job(s)])).await.unwrap();
            Ok(Outcome::Applied)
        }
        Event::Pause => run_refusal(store.pause_run(run_id).await),
        Event::Resume => run_refusal(store.resume_run(run_id).await),
        Event::Cancel => run_refusal(store.cancel_run(run_id, "test").await),
        Event::RetryTask(s) => task_refusal(store.retry_task(&job(s)).await),
        Event::CancelTask(s) => task_refusal(store.cancel_task(&job(s), "test").await),
        // Another run of the repository, begun elsewhere, holds the lease.
        Event::LeaseTaken => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (repository_id, trigger, origin, priority_base, scope, status,
                                   started_at)
                 SELECT repository_id, 'user', 'rival', 100, '{\"kind\": \"project\"}',
                        'running', now() FROM runs WHERE id = $1
                 RETURNING id",
            )
            .bind(run_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
            sqlx::query(
                "UPDATE repositories SET lease_run_id = $1
                 WHERE id = (SELECT repository_id FROM runs WHERE id = $1)",
            )
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
            *rival = Some(id);
            Ok(Outcome::Applied)
        }
        // That run ends, as every run ends.
        Event::LeaseFreed => {
            let id = rival.take().expect("a rival holds the lease");
            sqlx::query("SELECT trawl_end_run($1, 'succeeded', NULL)")
                .bind(id)
                .execute(store.pool())
                .await
                .unwrap();
            Ok(Outcome::Applied)
        }
    }
}

/// The next event: a worker claims what is due, reports on a stage it holds, or an
/// operator acts (sometimes where the model refuses).
fn next_event(rng: &mut StdRng, model: &RunState, held: &[bool; 5]) -> Option<Event> {
    let stage = |rng: &mut StdRng| Stage::ALL[rng.random_range(0..5)];
    match rng.random_range(0..10) {
        0..=4 => Stage::ALL
            .into_iter()
            .find(|s| model.jobs[s.ordinal() as usize].is_claimable())
            .map(Event::Begin),
        5..=7 => {
            let s = Stage::ALL
                .into_iter()
                .find(|s| held[s.ordinal() as usize])?;
            Some(match rng.random_range(0..12) {
                0..=4 if s == Stage::Sync && rng.random_bool(0.3) => Event::SucceedUpToDate(s),
                0..=4 => Event::Succeed(s),
                5 | 6 => Event::Retry(s),
                7 => Event::Fail(s),
                8..=10 => Event::Stop(s),
                _ => Event::Abandon(s),
            })
        }
        _ => Some(match rng.random_range(0..13) {
            11 if model.lease == Lease::Free => Event::LeaseTaken,
            11 | 12 if model.lease == Lease::Other => Event::LeaseFreed,
            11 | 12 => return None,
            0 | 1 => Event::Pause,
            2 | 3 => Event::Resume,
            4 => Event::Cancel,
            5 | 6 => Event::RetryTask(stage(rng)),
            7 | 8 => Event::CancelTask(stage(rng)),
            // A job that cannot run (a malformed payload) is failed for good, whatever
            // its stage's status.
            _ => Event::Fail(stage(rng)),
        }),
    }
}

/// Whether a test worker could issue `event` in `state`: a worker reports only on a stage
/// whose job it holds, and claims the job the queue gives it (its run's only claimable one).
fn issuable(state: &RunState, event: Event) -> bool {
    let job = |s: Stage| state.jobs[s.ordinal() as usize];
    match event {
        Event::Succeed(s)
        | Event::SucceedUpToDate(s)
        | Event::Retry(s)
        | Event::Stop(s)
        | Event::Abandon(s) => job(s).is_claimed(),
        Event::Begin(s) => Stage::ALL.into_iter().find(|x| job(*x).is_claimable()) == Some(s),
        _ => true,
    }
}

/// The shortest sequence of issuable events from a new run to `target`, if there is one.
fn path_to(target: &RunState) -> Option<Vec<Event>> {
    use std::collections::{HashMap, VecDeque};
    let events = trawl::domain::lifecycle::all_events();
    let start = RunState::new();
    let mut parent: HashMap<RunState, (RunState, Event)> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(s) = queue.pop_front() {
        if s == *target {
            let mut path = Vec::new();
            let mut at = s;
            while let Some((from, e)) = parent.get(&at) {
                path.push(*e);
                at = *from;
            }
            path.reverse();
            return Some(path);
        }
        for e in events.iter().filter(|e| issuable(&s, **e)) {
            if let Ok((n, _)) = s.apply(*e)
                && n != start
                && !parent.contains_key(&n)
            {
                parent.insert(n, (s, *e));
                queue.push_back(n);
            }
        }
    }
    None
}

/// Registers the test's worker: claims name a worker apalis knows (jobs.lock_by references
/// apalis.workers).
async fn register_worker(store: &Store) {
    let mut tx = store.pool().begin().await.unwrap();
    trawl::store::workers::register_worker(
        &mut tx,
        WORKER,
        trawl::store::lifecycle::STAGE_QUEUE,
        "test",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn enqueue(store: &Store, repository_id: i64) -> (i64, [String; 5]) {
    let run_id = store
        .enqueue_run(&NewRun {
            repository_id,
            trigger: Trigger::User,
            origin: "test".into(),
            priority: PriorityClass::Normal,
            scope: trawl::domain::scope::Scope::Project,
            full: false,
            // Never spent here: retries are the model's events, not the budget's.
            max_attempts: [1000; 5],
            settings: None,
        })
        .await
        .unwrap()
        .run_id();
    let jobs: Vec<String> =
        sqlx::query_scalar("SELECT job_id FROM stage_runs WHERE run_id = $1 ORDER BY ordinal")
            .bind(run_id)
            .fetch_all(store.pool())
            .await
            .unwrap();
    (run_id, jobs.try_into().unwrap())
}

/// The database ends the run as the model does: workers abandon what they hold, the run is
/// resumed if paused, and workers take what is due and succeed at it.
async fn drive_to_the_end(store: &Store, run_id: i64, jobs: &[String; 5]) -> RunState {
    store.abandon_jobs(WORKER, None).await.unwrap();
    let _ = store.resume_run(run_id).await;
    for _ in 0..20 {
        let state = state_of(store, run_id).await;
        if state.run.is_finished() {
            return state;
        }
        let Some(claim) = store.claim_stages(WORKER, 1).await.unwrap().pop() else {
            panic!("run {run_id} cannot end: nothing is due in {state:?}");
        };
        if let Some(Ok(Begin::Proceed { .. })) = claim.begin {
            store
                .complete_stages(&[(claim.job_id, serde_json::json!({}), false)])
                .await
                .unwrap();
        }
    }
    let state = state_of(store, run_id).await;
    assert!(
        state.run.is_finished(),
        "run {run_id} ({jobs:?}) did not end: {state:?}"
    );
    state
}

#[tokio::test]
async fn the_sql_of_every_transition_does_what_the_model_says() {
    let db = TestDb::new().await;
    let store = &db.store;
    let repository_id = store
        .register_repository("directory", "/lifecycle-test", "", "lifecycle")
        .await
        .unwrap()
        .id;
    register_worker(store).await;
    let seed: u64 = std::env::var("TRAWL_LIFECYCLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261207);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let (mut steps, mut refused) = (0, 0);
    // Random sequences, then one sequence along the shortest way to each state they missed.
    let all = trawl::domain::lifecycle::reachable_states();
    for sequence in 0.. {
        let guided = if sequence < 300 {
            None
        } else {
            match all.iter().find(|s| !seen.contains(*s)) {
                Some(target) => Some(path_to(target).unwrap_or_else(|| {
                    panic!("no way a worker and operators could take to {target:?}")
                })),
                None => break,
            }
        };
        let (run_id, jobs) = enqueue(store, repository_id).await;
        let mut model = RunState::new();
        let mut held = [false; 5];
        let mut rival = None;
        let mut trail = Vec::new();
        // Half the sequences start further on: the first stages done, as a worker does them.
        let ahead = if rng.random_bool(0.5) {
            rng.random_range(1..5)
        } else {
            0
        };
        let mut forced: std::collections::VecDeque<Event> = match guided {
            Some(path) => path.into(),
            None => Stage::ALL[..ahead]
                .iter()
                .flat_map(|s| [Event::Begin(*s), Event::Succeed(*s)])
                .collect(),
        };
        let length = forced.len() + rng.random_range(1..60);
        for _ in 0..length {
            let event = match forced.pop_front() {
                Some(e) => e,
                None => match next_event(&mut rng, &model, &held) {
                    Some(e) => e,
                    None => continue,
                },
            };
            trail.push(event);
            let expected = model.apply(event);
            let got = apply_sql(store, run_id, &jobs, event, &mut rival).await;
            let context = || format!("seed {seed}, sequence {sequence}, run {run_id}: {trail:?}");
            match (&expected, &got) {
                (Ok((_, Outcome::Begun(want))), Ok(Outcome::Begun(have))) => {
                    assert_eq!(want, have, "{}", context())
                }
                (Ok(_), Ok(_)) => {}
                (Err(want), Err(have)) => {
                    refused += 1;
                    assert!(
                        have.contains(&format!("is {}", want.status)),
                        "{}: the model refused with {want}, the store with {have}",
                        context()
                    );
                }
                _ => panic!(
                    "{}: the model said {expected:?}, the store {got:?}",
                    context()
                ),
            }
            if let Ok((next, outcome)) = expected {
                model = next;
                match event {
                    Event::Begin(s) if outcome == Outcome::Begun(BeginOutcome::Proceed) => {
                        held[s.ordinal() as usize] = true
                    }
                    Event::Succeed(s)
                    | Event::SucceedUpToDate(s)
                    | Event::Retry(s)
                    | Event::Fail(s)
                    | Event::Stop(s)
                    | Event::Abandon(s) => held[s.ordinal() as usize] = false,
                    _ => {}
                }
            }
            let db_state = state_of(store, run_id).await;
            assert_eq!(db_state, model, "{}", context());
            assert_eq!(model.check(), Ok(()), "{}", context());
            seen.insert(model);
            steps += 1;
        }
        if model.lease == Lease::Other {
            apply_sql(store, run_id, &jobs, Event::LeaseFreed, &mut rival)
                .await
                .unwrap();
        }
        let end = drive_to_the_end(store, run_id, &jobs).await;
        assert!(end.run.is_finished());
    }
    // The sequences reached every one of the model's states, and refusals.
    let missed: Vec<&RunState> = all.iter().filter(|s| !seen.contains(*s)).collect();
    assert!(
        missed.is_empty(),
        "{} of {} states not reached in {steps} steps: {missed:?}",
        missed.len(),
        all.len()
    );
    assert!(refused > 20, "only {refused} refusals in {steps} steps");
}

/// A run's priority class is the one it was asked for, under one set of names: a
/// background SYNC (priority 50, as high as a normal run's ENRICH) is `low`, not `user`.
#[tokio::test]
async fn tasks_and_queue_stats_name_the_class_a_run_was_asked_for() {
    let db = TestDb::new().await;
    let store = &db.store;
    let mut asked = Vec::new();
    for (i, class) in [
        PriorityClass::Low,
        PriorityClass::Normal,
        PriorityClass::High,
    ]
    .into_iter()
    .enumerate()
    {
        let repository_id = store
            .register_repository("directory", &format!("/class-test-{i}"), "", "class")
            .await
            .unwrap()
            .id;
        let run_id = store
            .enqueue_run(&NewRun {
                repository_id,
                trigger: if class == PriorityClass::Low {
                    Trigger::Background
                } else {
                    Trigger::User
                },
                origin: "test".into(),
                priority: class,
                scope: trawl::domain::scope::Scope::Project,
                full: false,
                max_attempts: [3; 5],
                settings: None,
            })
            .await
            .unwrap()
            .run_id();
        asked.push((run_id, class));
    }
    for (run_id, class) in &asked {
        let sync = &store.stage_runs(*run_id).await.unwrap()[0];
        let task = store.task(&sync.job_id).await.unwrap().unwrap();
        assert_eq!(task.priority_class, class.as_str(), "run {run_id}'s SYNC");
        assert_eq!(
            store.run(*run_id).await.unwrap().priority_class,
            class.as_str()
        );
    }
    let low_sync = store.stage_runs(asked[0].0).await.unwrap()[0]
        .job_id
        .clone();
    assert_eq!(
        store.task(&low_sync).await.unwrap().unwrap().priority,
        Some(50)
    );
    let stats = store.queue_stats().await.unwrap();
    let classes: std::collections::BTreeSet<&str> = stats
        .cells
        .iter()
        .map(|c| c.priority_class.as_str())
        .collect();
    assert_eq!(classes, ["high", "low", "normal"].into_iter().collect());
}

/// A stored scope this build cannot read is refused where the run is read (the claim), and
/// the stage fails for good: it never widens to the whole project.
#[tokio::test]
async fn an_unreadable_scope_fails_the_stage_instead_of_indexing_everything() {
    let db = TestDb::new().await;
    let store = &db.store;
    register_worker(store).await;
    let repository_id = store
        .register_repository("directory", "/scope-test", "", "scope")
        .await
        .unwrap()
        .id;
    let (run_id, jobs) = enqueue(store, repository_id).await;
    sqlx::query("UPDATE runs SET scope = '{\"kind\": \"everything\"}' WHERE id = $1")
        .bind(run_id)
        .execute(store.pool())
        .await
        .unwrap();
    let claim = store.claim_stages(WORKER, 1).await.unwrap().pop().unwrap();
    assert_eq!(claim.job_id, jobs[0]);
    let err = claim.begin.unwrap().unwrap_err();
    assert!(err.contains("unreadable"), "{err}");
    store.kill_job(&claim.job_id, &err).await.unwrap();
    let state = state_of(store, run_id).await;
    assert_eq!(state.run, RunStatus::Failed);
    assert_eq!(state.stages[0], StageStatus::Failed);
    assert_eq!(state.check(), Ok(()));
}
