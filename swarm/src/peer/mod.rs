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
//! Forwarding (docs/design.md has the design and the figures behind it):
//! - **Clubs and push trees.** The stream is split into `n_substreams` substreams
//!   (`seq % n`). Each viewer belongs to one club ([`club_of`] its peer id) and forwards
//!   only that substream, with all its push upload: one tree per substream, inner nodes
//!   from one club, everyone else a leaf ([`tree`]).
//! - **Parents** are chosen per substream by predicted delivery time (the parent's own
//!   latency, its fan-out queue, the RTT), loop-free by distance vector, and replaced when
//!   they stall or a much better one appears. A high-upload subscriber may displace a
//!   low-upload child of a full parent, so high-upload peers rise to the root.
//! - **Pull repair** ([`repair`]) of gaps, inferred from sequence numbers (no per-piece
//!   announcements), once the parent is late, from neighbours likely to hold the piece;
//!   seeds only near the deadline.

mod config;
mod neighbour;
mod playout;
mod repair;
mod seqmap;
mod tree;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub use config::{
    ConfigError, PUSH_SHARE, PeerConfig, SEED_CHILD_SLOTS, SEED_MAX_NEIGHBOURS, SEED_SHARE_BUDGET, club_of,
};
use neighbour::Neighbour;
use seqmap::SeqMap;

use crate::piece::{ChannelVerifier, MAX_AHEAD_OF_CLOCK, Piece, PieceError, PieceFlags, Verify, clock_seq};
use crate::rng::Rng;
use crate::wire::{GoodbyeReason, Hello, MAX_HAVE_WORDS, Message, PROTOCOL_VERSION, PeerId, Role, Status, WireError};

/// Time in µs. Wall clock (since the Unix epoch) in real shells, virtual in the
/// simulator; piece timestamps are on the same scale.
pub type Micros = u64;

const MS: Micros = 1_000;
const SECOND: Micros = 1_000_000;
/// Depth at which a path is treated as broken (counts-to-infinity stop here).
const MAX_DEPTH: u8 = 32;
/// Seeds remembered from the tracker's lists (there are a handful per channel).
const MAX_LISTED_SEEDS: usize = 64;

/// The shell's name for the remote end of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// A node the shell can connect to, as the tracker described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    pub peer_id: PeerId,
    /// A registered seed node.
    pub seed: bool,
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
    /// More messages than the shell allows, or a run of pieces we already held.
    Flooding,
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
    /// The channel's numbering jumped from `from` (our newest) to `to`, a verified
    /// piece far past it (an ingest restart): the old run's window was dropped.
    Jumped { from: Option<u64>, to: u64 },
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
    /// Requests answered `Busy` because the asker, giving us nothing, had taken its
    /// free share of repairs.
    pub repairs_refused: u64,
    pub protocol_errors: u64,
    pub pushes_sent: u64,
    pub responses_sent: u64,
    pub requests_sent: u64,
    pub requests_timed_out: u64,
    /// Requests given up near the deadline for another source (`hedge_margin`).
    pub requests_hedged: u64,
    pub dont_have_sent: u64,
    pub busy_sent: u64,
    pub played: u64,
    pub skipped: u64,
    pub neighbours_dropped: u64,
    pub parents_switched: u64,
    pub parents_stalled: u64,
    pub children_displaced: u64,
    /// The channel's sequence numbers jumped forward (an ingest restart): the window
    /// was restarted at a verified piece far past the newest.
    pub jumps: u64,
    /// Single-piece requests sent to check a claim far past the newest.
    pub jump_probes: u64,
    /// Neighbours dropped for flooding.
    pub floods: u64,
    /// Children a seed dropped from their slot because nobody it does not feed said
    /// they were fed through them, to make room for a subscriber.
    pub children_unvouched: u64,
}

#[derive(Debug, Clone, Copy)]
struct Want {
    /// When we learned the piece exists and we lack it.
    heard_at: Micros,
    /// Neighbour asked and when the request expires.
    asked: Option<(NodeId, Micros)>,
    /// When it was asked.
    asked_at: Micros,
    /// A neighbour whose request was given up as too slow for the deadline (see
    /// `hedge_requests`): not asked for it again.
    gave_up_on: Option<NodeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    Push,
    Response,
}

/// Mean and mean deviation of a delay, µs, as exponentially weighted averages.
#[derive(Debug, Clone, Copy)]
struct Ewma {
    mean: f64,
    dev: f64,
}

impl Ewma {
    fn update(slot: &mut Option<Ewma>, x: Micros) {
        let x = x as f64;
        *slot = Some(match *slot {
            None => Ewma { mean: x, dev: x / 4.0 },
            Some(e) => Ewma { mean: e.mean + (x - e.mean) / 8.0, dev: e.dev + ((x - e.mean).abs() - e.dev) / 4.0 },
        });
    }
}

/// Per-substream state of the push tree.
#[derive(Debug, Clone, Default)]
struct Branch {
    /// The neighbour that pushes this substream to us.
    parent: Option<NodeId>,
    /// When it accepted.
    parent_since: Micros,
    /// Last piece it pushed.
    parent_last_piece: Micros,
    /// Seq of that piece (or our newest when it became our parent).
    parent_last_seq: Option<u64>,
    /// It has pushed a timely piece since it became our parent: only then do we name
    /// its branch's root in `Status` (a vouch for what delivers, not what says it will).
    parent_pushed: bool,
    /// The seed's child at the top of this branch, as we advertise it...
    root: Option<PeerId>,
    /// ...and the last one we did (what those we fed may still say).
    last_root: Option<PeerId>,
    /// Our parent's peer id once it has pushed in time, as we advertise it.
    named_parent: Option<PeerId>,
    /// Our distance from a seed.
    depth: u8,
    /// Loop guard, after Babel's feasibility condition: once our depth got worse (or
    /// we lost our feed), until `guard_until` — time for the news to reach everyone
    /// we fed — a new parent must be closer to the seed than `guard_depth` (the best
    /// depth we had), or on a branch whose root is not `guard_root` (ours then):
    /// anyone else may be fed through us and not know it yet.
    guard_depth: u8,
    guard_root: Option<PeerId>,
    guard_until: Micros,
    /// Delay from ingest to our holding a piece of this substream.
    latency: Option<Ewma>,
}

#[derive(Debug, Default)]
struct Playout {
    /// Next seq to play, once started.
    cursor: Option<u64>,
    /// Delay from piece timestamp to play time, fixed at start.
    offset: Micros,
    /// Segment start we intend to begin at.
    target: Option<u64>,
    /// `target` came from a seed the tracker listed: other neighbours' claims of a
    /// start point no longer move it (a liar claims the freshest there could be).
    target_from_seed: bool,
    /// Unplayed pieces of the run before a jump in numbering, played (at their
    /// deadlines) before the new run.
    tail: VecDeque<Piece>,
}

/// The peer state machine. See the module documentation.
#[derive(Debug)]
pub struct Peer {
    cfg: PeerConfig,
    verifier: Arc<dyn Verify>,
    rng: Rng,
    /// Our club: the substream we forward (a seed forwards all).
    club: usize,
    /// Pieces by seq, `window_pieces` behind the newest at most.
    window: SeqMap<Piece>,
    newest: Option<u64>,
    last_accept: Micros,
    latest_segment_start: Option<u64>,
    neighbours: Vec<Neighbour>,
    /// `neighbours[i].node` at `i`: looking a neighbour up reads this short array, not
    /// one cache line per neighbour record (measured: part of every event's cost at
    /// 100,000 peers in the simulator).
    neighbour_nodes: Vec<NodeId>,
    connecting: BTreeMap<NodeId, (Micros, usize)>,
    /// Nodes the tracker listed as seeds (at most [`MAX_LISTED_SEEDS`]): the only ones
    /// whose claim to be a seed counts. Those we can dial (from the tracker's list, not
    /// an inbound connection from a seed's address) carry their peer id and when we
    /// last dialled them (0: never): a viewer that loses its seed dials another.
    listed_seeds: BTreeMap<NodeId, Option<(PeerId, Micros)>>,
    /// Last time a neighbour claimed a piece past our newest: the stream flows even
    /// when nothing reaches us (every parent may be withholding).
    last_claim_ahead: Micros,
    banned_nodes: BTreeSet<NodeId>,
    banned_peers: BTreeSet<PeerId>,
    wants: SeqMap<Want>,
    branches: Vec<Branch>,
    /// Our free slots went to or from zero, or a substream gained or lost its feed:
    /// every neighbour should hear.
    slots_dirty: bool,
    /// Substreams whose depth changed: our children in them should hear.
    depth_dirty: u64,
    /// We hold our first segment start: neighbours that hold none (they cannot have
    /// started playing) should hear where to start, not wait for the next round.
    start_dirty: bool,
    last_status: Micros,
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
    last_forgive: Micros,
    last_parent_review: Micros,
    /// (seq, timestamp) of the newest piece and the mean spacing of timestamps, µs.
    ts_anchor: Option<(u64, Micros, Micros)>,
    /// When the next piece of an orphaned substream is due at a neighbour (see
    /// `expect_orphaned`).
    next_expected: Option<Micros>,
    /// When we last asked for a piece a neighbour claimed far past our newest.
    last_jump_probe: Option<Micros>,
    /// (Seeds) push children the audience calls for (see `handle_audience`).
    audience_slots: u32,
    /// (Seeds) what all neighbours together may take by request, in streams, once the
    /// audience is known (see `handle_audience` and `free_repair_share`).
    audience_repair_streams: Option<f64>,
    stats: PeerStats,
    left: bool,
    /// Time of the latest input, for state kept by handlers without a time of their own.
    clock: Micros,
}

impl Peer {
    /// A peer that verifies pieces with the channel's key.
    pub fn new(cfg: PeerConfig, now: Micros) -> Result<Self, ConfigError> {
        let verifier = ChannelVerifier::new(cfg.channel).map_err(|_| ConfigError::Channel)?;
        Self::with_verifier(cfg, now, Arc::new(verifier))
    }

    /// A peer that verifies pieces with `verifier`, which must be for `cfg.channel`.
    pub fn with_verifier(cfg: PeerConfig, now: Micros, verifier: Arc<dyn Verify>) -> Result<Self, ConfigError> {
        cfg.validate()?;
        if verifier.channel() != cfg.channel {
            return Err(ConfigError::Channel);
        }
        let depth = if cfg.role == Role::Seed { 0 } else { Status::NO_PATH };
        let branch = Branch { depth, ..Branch::default() };
        Ok(Peer {
            rng: Rng::derive(cfg.peer_id.0, 0x5eed),
            club: club_of(cfg.peer_id, cfg.n_substreams),
            verifier,
            window: SeqMap::new(2 * cfg.window_pieces),
            newest: None,
            last_accept: 0,
            latest_segment_start: None,
            neighbours: Vec::new(),
            neighbour_nodes: Vec::new(),
            connecting: BTreeMap::new(),
            listed_seeds: BTreeMap::new(),
            last_claim_ahead: 0,
            banned_nodes: BTreeSet::new(),
            banned_peers: BTreeSet::new(),
            wants: SeqMap::new(4 * cfg.window_pieces),
            branches: vec![branch; cfg.n_substreams as usize],
            slots_dirty: false,
            start_dirty: false,
            depth_dirty: 0,
            last_status: now,
            control: VecDeque::new(),
            data: VecDeque::new(),
            data_bytes: 0,
            typical_piece_bytes: u64::from(cfg.stream_kbps) * 1000 / 8 / 20,
            events: VecDeque::from([Event::WantPeers]),
            playout: Playout::default(),
            next_tick: now,
            last_request_pass: None,
            last_want_peers: Some(now),
            last_replace: now,
            last_forgive: now,
            last_parent_review: now,
            ts_anchor: None,
            next_expected: None,
            last_jump_probe: None,
            audience_slots: 0,
            audience_repair_streams: None,
            stats: PeerStats::default(),
            left: false,
            clock: now,
            cfg,
        })
    }

    pub fn config(&self) -> &PeerConfig {
        &self.cfg
    }

    #[inline]
    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    /// Push subscriptions accepted in all, and held by neighbours now.
    pub fn push_slots(&self) -> (u32, u32) {
        (self.child_slots(), self.children_total())
    }

    pub fn n_neighbours(&self) -> usize {
        self.neighbours.len()
    }

    /// Newest verified piece held.
    #[inline]
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    pub fn piece(&self, seq: u64) -> Option<&Piece> {
        self.window.get(seq)
    }

    /// Current distance from a seed, per substream (`255`: no feed).
    pub fn depths(&self) -> Vec<u8> {
        self.branches.iter().map(|b| b.depth).collect()
    }

    /// A connection to `node` is up (`outbound`: we opened it).
    pub fn handle_connected(&mut self, now: Micros, node: NodeId, outbound: bool) {
        self.clock = self.clock.max(now);
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
        let mut n = Neighbour::new(node, now);
        n.listed_seed = self.listed_seeds.contains_key(&node);
        let nonce = self.rng.next_u64();
        n.ping = Some((nonce, now));
        self.neighbour_nodes.push(n.node);
        self.neighbours.push(n);
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
        self.send(node, Message::Ping { nonce });
    }

    /// The shell knows `node` (an inbound connection) comes from the address of a seed
    /// the tracker listed: its claim to be a seed counts, as for one we dialled.
    pub fn handle_listed_seed(&mut self, node: NodeId) {
        if self.listed_seeds.len() < MAX_LISTED_SEEDS {
            self.listed_seeds.entry(node).or_insert(None);
        }
        if let Some(i) = self.neighbour_idx(node) {
            self.neighbours[i].listed_seed = true;
        }
    }

    /// A connection we asked for could not be opened.
    pub fn handle_connect_failed(&mut self, now: Micros, node: NodeId) {
        self.clock = self.clock.max(now);
        self.connecting.remove(&node);
    }

    /// The connection to `node` is gone (closed by either side or by the network).
    pub fn handle_disconnected(&mut self, now: Micros, node: NodeId) {
        self.clock = self.clock.max(now);
        self.connecting.remove(&node);
        if let Some(idx) = self.neighbour_idx(node) {
            self.remove_neighbour(idx);
        }
    }

    /// (Seeds) the audience the tracker reports: `viewers` in the channel, served by
    /// `seeds` (this one among them). A seed takes as many push children as keep the
    /// seeds' pushes within `seed_share_budget` of the audience's bytes, never fewer
    /// than `max_child_slots` nor more than its neighbours. When the audience shrinks
    /// by more than an eighth, the children past the new count lose their slots, the
    /// least upload first (small swings don't make children change parents).
    pub fn handle_audience(&mut self, now: Micros, viewers: u32, seeds: u32) {
        self.clock = self.clock.max(now);
        if self.cfg.role != Role::Seed || self.left {
            return;
        }
        let n_sub = f64::from(self.cfg.n_substreams);
        let wanted = self.cfg.seed_share_budget * f64::from(viewers) * n_sub / f64::from(seeds.max(1));
        // Requests come on top of pushes, within as much again (and never less than
        // the streams its configured slots push: a small audience needs the seeds for
        // most of its repairs).
        let floor = f64::from(self.cfg.child_slots());
        self.audience_repair_streams = Some(wanted.max(floor) / n_sub);
        let wanted = (wanted.min(self.cfg.max_neighbours as f64)) as u32;
        let old = self.audience_slots;
        if wanted >= old || u64::from(wanted) * 8 < u64::from(old) * 7 {
            let full_before = self.status_free(now) == 0;
            self.audience_slots = wanted;
            self.shed_children();
            if full_before != (self.status_free(now) == 0) {
                self.slots_dirty = true;
            }
        }
    }

    /// Nodes the shell can connect to (from the tracker). The peer picks among them,
    /// first those of the clubs it has fewest neighbours in.
    pub fn handle_candidates(&mut self, now: Micros, candidates: &[Candidate]) {
        self.clock = self.clock.max(now);
        if self.left {
            return;
        }
        for c in candidates.iter().filter(|c| c.seed) {
            if self.listed_seeds.len() < MAX_LISTED_SEEDS || self.listed_seeds.contains_key(&c.node) {
                let dialled = self.listed_seeds.get(&c.node).copied().flatten().map_or(0, |(_, at)| at);
                self.listed_seeds.insert(c.node, Some((c.peer_id, dialled)));
            }
        }
        let mut fresh: Vec<Candidate> = candidates
            .iter()
            .copied()
            .filter(|c| {
                c.peer_id != self.cfg.peer_id
                    && !self.banned_nodes.contains(&c.node)
                    && !self.banned_peers.contains(&c.peer_id)
                    && !self.connecting.contains_key(&c.node)
                    && self.neighbour_idx(c.node).is_none()
            })
            .collect();
        self.rng.shuffle(&mut fresh);
        let mut per_club = self.club_counts();
        let needy = self.needy_clubs();
        let n = self.cfg.n_substreams;
        // A viewer keeps one seed among its neighbours: the source of last resort for a
        // piece about to miss its deadline, and of the first piece when joining.
        let seeds_known = self.neighbours.iter().filter(|n| n.is_seed()).count()
            + self.connecting.keys().filter(|node| candidates.iter().any(|c| c.seed && c.node == **node)).count();
        let mut want_seed = self.cfg.role == Role::Viewer && seeds_known == 0;
        fresh.sort_by_key(|c| {
            let club = club_of(c.peer_id, n);
            (!(c.seed && want_seed), !needy.contains(&club), per_club[club])
        });
        for c in fresh {
            if c.seed {
                if !want_seed {
                    continue;
                }
                want_seed = false;
                if let Some(Some(d)) = self.listed_seeds.get_mut(&c.node) {
                    d.1 = now;
                }
                self.connecting.insert(c.node, (now, club_of(c.peer_id, n)));
                self.events.push_back(Event::Connect(c.node));
                continue;
            }
            let club = club_of(c.peer_id, n);
            let total = self.neighbours.len() + self.connecting.len();
            let connecting_to_club = self.connecting.values().filter(|(_, cl)| *cl == club).count();
            let short = per_club[club] < self.cfg.min_per_club || (needy.contains(&club) && connecting_to_club < 2);
            if total >= self.cfg.max_neighbours || (total >= self.cfg.target_neighbours && !short) {
                break;
            }
            per_club[club] += 1;
            self.connecting.insert(c.node, (now, club));
            self.events.push_back(Event::Connect(c.node));
        }
    }

    /// A piece from ingest (seeds only). Verified like any other.
    pub fn handle_origin_piece(&mut self, now: Micros, piece: Piece) -> Result<(), PieceError> {
        self.clock = self.clock.max(now);
        if self.window.contains(piece.seq()) {
            return Ok(());
        }
        self.verifier.verify(&piece)?;
        self.accept(now, piece, None);
        Ok(())
    }

    pub fn handle_message(&mut self, now: Micros, from: NodeId, msg: Message) {
        self.clock = self.clock.max(now);
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
            Message::Status(st) => self.on_status(now, idx, st),
            Message::Have { seq } => {
                if !self.on_have(now, idx, seq) {
                    self.events.push_back(Event::Rejected { from, reason: Reject::OutOfWindow { seq } });
                }
            }
            Message::HaveMap { base, bits } => {
                // One map claims up to 1,024 pieces, in ascending order: past the first
                // claim out of the window all are, so that one is taken as the map's
                // (counted once, reported once) and the rest cost nothing — a map far
                // ahead costs its receiver what one `Have` does, not 1,024 of them.
                'map: for (w, word) in bits.iter().enumerate() {
                    for b in 0..64 {
                        if word & (1 << b) != 0 {
                            let Some(seq) = base.checked_add(64 * w as u64 + b) else { break 'map };
                            if !self.on_have(now, idx, seq) {
                                self.events.push_back(Event::Rejected { from, reason: Reject::OutOfWindow { seq } });
                                break 'map;
                            }
                            if self.neighbour_idx(from).is_none() {
                                return;
                            }
                        }
                    }
                }
            }
            Message::Subscribe { substreams } => self.on_subscribe(now, idx, substreams),
            Message::SubscribeReply { accepted } => self.on_subscribe_reply(now, idx, accepted),
            Message::Request { seqs } => self.on_request(now, idx, &seqs),
            Message::Piece(piece) => self.on_piece(now, idx, piece),
            Message::DontHave { seq } => self.on_dont_have(idx, seq),
            Message::Busy { seq } => self.on_busy(now, idx, seq),
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
    pub fn handle_malformed(&mut self, now: Micros, from: NodeId, error: WireError) {
        self.clock = self.clock.max(now);
        let Some(idx) = self.neighbour_idx(from) else { return };
        self.stats.malformed += 1;
        self.misbehaved(idx, Reject::Malformed(error), GoodbyeReason::Malformed);
    }

    /// The shell tells which network (/24 for IPv4, /48 for IPv6, as a key) `node`'s
    /// connection comes from. A seed counts names (vouches) for a child only from
    /// networks other than the child's, and gives one network one child slot per
    /// substream: identities are free, networks are not.
    pub fn handle_network(&mut self, node: NodeId, network: u128) {
        if let Some(i) = self.neighbour_idx(node) {
            self.neighbours[i].network = Some(network);
        }
    }

    /// The shell saw `from` send more messages than any honest peer would: it is
    /// dropped with `Goodbye(Flooding)` and counted.
    pub fn handle_flood(&mut self, now: Micros, from: NodeId) {
        self.clock = self.clock.max(now);
        let Some(idx) = self.neighbour_idx(from) else { return };
        self.stats.floods += 1;
        self.misbehaved(idx, Reject::Flooding, GoodbyeReason::Flooding);
    }

    /// Housekeeping; call at [`Peer::poll_timeout`] (earlier or later is harmless).
    pub fn handle_timeout(&mut self, now: Micros) {
        self.clock = self.clock.max(now);
        if self.left {
            return;
        }
        self.expire_requests(now);
        self.hedge_requests(now);
        self.expect_orphaned(now);
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
            let Some(piece) = self.window.get(seq) else {
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

    /// Whether [`Peer::poll_transmit`] may have something: a shell whose uplink is
    /// busy uses it to decide whether to wake the peer when the uplink frees.
    #[inline]
    pub fn wants_to_transmit(&self) -> bool {
        !self.control.is_empty() || !self.data.is_empty()
    }

    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Peer::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Micros> {
        if self.left {
            return None;
        }
        // Playout advances on every tick and every accepted piece, so `Play` events come
        // at most one tick after their deadline: players buffer more than that.
        let mut at = self.next_tick;
        for t in [self.next_want_time(), self.next_expected].into_iter().flatten() {
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
        self.neighbours[idx].club = Some(club_of(h.peer_id, self.cfg.n_substreams));
        self.neighbours[idx].hello = Some(h);
        let status = self.status(now);
        self.send(node, Message::Status(status));
        if let Some(map) = self.have_map() {
            self.send(node, map);
        }
    }

    fn on_status(&mut self, now: Micros, idx: usize, st: Status) {
        let n = self.cfg.n_substreams as usize;
        if st.depth.len() != n || st.latency_ms.len() != n || st.root.len() != n || st.parent.len() != n {
            return self.misbehaved(
                idx,
                Reject::Protocol("status with wrong substream count"),
                GoodbyeReason::Malformed,
            );
        }
        let segment_start = st.segment_start;
        self.neighbours[idx].status = Some(st);
        if let Some(s) = segment_start {
            self.consider_start(now, idx, s);
        }
    }

    /// A joiner's start point: the newest segment start a listed seed names, else the
    /// newest one a neighbour names in its `Status` (`idx`) that someone else claims
    /// to hold too (or we do). An uncorroborated claim would let one liar name a start
    /// ahead of the stream and hold every joiner it meets at a point no piece has
    /// reached (wants below the start point are not asked for).
    fn consider_start(&mut self, now: Micros, idx: usize, s: u64) {
        let from_seed = self.neighbours[idx].is_seed();
        let node = self.neighbours[idx].node;
        let corroborated = from_seed
            || self.window.contains(s)
            || self.neighbours.iter().any(|n| n.node != node && n.have.contains(s));
        if self.cfg.role == Role::Viewer
            && self.playout.cursor.is_none()
            && corroborated
            && self.acceptable_seq(s)
            && (from_seed || !self.playout.target_from_seed)
        {
            self.playout.target = match self.playout.target {
                Some(t) if from_seed == self.playout.target_from_seed => Some(t.max(s)),
                _ => Some(s),
            };
            self.playout.target_from_seed |= from_seed;
            // Everything from the start point to what we hold exists.
            if let Some(newest) = self.newest {
                for seq in s..=newest.min(s.saturating_add(self.cfg.window_pieces)) {
                    self.add_want(now, seq);
                }
            }
        }
    }

    /// A neighbour's claim to hold `seq`; false if it is out of the window (counted;
    /// the caller reports it).
    fn on_have(&mut self, now: Micros, idx: usize, seq: u64) -> bool {
        if !self.acceptable_seq(seq) {
            // Either a lie or the channel's numbering jumped (an ingest restart numbers
            // from its clock). The claim adds no want; at most one piece every
            // `request_timeout` is asked for to find out: verified, it moves us to the
            // new numbering (see `on_piece`); forged, its sender is banned.
            let node = self.neighbours[idx].node;
            self.stats.out_of_window += 1;
            // Remembered as this neighbour's claim only (it cannot wipe others').
            self.neighbours[idx].have.insert(seq);
            if self.last_jump_probe.is_none_or(|t| now >= t + self.cfg.request_timeout) {
                self.last_jump_probe = Some(now);
                self.stats.jump_probes += 1;
                self.send(node, Message::Request { seqs: vec![seq] });
            }
            return false;
        }
        self.neighbours[idx].have.insert(seq);
        if self.newest.is_none_or(|newest| seq > newest) {
            self.last_claim_ahead = now;
        }
        // A joiner: this claim may corroborate a start point another neighbour named.
        if self.cfg.role == Role::Viewer && self.playout.cursor.is_none() && self.playout.target.is_none_or(|t| t < seq)
        {
            let node = self.neighbours[idx].node;
            let namer = self
                .neighbours
                .iter()
                .position(|n| n.node != node && n.status.as_ref().is_some_and(|st| st.segment_start == Some(seq)));
            if let Some(namer) = namer {
                self.consider_start(now, namer, seq);
            }
        }
        self.add_want(now, seq);
        true
    }

    fn on_request(&mut self, now: Micros, idx: usize, seqs: &[u64]) {
        let node = self.neighbours[idx].node;
        // Tit for tat on repair service: a neighbour that has given us nothing and is no
        // tree partner gets what is left once contributors are served.
        let n = &self.neighbours[idx];
        let gives = n.pieces_from > 0 || n.parents != 0 || n.is_seed();
        let contributor = gives || n.children != 0;
        let allowance = if contributor { self.cfg.max_response_backlog } else { self.cfg.max_response_backlog / 3 };
        // One that gives us nothing (at a seed: anyone) takes by request no more than
        // a tenth of the stream, after a burst: a leech asking everyone for every piece
        // gets `Busy`, and the seeds' upload stays the broadcaster's small cost.
        let budgeted = !gives || self.cfg.role == Role::Seed;
        let (share, burst) = (self.free_repair_share(), self.cfg.free_repair_burst);
        for &seq in seqs {
            let busy = self.response_wait() > allowance
                || self.neighbours[idx].responses_queued >= self.cfg.max_queued_responses;
            let piece = self.window.get(seq);
            let over_budget = budgeted
                && piece.is_some_and(|p| {
                    let cost = p.encoded_len() as u64 * 8 * 1_000 / u64::from(self.cfg.stream_kbps.max(1));
                    !busy && !self.neighbours[idx].take_free_repair(now, cost, share, burst)
                });
            if over_budget {
                self.stats.repairs_refused += 1;
            }
            match piece {
                Some(piece) if !busy && !over_budget => {
                    self.neighbours[idx].responses_queued += 1;
                    let bytes = piece.encoded_len() as u32;
                    self.data_bytes += u64::from(bytes);
                    self.data.push_back((node, seq, Queued::Response, bytes));
                }
                Some(_) => {
                    self.stats.busy_sent += 1;
                    self.send(node, Message::Busy { seq });
                }
                None => {
                    self.stats.dont_have_sent += 1;
                    self.send(node, Message::DontHave { seq });
                }
            }
        }
    }

    fn on_piece(&mut self, now: Micros, idx: usize, piece: Piece) {
        let node = self.neighbours[idx].node;
        let seq = piece.seq();
        let n = &mut self.neighbours[idx];
        n.have.insert(seq);
        if let Some(w) = self.wants.get(seq)
            && w.asked.is_some_and(|(a, _)| a == node)
        {
            n.requests_out = n.requests_out.saturating_sub(1);
            n.replied(true);
        }
        if self.window.contains(seq) {
            self.stats.duplicate_pieces += 1;
            self.stats.duplicate_bytes += piece.encoded_len() as u64;
            // A parent's pushes we got elsewhere first are the tree's overlap, not a
            // flood (a parent that only repeats is dropped as stalled instead).
            let s = self.substream(seq);
            if self.branches[s].parent == Some(node) {
                // Too late to be of use: it still says how late this parent delivers.
                Ewma::update(&mut self.neighbours[idx].push_latency, now.saturating_sub(piece.timestamp_us()));
                return;
            }
            let n = &self.neighbours[idx];
            // Pushes from one that takes us for its child in a substream we don't take
            // from it (a subscription that crossed an unsubscribe): say again what we
            // do take, so an honest neighbour stops.
            if n.useless_streak.is_multiple_of(16) && (n.parents | n.asked) & (1 << s) == 0 {
                let mask = n.parents | n.asked;
                self.send(node, Message::Subscribe { substreams: mask });
            }
            return self.useless_piece(idx);
        }
        let ts = piece.timestamp_us();
        let too_old = ts.saturating_add(self.cfg.max_piece_age) < now;
        let future = ts > now.saturating_add(self.cfg.max_clock_skew);
        if too_old || future {
            self.stats.out_of_window += 1;
            return self.misbehaved(idx, Reject::OutOfWindow { seq }, GoodbyeReason::OutOfWindow);
        }
        if self.newest.is_some_and(|newest| seq.saturating_add(self.cfg.window_pieces) <= newest) {
            // Fell out of the window while in flight: late, not malicious — unless it
            // keeps happening, which costs us a decode each (counted as a duplicate is).
            self.stats.stale_pieces += 1;
            return self.useless_piece(idx);
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
        let n = &mut self.neighbours[idx];
        n.failures = 0;
        n.refusals = 0;
        n.useless_streak = 0;
        n.last_useful = now;
        n.pieces_from += 1;
        let s = self.substream(seq);
        if self.branches[s].parent == Some(node) {
            let late = now.saturating_sub(piece.timestamp_us());
            // Only a timely push keeps a parent: one that delivers everything too late
            // to be forwarded or played on time stalls like one that delivers nothing.
            if late <= self.cfg.parent_stall {
                let b = &mut self.branches[s];
                b.parent_last_piece = now;
                b.parent_last_seq = Some(seq);
                if !b.parent_pushed {
                    b.parent_pushed = true;
                    self.recompute_depth();
                }
            }
            Ewma::update(&mut self.neighbours[idx].push_latency, late);
        }
        self.accept(now, piece, Some(node));
    }

    /// A piece from neighbour `idx` that we could not use (held already, or too late):
    /// a few are honest overlap; a streak of more than `max_useless_pieces` with
    /// nothing useful between is a flood, and the neighbour is dropped.
    fn useless_piece(&mut self, idx: usize) {
        let n = &mut self.neighbours[idx];
        n.useless_streak += 1;
        if n.useless_streak > self.cfg.max_useless_pieces {
            self.stats.floods += 1;
            self.misbehaved(idx, Reject::Flooding, GoodbyeReason::Flooding);
        }
    }

    // ---- core ----

    /// Takes a verified piece into the window.
    fn accept(&mut self, now: Micros, piece: Piece, from: Option<NodeId>) {
        let seq = piece.seq();
        if !self.acceptable_seq(seq) {
            self.follow_jump(now, seq);
        }
        self.stats.pieces_accepted += 1;
        self.stats.piece_bytes_accepted += piece.encoded_len() as u64;
        self.typical_piece_bytes = piece.encoded_len() as u64;
        self.last_accept = now;
        if let Some(w) = self.wants.remove(seq)
            && let Some((asked, _)) = w.asked
            && Some(asked) != from
            && let Some(i) = self.neighbour_idx(asked)
        {
            let n = &mut self.neighbours[i];
            n.requests_out = n.requests_out.saturating_sub(1);
        }
        if piece.flags().contains(PieceFlags::SEGMENT_START) && self.latest_segment_start.is_none_or(|s| s < seq) {
            // The first one we hold (at the stream's start, or ours): neighbours that
            // hold none hear it at once. Only the first: a neighbour that keeps saying
            // it holds none (an attacker) gets one extra `Status`, not one a segment.
            self.start_dirty |= self.latest_segment_start.is_none();
            self.latest_segment_start = Some(seq);
            if self.cfg.role == Role::Viewer && self.playout.cursor.is_none() {
                self.playout.target = Some(self.playout.target.map_or(seq, |t| t.max(seq)));
            }
        }
        // Pieces between the previous newest (or, for a joiner, its start point) and
        // this one exist and are missing.
        let known = self.newest.or(self.playout.target.and_then(|t| t.checked_sub(1)));
        if let Some(prev) = known
            && seq > prev + 1
        {
            let from_seq = (prev + 1).max(seq.saturating_sub(self.cfg.window_pieces));
            for gap in from_seq..seq {
                self.add_want(now, gap);
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
        let s = self.substream(seq);
        if self.cfg.role == Role::Viewer {
            Ewma::update(&mut self.branches[s].latency, now.saturating_sub(piece.timestamp_us()));
        }
        self.queue_pushes(&piece, from);
        self.update_ts_anchor(&piece);
        self.events.push_back(Event::Accepted { piece: piece.clone(), from });
        self.window.insert(seq, piece);
        if let Some(newest) = self.newest {
            let floor = newest.saturating_sub(self.cfg.window_pieces - 1);
            self.window.remove_below(floor);
            self.retain_wants(|k| k >= floor);
        }
        self.advance_playout(now);
    }

    /// Queues the piece for every child subscribed to its substream, those that
    /// forward further (more children of their own) first.
    fn queue_pushes(&mut self, piece: &Piece, from: Option<NodeId>) {
        let seq = piece.seq();
        let bit = 1u64 << self.substream(seq);
        let mut targets: Vec<(u16, NodeId)> = self
            .neighbours
            .iter()
            .filter(|n| n.children & bit != 0 && Some(n.node) != from && !n.have.contains(seq))
            .map(|n| (n.status.as_ref().map_or(0, |s| s.children), n.node))
            .collect();
        targets.sort_by_key(|&(children, node)| (std::cmp::Reverse(children), node));
        let bytes = piece.encoded_len() as u32;
        for (_, node) in targets {
            if let Some(i) = self.neighbour_idx(node) {
                self.neighbours[i].have.insert(seq);
            }
            self.data_bytes += u64::from(bytes);
            // Pushes go before queued responses: the push tree is the main path.
            let at = self.data.iter().position(|d| d.2 == Queued::Response).unwrap_or(self.data.len());
            self.data.insert(at, (node, seq, Queued::Push, bytes));
        }
    }

    /// A verified piece of this minute far past our newest: the channel's numbering
    /// jumped (ingest restarted; it numbers from its clock). Only the channel's key can
    /// make such a piece, so the old run is over: its window and wants go. A playing
    /// viewer plays out what it holds of the old run, then goes on from the lowest
    /// piece of the new run a neighbour has claimed (the run's first piece, usually),
    /// at the same delay; one not yet playing starts like a joiner.
    fn follow_jump(&mut self, now: Micros, seq: u64) {
        self.stats.jumps += 1;
        self.events.push_back(Event::Jumped { from: self.newest, to: seq });
        let lowest = seq.saturating_sub(self.cfg.window_pieces - 1);
        let claimed: Vec<u64> = (lowest..seq).filter(|&s| self.neighbours.iter().any(|n| n.have.contains(s))).collect();
        if let Some(cursor) = self.playout.cursor {
            let unplayed: Vec<Piece> = self.window.iter_from(cursor).map(|(_, p)| p.clone()).collect();
            self.playout.tail.extend(unplayed);
            self.playout.cursor = Some(claimed.first().copied().unwrap_or(seq));
        }
        self.window.remove_below(seq);
        self.retain_wants(|_| false);
        self.newest = None;
        self.latest_segment_start = None;
        self.playout.target = None;
        self.playout.target_from_seed = false;
        self.last_accept = now;
        // Parents get a fresh stall allowance in the new numbering.
        for b in &mut self.branches {
            b.parent_last_piece = now;
            b.parent_last_seq = None;
        }
        for s in claimed {
            self.add_want(now, s);
        }
    }

    /// A seq is plausible if it isn't far ahead of what we hold verified; before we
    /// hold any, if the channel's clock-bound numbering could have reached it (with
    /// our clock's skew allowance): a joiner's only anchor against claims far ahead,
    /// which would otherwise crowd the real pieces out of its wants.
    fn acceptable_seq(&self, seq: u64) -> bool {
        match self.newest {
            Some(newest) => seq <= newest.saturating_add(self.cfg.max_ahead_pieces),
            None => {
                let latest = clock_seq(self.clock.saturating_add(self.cfg.max_clock_skew));
                seq <= latest.saturating_add(MAX_AHEAD_OF_CLOCK)
            }
        }
    }

    fn substream(&self, seq: u64) -> usize {
        (seq % u64::from(self.cfg.n_substreams)) as usize
    }

    /// Time for the uplink to send the piece data already queued.
    fn backlog(&self) -> Micros {
        self.data_bytes * 8 * 1000 / u64::from(self.cfg.upload_kbps.max(1))
    }

    /// Time for the uplink to send what is queued when pushes to our children go first
    /// (they do): queued data at the rate their pushes leave free.
    fn response_wait(&self) -> Micros {
        let n_sub = self.branches.len().max(1) as u64;
        let upload = u64::from(self.cfg.upload_kbps.max(1));
        let pushed = u64::from(self.children_total()) * u64::from(self.cfg.stream_kbps) / n_sub;
        let spare = upload.saturating_sub(pushed).max(upload / 20);
        self.data_bytes * 8 * 1000 / spare
    }

    /// Time for a neighbour to send us one piece with its declared upload.
    fn hop_time(&self, n: &Neighbour) -> Micros {
        self.typical_piece_bytes * 8 * 1000 / u64::from(n.upload_kbps().max(1))
    }

    /// (Viewers) one that has no seed among its neighbours, nor one being dialled, dials
    /// a seed the tracker listed: the one dialled least recently (never, first), at
    /// random among equals so that a dead seed's audience spreads over the others.
    /// The source of last resort for a piece about to miss its deadline is not left
    /// to the next announce — seconds away, and the tracker may be down as well. A
    /// seed dialled in the last second is not dialled again (one that is full, or
    /// dead, is not dialled every tick).
    fn keep_a_seed(&mut self, now: Micros) {
        if self.cfg.role != Role::Viewer || self.listed_seeds.is_empty() {
            return;
        }
        let has_seed = self.neighbours.iter().any(|n| n.is_seed() || (n.hello.is_none() && n.listed_seed))
            || self.connecting.keys().any(|node| self.listed_seeds.contains_key(node));
        if has_seed {
            return;
        }
        let mut dialable: Vec<(NodeId, PeerId, Micros)> = self
            .listed_seeds
            .iter()
            .filter_map(|(node, d)| d.map(|(id, at)| (*node, id, at)))
            .filter(|(node, id, at)| {
                (*at == 0 || now.saturating_sub(*at) >= SECOND)
                    && !self.banned_nodes.contains(node)
                    && !self.banned_peers.contains(id)
                    && self.neighbour_idx(*node).is_none()
            })
            .collect();
        let Some(oldest) = dialable.iter().map(|d| d.2).min() else { return };
        dialable.retain(|d| d.2 == oldest);
        let (node, peer_id, _) = dialable[self.rng.below(dialable.len() as u64) as usize];
        self.listed_seeds.insert(node, Some((peer_id, now)));
        self.connecting.insert(node, (now, club_of(peer_id, self.cfg.n_substreams)));
        self.events.push_back(Event::Connect(node));
    }

    /// Clubs whose substream has no parent and no neighbour that could become one:
    /// we need to meet more of their members.
    fn needy_clubs(&self) -> Vec<usize> {
        if self.cfg.role != Role::Viewer {
            return Vec::new();
        }
        (0..self.branches.len())
            .filter(|&s| {
                self.branches[s].parent.is_none()
                    && !self.neighbours.iter().any(|n| {
                        n.forwards(s) && n.status.as_ref().is_some_and(|st| st.free_slots > 0) && !n.failed_as_parent()
                    })
            })
            .collect()
    }

    /// Neighbours per club (connected or being connected).
    fn club_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.cfg.n_substreams as usize];
        for n in &self.neighbours {
            if let Some(c) = n.club {
                counts[c] += 1;
            }
        }
        for &(_, c) in self.connecting.values() {
            counts[c] += 1;
        }
        counts
    }

    fn maintain(&mut self, now: Micros) {
        // Failures are forgiven slowly — to neighbours that have delivered something:
        // one that claims pieces and never sends one is not asked again.
        if now.saturating_sub(self.last_forgive) >= self.cfg.forgive_every {
            self.last_forgive = now;
            for n in self.neighbours.iter_mut() {
                if n.pieces_from > 0 {
                    // One at a time, refusals first: a parent is forgiven at the pace
                    // it was when both were one count.
                    if n.refusals > 0 {
                        n.refusals -= 1;
                    } else {
                        n.failures = n.failures.saturating_sub(1);
                    }
                }
                // A record of expired requests fades too, so one that had a bad
                // patch gets asked again (and sinks again if it still does not answer).
                n.reply_rate = (n.reply_rate + 0.05).min(1.0);
            }
        }
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
        self.connecting.retain(|_, (at, _)| now.saturating_sub(*at) < self.cfg.connect_timeout);
        self.keep_a_seed(now);
        let total = self.neighbours.len() + self.connecting.len();
        let club_short = self.cfg.role == Role::Viewer
            && total < self.cfg.max_neighbours
            && (self.club_counts().iter().any(|&c| c < self.cfg.min_per_club) || !self.needy_clubs().is_empty());
        if (total < self.cfg.target_neighbours || club_short)
            && self.last_want_peers.is_none_or(|t| now.saturating_sub(t) >= self.cfg.want_peers_every)
        {
            self.last_want_peers = Some(now);
            self.events.push_back(Event::WantPeers);
        }
        if self.cfg.role == Role::Seed && now.saturating_sub(self.last_parent_review) >= self.cfg.parent_review_every {
            self.last_parent_review = now;
            self.review_children(now);
        }
        // Orphaned substreams look for a parent every tick; fed ones reconsider theirs
        // every `parent_review_every`.
        let orphan = self.branches.iter().any(|b| b.parent.is_none());
        if self.cfg.role == Role::Viewer
            && (orphan || now.saturating_sub(self.last_parent_review) >= self.cfg.parent_review_every)
        {
            self.last_parent_review = now;
            self.choose_parents(now);
        }
        self.send_status(now);
    }

    /// `Status` to everyone every `status_interval`; sooner, when our room for children
    /// flipped (to everyone) or a depth changed (to our children in that substream,
    /// whose own depth follows ours — what breaks a loop quickly).
    fn send_status(&mut self, now: Micros) {
        let since = now.saturating_sub(self.last_status);
        let everyone = since >= self.cfg.status_interval || (self.slots_dirty && since >= self.cfg.status_min_gap);
        let children = self.depth_dirty != 0 && since >= self.cfg.status_min_gap;
        // Our first segment start goes at once to those that hold none: a joiner that
        // came before the stream (or before its first keyframe) learns where to start
        // from whoever has it, not only from parents that happen to carry that piece's
        // substream, nor only at the next round.
        let starters = self.start_dirty;
        if !everyone && !children && !starters {
            return;
        }
        let dirty = self.depth_dirty;
        let nodes: Vec<NodeId> = self
            .neighbours
            .iter()
            .filter(|n| {
                n.hello.is_some()
                    && (everyone
                        || (children && n.children & dirty != 0)
                        || (starters && n.status.as_ref().is_none_or(|st| st.segment_start.is_none())))
            })
            .map(|n| n.node)
            .collect();
        if everyone {
            self.last_status = now;
            self.slots_dirty = false;
        }
        if everyone || children {
            self.depth_dirty = 0;
        }
        self.start_dirty = false;
        if nodes.is_empty() {
            return;
        }
        let status = self.status(now);
        for node in nodes {
            self.send(node, Message::Status(status.clone()));
        }
    }

    /// With all the neighbours we want, makes room (one every 5 s) by dropping the
    /// viewer that has been of no use either way for longest, so the neighbourhood
    /// keeps improving. Seeds, tree partners and a club's last members are kept.
    fn replace_useless(&mut self, now: Micros) {
        if self.cfg.role == Role::Seed {
            return self.shed_idle_viewers(now);
        }
        if self.neighbours.len() < self.cfg.target_neighbours
            || now.saturating_sub(self.last_replace) < self.cfg.replace_every
        {
            return;
        }
        let counts = self.club_counts();
        let worst = self
            .neighbours
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.hello.is_some()
                    && !n.is_seed()
                    && n.children == 0
                    && n.parents == 0
                    && n.club.is_some_and(|c| counts[c] > self.cfg.min_per_club)
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

    /// What one neighbour that gives us nothing may take by request, as a share of the
    /// stream: `free_repair_share`, or at a seed told the audience, the seeds' repair
    /// budget shared by the neighbours it has if that is less. With 2,500 neighbours,
    /// 1,000 leeches asking every seed for every piece would otherwise take a tenth of
    /// the stream each (`ten-k` flood: seed share 0.018).
    fn free_repair_share(&self) -> f64 {
        match self.audience_repair_streams {
            Some(streams) => (streams / self.neighbours.len().max(1) as f64).min(self.cfg.free_repair_share),
            None => self.cfg.free_repair_share,
        }
    }

    /// A seed near its connection limit closes connections of viewers that are not
    /// its children and asked nothing for a while, to keep room for joiners.
    fn shed_idle_viewers(&mut self, now: Micros) {
        if self.neighbours.len() * 4 < self.cfg.max_neighbours * 3 {
            return;
        }
        let idle = self.neighbours.iter().position(|n| {
            n.children == 0
                && now.saturating_sub(n.connected_at) >= self.cfg.useless_after
                && now.saturating_sub(n.last_useful) >= self.cfg.useless_after
        });
        if let Some(idx) = idle {
            self.stats.neighbours_dropped += 1;
            self.close(idx, Some(GoodbyeReason::Replaced));
        }
    }

    fn have_map(&self) -> Option<Message> {
        let (first, _) = self.window.first()?;
        let base = first - first % 64;
        let mut bits = vec![0u64; MAX_HAVE_WORDS];
        for (seq, _) in self.window.iter() {
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
        self.neighbour_nodes.iter().position(|&n| n == node)
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
        let full_before = self.children_total() >= self.child_slots();
        self.neighbour_nodes.swap_remove(idx);
        let n = self.neighbours.swap_remove(idx);
        if n.children != 0 && full_before {
            self.slots_dirty = true;
        }
        for b in &mut self.branches {
            if b.parent == Some(n.node) {
                b.parent = None;
            }
        }
        for (_, w) in self.wants.iter_mut() {
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

impl Peer {
    /// Debug view: the push parent of substream `s`, if any.
    pub fn debug_parent(&self, s: usize) -> Option<NodeId> {
        self.branches.get(s).and_then(|b| b.parent)
    }

    /// Debug view: for each orphaned substream, why each fed neighbour forwarding it
    /// with free slots is not taken as a parent (the first filter it fails).
    pub fn debug_orphan_reasons(&self, now: Micros) -> Vec<&'static str> {
        let mut out = Vec::new();
        let n_sub = self.branches.len();
        for s in 0..n_sub {
            let bit = 1u64 << s;
            if self.branches[s].parent.is_some() {
                continue;
            }
            if self.neighbours.iter().any(|n| n.asked & bit != 0) {
                out.push("asked-pending");
            }
            for n in &self.neighbours {
                let Some(st) = &n.status else { continue };
                if !n.forwards(s) || n.depth(s) >= MAX_DEPTH || st.free_slots == 0 {
                    continue;
                }
                out.push(if n.children & bit != 0 {
                    "we-feed-it"
                } else if n.parents & bit != 0 {
                    "already-parent"
                } else if !self.loop_free(now, n, s) {
                    "loop"
                } else if n.failed_as_parent() {
                    "failures"
                } else if now < n.no_parent_until {
                    "backoff"
                } else if n.is_seed() {
                    "eligible-seed"
                } else {
                    "eligible"
                });
            }
        }
        out
    }

    /// Debug view: per substream, (parent?, neighbours forwarding it, of which with
    /// free slots and a feed, we forward it).
    pub fn debug_branches(&self) -> Vec<(bool, usize, usize, bool)> {
        (0..self.branches.len())
            .map(|s| {
                let fw: Vec<&Neighbour> = self.neighbours.iter().filter(|n| n.forwards(s)).collect();
                let free = fw
                    .iter()
                    .filter(|n| n.depth(s) < MAX_DEPTH && n.status.as_ref().is_some_and(|st| st.free_slots > 0))
                    .count();
                let forwarder = s == self.club && self.child_slots() > 0;
                (self.branches[s].parent.is_some(), fw.len(), free, forwarder)
            })
            .collect()
    }
}
