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

use std::sync::{Arc, OnceLock};

use httpkit::{Body, ServerConfig, Site, registered};
use hyper::{Response, StatusCode};
use net::hls::Hls;
use net::shell::now_us;
use net::{Deliver, Join, Node, NodeConfig, NodeMetrics};
use prometheus::{Gauge, IntCounter, Opts};
use swarm::piece::Piece;
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
    started_us: u64,
}

impl Deliver for Player {
    fn play(&self, piece: &Piece) {
        self.playout.play(piece);
        self.hls.push(piece);
    }

    fn skipped(&self) {
        self.playout.skipped();
    }

    fn watched_s(&self) -> Option<u64> {
        (self.playout.stats().played > 0).then(|| watched_this_hour(self.started_us))
    }
}

/// Seconds watched in the current UTC hour, for a viewer playing since `since_us`.
fn watched_this_hour(since_us: u64) -> u64 {
    let now_s = now_us() / 1_000_000;
    let hour_start = now_s - now_s % 3600;
    now_s - (since_us / 1_000_000).max(hour_start)
}

impl Viewer {
    /// Joins the channel's swarm through the tracker and starts playing.
    pub async fn start(join: Join) -> std::io::Result<Viewer> {
        let playout = Arc::new(Playout::new());
        let hls = Arc::new(Hls::at_root());
        let player = Arc::new(Player { playout: playout.clone(), hls: hls.clone(), started_us: now_us() });
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
