//! The push trees: who feeds us each substream, whom we feed, and what we advertise.

use crate::wire::{Message, PeerId, Role, Status};

use super::neighbour::Neighbour;
use super::{Branch, MAX_DEPTH, MS, Micros, NodeId, Peer, Reject};
use crate::wire::GoodbyeReason;

/// Most upload a neighbour's claim is credited with, in streams.
const MAX_CREDIT_STREAMS: u32 = 10;

impl Peer {
    /// A neighbour asks us to push `mask` (its complete wish: it replaces the last).
    pub(super) fn on_subscribe(&mut self, now: Micros, idx: usize, mask: u64) {
        let n_sub = self.cfg.n_substreams as u32;
        if n_sub < 64 && mask >> n_sub != 0 {
            return self.misbehaved(idx, Reject::Protocol("subscribe to unknown substream"), GoodbyeReason::Malformed);
        }
        let node = self.neighbours[idx].node;
        let full_before = self.status_free(now) == 0;
        let kept = self.neighbours[idx].children & mask;
        self.neighbours[idx].children = kept;
        let mut accepted = kept;
        // Dropped from our slots unvouched: not again for a while.
        let barred = now < self.neighbours[idx].no_child_until;
        for s in 0..n_sub as usize {
            let bit = 1u64 << s;
            if mask & bit == 0 || kept & bit != 0 || barred || !self.can_forward(s) {
                continue;
            }
            // Never feed our own parent: the tree would loop.
            if self.neighbour_idx(node).is_some_and(|i| self.neighbours[i].parents & bit != 0) {
                continue;
            }
            // A seed's slots of a substream go to different networks: many identities
            // on one /24 hold one slot, not all.
            if self.cfg.role == Role::Seed && self.network_holds_slot(s, node) {
                continue;
            }
            if self.has_room(s) || self.evict_unvouched(now, s, node) || self.displace_for(now, s, node) {
                accepted |= bit;
                if let Some(i) = self.neighbour_idx(node) {
                    let n = &mut self.neighbours[i];
                    if n.children == 0 {
                        n.child_since = now;
                    }
                    n.children |= bit;
                }
            }
        }
        self.send(node, Message::SubscribeReply { accepted });
        // Neighbours choose parents by whether we have room: tell them when that flips.
        if full_before != (self.status_free(now) == 0) {
            self.slots_dirty = true;
        }
    }

    /// `accepted` is the complete set `idx` now pushes to us (an answer to our
    /// `Subscribe`, or unasked when it displaced us).
    pub(super) fn on_subscribe_reply(&mut self, now: Micros, idx: usize, accepted: u64) {
        let node = self.neighbours[idx].node;
        let wanted = self.neighbours[idx].parents | self.neighbours[idx].asked;
        self.neighbours[idx].asked = 0;
        for s in 0..self.branches.len() {
            let bit = 1u64 << s;
            if wanted & bit == 0 {
                continue;
            }
            if accepted & bit != 0 {
                self.neighbours[idx].parents |= bit;
                let old = self.branches[s].parent;
                if old != Some(node) {
                    self.branches[s] = Branch {
                        parent: Some(node),
                        parent_since: now,
                        parent_last_piece: now,
                        parent_last_seq: self.newest,
                        parent_pushed: false,
                        ..self.branches[s].clone()
                    };
                    if let Some(old) = old {
                        self.stats.parents_switched += 1;
                        self.unsubscribe(old, s);
                    }
                }
            } else {
                let n = &mut self.neighbours[idx];
                n.parents &= !bit;
                n.refusals += 1;
                if self.branches[s].parent == Some(node) {
                    self.branches[s].parent = None;
                }
            }
        }
        self.recompute_depth();
    }

    /// Per substream: drop a parent that stalled or lost its path; subscribe where we
    /// have no parent; ask a clearly better one where we have.
    pub(super) fn choose_parents(&mut self, now: Micros) {
        let n_sub = self.branches.len();
        for s in 0..n_sub {
            let Some(p) = self.branches[s].parent else { continue };
            let b = &self.branches[s];
            // Stalled: silent for `parent_stall` while the stream flows, i.e. a later
            // piece of this substream exists (a quiet source stalls no parent: a feed
            // that pauses must not tear the tree down).
            let overdue = match (b.parent_last_seq, self.newest) {
                (Some(last), Some(newest)) => newest >= last + n_sub as u64,
                (None, newest) => newest.is_some(),
                (Some(_), None) => false,
            };
            // The stream flows if pieces reach us, or — when every parent withholds
            // and nothing does — if neighbours claim pieces we lack.
            let flowing = now.saturating_sub(self.last_accept) < self.cfg.parent_stall
                || now.saturating_sub(self.last_claim_ahead) < self.cfg.parent_stall;
            let claimed_past =
                |last: u64| self.neighbours.iter().any(|n| n.node != p && n.have.contains(last + n_sub as u64));
            let overdue = overdue
                || b.parent_last_seq.is_some_and(claimed_past)
                || (b.parent_last_seq.is_none() && self.last_claim_ahead > b.parent_since);
            let stalled = overdue
                && now.saturating_sub(b.parent_since) > self.cfg.parent_stall
                && now.saturating_sub(b.parent_last_piece) > self.cfg.parent_stall
                && flowing;
            let lost = self.neighbour_idx(p).is_none_or(|i| self.neighbours[i].depth(s) >= MAX_DEPTH);
            if stalled || lost {
                if stalled {
                    self.stats.parents_stalled += 1;
                    if let Some(i) = self.neighbour_idx(p) {
                        // Not our parent again for a while, longer each time: one that
                        // takes subscriptions and withholds costs a stall, not one
                        // every few seconds. Its other substreams stalling in the same
                        // blip (one hiccup of a parent of all four shows as four stalls,
                        // 50 ms apart) are the same stall, not a longer backoff.
                        let n = &mut self.neighbours[i];
                        n.failures += 1;
                        if now >= n.no_parent_until {
                            n.stalls += 1;
                            let backoff = self.cfg.parent_stall.saturating_mul(10 << n.stalls.min(5).saturating_sub(1));
                            n.no_parent_until = now.saturating_add(backoff);
                        }
                    }
                }
                self.branches[s].parent = None;
                self.unsubscribe(p, s);
            }
        }
        let mut asks: Vec<(NodeId, u64)> = Vec::new();
        for s in 0..n_sub {
            let bit = 1u64 << s;
            if self.neighbours.iter().any(|n| n.asked & bit != 0) {
                continue; // an answer is pending
            }
            let current = self.branches[s].parent;
            if current.is_some() && now.saturating_sub(self.branches[s].parent_since) < self.cfg.switch_hold {
                continue;
            }
            let Some((best, predicted)) = self.best_parent(now, s) else { continue };
            if let Some(p) = current {
                let current_cost =
                    self.neighbour_idx(p).map_or(u64::MAX, |i| self.predict(&self.neighbours[i], s, true));
                if p == best || predicted + self.cfg.switch_gain >= current_cost {
                    continue;
                }
            }
            match asks.iter_mut().find(|(n, _)| *n == best) {
                Some((_, bits)) => *bits |= bit,
                None => asks.push((best, bit)),
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

    /// The neighbour predicted to deliver substream `s` soonest, among those that
    /// forward it and would take us.
    fn best_parent(&self, now: Micros, s: usize) -> Option<(NodeId, Micros)> {
        let bit = 1u64 << s;
        let mine = self.own_credit(s);
        self.neighbours
            .iter()
            .filter(|n| {
                let Some(st) = &n.status else { return false };
                let room = st.free_slots > 0 || (st.children > 0 && mine > 0 && mine >= 2 * st.min_child_kbps);
                n.forwards(s)
                    && n.children & bit == 0
                    && n.parents & bit == 0
                    && n.depth(s) < MAX_DEPTH
                    && self.loop_free(now, n, s)
                    && !n.failed_as_parent()
                    && now >= n.no_parent_until
                    && room
            })
            .map(|n| (n.node, self.predict(n, s, false)))
            .min_by_key(|&(node, cost)| (cost, node))
    }

    /// Whether `n` can feed us substream `s` without a loop: not if it says we feed
    /// its branch (as its parent or the branch's root); while our depth's worsening
    /// is news (see `Branch::guard_depth`), only if it is closer to the seed than we
    /// were or on another branch. Those we fed are deeper than we were, and on our
    /// branch, until they hear: a loop counts its depths up to `MAX_DEPTH` one
    /// status at a time while nobody in it gets a piece from a seed. (Two branches
    /// orphaned at once, as a seed's when it dies, can still take each other's nodes;
    /// such a loop lasts until its depths reach the limit, carried meanwhile by
    /// repair: docs/measurements.md, 2026-12-03.)
    pub(super) fn loop_free(&self, now: Micros, n: &Neighbour, s: usize) -> bool {
        let me = self.cfg.peer_id;
        if n.root(s) == me || n.parent(s) == me {
            return false;
        }
        let b = &self.branches[s];
        now >= b.guard_until
            || n.depth(s) < b.guard_depth
            || (n.root(s) != Status::NO_ROOT && Some(n.root(s)) != b.guard_root)
    }

    /// When a piece of substream `s` would reach us through `n`, after ingest: its own
    /// latency, our place in its fan-out, half an RTT; a seed costs extra. What it
    /// claims is believed only until it has pushed to us: then what it delivered, if
    /// later, is what counts (a parent that claims 1 ms and delivers in 1.2 s costs
    /// 1.2 s).
    fn predict(&self, n: &Neighbour, s: usize, already_child: bool) -> Micros {
        let own = n.latency(s).unwrap_or(u64::from(n.depth(s)) * 100 * MS);
        let children = u64::from(n.status.as_ref().map_or(0, |st| st.children)) + u64::from(!already_child);
        let fan_out = children * self.hop_time(n) / 2 + self.hop_time(n) / 2;
        let seed = if n.is_seed() { self.cfg.seed_parent_penalty } else { 0 };
        let claimed = own + fan_out + n.rtt.unwrap_or(200 * MS) / 2 + seed;
        n.push_latency.map_or(claimed, |m| claimed.max(m.mean as Micros + seed))
    }

    fn unsubscribe(&mut self, node: NodeId, s: usize) {
        if let Some(i) = self.neighbour_idx(node) {
            let n = &mut self.neighbours[i];
            n.parents &= !(1 << s);
            n.asked &= !(1 << s);
            let mask = n.parents | n.asked;
            self.send(node, Message::Subscribe { substreams: mask });
        }
    }

    /// Whether we push substream `s` at all: a seed pushes every substream, a viewer
    /// only its club's, and only while it has a feed.
    fn can_forward(&self, s: usize) -> bool {
        let fed = self.branches[s].depth < MAX_DEPTH;
        match self.cfg.role {
            Role::Seed => true,
            Role::Viewer => s == self.club && fed && self.child_slots() > 0,
        }
    }

    /// Push subscriptions accepted in all: the configured figure, or (seeds) what the
    /// audience calls for if that is more.
    pub(super) fn child_slots(&self) -> u32 {
        self.cfg.child_slots().max(self.audience_slots)
    }

    /// (Seeds) a seed spreads its slots evenly over the substreams.
    fn seed_slots_per_substream(&self) -> u32 {
        self.child_slots().div_ceil(u32::from(self.cfg.n_substreams))
    }

    /// (Seeds) drops the children of each substream past its share of the slots,
    /// those worth least as inner nodes first.
    pub(super) fn shed_children(&mut self) {
        let per = self.seed_slots_per_substream();
        for s in 0..usize::from(self.cfg.n_substreams) {
            let bit = 1u64 << s;
            let mut used = self.neighbours.iter().filter(|n| n.children & bit != 0).count() as u32;
            while used > per {
                let Some((i, _)) = self.weakest_child(s, |_| true) else { break };
                self.drop_child(i, bit);
                used -= 1;
            }
        }
    }

    /// The child of substream `s` worth least as an inner node among those `eligible`.
    fn weakest_child(&self, s: usize, eligible: impl Fn(&Neighbour) -> bool) -> Option<(usize, u32)> {
        let bit = 1u64 << s;
        self.neighbours
            .iter()
            .enumerate()
            .filter(|(_, n)| n.children & bit != 0 && eligible(n))
            .map(|(i, n)| (i, self.credit(n, s), n.node))
            .min_by_key(|&(_, credit, node)| (credit, node))
            .map(|(i, credit, _)| (i, credit))
    }

    /// Stops pushing substream `bit` to neighbour `i`, and tells it.
    fn drop_child(&mut self, i: usize, bit: u64) {
        let n = &mut self.neighbours[i];
        n.children &= !bit;
        let (victim, accepted) = (n.node, n.children);
        self.stats.children_displaced += 1;
        self.send(victim, Message::SubscribeReply { accepted });
    }

    /// Another child of substream `s` comes from `node`'s network (when known).
    fn network_holds_slot(&self, s: usize, node: NodeId) -> bool {
        let Some(i) = self.neighbour_idx(node) else { return false };
        let key = self.neighbours[i].network_key();
        key.0 && self.neighbours.iter().any(|m| m.node != node && m.children & (1 << s) != 0 && m.network_key() == key)
    }

    /// Room for one more child of substream `s`. A seed spreads its slots evenly over
    /// the substreams; a viewer's all go to its club.
    fn has_room(&self, s: usize) -> bool {
        match self.cfg.role {
            Role::Seed => {
                let per = self.seed_slots_per_substream();
                let used = self.neighbours.iter().filter(|n| n.children & (1 << s) != 0).count() as u32;
                used < per
            }
            Role::Viewer => self.children_total() < self.child_slots(),
        }
    }

    /// What a child of substream `s` is worth as an inner node of its tree: its upload
    /// if it forwards `s` (its club, with upload to spare), else 0 — a leaf.
    fn credit(&self, n: &Neighbour, s: usize) -> u32 {
        // A claim, so bounded: no more than a generous home uplink carries (10
        // streams). One that claims more outbids no one who already claims that much.
        let kbps = n.upload_kbps().min(self.cfg.stream_kbps.saturating_mul(MAX_CREDIT_STREAMS));
        if n.forwards(s) && kbps >= self.cfg.stream_kbps { kbps } else { 0 }
    }

    /// The same for ourselves, as a subscriber to substream `s`.
    fn own_credit(&self, s: usize) -> u32 {
        if s == self.club && self.child_slots() > 0 { self.cfg.upload_kbps } else { 0 }
    }

    /// Makes room on a full substream `s` for `node` by displacing the child worth
    /// least as an inner node, if `node` is worth at least twice as much: forwarders
    /// with much upload belong near the root, leaves at the bottom.
    fn displace_for(&mut self, now: Micros, s: usize, node: NodeId) -> bool {
        let bit = 1u64 << s;
        let seed = self.cfg.role == Role::Seed;
        let Some(i) = self.neighbour_idx(node) else { return false };
        let newcomer = self.credit(&self.neighbours[i], s);
        // At a seed a claim outbids only with something to show: a newcomer others
        // name as their parent (it forwards) may displace any child; one with nothing
        // to show, only a leaf (it says it forwards nothing here: it loses a hop, no
        // one below it loses anything) or a child past its probation that nobody
        // vouches for.
        let proven = seed && self.proven(&self.neighbours[i], now);
        let weakest = self.weakest_child(s, |n| {
            n.node != node
                && (!seed || proven || self.credit(n, s) == 0 || self.unvouched_for(n, now) > self.cfg.child_probation)
        });
        let Some((i, kbps)) = weakest else { return false };
        if newcomer == 0 || u64::from(newcomer) < 2 * u64::from(kbps) {
            return false;
        }
        self.drop_child(i, bit);
        true
    }

    /// (Seeds) another neighbour named it recently as the parent or root that feeds it.
    fn proven(&self, n: &Neighbour, now: Micros) -> bool {
        n.named_at.is_some_and(|t| now.saturating_sub(t) <= self.cfg.child_probation)
    }

    /// (Seeds) how long a child has gone without a vouch (or since it took its slot).
    fn unvouched_for(&self, n: &Neighbour, now: Micros) -> Micros {
        if self.cfg.role != Role::Seed || n.children == 0 {
            return 0;
        }
        now.saturating_sub(n.child_since.max(n.vouched_at.unwrap_or(0)))
    }

    /// (Seeds) how much longer than the probation a child must go unvouched before a
    /// subscriber takes its slot: none for one others name as a parent (`proven`).
    fn patience(&self, proven: bool) -> Micros {
        if proven { 0 } else { 2 * self.cfg.child_probation }
    }

    /// (Seeds) frees a slot of substream `s` for `node` by dropping an unvouched
    /// child: the one unvouched longest. It gets no slot here for a minute, doubling.
    fn evict_unvouched(&mut self, now: Micros, s: usize, node: NodeId) -> bool {
        let bit = 1u64 << s;
        // A subscriber others name as their parent takes the slot at once; one with
        // nothing to show only from a child unvouched three times as long (squatters
        // are raced for the slot by squatters: they ask the moment it frees).
        let Some(newcomer) = self.neighbour_idx(node) else { return false };
        let patience = self.patience(self.proven(&self.neighbours[newcomer], now));
        let victim = self
            .neighbours
            .iter()
            .enumerate()
            .filter(|(_, n)| n.children & bit != 0 && n.node != node)
            .filter(|(_, n)| self.unvouched_for(n, now) > self.cfg.child_probation + patience)
            .max_by_key(|(_, n)| (self.unvouched_for(n, now), std::cmp::Reverse(n.node)))
            .map(|(i, _)| i);
        let Some(i) = victim else { return false };
        let minute = 60 * super::SECOND;
        let n = &mut self.neighbours[i];
        n.children &= !bit;
        n.no_child_until = now.saturating_add(minute << n.unvouched.min(4));
        n.unvouched += 1;
        let (victim, accepted) = (n.node, n.children);
        self.stats.children_unvouched += 1;
        self.send(victim, Message::SubscribeReply { accepted });
        true
    }

    /// (Seeds) notes whom other neighbours name, in `Status`, as the parent or the
    /// branch root that feeds them in time: a child so named in a substream we push to
    /// it is vouched for; any neighbour so named forwards.
    pub(super) fn review_children(&mut self, now: Micros) {
        let mut named: Vec<(PeerId, usize, NodeId, (bool, u128))> = Vec::new();
        for n in &self.neighbours {
            let Some(st) = &n.status else { continue };
            for ids in [&st.root, &st.parent] {
                for (s, &id) in ids.iter().enumerate() {
                    if id != Status::NO_ROOT && n.depth(s) != Status::NO_PATH {
                        named.push((id, s, n.node, n.network_key()));
                    }
                }
            }
        }
        if named.is_empty() {
            return;
        }
        named.sort_unstable();
        for n in self.neighbours.iter_mut() {
            let Some(id) = n.peer_id() else { continue };
            let from = named.partition_point(|&(r, _, _, _)| r < id);
            // Names from its own network don't count: a sybil farm on one /24 cannot
            // vouch for itself.
            let own = n.network_key();
            let mut by_others = named[from..]
                .iter()
                .take_while(|&&(r, _, _, _)| r == id)
                .filter(|&&(_, _, by, net)| by != n.node && (net != own || !own.0));
            let (mut any, mut vouched) = (false, false);
            for &(_, s, _, _) in by_others.by_ref() {
                any = true;
                vouched |= n.children & (1 << s) != 0;
            }
            if any {
                n.named_at = Some(now);
            }
            if vouched {
                n.vouched_at = Some(now);
            }
        }
    }

    pub(super) fn children_total(&self) -> u32 {
        self.neighbours.iter().map(|n| n.children.count_ones()).sum()
    }

    pub(super) fn recompute_depth(&mut self) {
        if self.cfg.role == Role::Seed {
            return;
        }
        let now = self.clock;
        for s in 0..self.branches.len() {
            let parent = self.branches[s]
                .parent
                .and_then(|p| self.neighbour_idx(p))
                .filter(|&i| self.neighbours[i].parents & (1 << s) != 0)
                .map(|i| &self.neighbours[i]);
            let d = parent.map(|n| n.depth(s)).filter(|&d| d < MAX_DEPTH).map_or(Status::NO_PATH, |d| d + 1);
            let root = match parent {
                Some(n) if d != Status::NO_PATH && self.branches[s].parent_pushed => {
                    if n.is_seed() {
                        Some(self.cfg.peer_id)
                    } else {
                        Some(n.root(s)).filter(|&r| r != Status::NO_ROOT)
                    }
                }
                _ => None,
            };
            let named_parent = match parent {
                Some(n) if d != Status::NO_PATH && self.branches[s].parent_pushed => n.peer_id(),
                _ => None,
            };
            let b = &mut self.branches[s];
            if b.root != root || b.named_parent != named_parent {
                b.root = root;
                b.last_root = root.or(b.last_root);
                b.named_parent = named_parent;
                self.depth_dirty |= 1 << s;
            }
            let old = b.depth;
            if old != d {
                b.depth = d;
                self.depth_dirty |= 1 << s;
                // Worse (or no feed): those we fed still say we are closer; guard
                // against taking one of them as a parent until they have heard.
                if d > old && old != Status::NO_PATH {
                    if now >= b.guard_until {
                        (b.guard_depth, b.guard_root) = (old, b.last_root);
                    } else {
                        b.guard_depth = b.guard_depth.min(old);
                    }
                    b.guard_until = now.saturating_add(self.cfg.status_interval);
                }
                // Gaining or losing a feed changes whether we can be anyone's parent.
                if (old == Status::NO_PATH) != (d == Status::NO_PATH) {
                    self.slots_dirty = true;
                }
            }
        }
    }

    /// Free push slots, as advertised: a seed also counts those of children any
    /// subscriber may take (unvouched past the probation and the patience).
    pub(super) fn status_free(&self, now: Micros) -> u32 {
        let free = self.child_slots().saturating_sub(self.children_total());
        if self.cfg.role != Role::Seed {
            return free;
        }
        let limit = self.cfg.child_probation + self.patience(false);
        let unvouched: u32 = self
            .neighbours
            .iter()
            .filter(|n| self.unvouched_for(n, now) > limit)
            .map(|n| n.children.count_ones())
            .sum();
        free + unvouched
    }

    pub(super) fn status(&self, now: Micros) -> Status {
        let used = self.children_total();
        let free = self.status_free(now);
        let min_child_kbps = self
            .neighbours
            .iter()
            .filter(|n| n.children != 0)
            .flat_map(|n| (0..self.branches.len()).filter(|s| n.children & (1 << s) != 0).map(|s| self.credit(n, s)))
            .min()
            .unwrap_or(0);
        Status {
            free_slots: u16::try_from(free).unwrap_or(u16::MAX),
            children: u16::try_from(used).unwrap_or(u16::MAX),
            min_child_kbps,
            busy_ms: u16::try_from(self.backlog() / 1_000).unwrap_or(u16::MAX),
            segment_start: self.latest_segment_start,
            depth: self.branches.iter().map(|b| b.depth).collect(),
            latency_ms: self
                .branches
                .iter()
                .map(|b| match (b.latency, self.cfg.role) {
                    (_, Role::Seed) => 0,
                    (Some(e), _) => u16::try_from(e.mean as u64 / 1_000).unwrap_or(Status::NO_LATENCY - 1),
                    (None, _) => Status::NO_LATENCY,
                })
                .collect(),
            root: self.branches.iter().map(|b| b.root.unwrap_or(Status::NO_ROOT)).collect(),
            parent: self.branches.iter().map(|b| b.named_parent.unwrap_or(Status::NO_ROOT)).collect(),
        }
    }
}
