//! The kit's server against real sockets on loopback, on tokio's paused clock (time
//! jumps to the next timer whenever every task waits, so deadlines are exact and the
//! tests take no wall time).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use httpkit::{Body, ServerConfig, Site, text};
use hyper::{Response, StatusCode};
use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn metric(registry: &Registry, name: &str) -> f64 {
    let text = httpkit::render(registry);
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
}

async fn own_route(req: hyper::Request<hyper::body::Incoming>, _peer: SocketAddr) -> Response<Body> {
    match req.uri().path() {
        "/hello" => text(StatusCode::OK, "hello"),
        _ => text(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// One request on its own connection; the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test(start_paused = true)]
async fn probes_metrics_and_own_routes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Registry::new();
    let ready = Arc::new(AtomicBool::new(false));
    let r = ready.clone();
    let site = Site::new(registry.clone())
        .ready_when(move || if r.load(Ordering::SeqCst) { Ok(()) } else { Err("no segment yet".into()) });
    tokio::spawn(httpkit::serve(listener, ServerConfig::new("test"), site, own_route));

    assert_eq!(get(addr, "/healthz").await, ("HTTP/1.1 200 OK".into(), "ok\n".into()));
    assert_eq!(get(addr, "/readyz").await, ("HTTP/1.1 503 Service Unavailable".into(), "no segment yet\n".into()));
    ready.store(true, Ordering::SeqCst);
    assert_eq!(get(addr, "/readyz").await.0, "HTTP/1.1 200 OK");
    assert_eq!(get(addr, "/hello").await, ("HTTP/1.1 200 OK".into(), "hello\n".into()));
    assert_eq!(get(addr, "/nope").await.0, "HTTP/1.1 404 Not Found");
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("shoal_http_connections{server=\"test\"} 1"), "this connection is open:\n{body}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_or_dripping_client_is_closed_at_the_header_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Registry::new();
    let cfg = ServerConfig { header_read_timeout: Duration::from_secs(5), ..ServerConfig::new("test") };
    tokio::spawn(httpkit::serve(listener, cfg, Site::new(registry.clone()), own_route));

    // Idle: says nothing at all.
    let start = tokio::time::Instant::now();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(idle.read(&mut buf).await.unwrap(), 0, "closed");
    assert_eq!(start.elapsed(), Duration::from_secs(5));

    // Dripping: a header byte every second never completes within the deadline.
    let start = tokio::time::Instant::now();
    let mut drip = TcpStream::connect(addr).await.unwrap();
    let mut closed = false;
    for b in b"GET /hello HTTP/1.1\r\nhost: x\r\n" {
        if drip.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !closed {
        assert_eq!(drip.read(&mut buf).await.unwrap_or(0), 0, "closed");
    }
    assert!(start.elapsed() <= Duration::from_secs(7), "closed near the deadline, not after {:?}", start.elapsed());

    // A kept-alive connection that goes quiet after its request is closed too.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"hello\n") {
        let n = kept.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 OK"));
    let quiet = tokio::time::Instant::now();
    assert_eq!(kept.read(&mut buf).await.unwrap(), 0, "closed");
    assert_eq!(quiet.elapsed(), Duration::from_secs(5));
    assert_eq!(metric(&registry, "shoal_http_header_timeouts_total"), 3.0);
}

/// With threads of their own, connections are served there (kept alive, request after
/// request, in turn on each thread), counted in the same metrics, and closed once the
/// server stops.
#[tokio::test]
async fn connections_on_threads_of_their_own_are_served_and_end_with_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Registry::new();
    let cfg = ServerConfig { threads: 2, ..ServerConfig::new("test") };
    // Answers with the name of the thread that served it.
    let thread_name = |_req, _peer| async { text(StatusCode::OK, std::thread::current().name().unwrap_or("?")) };
    let server = tokio::spawn(httpkit::serve(listener, cfg, Site::new(registry.clone()), thread_name));

    let mut kept = Vec::new();
    let mut served_on = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            s.write_all(b"GET /which HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
            let mut got = Vec::new();
            while !got.ends_with(b"\n") || !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed mid-answer: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            let got = String::from_utf8(got).unwrap();
            assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
            served_on.push(got.rsplit("\r\n\r\n").next().unwrap().trim().to_owned());
        }
        kept.push(s);
    }
    assert_eq!(served_on, ["test-http-1", "test-http-1", "test-http-0", "test-http-0", "test-http-1", "test-http-1"]);
    assert_eq!(metric(&registry, "shoal_http_connections"), 3.0, "the three kept-alive connections");

    server.abort();
    let _ = server.await;
    for mut s in kept {
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0, "a connection ends with its server");
    }
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_limit_are_closed_and_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Both connect before the server accepts anything: the first takes the one slot.
    let first = std::net::TcpStream::connect(addr).unwrap();
    let second = std::net::TcpStream::connect(addr).unwrap();
    let (first, mut second) = (tokio_stream(first), tokio_stream(second));
    let registry = Registry::new();
    let cfg = ServerConfig { max_connections: 1, ..ServerConfig::new("test") };
    tokio::spawn(httpkit::serve(listener, cfg, Site::new(registry.clone()), own_route));

    let mut buf = [0u8; 16];
    assert_eq!(second.read(&mut buf).await.unwrap_or(0), 0, "the second is closed at once");
    assert_eq!(metric(&registry, "shoal_http_connections_refused_total"), 1.0);
    assert_eq!(metric(&registry, "shoal_http_connections"), 1.0);
    drop(first);
}

fn tokio_stream(s: std::net::TcpStream) -> TcpStream {
    s.set_nonblocking(true).unwrap();
    TcpStream::from_std(s).unwrap()
}

/// Responses whose bytes are spooled go out with `sendfile` — whole, in order, beside
/// bytes that are not — and once the spool is dropped the same bytes are written as
/// before. The body is larger than a socket buffer, so sends stop and resume.
#[tokio::test]
async fn spooled_bytes_are_sent_from_their_file_and_the_rest_as_before() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Registry::new();
    let index = httpkit::SpoolIndex::new();
    let pattern = |seed: u8, len: usize| -> bytes::Bytes {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
    };
    let (a, plain, b) = (pattern(1, 1_500_000), pattern(2, 70_000), pattern(3, 2_000_000));
    let mut spool = httpkit::Spool::new(&index).unwrap();
    spool.put(&a).unwrap();
    spool.put(&b).unwrap();
    assert_eq!(index.len(), 2);
    let parts = vec![a.clone(), plain.clone(), b.clone()];
    let body = move |_req, _peer| {
        let parts = parts.clone();
        async move { Response::new(Body::chunks(parts)) }
    };
    let cfg = ServerConfig { spool: Some(index.clone()), ..ServerConfig::new("test") };
    tokio::spawn(httpkit::serve(listener, cfg, Site::new(registry.clone()), body));
    let expected = [&a[..], &plain[..], &b[..]].concat();

    let fetch = || async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (String::from_utf8_lossy(&out[..at]).into_owned(), out.split_off(at))
    };
    let (head, got) = fetch().await;
    assert!(head.starts_with("HTTP/1.1 200 OK") && head.contains("content-length: 3570000"), "{head}");
    assert!(got == expected, "the body arrives whole and in order ({} of {} bytes)", got.len(), expected.len());
    assert_eq!(metric(&registry, "shoal_http_sendfile_bytes_total"), (a.len() + b.len()) as f64);

    drop(spool);
    assert!(index.is_empty(), "a dropped spool unlists its bytes");
    let (_, got) = fetch().await;
    assert!(got == expected, "written as before");
    assert_eq!(metric(&registry, "shoal_http_sendfile_bytes_total"), (a.len() + b.len()) as f64, "no more sendfile");
}
