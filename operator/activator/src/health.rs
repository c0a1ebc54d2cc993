//! The health port: `/healthz` (the process serves), `/readyz` (both watches have listed, so
//! the routing table is complete, and the process is not draining before it stops) and
//! `/metrics`.

use crate::metrics::{CONTENT_TYPE, Metrics};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What `/readyz` answers from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The AppEnvironment watch has listed them once.
    pub environments: bool,
    /// The web Pod watch has listed them once.
    pub pods: bool,
    /// The process is about to stop: it still serves, but asks not to be sent more.
    pub draining: bool,
}

impl Readiness {
    /// Both watches have listed.
    pub fn listed(self) -> bool {
        self.environments && self.pods
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: watch::Receiver<Readiness>,
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
    let readiness = *state.readiness.borrow();
    if readiness.draining {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else if readiness.listed() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the watches have not listed yet",
        )
    }
}

fn router(metrics: Arc<Metrics>, readiness: watch::Receiver<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness })
}

/// Serve the endpoints on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: watch::Receiver<Readiness>,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, readiness)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("a request");
        let response = router.oneshot(request).await.expect("an answer");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_once_both_watches_listed_and_not_while_draining() {
        let metrics = Arc::new(Metrics::default());
        let (readiness, receiver) = watch::channel(Readiness::default());
        let router = router(metrics, receiver);
        assert_eq!(
            get(router.clone(), "/healthz").await,
            (StatusCode::OK, "ok".to_owned())
        );
        assert_eq!(
            get(router.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.send_modify(|r| r.environments = true);
        assert_eq!(
            get(router.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.send_modify(|r| r.pods = true);
        assert_eq!(
            get(router.clone(), "/readyz").await,
            (StatusCode::OK, "ok".to_owned())
        );
        readiness.send_modify(|r| r.draining = true);
        assert_eq!(
            get(router.clone(), "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "stopping".to_owned())
        );
        let (status, text) = get(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("# TYPE appenv_activator_held_requests gauge"),
            "{text}"
        );
    }
}
