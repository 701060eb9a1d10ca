//! Seeders and viewers: a shell, the tracker client that feeds it candidates, and — for
//! a seeder — ingest's piece stream, for a viewer the playout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use swarm::peer::PeerConfig;
use swarm::piece::{ChannelId, Piece};
use swarm::wire::{PeerId, Role};
use tokio::sync::{Notify, mpsc, watch};

use crate::announce::{Report, TrackerClient, random_tracker_id};
use crate::hls::Hls;
use crate::playout::Playout;
use crate::shell::{self, Input, NodeHandle, Output, now_us};

/// A running seeder or viewer. Dropping it does not stop it: call [`Node::stop`].
#[derive(Debug)]
pub struct Node {
    pub handle: NodeHandle,
    pub playout: Arc<Playout>,
    /// HLS of what it plays (viewers) or verified (seeders, when given one).
    pub hls: Arc<Hls>,
    pub tracker: TrackerClient,
    stop: watch::Sender<bool>,
}

impl Node {
    /// What it played and carried, as JSON (`/stats.json`, `--stats-json`).
    pub fn stats_json(&self) -> String {
        let snap = self.handle.snapshot();
        let s = self.playout.stats();
        format!(
            "{{\"played\":{},\"skipped\":{},\"latency_ms\":{},\"max_latency_ms\":{},\"peers\":{},\"bytes_up\":{},\"bytes_down\":{},\"pieces_accepted\":{},\"duplicates\":{},\"forged\":{}}}",
            s.played,
            s.skipped,
            s.latency_us / 1000,
            s.max_latency_us / 1000,
            snap.neighbours,
            snap.bytes_sent,
            snap.bytes_received,
            snap.stats.pieces_accepted,
            snap.stats.duplicate_pieces,
            snap.stats.forged_pieces
        )
    }

    /// Prometheus text exposition of its counters (`/metrics`).
    pub fn metrics(&self) -> String {
        let role = if self.tracker.seed_token.is_some() { Role::Seed } else { Role::Viewer };
        let play = (role == Role::Viewer).then(|| self.playout.stats());
        metrics_text(role, &self.handle.snapshot(), play)
    }

    /// Says goodbye to the neighbours and the tracker.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        self.handle.send(Input::Leave).await;
        let _ = self.tracker.announce(Some("stopped"), Report::default()).await;
    }
}

/// How a node joins.
#[derive(Debug, Clone)]
pub struct Join {
    /// `http://HOST:PORT` of the tracker.
    pub tracker: String,
    pub channel: ChannelId,
    /// Where other peers connect (port 0: any).
    pub listen: SocketAddr,
    /// Seeds: the seeder token the tracker checks.
    pub seed_token: Option<String>,
    /// Upload capacity announced to neighbours, kbit/s.
    pub upload_kbps: u32,
    /// Shell knobs (benchmarks' link delay, tests' stall limit); default in production.
    pub shell: shell::ShellOptions,
}

/// Starts a viewer: it plays into the returned node's [`Node::playout`] and its
/// [`Node::hls`] (served at the root: `/live.m3u8`).
pub async fn viewer(j: Join) -> std::io::Result<Node> {
    start(j, Role::Viewer, None, Arc::new(Hls::at_root())).await
}

/// Starts a seeder fed by `origin` (ingest's pieces); what its peer verifies also goes
/// to `hls` (the fallback for browsers), if given.
pub async fn seeder(j: Join, origin: mpsc::Receiver<Piece>, hls: Option<Arc<Hls>>) -> std::io::Result<Node> {
    start(j, Role::Seed, Some(origin), hls.unwrap_or_else(|| Arc::new(Hls::at_root()))).await
}

async fn start(j: Join, role: Role, origin: Option<mpsc::Receiver<Piece>>, hls: Arc<Hls>) -> std::io::Result<Node> {
    // The protocol id is derived from the tracker id; the tracker is told the port the
    // shell actually bound.
    let tracker_id = random_tracker_id();
    let mut cfg = PeerConfig::new(role, PeerId::from_tracker_id(&tracker_id), j.channel);
    cfg.upload_kbps = j.upload_kbps;
    if role == Role::Seed {
        // As the simulator's seeds (sim/src/scenario.rs, the settings its measurements
        // chose): a few children at the top of each push tree, many neighbours for pull
        // repair near the deadline, no dialling out.
        cfg.max_child_slots = Some(16);
        cfg.max_neighbours = 400;
        cfg.target_neighbours = 0;
    }
    let (out_tx, mut out_rx) = mpsc::channel(1024);
    let opts = j.shell;
    let handle = shell::spawn_with(cfg, j.listen, out_tx, opts).await?;
    let mut tracker = TrackerClient::new(&j.tracker, &j.channel, handle.listen.port());
    tracker.tracker_id = tracker_id;
    tracker.seed_token = j.seed_token.clone();
    let playout = Arc::new(Playout::new());
    let (stop, stop_rx) = watch::channel(false);
    let want_peers = Arc::new(Notify::new());

    // Outputs: play (and segment what is played), count, ask for peers; a seeder
    // segments what it verified.
    let (p, w, h) = (playout.clone(), want_peers.clone(), hls.clone());
    tokio::spawn(async move {
        while let Some(o) = out_rx.recv().await {
            match o {
                Output::Play(piece) => {
                    p.play(&piece);
                    h.push(&piece);
                }
                Output::Skipped(_) => p.skipped(),
                Output::WantPeers => w.notify_one(),
                Output::Accepted(piece) if role == Role::Seed => h.push(&piece),
                Output::Accepted(_) => {}
            }
        }
    });
    if let Some(mut origin) = origin {
        let h = handle.clone();
        tokio::spawn(async move {
            while let Some(piece) = origin.recv().await {
                if !h.send(Input::Origin(piece)).await {
                    return;
                }
            }
        });
    }
    tokio::spawn(announce_loop(tracker.clone(), handle.clone(), playout.clone(), want_peers, stop_rx));
    Ok(Node { handle, playout, hls, tracker, stop })
}

/// Announces at start, every interval, and (at most every 5 s) when the peer wants
/// more peers; backs off while the tracker is unreachable (the swarm goes on).
async fn announce_loop(
    tracker: TrackerClient,
    handle: NodeHandle,
    playout: Arc<Playout>,
    want_peers: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let started_us = now_us();
    let mut event = Some("started");
    let mut backoff = Duration::from_millis(500);
    loop {
        let snap = handle.snapshot();
        let report = Report {
            uploaded: snap.bytes_sent,
            downloaded: snap.bytes_received,
            watched_s: (tracker.seed_token.is_none() && playout.stats().played > 0)
                .then(|| watched_this_hour(started_us)),
            ad_watched_s: None,
            free_slots: 0,
        };
        let wait = match tracker.announce(event, report).await {
            Ok(a) => {
                event = None;
                backoff = Duration::from_millis(500);
                if !handle.send(Input::Candidates(a.peers)).await {
                    return;
                }
                Duration::from_secs(u64::from(a.interval_s))
            }
            Err(e) => {
                tracing::warn!(error = %e, "announce failed; retrying");
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                w
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = want_peers.notified() => tokio::time::sleep(Duration::from_secs(5).min(wait)).await,
            _ = stop.changed() => return,
        }
    }
}

/// Seconds watched in the current UTC hour, for a viewer playing since `since_us`.
fn watched_this_hour(since_us: u64) -> u64 {
    let now_s = now_us() / 1_000_000;
    let hour_start = now_s - now_s % 3600;
    now_s - (since_us / 1_000_000).max(hour_start)
}

/// A node's counters in the Prometheus text format (0.0.4), every series labelled with
/// its role. Counters end in `_total`, byte counts in `_bytes`.
pub fn metrics_text(role: Role, snap: &shell::Snapshot, play: Option<crate::playout::PlayStats>) -> String {
    use std::fmt::Write;
    let role = match role {
        Role::Seed => "seed",
        Role::Viewer => "viewer",
    };
    let st = &snap.stats;
    let mut out = String::with_capacity(4096);
    let mut put = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{role=\"{role}\"}} {value}");
    };
    put("shoal_node_neighbours", "gauge", "Connected swarm neighbours.", snap.neighbours as f64);
    put("shoal_node_sent_bytes_total", "counter", "Bytes sent to neighbours.", snap.bytes_sent as f64);
    put("shoal_node_received_bytes_total", "counter", "Bytes received from neighbours.", snap.bytes_received as f64);
    put("shoal_node_pieces_accepted_total", "counter", "Pieces verified and taken in.", st.pieces_accepted as f64);
    put("shoal_node_duplicate_pieces_total", "counter", "Pieces received again.", st.duplicate_pieces as f64);
    put(
        "shoal_node_forged_pieces_total",
        "counter",
        "Pieces with a bad signature (sender banned).",
        st.forged_pieces as f64,
    );
    put("shoal_node_pushes_sent_total", "counter", "Pieces pushed down the trees.", st.pushes_sent as f64);
    put("shoal_node_responses_sent_total", "counter", "Pieces sent in answer to requests.", st.responses_sent as f64);
    put("shoal_node_requests_sent_total", "counter", "Pieces requested (repair).", st.requests_sent as f64);
    put(
        "shoal_node_protocol_errors_total",
        "counter",
        "Neighbours that broke the protocol.",
        (st.protocol_errors + st.malformed) as f64,
    );
    put("shoal_node_flood_drops_total", "counter", "Neighbours dropped for flooding.", st.floods as f64);
    put(
        "shoal_node_stalled_drops_total",
        "counter",
        "Neighbours dropped for not reading.",
        snap.stalled_dropped as f64,
    );
    put(
        "shoal_node_numbering_jumps_total",
        "counter",
        "Times the channel's numbering jumped (ingest restarts).",
        st.jumps as f64,
    );
    if let Some(p) = play {
        put("shoal_node_played_pieces_total", "counter", "Pieces played out.", p.played as f64);
        put("shoal_node_skipped_pieces_total", "counter", "Pieces that missed their deadline.", p.skipped as f64);
        put("shoal_node_latency_seconds", "gauge", "Behind live at the last piece played.", p.latency_us as f64 / 1e6);
    }
    out
}
