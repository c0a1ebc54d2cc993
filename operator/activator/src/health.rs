//! The health port: `/healthz` (the process serves), `/readyz` (both watches have listed:
//! the routing table is complete) and `/metrics`.

use crate::metrics::{CONTENT_TYPE, Metrics};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Which watches have listed their objects at least once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Listed {
    pub environments: bool,
    pub pods: bool,
}

impl Listed {
    pub fn all(self) -> bool {
        self.environments && self.pods
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    listed: watch::Receiver<Listed>,
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
    if state.listed.borrow().all() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the watches have not listed yet",
        )
    }
}

fn router(metrics: Arc<Metrics>, listed: watch::Receiver<Listed>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, listed })
}

/// Serve the endpoints on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    listed: watch::Receiver<Listed>,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, listed)).await
}
