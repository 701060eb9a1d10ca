//! The discrete-event engine: a virtual clock, queues of events, modelled links
//! (per-pair one-way delay, per-node upload capacity as a serial uplink, loss), NAT,
//! churn — and the real [`Peer`] state machines.
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
//! - When two nodes dial each other at once, the dial of the lower-numbered one wins
//!   (the other fails as a duplicate, as a real peer would close it).
//! - Download capacity is not limited.
//!
//! Parallel, and still deterministic: nodes are split into [`SHARDS`] shards (node `i`
//! in shard `i % SHARDS`), each with its own event queue, random stream and connection
//! tables. Every event between two nodes takes at least the lookahead (the smallest
//! link delay, and ingest's delay to the seeds), so the shards run a window of that
//! length each on its own thread, and at the end of a window the events one shard
//! made for the other are handed over in a fixed order. What is shared between nodes —
//! the tracker's list of reachable peers, who joins, who leaves and when, the pieces —
//! is decided at window boundaries, in one place. The figures depend on the scenario
//! alone, not on the number of cores or on thread timing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, mpsc};

use httpkit::guard::{AddrGuard, GuardConfig};

use swarm::peer::{Candidate, Event, Micros, NodeId, Peer, PeerConfig, PeerStats, Reject, Transmit};
use swarm::piece::{ChannelKeypair, Piece, PieceFlags, filler_payload};
use swarm::rng::Rng;
use swarm::wire::{Message, PeerId, Role};

use crate::attacker::Attacker;
use crate::scenario::{Attack, Scenario};
use crate::verify::KnownPieces;

const MS: Micros = 1_000;
const CONNECT_FAIL_AFTER: Micros = 1_000 * MS;
/// How often seeds announce: the tracker's default seed interval.
const SEED_ANNOUNCE_EVERY: Micros = 15_000 * MS;
/// `SIM_TRACE=tree`: every node's `Subscribe` and `SubscribeReply`.
const TRACE_TREE: u32 = u32::MAX;
/// `Node::accepted_at` of a piece not (yet) accepted.
pub(crate) const NOT_YET: u32 = u32::MAX;
/// Shards a run is split into (two cores here; the figures do not depend on the cores).
const SHARDS: u32 = 2;
/// Events per batch in [`Shard::warm_ahead`].
const WARM: usize = 8;

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

/// One side of a connection, as the node holding it sees it.
#[derive(Debug, Clone, Copy)]
struct Link {
    peer: u32,
    /// Set by the accepting side; tells this connection from earlier ones of the pair.
    epoch: u32,
    /// `false`: our dial is on its way.
    open: bool,
    /// Dialled by the peer: counted in our guard while open.
    inbound: bool,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    agent: Agent,
    pub(crate) alive: bool,
    pub(crate) reachable: bool,
    pub(crate) upload_bps: u64,
    /// An `UplinkFree` wake-up is scheduled.
    uplink_pending: bool,
    /// The uplink sends until then.
    busy_until: Micros,
    last_delivery: Micros,
    timer_at: Micros,
    pub(crate) joined_at: Micros,
    /// The tracker's last answer to it, and whether a held-back one is scheduled
    /// (`announce_gap_ms`).
    answered_at: Option<Micros>,
    announce_pending: bool,
    pub(crate) left_at: Option<Micros>,
    /// First verified arrival of each seq, in ms rounded up ([`NOT_YET`] before).
    pub(crate) accepted_at: Vec<u32>,
    /// Its connections (open, or dialled and not yet answered).
    links: Vec<Link>,
    /// (Honest nodes) who may connect: the shell's per-address caps and bans.
    guard: Option<AddrGuard>,
    pub(crate) started_at: Option<Micros>,
    pub(crate) bytes_up_window: u64,
    pub(crate) bytes_down_window: u64,
    /// (duplicate bytes, useful bytes) at window start and end.
    pub(crate) dup_snapshot: [(u64, u64); 2],
}

impl Node {
    /// A connection is gone: an inbound one no longer counts against its address.
    fn release(&mut self, sh: &Shared, link: Link) {
        if link.open
            && link.inbound
            && let Some(guard) = &mut self.guard
        {
            guard.release(sh.addrs[link.peer as usize]);
        }
    }

    fn link_pos(&self, peer: u32) -> Option<usize> {
        self.links.iter().position(|l| l.peer == peer)
    }

    /// The epoch of our open connection with `peer`.
    fn open_epoch(&self, peer: u32) -> Option<u32> {
        self.links.iter().find(|l| l.peer == peer && l.open).map(|l| l.epoch)
    }
}

/// What happens at one node.
#[derive(Debug)]
enum Ev {
    Origin {
        seed: u32,
        seq: u64,
    },
    /// An attacker hears of a new piece as it is made.
    NewPiece {
        node: u32,
        seq: u64,
    },
    Deliver {
        to: u32,
        from: u32,
        epoch: u32,
        msg: Message,
    },
    UplinkFree {
        node: u32,
    },
    Timer {
        node: u32,
    },
    Join {
        node: u32,
    },
    Leave {
        node: u32,
    },
    /// The tracker answers a viewer's want of peers held back by `announce_gap_ms`.
    Announce {
        node: u32,
    },
    ConnectArrive {
        from: u32,
        to: u32,
    },
    ConnectDone {
        from: u32,
        to: u32,
        epoch: u32,
    },
    ConnectFailed {
        from: u32,
        to: u32,
    },
    Closed {
        node: u32,
        peer: u32,
        epoch: u32,
    },
    /// A seed hears the audience from the tracker.
    Audience {
        seed: u32,
        viewers: u32,
        seeds: u32,
    },
    /// The measurement window starts (`true`) or ends, for every node of a shard.
    Window {
        start: bool,
    },
}

impl Ev {
    /// The node it happens at (`None`: the whole shard it was queued on).
    fn node(&self) -> Option<u32> {
        Some(match *self {
            Ev::Origin { seed, .. } | Ev::Audience { seed, .. } => seed,
            Ev::NewPiece { node, .. }
            | Ev::UplinkFree { node }
            | Ev::Timer { node }
            | Ev::Join { node }
            | Ev::Leave { node }
            | Ev::Announce { node }
            | Ev::Closed { node, .. } => node,
            Ev::Deliver { to, .. } | Ev::ConnectArrive { to, .. } => to,
            Ev::ConnectDone { from, .. } | Ev::ConnectFailed { from, .. } => from,
            Ev::Window { .. } => return None,
        })
    }
}

/// What happens at window boundaries, decided for the whole swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Global {
    Join(u32),
    Churn,
    /// A seed dies.
    SeedDies(u32),
    /// The seeds announce (and hear the audience).
    SeedAnnounce,
    WindowStart,
    WindowEnd,
}

/// Events by (time, insertion order). Keys are small (the events themselves, some
/// carrying a message, stay put in a slab) and sit in a calendar of 1 ms buckets: the
/// bucket being run is sorted once when it comes up (so the events after the next one
/// are known, and [`Shard::run_until`] touches their memory ahead of time), later
/// buckets are plain vectors, and events past the calendar's horizon wait in a heap of
/// their own. At 100,000 peers one heap of millions of keys cost a cache miss per level
/// on every pop.
struct EventQueue {
    /// Keys of bucket `now_bucket`, sorted latest first (the next is last).
    current: Vec<Key>,
    /// Keys for bucket `now_bucket` or earlier pushed after it was sorted.
    late: BinaryHeap<Reverse<Key>>,
    now_bucket: u64,
    /// Bucket `b` for `now_bucket < b < now_bucket + BUCKETS` is `ring[b % BUCKETS]`.
    ring: Vec<Vec<Key>>,
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
            current: Vec::new(),
            late: BinaryHeap::new(),
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
            self.late.push(Reverse(key));
        } else if bucket < self.now_bucket + BUCKETS {
            self.ring[(bucket % BUCKETS) as usize].push(key);
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(key));
        }
    }

    /// The earliest pending key of the running bucket.
    fn next_key(&self) -> Option<Key> {
        match (self.current.last(), self.late.peek()) {
            (Some(&a), Some(&Reverse(b))) => Some(a.min(b)),
            (Some(&a), None) => Some(a),
            (None, Some(&Reverse(b))) => Some(b),
            (None, None) => None,
        }
    }

    /// The earliest event before `limit`, if any.
    fn pop_before(&mut self, limit: Micros) -> Option<(Micros, Ev)> {
        let (at, _, slot) = loop {
            if let Some(key) = self.next_key() {
                if key.0 >= limit {
                    return None;
                }
                if self.current.last() == Some(&key) {
                    self.current.pop();
                } else {
                    self.late.pop();
                }
                break key;
            }
            if (self.now_bucket + 1) * BUCKET >= limit {
                return None;
            }
            if self.in_ring == 0 {
                // Nothing within the horizon: jump to the earliest far event.
                let Reverse(next) = self.far.peek()?;
                self.now_bucket = self.now_bucket.max(next.0 / BUCKET - 1);
            }
            self.now_bucket += 1;
            let bucket = &mut self.ring[(self.now_bucket % BUCKETS) as usize];
            self.in_ring -= bucket.len();
            // Reuse the emptied bucket's allocation for the next one.
            std::mem::swap(&mut self.current, bucket);
            self.current.sort_unstable_by(|a, b| b.cmp(a));
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

    /// The `i`-th of the events still to come in the running bucket (0: the next), by
    /// its sorted keys — events pushed into it since it was sorted are not counted, so
    /// this is a hint of what comes.
    fn ahead(&self, i: usize) -> Option<&Ev> {
        let slot = self.current.len().checked_sub(i + 1).map(|j| self.current[j].2)?;
        self.slab[slot as usize].as_ref()
    }
}

impl Node {
    pub(crate) fn peer_depths(&self) -> Option<Vec<u8>> {
        match &self.agent {
            Agent::Peer(p) => Some(p.depths()),
            Agent::Attacker(_) => None,
        }
    }

    pub(crate) fn guard_stats(&self) -> Option<httpkit::guard::GuardStats> {
        self.guard.as_ref().map(|g| g.stats)
    }

    pub(crate) fn peer_stats(&self) -> Option<&PeerStats> {
        match &self.agent {
            Agent::Peer(p) => Some(p.stats()),
            Agent::Attacker(_) => None,
        }
    }
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

/// What every shard reads during a window; changed only between windows.
struct Shared<'a> {
    sc: &'a Scenario,
    /// Every piece the source makes in the run, signed before it starts (a piece is
    /// handed to nodes only from its creation time on).
    pieces: Vec<Piece>,
    peer_ids: Vec<PeerId>,
    kinds: Vec<Kind>,
    /// Each node's address: honest nodes each on a /24 of their own; sybils share a
    /// few (see [`node_addr`]).
    addrs: Vec<IpAddr>,
    /// (joins at, leaves at) per node; `Micros::MAX`: not (yet) decided.
    life: Vec<(Micros, Micros)>,
    /// Alive nodes that accept connections (what the tracker hands out).
    reachable: Vec<u32>,
    seeds: Vec<u32>,
    /// Shards: 1 when a scenario has no lookahead (a zero delay).
    shards: u32,
}

impl Shared<'_> {
    fn alive(&self, node: u32, at: Micros) -> bool {
        let (joins, leaves) = self.life[node as usize];
        joins <= at && at < leaves
    }

    fn shard_of(&self, node: u32) -> usize {
        (node % self.shards) as usize
    }

    fn delay(&self, a: u32, b: u32) -> Micros {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let mut r = Rng::derive(self.sc.rng_seed ^ 0xde1a, (u64::from(lo) << 32) | u64::from(hi));
        r.range_inclusive(u64::from(self.sc.delay_min_ms) * MS, u64::from(self.sc.delay_max_ms) * MS)
    }

    /// Pieces made by `now` (the source makes piece `seq` at `seq * piece_ms`).
    fn made_by(&self, now: Micros) -> u64 {
        (now / (u64::from(self.sc.piece_ms) * MS) + 1).min(self.pieces.len() as u64)
    }
}

/// The nodes `i` with `i % shards == index`, and everything that happens at them.
struct Shard {
    index: u32,
    now: Micros,
    queue: EventQueue,
    rng: Rng,
    /// Node `i` is `nodes[i / shards]`.
    nodes: Vec<Node>,
    /// Events for other shards' nodes, handed over at the end of the window.
    outbox: Vec<(Micros, Ev)>,
    /// Events handed to this shard between windows (from the other shards, in shard
    /// order, then the window's swarm-wide ones): queued, in this order, by the
    /// shard itself when its next window starts, on its own thread.
    inbox: Vec<(Micros, Ev)>,
    next_epoch: u32,
    /// Bytes this shard's seeds sent, per simulated second.
    seed_egress: Vec<u64>,
    in_window: bool,
    forged_accepted: u64,
    rejected: u64,
    events: u64,
    trace: Option<u32>,
    /// `SIM_DEBUG` is set: print diagnostics (read once, not per event).
    debug: bool,
    msg_counts: std::collections::BTreeMap<&'static str, u64>,
}

impl Shard {
    fn node(&mut self, sh: &Shared, id: u32) -> &mut Node {
        &mut self.nodes[(id / sh.shards) as usize]
    }

    fn schedule(&mut self, sh: &Shared, at: Micros, ev: Ev) {
        match ev.node() {
            Some(n) if sh.shard_of(n) != self.index as usize => self.outbox.push((at, ev)),
            _ => self.queue.push(at, ev),
        }
    }

    /// Runs every event before `until`.
    fn run_until(&mut self, sh: &Shared, until: Micros) {
        for (at, ev) in self.inbox.drain(..) {
            self.queue.push(at, ev);
        }
        let mut warmed = 0u64;
        while let Some((at, ev)) = self.queue.pop_before(until) {
            self.now = at;
            self.events += 1;
            if self.events.is_multiple_of(WARM as u64) {
                warmed = warmed.wrapping_add(self.warm_ahead(sh));
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
            self.dispatch(sh, ev);
        }
        std::hint::black_box(warmed);
    }

    /// Reads a little of the memory the coming events need, a batch at a time, so that
    /// their cache misses overlap instead of each stalling its own event in turn (at
    /// 100,000 peers nearly every event misses on its slot, its node record, the
    /// node's connection table and its peer, each found only through the one before):
    /// the slots of the events `2·WARM` to `3·WARM` ahead, the node records of those
    /// `WARM` to `2·WARM` ahead (their slots read one batch ago), the connection tables
    /// and peers of the next `WARM`. Returns a sum of what it read, for the caller to
    /// keep the reads from being optimised away; what the events do does not depend on
    /// it. Measured: `hundred-k` cut to 18 s, 111.7 s → 90.8 s wall; the same figures.
    fn warm_ahead(&self, sh: &Shared) -> u64 {
        let at = |i: usize| {
            let id = self.queue.ahead(i)?.node()?;
            self.nodes.get((id / sh.shards) as usize)
        };
        let mut sum = 0u64;
        for i in 2 * WARM..3 * WARM {
            sum = sum.wrapping_add(self.queue.ahead(i).and_then(Ev::node).map_or(0, u64::from));
        }
        for i in WARM..2 * WARM {
            if let Some(n) = at(i) {
                let read = [u64::from(n.alive), n.links.len() as u64, n.timer_at, n.busy_until];
                sum = read.iter().fold(sum, |a, &b| a.wrapping_add(b));
            }
        }
        for i in 0..WARM {
            if let Some(n) = at(i) {
                sum = sum.wrapping_add(n.links.first().map_or(0, |l| u64::from(l.epoch)));
                if let Agent::Peer(p) = &n.agent {
                    sum = sum.wrapping_add(p.newest().unwrap_or(0));
                }
            }
        }
        sum
    }

    fn dispatch(&mut self, sh: &Shared, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Origin { seed, seq } => {
                let piece = sh.pieces[seq as usize].clone();
                let n = self.node(sh, seed);
                if n.alive
                    && let Agent::Peer(p) = &mut n.agent
                    && p.handle_origin_piece(now, piece).is_err()
                {
                    self.rejected += 1;
                }
                self.drive(sh, seed);
            }
            Ev::NewPiece { node, seq } => {
                let n = self.node(sh, node);
                if n.alive
                    && let Agent::Attacker(a) = &mut n.agent
                {
                    let lookup = |q: u64| if q <= seq { sh.pieces.get(q as usize).cloned() } else { None };
                    a.handle_new_piece(&sh.pieces[seq as usize], &lookup);
                    self.drive(sh, node);
                }
            }
            Ev::Deliver { to, from, epoch, msg } => {
                let n = self.node(sh, to);
                if !n.alive || n.open_epoch(from) != Some(epoch) {
                    return;
                }
                let tree = self.trace == Some(TRACE_TREE)
                    && matches!(msg, Message::Subscribe { .. } | Message::SubscribeReply { .. });
                if tree || self.trace == Some(to) || self.trace == Some(from) {
                    let desc = match &msg {
                        Message::Piece(p) => format!("piece {} flags {:?}", p.seq(), p.flags()),
                        Message::Status(st) => {
                            format!("status seg {:?} free {} depth {:?}", st.segment_start, st.free_slots, st.depth)
                        }
                        other => format!("{other:?}").chars().take(120).collect(),
                    };
                    eprintln!("{:>8.3} {from}->{to} {desc}", now as f64 / 1e6);
                }
                let size = msg.encoded_len() as u64;
                let in_window = self.in_window;
                let node = self.node(sh, to);
                if in_window && node.kind == Kind::Viewer {
                    node.bytes_down_window += size;
                }
                match &mut node.agent {
                    Agent::Peer(p) => p.handle_message(now, NodeId(u64::from(from)), msg),
                    Agent::Attacker(a) => {
                        let made = sh.made_by(now);
                        let lookup = |seq: u64| if seq < made { sh.pieces.get(seq as usize).cloned() } else { None };
                        a.handle_message(NodeId(u64::from(from)), msg, &lookup);
                    }
                }
                self.drive(sh, to);
            }
            Ev::UplinkFree { node } => {
                self.node(sh, node).uplink_pending = false;
                self.drive(sh, node);
            }
            Ev::Timer { node } => {
                let n = self.node(sh, node);
                if !n.alive || n.timer_at > now {
                    return;
                }
                n.timer_at = Micros::MAX;
                if let Agent::Peer(p) = &mut n.agent {
                    p.handle_timeout(now);
                }
                self.drive(sh, node);
            }
            Ev::Audience { seed, viewers, seeds } => {
                if let Agent::Peer(p) = &mut self.node(sh, seed).agent {
                    p.handle_audience(now, viewers, seeds);
                }
                self.drive(sh, seed);
            }
            Ev::Join { node } => self.join(sh, node),
            Ev::Leave { node } => self.leave(sh, node),
            Ev::Announce { node } => {
                let n = self.node(sh, node);
                n.announce_pending = false;
                if n.alive {
                    n.answered_at = Some(now);
                    self.give_candidates(sh, node);
                    self.drive(sh, node);
                }
            }
            Ev::ConnectArrive { from, to } => {
                let target = self.node(sh, to);
                if !target.alive || !target.reachable || !sh.alive(from, now) {
                    let wait = if target.reachable { sh.delay(from, to) } else { CONNECT_FAIL_AFTER };
                    self.schedule(sh, now + wait, Ev::ConnectFailed { from, to });
                    return;
                }
                // One connection per pair. Both dialled at once: the lower-numbered
                // node's dial wins, on both sides.
                let duplicate = match target.link_pos(from) {
                    Some(i) => target.links[i].open || to < from,
                    None => false,
                };
                if duplicate {
                    self.schedule(sh, now + sh.delay(from, to), Ev::ConnectFailed { from, to });
                    return;
                }
                // Over a cap for its address, or banned: closed as soon as accepted.
                let addr = sh.addrs[from as usize];
                let refused = self.node(sh, to).guard.as_mut().is_some_and(|g| g.admit(addr, now).is_err());
                if refused {
                    self.schedule(sh, now + sh.delay(from, to), Ev::ConnectFailed { from, to });
                    return;
                }
                self.next_epoch += 1;
                let epoch = self.next_epoch * sh.shards + self.index;
                let target = self.node(sh, to);
                let link = Link { peer: from, epoch, open: true, inbound: true };
                match target.link_pos(from) {
                    Some(i) => target.links[i] = link,
                    None => target.links.push(link),
                }
                self.connected(sh, to, from, false);
                self.schedule(sh, now + sh.delay(from, to), Ev::ConnectDone { from, to, epoch });
            }
            Ev::ConnectDone { from, to, epoch } => {
                let n = self.node(sh, from);
                // Gone, or already connected the other way: the answer is a reset.
                if !n.alive || n.open_epoch(to).is_some() {
                    self.schedule(sh, now + sh.delay(from, to), Ev::Closed { node: to, peer: from, epoch });
                    return;
                }
                let link = Link { peer: to, epoch, open: true, inbound: false };
                match n.link_pos(to) {
                    Some(i) => n.links[i] = link,
                    None => n.links.push(link),
                }
                self.connected(sh, from, to, true);
            }
            Ev::ConnectFailed { from, to } => {
                let n = self.node(sh, from);
                if let Some(i) = n.link_pos(to)
                    && !n.links[i].open
                {
                    n.links.swap_remove(i);
                }
                self.connect_failed(sh, from, to);
            }
            Ev::Closed { node, peer, epoch } => {
                let n = self.node(sh, node);
                let Some(i) = n.link_pos(peer) else { return };
                if !n.links[i].open || n.links[i].epoch != epoch {
                    return;
                }
                let link = n.links.swap_remove(i);
                n.release(sh, link);
                self.disconnected(sh, node, peer);
            }
            Ev::Window { start } => {
                self.in_window = start;
                let which = usize::from(!start);
                for n in &mut self.nodes {
                    if let Agent::Peer(p) = &n.agent {
                        n.dup_snapshot[which] = (p.stats().duplicate_bytes, p.stats().piece_bytes_accepted);
                    }
                }
            }
        }
    }

    fn join(&mut self, sh: &Shared, node: u32) {
        let now = self.now;
        let n = self.node(sh, node);
        n.alive = true;
        n.joined_at = now;
        if let Agent::Attacker(_) = n.agent {
            self.give_candidates(sh, node);
        }
        self.drive(sh, node);
    }

    /// A viewer leaves without a word (churn): its neighbours learn of the loss one
    /// delay later.
    fn leave(&mut self, sh: &Shared, node: u32) {
        let now = self.now;
        let n = self.node(sh, node);
        n.alive = false;
        n.left_at = Some(now);
        for l in std::mem::take(&mut n.links) {
            if l.open {
                self.schedule(
                    sh,
                    now + sh.delay(node, l.peer),
                    Ev::Closed { node: l.peer, peer: node, epoch: l.epoch },
                );
            }
        }
    }

    fn give_candidates(&mut self, sh: &Shared, node: u32) {
        // What a tracker answers: a random sample of reachable peers, with their ids.
        let want = 3 * sh.sc.viewer_neighbours as usize;
        let mut picked: Vec<Candidate> = Vec::with_capacity(want);
        // Two seeds in every answer, as the tracker's peer list mixes them in.
        let seeds: Vec<u32> = sh.seeds.iter().copied().filter(|&s| sh.alive(s, self.now)).collect();
        for _ in 0..2.min(seeds.len()) {
            let c = seeds[self.rng.below(seeds.len() as u64) as usize];
            let cand = Candidate { node: NodeId(u64::from(c)), peer_id: sh.peer_ids[c as usize], seed: true };
            if !picked.contains(&cand) {
                picked.push(cand);
            }
        }
        if !sh.reachable.is_empty() {
            for _ in 0..want * 2 {
                let c = sh.reachable[self.rng.below(sh.reachable.len() as u64) as usize];
                let seed = sh.kinds[c as usize] == Kind::Seed;
                let cand = Candidate { node: NodeId(u64::from(c)), peer_id: sh.peer_ids[c as usize], seed };
                if c != node && !picked.contains(&cand) {
                    picked.push(cand);
                }
                if picked.len() == want {
                    break;
                }
            }
        }
        let now = self.now;
        match &mut self.node(sh, node).agent {
            Agent::Peer(p) => p.handle_candidates(now, &picked),
            Agent::Attacker(a) => {
                // Attackers connect to the viewers they are given, up to a dozen, and
                // (those that sit on slots) to the seeds as well.
                let room = 12usize.saturating_sub(a.n_neighbours());
                let seeds_too = a.targets_seeds();
                let targets: Vec<u32> = picked
                    .iter()
                    .map(|c| c.node.0 as u32)
                    .filter(|&c| {
                        let kind = sh.kinds[c as usize];
                        (kind == Kind::Viewer || (seeds_too && kind == Kind::Seed))
                            && !a.is_neighbour(NodeId(u64::from(c)))
                    })
                    .take(room)
                    .collect();
                for to in targets {
                    self.schedule(sh, now + sh.delay(node, to), Ev::ConnectArrive { from: node, to });
                }
            }
        }
    }

    fn connected(&mut self, sh: &Shared, node: u32, peer: u32, outbound: bool) {
        let now = self.now;
        match &mut self.node(sh, node).agent {
            Agent::Peer(p) => {
                p.handle_connected(now, NodeId(u64::from(peer)), outbound);
                if let Some(network) = httpkit::guard::network(sh.addrs[peer as usize]) {
                    p.handle_network(NodeId(u64::from(peer)), network);
                }
            }
            Agent::Attacker(a) => a.handle_connected(NodeId(u64::from(peer)), sh.kinds[peer as usize] == Kind::Seed),
        }
        self.drive(sh, node);
    }

    fn connect_failed(&mut self, sh: &Shared, node: u32, peer: u32) {
        let now = self.now;
        match &mut self.node(sh, node).agent {
            Agent::Peer(p) => p.handle_connect_failed(now, NodeId(u64::from(peer))),
            Agent::Attacker(_) => {}
        }
        self.drive(sh, node);
    }

    fn disconnected(&mut self, sh: &Shared, node: u32, peer: u32) {
        let now = self.now;
        let n = self.node(sh, node);
        if !n.alive {
            return;
        }
        match &mut n.agent {
            Agent::Peer(p) => p.handle_disconnected(now, NodeId(u64::from(peer))),
            Agent::Attacker(a) => {
                a.handle_disconnected(NodeId(u64::from(peer)));
                if a.n_neighbours() < 6 {
                    self.give_candidates(sh, node);
                }
            }
        }
        self.drive(sh, node);
    }

    /// Lets a node act: handle its events, start a transmission if its uplink is
    /// free, and arm its timer.
    fn drive(&mut self, sh: &Shared, node: u32) {
        if !self.node(sh, node).alive {
            return;
        }
        loop {
            self.drain_events(sh, node);
            let now = self.now;
            let n = self.node(sh, node);
            if n.uplink_pending || !n.alive {
                break;
            }
            // Still sending: wake up when the uplink frees, if there is more to send.
            if now < n.busy_until {
                let more = match &n.agent {
                    Agent::Peer(p) => p.wants_to_transmit(),
                    Agent::Attacker(a) => a.wants_to_transmit(),
                };
                if more {
                    n.uplink_pending = true;
                    let at = n.busy_until;
                    self.queue.push(at, Ev::UplinkFree { node });
                }
                break;
            }
            // Small messages go out back to back in one batch, which ends after the
            // first piece: the uplink is modelled the same, with one wake-up per batch.
            let mut end = now;
            for _ in 0..64 {
                let t = match &mut self.node(sh, node).agent {
                    Agent::Peer(p) => p.poll_transmit(now),
                    Agent::Attacker(a) => a.poll_transmit(),
                };
                let Some(t) = t else { break };
                let piece = matches!(t.msg, Message::Piece(_));
                end = self.transmit(sh, node, t, end);
                if piece {
                    break;
                }
            }
            if end == now {
                break;
            }
            self.node(sh, node).busy_until = end;
        }
        let now = self.now;
        let n = self.node(sh, node);
        if let Agent::Peer(p) = &n.agent
            && let Some(at) = p.poll_timeout()
            && at < n.timer_at
        {
            n.timer_at = at;
            self.queue.push(at.max(now), Ev::Timer { node });
        }
    }

    /// Sends `t` on the uplink of `node`, starting at `start`; returns when the uplink
    /// has sent it.
    fn transmit(&mut self, sh: &Shared, node: u32, t: Transmit, start: Micros) -> Micros {
        let to = t.to.0 as u32;
        let Some(epoch) = self.node(sh, node).open_epoch(to) else { return start };
        let size = t.msg.encoded_len() as u64;
        if self.trace.is_some() {
            *self.msg_counts.entry(t.msg.name()).or_insert(0) += 1;
        }
        let (now, in_window) = (self.now, self.in_window);
        let n = self.node(sh, node);
        let done = start + (size * 8 * 1_000_000).div_ceil(n.upload_bps);
        if n.kind == Kind::Seed {
            if in_window {
                n.bytes_up_window += size;
            }
            let sec = (now / 1_000_000) as usize;
            if self.seed_egress.len() <= sec {
                self.seed_egress.resize(sec + 1, 0);
            }
            self.seed_egress[sec] += size;
        }
        let reliable = matches!(
            t.msg,
            Message::Hello(_) | Message::Goodbye { .. } | Message::Subscribe { .. } | Message::SubscribeReply { .. }
        );
        if !reliable && self.rng.chance(sh.sc.loss) {
            return done;
        }
        let at = done + sh.delay(node, to);
        self.node(sh, node).last_delivery = at;
        self.schedule(sh, at, Ev::Deliver { to, from: node, epoch, msg: t.msg });
        done
    }

    fn drain_events(&mut self, sh: &Shared, node: u32) {
        loop {
            let ev = match &mut self.node(sh, node).agent {
                Agent::Peer(p) => p.poll_event(),
                Agent::Attacker(_) => None,
            };
            let Some(ev) = ev else { return };
            let now = self.now;
            match ev {
                Event::Connect(to) => {
                    let to = to.0 as u32;
                    let n = self.node(sh, node);
                    if n.link_pos(to).is_none() {
                        n.links.push(Link { peer: to, epoch: 0, open: false, inbound: false });
                    }
                    self.schedule(sh, now + sh.delay(node, to), Ev::ConnectArrive { from: node, to });
                }
                Event::Disconnect(peer, _) => {
                    let peer = peer.0 as u32;
                    let n = self.node(sh, node);
                    let Some(i) = n.link_pos(peer) else { continue };
                    let link = n.links.swap_remove(i);
                    n.release(sh, link);
                    if link.open {
                        // The peer learns of the close after the last message we sent it.
                        let at = (now + sh.delay(node, peer)).max(n.last_delivery) + 1;
                        self.schedule(sh, at, Ev::Closed { node: peer, peer: node, epoch: link.epoch });
                    }
                }
                Event::WantPeers => {
                    // As the viewer's announce loop: answered at once unless the last
                    // answer is less than `announce_gap_ms` old.
                    let gap = u64::from(sh.sc.announce_gap_ms) * MS;
                    let n = self.node(sh, node);
                    match n.answered_at {
                        Some(at) if now < at + gap => {
                            if !n.announce_pending {
                                n.announce_pending = true;
                                self.schedule(sh, at + gap, Ev::Announce { node });
                            }
                        }
                        _ => {
                            n.answered_at = Some(now);
                            self.give_candidates(sh, node);
                        }
                    }
                }
                Event::Accepted { piece, from } => self.record_accept(sh, node, &piece, from),
                Event::PlaybackStarted { .. } => {
                    self.node(sh, node).started_at.get_or_insert(now);
                }
                Event::Rejected { from, reason } => {
                    if self.debug {
                        eprintln!("rejected: {reason:?}");
                    }
                    self.rejected += 1;
                    // A forger or a flooder is kept out by address, as the shell does.
                    if matches!(reason, Reject::Forged | Reject::Flooding)
                        && let Some(guard) = &mut self.node(sh, node).guard
                    {
                        guard.ban(sh.addrs[from.0 as usize], now);
                    }
                }
                _ => {}
            }
        }
    }

    fn record_accept(&mut self, sh: &Shared, node: u32, piece: &Piece, from: Option<NodeId>) {
        let seq = piece.seq() as usize;
        let genuine = sh.pieces.get(seq).is_some_and(|g| g.same_bytes(piece));
        if !genuine {
            self.forged_accepted += 1;
        }
        let now = self.now;
        if self.debug && self.in_window {
            self.count_arrival(sh, node, piece, from);
        }
        let n = self.node(sh, node);
        if n.accepted_at.len() <= seq {
            n.accepted_at.resize(seq + 1, NOT_YET);
        }
        if n.accepted_at[seq] == NOT_YET {
            n.accepted_at[seq] = u32::try_from(now.div_ceil(MS)).unwrap_or(NOT_YET - 1);
        }
    }
}

impl Shard {
    /// `SIM_DEBUG`: how a viewer's piece arrived (from its substream's push parent, by
    /// request while it had one, by request as an orphan), and which of those came past
    /// the playout deadline, by the viewer's depth in that substream's tree.
    fn count_arrival(&mut self, sh: &Shared, node: u32, piece: &Piece, from: Option<NodeId>) {
        const DEPTHS: [&str; 9] = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8+"];
        let now = self.now;
        let late = now > piece.timestamp_us() + u64::from(sh.sc.playout_delay_ms) * MS;
        let n = self.node(sh, node);
        let Agent::Peer(p) = &n.agent else { return };
        // Those present since the window opened: the population of continuity.
        if n.kind != Kind::Viewer || n.joined_at > u64::from(sh.sc.warmup_s) * 1_000 * MS {
            return;
        }
        let s = (piece.seq() % u64::from(sh.sc.n_substreams)) as usize;
        let parent = p.debug_parent(s);
        let depth = p.depths().get(s).copied().unwrap_or(u8::MAX);
        let how = match (parent, from) {
            (Some(p), Some(f)) if p == f => "push",
            (Some(_), _) => "repair",
            (None, _) => "orphan",
        };
        let key: &'static str = match (how, late) {
            ("push", false) => "arrived.push",
            ("push", true) => "late.push",
            ("repair", false) => "arrived.repair",
            ("repair", true) => "late.repair",
            (_, false) => "arrived.orphan",
            (_, true) => "late.orphan",
        };
        *self.msg_counts.entry(key).or_insert(0) += 1;
        if how == "orphan" {
            const BUCKETS: [&str; 8] = ["o<300", "o<600", "o<900", "o<1200", "o<1500", "o<1800", "o<2400", "o>=2400"];
            let ms = now.saturating_sub(piece.timestamp_us()) / MS;
            let b = match ms {
                0..300 => 0,
                300..600 => 1,
                600..900 => 2,
                900..1200 => 3,
                1200..1500 => 4,
                1500..1800 => 5,
                1800..2400 => 6,
                _ => 7,
            };
            *self.msg_counts.entry(BUCKETS[b]).or_insert(0) += 1;
        }
        if late && how == "push" {
            let d = DEPTHS[usize::from(depth.min(8))];
            *self.msg_counts.entry(d).or_insert(0) += 1;
        }
    }
}

/// A node's address. Honest nodes and most attackers each have a /24 of their own
/// (a home line); sybils are many identities on 8 hosts in 2 /24s.
fn node_addr(idx: u32, kind: Kind, attack: Attack) -> IpAddr {
    if kind == Kind::Attacker && attack == Attack::Sybil {
        let host = idx % 8;
        let net: u32 = if host < 4 { 0xc633_6400 } else { 0xcb00_7100 }; // 198.51.100/24, 203.0.113/24
        return IpAddr::V4(Ipv4Addr::from(net | (host + 1)));
    }
    // 0.0.1.1, 0.0.2.1, …: 16 million /24s, one per node.
    IpAddr::V4(Ipv4Addr::from(((idx + 1) << 8) | 1))
}

/// Runs the shards window by window and decides what is shared between them.
pub(crate) struct Engine<'a> {
    sc: &'a Scenario,
    rng: Rng,
    key: ChannelKeypair,
    known: Arc<KnownPieces>,
    /// Held by the coordinator between windows, lent to the shards during one.
    shared: Arc<Shared<'a>>,
    shards: Vec<Shard>,
    /// Swarm-wide events by (time, insertion order).
    global: BinaryHeap<Reverse<(Micros, u64, Global)>>,
    global_order: u64,
    /// Position of each node in `shared.reachable` (`u32::MAX`: not there).
    reachable_pos: Vec<u32>,
    /// Alive viewers, for picking who leaves by rank in node order.
    alive_viewers: Fenwick,
    attackers: Vec<u32>,
    /// Length of a window: no event between two nodes takes less.
    lookahead: Micros,
    progress: Option<&'a mut dyn FnMut(Micros, u64)>,
}

impl<'a> Engine<'a> {
    pub(crate) fn new(sc: &'a Scenario, progress: Option<&'a mut dyn FnMut(Micros, u64)>) -> Self {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&sc.rng_seed.to_be_bytes());
        secret[8] = 0xc4;
        let key = ChannelKeypair::from_secret_bytes(&secret);
        // The source's pieces, as it would sign them at `seq * piece_ms`.
        let pieces_per_gop = u64::from(sc.gop_ms / sc.piece_ms).max(1);
        let piece_us = u64::from(sc.piece_ms) * MS;
        let pieces: Vec<Piece> = (0..=sc.end_ms() * MS / piece_us)
            .map(|seq| {
                let flags =
                    if seq.is_multiple_of(pieces_per_gop) { PieceFlags::SEGMENT_START } else { PieceFlags::NONE };
                key.sign_piece(seq, seq * piece_us, flags, filler_payload(sc.packets_per_piece(), seq))
                    .expect("filler payloads are whole TS packets within the size limit")
            })
            .collect();
        let known =
            Arc::new(KnownPieces::new(key.id(), pieces.clone()).expect("the source signs with the channel's own key"));
        // Windows as long as the shortest hop between nodes; without one, one shard.
        let lookahead = u64::from(sc.delay_min_ms.min(sc.ingest_delay_ms)) * MS;
        let shards = if lookahead == 0 { 1 } else { SHARDS };
        let trace: Option<u32> =
            std::env::var("SIM_TRACE").ok().and_then(|v| if v == "tree" { Some(TRACE_TREE) } else { v.parse().ok() });
        let debug = std::env::var_os("SIM_DEBUG").is_some();
        Engine {
            sc,
            rng: Rng::derive(sc.rng_seed, 1),
            key,
            known,
            shared: Arc::new(Shared {
                sc,
                pieces,
                peer_ids: Vec::new(),
                kinds: Vec::new(),
                addrs: Vec::new(),
                life: Vec::new(),
                reachable: Vec::new(),
                seeds: Vec::new(),
                shards,
            }),
            shards: (0..shards)
                .map(|index| Shard {
                    index,
                    now: 0,
                    queue: EventQueue::default(),
                    rng: Rng::derive(sc.rng_seed, 2 + u64::from(index)),
                    nodes: Vec::new(),
                    outbox: Vec::new(),
                    inbox: Vec::new(),
                    next_epoch: 0,
                    seed_egress: Vec::new(),
                    in_window: false,
                    forged_accepted: 0,
                    rejected: 0,
                    events: 0,
                    trace,
                    debug,
                    msg_counts: Default::default(),
                })
                .collect(),
            global: BinaryHeap::new(),
            global_order: 0,
            reachable_pos: Vec::new(),
            alive_viewers: Fenwick::default(),
            attackers: Vec::new(),
            lookahead: if lookahead == 0 { 5 * MS } else { lookahead },
            progress,
        }
    }

    /// Runs the scenario; `threads`: the second shard on a thread of its own.
    pub(crate) fn run(mut self, threads: bool) -> Outcome {
        let sc = self.sc;
        for _ in 0..sc.seeds {
            let n = self.add_node(Kind::Seed, true, u64::from(sc.seed_upload_kbps) * 1000, 0);
            self.at(0, Global::Join(n));
        }
        for _ in 0..sc.viewers {
            let n = self.new_viewer(0);
            let at = self.rng.below(u64::from(sc.join_spread_ms).max(1) * MS);
            self.at(at, Global::Join(n));
        }
        for _ in 0..sc.attackers {
            let n = self.add_node(Kind::Attacker, true, u64::from(sc.bitrate_kbps) * 10_000, 0);
            let at = self.rng.below(u64::from(sc.join_spread_ms).max(1) * MS);
            self.at(at, Global::Join(n));
        }
        if sc.seed_dies_at_ms > 0
            && let Some(&seed) = self.shared.seeds.last()
        {
            self.at(u64::from(sc.seed_dies_at_ms) * MS, Global::SeedDies(seed));
        }
        if sc.churn_per_min > 0.0 && sc.viewers > 0 {
            self.at(u64::from(sc.join_spread_ms) * MS, Global::Churn);
        }
        self.at(SEED_ANNOUNCE_EVERY, Global::SeedAnnounce);
        let warmup = u64::from(sc.warmup_s) * 1_000 * MS;
        self.at(warmup, Global::WindowStart);
        self.at(warmup + u64::from(sc.window_s) * 1_000 * MS, Global::WindowEnd);
        let end = sc.end_ms() * MS;
        let piece_us = u64::from(sc.piece_ms) * MS;
        let parallel = threads && self.shards.len() == 2;

        std::thread::scope(|scope| {
            // The second shard runs on a worker thread: each window it is handed the
            // shard and the shared state, and hands the shard back when done.
            let (to_worker, work) = mpsc::channel::<(Shard, Arc<Shared<'a>>, Micros)>();
            let (to_main, done) = mpsc::channel::<Shard>();
            if parallel {
                scope.spawn(move || {
                    while let Ok((mut shard, shared, until)) = recv_spinning(&work) {
                        shard.run_until(&shared, until);
                        drop(shared);
                        if to_main.send(shard).is_err() {
                            break;
                        }
                    }
                });
            }
            let mut from = 0;
            while from <= end {
                let until = (from + self.lookahead).min(end + 1);
                self.prepare_window(from, until, piece_us);
                let worker = if parallel { self.shards.pop() } else { None };
                if let Some(shard) = worker {
                    let lent = (shard, Arc::clone(&self.shared), until);
                    if to_worker.send(lent).is_err() {
                        unreachable!("the worker lives as long as the scope");
                    }
                }
                for s in &mut self.shards {
                    s.run_until(&self.shared, until);
                }
                if parallel {
                    let shard = recv_spinning(&done).expect("the worker hands every shard back");
                    self.shards.push(shard);
                }
                // Hand over what each shard made for the other. Two shards: all that
                // one made is for the other, so the buffers trade places (each inbox
                // was emptied when its window started). One shard makes none.
                if let [a, b] = &mut self.shards[..] {
                    debug_assert!(a.inbox.is_empty() && b.inbox.is_empty());
                    std::mem::swap(&mut a.outbox, &mut b.inbox);
                    std::mem::swap(&mut b.outbox, &mut a.inbox);
                }
                debug_assert!(self.shards.iter().all(|s| s.outbox.is_empty()), "more than two shards");
                debug_assert!(
                    self.shards.iter().all(|s| s.inbox.iter().all(|&(at, _)| at >= until)),
                    "an event between shards within the lookahead"
                );
                if let Some(p) = self.progress.as_mut() {
                    p(until, self.shards.iter().map(|s| s.events).sum());
                }
                from = until;
            }
            drop(to_worker);
        });
        self.finish()
    }

    /// Swarm-wide events of the window `[from, until)`, and the source's pieces made
    /// in it: to the seeds after ingest's delay (at or after the window's end), to
    /// attackers at once.
    fn prepare_window(&mut self, from: Micros, until: Micros, piece_us: Micros) {
        while let Some(&Reverse((at, _, g))) = self.global.peek() {
            if at >= until {
                break;
            }
            self.global.pop();
            self.global_event(at, g);
        }
        let ingest_delay = u64::from(self.sc.ingest_delay_ms) * MS;
        for seq in from.div_ceil(piece_us)..until.div_ceil(piece_us) {
            let made = seq * piece_us;
            for i in 0..self.shared.seeds.len() {
                let seed = self.shared.seeds[i];
                self.queue_at(made + ingest_delay, Ev::Origin { seed, seq });
            }
            for i in 0..self.attackers.len() {
                let node = self.attackers[i];
                self.queue_at(made, Ev::NewPiece { node, seq });
            }
        }
    }

    /// The shared state, between windows (when no shard holds it).
    fn shared_mut(&mut self) -> &mut Shared<'a> {
        Arc::get_mut(&mut self.shared).expect("shards give the shared state back at the end of each window")
    }

    fn at(&mut self, at: Micros, g: Global) {
        self.global_order += 1;
        self.global.push(Reverse((at, self.global_order, g)));
    }

    /// Hands `ev` to the shard of the node it happens at (`Window`: to every shard),
    /// which queues it when its next window starts.
    fn queue_at(&mut self, at: Micros, ev: Ev) {
        match ev.node() {
            Some(n) => {
                let s = self.shared.shard_of(n);
                self.shards[s].inbox.push((at, ev));
            }
            None => {
                let Ev::Window { start } = ev else { unreachable!("only Window events have no node") };
                for s in &mut self.shards {
                    s.inbox.push((at, Ev::Window { start }));
                }
            }
        }
    }

    fn global_event(&mut self, at: Micros, g: Global) {
        match g {
            Global::Join(node) => self.join(at, node),
            Global::Churn => {
                // Leave one random viewer and join a new one; the gap to the next churn
                // event makes `churn_per_min * viewers` of these per minute.
                let alive = self.alive_viewers.total();
                if alive > 0 {
                    let rank = self.rng.below(alive);
                    let leaver = self.alive_viewers.find(rank) as u32;
                    self.alive_viewers.add(leaver as usize, -1);
                    self.shared_mut().life[leaver as usize].1 = at;
                    self.unlist(leaver);
                    self.queue_at(at, Ev::Leave { node: leaver });
                }
                let joiner = self.new_viewer(at);
                self.join(at, joiner);
                let per_min = self.sc.churn_per_min * f64::from(self.sc.viewers);
                let gap = (60_000_000.0 / per_min) as Micros;
                self.at(at + gap.max(1), Global::Churn);
            }
            Global::SeedDies(seed) => {
                self.shared_mut().life[seed as usize].1 = at;
                self.unlist(seed);
                self.queue_at(at, Ev::Leave { node: seed });
            }
            Global::SeedAnnounce => {
                // What the tracker counts: the viewers and attackers announced (both
                // announce as viewers), and the seeds.
                let viewers = self.alive_viewers.total() + self.attackers.len() as u64;
                let viewers = u32::try_from(viewers).unwrap_or(u32::MAX);
                let alive: Vec<u32> = self.shared.seeds.iter().copied().filter(|&s| self.shared.alive(s, at)).collect();
                for &seed in &alive {
                    self.queue_at(at, Ev::Audience { seed, viewers, seeds: alive.len() as u32 });
                }
                self.at(at + SEED_ANNOUNCE_EVERY, Global::SeedAnnounce);
            }
            Global::WindowStart => self.queue_at(at, Ev::Window { start: true }),
            Global::WindowEnd => self.queue_at(at, Ev::Window { start: false }),
        }
    }

    /// `node` joins at `at`; the tracker lists it from the start of the window (no node
    /// can reach it sooner than the window's end).
    fn join(&mut self, at: Micros, node: u32) {
        self.shared_mut().life[node as usize].0 = at;
        let kind = self.shared.kinds[node as usize];
        if kind == Kind::Viewer {
            self.alive_viewers.add(node as usize, 1);
        }
        let s = self.shared.shard_of(node);
        if self.shards[s].nodes[node as usize / self.shards.len()].reachable {
            self.reachable_pos[node as usize] = self.shared.reachable.len() as u32;
            self.shared_mut().reachable.push(node);
        }
        self.queue_at(at, Ev::Join { node });
    }

    /// The tracker stops listing `node`.
    fn unlist(&mut self, node: u32) {
        let pos = std::mem::replace(&mut self.reachable_pos[node as usize], u32::MAX);
        if pos != u32::MAX {
            self.shared_mut().reachable.swap_remove(pos as usize);
            if let Some(&moved) = self.shared.reachable.get(pos as usize) {
                self.reachable_pos[moved as usize] = pos;
            }
        }
    }

    fn add_node(&mut self, kind: Kind, reachable: bool, upload_bps: u64, now: Micros) -> u32 {
        let idx = self.shared.kinds.len() as u32;
        let sc = self.sc;
        let peer_id = PeerId(Rng::derive(sc.rng_seed, 0x1d00 + u64::from(idx)).next_u64());
        let agent = match kind {
            Kind::Attacker => {
                // Sybils collude: each names the next one's id (attackers are numbered
                // in a row) as the root of its branch, to vouch for it at the seeds.
                let first = sc.seeds + sc.viewers;
                let next = first + (idx - first + 1) % sc.attackers.max(1);
                let partner = PeerId(Rng::derive(sc.rng_seed, 0x1d00 + u64::from(next)).next_u64());
                Agent::Attacker(Box::new(Attacker::new(self.key.id(), peer_id, sc.n_substreams, sc.attack, partner)))
            }
            Kind::Seed | Kind::Viewer => {
                let role = if kind == Kind::Seed { Role::Seed } else { Role::Viewer };
                let mut cfg = match role {
                    Role::Seed => PeerConfig::seed(peer_id, self.key.id()),
                    Role::Viewer => PeerConfig::new(role, peer_id, self.key.id()),
                };
                cfg.reachable = reachable;
                cfg.upload_kbps = u32::try_from(upload_bps / 1000).unwrap_or(u32::MAX);
                cfg.stream_kbps = sc.bitrate_kbps;
                cfg.n_substreams = sc.n_substreams;
                cfg.playout_delay = u64::from(sc.playout_delay_ms) * MS;
                if kind == Kind::Seed {
                    cfg.max_child_slots = Some(sc.seed_child_slots);
                    cfg.seed_share_budget = sc.seed_share_budget;
                    cfg.max_neighbours = sc.seed_max_neighbours as usize;
                } else {
                    cfg.target_neighbours = sc.viewer_neighbours as usize;
                    cfg.push_share = sc.viewer_push_share;
                    let ms = |v: Option<u32>, default: u64| v.map_or(default, |v| u64::from(v) * MS);
                    cfg.repair_margin = ms(sc.viewer_repair_margin_ms, cfg.repair_margin);
                    cfg.hedge_margin = ms(sc.viewer_hedge_margin_ms, cfg.hedge_margin);
                    cfg.seed_repair_margin = ms(sc.viewer_seed_repair_margin_ms, cfg.seed_repair_margin);
                }
                let peer = Peer::with_verifier(cfg, now, self.known.clone())
                    .expect("scenario was validated, so the peer config is valid");
                Agent::Peer(Box::new(peer))
            }
        };
        match kind {
            Kind::Seed => self.shared_mut().seeds.push(idx),
            Kind::Attacker => self.attackers.push(idx),
            Kind::Viewer => {}
        }
        let shared = self.shared_mut();
        shared.peer_ids.push(peer_id);
        shared.kinds.push(kind);
        shared.addrs.push(node_addr(idx, kind, sc.attack));
        shared.life.push((Micros::MAX, Micros::MAX));
        self.reachable_pos.push(u32::MAX);
        self.alive_viewers.push(0);
        let s = self.shared.shard_of(idx);
        self.shards[s].nodes.push(Node {
            kind,
            agent,
            alive: false,
            reachable,
            upload_bps: upload_bps.max(1),
            uplink_pending: false,
            busy_until: 0,
            last_delivery: 0,
            timer_at: Micros::MAX,
            joined_at: 0,
            answered_at: None,
            announce_pending: false,
            left_at: None,
            accepted_at: Vec::new(),
            links: Vec::new(),
            guard: (kind != Kind::Attacker).then(|| AddrGuard::new(GuardConfig::default())),
            started_at: None,
            bytes_up_window: 0,
            bytes_down_window: 0,
            dup_snapshot: [(0, 0); 2],
        });
        idx
    }

    fn new_viewer(&mut self, now: Micros) -> u32 {
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
        self.add_node(Kind::Viewer, reachable, upload_bps, now)
    }

    /// Gathers the shards' nodes back in node order, and their counts.
    fn finish(mut self) -> Outcome {
        let pieces = std::mem::take(&mut self.shared_mut().pieces);
        let n_shards = self.shards.len();
        let mut seed_egress: Vec<u64> = Vec::new();
        let (mut forged_accepted, mut events, mut rejected) = (0, 0, 0);
        let mut msg_counts = std::collections::BTreeMap::new();
        let debug = self.shards.first().is_some_and(|s| s.debug);
        let mut per_shard = Vec::with_capacity(n_shards);
        for s in std::mem::take(&mut self.shards) {
            if seed_egress.len() < s.seed_egress.len() {
                seed_egress.resize(s.seed_egress.len(), 0);
            }
            for (total, b) in seed_egress.iter_mut().zip(&s.seed_egress) {
                *total += b;
            }
            forged_accepted += s.forged_accepted;
            events += s.events;
            rejected += s.rejected;
            for (k, v) in s.msg_counts {
                *msg_counts.entry(k).or_insert(0) += v;
            }
            per_shard.push(s.nodes.into_iter());
        }
        let total = self.shared.kinds.len();
        let nodes: Vec<Node> = (0..total)
            .map(|i| per_shard[i % n_shards].next().expect("every node sits in its shard, in node order"))
            .collect();
        let forged_sent = nodes
            .iter()
            .map(|n| match &n.agent {
                Agent::Attacker(a) => a.forged_sent,
                Agent::Peer(_) => 0,
            })
            .sum();
        if debug {
            print_debug(&nodes, &msg_counts, self.sc);
        }
        Outcome { nodes, pieces, seed_egress, forged_sent, forged_accepted, events, rejected }
    }
}

/// Receives, polling for a while before blocking: the two threads hand a shard to
/// each other every window (~20,000 times in `hundred-k`), and waking a blocked thread
/// takes tens of µs on a virtual machine. Between polls the thread yields, so that
/// where more threads than cores want to run (tests in parallel) they get the core.
fn recv_spinning<T>(rx: &mpsc::Receiver<T>) -> Result<T, mpsc::RecvError> {
    const SPIN: std::time::Duration = std::time::Duration::from_millis(2);
    let start = std::time::Instant::now();
    let mut spins = 0u32;
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvError),
            Err(mpsc::TryRecvError::Empty) => {
                spins += 1;
                if spins.is_multiple_of(64) && start.elapsed() >= SPIN {
                    return rx.recv();
                }
                std::thread::yield_now();
            }
        }
    }
}

/// `SIM_DEBUG`: parent coverage, message counts and the slowest startups.
fn print_debug(nodes: &[Node], msg_counts: &std::collections::BTreeMap<&'static str, u64>, sc: &Scenario) {
    let mut hist = std::collections::BTreeMap::new();
    for n in nodes {
        if let (Agent::Peer(p), true, Kind::Viewer) = (&n.agent, n.alive, n.kind) {
            for (has, fw, free, forwarder) in p.debug_branches() {
                *hist.entry((has, forwarder, fw.min(5), free.min(3), n.reachable)).or_insert(0) += 1;
            }
        }
    }
    let mut reasons = std::collections::BTreeMap::new();
    let end = sc.end_ms() * MS;
    for n in nodes {
        if let (Agent::Peer(p), true, Kind::Viewer) = (&n.agent, n.alive, n.kind) {
            for r in p.debug_orphan_reasons(end) {
                *reasons.entry(r).or_insert(0) += 1;
            }
        }
    }
    eprintln!("orphans' free fed forwarders, why not a parent: {reasons:?}");
    eprintln!("(has_parent, we_forward, forwarders, with_free_and_fed, reachable) -> count: {hist:?}");
    eprintln!("messages sent by kind: {msg_counts:?}");
    let mut slow: Vec<(u64, u64, bool, usize, usize)> = nodes
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
    // Each viewer's latest piece of the window after its start: how late, which seq,
    // and the node.
    let piece_ms = sc.piece_ms;
    let window = u64::from(sc.warmup_s) * 1000 / u64::from(piece_ms);
    let mut late: Vec<(u32, usize, usize)> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.kind == Kind::Viewer && n.started_at.is_some())
        .filter_map(|(i, n)| {
            let from = (n.started_at.unwrap_or(0) / 1000 / u64::from(piece_ms) + 1).max(window) as usize;
            n.accepted_at
                .iter()
                .enumerate()
                .skip(from)
                .filter(|&(_, &at)| at != NOT_YET)
                .map(|(seq, &at)| (at.saturating_sub(seq as u32 * piece_ms), seq, i))
                .max()
        })
        .collect();
    late.sort_unstable();
    eprintln!("latest pieces in the window (ms after made, seq, node): {:?}", &late[late.len().saturating_sub(15)..]);
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
    use super::{BUCKET, BUCKETS, Ev, EventQueue, Fenwick, Micros};
    use swarm::rng::Rng;

    /// Pushes at random times — into the running bucket, later ones, past the horizon —
    /// between pops: events come out by (time, push order), and `ahead` names the ones
    /// that follow in the running bucket.
    #[test]
    fn event_queue_pops_in_time_then_push_order() {
        let mut q = EventQueue::default();
        let mut rng = Rng::derive(7, 7);
        let mut model: Vec<(Micros, u32)> = Vec::new();
        let mut now: Micros = 0;
        let mut popped = Vec::new();
        let mut id = 0u32;
        let mut hints_checked = 0;
        for round in 0..2_000 {
            for _ in 0..rng.below(4) {
                let at = now
                    + match rng.below(4) {
                        0 => rng.below(BUCKET),
                        1 => rng.below(20 * BUCKET),
                        2 => rng.below(2 * BUCKETS * BUCKET),
                        _ => 0,
                    };
                q.push(at, Ev::Timer { node: id });
                model.push((at, id));
                id += 1;
            }
            let limit = now + rng.below(3 * BUCKET) + 1;
            loop {
                // With nothing pushed into the running bucket since it was sorted,
                // `ahead(0)` is exactly the next event.
                let hint = if q.late.is_empty() { q.ahead(0).and_then(Ev::node) } else { None };
                let Some((at, ev)) = q.pop_before(limit) else { break };
                let Ev::Timer { node } = ev else { panic!("only timers were pushed") };
                if let Some(h) = hint {
                    assert_eq!(h, node, "round {round}: ahead(0) named another event");
                    hints_checked += 1;
                }
                assert!(at >= now && at < limit, "round {round}: {at} outside [{now}, {limit})");
                now = at;
                popped.push((at, node));
            }
            now = now.max(limit - 1);
        }
        while let Some((at, Ev::Timer { node })) = q.pop_before(Micros::MAX) {
            popped.push((at, node));
        }
        model.sort();
        assert_eq!(popped, model);
        assert!(hints_checked > 100, "only {hints_checked} hints checked");
    }

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
