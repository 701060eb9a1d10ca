//! A hostile peer: speaks the protocol well enough to be chosen as a parent (it claims
//! to sit one hop from a seed — or to be one — with free slots, 1 ms latency, unbounded
//! upload and every piece), then does what its [`Attack`] says: sends forged and
//! tampered pieces, sends nothing, or sends genuine pieces too late. Withholders and
//! liars also go for the seeds' child slots (the top of every push tree): they subscribe
//! to everything on connecting to a seed and again whenever it says it has room, and
//! name themselves as their branch's root. Flooders claim nothing good: they take
//! every substream they are given, and send each neighbour a stream of junk (claims
//! of pieces that do not exist, requests for every new piece, statuses pointing the
//! start ahead) just below the message rate the shell drops a connection for. It is
//! not a [`swarm::peer::Peer`]: it is what a real peer must survive.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use swarm::peer::{NodeId, Transmit};
use swarm::piece::{ChannelId, ChannelKeypair, Piece};
use swarm::wire::{Hello, Message, PROTOCOL_VERSION, PeerId, Role, Status};

use crate::scenario::Attack;

/// How late a liar delivers, in pieces (1.2 s of 50 ms pieces).
const LIAR_LAG: u64 = 24;

/// How far ahead of the stream a flooder points a joiner's start (within what a
/// peer accepts as plausible, 200 pieces).
const FLOOD_AHEAD: u64 = 150;

#[derive(Debug)]
pub struct Attacker {
    channel: ChannelId,
    peer_id: PeerId,
    n_substreams: u8,
    /// The attacker's own key: it can sign, just not as the channel.
    own_key: ChannelKeypair,
    /// Neighbours and the substreams they subscribed to.
    neighbours: BTreeMap<NodeId, u64>,
    /// Seeds it is connected to, and the substreams they push to it.
    seeds: BTreeMap<NodeId, u64>,
    queue: VecDeque<Transmit>,
    newest: Option<u64>,
    n_forged: u64,
    /// Half the attackers also claim to be seeds.
    claims_seed: bool,
    attack: Attack,
    /// (Sybils) the colluder it names as its branch's root, to vouch for it.
    partner: PeerId,
    pub forged_sent: u64,
}

impl Attacker {
    pub fn new(channel: ChannelId, peer_id: PeerId, n_substreams: u8, attack: Attack, partner: PeerId) -> Self {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&peer_id.0.to_be_bytes());
        Attacker {
            channel,
            peer_id,
            n_substreams,
            own_key: ChannelKeypair::from_secret_bytes(&secret),
            neighbours: BTreeMap::new(),
            seeds: BTreeMap::new(),
            queue: VecDeque::new(),
            newest: None,
            n_forged: 0,
            claims_seed: peer_id.0.is_multiple_of(2),
            attack,
            partner,
            forged_sent: 0,
        }
    }

    pub fn n_neighbours(&self) -> usize {
        self.neighbours.len()
    }

    pub fn is_neighbour(&self, node: NodeId) -> bool {
        self.neighbours.contains_key(&node)
    }

    /// Whether it also dials seeds (to take their children's slots, or flood them).
    pub fn targets_seeds(&self) -> bool {
        self.attack != Attack::Forge
    }

    /// A connection is up; `seed`: to a seed, where it subscribes to everything.
    pub fn handle_connected(&mut self, node: NodeId, seed: bool) {
        self.neighbours.insert(node, 0);
        let flood = self.attack == Attack::Flood;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            channel: self.channel,
            peer_id: self.peer_id,
            role: if self.claims_seed && !flood { Role::Seed } else { Role::Viewer },
            reachable: true,
            n_substreams: self.n_substreams,
            upload_kbps: match self.attack {
                Attack::Forge => 100_000,
                Attack::Flood => 0,
                Attack::Withhold | Attack::Liar | Attack::Sybil => u32::MAX,
            },
        };
        self.push(node, Message::Hello(hello));
        if flood {
            // A leech, not a parent: it takes every substream it can get.
            self.push(node, self.flood_status());
            self.push(node, Message::Subscribe { substreams: self.all() });
            return;
        }
        // The most attractive parent there could be: one hop from a seed, 1 ms behind
        // ingest, room for anyone.
        let n = self.n_substreams as usize;
        let status = Status {
            free_slots: 64,
            children: 0,
            min_child_kbps: 0,
            busy_ms: 0,
            segment_start: self.newest,
            depth: vec![if self.claims_seed { 0 } else { 1 }; n].into(),
            latency_ms: vec![1; n].into(),
            // The top of its own branch, as a seed's child would say; a sybil names
            // its colluder, which a seed takes as a vouch by someone fed through it.
            root: vec![
                match (self.claims_seed, self.attack) {
                    (true, _) => Status::NO_ROOT,
                    (false, Attack::Sybil) => self.partner,
                    (false, _) => self.peer_id,
                };
                n
            ]
            .into(),
            parent: vec![Status::NO_ROOT; n].into(),
        };
        self.push(node, Message::Status(status));
        if let Some(newest) = self.newest {
            // Claim the last 64 pieces.
            let base = newest.saturating_sub(63);
            self.push(node, Message::HaveMap { base, bits: vec![u64::MAX] });
        }
        if seed && self.targets_seeds() {
            self.seeds.insert(node, 0);
            self.push(node, Message::Subscribe { substreams: self.all() });
        }
    }

    /// A flooder's status: no room, no path, and a segment start ahead of the stream
    /// (to pull a joiner's start point where no piece is yet).
    fn flood_status(&self) -> Message {
        let n = self.n_substreams as usize;
        Message::Status(Status {
            free_slots: 0,
            children: 0,
            min_child_kbps: 0,
            busy_ms: 0,
            segment_start: self.newest.map(|s| s + FLOOD_AHEAD),
            depth: vec![Status::NO_PATH; n].into(),
            latency_ms: vec![Status::NO_LATENCY; n].into(),
            root: vec![Status::NO_ROOT; n].into(),
            parent: vec![Status::NO_ROOT; n].into(),
        })
    }

    fn all(&self) -> u64 {
        if self.n_substreams >= 64 { u64::MAX } else { (1u64 << self.n_substreams) - 1 }
    }

    pub fn handle_disconnected(&mut self, node: NodeId) {
        self.neighbours.remove(&node);
        self.seeds.remove(&node);
        self.queue.retain(|t| t.to != node);
    }

    /// `source` gives the genuine piece for a seq, when it exists, to tamper with.
    pub fn handle_message(&mut self, from: NodeId, msg: Message, source: &dyn Fn(u64) -> Option<Piece>) {
        match msg {
            Message::Subscribe { .. } if self.attack == Attack::Flood => {
                self.push(from, Message::SubscribeReply { accepted: 0 });
            }
            Message::Subscribe { substreams } => {
                self.neighbours.insert(from, substreams);
                self.push(from, Message::SubscribeReply { accepted: substreams });
            }
            Message::Request { seqs } => {
                for seq in seqs {
                    match self.attack {
                        Attack::Forge => {
                            if let Some(p) = source(seq) {
                                let forged = self.forge(&p);
                                self.push(from, Message::Piece(forged));
                            }
                        }
                        // Silence: the request times out.
                        Attack::Withhold | Attack::Flood | Attack::Sybil => {}
                        // Only what is already late.
                        Attack::Liar => {
                            if let Some(p) = self.newest.filter(|&n| seq + LIAR_LAG <= n).and_then(|_| source(seq)) {
                                self.push(from, Message::Piece(p));
                            }
                        }
                    }
                }
            }
            // A seed's slots are what it is after: it keeps what it got and asks again
            // for the rest whenever the seed says it has room.
            Message::SubscribeReply { accepted } => {
                if let Some(got) = self.seeds.get_mut(&from) {
                    *got = accepted;
                }
            }
            Message::Status(st) => {
                let all = self.all();
                if let Some(&got) = self.seeds.get(&from)
                    && st.free_slots > 0
                    && got != all
                {
                    self.push(from, Message::Subscribe { substreams: all });
                }
            }
            Message::Ping { nonce } => self.push(from, Message::Pong { nonce }),
            Message::Goodbye { .. } => self.handle_disconnected(from),
            _ => {}
        }
    }

    /// A new piece exists at the source: what the attack does with it.
    pub fn handle_new_piece(&mut self, piece: &Piece, source: &dyn Fn(u64) -> Option<Piece>) {
        self.newest = Some(piece.seq());
        match self.attack {
            Attack::Forge => self.forge_and_push(piece),
            Attack::Withhold | Attack::Sybil => {
                // Claims it, to every neighbour; sends it to none.
                for node in self.neighbours.keys().copied().collect::<Vec<_>>() {
                    self.push(node, Message::Have { seq: piece.seq() });
                }
            }
            Attack::Flood => self.flood(piece),
            Attack::Liar => {
                // Claims the new piece at once; pushes the one made 1.2 s ago.
                let late = piece.seq().checked_sub(LIAR_LAG).and_then(source);
                let nodes: Vec<(NodeId, u64)> = self.neighbours.iter().map(|(&n, &m)| (n, m)).collect();
                for (node, mask) in nodes {
                    self.push(node, Message::Have { seq: piece.seq() });
                    if let Some(p) = &late
                        && mask & (1 << (p.seq() % u64::from(self.n_substreams))) != 0
                    {
                        self.push(node, Message::Piece(p.clone()));
                    }
                }
            }
        }
    }

    /// Per new piece, to every neighbour (4 messages per 50 ms, 80 a second: a fraction
    /// of the shell's budget of 2,000, so none is dropped for it): a claim of the next
    /// piece, which does not exist yet; 1,024 claims far ahead; a request for the new
    /// piece; and every 20th piece a status pointing the start ahead.
    fn flood(&mut self, piece: &Piece) {
        let seq = piece.seq();
        let status = seq.is_multiple_of(20).then(|| self.flood_status());
        for node in self.neighbours.keys().copied().collect::<Vec<_>>() {
            self.push(node, Message::Have { seq: seq + 1 });
            self.push(node, Message::HaveMap { base: seq + 100_000, bits: vec![u64::MAX; 16] });
            self.push(node, Message::Request { seqs: vec![seq] });
            if let Some(st) = &status {
                self.push(node, st.clone());
            }
        }
    }

    /// Pushes forgeries of a new piece to subscribers and, unasked, to one more
    /// neighbour; announces it to the rest.
    fn forge_and_push(&mut self, piece: &Piece) {
        let s = piece.seq() % u64::from(self.n_substreams);
        let nodes: Vec<(NodeId, u64)> = self.neighbours.iter().map(|(&n, &m)| (n, m)).collect();
        let unasked = nodes.get((piece.seq() as usize) % nodes.len().max(1)).map(|(n, _)| *n);
        for (node, mask) in nodes {
            if mask & (1 << s) != 0 || Some(node) == unasked {
                let forged = self.forge(piece);
                self.push(node, Message::Piece(forged));
            } else {
                self.push(node, Message::Have { seq: piece.seq() });
            }
        }
    }

    pub fn wants_to_transmit(&self) -> bool {
        !self.queue.is_empty()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.queue.pop_front()?;
        if self.attack == Attack::Forge && matches!(t.msg, Message::Piece(_)) {
            self.forged_sent += 1;
        }
        Some(t)
    }

    fn push(&mut self, to: NodeId, msg: Message) {
        self.queue.push_back(Transmit { to, msg });
    }

    /// Three kinds in turn: a garbage signature, a flipped payload byte under the
    /// genuine signature, and a valid signature by the wrong key.
    fn forge(&mut self, genuine: &Piece) -> Piece {
        self.n_forged += 1;
        let h = *genuine.header();
        let built = match self.n_forged % 3 {
            0 => Piece::from_parts(h, genuine.payload().clone(), [0x5a; 64]),
            1 => {
                let mut payload = genuine.payload().to_vec();
                let mid = payload.len() / 2;
                let idx = mid - mid % 188 + 100; // inside a packet, never its sync byte
                payload[idx] ^= 0x01;
                Piece::from_parts(h, Bytes::from(payload), *genuine.signature())
            }
            _ => {
                let other = self.own_key.sign_piece(h.seq, h.timestamp_us, h.flags, genuine.payload().clone());
                other.and_then(|p| Piece::from_parts(h, p.payload().clone(), *p.signature()))
            }
        };
        built.expect("forgeries keep the genuine piece's shape, which was valid")
    }
}
