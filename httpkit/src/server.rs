//! The accept loop every Shoal HTTP service runs (tracker, ingest, seeder, viewer): a cap
//! on open connections, a deadline for each request's headers (also for the next
//! request on a kept-alive connection, so an idle or dripping client is closed), accept
//! errors such as EMFILE met with a short back-off instead of a spin, and the routes
//! every service answers the same way — `/metrics` (its Prometheus registry),
//! `/healthz` (alive) and `/readyz` (ready, or 503 and why not). The service's own
//! routes are a handler: `(request, peer address) -> response`. Response bytes that a
//! [`SpoolIndex`] lists go out with `sendfile` ([`crate::spool`]).

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge, Opts, Registry};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::spool::{SpoolIndex, send_file, send_more};
use crate::{Body, PROMETHEUS_TEXT, registered, text, whole};

/// How a server treats its clients. Every field has a default ([`ServerConfig::new`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The service's name, in logs and as the `server` label of the kit's metrics.
    pub name: &'static str,
    /// Connections open at once; one more is closed at once (and counted).
    pub max_connections: usize,
    /// A client must send a request's whole header within this, from the moment the
    /// connection opens or the previous response ends: an idle connection is closed
    /// after it, and so is one that drips its header a byte at a time.
    pub header_read_timeout: Duration,
    /// The most a connection buffers (a request header larger than this is refused).
    pub max_buf_size: usize,
    /// Bytes listed here are sent from their spool file (`sendfile`), not copied.
    pub spool: Option<SpoolIndex>,
    /// Connections are served on this many threads of their own, each a
    /// single-threaded runtime that keeps a connection to the end (nginx's worker
    /// model: its reads, writes, timers and wake-ups stay on one thread; accepting stays
    /// on the caller's runtime). 0: on the caller's runtime, as its other tasks.
    pub threads: usize,
}

impl ServerConfig {
    pub fn new(name: &'static str) -> Self {
        ServerConfig {
            name,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_buf_size: 64 * 1024,
            spool: None,
            threads: 0,
        }
    }
}

/// Whether the service is ready: `Err` says why not (answered with 503).
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What every service answers beside its own routes.
#[derive(Clone)]
pub struct Site {
    /// Rendered at `/metrics`; the kit adds its own connection metrics to it.
    pub registry: Registry,
    /// Answers `/readyz`.
    pub ready: Readiness,
    /// Called before each `/metrics` render, to bring gauges up to date.
    pub refresh: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site").finish_non_exhaustive()
    }
}

impl Site {
    /// A site that is ready as soon as it serves.
    pub fn new(registry: Registry) -> Self {
        Site { registry, ready: Arc::new(|| Ok(())), refresh: None }
    }

    pub fn ready_when(mut self, ready: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        self.ready = Arc::new(ready);
        self
    }

    pub fn refresh_with(mut self, refresh: impl Fn() + Send + Sync + 'static) -> Self {
        self.refresh = Some(Arc::new(refresh));
        self
    }

    /// `/metrics`, `/healthz` and `/readyz`; `None` for any other request.
    pub fn answer(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return None;
        }
        Some(match req.uri().path() {
            "/metrics" => {
                if let Some(refresh) = &self.refresh {
                    refresh();
                }
                whole(StatusCode::OK, PROMETHEUS_TEXT, crate::render(&self.registry))
            }
            "/healthz" => text(StatusCode::OK, "ok"),
            "/readyz" => match (self.ready)() {
                Ok(()) => text(StatusCode::OK, "ok"),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
            },
            _ => return None,
        })
    }
}

/// The kit's own metrics, per server.
#[derive(Debug, Clone)]
struct ConnMetrics {
    open: IntGauge,
    refused: IntCounter,
    accept_errors: IntCounter,
    timeouts: IntCounter,
    sent_from_files: IntCounter,
}

impl ConnMetrics {
    fn new(registry: &Registry, server: &'static str) -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("server", server);
        ConnMetrics {
            open: registered(registry, IntGauge::with_opts(opts("shoal_http_connections", "Open HTTP connections."))),
            refused: registered(
                registry,
                IntCounter::with_opts(opts(
                    "shoal_http_connections_refused_total",
                    "HTTP connections closed at once: the connection limit was reached.",
                )),
            ),
            accept_errors: registered(
                registry,
                IntCounter::with_opts(opts(
                    "shoal_http_accept_errors_total",
                    "Failed accepts (out of file descriptors and the like).",
                )),
            ),
            timeouts: registered(
                registry,
                IntCounter::with_opts(opts(
                    "shoal_http_header_timeouts_total",
                    "HTTP connections closed for not sending a request header in time (idle or too slow).",
                )),
            ),
            sent_from_files: registered(
                registry,
                IntCounter::with_opts(opts(
                    "shoal_http_sendfile_bytes_total",
                    "Response bytes sent from spool files (sendfile), not copied per client.",
                )),
            ),
        }
    }
}

/// How long to wait before accepting again after an error that more accepting can't
/// fix at once (out of file descriptors or memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `listener` with `handler` for the service's own routes until the task is
/// dropped. Never returns on its own: an accept error is counted, logged and waited out.
pub async fn serve<H, F>(listener: TcpListener, cfg: ServerConfig, site: Site, handler: H)
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let metrics = ConnMetrics::new(&site.registry, cfg.name);
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(cfg.header_read_timeout).max_buf_size(cfg.max_buf_size);
    let served = Arc::new(Served { site: Arc::new(site), handler, metrics, builder, spool: cfg.spool.clone() });
    let workers = Workers::start(cfg.name, cfg.threads, &served);
    let mut last_warned: Option<Instant> = None;
    let mut next = 0usize;
    loop {
        let (stream, peer) = accept(&listener, cfg.name, Some(&served.metrics.accept_errors)).await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            served.metrics.refused.inc();
            if last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                last_warned = Some(Instant::now());
                tracing::warn!(
                    server = cfg.name,
                    limit = cfg.max_connections,
                    "connection limit reached: closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        match &workers {
            Some(w) => {
                next = next.wrapping_add(1);
                w.hand(next, stream, peer, permit);
            }
            None => {
                tokio::spawn(served.clone().connection(stream, peer, permit));
            }
        }
    }
}

/// What every connection of a server shares.
struct Served<H> {
    site: Arc<Site>,
    handler: H,
    metrics: ConnMetrics,
    builder: hyper::server::conn::http1::Builder,
    spool: Option<SpoolIndex>,
}

impl<H, F> Served<H>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// One connection, served to its end.
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let metrics = &self.metrics;
        metrics.open.inc();
        let (site, handler) = (self.site.clone(), self.handler.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let answer = site.answer(&req).ok_or(req);
            let handler = handler.clone();
            async move {
                Ok::<_, Infallible>(match answer {
                    Ok(standard) => standard,
                    Err(req) => handler(req, peer).await,
                })
            }
        });
        let conn = Conn {
            io: TokioIo::new(stream),
            spool: self.spool.clone(),
            sent_from_files: metrics.sent_from_files.clone(),
        };
        // With upgrades: the tracker's WebSocket takes its connection over.
        if let Err(e) = self.builder.serve_connection(conn, service).with_upgrades().await {
            if e.is_timeout() {
                metrics.timeouts.inc();
            }
            tracing::debug!(error = %e, %peer, "HTTP connection ended");
        }
        metrics.open.dec();
        drop(permit);
    }
}

/// An accepted connection on its way to a worker thread.
type Handed = (std::net::TcpStream, SocketAddr, OwnedSemaphorePermit);

/// The threads a server's connections are served on ([`ServerConfig::threads`]); they
/// end when the server does (their queues close, and each drops its connections).
struct Workers(Vec<tokio::sync::mpsc::UnboundedSender<Handed>>);

impl Workers {
    fn start<H, F>(name: &'static str, threads: usize, served: &Arc<Served<H>>) -> Option<Self>
    where
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let mut queues = Vec::with_capacity(threads);
        for i in 0..threads {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Handed>();
            let served = served.clone();
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(server = name, error = %e, "no runtime for an HTTP thread: serving on the caller's");
                    return None;
                }
            };
            let spawned = std::thread::Builder::new().name(format!("{name}-http-{i}")).spawn(move || {
                runtime.block_on(async move {
                    while let Some((stream, peer, permit)) = rx.recv().await {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => drop(tokio::spawn(served.clone().connection(stream, peer, permit))),
                            Err(e) => {
                                tracing::debug!(error = %e, %peer, "connection lost on its way to an HTTP thread")
                            }
                        }
                    }
                });
            });
            if let Err(e) = spawned {
                tracing::error!(server = name, error = %e, "no HTTP thread: serving on the caller's runtime");
                return None;
            }
            queues.push(tx);
        }
        (!queues.is_empty()).then_some(Workers(queues))
    }

    /// Gives the connection to the `n`th thread (round robin).
    fn hand(&self, n: usize, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => return tracing::debug!(error = %e, %peer, "connection lost leaving the accept loop"),
        };
        // A thread whose runtime is gone drops the connection (closed; the client retries).
        let _ = self.0[n % self.0.len()].send((stream, peer, permit));
    }
}

/// A connection as hyper sees it: tokio's stream, except that a write of spooled bytes
/// is a `sendfile` from their file.
struct Conn {
    io: TokioIo<TcpStream>,
    spool: Option<SpoolIndex>,
    sent_from_files: IntCounter,
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Writes the buffers up to the first spooled one — with `MSG_MORE`, so that a
    /// response's header leaves in one packet with the start of its body, as nginx's
    /// `tcp_nopush` does — or, when that one is first, sends it from its file, together
    /// with the spooled buffers that follow it in the same file (a segment's parts).
    /// hyper queues a response's header and body buffers separately, so a spooled body
    /// is its own buffer.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(index) = this.spool.as_ref() else {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        };
        let Some((i, file, offset)) = bufs
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .find_map(|(i, b)| index.find(b).map(|(file, offset)| (i, file, offset)))
        else {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        };
        let stream = this.io.inner();
        if bufs[..i].iter().any(|b| !b.is_empty()) {
            return poll_send(stream, cx, || send_more(stream, &bufs[..i]));
        }
        // The buffers after it that continue it in the file go in the same call.
        let mut len = bufs[i].len();
        for b in bufs[i + 1..].iter().filter(|b| !b.is_empty()) {
            match index.find(b) {
                Some((f, o)) if Arc::ptr_eq(&f, &file) && o == offset + len as u64 => len += b.len(),
                _ => break,
            }
        }
        let sent = ready!(poll_send(stream, cx, || send_file(stream, &file, offset, len)))?;
        this.sent_from_files.inc_by(sent as u64);
        Poll::Ready(Ok(sent))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Runs a non-blocking `send` on `stream` once it is writable; waits again when the
/// socket's buffer turns out full.
fn poll_send(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    mut send: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_io(Interest::WRITABLE, &mut send) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}

/// Accept errors are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// The next connection on `listener`. A failed accept (out of file descriptors and the
/// like) is counted in `errors`, logged at most once a second, and waited out — after
/// errors that an immediate retry would repeat, for [`ACCEPT_BACKOFF`] — so a server
/// out of descriptors neither spins nor stops serving. For any TCP service (RTMP too).
pub async fn accept(listener: &TcpListener, what: &str, errors: Option<&IntCounter>) -> (TcpStream, SocketAddr) {
    let mut last_warned: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok(x) => return x,
            Err(e) => {
                if let Some(c) = errors {
                    c.inc();
                }
                if last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    last_warned = Some(Instant::now());
                    tracing::warn!(error = %e, "{what}: accept failed; retrying (raise the open-files limit if this repeats)");
                }
                if is_resource_exhaustion(&e) {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// Errors after which an immediate retry would fail the same way.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}
