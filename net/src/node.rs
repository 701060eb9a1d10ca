//! A peer on the network, whatever its role: the [`shell`](crate::shell) running the
//! sans-IO peer, the tracker client that feeds it candidates, and the role's
//! [`Deliver`] that takes what the peer delivers (a viewer plays it, a seeder packages
//! what it verified as HLS). Its counters are Prometheus metrics ([`NodeMetrics`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use httpkit::registered;
use prometheus::{IntCounter, IntGauge, Opts, Registry};
use swarm::peer::PeerConfig;
use swarm::piece::{ChannelId, Piece};
use swarm::wire::{PeerId, Role};
use tokio::sync::{Notify, mpsc, watch};

use crate::announce::{Report, TrackerClient, random_tracker_id};
use crate::rtc::{RtcHost, RtcSettings};
use crate::shell::{self, Input, NodeHandle, Output, Snapshot};
use crate::signal::SignalConfig;

/// What a role does with what its peer delivers. Every method has a do-nothing default.
pub trait Deliver: Send + Sync + 'static {
    /// A verified piece to play now, in sequence order (viewers).
    fn play(&self, _piece: &Piece) {}
    /// A piece (by number) that missed its deadline.
    fn skipped(&self, _seq: u64) {}
    /// A piece verified and taken into the window (a seeder's HLS).
    fn accepted(&self, _piece: &Piece) {}
    /// Seconds played in the current UTC hour, and of those in ad breaks, announced
    /// for metering (viewers).
    fn watched(&self) -> Option<Watched> {
        None
    }
}

/// What a viewer played in the current UTC hour ([`Deliver::watched`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watched {
    pub seconds: u64,
    pub ad_seconds: u64,
    /// Early in an hour: the previous hour's final (seconds, ad seconds), so the tracker
    /// bills that hour to its end.
    pub previous: Option<(u64, u64)>,
}

/// A running peer. Dropping it does not stop it: call [`Node::stop`].
#[derive(Debug)]
pub struct Node {
    pub handle: NodeHandle,
    pub tracker: TrackerClient,
    stop: watch::Sender<bool>,
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

impl Node {
    /// Starts the shell, announces to the tracker, and hands what the peer delivers to
    /// `deliver`. A seed injects what `origin` gives it (ingest's pieces).
    pub async fn start(
        cfg: NodeConfig,
        origin: Option<mpsc::Receiver<Piece>>,
        deliver: Arc<dyn Deliver>,
    ) -> std::io::Result<Node> {
        let NodeConfig { join: j, peer: mut peer_cfg } = cfg;
        // The protocol id is derived from the tracker id; the tracker is told the port
        // the shell actually bound.
        let tracker_id = random_tracker_id();
        peer_cfg.peer_id = PeerId::from_tracker_id(&tracker_id);
        peer_cfg.channel = j.channel;
        peer_cfg.upload_kbps = j.upload_kbps;
        let (out_tx, mut out_rx) = mpsc::channel(1024);
        let handle = shell::spawn_with(peer_cfg, j.listen, out_tx, j.shell).await?;
        let mut tracker = TrackerClient::new(&j.tracker, &j.channel, handle.listen.port());
        tracker.tracker_id = tracker_id;
        tracker.seed_token = j.seed_token.clone();
        let (stop, stop_rx) = watch::channel(false);
        let want_peers = Arc::new(Notify::new());

        let (w, d) = (want_peers.clone(), deliver.clone());
        tokio::spawn(async move {
            while let Some(o) = out_rx.recv().await {
                match o {
                    Output::Play(piece) => d.play(&piece),
                    Output::Skipped(seq) => d.skipped(seq),
                    Output::Accepted(piece) => d.accepted(&piece),
                    Output::WantPeers => w.notify_one(),
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
        tokio::spawn(announce_loop(tracker.clone(), handle.clone(), deliver, want_peers, stop_rx));
        Ok(Node { handle, tracker, stop })
    }

    /// Lets pages connect over WebRTC: binds the host ([`crate::rtc`]) and announces on
    /// the tracker's WebSocket ([`crate::signal`]) so that pages' offers reach it. Each
    /// page's data channel becomes a neighbour like a TCP one. Seeds do this.
    pub async fn serve_pages(&self, settings: &RtcSettings) -> std::io::Result<RtcHost> {
        let (tx, mut rx) = mpsc::channel(64);
        let host = RtcHost::bind(settings, tx).await?;
        let h = self.handle.clone();
        tokio::spawn(async move {
            while let Some(page) = rx.recv().await {
                if !h.send(Input::Page(page)).await {
                    return;
                }
            }
        });
        let cfg = SignalConfig {
            tracker: self.tracker.base.clone(),
            info_hash: self.tracker.info_hash,
            tracker_id: self.tracker.tracker_id,
            seed_token: self.tracker.seed_token.clone(),
        };
        tokio::spawn(crate::signal::run(cfg, host.clone(), self.stop.subscribe()));
        Ok(host)
    }

    /// Says goodbye to the neighbours and the tracker.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        self.handle.send(Input::Leave).await;
        let _ = self.tracker.announce(Some("stopped"), Report::default()).await;
    }
}

/// How to start a node: where it joins, and its peer's settings (from
/// [`NodeConfig::viewer`] or [`NodeConfig::seed`], which fill in the identity).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub join: Join,
    pub peer: PeerConfig,
}

impl NodeConfig {
    pub fn viewer(join: Join) -> Self {
        let peer = PeerConfig::new(Role::Viewer, PeerId(0), join.channel);
        NodeConfig { join, peer }
    }

    /// [`PeerConfig::seed`]: the seed profile the simulator measured.
    pub fn seed(join: Join) -> Self {
        let peer = PeerConfig::seed(PeerId(0), join.channel);
        NodeConfig { join, peer }
    }
}

/// Announces at start, every interval, and (at most every 5 s) when the peer wants
/// more peers; backs off while the tracker is unreachable (the swarm goes on).
async fn announce_loop(
    tracker: TrackerClient,
    handle: NodeHandle,
    deliver: Arc<dyn Deliver>,
    want_peers: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut event = Some("started");
    let mut backoff = Duration::from_millis(500);
    loop {
        let snap = handle.snapshot();
        let watched = deliver.watched();
        let report = Report {
            uploaded: snap.bytes_sent,
            downloaded: snap.bytes_received,
            watched_s: watched.map(|w| w.seconds),
            ad_watched_s: watched.map(|w| w.ad_seconds),
            watched_prev_s: watched.and_then(|w| w.previous).map(|p| p.0),
            ad_watched_prev_s: watched.and_then(|w| w.previous).map(|p| p.1),
            free_slots: 0,
        };
        let wait = match tracker.announce(event, report).await {
            Ok(a) => {
                event = None;
                backoff = Duration::from_millis(500);
                let audience = Input::Audience { viewers: a.viewers, seeds: a.seeds };
                if !handle.send(Input::Candidates(a.peers)).await || !handle.send(audience).await {
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
        // A want is answered as soon as 5 s have passed since this announce (at once
        // when they have: a viewer whose seed died needs peers now, not 5 s from now).
        let announced = tokio::time::Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = want_peers.notified() => tokio::time::sleep_until(announced + Duration::from_secs(5).min(wait)).await,
            _ = stop.changed() => return,
        }
    }
}

/// A node's counters as Prometheus metrics, every series labelled with its role;
/// [`NodeMetrics::update`] brings them up to a snapshot (before each scrape).
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    pub registry: Registry,
    neighbours: IntGauge,
    push_slots: IntGauge,
    push_children: IntGauge,
    sent: IntCounter,
    received: IntCounter,
    accepted: IntCounter,
    duplicates: IntCounter,
    forged: IntCounter,
    pushes: IntCounter,
    responses: IntCounter,
    requests: IntCounter,
    protocol_errors: IntCounter,
    floods: IntCounter,
    stalled: IntCounter,
    bans: IntCounter,
    refused_banned: IntCounter,
    refused_capped: IntCounter,
    jumps: IntCounter,
    parents_stalled: IntCounter,
    children_unvouched: IntCounter,
    repairs_refused: IntCounter,
    webrtc_sessions: IntGauge,
    /// What became of pages' WebRTC sessions, by event ([`crate::rtc::RtcStats`]).
    webrtc: prometheus::IntCounterVec,
}

impl NodeMetrics {
    /// Metrics for a node of `role`, in a new registry.
    pub fn new(role: Role) -> Self {
        let registry = Registry::new();
        let role = role_label(role);
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("role", role);
        let counter = |name: &str, help: &str| registered(&registry, IntCounter::with_opts(opts(name, help)));
        NodeMetrics {
            neighbours: registered(
                &registry,
                IntGauge::with_opts(opts("shoal_node_neighbours", "Connected swarm neighbours.")),
            ),
            push_slots: registered(
                &registry,
                IntGauge::with_opts(opts(
                    "shoal_node_push_slots",
                    "Push subscriptions accepted in all (seeds: grows with the audience the tracker counts).",
                )),
            ),
            push_children: registered(
                &registry,
                IntGauge::with_opts(opts("shoal_node_push_children", "Push subscriptions held by neighbours now.")),
            ),
            sent: counter("shoal_node_sent_bytes_total", "Bytes sent to neighbours."),
            received: counter(
                "shoal_node_received_bytes_total",
                "Bytes received from neighbours, and (seeds) pieces from ingest.",
            ),
            accepted: counter("shoal_node_pieces_accepted_total", "Pieces verified and taken in."),
            duplicates: counter("shoal_node_duplicate_pieces_total", "Pieces received again."),
            forged: counter("shoal_node_forged_pieces_total", "Pieces with a bad signature (sender banned)."),
            pushes: counter("shoal_node_pushes_sent_total", "Pieces pushed down the trees."),
            responses: counter("shoal_node_responses_sent_total", "Pieces sent in answer to requests."),
            requests: counter("shoal_node_requests_sent_total", "Pieces requested (repair)."),
            protocol_errors: counter("shoal_node_protocol_errors_total", "Neighbours that broke the protocol."),
            floods: counter("shoal_node_flood_drops_total", "Neighbours dropped for flooding."),
            stalled: counter("shoal_node_stalled_drops_total", "Neighbours dropped for not reading."),
            bans: counter(
                "shoal_node_address_bans_total",
                "Peer addresses banned (a forged piece or a flood from them).",
            ),
            refused_banned: counter(
                "shoal_node_inbound_refused_banned_total",
                "Inbound peer connections refused: the address is banned.",
            ),
            refused_capped: counter(
                "shoal_node_inbound_refused_capped_total",
                "Inbound peer connections refused: too many from that address or network.",
            ),
            jumps: counter(
                "shoal_node_numbering_jumps_total",
                "Times the channel's numbering jumped (ingest restarts).",
            ),
            parents_stalled: counter(
                "shoal_node_parents_stalled_total",
                "Push parents dropped for not delivering in time (withholding or late).",
            ),
            children_unvouched: counter(
                "shoal_node_children_unvouched_total",
                "Seed child slots taken back: no other neighbour was fed through that child.",
            ),
            repairs_refused: counter(
                "shoal_node_repairs_refused_total",
                "Requests answered Busy: the asker gives nothing and took its free share of repairs.",
            ),
            webrtc_sessions: registered(
                &registry,
                IntGauge::with_opts(opts("shoal_webrtc_sessions", "Pages' WebRTC sessions open or opening.")),
            ),
            webrtc: registered(
                &registry,
                prometheus::IntCounterVec::new(
                    opts(
                        "shoal_webrtc_events_total",
                        "Pages' WebRTC sessions: offers answered or refused, channels opened, sessions dropped \
                         (timed_out, oversize, flooded, per_address), STUN answered, stray datagrams.",
                    ),
                    &["event"],
                ),
            ),
            registry,
        }
    }

    /// Sets the WebRTC metrics to the host's counters (counters only move up).
    pub fn update_rtc(&self, st: &crate::rtc::RtcStats) {
        self.webrtc_sessions.set(i64::try_from(st.sessions).unwrap_or(i64::MAX));
        for (event, v) in [
            ("offer_answered", st.offers_answered),
            ("offer_refused", st.offers_refused),
            ("channel_opened", st.channels_opened),
            ("timed_out", st.timed_out),
            ("oversize", st.oversize),
            ("flooded", st.flooded),
            ("per_address", st.per_address_refused),
            ("stun_answered", st.stun_answered),
            ("stray_datagram", st.stray_datagrams),
        ] {
            let c = self.webrtc.with_label_values(&[event]);
            c.inc_by(v.saturating_sub(c.get()));
        }
    }

    /// Sets every metric to the snapshot's figure (counters only move up).
    pub fn update(&self, snap: &Snapshot) {
        let st = &snap.stats;
        self.neighbours.set(i64::try_from(snap.neighbours).unwrap_or(i64::MAX));
        self.push_slots.set(i64::from(snap.push_slots));
        self.push_children.set(i64::from(snap.push_children));
        for (c, v) in [
            (&self.sent, snap.bytes_sent),
            (&self.received, snap.bytes_received),
            (&self.accepted, st.pieces_accepted),
            (&self.duplicates, st.duplicate_pieces),
            (&self.forged, st.forged_pieces),
            (&self.pushes, st.pushes_sent),
            (&self.responses, st.responses_sent),
            (&self.requests, st.requests_sent),
            (&self.protocol_errors, st.protocol_errors + st.malformed),
            (&self.floods, st.floods),
            (&self.stalled, snap.stalled_dropped),
            (&self.bans, snap.guard.bans),
            (&self.refused_banned, snap.guard.refused_banned),
            (&self.refused_capped, snap.guard.refused_capped),
            (&self.jumps, st.jumps),
            (&self.parents_stalled, st.parents_stalled),
            (&self.children_unvouched, st.children_unvouched),
            (&self.repairs_refused, st.repairs_refused),
        ] {
            c.inc_by(v.saturating_sub(c.get()));
        }
    }
}

/// The `role` label's value.
pub fn role_label(role: Role) -> &'static str {
    match role {
        Role::Seed => "seed",
        Role::Viewer => "viewer",
    }
}
