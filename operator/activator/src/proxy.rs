//! Forwarding a request to a web Pod and its answer back: bodies streamed both ways, HTTP/1.1
//! upgrades (WebSocket) tunnelled, hop-by-hop headers removed, `X-Forwarded-*` set, the
//! original `Host` kept. The connection goes only to the address the routing table gave: the
//! request's target and headers never choose where.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The body of every request and response the activator sends.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The keep-alive pool of connections to the Pods.
pub type Backends = Client<HttpConnector, Body>;

/// A Pod that does not accept a connection within this is taken as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections to Pods are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(60);

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Headers that concern one connection, never forwarded (RFC 9110 7.6.1), besides those the
/// `Connection` header names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The client of the Pods: HTTP/1.1, plain connections to IP addresses, kept alive.
pub fn backends() -> Backends {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// The protocol a request asks to switch to: `Upgrade`, when `Connection` names `upgrade`.
pub fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    connection_tokens(headers)
        .any(|token| token.eq_ignore_ascii_case("upgrade"))
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Remove the hop-by-hop headers, those `Connection` names included.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A request's headers as the Pod gets them: without hop-by-hop headers (but asking for the
/// `upgrade` the client asked for), `X-Forwarded-For` with the client's address appended,
/// `X-Forwarded-Host` the original `Host` unless set, `X-Forwarded-Proto` `http` unless set.
/// `Host` is kept.
pub fn request_headers(headers: &mut HeaderMap, client: IpAddr, upgrade: Option<&HeaderValue>) {
    strip_hop_by_hop(headers);
    let mut forwarded_for: Vec<u8> = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        forwarded_for.extend_from_slice(value.as_bytes());
        forwarded_for.extend_from_slice(b", ");
    }
    forwarded_for.extend_from_slice(client.to_string().as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
}

/// A response's headers as the client gets them: without hop-by-hop headers, except the
/// `Upgrade` of a switch of protocols.
pub fn response_headers(headers: &mut HeaderMap, switching: bool) {
    let upgrade = switching
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no web Pod to send it to")]
    NoBackend,
    #[error("building the request to {0}")]
    Build(SocketAddr, #[source] http::Error),
    #[error("forwarding to {0}")]
    Backend(SocketAddr, #[source] hyper_util::client::legacy::Error),
    #[error("{0} switched protocols without being asked to")]
    UnaskedUpgrade(SocketAddr),
}

/// Forward `request` from `client` to the first of `backends` (in the order to try them); a
/// request without a body whose method is idempotent tries the next one if the first refuses
/// the connection.
pub async fn forward(
    pods: &Backends,
    mut request: Request<Incoming>,
    client: IpAddr,
    backends: &[SocketAddr],
) -> Result<Response<Body>, ForwardError> {
    let upgrade = upgrade_of(request.headers());
    let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    request_headers(&mut headers, client, upgrade.as_ref());
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let retry = parts.method.is_idempotent() && body.is_end_stream() && upgrade.is_none();
    let mut body = Some(body.boxed());
    let attempts = if retry { 2 } else { 1 };
    let mut failure = ForwardError::NoBackend;
    for &addr in backends.iter().take(attempts) {
        let body = body.take().unwrap_or_else(empty);
        let outgoing = build(&parts.method, addr, &target, &headers, body)?;
        match pods.request(outgoing).await {
            Ok(response) => return answer(response, addr, client_side),
            Err(err) if err.is_connect() => {
                tracing::debug!(backend = %addr, error = %err, "a web Pod refused the connection");
                failure = ForwardError::Backend(addr, err);
            }
            Err(err) => return Err(ForwardError::Backend(addr, err)),
        }
    }
    Err(failure)
}

fn build(
    method: &Method,
    addr: SocketAddr,
    target: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Request<Body>, ForwardError> {
    let uri: Uri = format!("http://{addr}{target}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| ForwardError::Build(addr, e.into()))?;
    let mut request = Request::builder()
        .method(method.clone())
        .uri(uri)
        .body(body)
        .map_err(|e| ForwardError::Build(addr, e))?;
    *request.headers_mut() = headers.clone();
    Ok(request)
}

fn answer(
    mut response: Response<Incoming>,
    addr: SocketAddr,
    client_side: Option<OnUpgrade>,
) -> Result<Response<Body>, ForwardError> {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let Some(client_side) = client_side else {
            return Err(ForwardError::UnaskedUpgrade(addr));
        };
        let pod_side = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(client_side, pod_side, addr));
    }
    response_headers(response.headers_mut(), switching);
    Ok(response.map(BodyExt::boxed))
}

/// Both ends of an upgraded connection, copied to each other until either closes.
async fn tunnel(client: OnUpgrade, pod: OnUpgrade, addr: SocketAddr) {
    let (client, pod) = tokio::join!(client, pod);
    match (client, pod) {
        (Ok(client), Ok(pod)) => {
            let (mut client, mut pod) = (TokioIo::new(client), TokioIo::new(pod));
            if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut pod).await {
                tracing::debug!(backend = %addr, error = %err, "an upgraded connection ended");
            }
        }
        (Err(err), _) | (_, Err(err)) => {
            tracing::debug!(backend = %addr, error = %err, "an upgrade did not complete");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("a name"),
                HeaderValue::from_str(value).expect("a value"),
            );
        }
        map
    }

    fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        all.sort();
        all
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_request_loses_hop_by_hop_headers_and_gains_x_forwarded() {
        let mut map = headers(&[
            ("host", "Shop.example.com:8080"),
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.0.0.1"),
            ("accept", "*/*"),
        ]);
        request_headers(&mut map, "10.1.2.3".parse().expect("ip"), None);
        assert_eq!(
            pairs(&map),
            owned(&[
                ("accept", "*/*"),
                ("host", "Shop.example.com:8080"),
                ("x-forwarded-for", "203.0.113.7, 10.0.0.1, 10.1.2.3"),
                ("x-forwarded-host", "Shop.example.com:8080"),
                ("x-forwarded-proto", "http"),
            ])
        );
    }

    #[test]
    fn x_forwarded_host_and_proto_set_upstream_are_kept() {
        let mut map = headers(&[
            ("host", "shop.example.com"),
            ("x-forwarded-host", "public.example.com"),
            ("x-forwarded-proto", "https"),
        ]);
        request_headers(&mut map, "::1".parse().expect("ip"), None);
        assert_eq!(
            pairs(&map),
            owned(&[
                ("host", "shop.example.com"),
                ("x-forwarded-for", "::1"),
                ("x-forwarded-host", "public.example.com"),
                ("x-forwarded-proto", "https"),
            ])
        );
    }

    #[test]
    fn an_upgrade_is_asked_for_again_and_answered_with_its_protocol() {
        let asked = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let protocol = upgrade_of(&asked);
        assert_eq!(protocol, Some(HeaderValue::from_static("websocket")));
        assert_eq!(upgrade_of(&headers(&[("upgrade", "websocket")])), None);
        let mut map = asked.clone();
        request_headers(&mut map, "10.0.0.1".parse().expect("ip"), protocol.as_ref());
        assert_eq!(
            map.get("connection").map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert_eq!(
            map.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );

        let mut switching = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "x"),
        ]);
        response_headers(&mut switching, true);
        assert_eq!(
            pairs(&switching),
            owned(&[
                ("connection", "upgrade"),
                ("sec-websocket-accept", "x"),
                ("upgrade", "websocket"),
            ])
        );
        let mut ordinary = headers(&[("connection", "close"), ("upgrade", "h2c"), ("x", "1")]);
        response_headers(&mut ordinary, false);
        assert_eq!(pairs(&ordinary), owned(&[("x", "1")]));
    }
}
