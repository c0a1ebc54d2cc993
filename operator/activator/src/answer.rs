//! The answers the activator gives itself, when it does not forward a request.

use crate::proxy::Body;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full};

/// `Retry-After` of a 503 for a request that could not be held or waited too long.
pub const RETRY_AFTER_SECONDS: u64 = 5;
/// `Retry-After` of the "waking up" page, as often as it reloads itself.
pub const PAGE_RETRY_SECONDS: u64 = 2;

/// The page a browser gets while its environment wakes: it reloads itself.
pub const WAKING_PAGE: &str = "<!doctype html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta http-equiv=\"refresh\" content=\"2\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>Waking up</title>
<style>body{font-family:system-ui,sans-serif;margin:20vh auto;max-width:32rem;text-align:center;color:#333}</style>
</head>
<body>
<h1>This preview is waking up</h1>
<p>It was asleep while nobody used it. This page reloads by itself in a moment.</p>
</body>
</html>
";

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A short plain-text answer.
pub fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", text)
}

/// 503 with `Retry-After`.
pub fn unavailable(text: &'static str) -> Response<Body> {
    let mut response = self::text(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

/// 503 with the "waking up" page.
pub fn waking_page() -> Response<Body> {
    let mut response = full(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/html; charset=utf-8",
        WAKING_PAGE,
    );
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(PAGE_RETRY_SECONDS));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
