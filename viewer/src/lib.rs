//! The reference viewer: a swarm peer that verifies, re-shares and plays a channel out
//! to ordinary players.
//!
//! - [`Viewer`]: the [`net::Node`] with its [`playout::Playout`] and its HLS; what it
//!   plays is announced to the tracker as watched time (metering).
//! - [`serve`]: `GET /live.ts` (continuous MPEG-TS from the latest segment start, for
//!   VLC, mpv, ffplay), `/live.m3u8` and its segments, `/stats.json`, and the kit's
//!   `/metrics`, `/healthz`, `/readyz` (ready once it plays); with
//!   [`Viewer::serve_pages`], its WebRTC host's sessions and events too.
//! - [`playout`]: what was played, shared with the players.

pub mod playout;

use std::sync::{Arc, Mutex, OnceLock};

use httpkit::{Body, ServerConfig, Site, registered};
use hyper::{Response, StatusCode};
use net::hls::Hls;
use net::shell::now_us;
use net::{Deliver, Join, Node, NodeConfig, NodeMetrics, Watched};
use prometheus::{Gauge, IntCounter, Opts};
use swarm::piece::{Piece, PieceFlags};
use swarm::wire::Role;
use tokio::net::TcpListener;

use crate::playout::Playout;

/// A running viewer. Dropping it does not stop it: call [`Viewer::stop`].
#[derive(Debug)]
pub struct Viewer {
    pub node: Node,
    pub playout: Arc<Playout>,
    /// HLS of what it plays, at the root (`/live.m3u8`).
    pub hls: Arc<Hls>,
    pub metrics: ViewerMetrics,
    /// Its WebRTC host, once it shares with browsers' pages ([`Viewer::serve_pages`]).
    pages: OnceLock<net::rtc::RtcHost>,
}

/// What a viewer's peer delivers goes to the playout and the HLS.
#[derive(Debug)]
struct Player {
    playout: Arc<Playout>,
    hls: Arc<Hls>,
    played: Mutex<Played>,
}

impl Deliver for Player {
    fn play(&self, piece: &Piece) {
        self.playout.play(piece);
        self.hls.push(piece);
        self.played.lock().unwrap_or_else(std::sync::PoisonError::into_inner).play(piece, now_us());
    }

    fn skipped(&self, seq: u64) {
        self.playout.skipped(seq);
    }

    fn watched(&self) -> Option<Watched> {
        self.played.lock().unwrap_or_else(std::sync::PoisonError::into_inner).watched(now_us())
    }
}

/// A played piece counts at most this much media time: a gap in the timestamps (a
/// stall, skipped pieces, a feed that paused) is not time watched.
const MAX_PIECE_US: u64 = 1_000_000;

/// What the viewer played in the current UTC hour, for metering: the media time of the
/// pieces it played (not the wall time since it started: a stalled viewer is not
/// watching), and of that, the time inside ad breaks (the pieces' ad flags).
#[derive(Debug, Default)]
struct Played {
    /// UTC hours since the epoch the counts are for.
    hour: u64,
    us: u64,
    ad_us: u64,
    /// The hour before `hour` and its final counts (µs), if anything played in it.
    previous: Option<(u64, u64, u64)>,
    last_ts_us: Option<u64>,
    in_ad: bool,
}

/// How long into an hour the previous hour's final counts are reported (the tracker
/// bills that hour's tail with them): a few announce intervals.
const PREVIOUS_FOR_US: u64 = 600_000_000;

impl Played {
    fn play(&mut self, piece: &Piece, now_us: u64) {
        self.roll(now_us);
        let flags = piece.flags();
        if flags.contains(PieceFlags::AD_BREAK_START) {
            self.in_ad = true;
        }
        // The time since the previous piece played is that piece's: credited now.
        if let Some(last) = self.last_ts_us {
            let d = piece.timestamp_us().saturating_sub(last).min(MAX_PIECE_US);
            self.us += d;
            if self.in_ad {
                self.ad_us += d;
            }
        }
        if flags.contains(PieceFlags::AD_BREAK_END) {
            self.in_ad = false;
        }
        self.last_ts_us = Some(piece.timestamp_us());
    }

    /// Starts the counts of a new UTC hour, keeping the last one's.
    fn roll(&mut self, now_us: u64) {
        let hour = now_us / 3_600_000_000;
        if hour != self.hour {
            self.previous = (self.last_ts_us.is_some() && self.us > 0).then_some((self.hour, self.us, self.ad_us));
            (self.hour, self.us, self.ad_us) = (hour, 0, 0);
        }
    }

    /// Seconds this UTC hour, and early in an hour the previous one's (`None` before
    /// anything played).
    fn watched(&mut self, now_us: u64) -> Option<Watched> {
        self.last_ts_us?;
        self.roll(now_us);
        let previous = self
            .previous
            .filter(|&(h, ..)| h + 1 == self.hour && now_us % 3_600_000_000 < PREVIOUS_FOR_US)
            .map(|(_, us, ad)| (us / 1_000_000, ad / 1_000_000));
        Some(Watched { seconds: self.us / 1_000_000, ad_seconds: self.ad_us / 1_000_000, previous })
    }
}

impl Viewer {
    /// Joins the channel's swarm through the tracker and starts playing.
    pub async fn start(join: Join) -> std::io::Result<Viewer> {
        let playout = Arc::new(Playout::new());
        let hls = Arc::new(Hls::at_root());
        let player = Arc::new(Player { playout: playout.clone(), hls: hls.clone(), played: Mutex::default() });
        let node = Node::start(NodeConfig::viewer(join), None, player).await?;
        Ok(Viewer { node, playout, hls, metrics: ViewerMetrics::new(), pages: OnceLock::new() })
    }

    /// Shares with browsers' pages over WebRTC too (as a seeder does); its host's
    /// counters join the viewer's metrics. Once: a second call is refused.
    pub async fn serve_pages(&self, settings: &net::rtc::RtcSettings) -> std::io::Result<net::rtc::RtcHost> {
        if self.pages.get().is_some() {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already serving pages"));
        }
        let host = self.node.serve_pages(settings).await?;
        // Only this task sets it (checked above; a racing second call keeps the first).
        let _ = self.pages.set(host.clone());
        Ok(host)
    }

    /// What it played and carried, as JSON (`/stats.json`, `--stats-json`).
    pub fn stats_json(&self) -> String {
        let snap = self.node.handle.snapshot();
        let s = self.playout.stats();
        serde_json::json!({
            "played": s.played,
            "skipped": s.skipped,
            "skipped_runs": self.playout.skipped_runs(),
            "latency_ms": s.latency_us / 1000,
            "max_latency_ms": s.max_latency_us / 1000,
            "peers": snap.neighbours,
            "bytes_up": snap.bytes_sent,
            "bytes_down": snap.bytes_received,
            "pieces_accepted": snap.stats.pieces_accepted,
            "newest": snap.newest,
            "duplicates": snap.stats.duplicate_pieces,
            "forged": snap.stats.forged_pieces,
            "flood_drops": snap.stats.floods,
            "parents_stalled": snap.stats.parents_stalled,
            "address_bans": snap.guard.bans,
            "refused_banned": snap.guard.refused_banned,
            "refused_capped": snap.guard.refused_capped,
        })
        .to_string()
    }

    /// Brings the metrics up to the node's and the playout's counters.
    pub fn refresh_metrics(&self) {
        self.metrics.node.update(&self.node.handle.snapshot());
        if let Some(host) = self.pages.get() {
            self.metrics.node.update_rtc(&host.stats());
        }
        let s = self.playout.stats();
        let m = &self.metrics;
        m.played.inc_by(s.played.saturating_sub(m.played.get()));
        m.skipped.inc_by(s.skipped.saturating_sub(m.skipped.get()));
        m.latency.set(s.latency_us as f64 / 1e6);
    }

    /// Says goodbye to the neighbours and the tracker.
    pub async fn stop(&self) {
        self.node.stop().await;
    }
}

/// A viewer's metrics: its node's, and what it played.
#[derive(Debug, Clone)]
pub struct ViewerMetrics {
    pub node: NodeMetrics,
    played: IntCounter,
    skipped: IntCounter,
    latency: Gauge,
}

impl ViewerMetrics {
    fn new() -> Self {
        let node = NodeMetrics::new(Role::Viewer);
        let r = &node.registry;
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("role", "viewer");
        ViewerMetrics {
            played: registered(r, IntCounter::with_opts(opts("shoal_node_played_pieces_total", "Pieces played out."))),
            skipped: registered(
                r,
                IntCounter::with_opts(opts("shoal_node_skipped_pieces_total", "Pieces that missed their deadline.")),
            ),
            latency: registered(
                r,
                Gauge::with_opts(opts("shoal_node_latency_seconds", "Behind live at the last piece played.")),
            ),
            node,
        }
    }
}

/// Serves the viewer's players until the task is dropped.
pub async fn serve(listener: TcpListener, viewer: Arc<Viewer>) {
    let (ready, refresh) = (viewer.clone(), viewer.clone());
    let site = Site::new(viewer.metrics.node.registry.clone())
        .ready_when(move || if ready.playout.stats().played > 0 { Ok(()) } else { Err("not playing yet".into()) })
        .refresh_with(move || refresh.refresh_metrics());
    httpkit::serve(listener, ServerConfig::new("viewer"), site, move |req, _peer| {
        let viewer = viewer.clone();
        async move { route(&viewer, req.uri().path(), req.uri().query()).await }
    })
    .await;
}

async fn route(viewer: &Viewer, path: &str, query: Option<&str>) -> Response<Body> {
    match path {
        "/live.ts" => {
            let mut r = Response::new(Body::Stream(viewer.playout.subscribe()));
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("video/mp2t"));
            r
        }
        "/stats.json" => httpkit::whole(StatusCode::OK, "application/json", viewer.stats_json()),
        _ => match viewer.hls.answer_blocking(path, query).await {
            Some(r) => r,
            None => httpkit::text(StatusCode::NOT_FOUND, "try /live.ts, /live.m3u8 or /stats.json"),
        },
    }
}

#[cfg(test)]
mod tests {
    use swarm::piece::{ChannelKeypair, PieceFlags, filler_payload};

    use super::{PREVIOUS_FOR_US, Played, Watched};

    const HOUR_US: u64 = 3_600_000_000;

    /// Piece `seq` of a 50 ms-per-piece feed.
    fn piece(seq: u64, flags: PieceFlags) -> swarm::piece::Piece {
        let key = ChannelKeypair::from_secret_bytes(&[3; 32]);
        key.sign_piece(seq, 500 * HOUR_US + seq * 50_000, flags, filler_payload(1, seq)).unwrap()
    }

    #[test]
    fn a_viewer_meters_the_media_it_played_and_the_ad_breaks_in_it_per_utc_hour() {
        let mut p = Played::default();
        let now = 500 * HOUR_US + 60_000_000;
        assert_eq!(p.watched(now), None, "nothing played: nothing to report");
        // 10 s of pieces, 2 s of them an ad break.
        for seq in 0..=200 {
            let flags = match seq {
                100 => PieceFlags::AD_BREAK_START,
                140 => PieceFlags::AD_BREAK_END,
                _ => PieceFlags::NONE,
            };
            p.play(&piece(seq, flags), now);
        }
        let w = |seconds, ad_seconds, previous| Some(Watched { seconds, ad_seconds, previous });
        assert_eq!(p.watched(now), w(10, 2, None));
        // A stall: the feed moved on 30 s while nothing played; that is not watched
        // (a second at most per gap), though the wall clock ran.
        p.play(&piece(800, PieceFlags::NONE), now + 30_000_000);
        assert_eq!(p.watched(now + 30_000_000), w(11, 2, None));
        // A new UTC hour starts from zero, and tells the last one's final counts for
        // its first ten minutes.
        assert_eq!(p.watched(501 * HOUR_US), w(0, 0, Some((11, 2))));
        p.play(&piece(801, PieceFlags::NONE), 501 * HOUR_US);
        p.play(&piece(821, PieceFlags::NONE), 501 * HOUR_US);
        assert_eq!(p.watched(501 * HOUR_US + 1), w(1, 0, Some((11, 2))));
        assert_eq!(p.watched(501 * HOUR_US + PREVIOUS_FOR_US), w(1, 0, None));
        assert_eq!(p.watched(503 * HOUR_US), w(0, 0, None), "an hour with nothing played tells nothing");
    }
}
