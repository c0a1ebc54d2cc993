//! Host names as the activator compares them: a request's `Host` header and the host of an
//! environment's `status.url`, both lowercased, without port and without a trailing dot.

/// The host a request names in its `Host` header, or `None` when the header is not a host
/// (empty, user info, a path, characters no host has).
pub fn from_header(value: &str) -> Option<String> {
    if value.contains(['@', '/', '?', '#']) {
        return None;
    }
    let authority: http::uri::Authority = value.parse().ok()?;
    let port = authority
        .as_str()
        .get(authority.host().len()..)
        .unwrap_or("?");
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()));
    if !port_ok {
        return None;
    }
    normalize(authority.host())
}

/// The host of an environment's URL (`https://shop-pr-7.preview.example.com/`), if it is an
/// `http` or `https` URL.
pub fn from_url(url: &str) -> Option<String> {
    let uri: http::Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    normalize(authority.host())
}

/// Lowercase, without a trailing dot; only the characters of a DNS name, or a bracketed IPv6
/// address.
fn normalize(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let valid = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            && !host.starts_with('.')
            && !host.contains("..")
    };
    valid.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_header_is_lowercased_without_port_or_trailing_dot() {
        let cases = [
            (
                "Shop-PR-7.Preview.Example.com",
                Some("shop-pr-7.preview.example.com"),
            ),
            ("shop.example.com:8080", Some("shop.example.com")),
            ("shop.example.com.", Some("shop.example.com")),
            ("shop.example.com.:443", Some("shop.example.com")),
            ("127.0.0.1:6443", Some("127.0.0.1")),
            ("[::1]:8080", Some("[::1]")),
            ("[::1]", Some("[::1]")),
            ("", None),
            (":80", None),
            ("user@shop.example.com", None),
            ("shop.example.com/path", None),
            ("shop .example.com", None),
            ("shop..example.com", None),
            ("[not-ip]", None),
            ("shop.example.com:port", None),
        ];
        for (header, expected) in cases {
            assert_eq!(from_header(header).as_deref(), expected, "{header:?}");
        }
    }

    #[test]
    fn the_host_of_a_status_url() {
        let cases = [
            (
                "https://shop-pr-7.preview.example.com/",
                Some("shop-pr-7.preview.example.com"),
            ),
            (
                "http://Shop.Example.com:8080/app?x=1",
                Some("shop.example.com"),
            ),
            ("HTTPS://shop.example.com", Some("shop.example.com")),
            ("ftp://shop.example.com/", None),
            ("shop.example.com", None),
            ("/relative", None),
            ("https://user:pw@shop.example.com/", None),
            ("", None),
        ];
        for (url, expected) in cases {
            assert_eq!(from_url(url).as_deref(), expected, "{url:?}");
        }
    }
}
