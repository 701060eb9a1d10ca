//! A viewer's playout for ordinary players: `GET /live.ts` is a continuous MPEG-TS of
//! the pieces the peer plays (verified, in order, at their deadline), starting at the
//! latest segment start (PAT/PMT and a keyframe) so a player can decode from its first
//! byte; VLC, mpv and ffplay take it as is. `GET /stats.json` has the counters.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use swarm::piece::{Piece, PieceFlags};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

use crate::hls::Hls;
use crate::shell::now_us;

/// What has been played, shared with the HTTP clients.
#[derive(Debug)]
pub struct Playout {
    live: broadcast::Sender<(u64, Bytes)>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The pieces played since the latest segment start: where a new player begins.
    gop: Vec<(u64, Bytes)>,
    played: u64,
    skipped: u64,
    /// Live-to-playout latency of the last piece played, µs.
    latency_us: u64,
    max_latency_us: u64,
    /// Live-to-playout latency of each piece played, ms (the newest [`SAMPLES`]).
    samples: VecDeque<u32>,
    /// When the first piece was played, µs since the epoch.
    first_play_us: Option<u64>,
}

/// Latency samples kept per playout.
pub const SAMPLES: usize = 100_000;

/// Counters of what was played.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayStats {
    pub played: u64,
    pub skipped: u64,
    pub latency_us: u64,
    pub max_latency_us: u64,
}

impl Default for Playout {
    fn default() -> Self {
        Self::new()
    }
}

impl Playout {
    pub fn new() -> Self {
        Playout { live: broadcast::channel(1024).0, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A piece the peer plays now.
    pub fn play(&self, piece: &Piece) {
        let mut inner = self.lock();
        let now = now_us();
        inner.played += 1;
        inner.latency_us = now.saturating_sub(piece.timestamp_us());
        inner.max_latency_us = inner.max_latency_us.max(inner.latency_us);
        let ms = u32::try_from(inner.latency_us / 1000).unwrap_or(u32::MAX);
        if inner.samples.len() == SAMPLES {
            inner.samples.pop_front();
        }
        inner.samples.push_back(ms);
        inner.first_play_us.get_or_insert(now);
        if piece.flags().contains(PieceFlags::SEGMENT_START) {
            inner.gop.clear();
        }
        let item = (piece.seq(), piece.payload().clone());
        if !inner.gop.is_empty() || piece.flags().contains(PieceFlags::SEGMENT_START) {
            inner.gop.push(item.clone());
        }
        // Sent under the lock, so a joining player's snapshot and its stream meet exactly.
        let _ = self.live.send(item);
    }

    /// The latency of every piece played (ms, the newest [`SAMPLES`]) and when playing began.
    pub fn samples(&self) -> (Vec<u32>, Option<u64>) {
        let i = self.lock();
        (i.samples.iter().copied().collect(), i.first_play_us)
    }

    /// How many latency samples are held (without copying them).
    pub fn sample_count(&self) -> usize {
        self.lock().samples.len()
    }

    pub fn skipped(&self) {
        self.lock().skipped += 1;
    }

    pub fn stats(&self) -> PlayStats {
        let i = self.lock();
        PlayStats { played: i.played, skipped: i.skipped, latency_us: i.latency_us, max_latency_us: i.max_latency_us }
    }

    /// The stream for one player: the current GOP, then everything played after it. A
    /// player too slow to keep up skips to the next segment start.
    pub fn subscribe(self: &Arc<Self>) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(256);
        let (gop, mut live) = {
            let inner = self.lock();
            (inner.gop.clone(), self.live.subscribe())
        };
        tokio::spawn(async move {
            let mut synced = !gop.is_empty();
            for (_, b) in gop {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok((_, b)) => {
                        // Without a GOP yet, wait for a segment start (TS sync + PAT first).
                        if !synced {
                            if !starts_segment(&b) {
                                continue;
                            }
                            synced = true;
                        }
                        if tx.send(b).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => synced = false,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        rx
    }
}

/// A payload that begins with a PAT (PID 0): what ingest puts at a segment start.
fn starts_segment(b: &[u8]) -> bool {
    b.len() >= 4 && b[0] == 0x47 && (u16::from(b[1] & 0x1f) << 8 | u16::from(b[2])) == 0 && b[1] & 0x40 != 0
}

/// A response body: whole (with a Content-Length), or fed from a channel (chunked).
pub(crate) struct Streamed(Option<Bytes>, Option<mpsc::Receiver<Bytes>>);

impl Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.0.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match &mut self.1 {
            Some(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
            None => Poll::Ready(None),
        }
    }

    /// A whole body gets a Content-Length; a stream goes chunked.
    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.0, &self.1) {
            (b, None) => hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

pub(crate) fn whole(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Streamed> {
    let mut r = Response::new(Streamed(Some(body.into()), None));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static(ctype));
    r
}

/// Text made on demand (`/stats.json`, `/metrics`).
pub type TextFn = Arc<dyn Fn() -> String + Send + Sync>;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `/live.ts`, `/live.m3u8` and its segments (from `hls`), `/stats.json` (what
/// `stats` returns), `/metrics` (what `metrics` returns), `/healthz` and `/readyz`
/// (once playing) until the listener fails.
pub async fn serve(
    listener: TcpListener,
    playout: Arc<Playout>,
    hls: Arc<Hls>,
    stats: TextFn,
    metrics: TextFn,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let (playout, stats, hls, metrics) = (playout.clone(), stats.clone(), hls.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (playout, stats, hls, metrics) = (playout.clone(), stats.clone(), hls.clone(), metrics.clone());
                async move {
                    Ok::<_, Infallible>(match req.uri().path() {
                        "/live.ts" => {
                            let mut r = Response::new(Streamed(None, Some(playout.subscribe())));
                            r.headers_mut()
                                .insert("content-type", hyper::header::HeaderValue::from_static("video/mp2t"));
                            r
                        }
                        "/stats.json" => whole(StatusCode::OK, "application/json", stats()),
                        "/metrics" => whole(StatusCode::OK, PROMETHEUS_TEXT, metrics()),
                        "/healthz" => whole(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
                        // Ready once it plays the channel.
                        "/readyz" if playout.stats().played > 0 => {
                            whole(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n"))
                        }
                        "/readyz" => whole(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain",
                            Bytes::from_static(b"not playing yet\n"),
                        ),
                        path => match hls.answer_blocking(path, req.uri().query()).await {
                            Some((status, ctype, body)) => whole(status, ctype, body),
                            None => whole(
                                StatusCode::NOT_FOUND,
                                "text/plain",
                                Bytes::from_static(b"try /live.ts, /live.m3u8 or /stats.json\n"),
                            ),
                        },
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Binds `addr` for [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
