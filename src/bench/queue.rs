//! `trawl bench queue`: the stage queue's own cost. Worker processes run every stage as a
//! no-op, so what is measured is fetching, ordering, recording and releasing stage jobs:
//! tasks worked per second while draining a backlog, and enqueue→start latency on an idle
//! queue. Runs in a scratch database on the configured server, dropped afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, Latency};
use crate::config::Config;
use crate::database;
use crate::domain::{PriorityClass, Trigger};
use crate::store::runs::NewRun;
use crate::store::{Store, admin};

/// The scratch database the benchmark creates and drops.
pub const BENCH_DB: &str = "trawl_bench_queue";

#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Runs enqueued for the throughput phase; each is five stage tasks.
    pub runs: usize,
    /// Worker process counts to measure, one pass each.
    pub processes: Vec<usize>,
    /// Stage jobs each worker process runs at once.
    pub concurrency: usize,
    /// Runs enqueued one at a time on an idle queue for the latency phase.
    pub latency_runs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueuePass {
    pub processes: usize,
    pub concurrency: usize,
    /// Stage tasks worked in the throughput phase.
    pub tasks: usize,
    pub seconds: f64,
    pub tasks_per_sec: f64,
    /// Enqueue (or release by the predecessor) → start of each stage task on an idle queue.
    pub enqueue_to_start: Latency,
}

/// Runs one pass per entry of `opts.processes`, each on a fresh scratch database.
pub async fn run(
    config: &Config,
    exe: &Path,
    opts: &QueueOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<QueuePass>, BenchError> {
    let url = database::ensure_available(config).await?;
    let bench_url = admin::url_with_database(&url, BENCH_DB)?;
    let mut passes = Vec::new();
    for &processes in &opts.processes {
        progress(&format!(
            "{processes} worker process(es): preparing {BENCH_DB}"
        ));
        admin::drop_database(&url, BENCH_DB).await?;
        admin::create_database_if_missing(&url, BENCH_DB).await?;
        let store = Store::open(&bench_url, &database::pool_settings(config)).await?;
        store.migrate().await?;
        let pass = one_pass(
            config,
            exe,
            &store,
            &bench_url,
            processes,
            opts,
            &mut progress,
        )
        .await;
        store.pool().close().await;
        passes.push(pass?);
    }
    admin::drop_database(&url, BENCH_DB).await?;
    Ok(passes)
}

/// A bench run, of no repository yet.
fn template(config: &Config) -> NewRun {
    NewRun {
        repository_id: 0,
        trigger: Trigger::User,
        origin: "bench".into(),
        priority: PriorityClass::Normal,
        scope: crate::domain::scope::Scope::Project,
        full: false,
        max_attempts: [config.worker.max_attempts; 5],
        settings: Some(config.run_settings()),
    }
}

async fn one_pass(
    config: &Config,
    exe: &Path,
    store: &Store,
    bench_url: &str,
    processes: usize,
    opts: &QueueOptions,
    progress: &mut impl FnMut(&str),
) -> Result<QueuePass, BenchError> {
    // Runs of one repository work one at a time (its lease): each run of the backlog is of
    // a repository of its own, so the queue is measured, not the waits for a lease.
    let repositories = opts.runs.max(opts.latency_runs).max(1);
    let mut new_runs = Vec::with_capacity(repositories);
    for i in 0..repositories {
        let repo = store
            .register_repository(
                "directory",
                &format!("/trawl-bench/queue/{i}"),
                "",
                "queue-bench",
            )
            .await?;
        new_runs.push(NewRun {
            repository_id: repo.id,
            ..template(config)
        });
    }

    // Throughput: a backlog enqueued before the workers start, drained by them.
    progress(&format!(
        "enqueueing {} runs ({} tasks)",
        opts.runs,
        opts.runs * 5
    ));
    let backlog = enqueue_parallel(store, &new_runs, opts.runs).await?;
    let workers = Workers::spawn(config, exe, bench_url, processes, opts.concurrency)?;
    progress(&format!(
        "{processes} worker process(es) × {} slots draining",
        opts.concurrency
    ));
    wait_until_finished(store, &backlog).await?;
    let (tasks, seconds) = span_of(store, &backlog).await?;

    // Latency: one run at a time on an idle queue, a pause between them.
    progress(&format!(
        "latency: {} runs enqueued one at a time",
        opts.latency_runs
    ));
    let mut paced = Vec::with_capacity(opts.latency_runs);
    for i in 0..opts.latency_runs {
        paced.push(enqueue_one(store, &new_runs[i % new_runs.len()]).await?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until_finished(store, &paced).await?;
    let waits = store.bench_enqueue_to_start_ms(&paced).await?;
    drop(workers);

    Ok(QueuePass {
        processes,
        concurrency: opts.concurrency,
        tasks,
        seconds,
        tasks_per_sec: if seconds > 0.0 {
            tasks as f64 / seconds
        } else {
            0.0
        },
        enqueue_to_start: Latency::of_ms(waits),
    })
}

async fn enqueue_one(store: &Store, new_run: &NewRun) -> Result<i64, BenchError> {
    Ok(store.enqueue_run(new_run).await?.run_id())
}

/// Enqueues `n` runs from four concurrent tasks.
async fn enqueue_parallel(
    store: &Store,
    new_runs: &[NewRun],
    n: usize,
) -> Result<Vec<i64>, BenchError> {
    let lanes = 4.min(n.max(1));
    let mut handles = Vec::new();
    for lane in 0..lanes {
        let (store, new_runs) = (store.clone(), new_runs.to_vec());
        let count = n / lanes + usize::from(lane < n % lanes);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(count);
            for i in 0..count {
                ids.push(
                    enqueue_one(&store, &new_runs[(i * lanes + lane) % new_runs.len()]).await?,
                );
            }
            Ok::<_, BenchError>(ids)
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for h in handles {
        ids.extend(h.await.expect("enqueue task does not panic")?);
    }
    Ok(ids)
}

/// Waits until every run in `runs` has ended; fails when none ended for 30 s.
async fn wait_until_finished(store: &Store, runs: &[i64]) -> Result<(), BenchError> {
    let mut last = (usize::MAX, Instant::now());
    loop {
        let open = store.bench_open_runs(runs).await? as usize;
        if open == 0 {
            return Ok(());
        }
        if open != last.0 {
            last = (open, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            return Err(BenchError::Stalled(format!(
                "{open} of {} runs made no progress for 30 s; the worker logs are under <home>/bench/",
                runs.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tasks worked by `runs` and the seconds from the first start to the last finish.
async fn span_of(store: &Store, runs: &[i64]) -> Result<(usize, f64), BenchError> {
    let (tasks, secs) = store.bench_span(runs).await?;
    Ok((tasks as usize, secs.unwrap_or(0.0)))
}

/// Worker processes of this binary with no-op stages; stopped with SIGTERM on drop.
struct Workers {
    children: Vec<Child>,
}

impl Workers {
    fn spawn(
        config: &Config,
        exe: &Path,
        url: &str,
        processes: usize,
        concurrency: usize,
    ) -> Result<Workers, BenchError> {
        let logs = config.home.join("bench");
        let _ = std::fs::create_dir_all(&logs);
        let mut children = Vec::new();
        for i in 0..processes {
            let log = log_file(&logs, i);
            let child = Command::new(exe)
                .arg("--home")
                .arg(&config.home)
                .args([
                    "--database-url",
                    url,
                    "worker",
                    "--noop-stages",
                    "--concurrency",
                ])
                .arg(concurrency.to_string())
                .env("RUST_LOG", "trawl=warn,apalis=warn,sqlx=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
                .spawn()
                .map_err(|e| BenchError::Spawn {
                    exe: exe.display().to_string(),
                    cause: e.to_string(),
                })?;
            children.push(child);
        }
        Ok(Workers { children })
    }
}

fn log_file(dir: &Path, i: usize) -> std::io::Result<std::fs::File> {
    let path: PathBuf = dir.join(format!("queue-worker-{i}.log"));
    std::fs::File::create(path)
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &self.children {
            // SAFETY: kill(2) on a child process id we spawned and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}
