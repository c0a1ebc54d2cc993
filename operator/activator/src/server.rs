//! The traffic port: each request is admitted (an origin-form target and a `Host`), routed by
//! its host, reported as activity, then forwarded to a Ready web Pod, or held until one is
//! Ready (and the environment woken), within bounds. Every request gets an answer, counted by
//! its outcome.

use crate::answer;
use crate::config::Config;
use crate::host;
use crate::metrics::{Metrics, Outcome};
use crate::proxy::{self, Backends, Body};
use crate::state::{EnvironmentState, Holds, States};
use crate::table::{Environment, Route, Table};
use crate::writes::Writer;
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// A held request looks at its environment again at least this often (besides every change),
/// so that a write that failed is tried again once it is due.
const RECHECK: Duration = Duration::from_secs(1);
/// After a failed `accept` (e.g. out of file descriptors), the pause before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What the request handlers share.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub table: RwLock<Table>,
    pub states: States,
    pub holds: Holds,
    pub metrics: Arc<Metrics>,
    pub writer: Writer,
    pub pods: Backends,
}

impl Context {
    pub fn table(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn table_mut(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The environment `host` leads to and its Ready web Pods, or the answer (counted) that it
    /// leads to none.
    fn route(&self, host: &str) -> Routed {
        let route = self.table().route(host);
        match route {
            Route::Environment(env, backends) => Routed::To(env, backends),
            Route::Unknown => {
                self.metrics.answered(Outcome::UnknownHost);
                Routed::Answer(answer::text(
                    StatusCode::NOT_FOUND,
                    "no environment is served at this host\n",
                ))
            }
            Route::Ambiguous(_) => {
                self.metrics.answered(Outcome::AmbiguousHost);
                Routed::Answer(answer::text(
                    StatusCode::MISDIRECTED_REQUEST,
                    "more than one environment claims this host\n",
                ))
            }
        }
    }
}

/// Where a request goes: to an environment (with its Ready web Pods), or nowhere, with the
/// answer that says so.
enum Routed {
    To(Environment, Vec<SocketAddr>),
    Answer(Response<Body>),
}

/// Why a request is refused before it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Connect,
    NotAPath,
    HostCount,
    NotAHost,
}

impl Refusal {
    pub fn answer(self) -> Response<Body> {
        match self {
            Self::Connect => {
                answer::text(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not served\n")
            }
            Self::NotAPath => answer::text(
                StatusCode::BAD_REQUEST,
                "only a path is served as the request target\n",
            ),
            Self::HostCount => answer::text(
                StatusCode::BAD_REQUEST,
                "a request needs exactly one Host header\n",
            ),
            Self::NotAHost => {
                answer::text(StatusCode::BAD_REQUEST, "the Host header is not a host\n")
            }
        }
    }
}

/// Accept connections on `listener` and serve them, for ever.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    // The connections are this server's: they end with it (a stopped activator holds no
    // request), and finished ones are reaped as they end.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "accepting a connection");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(ctx, peer, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "a client connection ended");
            }
        });
    }
}

/// Answer one request.
pub async fn handle(
    ctx: Arc<Context>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let host = match admit(request.method(), request.uri(), request.headers()) {
        Ok(host) => host,
        Err(refusal) => {
            ctx.metrics.answered(Outcome::Refused);
            return refusal.answer();
        }
    };
    tracing::debug!(method = %request.method(), %host, path = request.uri().path(), "request");
    let (env, backends) = match ctx.route(&host) {
        Routed::To(env, backends) => (env, backends),
        Routed::Answer(answer) => return answer,
    };
    let state = ctx.states.get(&env.name);
    ctx.writer.request(&env, !backends.is_empty(), &state);
    if backends.is_empty() {
        hold(&ctx, request, peer, &host, state).await
    } else {
        forward(&ctx, request, peer, &state, &backends, Outcome::Proxied).await
    }
}

/// The host of a request the activator serves, or the answer to one it refuses: `CONNECT`,
/// a target that is not a path (absolute-form would name a destination: the activator is not
/// a proxy anyone can point elsewhere), no `Host` or more than one.
pub fn admit(method: &Method, uri: &http::Uri, headers: &HeaderMap) -> Result<String, Refusal> {
    if method == Method::CONNECT {
        return Err(Refusal::Connect);
    }
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return Err(Refusal::NotAPath);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(host::from_header)
            .ok_or(Refusal::NotAHost),
        _ => Err(Refusal::HostCount),
    }
}

/// A browser asking for a page: it gets the "waking up" page rather than a long wait.
pub fn is_browser(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|accept| accept.to_ascii_lowercase().contains("text/html"))
}

/// Hold a request until its environment has a Ready web Pod, within the bounds and the wait.
async fn hold(
    ctx: &Arc<Context>,
    request: Request<Incoming>,
    peer: SocketAddr,
    host: &str,
    mut state: Arc<EnvironmentState>,
) -> Response<Body> {
    let Some(held) = ctx.holds.hold(&state) else {
        ctx.metrics.answered(Outcome::OverLimit);
        return answer::unavailable("too many requests are waiting for this environment to wake\n");
    };
    let browser = is_browser(request.method(), request.headers());
    let wait = if browser {
        ctx.config.browser_wait.min(ctx.config.wake_timeout)
    } else {
        ctx.config.wake_timeout
    };
    let deadline = Instant::now() + wait;
    let mut changes = state.subscribe();
    loop {
        let (env, backends) = match ctx.route(host) {
            Routed::To(env, backends) => (env, backends),
            Routed::Answer(answer) => return answer,
        };
        if env.name != state.name() {
            state = ctx.states.get(&env.name);
            changes = state.subscribe();
            continue;
        }
        if !backends.is_empty() {
            drop(held);
            return forward(
                ctx,
                request,
                peer,
                &state,
                &backends,
                Outcome::HeldThenProxied,
            )
            .await;
        }
        ctx.writer.request(&env, false, &state);
        tokio::select! {
            Ok(()) = changes.changed() => {}
            () = tokio::time::sleep(RECHECK) => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    if browser {
        ctx.metrics.answered(Outcome::BrowserPage);
        answer::waking_page()
    } else {
        ctx.metrics.answered(Outcome::WakeTimeout);
        answer::unavailable("the environment did not wake in time\n")
    }
}

async fn forward(
    ctx: &Context,
    request: Request<Incoming>,
    peer: SocketAddr,
    state: &EnvironmentState,
    backends: &[SocketAddr],
    outcome: Outcome,
) -> Response<Body> {
    let order = state.order(backends);
    match proxy::forward(&ctx.pods, request, peer.ip(), &order).await {
        Ok(response) => {
            ctx.metrics.answered(outcome);
            response
        }
        Err(err) => {
            let cause = std::error::Error::source(&err).map(ToString::to_string);
            tracing::warn!(environment = state.name(), error = %err, cause, "forwarding a request");
            ctx.metrics.answered(Outcome::BackendError);
            answer::text(
                StatusCode::BAD_GATEWAY,
                "the environment's web Pod could not be reached\n",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(method: &str, target: &str, hosts: &[&str]) -> Result<String, u16> {
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let uri: http::Uri = target.parse().expect("a target");
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(header::HOST, host.parse().expect("a value"));
        }
        admit(&method, &uri, &headers).map_err(|r| r.answer().status().as_u16())
    }

    #[test]
    fn admits_a_path_with_one_host_and_nothing_that_names_a_destination() {
        assert_eq!(
            admitted("GET", "/a?b=c", &["Shop.example.com:80"]),
            Ok("shop.example.com".to_owned())
        );
        assert_eq!(admitted("GET", "/", &[]), Err(400), "no Host");
        assert_eq!(
            admitted("GET", "/", &["a.example.com", "b.example.com"]),
            Err(400)
        );
        assert_eq!(admitted("GET", "/", &["a b"]), Err(400));
        assert_eq!(
            admitted("GET", "http://127.0.0.1:6443/api", &["shop.example.com"]),
            Err(400),
            "absolute-form"
        );
        assert_eq!(
            admitted("CONNECT", "127.0.0.1:6443", &["127.0.0.1:6443"]),
            Err(405)
        );
        assert_eq!(admitted("OPTIONS", "*", &["shop.example.com"]), Err(400));
    }

    #[test]
    fn a_browser_is_a_get_that_accepts_html() {
        let accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, value.parse().expect("a value"));
            headers
        };
        let page = accept("text/html,application/xhtml+xml,*/*;q=0.8");
        assert!(is_browser(&Method::GET, &page));
        assert!(!is_browser(&Method::POST, &page));
        assert!(!is_browser(&Method::GET, &accept("application/json")));
        assert!(!is_browser(&Method::GET, &HeaderMap::new()));
    }
}
