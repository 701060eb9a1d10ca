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
use std::sync::Arc;

use bytes::Bytes;
use catalogue::secrets::SeederTokens;
use httpkit::{Body, ServerConfig, Site, json, text};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use swarm::piece::{ChannelVerifier, Piece, PieceFlags};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::hub::{Channel, Fetch, Hub};

fn query(req: &Request<Incoming>) -> HashMap<&str, &str> {
    httpkit::query_pairs(req.uri().query()).collect()
}

/// Serves the API (and `/metrics`, `/healthz`, `/readyz`) on `listener`.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, tokens: SeederTokens) {
    let tokens = Arc::new(tokens);
    let site = Site::new(hub.metrics.registry.clone());
    httpkit::serve(listener, ServerConfig::new("ingest"), site, move |req, _peer| {
        let answer = route(&req, &hub, &tokens);
        async move { answer }
    })
    .await;
}

/// Answers one request (no body is read: every route is a GET).
pub fn route(req: &Request<Incoming>, hub: &Arc<Hub>, tokens: &SeederTokens) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
    }
    let path: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    match path.as_slice() {
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
            json(StatusCode::OK, &serde_json::json!({ "channels": list }))
        }
        ["v1", "channels", name, what @ ("pieces" | "live.ts")] => {
            let q = query(req);
            let bearer = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .or_else(|| q.get("token").copied());
            if !bearer.is_some_and(|t| tokens.allows(t)) {
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
                    Some(seq)
                }
                // While the channel is idle, a player starts at the next session's first
                // segment start, not on the last session's unfinished tail.
                None if ts && !ch.live() => None,
                None if ts => ch.join_point(),
                None => ch.resume_point(SEEDER_RESUME_LAG_US),
            };
            // Without a start yet: the first segment start after what is held now.
            let after = if start.is_none() { ch.newest() } else { None };
            let follow = q.get("follow").is_none_or(|v| *v != "false" && *v != "0");
            let (tx, rx) = mpsc::channel(64);
            hub.metrics.subscribers.inc();
            tokio::spawn(feed(ch.clone(), start, after, tx, ts, follow, hub.clone()));
            let mut r = Response::new(Body::Stream(rx));
            let ctype = if ts { "video/mp2t" } else { "application/x-shoal-pieces" };
            r.headers_mut().insert("content-type", ctype.parse().expect("valid header"));
            r.headers_mut().insert("x-shoal-channel-id", ch.id.to_hex().parse().expect("hex is a valid header"));
            if let Some(start) = start {
                r.headers_mut().insert("x-shoal-from-seq", start.to_string().parse().expect("digits"));
            }
            r
        }
        _ => text(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// How old a segment start a seeder without a position may start at.
const SEEDER_RESUME_LAG_US: u64 = 1_000_000;

/// Feeds one subscriber: the window from `next` (none yet: from the first segment
/// start signed past `after`), then each new piece.
async fn feed(
    ch: Arc<Channel>,
    next: Option<u64>,
    after: Option<u64>,
    tx: mpsc::Sender<Bytes>,
    ts: bool,
    follow: bool,
    hub: Arc<Hub>,
) {
    let mut produced = ch.subscribe();
    let verifier = ChannelVerifier::new(ch.id).ok();
    let mut out = swarm::ts_out::TsOut::default();
    let mut next = next;
    'stream: loop {
        produced.borrow_and_update();
        let Some(from) = next.or_else(|| ch.join_point().filter(|s| after.is_none_or(|a| *s > a))) else {
            if !follow || produced.changed().await.is_err() {
                break;
            }
            continue;
        };
        next = Some(from);
        match ch.fetch(from, 64) {
            Fetch::Gone { oldest } => {
                // Too slow to keep up: the stream ends; the seeder resumes from what it has.
                tracing::info!(channel = %ch.name, from, oldest, "subscriber fell out of the live window");
                break;
            }
            Fetch::Pieces(pieces) if pieces.is_empty() => {
                if !follow || produced.changed().await.is_err() {
                    break;
                }
            }
            Fetch::Pieces(pieces) => {
                for p in pieces {
                    next = Some(p.seq() + 1);
                    // The tap's stream ends before another codec or track set (as the
                    // viewer's `/live.ts` does): its player starts afresh on it.
                    if ts && p.flags().contains(PieceFlags::SEGMENT_START) && out.layout_changes(p.payload()) {
                        break 'stream;
                    }
                    // The piece's own buffers, shared with the window and every other subscriber
                    // (the tap's stream: counters and times made to run on).
                    let bytes = if ts {
                        verified_payload(&p, verifier.as_ref())
                            .map(|b| out.write(&b, p.flags().contains(PieceFlags::DISCONTINUITY)))
                    } else {
                        Some(p.wire().clone())
                    };
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
