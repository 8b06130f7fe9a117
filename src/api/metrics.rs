//! `/metrics` in the Prometheus text format (version 0.0.4).
//!
//! Queue depth, stage durations, attempts, failures, items and the embedding rate come
//! from the database at scrape time, so they cover every worker of the cluster. Request
//! and search latencies are this process' own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::search::Mode;
use crate::store::metrics::STAGE_SECONDS_BUCKETS;

/// Upper bounds (seconds) of the request and search latency histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A histogram: a count per bucket (not cumulative; the last one is above every bound),
/// the count and the sum.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len() + 1];
        }
        let i = bounds.partition_point(|b| *b < value);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += value;
    }
}

/// This process' own figures.
#[derive(Debug, Default)]
pub struct Metrics {
    /// By (method, route, status).
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    /// By search mode.
    searches: Mutex<BTreeMap<&'static str, Histogram>>,
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default()
            .observe(LATENCY_BUCKETS, seconds);
    }

    pub fn observe_search(&self, mode: Mode, seconds: f64) {
        let mode = match mode {
            Mode::Hybrid => "hybrid",
            Mode::Keyword => "keyword",
            Mode::Semantic => "semantic",
        };
        let mut searches = self.searches.lock().unwrap_or_else(|p| p.into_inner());
        searches
            .entry(mode)
            .or_default()
            .observe(LATENCY_BUCKETS, seconds);
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped as the text format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one histogram's series: cumulative buckets, `+Inf`, sum and count.
fn histogram(out: &mut String, name: &str, labels: &str, bounds: &[f64], counts: &[u64], sum: f64) {
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let total: u64 = counts.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = &state.store;
    let queue = store.queue_stats().await?;
    let depth = store.queue_depth().await?;
    let totals = store.stage_totals().await?;
    let durations = store.stage_durations().await?;
    let rate = store.recent_embedding_rate().await?;
    let runs = store.run_counts().await?;

    let mut out = String::with_capacity(8 * 1024);
    head(
        &mut out,
        "trawl_queue_depth",
        "gauge",
        "Stage tasks queued, waiting or running (a paused run's are waiting), by stage, status and priority class (a task failed for good counts in trawl_stage_failures).",
    );
    for c in &depth {
        let _ = writeln!(
            out,
            "trawl_queue_depth{{stage=\"{}\",status=\"{}\",priority_class=\"{}\"}} {}",
            label(&c.stage),
            label(c.stage_status.as_str()),
            label(&c.priority_class),
            c.count
        );
    }
    head(
        &mut out,
        "trawl_queue_oldest_queued_seconds",
        "gauge",
        "Age of the oldest stage task that is queued (0 when none is).",
    );
    let _ = writeln!(
        out,
        "trawl_queue_oldest_queued_seconds {}",
        queue.oldest_queued_age_secs.unwrap_or(0.0)
    );
    head(
        &mut out,
        "trawl_workers",
        "gauge",
        "Worker processes that sent a heartbeat in the last 5 minutes.",
    );
    let _ = writeln!(out, "trawl_workers {}", queue.workers.len());
    head(&mut out, "trawl_runs", "gauge", "Runs by status.");
    for (status, count) in &runs {
        let _ = writeln!(out, "trawl_runs{{status=\"{}\"}} {count}", label(status));
    }

    head(
        &mut out,
        "trawl_stage_duration_seconds",
        "histogram",
        "How long finished stages took, from their start to their end.",
    );
    for d in &durations {
        let counts: Vec<u64> = d.bucket_counts.iter().map(|c| *c as u64).collect();
        histogram(
            &mut out,
            "trawl_stage_duration_seconds",
            &format!("stage=\"{}\"", label(&d.stage)),
            STAGE_SECONDS_BUCKETS,
            &counts,
            d.sum_seconds,
        );
    }
    // Gauges, not counters: they sum over the runs kept, and a retried failure leaves
    // the failed count, so they can go down.
    for (name, help, pick) in [
        (
            "trawl_stage_attempts",
            "Attempts the kept runs' stages made, the first included.",
            (|t| t.attempts) as fn(&crate::store::metrics::StageTotals) -> i64,
        ),
        (
            "trawl_stage_failures",
            "Kept runs' stages that are failed for good.",
            |t| t.failures,
        ),
        (
            "trawl_items_processed",
            "Items (files, snippets, embeddings, summaries) the kept runs' stages processed.",
            |t| t.items_done,
        ),
        (
            "trawl_items_failed",
            "Items the kept runs' stages could not process.",
            |t| t.items_failed,
        ),
    ] {
        head(&mut out, name, "gauge", help);
        for t in &totals {
            let _ = writeln!(out, "{name}{{stage=\"{}\"}} {}", label(&t.stage), pick(t));
        }
    }
    head(
        &mut out,
        "trawl_embeddings_per_second",
        "gauge",
        "Code embeddings per second of the most recent CODE_EMBEDDINGS stage that embedded something.",
    );
    let _ = writeln!(out, "trawl_embeddings_per_second {}", rate.unwrap_or(0.0));

    let lag = crate::search::follow::local_lag(&state.store, &state.config).await?;
    head(
        &mut out,
        "trawl_keyword_index_lag_seconds",
        "gauge",
        "Seconds since the oldest keyword change this node's index has not applied was published (0 when up to date).",
    );
    let _ = writeln!(
        out,
        "trawl_keyword_index_lag_seconds {}",
        lag.map_or(0.0, |l| l.seconds)
    );
    head(
        &mut out,
        "trawl_keyword_index_pending_changes",
        "gauge",
        "Keyword changes published and not applied by this node's index (-1: not built yet).",
    );
    let _ = writeln!(
        out,
        "trawl_keyword_index_pending_changes {}",
        lag.map_or(-1, |l| l.pending)
    );

    let pipelines = store.pipeline_summaries(None, None).await?;
    head(
        &mut out,
        "trawl_pipeline_runs",
        "gauge",
        "Downstream pipeline runs, by pipeline and status (pending and running: the depth; failed: the failures).",
    );
    for p in &pipelines {
        for (status, n) in [
            ("pending", p.pending),
            ("running", p.running),
            ("success", p.success),
            ("failed", p.failed),
            ("cancelled", p.cancelled),
        ] {
            let _ = writeln!(
                out,
                "trawl_pipeline_runs{{pipeline=\"{}\",status=\"{status}\"}} {n}",
                label(&p.pipeline)
            );
        }
    }
    head(
        &mut out,
        "trawl_pipeline_lag_versions",
        "gauge",
        "The most index versions any repository's newest is ahead of what a pipeline's data reflects.",
    );
    for p in &pipelines {
        let _ = writeln!(
            out,
            "trawl_pipeline_lag_versions{{pipeline=\"{}\"}} {}",
            label(&p.pipeline),
            p.max_versions_behind
        );
    }
    head(
        &mut out,
        "trawl_pipeline_lagging_repositories",
        "gauge",
        "Repositories whose newest index version a pipeline's data does not reflect yet.",
    );
    for p in &pipelines {
        let _ = writeln!(
            out,
            "trawl_pipeline_lagging_repositories{{pipeline=\"{}\"}} {}",
            label(&p.pipeline),
            p.lagging_repositories
        );
    }

    head(
        &mut out,
        "trawl_search_duration_seconds",
        "histogram",
        "Search latency in this process, by mode.",
    );
    let searches = state
        .metrics
        .searches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (mode, h) in &searches {
        histogram(
            &mut out,
            "trawl_search_duration_seconds",
            &format!("mode=\"{mode}\""),
            LATENCY_BUCKETS,
            &h.buckets,
            h.sum,
        );
    }
    head(
        &mut out,
        "trawl_http_request_duration_seconds",
        "histogram",
        "HTTP requests this process answered, by method, route and status.",
    );
    let requests = state
        .metrics
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for ((method, route, status), h) in &requests {
        histogram(
            &mut out,
            "trawl_http_request_duration_seconds",
            &format!(
                "method=\"{}\",route=\"{}\",status=\"{status}\"",
                label(method),
                label(route)
            ),
            LATENCY_BUCKETS,
            &h.buckets,
            h.sum,
        );
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let mut h = Histogram::default();
        for v in [0.0005, 0.003, 0.003, 20.0] {
            h.observe(LATENCY_BUCKETS, v);
        }
        let mut out = String::new();
        histogram(&mut out, "x", "a=\"b\"", LATENCY_BUCKETS, &h.buckets, h.sum);
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 4\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
