//! The accept loop every Shoal HTTP service runs (tracker, ingest, seeder, viewer): a cap
//! on open connections, a deadline for each request's headers (also for the next
//! request on a kept-alive connection, so an idle or dripping client is closed), accept
//! errors such as EMFILE met with a short back-off instead of a spin, and the routes
//! every service answers the same way — `/metrics` (its Prometheus registry),
//! `/healthz` (alive) and `/readyz` (ready, or 503 and why not). The service's own
//! routes are a handler: `(request, peer address) -> response`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge, Opts, Registry};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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
}

impl ServerConfig {
    pub fn new(name: &'static str) -> Self {
        ServerConfig {
            name,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_buf_size: 64 * 1024,
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
    let site = Arc::new(site);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(cfg.header_read_timeout).max_buf_size(cfg.max_buf_size);
    let mut last_warned: Option<Instant> = None;
    loop {
        let (stream, peer) = accept(&listener, cfg.name, Some(&metrics.accept_errors)).await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.refused.inc();
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
        let (site, handler, metrics, builder) = (site.clone(), handler.clone(), metrics.clone(), builder.clone());
        tokio::spawn(async move {
            metrics.open.inc();
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
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                if e.is_timeout() {
                    metrics.timeouts.inc();
                }
                tracing::debug!(error = %e, %peer, "HTTP connection ended");
            }
            metrics.open.dec();
            drop(permit);
        });
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
fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}
