//! The sans-IO peer: one state machine for seeds and viewers, driven by its shell.
//!
//! The shell (a tokio task over sockets, or the simulator) owns connections and time.
//! It tells the peer what happened — `handle_connected`, `handle_message`,
//! `handle_timeout`, ... — always passing `now` in µs, and then drains what the peer
//! wants done: [`Peer::poll_transmit`] (the next message to send, pulled whenever the
//! uplink can take one, so the peer decides as late as possible what is most worth
//! sending) and [`Peer::poll_event`] (connect, disconnect, play, ...). It wakes the peer
//! at [`Peer::poll_timeout`]. The peer never reads a clock, never blocks, never panics on
//! input.
//!
//! Forwarding: the stream is split into `n_substreams` substreams (`seq % n`). Each
//! viewer subscribes, per substream, to one parent among its neighbours that advertises
//! a path to a seed (distance-vector `depth`, so trees can't loop), and the parent pushes
//! every piece of that substream on arrival. Every peer announces what it holds
//! (`Have`); gaps left by a slow or lost parent are pulled (`Request`) from any
//! neighbour that has them, before their playout deadline. ARCHITECTURE.md explains
//! the choice against BitTorrent Live's clubs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use std::sync::Arc;

use crate::piece::{ChannelId, ChannelVerifier, Piece, PieceError, PieceFlags, Verify};
use crate::rng::Rng;
use crate::wire::{
    GoodbyeReason, Hello, MAX_HAVE_WORDS, MAX_REQUEST_SEQS, MAX_SUBSTREAMS, Message, PROTOCOL_VERSION, PeerId, Role,
    Status, WireError,
};

/// Time in µs. Wall clock (since the Unix epoch) in real shells, virtual in the
/// simulator; piece timestamps are on the same scale.
pub type Micros = u64;

const MS: Micros = 1_000;
const SECOND: Micros = 1_000_000;
/// Depth at which a path is treated as broken (counts-to-infinity stop here).
const MAX_DEPTH: u8 = 32;
/// How soon a want that found no neighbour to ask is tried again.
const REQUEST_RETRY: Micros = 20 * MS;

/// The shell's name for the remote end of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// Everything a peer needs to know; the defaults suit a 3 Mbit/s channel.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub role: Role,
    pub peer_id: PeerId,
    pub channel: ChannelId,
    /// Whether this peer accepts incoming connections.
    pub reachable: bool,
    /// Upload capacity this peer offers, kbit/s.
    pub upload_kbps: u32,
    /// Expected bitrate of the channel, kbit/s (from the tracker).
    pub stream_kbps: u32,
    /// Substreams the channel is split into (1..=64).
    pub n_substreams: u8,
    /// Share of `upload_kbps` given to push subscriptions; the rest serves repairs.
    pub push_share: f64,
    /// Push subscriptions this peer accepts, overriding the figure derived from
    /// `upload_kbps` (a seed uses it to cap its share of the traffic).
    pub max_child_slots: Option<u32>,
    /// Pieces kept behind the newest one.
    pub window_pieces: u64,
    /// How far past the newest verified piece a claim or piece may be.
    pub max_ahead_pieces: u64,
    /// How far in the future a piece timestamp may be (clock skew allowance).
    pub max_clock_skew: Micros,
    /// Oldest piece timestamp accepted, relative to now: older is a replay.
    pub max_piece_age: Micros,
    /// Delay from a piece's ingest timestamp to its playout.
    pub playout_delay: Micros,
    /// Neighbours this peer tries to keep.
    pub target_neighbours: usize,
    /// Neighbours beyond which incoming connections are refused.
    pub max_neighbours: usize,
    /// How long to wait for a push before pulling a piece a neighbour announced,
    /// when a parent feeds its substream and its push latency is not known yet.
    /// Once known, the wait is the parent's usual latency plus two deviations.
    pub repair_wait: Micros,
    /// The least wait after hearing of a piece, and the whole wait when no parent
    /// feeds its substream.
    pub repair_wait_min: Micros,
    /// Pull at the latest this long before the playout deadline, whatever the parent.
    pub repair_margin: Micros,
    /// Pull from a seed only this close to the deadline (seeds' upload is the
    /// broadcaster's cost); viewers are asked first.
    pub seed_repair_margin: Micros,
    /// When an unanswered request is given up and sent elsewhere.
    pub request_timeout: Micros,
    /// Most requests outstanding at one neighbour.
    pub max_requests_per_neighbour: u32,
    /// Most requests of one neighbour this peer queues for answering.
    pub max_queued_responses: u32,
    /// A request is refused (`DontHave`) when the uplink's queued piece data would
    /// take longer than this to send: the requester does better asking elsewhere.
    pub max_response_backlog: Micros,
    /// Period of housekeeping: parent choice, keep-alive, idle checks.
    pub tick: Micros,
    pub keepalive: Micros,
    pub idle_timeout: Micros,
    /// A neighbour that has neither given us a new piece nor taken one from us for
    /// this long is replaced when we have all the neighbours we want.
    pub useless_after: Micros,
    /// Extra score, in µs of RTT, a seed parent costs against a viewer parent (keeps
    /// seeds' upload for injection and last-resort repair).
    pub seed_parent_penalty: Micros,
}

impl PeerConfig {
    pub fn new(role: Role, peer_id: PeerId, channel: ChannelId) -> Self {
        PeerConfig {
            role,
            peer_id,
            channel,
            reachable: true,
            upload_kbps: 6_000,
            stream_kbps: 3_000,
            n_substreams: 8,
            push_share: 0.8,
            max_child_slots: None,
            window_pieces: 128,
            max_ahead_pieces: 64,
            max_clock_skew: 5 * SECOND,
            max_piece_age: 60 * SECOND,
            playout_delay: 1_500 * MS,
            target_neighbours: 12,
            max_neighbours: 32,
            repair_wait: 400 * MS,
            repair_wait_min: 30 * MS,
            repair_margin: 500 * MS,
            seed_repair_margin: 350 * MS,
            request_timeout: 800 * MS,
            max_requests_per_neighbour: 4,
            max_queued_responses: 8,
            max_response_backlog: 300 * MS,
            tick: 100 * MS,
            keepalive: 2 * SECOND,
            idle_timeout: 10 * SECOND,
            useless_after: 15 * SECOND,
            seed_parent_penalty: 150 * MS,
        }
    }

    fn child_slots(&self) -> u32 {
        if let Some(n) = self.max_child_slots {
            return n;
        }
        // A peer that can't upload one whole stream would add a long store-and-forward
        // hop to every piece it relays: it stays a leaf and only serves repairs.
        if self.upload_kbps < self.stream_kbps {
            return 0;
        }
        let per_substream = f64::from(self.stream_kbps.max(1)) / f64::from(self.n_substreams);
        (f64::from(self.upload_kbps) * self.push_share / per_substream).floor() as u32
    }
}

/// Why a configuration can't run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("n_substreams must be 1..={MAX_SUBSTREAMS}, got {0}")]
    Substreams(u8),
    #[error("window_pieces must be 8..={max}, got {got}", max = MAX_HAVE_WORDS * 64)]
    Window { got: u64 },
    #[error("channel id is not a valid Ed25519 key, or the verifier is for another channel")]
    Channel,
}

/// Why something a neighbour sent was refused. Counted in [`PeerStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// A piece failed its signature: the sender is banned.
    Forged,
    /// A piece or `Hello` of another channel.
    WrongChannel,
    /// Another protocol version.
    BadVersion(u16),
    /// A piece or claim far outside the live window, or from the future.
    OutOfWindow { seq: u64 },
    /// A message out of place (before `Hello`, bad substream mask, ...).
    Protocol(&'static str),
    /// A piece whose shape is wrong.
    BadPiece(PieceError),
    /// Bytes the shell could not decode into a message.
    Malformed(WireError),
}

/// What the peer asks its shell to do or tells it happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// Open a connection to this node.
    Connect(NodeId),
    /// Close this connection (any `Goodbye` has already been handed to `poll_transmit`).
    Disconnect(NodeId, GoodbyeReason),
    /// Fewer neighbours than wanted: pass candidates to [`Peer::handle_candidates`].
    WantPeers,
    /// A piece passed verification and entered the window (it may now be forwarded).
    Accepted { piece: Piece, from: Option<NodeId> },
    /// Something from `from` was refused; the peer has already acted on it.
    Rejected { from: NodeId, reason: Reject },
    /// A viewer began playback at this segment start.
    PlaybackStarted { seq: u64 },
    /// Play this piece now (in order, at its deadline).
    Play(Piece),
    /// This piece missed its deadline and is skipped.
    Skipped { seq: u64 },
}

/// A message for one neighbour.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub to: NodeId,
    pub msg: Message,
}

/// Counters for metrics and the simulator.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    pub pieces_accepted: u64,
    pub piece_bytes_accepted: u64,
    pub duplicate_pieces: u64,
    pub duplicate_bytes: u64,
    pub stale_pieces: u64,
    pub forged_pieces: u64,
    pub malformed: u64,
    pub wrong_channel: u64,
    pub out_of_window: u64,
    pub protocol_errors: u64,
    pub pushes_sent: u64,
    pub responses_sent: u64,
    pub requests_sent: u64,
    pub requests_timed_out: u64,
    pub dont_have_sent: u64,
    pub played: u64,
    pub skipped: u64,
    pub neighbours_dropped: u64,
}

#[derive(Debug)]
struct Neighbour {
    node: NodeId,
    hello: Option<Hello>,
    status: Option<Status>,
    rtt: Option<Micros>,
    ping: Option<(u64, Micros)>,
    last_recv: Micros,
    last_sent_ping: Micros,
    have: SeqSet,
    /// Substreams we push to them.
    children: u64,
    /// Substreams they accepted to push to us.
    parents: u64,
    /// Substreams we asked for and have no answer on yet.
    asked: u64,
    requests_out: u32,
    responses_queued: u32,
    failures: u32,
    connected_at: Micros,
    /// Last time this neighbour gave us a new piece, or took pieces from us.
    last_useful: Micros,
}

impl Neighbour {
    fn is_seed(&self) -> bool {
        self.hello.as_ref().is_some_and(|h| h.role == Role::Seed)
    }

    fn depth(&self, s: usize) -> u8 {
        self.status.as_ref().and_then(|st| st.depth.get(s).copied()).unwrap_or(Status::NO_PATH)
    }
}

/// Set of sequence numbers near the live edge, as a sliding bitmap.
#[derive(Debug, Default)]
struct SeqSet {
    base: u64,
    words: VecDeque<u64>,
}

impl SeqSet {
    fn contains(&self, seq: u64) -> bool {
        if seq < self.base {
            return false;
        }
        let off = seq - self.base;
        self.words.get((off / 64) as usize).is_some_and(|w| w & (1 << (off % 64)) != 0)
    }

    fn insert(&mut self, seq: u64) {
        if self.words.is_empty() {
            self.base = seq - seq % 64;
        }
        if seq < self.base {
            return;
        }
        let word = ((seq - self.base) / 64) as usize;
        if word >= MAX_HAVE_WORDS {
            let shift = word + 1 - MAX_HAVE_WORDS;
            for _ in 0..shift.min(self.words.len()) {
                self.words.pop_front();
            }
            self.base += 64 * shift as u64;
        }
        let word = ((seq - self.base) / 64) as usize;
        while self.words.len() <= word {
            self.words.push_back(0);
        }
        self.words[word] |= 1 << ((seq - self.base) % 64);
    }

    fn remove(&mut self, seq: u64) {
        if seq >= self.base {
            let off = seq - self.base;
            if let Some(w) = self.words.get_mut((off / 64) as usize) {
                *w &= !(1 << (off % 64));
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Want {
    heard_at: Micros,
    /// Neighbour asked and when the request expires.
    asked: Option<(NodeId, Micros)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    Push,
    Response,
}

/// The peer state machine. See the module documentation.
#[derive(Debug)]
pub struct Peer {
    cfg: PeerConfig,
    verifier: Arc<dyn Verify>,
    rng: Rng,
    /// Pieces by seq, `window_pieces` behind the newest at most.
    window: BTreeMap<u64, Piece>,
    newest: Option<u64>,
    latest_segment_start: Option<u64>,
    neighbours: Vec<Neighbour>,
    connecting: BTreeMap<NodeId, Micros>,
    banned_nodes: BTreeSet<NodeId>,
    banned_peers: BTreeSet<PeerId>,
    wants: BTreeMap<u64, Want>,
    /// Per substream: the neighbour feeding it to us.
    parent: Vec<Option<NodeId>>,
    /// Per substream: mean and mean deviation of (arrival - ingest timestamp) of
    /// pieces pushed by the parent, µs.
    push_latency: Vec<Option<(f64, f64)>>,
    depth: Vec<u8>,
    status_dirty: bool,
    control: VecDeque<Transmit>,
    data: VecDeque<(NodeId, u64, Queued, u32)>,
    /// Bytes of piece data in `data`.
    data_bytes: u64,
    /// Size of the last piece accepted, to estimate hop times.
    typical_piece_bytes: u64,
    events: VecDeque<Event>,
    playout: Playout,
    next_tick: Micros,
    last_request_pass: Option<Micros>,
    last_want_peers: Option<Micros>,
    last_replace: Micros,
    stats: PeerStats,
    left: bool,
}

#[derive(Debug, Default)]
struct Playout {
    /// Next seq to play, once started.
    cursor: Option<u64>,
    /// Delay from piece timestamp to play time, fixed at start.
    offset: Micros,
    /// Segment start we intend to begin at.
    target: Option<u64>,
}

impl Peer {
    /// A peer that verifies pieces with the channel's key.
    pub fn new(cfg: PeerConfig, now: Micros) -> Result<Self, ConfigError> {
        let verifier = ChannelVerifier::new(cfg.channel).map_err(|_| ConfigError::Channel)?;
        Self::with_verifier(cfg, now, Arc::new(verifier))
    }

    /// A peer that verifies pieces with `verifier`, which must be for `cfg.channel`.
    pub fn with_verifier(cfg: PeerConfig, now: Micros, verifier: Arc<dyn Verify>) -> Result<Self, ConfigError> {
        if verifier.channel() != cfg.channel {
            return Err(ConfigError::Channel);
        }
        if cfg.n_substreams == 0 || cfg.n_substreams as usize > MAX_SUBSTREAMS {
            return Err(ConfigError::Substreams(cfg.n_substreams));
        }
        if !(8..=(MAX_HAVE_WORDS as u64 * 64)).contains(&cfg.window_pieces) {
            return Err(ConfigError::Window { got: cfg.window_pieces });
        }
        let n = cfg.n_substreams as usize;
        let seed_depth = if cfg.role == Role::Seed { 0 } else { Status::NO_PATH };
        Ok(Peer {
            rng: Rng::derive(cfg.peer_id.0, 0x5eed),
            verifier,
            window: BTreeMap::new(),
            newest: None,
            latest_segment_start: None,
            neighbours: Vec::new(),
            connecting: BTreeMap::new(),
            banned_nodes: BTreeSet::new(),
            banned_peers: BTreeSet::new(),
            wants: BTreeMap::new(),
            parent: vec![None; n],
            push_latency: vec![None; n],
            depth: vec![seed_depth; n],
            status_dirty: false,
            control: VecDeque::new(),
            data: VecDeque::new(),
            data_bytes: 0,
            typical_piece_bytes: u64::from(cfg.stream_kbps) * 1000 / 8 / 4,
            events: VecDeque::from([Event::WantPeers]),
            playout: Playout::default(),
            next_tick: now,
            last_request_pass: None,
            last_want_peers: Some(now),
            last_replace: now,
            stats: PeerStats::default(),
            left: false,
            cfg,
        })
    }

    pub fn config(&self) -> &PeerConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    pub fn n_neighbours(&self) -> usize {
        self.neighbours.len()
    }

    /// Newest verified piece held.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    pub fn piece(&self, seq: u64) -> Option<&Piece> {
        self.window.get(&seq)
    }

    /// Current distance from a seed per substream (`255`: no feed).
    pub fn depths(&self) -> &[u8] {
        &self.depth
    }

    /// A connection to `node` is up (`outbound`: we opened it).
    pub fn handle_connected(&mut self, now: Micros, node: NodeId, outbound: bool) {
        self.connecting.remove(&node);
        if self.left || self.neighbour_idx(node).is_some() {
            return;
        }
        if self.banned_nodes.contains(&node) {
            self.goodbye_unlisted(node, GoodbyeReason::Forged);
            return;
        }
        if !outbound && self.neighbours.len() >= self.cfg.max_neighbours {
            self.goodbye_unlisted(node, GoodbyeReason::Full);
            return;
        }
        self.neighbours.push(Neighbour {
            node,
            hello: None,
            status: None,
            rtt: None,
            ping: None,
            last_recv: now,
            last_sent_ping: now,
            have: SeqSet::default(),
            children: 0,
            parents: 0,
            asked: 0,
            requests_out: 0,
            responses_queued: 0,
            failures: 0,
            connected_at: now,
            last_useful: now,
        });
        let hello = Hello {
            version: PROTOCOL_VERSION,
            channel: self.cfg.channel,
            peer_id: self.cfg.peer_id,
            role: self.cfg.role,
            reachable: self.cfg.reachable,
            n_substreams: self.cfg.n_substreams,
            upload_kbps: self.cfg.upload_kbps,
        };
        self.send(node, Message::Hello(hello));
        let nonce = self.rng.next_u64();
        self.send(node, Message::Ping { nonce });
        if let Some(n) = self.neighbours.last_mut() {
            n.ping = Some((nonce, now));
        }
    }

    /// A connection we asked for could not be opened.
    pub fn handle_connect_failed(&mut self, _now: Micros, node: NodeId) {
        self.connecting.remove(&node);
    }

    /// The connection to `node` is gone (closed by either side or by the network).
    pub fn handle_disconnected(&mut self, _now: Micros, node: NodeId) {
        self.connecting.remove(&node);
        if let Some(idx) = self.neighbour_idx(node) {
            self.remove_neighbour(idx);
        }
    }

    /// Nodes the shell can connect to (from the tracker). The peer picks among them.
    pub fn handle_candidates(&mut self, now: Micros, candidates: &[NodeId]) {
        if self.left {
            return;
        }
        let mut fresh: Vec<NodeId> = candidates
            .iter()
            .copied()
            .filter(|c| {
                !self.banned_nodes.contains(c) && !self.connecting.contains_key(c) && self.neighbour_idx(*c).is_none()
            })
            .collect();
        self.rng.shuffle(&mut fresh);
        let room = self.cfg.target_neighbours.saturating_sub(self.neighbours.len() + self.connecting.len());
        for node in fresh.into_iter().take(room) {
            self.connecting.insert(node, now);
            self.events.push_back(Event::Connect(node));
        }
    }

    /// A piece from ingest (seeds only). Verified like any other.
    pub fn handle_origin_piece(&mut self, now: Micros, piece: Piece) -> Result<(), PieceError> {
        if self.window.contains_key(&piece.seq()) {
            return Ok(());
        }
        self.verifier.verify(&piece)?;
        self.accept(now, piece, None);
        Ok(())
    }

    pub fn handle_message(&mut self, now: Micros, from: NodeId, msg: Message) {
        let Some(idx) = self.neighbour_idx(from) else { return };
        self.neighbours[idx].last_recv = now;
        if self.neighbours[idx].hello.is_none() {
            match msg {
                Message::Hello(h) => self.on_hello(now, idx, h),
                Message::Goodbye { .. } => self.close(idx, None),
                _ => self.misbehaved(idx, Reject::Protocol("message before hello"), GoodbyeReason::Malformed),
            }
            return;
        }
        match msg {
            Message::Hello(_) => self.misbehaved(idx, Reject::Protocol("second hello"), GoodbyeReason::Malformed),
            Message::Status(st) => self.on_status(idx, st),
            Message::Have { seq } => self.on_have(now, idx, seq),
            Message::HaveMap { base, bits } => {
                for (w, word) in bits.iter().enumerate() {
                    for b in 0..64 {
                        if word & (1 << b) != 0 {
                            let Some(seq) = base.checked_add(64 * w as u64 + b) else { continue };
                            self.on_have(now, idx, seq);
                            if self.neighbour_idx(from).is_none() {
                                return;
                            }
                        }
                    }
                }
            }
            Message::Subscribe { substreams } => self.on_subscribe(idx, substreams),
            Message::SubscribeReply { accepted } => self.on_subscribe_reply(idx, accepted),
            Message::Request { seqs } => self.on_request(idx, &seqs),
            Message::Piece(piece) => self.on_piece(now, idx, piece),
            Message::DontHave { seq } => {
                let n = &mut self.neighbours[idx];
                n.have.remove(seq);
                if let Some(w) = self.wants.get_mut(&seq)
                    && w.asked.is_some_and(|(node, _)| node == from)
                {
                    w.asked = None;
                    let n = &mut self.neighbours[idx];
                    n.requests_out = n.requests_out.saturating_sub(1);
                    n.failures += 1;
                }
            }
            Message::Ping { nonce } => self.send(from, Message::Pong { nonce }),
            Message::Pong { nonce } => {
                let n = &mut self.neighbours[idx];
                if let Some((sent_nonce, sent_at)) = n.ping
                    && sent_nonce == nonce
                {
                    let sample = now.saturating_sub(sent_at);
                    n.rtt = Some(n.rtt.map_or(sample, |r| (7 * r + sample) / 8));
                    n.ping = None;
                }
            }
            Message::Goodbye { .. } => self.close(idx, None),
        }
    }

    /// The shell could not decode what `from` sent (see [`crate::wire::FrameDecoder`]):
    /// the connection is closed with `Goodbye(Malformed)` and the error counted.
    pub fn handle_malformed(&mut self, _now: Micros, from: NodeId, error: WireError) {
        let Some(idx) = self.neighbour_idx(from) else { return };
        self.stats.malformed += 1;
        self.misbehaved(idx, Reject::Malformed(error), GoodbyeReason::Malformed);
    }

    /// Housekeeping; call at [`Peer::poll_timeout`] (earlier or later is harmless).
    pub fn handle_timeout(&mut self, now: Micros) {
        if self.left {
            return;
        }
        self.expire_requests(now);
        self.send_requests(now);
        self.advance_playout(now);
        if now >= self.next_tick {
            self.next_tick = now + self.cfg.tick;
            self.maintain(now);
        }
    }

    /// Leave the swarm: goodbye to every neighbour.
    pub fn leave(&mut self) {
        self.left = true;
        while let Some(idx) = self.neighbours.len().checked_sub(1) {
            self.close(idx, Some(GoodbyeReason::Leaving));
        }
    }

    /// The next message to send. Call whenever the uplink can take one more.
    pub fn poll_transmit(&mut self, now: Micros) -> Option<Transmit> {
        if let Some(t) = self.control.pop_front() {
            if let Message::Goodbye { reason } = t.msg {
                self.events.push_back(Event::Disconnect(t.to, reason));
            }
            return Some(t);
        }
        while let Some((to, seq, kind, bytes)) = self.data.pop_front() {
            self.data_bytes = self.data_bytes.saturating_sub(u64::from(bytes));
            let Some(idx) = self.neighbour_idx(to) else { continue };
            if kind == Queued::Response {
                let n = &mut self.neighbours[idx];
                n.responses_queued = n.responses_queued.saturating_sub(1);
            }
            let Some(piece) = self.window.get(&seq) else {
                if kind == Queued::Response {
                    self.send(to, Message::DontHave { seq });
                    return self.control.pop_front();
                }
                continue;
            };
            // A piece past everyone's playout deadline is not worth the uplink.
            if piece.timestamp_us() + self.cfg.playout_delay + 2 * SECOND < now {
                continue;
            }
            let piece = piece.clone();
            match kind {
                Queued::Push => self.stats.pushes_sent += 1,
                Queued::Response => self.stats.responses_sent += 1,
            }
            let n = &mut self.neighbours[idx];
            n.have.insert(seq);
            n.last_useful = now;
            return Some(Transmit { to, msg: Message::Piece(piece) });
        }
        None
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Peer::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Micros> {
        if self.left {
            return None;
        }
        let mut at = self.next_tick;
        // A want that was ready at the last pass but found no neighbour to ask is
        // retried a little later, not in a busy loop.
        let retry = self.last_request_pass.map_or(0, |t| t + REQUEST_RETRY);
        for (&seq, w) in &self.wants {
            let t = match w.asked {
                Some((_, expires)) => expires,
                None => self.ready_at(seq, w).max(retry),
            };
            at = at.min(t);
        }
        if let Some(t) = self.next_playout_deadline() {
            at = at.min(t);
        }
        Some(at)
    }

    // ---- message handlers ----

    fn on_hello(&mut self, now: Micros, idx: usize, h: Hello) {
        if h.version != PROTOCOL_VERSION {
            return self.misbehaved(idx, Reject::BadVersion(h.version), GoodbyeReason::BadVersion);
        }
        if h.channel != self.cfg.channel {
            return self.misbehaved(idx, Reject::WrongChannel, GoodbyeReason::WrongChannel);
        }
        if self.banned_peers.contains(&h.peer_id) {
            return self.close(idx, Some(GoodbyeReason::Forged));
        }
        if h.peer_id == self.cfg.peer_id
            || self.neighbours.iter().any(|n| n.hello.as_ref().is_some_and(|o| o.peer_id == h.peer_id))
        {
            return self.close(idx, Some(GoodbyeReason::Duplicate));
        }
        let node = self.neighbours[idx].node;
        self.neighbours[idx].hello = Some(h);
        let status = self.status();
        self.send(node, Message::Status(status));
        if let Some(map) = self.have_map() {
            self.send(node, map);
        }
        let _ = now;
    }

    fn on_status(&mut self, idx: usize, st: Status) {
        if st.depth.len() != self.cfg.n_substreams as usize {
            return self.misbehaved(
                idx,
                Reject::Protocol("status with wrong substream count"),
                GoodbyeReason::Malformed,
            );
        }
        if let Some(s) = st.segment_start
            && self.cfg.role == Role::Viewer
            && self.playout.cursor.is_none()
            && self.acceptable_seq(s)
        {
            self.playout.target = Some(self.playout.target.map_or(s, |t| t.max(s)));
        }
        self.neighbours[idx].status = Some(st);
    }

    fn on_have(&mut self, now: Micros, idx: usize, seq: u64) {
        if !self.acceptable_seq(seq) {
            let node = self.neighbours[idx].node;
            self.stats.out_of_window += 1;
            self.events.push_back(Event::Rejected { from: node, reason: Reject::OutOfWindow { seq } });
            self.close(idx, Some(GoodbyeReason::OutOfWindow));
            return;
        }
        self.neighbours[idx].have.insert(seq);
        // Wants stay within one window above the floor, whatever neighbours claim.
        let wanted =
            self.want_floor().is_some_and(|floor| seq >= floor && seq < floor.saturating_add(self.cfg.window_pieces));
        if self.cfg.role == Role::Viewer && wanted && !self.window.contains_key(&seq) {
            self.wants.entry(seq).or_insert(Want { heard_at: now, asked: None });
        }
    }

    fn on_subscribe(&mut self, idx: usize, mask: u64) {
        let n_sub = self.cfg.n_substreams as u32;
        if n_sub < 64 && mask >> n_sub != 0 {
            return self.misbehaved(idx, Reject::Protocol("subscribe to unknown substream"), GoodbyeReason::Malformed);
        }
        let used: u32 = self.neighbours.iter().map(|n| n.children.count_ones()).sum();
        let current = self.neighbours[idx].children;
        let mut free = self.cfg.child_slots().saturating_sub(used - current.count_ones());
        let mut accepted = 0u64;
        for s in 0..n_sub as usize {
            let bit = 1u64 << s;
            if mask & bit == 0 || self.depth[s] >= MAX_DEPTH || self.neighbours[idx].parents & bit != 0 {
                continue;
            }
            if free > 0 {
                accepted |= bit;
                free -= 1;
            }
        }
        self.neighbours[idx].children = accepted;
        let node = self.neighbours[idx].node;
        self.send(node, Message::SubscribeReply { accepted });
        self.status_dirty = true;
    }

    fn on_subscribe_reply(&mut self, idx: usize, accepted: u64) {
        let n = &mut self.neighbours[idx];
        let refused = n.asked & !accepted;
        n.parents = (n.parents | n.asked) & accepted;
        n.asked = 0;
        if refused != 0 {
            n.failures += 1;
        }
        let node = n.node;
        for s in 0..self.parent.len() {
            if refused & (1 << s) != 0 && self.parent[s] == Some(node) {
                self.parent[s] = None;
            }
        }
        self.recompute_depth();
    }

    fn on_request(&mut self, idx: usize, seqs: &[u64]) {
        let node = self.neighbours[idx].node;
        for &seq in seqs {
            let busy = self.backlog() > self.cfg.max_response_backlog;
            let n = &mut self.neighbours[idx];
            if !busy
                && let Some(piece) = self.window.get(&seq)
                && n.responses_queued < self.cfg.max_queued_responses
            {
                n.responses_queued += 1;
                let bytes = piece.encoded_len() as u32;
                self.data_bytes += u64::from(bytes);
                self.data.push_back((node, seq, Queued::Response, bytes));
            } else {
                self.stats.dont_have_sent += 1;
                self.send(node, Message::DontHave { seq });
            }
        }
    }

    fn on_piece(&mut self, now: Micros, idx: usize, piece: Piece) {
        let node = self.neighbours[idx].node;
        let seq = piece.seq();
        let n = &mut self.neighbours[idx];
        n.have.insert(seq);
        if let Some(w) = self.wants.get(&seq)
            && w.asked.is_some_and(|(a, _)| a == node)
        {
            n.requests_out = n.requests_out.saturating_sub(1);
        }
        if self.window.contains_key(&seq) {
            self.stats.duplicate_pieces += 1;
            self.stats.duplicate_bytes += piece.encoded_len() as u64;
            return;
        }
        let ts = piece.timestamp_us();
        let too_old = ts.saturating_add(self.cfg.max_piece_age) < now;
        let future = ts > now.saturating_add(self.cfg.max_clock_skew);
        if too_old || future || !self.acceptable_seq(seq) {
            self.stats.out_of_window += 1;
            return self.misbehaved(idx, Reject::OutOfWindow { seq }, GoodbyeReason::OutOfWindow);
        }
        if self.newest.is_some_and(|newest| seq + self.cfg.window_pieces <= newest) {
            // Fell out of the window while in flight: late, not malicious.
            self.stats.stale_pieces += 1;
            return;
        }
        if let Err(e) = self.verifier.verify(&piece) {
            return match e {
                PieceError::BadSignature => {
                    self.stats.forged_pieces += 1;
                    if let Some(h) = &self.neighbours[idx].hello {
                        self.banned_peers.insert(h.peer_id);
                    }
                    self.banned_nodes.insert(node);
                    self.misbehaved(idx, Reject::Forged, GoodbyeReason::Forged)
                }
                PieceError::WrongChannel { .. } => {
                    self.stats.wrong_channel += 1;
                    self.misbehaved(idx, Reject::WrongChannel, GoodbyeReason::WrongChannel)
                }
                other => {
                    self.stats.malformed += 1;
                    self.misbehaved(idx, Reject::BadPiece(other), GoodbyeReason::Malformed)
                }
            };
        }
        self.neighbours[idx].failures = 0;
        self.neighbours[idx].last_useful = now;
        let s = self.substream(seq);
        if self.parent[s] == Some(node) {
            let x = now.saturating_sub(ts) as f64;
            self.push_latency[s] = Some(match self.push_latency[s] {
                None => (x, x / 4.0),
                Some((mean, dev)) => (mean + (x - mean) / 8.0, dev + ((x - mean).abs() - dev) / 4.0),
            });
        }
        self.accept(now, piece, Some(node));
    }

    // ---- core ----

    fn accept(&mut self, now: Micros, piece: Piece, from: Option<NodeId>) {
        let seq = piece.seq();
        self.stats.pieces_accepted += 1;
        self.typical_piece_bytes = piece.encoded_len() as u64;
        self.stats.piece_bytes_accepted += piece.encoded_len() as u64;
        if let Some(w) = self.wants.remove(&seq)
            && let Some((asked, _)) = w.asked
            && Some(asked) != from
            && let Some(i) = self.neighbour_idx(asked)
        {
            let n = &mut self.neighbours[i];
            n.requests_out = n.requests_out.saturating_sub(1);
        }
        if piece.flags().contains(PieceFlags::SEGMENT_START) && self.latest_segment_start.is_none_or(|s| s < seq) {
            self.latest_segment_start = Some(seq);
            if self.cfg.role == Role::Viewer && self.playout.cursor.is_none() {
                self.playout.target = Some(self.playout.target.map_or(seq, |t| t.max(seq)));
            }
        }
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
        // A start point a neighbour claimed far beyond what verified pieces show is a
        // lie (or a stale clock): fall back to the newest verified segment start.
        if self.playout.cursor.is_none()
            && self.playout.target.is_some_and(|t| t > seq.saturating_add(self.cfg.max_ahead_pieces))
        {
            self.playout.target = self.latest_segment_start;
            self.retain_wants(|_| false);
        }
        let s = (seq % u64::from(self.cfg.n_substreams)) as usize;
        for n in &mut self.neighbours {
            if Some(n.node) == from || n.hello.is_none() || n.have.contains(seq) {
                continue;
            }
            if n.children & (1 << s) != 0 {
                n.have.insert(seq);
                self.data_bytes += piece.encoded_len() as u64;
                // Pushes go before queued responses: the push tree is the main path.
                let at = self.data.iter().position(|d| d.2 == Queued::Response).unwrap_or(self.data.len());
                self.data.insert(at, (n.node, seq, Queued::Push, piece.encoded_len() as u32));
            } else {
                self.control.push_back(Transmit { to: n.node, msg: Message::Have { seq } });
            }
        }
        self.events.push_back(Event::Accepted { piece: piece.clone(), from });
        self.window.insert(seq, piece);
        if let Some(newest) = self.newest {
            let floor = newest.saturating_sub(self.cfg.window_pieces - 1);
            while self.window.first_key_value().is_some_and(|(&k, _)| k < floor) {
                self.window.pop_first();
            }
            self.retain_wants(|k| k >= floor);
        }
        self.advance_playout(now);
    }

    /// A seq is plausible if it isn't far ahead of what we hold verified.
    fn acceptable_seq(&self, seq: u64) -> bool {
        self.newest.is_none_or(|newest| seq <= newest.saturating_add(self.cfg.max_ahead_pieces))
    }

    /// Lowest seq a viewer still wants.
    fn want_floor(&self) -> Option<u64> {
        self.playout.cursor.or(self.playout.target)
    }

    /// Drops the wants `keep` refuses, releasing the request budget they held.
    fn retain_wants(&mut self, keep: impl Fn(u64) -> bool) {
        let mut released = Vec::new();
        self.wants.retain(|&seq, w| {
            let kept = keep(seq);
            if !kept && let Some((node, _)) = w.asked {
                released.push(node);
            }
            kept
        });
        for node in released {
            if let Some(i) = self.neighbour_idx(node) {
                let n = &mut self.neighbours[i];
                n.requests_out = n.requests_out.saturating_sub(1);
            }
        }
    }

    fn substream(&self, seq: u64) -> usize {
        (seq % u64::from(self.cfg.n_substreams)) as usize
    }

    /// When a missing piece should be pulled: at once before playback starts; soon
    /// when no parent feeds its substream; else once the parent is clearly late.
    fn ready_at(&self, seq: u64, w: &Want) -> Micros {
        if self.playout.cursor.is_none() {
            return w.heard_at;
        }
        let earliest = w.heard_at + self.cfg.repair_wait_min;
        let s = self.substream(seq);
        if self.parent[s].is_none() {
            return earliest;
        }
        let Some(ts) = self.estimate_ts(seq) else { return w.heard_at + self.cfg.repair_wait };
        let expected = match self.push_latency[s] {
            Some((mean, dev)) => ts + (mean + 2.0 * dev) as Micros + self.cfg.repair_wait_min,
            None => w.heard_at + self.cfg.repair_wait,
        };
        let latest = (ts + self.playout.offset).saturating_sub(self.cfg.repair_margin);
        earliest.max(expected.min(latest))
    }

    /// Ingest timestamp of `seq`, from the pieces held (pieces are evenly spaced on
    /// average; exactness is not needed, only a deadline to aim for).
    fn estimate_ts(&self, seq: u64) -> Option<Micros> {
        let (&first_seq, first) = self.window.first_key_value()?;
        let (&last_seq, last) = self.window.last_key_value()?;
        if last_seq == first_seq {
            return Some(last.timestamp_us());
        }
        let interval = last.timestamp_us().saturating_sub(first.timestamp_us()) / (last_seq - first_seq);
        Some(if seq >= last_seq {
            last.timestamp_us().saturating_add((seq - last_seq).saturating_mul(interval))
        } else {
            last.timestamp_us().saturating_sub((last_seq - seq).saturating_mul(interval))
        })
    }

    /// Seeds are asked only when the deadline is near, or to start playback.
    fn seed_allowed(&self, now: Micros, seq: u64) -> bool {
        if self.playout.cursor.is_none() {
            return true;
        }
        self.estimate_ts(seq).is_none_or(|ts| now + self.cfg.seed_repair_margin >= ts + self.playout.offset)
    }

    fn expire_requests(&mut self, now: Micros) {
        let mut expired = Vec::new();
        for w in self.wants.values_mut() {
            if let Some((node, expires)) = w.asked
                && expires <= now
            {
                w.asked = None;
                expired.push(node);
            }
        }
        for node in expired {
            self.stats.requests_timed_out += 1;
            if let Some(i) = self.neighbour_idx(node) {
                let n = &mut self.neighbours[i];
                n.requests_out = n.requests_out.saturating_sub(1);
                n.failures += 1;
                n.have = SeqSet::default();
            }
        }
    }

    fn send_requests(&mut self, now: Micros) {
        if self.cfg.role != Role::Viewer {
            return;
        }
        self.last_request_pass = Some(now);
        // Drop wants the playout has passed.
        if let Some(floor) = self.want_floor() {
            self.retain_wants(|k| k >= floor);
        }
        let mut batches: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
        let ready: Vec<u64> = self
            .wants
            .iter()
            .filter(|(seq, w)| w.asked.is_none() && self.ready_at(**seq, w) <= now)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in ready {
            let Some(idx) = self.pick_source(now, seq) else { continue };
            let n = &mut self.neighbours[idx];
            n.requests_out += 1;
            let expires = now + self.cfg.request_timeout;
            if let Some(w) = self.wants.get_mut(&seq) {
                w.asked = Some((n.node, expires));
            }
            let batch = batches.entry(n.node).or_default();
            batch.push(seq);
        }
        for (node, seqs) in batches {
            for chunk in seqs.chunks(MAX_REQUEST_SEQS) {
                self.stats.requests_sent += chunk.len() as u64;
                self.send(node, Message::Request { seqs: chunk.to_vec() });
            }
        }
    }

    /// The neighbour to pull `seq` from: holds it, has request budget, lowest cost.
    fn pick_source(&self, now: Micros, seq: u64) -> Option<usize> {
        let seed_ok = self.seed_allowed(now, seq);
        self.neighbours
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.hello.is_some()
                    && n.have.contains(seq)
                    && n.requests_out < self.cfg.max_requests_per_neighbour
                    && (seed_ok || !n.is_seed())
            })
            .min_by_key(|(_, n)| {
                let seed = if n.is_seed() { self.cfg.seed_parent_penalty } else { 0 };
                n.rtt.unwrap_or(200 * MS)
                    + seed
                    + u64::from(n.requests_out) * 50 * MS
                    + u64::from(n.failures) * 100 * MS
            })
            .map(|(i, _)| i)
    }

    /// Time for the uplink to send the piece data already queued.
    fn backlog(&self) -> Micros {
        self.data_bytes * 8 * 1000 / u64::from(self.cfg.upload_kbps.max(1))
    }

    /// Time for a neighbour to send us one piece with its declared upload.
    fn hop_time(&self, n: &Neighbour) -> Micros {
        let kbps = n.hello.as_ref().map_or(1, |h| h.upload_kbps.max(1));
        self.typical_piece_bytes * 8 * 1000 / u64::from(kbps)
    }

    fn next_playout_deadline(&self) -> Option<Micros> {
        let cursor = self.playout.cursor?;
        let (_, piece) = self.window.range(cursor..).next()?;
        Some(piece.timestamp_us() + self.playout.offset)
    }

    fn advance_playout(&mut self, now: Micros) {
        if self.cfg.role != Role::Viewer {
            return;
        }
        if self.playout.cursor.is_none() {
            let Some(target) = self.playout.target else { return };
            let Some(piece) = self.window.get(&target) else { return };
            // Start at the target segment; keep the configured delay if we are early
            // enough, else whatever delay we joined with.
            self.playout.offset = self.cfg.playout_delay.max(now.saturating_sub(piece.timestamp_us()));
            self.playout.cursor = Some(target);
            self.retain_wants(|k| k >= target);
            self.events.push_back(Event::PlaybackStarted { seq: target });
        }
        while let Some(cursor) = self.playout.cursor {
            let Some((&seq, piece)) = self.window.range(cursor..).next() else { break };
            if piece.timestamp_us() + self.playout.offset > now {
                break;
            }
            for missed in cursor..seq {
                self.stats.skipped += 1;
                self.events.push_back(Event::Skipped { seq: missed });
            }
            self.stats.played += 1;
            self.events.push_back(Event::Play(piece.clone()));
            self.playout.cursor = Some(seq + 1);
        }
    }

    fn maintain(&mut self, now: Micros) {
        // Idle neighbours and keep-alive.
        let mut idx = 0;
        while idx < self.neighbours.len() {
            let n = &self.neighbours[idx];
            if now.saturating_sub(n.last_recv) > self.cfg.idle_timeout {
                self.stats.neighbours_dropped += 1;
                self.close(idx, Some(GoodbyeReason::Idle));
                continue;
            }
            if n.hello.is_some() && now.saturating_sub(n.last_sent_ping) >= self.cfg.keepalive {
                let nonce = self.rng.next_u64();
                let node = n.node;
                let n = &mut self.neighbours[idx];
                n.last_sent_ping = now;
                n.ping = Some((nonce, now));
                self.send(node, Message::Ping { nonce });
            }
            idx += 1;
        }
        self.replace_useless(now);
        self.connecting.retain(|_, at| now.saturating_sub(*at) < 5 * SECOND);
        if self.neighbours.len() + self.connecting.len() < self.cfg.target_neighbours
            && self.last_want_peers.is_none_or(|t| now.saturating_sub(t) >= 2 * SECOND)
        {
            self.last_want_peers = Some(now);
            self.events.push_back(Event::WantPeers);
        }
        if self.cfg.role == Role::Viewer {
            self.choose_parents();
        }
        if self.status_dirty {
            self.status_dirty = false;
            let status = self.status();
            let nodes: Vec<NodeId> = self.neighbours.iter().filter(|n| n.hello.is_some()).map(|n| n.node).collect();
            for node in nodes {
                self.send(node, Message::Status(status.clone()));
            }
        }
    }

    /// With all the neighbours we want, makes room (one every 5 s) by dropping the
    /// viewer that has been of no use either way for longest, so the neighbourhood
    /// keeps improving. Seeds and tree partners are kept.
    fn replace_useless(&mut self, now: Micros) {
        if self.cfg.role != Role::Viewer
            || self.neighbours.len() < self.cfg.target_neighbours
            || now.saturating_sub(self.last_replace) < 5 * SECOND
        {
            return;
        }
        let worst = self
            .neighbours
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.hello.is_some()
                    && !n.is_seed()
                    && n.children == 0
                    && n.parents == 0
                    && now.saturating_sub(n.connected_at) >= self.cfg.useless_after
                    && now.saturating_sub(n.last_useful) >= self.cfg.useless_after
            })
            .min_by_key(|(_, n)| n.last_useful)
            .map(|(i, _)| i);
        if let Some(idx) = worst {
            self.last_replace = now;
            self.stats.neighbours_dropped += 1;
            self.close(idx, Some(GoodbyeReason::Replaced));
        }
    }

    /// Per substream without a working parent, subscribe to the best candidate.
    fn choose_parents(&mut self) {
        let n_sub = self.cfg.n_substreams as usize;
        // Drop parents that lost their path.
        for s in 0..n_sub {
            if let Some(p) = self.parent[s] {
                let ok = self.neighbour_idx(p).is_some_and(|i| self.neighbours[i].depth(s) < MAX_DEPTH);
                if !ok {
                    self.parent[s] = None;
                    if let Some(i) = self.neighbour_idx(p) {
                        self.neighbours[i].parents &= !(1 << s);
                        let mask = self.neighbours[i].parents | self.neighbours[i].asked;
                        self.send(p, Message::Subscribe { substreams: mask });
                    }
                }
            }
        }
        let mut asks: BTreeMap<NodeId, u64> = BTreeMap::new();
        for s in 0..n_sub {
            if self.parent[s].is_some() {
                continue;
            }
            let bit = 1u64 << s;
            let best = self
                .neighbours
                .iter()
                .filter(|n| {
                    n.hello.is_some()
                        && n.children & bit == 0
                        && n.asked & bit == 0
                        && n.depth(s) < MAX_DEPTH
                        && n.status.as_ref().is_some_and(|st| st.free_slots > 0)
                        && n.failures < 3
                })
                .min_by_key(|n| {
                    let seed = if n.is_seed() { self.cfg.seed_parent_penalty } else { 0 };
                    u64::from(n.depth(s)) * 100 * MS + n.rtt.unwrap_or(200 * MS) + seed + self.hop_time(n)
                })
                .map(|n| n.node);
            if let Some(node) = best {
                self.parent[s] = Some(node);
                *asks.entry(node).or_default() |= bit;
            }
        }
        for (node, bits) in asks {
            if let Some(i) = self.neighbour_idx(node) {
                let n = &mut self.neighbours[i];
                n.asked |= bits;
                let mask = n.parents | n.asked;
                self.send(node, Message::Subscribe { substreams: mask });
            }
        }
        self.recompute_depth();
    }

    fn recompute_depth(&mut self) {
        if self.cfg.role == Role::Seed {
            return;
        }
        for s in 0..self.parent.len() {
            let d = self.parent[s]
                .and_then(|p| self.neighbour_idx(p))
                .filter(|&i| self.neighbours[i].parents & (1 << s) != 0)
                .map(|i| self.neighbours[i].depth(s))
                .filter(|&d| d < MAX_DEPTH)
                .map_or(Status::NO_PATH, |d| d + 1);
            if self.depth[s] != d {
                self.depth[s] = d;
                self.status_dirty = true;
            }
        }
    }

    fn status(&self) -> Status {
        let used: u32 = self.neighbours.iter().map(|n| n.children.count_ones()).sum();
        let free = self.cfg.child_slots().saturating_sub(used);
        Status {
            free_slots: u16::try_from(free).unwrap_or(u16::MAX),
            segment_start: self.latest_segment_start,
            depth: self.depth.clone(),
        }
    }

    fn have_map(&self) -> Option<Message> {
        let (&first, _) = self.window.first_key_value()?;
        let base = first - first % 64;
        let mut bits = vec![0u64; MAX_HAVE_WORDS];
        for &seq in self.window.keys() {
            let off = seq - base;
            if let Some(w) = bits.get_mut((off / 64) as usize) {
                *w |= 1 << (off % 64);
            }
        }
        while bits.last() == Some(&0) {
            bits.pop();
        }
        Some(Message::HaveMap { base, bits })
    }

    // ---- plumbing ----

    fn neighbour_idx(&self, node: NodeId) -> Option<usize> {
        self.neighbours.iter().position(|n| n.node == node)
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.control.push_back(Transmit { to, msg });
    }

    fn misbehaved(&mut self, idx: usize, reason: Reject, goodbye: GoodbyeReason) {
        let node = self.neighbours[idx].node;
        if matches!(reason, Reject::Protocol(_) | Reject::BadVersion(_)) {
            self.stats.protocol_errors += 1;
        }
        self.events.push_back(Event::Rejected { from: node, reason });
        self.close(idx, Some(goodbye));
    }

    /// Forgets the neighbour; with a reason, says goodbye first.
    fn close(&mut self, idx: usize, goodbye: Option<GoodbyeReason>) {
        let node = self.neighbours[idx].node;
        self.remove_neighbour(idx);
        match goodbye {
            Some(reason) => self.goodbye_unlisted(node, reason),
            None => self.events.push_back(Event::Disconnect(node, GoodbyeReason::Leaving)),
        }
    }

    fn goodbye_unlisted(&mut self, node: NodeId, reason: GoodbyeReason) {
        // Goodbye jumps the queue: nothing else for this node is worth sending.
        self.control.retain(|t| t.to != node);
        self.control.push_front(Transmit { to: node, msg: Message::Goodbye { reason } });
    }

    fn remove_neighbour(&mut self, idx: usize) {
        let n = self.neighbours.swap_remove(idx);
        if n.children != 0 {
            self.status_dirty = true;
        }
        for p in &mut self.parent {
            if *p == Some(n.node) {
                *p = None;
            }
        }
        for w in self.wants.values_mut() {
            if w.asked.is_some_and(|(a, _)| a == n.node) {
                w.asked = None;
            }
        }
        self.data.retain(|(to, _, _, _)| *to != n.node);
        self.data_bytes = self.data.iter().map(|d| u64::from(d.3)).sum();
        self.control.retain(|t| t.to != n.node || matches!(t.msg, Message::Goodbye { .. }));
        self.recompute_depth();
    }
}
