//! The operator's HTTP endpoints: `/metrics` (Prometheus text format 0.0.4), `/healthz` (the process
//! serves) and `/readyz` (the API server was reached and the CRD listed at start; a standby
//! replica is ready too, and an API server outage later does not withdraw it: the operator
//! rides it out, see the failure tests).

use crate::metrics::{CONTENT_TYPE, Metrics};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
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

async fn metrics_text(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "encoding the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.readiness.0.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness })
}

/// Serve the endpoints on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> std::io::Result<()> {
    let app = router(metrics, readiness);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Category;
    use appenv_api::Phase;
    use prometheus_parse::{Scrape, Value};
    use std::collections::BTreeMap;
    use tower::ServiceExt as _;

    /// `GET /metrics` through the router the server serves: its content type and body.
    async fn scrape(metrics: &Arc<Metrics>) -> (String, String) {
        let request = axum::http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .expect("request");
        let response = router(metrics.clone(), Arc::default())
            .oneshot(request)
            .await
            .expect("answers");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            content_type,
            String::from_utf8(body.to_vec()).expect("UTF-8"),
        )
    }

    /// Every sample of a scrape as `name{label=value,...}` (labels sorted) with its value;
    /// a histogram as one entry per bucket, `le` last.
    fn series(text: &str) -> BTreeMap<String, Value> {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        scrape
            .samples
            .into_iter()
            .map(|sample| {
                let mut labels: Vec<String> = sample
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                labels.sort();
                (
                    format!("{}{{{}}}", sample.metric, labels.join(",")),
                    sample.value,
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn serves_every_metric_family_with_its_type_and_labels() {
        let metrics = Arc::new(Metrics::default());
        drop(metrics.reconcile("a"));
        drop(metrics.reconcile("b"));
        metrics.error(Category::Apply);
        metrics.error(Category::Apply);
        metrics.error(Category::Status);
        metrics.phase("a", Phase::Ready);
        metrics.phase("b", Phase::Ready);
        metrics.phase("c", Phase::Invalid);
        let patch = axum::http::Method::PATCH;
        let uri = "/apis/apps/v1/namespaces/pr-1/deployments/web?fieldManager=appenv";
        for _ in 0..3 {
            metrics.requests.record(&patch, &uri.parse().expect("uri"));
        }

        let (content_type, text) = scrape(&metrics).await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let samples = series(&text);
        let expected = [
            ("appenv_reconciles_total{}", Value::Counter(2.0)),
            (
                "appenv_reconcile_errors_total{category=ApplyFailed}",
                Value::Counter(2.0),
            ),
            (
                "appenv_reconcile_errors_total{category=StatusFailed}",
                Value::Counter(1.0),
            ),
            ("appenv_environments{phase=Ready}", Value::Gauge(2.0)),
            ("appenv_environments{phase=Invalid}", Value::Gauge(1.0)),
            (
                "appenv_api_requests_total{group=apps,resource=deployments,verb=patch}",
                Value::Counter(3.0),
            ),
            (
                "appenv_reconcile_duration_seconds_count{}",
                Value::Untyped(2.0),
            ),
        ];
        for (series, value) in expected {
            assert_eq!(samples.get(series), Some(&value), "{series} in {text}");
        }
        let Some(Value::Histogram(buckets)) = samples.get("appenv_reconcile_duration_seconds{}")
        else {
            panic!("no duration histogram in {text}");
        };
        let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
        let mut all = crate::metrics::DURATION_BUCKETS.to_vec();
        all.push(f64::INFINITY);
        assert_eq!(bounds, all, "{text}");
        assert_eq!(buckets.last().map(|b| b.count), Some(2.0), "{text}");
        // Nothing else, and no leader without leader election.
        let names: std::collections::BTreeSet<&str> = samples
            .keys()
            .map(|series| series.split('{').next().unwrap_or_default())
            .collect();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            [
                "appenv_api_requests_total",
                "appenv_environments",
                "appenv_reconcile_duration_seconds",
                "appenv_reconcile_duration_seconds_count",
                "appenv_reconcile_duration_seconds_sum",
                "appenv_reconcile_errors_total",
                "appenv_reconciles_total",
            ],
            "{text}"
        );

        metrics.leader(true);
        let (_, text) = scrape(&metrics).await;
        assert_eq!(
            series(&text).get("appenv_leader{}"),
            Some(&Value::Gauge(1.0)),
            "{text}"
        );
        metrics.leader(false);
        let (_, text) = scrape(&metrics).await;
        assert!(text.contains("appenv_leader 0\n"), "{text}");
    }
}
