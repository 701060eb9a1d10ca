//! The seeders' HLS fallback for browsers and phones without the viewer: segments cut
//! at the channel's segment starts (each begins with PAT/PMT and a keyframe), built only
//! from pieces the seeder's peer verified, the newest few kept in memory.
//!
//! `GET /hls/{channel}/live.m3u8` — a live media playlist (RFC 8216): the last
//! [`WINDOW`] complete segments, `#EXTINF` from the pieces' timestamps.
//! `GET /hls/{channel}/{n}.ts` — segment `n` while it is in the window (404 after).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use swarm::piece::{Piece, PieceFlags};
use tokio::net::TcpListener;

use crate::playout::{Streamed, whole};

/// Complete segments listed in the playlist.
pub const WINDOW: usize = 6;

/// One segment: its number, duration and bytes.
#[derive(Debug, Clone)]
struct Segment {
    n: u64,
    duration_us: u64,
    data: Bytes,
}

/// Segments of one channel, fed with verified pieces in sequence order.
#[derive(Debug)]
pub struct Hls {
    /// Where its files are: `/hls/{channel}` on a seeder, the root on a viewer.
    prefix: String,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    done: VecDeque<Segment>,
    /// The segment being filled: its first piece's timestamp and the bytes so far.
    open: Option<(u64, Vec<u8>)>,
    next_n: u64,
    /// The last sequence number taken: pieces must follow it (a gap ends the segment).
    last_seq: Option<u64>,
}

impl Hls {
    /// A seeder's: `/hls/{channel}/live.m3u8`.
    pub fn new(channel: &str) -> Self {
        Hls { prefix: format!("/hls/{channel}"), inner: Mutex::new(Inner::default()) }
    }

    /// A viewer's: `/live.m3u8` beside its `/live.ts`.
    pub fn at_root() -> Self {
        Hls { prefix: String::new(), inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A verified piece. Out-of-order or missing pieces drop the open segment (a
    /// segment with a hole would not decode); the next segment start begins a new one.
    pub fn push(&self, piece: &Piece) {
        let mut i = self.lock();
        let follows = i.last_seq.is_none_or(|l| piece.seq() == l + 1);
        if i.last_seq.is_some_and(|l| piece.seq() <= l) {
            return; // old or duplicate
        }
        i.last_seq = Some(piece.seq());
        if piece.flags().contains(PieceFlags::SEGMENT_START) {
            if let Some((start, data)) = i.open.take()
                && follows
            {
                let n = i.next_n;
                i.next_n += 1;
                let duration_us = piece.timestamp_us().saturating_sub(start).max(1);
                i.done.push_back(Segment { n, duration_us, data: Bytes::from(data) });
                while i.done.len() > WINDOW {
                    i.done.pop_front();
                }
            }
            i.open = Some((piece.timestamp_us(), piece.payload().to_vec()));
        } else if !follows {
            i.open = None;
        } else if let Some((_, data)) = i.open.as_mut() {
            data.extend_from_slice(piece.payload());
        }
    }

    /// The playlist, or `None` before the first segment is complete.
    pub fn playlist(&self) -> Option<String> {
        let i = self.lock();
        let first = i.done.front()?;
        let target = i.done.iter().map(|s| s.duration_us.div_ceil(1_000_000)).max().unwrap_or(1).max(1);
        let mut out =
            format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n", first.n);
        for s in &i.done {
            out.push_str(&format!("#EXTINF:{:.3},\n{}.ts\n", s.duration_us as f64 / 1e6, s.n));
        }
        Some(out)
    }

    pub fn segment(&self, n: u64) -> Option<Bytes> {
        self.lock().done.iter().find(|s| s.n == n).map(|s| s.data.clone())
    }
}

fn answer(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Streamed> {
    let mut r = whole(status, ctype, body);
    r.headers_mut().insert("access-control-allow-origin", hyper::header::HeaderValue::from_static("*"));
    r.headers_mut().insert("cache-control", hyper::header::HeaderValue::from_static("no-cache"));
    r
}

impl Hls {
    /// The answer for `path` if it is one of this playlist's files: (status, content
    /// type, body).
    pub fn answer(&self, path: &str) -> Option<(StatusCode, &'static str, Bytes)> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        Some(match rest {
            "/live.m3u8" => match self.playlist() {
                Some(p) => (StatusCode::OK, "application/vnd.apple.mpegurl", Bytes::from(p)),
                None => {
                    (StatusCode::SERVICE_UNAVAILABLE, "text/plain", Bytes::from_static(b"no complete segment yet\n"))
                }
            },
            seg => match seg.strip_prefix('/').and_then(|s| s.strip_suffix(".ts")).and_then(|n| n.parse().ok()) {
                Some(n) => match self.segment(n) {
                    Some(b) => (StatusCode::OK, "video/mp2t", b),
                    None => (StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"segment not in the window\n")),
                },
                None => return None,
            },
        })
    }
}

fn route(hls: &Hls, metrics: &crate::playout::TextFn, path: &str) -> Response<Streamed> {
    match path {
        "/metrics" => answer(StatusCode::OK, crate::playout::PROMETHEUS_TEXT, metrics()),
        "/healthz" => answer(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        // Ready once it has a segment to offer browsers.
        "/readyz" => match hls.playlist() {
            Some(_) => answer(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            None => answer(StatusCode::SERVICE_UNAVAILABLE, "text/plain", Bytes::from_static(b"no segment yet\n")),
        },
        _ => match hls.answer(path) {
            Some((status, ctype, body)) => answer(status, ctype, body),
            None => answer(StatusCode::NOT_FOUND, "text/plain", format!("try {}/live.m3u8\n", hls.prefix)),
        },
    }
}

/// Serves the HLS fallback, `/metrics` (what `metrics` returns), `/healthz` and
/// `/readyz` until the listener fails.
pub async fn serve(listener: TcpListener, hls: Arc<Hls>, metrics: crate::playout::TextFn) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let (hls, metrics) = (hls.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (hls, metrics) = (hls.clone(), metrics.clone());
                async move { Ok::<_, Infallible>(route(&hls, &metrics, req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm::piece::{ChannelKeypair, filler_payload};

    fn piece(seq: u64, start: bool) -> Piece {
        let key = ChannelKeypair::from_secret_bytes(&[3; 32]);
        let flags = if start { PieceFlags::SEGMENT_START } else { PieceFlags::NONE };
        key.sign_piece(seq, 1_000_000 + seq * 50_000, flags, filler_payload(2, seq)).unwrap()
    }

    #[test]
    fn segments_cut_at_segment_starts_and_gaps_drop_a_segment() {
        let h = Hls::new("demo");
        assert_eq!(h.playlist(), None);
        for seq in 0..100 {
            h.push(&piece(seq, seq % 20 == 0));
        }
        let p = h.playlist().unwrap();
        assert!(p.starts_with("#EXTM3U\n"), "{p}");
        assert!(p.contains("#EXT-X-TARGETDURATION:1\n"), "{p}");
        assert!(p.contains("#EXTINF:1.000,\n0.ts\n") && p.contains("3.ts\n") && !p.contains("4.ts"), "{p}");
        assert_eq!(h.segment(0).unwrap().len(), 20 * 2 * 188);
        // A hole: the open segment is dropped, the next start begins again.
        h.push(&piece(102, false));
        for seq in 103..141 {
            h.push(&piece(seq, seq % 20 == 0));
        }
        let p = h.playlist().unwrap();
        assert!(p.contains("4.ts\n"), "the segment 120..140: {p}");
        assert_eq!(h.segment(4).unwrap().len(), 20 * 2 * 188);
        h.push(&piece(5, true));
        assert_eq!(h.segment(5), None, "an old piece changes nothing");
        let m: crate::playout::TextFn = Arc::new(|| "shoal_node_neighbours{role=\"seed\"} 0\n".to_owned());
        let route = |h: &Hls, path: &str| route(h, &m, path);
        assert_eq!(route(&h, "/hls/demo/../x").status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&h, "/hls/other/live.m3u8").status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&h, "/hls/demo/99.ts").status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&h, "/hls/demo/live.m3u8").status(), StatusCode::OK);
        assert_eq!(route(&h, "/metrics").status(), StatusCode::OK);
        assert_eq!(route(&h, "/readyz").status(), StatusCode::OK, "a playlist exists");
        assert_eq!(route(&Hls::new("empty"), "/readyz").status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
