//! Who may drive the API from a browser: nobody. Webhook senders and operators' tools send no
//! `Origin`; a web page does, so a request whose `Origin` (or `Sec-Fetch-Site`) is not this
//! API itself is refused before any handler runs. That stops a page in a local browser from
//! triggering checks with a "simple" cross-origin POST.
//!
//! DNS rebinding makes the page same-origin under the attacker's name, so the `Host` header must
//! also name this machine: an IP address, `localhost` (or `*.localhost`), or a name the operator
//! listed. On loopback this always holds; beyond it, listing names turns the check on (every
//! endpoint there already needs a token or a signature).
//!
//! A body typed `text/plain`, `application/x-www-form-urlencoded` or `multipart/form-data` is the
//! one kind a page may send anywhere without asking the server first (no CORS preflight); no
//! sender we serve uses them, so such a request is refused as well, for a browser that sends
//! neither `Origin` nor `Sec-Fetch-Site`. It reads headers only, never a body.

use axum::http::HeaderMap;
use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN};

/// Why a request was refused, for the 403 body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    CrossOrigin,
    UnknownHost,
    FormBody,
}

impl Refused {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refused::CrossOrigin => {
                "cross-origin requests are refused: the API is for webhook senders and tools, not web pages"
            }
            Refused::UnknownHost => {
                "the Host header names neither this machine nor a host the API was told to answer to (--api-host)"
            }
            Refused::FormBody => {
                "bodies typed text/plain or as a form are refused: send JSON (Content-Type: application/json, or the registry's own event type) or no body"
            }
        }
    }

    /// 403 for who is asking, 415 for what was sent.
    pub(crate) fn status(self) -> axum::http::StatusCode {
        match self {
            Refused::CrossOrigin | Refused::UnknownHost => axum::http::StatusCode::FORBIDDEN,
            Refused::FormBody => axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// The content types a web page may send cross-origin without a preflight (the Fetch
/// standard's CORS-safelisted `Content-Type` values), compared by their essence.
fn is_form_body(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
        .iter()
        .any(|simple| essence.eq_ignore_ascii_case(simple))
}

/// `host` and `port` of an authority (`name`, `name:port`, `[v6]:port`), lower-cased.
fn split_authority(authority: &str) -> (String, Option<u16>) {
    let authority = authority.trim().to_ascii_lowercase();
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host.to_owned(), port);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_owned(), port.parse().ok()),
        _ => (authority, None),
    }
}

fn is_local_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" || host.ends_with(".localhost")
}

/// Whether `host` (a `Host` header value) is one this API answers to.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let (name, _) = split_authority(host);
    let bare = host.trim().trim_end_matches('.').to_ascii_lowercase();
    is_local_name(&name)
        || allowed
            .iter()
            .any(|listed| *listed == bare || *listed == name.trim_end_matches('.'))
}

/// Whether `origin` (an `Origin` header value) is this API at `host`.
fn same_origin(origin: &str, host: &str) -> bool {
    let Ok(url) = url::Url::parse(origin.trim()) else {
        return false;
    };
    let (Some(origin_host), Some(origin_port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let origin_host = origin_host.trim_start_matches('[').trim_end_matches(']');
    let (name, port) = split_authority(host);
    let port = port.or(match url.scheme() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    });
    name == origin_host.to_ascii_lowercase() && port == Some(origin_port)
}

/// The refusal for a request with these headers, if any. `check_host`: whether the `Host` header
/// must name this machine or a listed host.
pub(crate) fn refusal(headers: &HeaderMap, check_host: bool, allowed: &[String]) -> Option<Refused> {
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    if check_host && host.is_some_and(|host| !host_allowed(host, allowed)) {
        return Some(Refused::UnknownHost);
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && matches!(site.trim(), "cross-site" | "same-site")
    {
        return Some(Refused::CrossOrigin);
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .zip(host)
            .is_some_and(|(origin, host)| same_origin(origin, host));
        if !same {
            return Some(Refused::CrossOrigin);
        }
    }
    if headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.to_str().is_ok_and(is_form_body))
    {
        return Some(Refused::FormBody);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use rstest::rstest;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[rstest]
    #[case::tool_on_loopback(&[("host", "127.0.0.1:8080")], true, None)]
    #[case::localhost(&[("host", "localhost:8080")], true, None)]
    #[case::ipv6(&[("host", "[::1]:8080")], true, None)]
    #[case::no_host_header(&[], true, None)]
    #[case::rebinding_name_on_loopback(&[("host", "attacker.example:8080")], true, Some(Refused::UnknownHost))]
    #[case::listed_name(&[("host", "hooks.example.com")], true, None)]
    #[case::listed_name_any_case_with_port(&[("host", "Hooks.Example.com:443")], true, None)]
    #[case::unlisted_name_unchecked_beyond_loopback(&[("host", "other.example")], false, None)]
    #[case::cross_origin_page(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")], true, Some(Refused::CrossOrigin))]
    #[case::other_local_port(&[("host", "localhost:8080"), ("origin", "http://localhost:3000")], true, Some(Refused::CrossOrigin))]
    #[case::opaque_origin(&[("host", "127.0.0.1:8080"), ("origin", "null")], true, Some(Refused::CrossOrigin))]
    #[case::same_origin(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")], true, None)]
    #[case::same_origin_default_port(&[("host", "hooks.example.com"), ("origin", "https://hooks.example.com")], true, None)]
    #[case::fetch_metadata_cross_site(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")], true, Some(Refused::CrossOrigin))]
    #[case::fetch_metadata_typed_url(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "none")], true, None)]
    #[case::json_body(&[("host", "127.0.0.1:8080"), ("content-type", "application/json")], true, None)]
    #[case::registry_event_body(&[("host", "127.0.0.1:8080"), ("content-type", "application/vnd.docker.distribution.events.v1+json")], true, None)]
    #[case::text_body_without_origin(&[("host", "127.0.0.1:8080"), ("content-type", "text/plain;charset=UTF-8")], true, Some(Refused::FormBody))]
    #[case::form_body(&[("host", "127.0.0.1:8080"), ("content-type", "Application/X-WWW-Form-Urlencoded")], true, Some(Refused::FormBody))]
    #[case::multipart_body(&[("host", "127.0.0.1:8080"), ("content-type", "multipart/form-data; boundary=x")], true, Some(Refused::FormBody))]
    fn browsers_cannot_drive_the_api(
        #[case] pairs: &[(&'static str, &str)],
        #[case] check_host: bool,
        #[case] expected: Option<Refused>,
    ) {
        let allowed = vec!["hooks.example.com".to_owned()];
        assert_eq!(refusal(&headers(pairs), check_host, &allowed), expected);
    }
}
