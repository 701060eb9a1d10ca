//! Ingest's HTTP API (hyper): the piece stream for seeders, the operator's debug
//! tap, channel status, metrics and health.
//!
//! - `GET /v1/channels/{channel}/pieces?from=SEQ` — encoded pieces back to back
//!   (each is self-delimiting: header, payload, signature), from `SEQ` if it is still
//!   in the live window (410 if it left), else from the oldest segment start signed
//!   in the last second (still in time for viewers; after an ingest restart, the new
//!   run's first segment), else the newest segment start; then each new piece as it
//!   is signed. Needs a seeder token (`Authorization: Bearer`).
//! - `GET /v1/channels/{channel}/live.ts` — the verified MPEG-TS from the newest
//!   segment start, for ffprobe/VLC; same token (also as `?token=`, for players).
//!   Both take `from=SEQ`, and `follow=false` to end the response at the newest piece
//!   instead of waiting for more (a dump of the window).
//! - `GET /v1/channels` — channels, whether live, next sequence number.
//! - `GET /metrics`, `/healthz`, `/readyz`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use swarm::piece::{ChannelVerifier, Piece};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::auth::{constant_time_eq, hash_stream_key};
use crate::hub::{Channel, Fetch, Hub};

/// Who may read piece streams: SHA-256 of each accepted token.
#[derive(Debug, Clone, Default)]
pub struct SeederTokens {
    hashes: Vec<[u8; 32]>,
}

impl SeederTokens {
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        SeederTokens { hashes: tokens.into_iter().map(hash_stream_key).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn allows(&self, token: &str) -> bool {
        let h = hash_stream_key(token);
        self.hashes.iter().fold(false, |ok, stored| ok | constant_time_eq(stored, &h))
    }
}

/// A response body fed by a task through a channel (long-lived streams).
#[derive(Debug)]
pub enum StreamBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            StreamBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            StreamBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, StreamBody::Full(None))
    }

    /// Whole bodies get a Content-Length; streams go chunked.
    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            StreamBody::Full(b) => hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            StreamBody::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<StreamBody> {
    let mut r = Response::new(StreamBody::Full(Some(Bytes::from(body.into() + "\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "text/plain; charset=utf-8".parse().expect("valid header"));
    r
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// Serves the API until the listener fails.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, tokens: SeederTokens) {
    let tokens = Arc::new(tokens);
    loop {
        let (stream, _) = crate::accept(&listener, "HTTP").await;
        let hub = hub.clone();
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let hub = hub.clone();
                let tokens = tokens.clone();
                async move { Ok::<_, Infallible>(route(req, &hub, &tokens)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }
}

/// Answers one request (no body is read: every route is a GET).
pub fn route(req: Request<Incoming>, hub: &Arc<Hub>, tokens: &SeederTokens) -> Response<StreamBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
    }
    let path: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    match path.as_slice() {
        ["metrics"] => {
            let mut r = text(StatusCode::OK, hub.metrics.render());
            r.headers_mut().insert("content-type", "text/plain; version=0.0.4".parse().expect("valid header"));
            r
        }
        ["healthz"] | ["readyz"] => text(StatusCode::OK, "ok"),
        ["v1", "channels"] => {
            let list: Vec<serde_json::Value> = hub
                .channel_names()
                .into_iter()
                .filter_map(|n| hub.channel(&n))
                .map(|c| {
                    serde_json::json!({
                        "name": c.name, "channel_id": c.id.to_hex(), "live": c.live(),
                        "next_seq": *c.subscribe().borrow(), "join_seq": c.join_point(),
                    })
                })
                .collect();
            let mut r = text(StatusCode::OK, serde_json::json!({ "channels": list }).to_string());
            r.headers_mut().insert("content-type", "application/json".parse().expect("valid header"));
            r
        }
        ["v1", "channels", name, what @ ("pieces" | "live.ts")] => {
            let q = query(&req);
            let bearer = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
                .or_else(|| q.get("token").cloned());
            if !bearer.as_deref().is_some_and(|t| tokens.allows(t)) {
                return text(StatusCode::UNAUTHORIZED, "a seeder token is required (Authorization: Bearer TOKEN)");
            }
            let Some(ch) = hub.channel(name) else {
                return text(StatusCode::NOT_FOUND, format!("channel {name} has not been published on this node"));
            };
            let from = match q.get("from").map(|s| s.parse::<u64>()) {
                Some(Ok(seq)) => Some(seq),
                Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "from must be a sequence number"),
                None => None,
            };
            let ts = *what == "live.ts";
            let start = match from {
                Some(seq) => {
                    if let Fetch::Gone { oldest } = ch.fetch(seq, 0) {
                        return text(
                            StatusCode::GONE,
                            format!("piece {seq} has left the live window; the oldest held is {oldest}"),
                        );
                    }
                    seq
                }
                None if ts => ch.join_point().unwrap_or(*ch.subscribe().borrow()),
                None => ch.resume_point(SEEDER_RESUME_LAG_US).unwrap_or(*ch.subscribe().borrow()),
            };
            let follow = q.get("follow").is_none_or(|v| v != "false" && v != "0");
            let (tx, rx) = mpsc::channel(64);
            hub.metrics.subscribers.inc();
            tokio::spawn(feed(ch.clone(), start, tx, ts, follow, hub.clone()));
            let mut r = Response::new(StreamBody::Stream(rx));
            let ctype = if ts { "video/mp2t" } else { "application/x-shoal-pieces" };
            r.headers_mut().insert("content-type", ctype.parse().expect("valid header"));
            r.headers_mut().insert("x-shoal-channel-id", ch.id.to_hex().parse().expect("hex is a valid header"));
            r.headers_mut().insert("x-shoal-from-seq", start.to_string().parse().expect("digits"));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// How old a segment start a seeder without a position may start at.
const SEEDER_RESUME_LAG_US: u64 = 1_000_000;

/// Feeds one subscriber: the window from `next`, then each new piece.
async fn feed(ch: Arc<Channel>, mut next: u64, tx: mpsc::Sender<Bytes>, ts: bool, follow: bool, hub: Arc<Hub>) {
    let mut produced = ch.subscribe();
    let verifier = ChannelVerifier::new(ch.id).ok();
    loop {
        produced.borrow_and_update();
        match ch.fetch(next, 64) {
            Fetch::Gone { oldest } => {
                // Too slow to keep up: the stream ends; the seeder resumes from what it has.
                tracing::info!(channel = %ch.name, next, oldest, "subscriber fell out of the live window");
                break;
            }
            Fetch::Pieces(pieces) if pieces.is_empty() => {
                if !follow || produced.changed().await.is_err() {
                    break;
                }
            }
            Fetch::Pieces(pieces) => {
                for p in pieces {
                    next = p.seq() + 1;
                    let bytes = if ts { verified_payload(&p, verifier.as_ref()) } else { Some(encoded(&p)) };
                    if let Some(bytes) = bytes
                        && tx.send(bytes).await.is_err()
                    {
                        hub.metrics.subscribers.dec();
                        return;
                    }
                }
            }
        }
    }
    hub.metrics.subscribers.dec();
}

fn encoded(p: &Piece) -> Bytes {
    let mut out = Vec::with_capacity(p.encoded_len());
    p.encode(&mut out);
    Bytes::from(out)
}

/// The tap plays only what verifies, as a viewer would.
fn verified_payload(p: &Piece, verifier: Option<&ChannelVerifier>) -> Option<Bytes> {
    match verifier.map(|v| v.verify(p)) {
        Some(Ok(())) => Some(p.payload().clone()),
        _ => {
            tracing::error!(seq = p.seq(), "a piece of our own window failed verification");
            None
        }
    }
}
