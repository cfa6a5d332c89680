//! What a connection may cost before it is authenticated, driven over raw loopback TCP the way
//! an attacker would (a request head with no body, half a body, half a head, idle sockets, a
//! browser's headers). The API is served in-process with its real server; no registry is
//! contacted (the watch loop never runs), since none of this reaches one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_api::{Api, ApiConfig, ListenAddr, Server};
use registry_core::Secret;
use registry_core::client::{RegistryClient, Transport, TransportConfig};
use rstest::rstest;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use watcher::{MonitorOnly, RegistrySource, WatchSet, Watcher, WatcherConfig};

const HOOK_TOKEN: &str = "hook-token-limits";
const API_TOKEN: &str = "api-token-limits";
const GITHUB_SECRET: &str = "github-secret-limits";

struct Served {
    addr: SocketAddr,
    _server: Server,
    _watcher: Watcher,
}

async fn serve(change: impl FnOnce(&mut ApiConfig)) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut set = WatchSet::new();
    set.add_image("127.0.0.1:9/org/app:latest".parse().expect("valid"))
        .expect("watchable");
    let transport = Transport::new(TransportConfig::default()).expect("transport");
    let source = RegistrySource::new(Arc::new(RegistryClient::new(Arc::new(transport))));
    let watcher =
        Watcher::new(set, Arc::new(source), Arc::new(MonitorOnly), WatcherConfig::default()).expect("watcher");
    let mut config = ApiConfig::for_listen(&ListenAddr::from(addr));
    config.hook_token = Some(Secret::new(HOOK_TOKEN));
    config.api_token = Some(Secret::new(API_TOKEN));
    config.github_secret = Some(Secret::new(GITHUB_SECRET));
    change(&mut config);
    let api = Api::new(config, watcher.trigger(), watcher.status());
    Served {
        addr,
        _server: Server::serve(listener, api).expect("serve"),
        _watcher: watcher,
    }
}

/// Sends `bytes` and reads until the server answers a full head or closes; the status code
/// (`None` when closed without an answer) and how long it took.
async fn exchange(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> (Option<u16>, String, Duration) {
    let started = Instant::now();
    stream.write_all(bytes).await.expect("writes");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&answer);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within {limit:?}");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok());
    (status, text, started.elapsed())
}

async fn request(addr: SocketAddr, bytes: &[u8]) -> (Option<u16>, String, Duration) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    exchange(&mut stream, bytes, Duration::from_secs(5)).await
}

fn head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
    )
}

/// A wrong token is refused from the head: the 1 MiB body it announced is never waited for.
#[rstest]
#[case::distribution("/hooks/distribution", "Authorization: Bearer wrong\r\n", 401)]
#[case::dockerhub("/hooks/dockerhub", "", 401)]
#[case::github_without_signature("/hooks/github", "", 401)]
#[case::github_malformed_signature("/hooks/github", "X-Hub-Signature-256: sha256=zz\r\n", 401)]
#[case::check("/check", "Authorization: Bearer wrong\r\n", 401)]
#[tokio::test]
async fn a_request_is_authenticated_before_its_body_is_read(
    #[case] path: &str,
    #[case] extra: &str,
    #[case] expected: u16,
) {
    let served = serve(|_| {}).await;
    let (status, _, took) = request(served.addr, head(path, extra).as_bytes()).await;
    assert_eq!(status, Some(expected));
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
}

/// A signed hook must be read to be checked: a body that stops coming is cut at the timeout.
#[tokio::test]
async fn a_body_that_stops_coming_is_cut_at_the_body_timeout() {
    let served = serve(|config| config.body_timeout = Duration::from_millis(500)).await;
    let signature = format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64));
    let mut bytes = head("/hooks/github", &signature).into_bytes();
    bytes.extend_from_slice(&[b'{'; 1000]);
    let (status, text, took) = request(served.addr, &bytes).await;
    assert_eq!(status, Some(408), "{text}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// Bodies read at once are capped over every connection; the next sender is told to retry.
#[tokio::test]
async fn bodies_in_flight_are_capped_and_the_rest_told_to_retry() {
    let served = serve(|config| {
        config.max_bodies = 1;
        config.body_timeout = Duration::from_secs(5);
    })
    .await;
    let signature = format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64));
    let mut holding = TcpStream::connect(served.addr).await.expect("connects");
    holding
        .write_all(head("/hooks/github", &signature).as_bytes())
        .await
        .expect("writes");
    holding.write_all(&[b'{'; 1000]).await.expect("writes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, text, _) = request(served.addr, head("/hooks/github", &signature).as_bytes()).await;
    assert_eq!(status, Some(503), "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: 5"), "{text}");
    let (status, _, _) = request(served.addr, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert_eq!(status, Some(200), "other requests are unaffected");
}

/// A body over the cap is refused from its declared length, before any of it is read.
#[tokio::test]
async fn a_declared_body_over_the_cap_is_refused_at_once() {
    let served = serve(|config| config.max_body = 1024).await;
    let (status, _, took) = request(
        served.addr,
        head(
            "/hooks/distribution",
            &format!("Authorization: Bearer {HOOK_TOKEN}\r\n"),
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, Some(413));
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// Slowloris: half a request head is closed at the head timeout.
#[tokio::test]
async fn a_half_sent_head_is_closed_at_the_header_timeout() {
    let served = serve(|config| config.connections.header_timeout = Duration::from_millis(500)).await;
    let mut stream = TcpStream::connect(served.addr).await.expect("connects");
    let (status, _, took) = exchange(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: 1", Duration::from_secs(5)).await;
    assert_ne!(status, Some(200));
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// Idle sockets at the connection cap give way to a new connection: `/healthz` still answers.
#[tokio::test]
async fn at_the_connection_cap_idle_sockets_give_way_to_new_requests() {
    let served = serve(|config| config.connections.max_connections = 4).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(served.addr).await.expect("connects"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let (status, _, took) = request(served.addr, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        assert_eq!(status, Some(200));
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    // The oldest idle sockets were closed by the server.
    let mut closed = 0;
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await {
            closed += 1;
        }
    }
    assert!(closed >= 4, "{closed} of 8 idle sockets closed");
}

/// A web page in a local browser cannot drive the API, directly or by DNS rebinding.
#[rstest]
#[case::cross_origin_post(
    "POST /check HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\nAuthorization: Bearer api-token-limits\r\nContent-Length: 0\r\n\r\n",
    403
)]
#[case::fetch_metadata(
    "POST /check HTTP/1.1\r\nHost: 127.0.0.1\r\nSec-Fetch-Site: cross-site\r\nContent-Length: 0\r\n\r\n",
    403
)]
#[case::rebound_host("GET /status HTTP/1.1\r\nHost: attacker.example:8080\r\n\r\n", 403)]
#[case::text_body_from_an_old_browser(
    "POST /hooks/distribution HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 1048576\r\n\r\n{",
    415
)]
#[case::same_origin(
    "GET /healthz HTTP/1.1\r\nHost: localhost:8080\r\nOrigin: http://localhost:8080\r\n\r\n",
    200
)]
#[case::tool("GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200)]
#[tokio::test]
async fn browsers_cannot_drive_the_api(#[case] raw: &str, #[case] expected: u16) {
    let served = serve(|_| {}).await;
    let (status, text, _) = request(served.addr, raw.as_bytes()).await;
    assert_eq!(status, Some(expected), "{text}");
}

/// Beyond loopback `/status` lists every image and error: only with the API token, and a
/// missing token is told the one form that works.
#[rstest]
#[case::no_token("", 401)]
#[case::wrong_token("Authorization: Bearer wrong\r\n", 401)]
#[case::query_token_is_not_taken("", 401)]
#[case::api_token("Authorization: Bearer api-token-limits\r\n", 200)]
#[tokio::test]
async fn status_beyond_loopback_needs_the_api_token(#[case] extra: &str, #[case] expected: u16) {
    let served = serve(|config| config.status_needs_token = true).await;
    let raw = format!("GET /status?token={API_TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n");
    let (status, text, _) = request(served.addr, raw.as_bytes()).await;
    assert_eq!(status, Some(expected), "{text}");
    if expected == 401 && extra.is_empty() {
        assert!(
            text.contains("Authorization: Bearer") && !text.contains("?token="),
            "{text}"
        );
    }
}
