//! The operator's HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the process
//! serves) and `/readyz` (the API server was reached and the CRD listed at start; a standby
//! replica is ready too, and an API server outage later does not withdraw it: the operator
//! rides it out, see the failure tests).

use crate::metrics::{DURATION_BUCKETS, Metrics};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the controller is ready (set once its watches run).
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The metrics in Prometheus text format (version 0.0.4).
pub fn render(metrics: &Metrics) -> String {
    let counts = metrics.snapshot();
    let mut out = String::new();
    let total = counts.reconciles_total;
    let _ = writeln!(
        out,
        "# HELP appenv_reconciles_total Reconciles of AppEnvironments."
    );
    let _ = writeln!(out, "# TYPE appenv_reconciles_total counter");
    let _ = writeln!(out, "appenv_reconciles_total {total}");
    let _ = writeln!(
        out,
        "# HELP appenv_reconcile_errors_total Failed reconciles by error category."
    );
    let _ = writeln!(out, "# TYPE appenv_reconcile_errors_total counter");
    for (category, n) in &counts.errors {
        let _ = writeln!(
            out,
            "appenv_reconcile_errors_total{{category=\"{category}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP appenv_reconcile_duration_seconds Time a reconcile took."
    );
    let _ = writeln!(out, "# TYPE appenv_reconcile_duration_seconds histogram");
    let mut cumulative = 0;
    for (bound, n) in DURATION_BUCKETS.iter().zip(counts.duration_buckets) {
        cumulative += n;
        let _ = writeln!(
            out,
            "appenv_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "appenv_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "appenv_reconcile_duration_seconds_sum {}",
        counts.duration_sum.as_secs_f64()
    );
    let _ = writeln!(out, "appenv_reconcile_duration_seconds_count {cumulative}");
    let _ = writeln!(out, "# HELP appenv_environments AppEnvironments by phase.");
    let _ = writeln!(out, "# TYPE appenv_environments gauge");
    let mut by_phase: BTreeMap<&str, u64> = BTreeMap::new();
    for phase in counts.phases.values() {
        *by_phase.entry(phase.as_str()).or_default() += 1;
    }
    for (phase, n) in by_phase {
        let _ = writeln!(out, "appenv_environments{{phase=\"{phase}\"}} {n}");
    }
    if let Some(leading) = counts.leader {
        let _ = writeln!(
            out,
            "# HELP appenv_leader Whether this replica holds the leader-election Lease."
        );
        let _ = writeln!(out, "# TYPE appenv_leader gauge");
        let _ = writeln!(out, "appenv_leader {}", u8::from(leading));
    }
    let _ = writeln!(
        out,
        "# HELP appenv_api_requests_total Requests to the Kubernetes API by verb and resource."
    );
    let _ = writeln!(out, "# TYPE appenv_api_requests_total counter");
    for (request, n) in metrics.requests.snapshot() {
        let _ = writeln!(
            out,
            "appenv_api_requests_total{{verb=\"{}\",group=\"{}\",resource=\"{}\"}} {n}",
            request.verb, request.group, request.resource
        );
    }
    out
}

async fn metrics_text(State(state): State<AppState>) -> String {
    render(&state.metrics)
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.readiness.0.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serve the endpoints on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        drop(metrics.reconcile("a"));
        drop(metrics.reconcile("b"));
        metrics.error("ApplyFailed");
        metrics.phase("a", "Ready");
        metrics.phase("b", "Ready");
        let text = render(&metrics);
        assert!(text.contains("appenv_reconciles_total 2\n"), "{text}");
        assert!(text.contains("appenv_reconcile_errors_total{category=\"ApplyFailed\"} 1\n"));
        assert!(text.contains("appenv_reconcile_duration_seconds_count 2\n"));
        assert!(text.contains("appenv_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("appenv_environments{phase=\"Ready\"} 2\n"));
        assert!(
            !text.contains("appenv_leader"),
            "no leader election, no gauge: {text}"
        );
        metrics.leader(true);
        assert!(render(&metrics).contains("appenv_leader 1\n"));
    }
}
