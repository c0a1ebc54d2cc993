//! The activator's forwarding between a client and a backend on loopback, without a cluster:
//! a front server that forwards every request with `appenv_activator::proxy::forward` to a
//! static list of backends (what the routing table gives the activator), and local backends
//! that echo headers, stream, or switch protocols.

use appenv_activator::proxy::{self, Body};
use bytes::Bytes;
use futures::SinkExt as _;
use futures::channel::{mpsc, oneshot};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Serve HTTP/1.1 (with upgrades) on a fresh loopback port with `handler`.
async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let answer = handler(request, peer);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// The activator's forwarding in front of `backends`.
async fn front(backends: Vec<SocketAddr>) -> SocketAddr {
    let pods = proxy::backends();
    let backends = Arc::new(backends);
    serve(move |request, peer: SocketAddr| {
        let (pods, backends) = (pods.clone(), backends.clone());
        async move {
            match proxy::forward(&pods, request, peer.ip(), &backends).await {
                Ok(response) => response,
                Err(_) => text(StatusCode::BAD_GATEWAY, "unreachable"),
            }
        }
    })
    .await
}

fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(text)).map_err(|n| match n {}).boxed());
    *response.status_mut() = status;
    response
}

/// A backend that answers with the request's method, target and headers, one per line.
async fn echo_headers() -> SocketAddr {
    serve(|request: Request<Incoming>, _| async move {
        let mut lines = vec![format!("{} {}", request.method(), request.uri())];
        let mut headers: Vec<String> = request
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        headers.sort();
        lines.extend(headers);
        let body = lines.join("\n") + "\n";
        Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed())
    })
    .await
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.expect("connects");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection.with_upgrades());
    sender
}

fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|n| match n {}).boxed()
}

async fn body_text(response: Response<Incoming>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

#[tokio::test]
async fn the_backend_gets_the_original_host_and_x_forwarded_headers_and_no_hop_by_hop_header() {
    let backend = echo_headers().await;
    let mut client = connect(front(vec![backend]).await).await;
    let request = Request::get("/orders?page=2")
        .header("host", "Shop-PR-7.preview.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("accept", "text/plain")
        .body(empty())
        .expect("a request");
    let response = client.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let seen = body_text(response).await;
    let expected = [
        "GET /orders?page=2",
        "accept: text/plain",
        "host: Shop-PR-7.preview.example.com",
        "x-forwarded-for: 203.0.113.9, 127.0.0.1",
        "x-forwarded-host: Shop-PR-7.preview.example.com",
        "x-forwarded-proto: http",
    ];
    assert_eq!(seen.lines().collect::<Vec<_>>(), expected, "{seen}");
}

#[tokio::test]
async fn a_streamed_response_reaches_the_client_chunk_by_chunk() {
    // The backend sends its second chunk only once the client has read the first: a proxy
    // that buffered the body would never answer.
    let (first_read_tx, first_read_rx) = oneshot::channel::<()>();
    let first_read = Arc::new(Mutex::new(Some(first_read_rx)));
    let backend = serve(move |_, _| {
        let first_read = first_read.lock().expect("lock").take();
        async move {
            let (mut tx, rx) = mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(1);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from("first\n")))).await;
                if let Some(first_read) = first_read {
                    let _ = first_read.await;
                }
                let _ = tx.send(Ok(Frame::data(Bytes::from("second\n")))).await;
            });
            Response::new(BodyExt::boxed(StreamBody::new(rx)))
        }
    })
    .await;
    let mut client = connect(front(vec![backend]).await).await;
    let request = Request::get("/events")
        .header("host", "shop.example.com")
        .body(empty())
        .expect("a request");
    let response = client.send_request(request).await.expect("an answer");
    let mut body = response.into_body();
    let mut chunks = Vec::new();
    let mut first_read_tx = Some(first_read_tx);
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("a frame").into_data() {
                chunks.push(String::from_utf8(data.to_vec()).expect("UTF-8"));
                if let Some(tx) = first_read_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the first chunk arrived before the body ended (not buffered)");
    assert_eq!(chunks.concat(), "first\nsecond\n");
}

/// A backend that switches to the `echo` protocol and sends back what it reads.
async fn upgrade_echo() -> SocketAddr {
    serve(|mut request: Request<Incoming>, _| async move {
        let asked = request
            .headers()
            .get("upgrade")
            .is_some_and(|v| v == "echo");
        if !asked {
            return text(StatusCode::BAD_REQUEST, "ask for echo");
        }
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut read, &mut write).await;
            }
        });
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert("upgrade", "echo".parse().expect("a value"));
        headers.insert("connection", "upgrade".parse().expect("a value"));
        response
    })
    .await
}

#[tokio::test]
async fn an_upgraded_connection_is_tunnelled_both_ways() {
    let backend = upgrade_echo().await;
    let mut client = connect(front(vec![backend]).await).await;
    let request = Request::get("/socket")
        .header("host", "shop.example.com")
        .header("connection", "Upgrade")
        .header("upgrade", "echo")
        .body(empty())
        .expect("a request");
    let response = client.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers().get("upgrade").map(|v| v.as_bytes()),
        Some(&b"echo"[..])
    );
    let upgraded = hyper::upgrade::on(response).await.expect("upgraded");
    let mut io = TokioIo::new(upgraded);
    for message in ["ping", "a longer message over the same connection"] {
        io.write_all(message.as_bytes()).await.expect("write");
        let mut back = vec![0; message.len()];
        io.read_exact(&mut back).await.expect("read back");
        assert_eq!(String::from_utf8(back).expect("UTF-8"), message);
    }
}

#[tokio::test]
async fn a_refused_connection_is_tried_on_the_next_pod_only_for_a_bodiless_idempotent_request() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("an address")
    };
    let backend = echo_headers().await;
    let front = front(vec![closed, backend]).await;
    let mut client = connect(front).await;
    let get = Request::get("/")
        .header("host", "shop.example.com")
        .body(empty())
        .expect("a request");
    let response = client.send_request(get).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK, "the second Pod answered");
    let _ = body_text(response).await;
    let post = Request::post("/orders")
        .header("host", "shop.example.com")
        .body(Full::new(Bytes::from("{}")).map_err(|n| match n {}).boxed())
        .expect("a request");
    let response = client.send_request(post).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "not sent twice");
}
