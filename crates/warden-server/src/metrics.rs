//! A few Prometheus counters, rendered by hand (no registry crate needed for this many).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub status_2xx: AtomicU64,
    pub status_4xx: AtomicU64,
    pub status_5xx: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Sum of request durations in microseconds.
    pub duration_us: AtomicU64,
}

pub(crate) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let res = next.run(req).await;
    let m = &state.metrics;
    m.requests.fetch_add(1, Ordering::Relaxed);
    let counter = match res.status().as_u16() {
        200..=399 => &m.status_2xx,
        400..=499 => &m.status_4xx,
        _ => &m.status_5xx,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    m.duration_us.fetch_add(
        u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    res
}

pub(crate) async fn render(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, labels: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{labels} {v}"
        );
    };
    counter(
        "warden_http_requests_total",
        "HTTP requests served.",
        "",
        m.requests.load(Ordering::Relaxed),
    );
    counter(
        "warden_http_responses_2xx_total",
        "Responses with status 2xx/3xx.",
        "",
        m.status_2xx.load(Ordering::Relaxed),
    );
    counter(
        "warden_http_responses_4xx_total",
        "Responses with status 4xx.",
        "",
        m.status_4xx.load(Ordering::Relaxed),
    );
    counter(
        "warden_http_responses_5xx_total",
        "Responses with status 5xx.",
        "",
        m.status_5xx.load(Ordering::Relaxed),
    );
    counter(
        "warden_auth_failures_total",
        "Failed authentications of callers.",
        "",
        m.auth_failures.load(Ordering::Relaxed),
    );
    counter(
        "warden_http_request_duration_microseconds_total",
        "Sum of request durations.",
        "",
        m.duration_us.load(Ordering::Relaxed),
    );
    let s = state.registry.store().stats();
    counter(
        "warden_store_commits_total",
        "Write transactions committed (each a group commit of many jobs).",
        "",
        s.commits,
    );
    counter(
        "warden_store_jobs_total",
        "Write jobs committed.",
        "",
        s.jobs,
    );
    counter(
        "warden_store_failed_jobs_total",
        "Write jobs rolled back on their own.",
        "",
        s.failed_jobs,
    );
    counter(
        "warden_store_failed_commits_total",
        "Write transactions that failed to begin or commit.",
        "",
        s.failed_commits,
    );
    let (issued, denied) = state.registry.token_counts();
    counter(
        "warden_tokens_issued_total",
        "Access tokens issued at /oauth2/token.",
        "",
        issued,
    );
    counter(
        "warden_token_requests_denied_total",
        "Token requests refused (any OAuth error).",
        "",
        denied,
    );
    counter(
        "warden_audit_authentication_events_total",
        "Authentication events committed through the asynchronous audit buffer.",
        "",
        state.registry.authentication_events_written(),
    );
    let _ = writeln!(
        out,
        "# HELP warden_cluster_jobs_leader Whether this node holds the lease of the cluster-wide jobs.\n\
         # TYPE warden_cluster_jobs_leader gauge\nwarden_cluster_jobs_leader {}",
        u8::from(state.registry.is_leader())
    );
    let _ = writeln!(
        out,
        "# HELP warden_cluster_peers_heard Whether this node hears other nodes' changes (cache invalidation).\n\
         # TYPE warden_cluster_peers_heard gauge\nwarden_cluster_peers_heard {}",
        u8::from(state.registry.hearing_peers())
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
