//! Progress a person can trust: a run of 300 files of the CPython standard library reports
//! an overall percent that moves through the run by the stages' measured costs, never goes
//! back and ends at 100, an ETA, and no stage with a total below its done count.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use crate::support::{TestDb, path_str, run, trawl_cmd};

/// The machine's CPython standard library.
fn stdlib() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .expect("python3 runs");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Copies `take` of the standard library's modules, after skipping `skip` (sorted by path;
/// tests and installed packages left out), into `to`.
fn slice(from: &Path, to: &Path, skip: usize, take: usize) {
    let mut files = Vec::new();
    let mut stack = vec![from.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                if ![
                    "test",
                    "tests",
                    "idle_test",
                    "site-packages",
                    "dist-packages",
                    "__pycache__",
                ]
                .contains(&name.as_str())
                {
                    stack.push(p);
                }
            } else if ft.is_file() && name.ends_with(".py") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(
        files.len() >= skip + take,
        "{} modules in {from:?}",
        files.len()
    );
    for f in files.into_iter().skip(skip).take(take) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overall_percent_moves_through_the_run_never_goes_back_and_ends_at_100() {
    let db = TestDb::new().await;
    let env = db.env();
    let lib = stdlib();
    // Two repositories of the same 300 modules: the first run measures what the stages
    // cost (seconds per item), the second is followed.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    slice(&lib, a.path(), 0, 300);
    slice(&lib, b.path(), 0, 300);
    let r = run(trawl_cmd()
        .envs(env.clone())
        .args(["index", &path_str(a.path()), "--wait"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Then ten runs that find nothing changed, as background syncs make: they say nothing
    // of what a stage costs, and must not make the next real run look done at once.
    for _ in 0..10 {
        let r = run(trawl_cmd()
            .envs(env.clone())
            .args(["index", &path_str(a.path()), "--wait"]));
        assert_eq!(r.code, 0, "{}", r.stderr);
    }

    // The run measured: each snapshot stamped as it arrives.
    let mut child = trawl_cmd()
        .envs(env.clone())
        .args(["index", &path_str(b.path()), "--wait", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stamped: Vec<(Instant, serde_json::Value)> = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v.get("overall_percent").is_some()
        {
            stamped.push((Instant::now(), v));
        }
    }
    assert!(child.wait().unwrap().success());
    let (t0, end) = (stamped[0].0, stamped.last().unwrap().0);
    let (last_snapshot, terminal) = (&stamped.last().unwrap().1, true);
    assert_eq!(last_snapshot["terminal"], terminal, "{last_snapshot}");
    assert_eq!(last_snapshot["overall_percent"], 100.0, "{last_snapshot}");
    let seconds = (end - t0).as_secs_f64();
    assert!(
        stamped.len() >= 10,
        "{} snapshots in {seconds:.1} s",
        stamped.len()
    );
    // How well the percent tracks the time is measured by benches/progress_accuracy.py on
    // a quiet machine, not asserted here: the suite's other tests share the two cores, so
    // the run's pace changes under it in ways no estimate can foresee.
    let mut previous = 0.0;
    for (_, s) in &stamped {
        let overall = s["overall_percent"].as_f64().unwrap();
        assert!(overall >= previous, "went back from {previous} to {s}");
        assert!(
            overall < 100.0 || s["terminal"] == true,
            "100 before the end: {s}"
        );
        previous = overall;
        assert!(
            s["items_done"].as_i64() <= s["items_total"].as_i64() || s["items_total"] == 0,
            "a total below its done count: {s}"
        );
    }
    // Each stage's share was measured on the first run: the percent moves through the
    // run, not only at its end.
    let halfway = stamped
        .iter()
        .filter(|(_, s)| (20.0..80.0).contains(&s["overall_percent"].as_f64().unwrap()))
        .count();
    assert!(halfway >= 3, "{halfway} snapshots between 20 and 80 %");
    // The ETA of a snapshot under way is a number a person can read.
    assert!(
        stamped
            .iter()
            .any(|(_, s)| s["eta_seconds"].as_f64().is_some_and(|e| e > 0.0)),
        "no ETA"
    );
}
