//! What a peer knows of each neighbour.

use crate::wire::{Hello, MAX_HAVE_WORDS, Role, Status};

use super::{Micros, NodeId};

#[derive(Debug)]
pub(super) struct Neighbour {
    pub(super) node: NodeId,
    pub(super) hello: Option<Hello>,
    /// Its club (from its peer id), once its `Hello` arrived.
    pub(super) club: Option<usize>,
    pub(super) status: Option<Status>,
    pub(super) rtt: Option<Micros>,
    pub(super) ping: Option<(u64, Micros)>,
    pub(super) last_recv: Micros,
    pub(super) last_sent_ping: Micros,
    /// Pieces it holds, as far as we know.
    pub(super) have: SeqSet,
    /// Pieces it told us it lacks.
    pub(super) lacks: SeqSet,
    /// Substreams we push to it.
    pub(super) children: u64,
    /// Substreams it accepted to push to us.
    pub(super) parents: u64,
    /// Substreams we asked it for and have no answer on yet.
    pub(super) asked: u64,
    pub(super) requests_out: u32,
    pub(super) responses_queued: u32,
    /// What it may still take from us by request while it gives nothing, in µs of
    /// the stream (a token bucket: see `PeerConfig::free_repair_share`), as of
    /// `free_repair_at`.
    pub(super) free_repair: Micros,
    pub(super) free_repair_at: Micros,
    /// Requests it let expire and stalls as our parent: what it claimed or took on and
    /// did not deliver. Three, and it is neither asked for a piece nor as a parent
    /// until it has given us one.
    pub(super) failures: u32,
    /// Subscriptions it turned down or dropped (it was full): they count against it as
    /// a parent, as `failures` do, but say nothing of what it answers by request — a
    /// full seed is still the source of last resort.
    pub(super) refusals: u32,
    /// New verified pieces it gave us (its contribution, for tit for tat).
    pub(super) pieces_from: u64,
    /// Pieces in a row it sent that we already held.
    pub(super) useless_streak: u32,
    /// It answered `Busy`: not asked again before this.
    pub(super) busy_until: Micros,
    pub(super) connected_at: Micros,
    /// Last time it gave us a new piece, or took pieces from us.
    pub(super) last_useful: Micros,
    /// The tracker listed it as a seed (we dialled it from that list): only then does
    /// its `Hello` role count. Anyone can claim to be a seed.
    pub(super) listed_seed: bool,
    /// Measured delay from ingest to its pushes reaching us, µs (every piece it pushed
    /// as our parent, new or already held): what it delivers, not what it claims.
    pub(super) push_latency: Option<super::Ewma>,
    /// Times it stalled as our parent; it is not asked to be one again before
    /// `no_parent_until` (a backoff that doubles with each stall).
    pub(super) stalls: u32,
    pub(super) no_parent_until: Micros,
    /// Share of our requests it answered before they expired, as a moving average
    /// (each answer or expiry moves it a quarter of the way): a neighbour that claims
    /// pieces and answers late or never sinks, and is asked last or not at all.
    pub(super) reply_rate: f32,
    /// (Seeds) when it last went from no child slot to one.
    pub(super) child_since: Micros,
    /// (Seeds) last time a neighbour it does not feed said it is fed through it (in
    /// a substream we push to it).
    pub(super) vouched_at: Option<Micros>,
    /// (Seeds) last time another neighbour named it as its parent or branch root, in
    /// any substream: it forwards, and it may take the slot of an unvouched child.
    pub(super) named_at: Option<Micros>,
    /// (Seeds) dropped from its slots unvouched this many times; no slot before
    /// `no_child_until`.
    pub(super) unvouched: u32,
    pub(super) no_child_until: Micros,
    /// The network (/24, /48) its connection comes from, as the shell told us; `None`:
    /// not known (or our own host), counted as a network of its own.
    pub(super) network: Option<u128>,
}

impl Neighbour {
    pub(super) fn new(node: NodeId, now: Micros) -> Self {
        Neighbour {
            node,
            hello: None,
            club: None,
            status: None,
            rtt: None,
            ping: None,
            last_recv: now,
            last_sent_ping: now,
            have: SeqSet::default(),
            lacks: SeqSet::default(),
            children: 0,
            parents: 0,
            asked: 0,
            requests_out: 0,
            responses_queued: 0,
            free_repair: Micros::MAX,
            free_repair_at: now,
            failures: 0,
            refusals: 0,
            pieces_from: 0,
            useless_streak: 0,
            busy_until: 0,
            connected_at: now,
            last_useful: now,
            listed_seed: false,
            push_latency: None,
            stalls: 0,
            no_parent_until: 0,
            reply_rate: 1.0,
            child_since: now,
            vouched_at: None,
            named_at: None,
            unvouched: 0,
            no_child_until: 0,
            network: None,
        }
    }

    /// Takes `cost` µs of stream from its free repair budget, refilled at `share` of
    /// real time up to `burst`; false (nothing taken) when too little is left.
    pub(super) fn take_free_repair(&mut self, now: Micros, cost: Micros, share: f64, burst: Micros) -> bool {
        let earned = (now.saturating_sub(self.free_repair_at) as f64 * share) as Micros;
        self.free_repair = self.free_repair.saturating_add(earned).min(burst);
        self.free_repair_at = now;
        if self.free_repair < cost {
            return false;
        }
        self.free_repair -= cost;
        true
    }

    /// Notes that a request to it was answered (`true`) or expired.
    pub(super) fn replied(&mut self, answered: bool) {
        let x = if answered { 1.0 } else { 0.0 };
        self.reply_rate += (x - self.reply_rate) / 4.0;
    }

    /// Its uplink backlog as it last reported it, µs.
    pub(super) fn busy(&self) -> Micros {
        self.status.as_ref().map_or(0, |st| u64::from(st.busy_ms) * 1_000)
    }

    /// Its network as a key that no other neighbour's unknown network shares.
    pub(super) fn network_key(&self) -> (bool, u128) {
        match self.network {
            Some(n) => (true, n),
            None => (false, u128::from(self.node.0)),
        }
    }

    /// Whether it has failed us too often to be asked to be a parent.
    pub(super) fn failed_as_parent(&self) -> bool {
        self.failures + self.refusals >= 3
    }

    /// A seed the tracker listed that says it is one.
    pub(super) fn is_seed(&self) -> bool {
        self.listed_seed && self.hello.as_ref().is_some_and(|h| h.role == Role::Seed)
    }

    pub(super) fn upload_kbps(&self) -> u32 {
        self.hello.as_ref().map_or(0, |h| h.upload_kbps)
    }

    pub(super) fn depth(&self, s: usize) -> u8 {
        self.status.as_ref().and_then(|st| st.depth.get(s).copied()).unwrap_or(Status::NO_PATH)
    }

    /// The seed's child at the top of its branch of substream `s`, as it says.
    pub(super) fn root(&self, s: usize) -> crate::wire::PeerId {
        self.status.as_ref().and_then(|st| st.root.get(s).copied()).unwrap_or(Status::NO_ROOT)
    }

    /// Its parent in substream `s`, as it says.
    pub(super) fn parent(&self, s: usize) -> crate::wire::PeerId {
        self.status.as_ref().and_then(|st| st.parent.get(s).copied()).unwrap_or(Status::NO_ROOT)
    }

    pub(super) fn peer_id(&self) -> Option<crate::wire::PeerId> {
        self.hello.as_ref().map(|h| h.peer_id)
    }

    /// Its usual delay from ingest to holding a piece of substream `s`, µs.
    pub(super) fn latency(&self, s: usize) -> Option<Micros> {
        let ms = self.status.as_ref()?.latency_ms.get(s).copied()?;
        (ms != Status::NO_LATENCY).then_some(u64::from(ms) * 1_000)
    }

    /// Whether it forwards substream `s` (a seed forwards all).
    pub(super) fn forwards(&self, s: usize) -> bool {
        self.is_seed() || self.club == Some(s)
    }
}

/// Set of sequence numbers near the live edge, as a sliding bitmap of
/// [`MAX_HAVE_WORDS`] words kept inline (a ring, no allocation): inserting far ahead
/// forgets the oldest.
#[derive(Debug, Default)]
pub(super) struct SeqSet {
    /// Seq of bit 0 of the first word (a multiple of 64).
    base: u64,
    words: [u64; MAX_HAVE_WORDS],
    /// Ring index of the first word.
    head: usize,
    /// Words in use.
    len: usize,
}

impl SeqSet {
    fn word(&self, i: usize) -> usize {
        (self.head + i) % MAX_HAVE_WORDS
    }

    pub(super) fn contains(&self, seq: u64) -> bool {
        if seq < self.base {
            return false;
        }
        let off = seq - self.base;
        let i = off / 64;
        i < self.len as u64 && self.words[self.word(i as usize)] & (1 << (off % 64)) != 0
    }

    pub(super) fn insert(&mut self, seq: u64) {
        if self.len == 0 {
            self.base = seq - seq % 64;
        }
        if seq < self.base {
            return;
        }
        let word = (seq - self.base) / 64;
        if word >= MAX_HAVE_WORDS as u64 {
            let shift = word + 1 - MAX_HAVE_WORDS as u64;
            let dropped = shift.min(self.len as u64) as usize;
            self.head = self.word(dropped);
            self.len -= dropped;
            self.base += 64 * shift;
        }
        let word = ((seq - self.base) / 64) as usize;
        while self.len <= word {
            let w = self.word(self.len);
            self.words[w] = 0;
            self.len += 1;
        }
        let w = self.word(word);
        self.words[w] |= 1 << ((seq - self.base) % 64);
    }

    pub(super) fn remove(&mut self, seq: u64) {
        if seq >= self.base {
            let off = seq - self.base;
            if off / 64 < self.len as u64 {
                let w = self.word((off / 64) as usize);
                self.words[w] &= !(1 << (off % 64));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SeqSet;

    #[test]
    fn seq_set_slides_forward() {
        let mut s = SeqSet::default();
        s.insert(5);
        s.insert(70);
        assert!(s.contains(5) && s.contains(70) && !s.contains(6));
        s.insert(5 + 64 * 20); // far ahead: the oldest words go
        assert!(!s.contains(5) && s.contains(5 + 64 * 20));
        s.remove(5 + 64 * 20);
        assert!(!s.contains(5 + 64 * 20));
        s.insert(u64::MAX); // no overflow
        assert!(s.contains(u64::MAX));
    }
}
