//! The discrete-event engine: a virtual clock, a priority queue of events, modelled
//! links (per-pair one-way delay, per-node upload capacity as a serial uplink, loss),
//! NAT, churn — and the real [`Peer`] state machines.
//!
//! Link model, precisely:
//! - A node's uplink sends one message at a time at its capacity; the next message is
//!   pulled from the peer (`poll_transmit`) only when the uplink is free.
//! - A message arrives `tx_time + delay(a, b)` after it leaves; `delay` is drawn once per
//!   pair, uniformly in `[delay_min, delay_max]`.
//! - Each message is lost with probability `loss`, except connection set-up and
//!   subscription messages (Hello, Goodbye, Subscribe, SubscribeReply), which a real
//!   transport retransmits until they arrive.
//! - An unreachable node accepts no incoming connection: an attempt fails after 1 s.
//! - Download capacity is not limited.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use swarm::peer::{Candidate, Event, Micros, NodeId, Peer, PeerConfig, PeerStats, Transmit};
use swarm::piece::{ChannelKeypair, Piece, PieceFlags, filler_payload};
use swarm::rng::Rng;
use swarm::wire::{Message, PeerId, Role};

use crate::attacker::Attacker;
use crate::scenario::Scenario;
use crate::verify::KnownPieces;

const MS: Micros = 1_000;
const CONNECT_FAIL_AFTER: Micros = 1_000 * MS;
/// `Node::accepted_at` of a piece not (yet) accepted.
pub(crate) const NOT_YET: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Seed,
    Viewer,
    Attacker,
}

#[derive(Debug)]
enum Agent {
    Peer(Box<Peer>),
    Attacker(Box<Attacker>),
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    peer_id: PeerId,
    agent: Agent,
    pub(crate) alive: bool,
    reachable: bool,
    upload_bps: u64,
    /// An `UplinkFree` wake-up is scheduled.
    uplink_pending: bool,
    /// The uplink sends until then.
    busy_until: Micros,
    last_delivery: Micros,
    timer_at: Micros,
    pub(crate) joined_at: Micros,
    pub(crate) left_at: Option<Micros>,
    /// First verified arrival of each seq, in ms rounded up ([`NOT_YET`] before).
    pub(crate) accepted_at: Vec<u32>,
    /// Nodes this one has a connection with (open on either side).
    links: Vec<u32>,
    pub(crate) started_at: Option<Micros>,
    pub(crate) bytes_up_window: u64,
    pub(crate) bytes_down_window: u64,
    /// (duplicate bytes, useful bytes) at window start and end.
    pub(crate) dup_snapshot: [(u64, u64); 2],
}

#[derive(Debug)]
enum Ev {
    SourcePiece,
    Origin { seed: u32, piece: Piece },
    Deliver { to: u32, from: u32, epoch: u32, msg: Message },
    UplinkFree { node: u32 },
    Timer { node: u32 },
    Join { node: u32 },
    Churn,
    ConnectArrive { from: u32, to: u32 },
    ConnectDone { from: u32, to: u32, epoch: u32 },
    ConnectFailed { from: u32, to: u32 },
    Closed { node: u32, peer: u32, epoch: u32 },
    WindowStart,
    WindowEnd,
}

/// Events by (time, insertion order). Keys are small (the events themselves, some
/// carrying a message, stay put in a slab) and sit in a calendar of 1 ms buckets: the
/// bucket being run is a binary heap of a few thousand keys that stays in cache, later
/// buckets are plain vectors, and events past the calendar's horizon wait in a heap of
/// their own. At 100,000 peers one heap of millions of keys cost a cache miss per level
/// on every pop.
struct EventQueue {
    /// Keys of bucket `now_bucket` and any earlier time still pending.
    current: BinaryHeap<Reverse<Key>>,
    now_bucket: u64,
    /// Bucket `b` for `now_bucket < b < now_bucket + BUCKETS` is `ring[b % BUCKETS]`.
    ring: Vec<Vec<Reverse<Key>>>,
    in_ring: usize,
    /// Keys at or past the horizon.
    far: BinaryHeap<Reverse<Key>>,
    slab: Vec<Option<Ev>>,
    free: Vec<u32>,
    order: u64,
}

/// (time, insertion order, slab slot).
type Key = (Micros, u64, u32);
const BUCKET: Micros = MS;
const BUCKETS: u64 = 512;

impl Default for EventQueue {
    fn default() -> Self {
        EventQueue {
            current: BinaryHeap::new(),
            now_bucket: 0,
            ring: (0..BUCKETS).map(|_| Vec::new()).collect(),
            in_ring: 0,
            far: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            order: 0,
        }
    }
}

impl EventQueue {
    fn push(&mut self, at: Micros, ev: Ev) {
        self.order += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(ev);
                slot
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.push_key((at, self.order, slot));
    }

    fn push_key(&mut self, key: Key) {
        let bucket = key.0 / BUCKET;
        if bucket <= self.now_bucket {
            self.current.push(Reverse(key));
        } else if bucket < self.now_bucket + BUCKETS {
            self.ring[(bucket % BUCKETS) as usize].push(Reverse(key));
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(key));
        }
    }

    fn pop(&mut self) -> Option<(Micros, Ev)> {
        let Reverse((at, _, slot)) = loop {
            if let Some(key) = self.current.pop() {
                break key;
            }
            if self.in_ring == 0 {
                // Nothing within the horizon: jump to the earliest far event.
                let Reverse(next) = self.far.peek()?;
                self.now_bucket = self.now_bucket.max(next.0 / BUCKET - 1);
            }
            self.now_bucket += 1;
            let bucket = &mut self.ring[(self.now_bucket % BUCKETS) as usize];
            self.in_ring -= bucket.len();
            // Reuse the heap's allocation for the bucket and the bucket's for the next.
            let mut keys = std::mem::take(&mut self.current).into_vec();
            std::mem::swap(&mut keys, bucket);
            self.current = BinaryHeap::from(keys);
            // The horizon moved one bucket: far keys now inside it join the calendar.
            while let Some(&Reverse(key)) = self.far.peek() {
                if key.0 / BUCKET >= self.now_bucket + BUCKETS {
                    break;
                }
                self.far.pop();
                self.push_key(key);
            }
        };
        self.free.push(slot);
        let ev = self.slab[slot as usize].take().expect("a slot in the queue holds its event until popped");
        Some((at, ev))
    }
}

impl Node {
    pub(crate) fn peer_depths(&self) -> Option<Vec<u8>> {
        match &self.agent {
            Agent::Peer(p) => Some(p.depths()),
            Agent::Attacker(_) => None,
        }
    }

    pub(crate) fn peer_stats(&self) -> Option<&PeerStats> {
        match &self.agent {
            Agent::Peer(p) => Some(p.stats()),
            Agent::Attacker(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    epoch: u32,
    /// Open as seen from the lower-numbered node, and from the higher.
    open: [bool; 2],
}

/// What a run leaves behind for the report.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) nodes: Vec<Node>,
    pub(crate) pieces: Vec<Piece>,
    pub(crate) seed_egress: Vec<u64>,
    pub(crate) forged_sent: u64,
    pub(crate) forged_accepted: u64,
    pub(crate) events: u64,
    pub(crate) rejected: u64,
}

pub(crate) struct Engine<'a> {
    sc: &'a Scenario,
    now: Micros,
    queue: EventQueue,
    rng: Rng,
    key: ChannelKeypair,
    known: Arc<KnownPieces>,
    nodes: Vec<Node>,
    conns: HashMap<(u32, u32), Conn, BuildHasherDefault<PairHasher>>,
    next_epoch: u32,
    /// Alive nodes that accept connections (what the tracker hands out).
    reachable: Vec<u32>,
    /// Position of each node in `reachable` (`u32::MAX`: not there).
    reachable_pos: Vec<u32>,
    /// Alive viewers, for picking who leaves by rank in node order.
    alive_viewers: Fenwick,
    /// Seeds and attackers in node order (the source feeds them every piece).
    seeds: Vec<u32>,
    attackers: Vec<u32>,
    pieces: Vec<Piece>,
    /// Bytes all seeds sent, per simulated second.
    seed_egress: Vec<u64>,
    in_window: bool,
    forged_accepted: u64,
    rejected: u64,
    events: u64,
    progress: Option<&'a mut dyn FnMut(Micros, u64)>,
    trace: Option<u32>,
    /// `SIM_DEBUG` is set: print diagnostics (read once, not per event).
    debug: bool,
    msg_counts: std::collections::BTreeMap<&'static str, u64>,
}

impl<'a> Engine<'a> {
    pub(crate) fn new(sc: &'a Scenario, progress: Option<&'a mut dyn FnMut(Micros, u64)>) -> Self {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&sc.rng_seed.to_be_bytes());
        secret[8] = 0xc4;
        let key = ChannelKeypair::from_secret_bytes(&secret);
        Engine {
            sc,
            known: Arc::new(KnownPieces::new(key.id())),
            now: 0,
            queue: EventQueue::default(),
            rng: Rng::derive(sc.rng_seed, 1),
            key,
            nodes: Vec::new(),
            conns: HashMap::default(),
            next_epoch: 0,
            reachable: Vec::new(),
            reachable_pos: Vec::new(),
            alive_viewers: Fenwick::default(),
            seeds: Vec::new(),
            attackers: Vec::new(),
            pieces: Vec::new(),
            seed_egress: Vec::new(),
            in_window: false,
            forged_accepted: 0,
            rejected: 0,
            events: 0,
            progress,
            trace: std::env::var("SIM_TRACE").ok().and_then(|v| v.parse().ok()),
            debug: std::env::var_os("SIM_DEBUG").is_some(),
            msg_counts: Default::default(),
        }
    }

    pub(crate) fn run(mut self) -> Outcome {
        let sc = self.sc;
        for _ in 0..sc.seeds {
            let n = self.add_node(Kind::Seed, true, u64::from(sc.seed_upload_kbps) * 1000);
            self.schedule(0, Ev::Join { node: n });
        }
        for _ in 0..sc.viewers {
            let n = self.new_viewer();
            let at = self.rng.below(u64::from(sc.join_spread_ms).max(1) * MS);
            self.schedule(at, Ev::Join { node: n });
        }
        for _ in 0..sc.attackers {
            let n = self.add_node(Kind::Attacker, true, u64::from(sc.bitrate_kbps) * 10_000);
            let at = self.rng.below(u64::from(sc.join_spread_ms).max(1) * MS);
            self.schedule(at, Ev::Join { node: n });
        }
        self.schedule(0, Ev::SourcePiece);
        if sc.churn_per_min > 0.0 && sc.viewers > 0 {
            let first = u64::from(sc.join_spread_ms) * MS;
            self.schedule(first, Ev::Churn);
        }
        let warmup = u64::from(sc.warmup_s) * 1_000 * MS;
        self.schedule(warmup, Ev::WindowStart);
        self.schedule(warmup + u64::from(sc.window_s) * 1_000 * MS, Ev::WindowEnd);
        let end = sc.end_ms() * MS;

        while let Some((at, ev)) = self.queue.pop() {
            if at > end {
                break;
            }
            self.now = at;
            self.events += 1;
            if self.events.is_multiple_of(65_536)
                && let Some(p) = self.progress.as_mut()
            {
                p(self.now, self.events);
            }
            if self.trace.is_some() {
                let name = match &ev {
                    Ev::Deliver { .. } => "deliver",
                    Ev::UplinkFree { .. } => "uplink_free",
                    Ev::Timer { .. } => "timer",
                    Ev::Origin { .. } => "origin",
                    _ => "other",
                };
                *self.msg_counts.entry(name).or_insert(0) += 1;
            }
            self.dispatch(ev);
        }
        let forged_sent = self
            .nodes
            .iter()
            .map(|n| match &n.agent {
                Agent::Attacker(a) => a.forged_sent,
                Agent::Peer(_) => 0,
            })
            .sum();
        if self.debug {
            let mut hist = std::collections::BTreeMap::new();
            for n in &self.nodes {
                if let (Agent::Peer(p), true, Kind::Viewer) = (&n.agent, n.alive, n.kind) {
                    for (has, fw, free) in p.debug_branches() {
                        *hist.entry((has, fw.min(5), free.min(3), n.reachable)).or_insert(0) += 1;
                    }
                }
            }
            eprintln!("(has_parent, forwarders, with_free, reachable) -> count: {hist:?}");
            eprintln!("messages sent by kind: {:?}", self.msg_counts);
            let mut slow: Vec<(u64, u64, bool, usize, usize)> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.kind == Kind::Viewer)
                .filter_map(|(i, n)| {
                    let nb = match &n.agent {
                        Agent::Peer(p) => p.n_neighbours(),
                        Agent::Attacker(_) => 0,
                    };
                    n.started_at.map(|t| ((t - n.joined_at) / 1000, n.joined_at / 1000, n.reachable, nb, i))
                })
                .collect();
            slow.sort_unstable();
            eprintln!(
                "slowest startups (ms, joined at ms, reachable, neighbours): {:?}",
                &slow[slow.len().saturating_sub(15)..]
            );
        }
        Outcome {
            nodes: self.nodes,
            pieces: self.pieces,
            seed_egress: self.seed_egress,
            forged_sent,
            forged_accepted: self.forged_accepted,
            events: self.events,
            rejected: self.rejected,
        }
    }

    fn schedule(&mut self, at: Micros, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn add_node(&mut self, kind: Kind, reachable: bool, upload_bps: u64) -> u32 {
        let idx = self.nodes.len() as u32;
        let sc = self.sc;
        let peer_id = PeerId(Rng::derive(sc.rng_seed, 0x1d00 + u64::from(idx)).next_u64());
        let agent = match kind {
            Kind::Attacker => Agent::Attacker(Box::new(Attacker::new(self.key.id(), peer_id, sc.n_substreams))),
            Kind::Seed | Kind::Viewer => {
                let role = if kind == Kind::Seed { Role::Seed } else { Role::Viewer };
                let mut cfg = PeerConfig::new(role, peer_id, self.key.id());
                cfg.reachable = reachable;
                cfg.upload_kbps = u32::try_from(upload_bps / 1000).unwrap_or(u32::MAX);
                cfg.stream_kbps = sc.bitrate_kbps;
                cfg.n_substreams = sc.n_substreams;
                cfg.playout_delay = u64::from(sc.playout_delay_ms) * MS;
                if kind == Kind::Seed {
                    cfg.max_child_slots = Some(sc.seed_child_slots);
                    cfg.max_neighbours = sc.seed_max_neighbours as usize;
                    cfg.target_neighbours = 0;
                } else {
                    cfg.target_neighbours = sc.viewer_neighbours as usize;
                }
                let peer = Peer::with_verifier(cfg, self.now, self.known.clone())
                    .expect("scenario was validated, so the peer config is valid");
                Agent::Peer(Box::new(peer))
            }
        };
        match kind {
            Kind::Seed => self.seeds.push(idx),
            Kind::Attacker => self.attackers.push(idx),
            Kind::Viewer => {}
        }
        self.reachable_pos.push(u32::MAX);
        self.alive_viewers.push(0);
        self.nodes.push(Node {
            kind,
            peer_id,
            agent,
            alive: false,
            reachable,
            upload_bps: upload_bps.max(1),
            uplink_pending: false,
            busy_until: 0,
            last_delivery: 0,
            timer_at: Micros::MAX,
            joined_at: 0,
            left_at: None,
            accepted_at: Vec::new(),
            links: Vec::new(),
            started_at: None,
            bytes_up_window: 0,
            bytes_down_window: 0,
            dup_snapshot: [(0, 0); 2],
        });
        idx
    }

    fn new_viewer(&mut self) -> u32 {
        let sc = self.sc;
        let reachable = !self.rng.chance(sc.unreachable_share);
        let mut pick = self.rng.unit();
        let mut multiple = sc.upload_mix.last().map_or(1.0, |m| m.1);
        for &(share, m) in &sc.upload_mix {
            if pick < share {
                multiple = m;
                break;
            }
            pick -= share;
        }
        let upload_bps = (f64::from(sc.bitrate_kbps) * 1000.0 * multiple) as u64;
        self.add_node(Kind::Viewer, reachable, upload_bps)
    }

    fn delay(&self, a: u32, b: u32) -> Micros {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let mut r = Rng::derive(self.sc.rng_seed ^ 0xde1a, (u64::from(lo) << 32) | u64::from(hi));
        r.range_inclusive(u64::from(self.sc.delay_min_ms) * MS, u64::from(self.sc.delay_max_ms) * MS)
    }

    fn conn_key(a: u32, b: u32) -> ((u32, u32), usize) {
        if a < b { ((a, b), 0) } else { ((b, a), 1) }
    }

    fn conn_open_at(&self, node: u32, peer: u32, epoch: u32) -> bool {
        let (key, side) = Self::conn_key(node, peer);
        self.conns.get(&key).is_some_and(|c| c.epoch == epoch && c.open[side])
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::SourcePiece => self.source_piece(),
            Ev::Origin { seed, piece } => {
                if self.nodes[seed as usize].alive
                    && let Agent::Peer(p) = &mut self.nodes[seed as usize].agent
                    && p.handle_origin_piece(self.now, piece).is_err()
                {
                    self.rejected += 1;
                }
                self.drive(seed);
            }
            Ev::Deliver { to, from, epoch, msg } => {
                if !self.nodes[to as usize].alive || !self.conn_open_at(to, from, epoch) {
                    return;
                }
                if self.trace == Some(to) || self.trace == Some(from) {
                    let desc = match &msg {
                        Message::Piece(p) => format!("piece {} flags {:?}", p.seq(), p.flags()),
                        Message::Status(st) => {
                            format!("status seg {:?} free {} depth {:?}", st.segment_start, st.free_slots, st.depth)
                        }
                        other => format!("{other:?}").chars().take(120).collect(),
                    };
                    eprintln!("{:>8.3} {from}->{to} {desc}", self.now as f64 / 1e6);
                }
                let size = msg.encoded_len() as u64;
                let node = &mut self.nodes[to as usize];
                if self.in_window && node.kind == Kind::Viewer {
                    node.bytes_down_window += size;
                }
                let now = self.now;
                match &mut node.agent {
                    Agent::Peer(p) => p.handle_message(now, NodeId(u64::from(from)), msg),
                    Agent::Attacker(a) => {
                        let pieces = &self.pieces;
                        let lookup = |seq: u64| pieces.get(seq as usize).cloned();
                        a.handle_message(NodeId(u64::from(from)), msg, &lookup);
                    }
                }
                self.drive(to);
            }
            Ev::UplinkFree { node } => {
                self.nodes[node as usize].uplink_pending = false;
                self.drive(node);
            }
            Ev::Timer { node } => {
                let n = &mut self.nodes[node as usize];
                if !n.alive || n.timer_at > self.now {
                    return;
                }
                n.timer_at = Micros::MAX;
                if let Agent::Peer(p) = &mut n.agent {
                    p.handle_timeout(self.now);
                }
                self.drive(node);
            }
            Ev::Join { node } => self.join(node),
            Ev::Churn => self.churn(),
            Ev::ConnectArrive { from, to } => {
                let target = &self.nodes[to as usize];
                if !target.alive || !target.reachable || !self.nodes[from as usize].alive {
                    let wait = if target.reachable { self.delay(from, to) } else { CONNECT_FAIL_AFTER };
                    self.schedule(self.now + wait, Ev::ConnectFailed { from, to });
                    return;
                }
                // One connection per pair: when both opened at once, the later attempt
                // fails as a duplicate, as a real peer would close it (Goodbye Duplicate).
                if self.conns.contains_key(&Self::conn_key(from, to).0) {
                    let at = self.now + self.delay(from, to);
                    self.schedule(at, Ev::ConnectFailed { from, to });
                    return;
                }
                self.next_epoch += 1;
                let epoch = self.next_epoch;
                let (key, side) = Self::conn_key(to, from);
                let mut open = [false; 2];
                open[side] = true;
                if self.conns.insert(key, Conn { epoch, open }).is_none() {
                    self.nodes[to as usize].links.push(from);
                    self.nodes[from as usize].links.push(to);
                }
                self.connected(to, from, false);
                let at = self.now + self.delay(from, to);
                self.schedule(at, Ev::ConnectDone { from, to, epoch });
            }
            Ev::ConnectDone { from, to, epoch } => {
                let (key, side) = Self::conn_key(from, to);
                let other_open = self.conns.get(&key).is_some_and(|c| c.epoch == epoch && c.open[1 - side]);
                if !self.nodes[from as usize].alive {
                    return;
                }
                if !other_open {
                    self.connect_failed(from, to);
                    return;
                }
                if let Some(c) = self.conns.get_mut(&key) {
                    c.open[side] = true;
                }
                self.connected(from, to, true);
            }
            Ev::ConnectFailed { from, to } => self.connect_failed(from, to),
            Ev::Closed { node, peer, epoch } => {
                let (key, side) = Self::conn_key(node, peer);
                let Some(c) = self.conns.get_mut(&key) else { return };
                if c.epoch != epoch || !c.open[side] {
                    return;
                }
                c.open[side] = false;
                if !c.open[1 - side] {
                    self.forget_conn(node, peer);
                }
                self.disconnected(node, peer);
            }
            Ev::WindowStart => {
                self.in_window = true;
                self.snapshot_dups(0);
            }
            Ev::WindowEnd => {
                self.in_window = false;
                self.snapshot_dups(1);
            }
        }
    }

    fn snapshot_dups(&mut self, which: usize) {
        for n in &mut self.nodes {
            if let Agent::Peer(p) = &n.agent {
                n.dup_snapshot[which] = (p.stats().duplicate_bytes, p.stats().piece_bytes_accepted);
            }
        }
    }

    fn source_piece(&mut self) {
        let sc = self.sc;
        let seq = self.pieces.len() as u64;
        let pieces_per_gop = u64::from(sc.gop_ms / sc.piece_ms).max(1);
        let flags = if seq.is_multiple_of(pieces_per_gop) { PieceFlags::SEGMENT_START } else { PieceFlags::NONE };
        let payload = filler_payload(sc.packets_per_piece(), seq);
        let piece = self
            .key
            .sign_piece(seq, self.now, flags, payload)
            .expect("filler payloads are whole TS packets within the size limit");
        self.known.register(&piece).expect("the source signs with the channel's own key");
        self.pieces.push(piece.clone());
        for i in 0..self.seeds.len() {
            let seed = self.seeds[i];
            let at = self.now + u64::from(sc.ingest_delay_ms) * MS;
            self.schedule(at, Ev::Origin { seed, piece: piece.clone() });
        }
        for i in 0..self.attackers.len() {
            let idx = self.attackers[i];
            if self.nodes[idx as usize].alive
                && let Agent::Attacker(a) = &mut self.nodes[idx as usize].agent
            {
                a.handle_new_piece(&piece);
                self.drive(idx);
            }
        }
        self.schedule(self.now + u64::from(sc.piece_ms) * MS, Ev::SourcePiece);
    }

    fn join(&mut self, node: u32) {
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        n.alive = true;
        n.joined_at = now;
        if n.kind == Kind::Viewer {
            self.alive_viewers.add(node as usize, 1);
        }
        if n.reachable {
            self.reachable_pos[node as usize] = self.reachable.len() as u32;
            self.reachable.push(node);
        }
        if let Agent::Attacker(_) = n.agent {
            self.give_candidates(node);
        }
        self.drive(node);
    }

    fn churn(&mut self) {
        let sc = self.sc;
        // Leave one random viewer and join a new one; the gap to the next churn event
        // makes `churn_per_min * viewers` of these per minute.
        let alive = self.alive_viewers.total();
        if alive > 0 {
            let rank = self.rng.below(alive);
            let leaver = self.alive_viewers.find(rank) as u32;
            self.leave(leaver);
        }
        let joiner = self.new_viewer();
        self.join(joiner);
        let per_min = sc.churn_per_min * f64::from(sc.viewers);
        let gap = (60_000_000.0 / per_min) as Micros;
        self.schedule(self.now + gap.max(1), Ev::Churn);
    }

    fn leave(&mut self, node: u32) {
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        n.alive = false;
        n.left_at = Some(now);
        if n.kind == Kind::Viewer {
            self.alive_viewers.add(node as usize, -1);
        }
        let pos = std::mem::replace(&mut self.reachable_pos[node as usize], u32::MAX);
        if pos != u32::MAX {
            self.reachable.swap_remove(pos as usize);
            if let Some(&moved) = self.reachable.get(pos as usize) {
                self.reachable_pos[moved as usize] = pos;
            }
        }
        // Everyone connected to it learns of the loss one delay later.
        let peers = self.nodes[node as usize].links.clone();
        for peer in peers {
            let (key, side) = Self::conn_key(node, peer);
            let Some(c) = self.conns.get_mut(&key) else { continue };
            c.open[side] = false;
            let epoch = c.epoch;
            if c.open[1 - side] {
                let at = now + self.delay(node, peer);
                self.schedule(at, Ev::Closed { node: peer, peer: node, epoch });
            } else {
                self.forget_conn(node, peer);
            }
        }
    }

    fn forget_conn(&mut self, a: u32, b: u32) {
        self.conns.remove(&Self::conn_key(a, b).0);
        self.nodes[a as usize].links.retain(|&x| x != b);
        self.nodes[b as usize].links.retain(|&x| x != a);
    }

    fn give_candidates(&mut self, node: u32) {
        // What a tracker answers: a random sample of reachable peers, with their ids.
        let want = 3 * self.sc.viewer_neighbours as usize;
        let mut picked: Vec<Candidate> = Vec::with_capacity(want);
        // Two seeds in every answer, as the tracker's peer list mixes them in.
        let seeds: Vec<u32> = (0..self.sc.seeds).filter(|&i| self.nodes[i as usize].alive).collect();
        for _ in 0..2.min(seeds.len()) {
            let c = seeds[self.rng.below(seeds.len() as u64) as usize];
            let cand = Candidate { node: NodeId(u64::from(c)), peer_id: self.nodes[c as usize].peer_id, seed: true };
            if !picked.contains(&cand) {
                picked.push(cand);
            }
        }
        if !self.reachable.is_empty() {
            for _ in 0..want * 2 {
                let c = self.reachable[self.rng.below(self.reachable.len() as u64) as usize];
                let seed = self.nodes[c as usize].kind == Kind::Seed;
                let cand = Candidate { node: NodeId(u64::from(c)), peer_id: self.nodes[c as usize].peer_id, seed };
                if c != node && !picked.contains(&cand) {
                    picked.push(cand);
                }
                if picked.len() == want {
                    break;
                }
            }
        }
        let viewers: Vec<u32> =
            picked.iter().map(|c| c.node.0 as u32).filter(|&c| self.nodes[c as usize].kind == Kind::Viewer).collect();
        match &mut self.nodes[node as usize].agent {
            Agent::Peer(p) => p.handle_candidates(self.now, &picked),
            Agent::Attacker(a) => {
                // Attackers connect to whoever they are given, up to a dozen.
                let room = 12usize.saturating_sub(a.n_neighbours());
                let targets: Vec<u32> =
                    viewers.into_iter().filter(|&c| !a.is_neighbour(NodeId(u64::from(c)))).take(room).collect();
                for to in targets {
                    let at = self.now + self.delay(node, to);
                    self.schedule(at, Ev::ConnectArrive { from: node, to });
                }
            }
        }
    }

    fn connected(&mut self, node: u32, peer: u32, outbound: bool) {
        let now = self.now;
        match &mut self.nodes[node as usize].agent {
            Agent::Peer(p) => p.handle_connected(now, NodeId(u64::from(peer)), outbound),
            Agent::Attacker(a) => a.handle_connected(NodeId(u64::from(peer))),
        }
        self.drive(node);
    }

    fn connect_failed(&mut self, node: u32, peer: u32) {
        let now = self.now;
        match &mut self.nodes[node as usize].agent {
            Agent::Peer(p) => p.handle_connect_failed(now, NodeId(u64::from(peer))),
            Agent::Attacker(_) => {}
        }
        self.drive(node);
    }

    fn disconnected(&mut self, node: u32, peer: u32) {
        let now = self.now;
        if !self.nodes[node as usize].alive {
            return;
        }
        match &mut self.nodes[node as usize].agent {
            Agent::Peer(p) => p.handle_disconnected(now, NodeId(u64::from(peer))),
            Agent::Attacker(a) => {
                a.handle_disconnected(NodeId(u64::from(peer)));
                if a.n_neighbours() < 6 {
                    self.give_candidates(node);
                }
            }
        }
        self.drive(node);
    }

    /// Lets a node act: handle its events, start a transmission if its uplink is
    /// free, and arm its timer.
    fn drive(&mut self, node: u32) {
        if !self.nodes[node as usize].alive {
            return;
        }
        loop {
            self.drain_events(node);
            let n = &mut self.nodes[node as usize];
            if n.uplink_pending || !n.alive {
                break;
            }
            // Still sending: wake up when the uplink frees, if there is more to send.
            if self.now < n.busy_until {
                let more = match &n.agent {
                    Agent::Peer(p) => p.wants_to_transmit(),
                    Agent::Attacker(a) => a.wants_to_transmit(),
                };
                if more {
                    n.uplink_pending = true;
                    let at = n.busy_until;
                    self.schedule(at, Ev::UplinkFree { node });
                }
                break;
            }
            // Small messages go out back to back in one batch, which ends after the
            // first piece: the uplink is modelled the same, with one wake-up per batch.
            let now = self.now;
            let mut end = now;
            for _ in 0..64 {
                let n = &mut self.nodes[node as usize];
                let t = match &mut n.agent {
                    Agent::Peer(p) => p.poll_transmit(now),
                    Agent::Attacker(a) => a.poll_transmit(),
                };
                let Some(t) = t else { break };
                let piece = matches!(t.msg, Message::Piece(_));
                end = self.transmit(node, t, end);
                if piece {
                    break;
                }
            }
            if end == now {
                break;
            }
            self.nodes[node as usize].busy_until = end;
        }
        let n = &mut self.nodes[node as usize];
        if let Agent::Peer(p) = &n.agent
            && let Some(at) = p.poll_timeout()
            && at < n.timer_at
        {
            n.timer_at = at;
            let at = at.max(self.now);
            self.schedule(at, Ev::Timer { node });
        }
    }

    /// Sends `t` on the uplink of `node`, starting at `start`; returns when the uplink
    /// has sent it.
    fn transmit(&mut self, node: u32, t: Transmit, start: Micros) -> Micros {
        let to = t.to.0 as u32;
        let (key, side) = Self::conn_key(node, to);
        let Some(conn) = self.conns.get(&key).copied() else { return start };
        if !conn.open[side] {
            return start;
        }
        let size = t.msg.encoded_len() as u64;
        if self.trace.is_some() {
            *self.msg_counts.entry(t.msg.name()).or_insert(0) += 1;
        }
        let n = &mut self.nodes[node as usize];
        let done = start + (size * 8 * 1_000_000).div_ceil(n.upload_bps);
        if n.kind == Kind::Seed {
            if self.in_window {
                n.bytes_up_window += size;
            }
            let sec = (self.now / 1_000_000) as usize;
            if self.seed_egress.len() <= sec {
                self.seed_egress.resize(sec + 1, 0);
            }
            self.seed_egress[sec] += size;
        }
        let reliable = matches!(
            t.msg,
            Message::Hello(_) | Message::Goodbye { .. } | Message::Subscribe { .. } | Message::SubscribeReply { .. }
        );
        if !reliable && self.rng.chance(self.sc.loss) {
            return done;
        }
        let at = done + self.delay(node, to);
        self.nodes[node as usize].last_delivery = at;
        self.schedule(at, Ev::Deliver { to, from: node, epoch: conn.epoch, msg: t.msg });
        done
    }

    fn drain_events(&mut self, node: u32) {
        loop {
            let ev = match &mut self.nodes[node as usize].agent {
                Agent::Peer(p) => p.poll_event(),
                Agent::Attacker(_) => None,
            };
            let Some(ev) = ev else { return };
            match ev {
                Event::Connect(to) => {
                    let to = to.0 as u32;
                    let at = self.now + self.delay(node, to);
                    self.schedule(at, Ev::ConnectArrive { from: node, to });
                }
                Event::Disconnect(peer, _) => {
                    let peer = peer.0 as u32;
                    let (key, side) = Self::conn_key(node, peer);
                    let Some(c) = self.conns.get_mut(&key) else { continue };
                    let epoch = c.epoch;
                    c.open[side] = false;
                    if !c.open[1 - side] {
                        self.forget_conn(node, peer);
                        continue;
                    }
                    // The peer learns of the close after the last message we sent it.
                    let at = (self.now + self.delay(node, peer)).max(self.nodes[node as usize].last_delivery) + 1;
                    self.schedule(at, Ev::Closed { node: peer, peer: node, epoch });
                }
                Event::WantPeers => self.give_candidates(node),
                Event::Accepted { piece, .. } => self.record_accept(node, &piece),
                Event::PlaybackStarted { .. } => {
                    let n = &mut self.nodes[node as usize];
                    n.started_at.get_or_insert(self.now);
                }
                Event::Rejected { reason, .. } => {
                    if self.debug {
                        eprintln!("rejected: {reason:?}");
                    }
                    self.rejected += 1
                }
                _ => {}
            }
        }
    }

    fn record_accept(&mut self, node: u32, piece: &Piece) {
        let seq = piece.seq() as usize;
        let genuine = self.pieces.get(seq).is_some_and(|g| g.same_bytes(piece));
        if !genuine {
            self.forged_accepted += 1;
        }
        let n = &mut self.nodes[node as usize];
        if n.accepted_at.len() <= seq {
            n.accepted_at.resize(seq + 1, NOT_YET);
        }
        if n.accepted_at[seq] == NOT_YET {
            n.accepted_at[seq] = u32::try_from(self.now.div_ceil(MS)).unwrap_or(NOT_YET - 1);
        }
    }
}

/// Hashes a pair of node indices: one multiply, where SipHash's resistance to chosen
/// keys buys nothing (the simulator chooses them).
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(26) ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Counts per node (1: alive viewer) with prefix sums in O(log n): the k-th alive
/// viewer in node order without scanning 100,000 nodes on every churn event.
#[derive(Debug, Default)]
struct Fenwick {
    tree: Vec<i64>,
}

impl Fenwick {
    /// Appends a node with count `value`.
    fn push(&mut self, value: i64) {
        // Node i (1-based) covers (i - lowbit(i), i]: sum those already present.
        let i = self.tree.len() + 1;
        let low = i & i.wrapping_neg();
        let mut sum = value;
        let mut j = i - 1;
        while j > i - low {
            sum += self.tree[j - 1];
            j -= j & j.wrapping_neg();
        }
        self.tree.push(sum);
    }

    fn add(&mut self, idx: usize, delta: i64) {
        let mut i = idx + 1;
        while i <= self.tree.len() {
            self.tree[i - 1] += delta;
            i += i & i.wrapping_neg();
        }
    }

    fn total(&self) -> u64 {
        let mut i = self.tree.len();
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i - 1];
            i -= i & i.wrapping_neg();
        }
        sum as u64
    }

    /// Index of the node holding the `rank`-th unit (0-based); `rank < total()`.
    fn find(&self, rank: u64) -> usize {
        let mut pos = 0;
        let mut rest = rank as i64;
        let mut step = self.tree.len().next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next <= self.tree.len() && self.tree[next - 1] <= rest {
                pos = next;
                rest -= self.tree[next - 1];
            }
            step /= 2;
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::Fenwick;

    #[test]
    fn fenwick_finds_the_kth_marked_node() {
        let mut f = Fenwick::default();
        let marks = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1];
        for _ in marks {
            f.push(0);
        }
        for (i, &m) in marks.iter().enumerate() {
            f.add(i, m);
        }
        f.push(1); // appended after the others, already marked
        let marked: Vec<usize> = (0..=marks.len()).filter(|&i| i == marks.len() || marks[i] == 1).collect();
        assert_eq!(f.total(), marked.len() as u64);
        for (rank, &idx) in marked.iter().enumerate() {
            assert_eq!(f.find(rank as u64), idx);
        }
        f.add(2, -1);
        assert_eq!(f.find(1), 3);
        assert_eq!(f.total(), marked.len() as u64 - 1);
    }
}
