//! One HTTP kit for every Shoal service: the tracker, ingest, seeders and viewers serve
//! through [`server::serve`] (connection cap, header deadlines, accept back-off,
//! `/metrics` `/healthz` `/readyz`), answer with one [`Body`] type, and fetch with
//! [`client`]; [`guard`] keeps banned and over-represented addresses out of any TCP
//! service (the swarm's peers, RTMP). Metrics are made with the prometheus crate ([`registered`], [`render`]).

pub mod body;
pub mod client;
pub mod guard;
pub mod server;
pub mod spool;

pub use body::Body;
pub use server::{Readiness, ServerConfig, Site, accept, serve};
pub use spool::{Spool, SpoolIndex};

use bytes::Bytes;
use hyper::{Response, StatusCode};
use prometheus::{Registry, TextEncoder};

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A whole answer of `ctype`.
pub fn whole(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    r
}

/// A line of plain text (a newline is added): errors and probes, for people and scripts.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    whole(status, "text/plain; charset=utf-8", body.into() + "\n")
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    whole(status, "application/json", value.to_string())
}

/// The `key=value` pairs of a query string, as given (no percent-decoding).
pub fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query.unwrap_or("").split('&').filter_map(|kv| kv.split_once('='))
}

/// Registers a freshly made metric and hands it back. Metric names and labels are
/// constants in the code, so a failure is a programming error every test run catches.
pub fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let m = metric.expect("metric names and labels are constants");
    registry.register(Box::new(m.clone())).expect("each metric is registered once per registry");
    m
}

/// The registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    TextEncoder::new().encode_to_string(&registry.gather()).unwrap_or_else(|e| format!("# metrics not encoded: {e}\n"))
}
