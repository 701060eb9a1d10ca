//! Swarm state in memory: for each channel (info-hash), its seeds and viewers.
//!
//! Sharded by info-hash (one mutex per shard, so announces to different channels rarely
//! contend). A swarm keeps its peers in a `Vec` of 36-byte records (the peer id is kept
//! as a 64-bit keyed hash, not its 20 bytes) grown by a quarter at a time; a swarm of
//! more than [`INDEX_ABOVE`] peers also finds a peer through a `hashbrown::HashTable`
//! of `u32` positions (~5 bytes per peer), a smaller one by scanning its records. No
//! per-peer allocation. Time is passed in (seconds since start), so tests drive it.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use catalogue::usage::{Drained, MAX_SEED_BYTES_PER_S, Mark, SLACK_S, SeedMark, UsageDelta};
use hashbrown::HashTable;

use crate::announce::{Announce, Event, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Re-announce interval given to peers, seconds.
    pub interval_s: u32,
    /// The same for seeds, if shorter: a handful per channel, and each sizes its push
    /// slots by the audience the answer counts, so they should hear it change soon
    /// (a programme's start brings thousands in seconds).
    pub seed_interval_s: u32,
    /// A peer not heard from for this long is dropped, seconds.
    pub peer_timeout_s: u32,
    /// Upper bound on `numwant`.
    pub max_numwant: u32,
    /// Seeds put in each viewer's list (the rest are viewers: seeds carry ≤ 1 %).
    pub seeds_per_list: u32,
    /// Viewer ids a channel lists and meters from one address at once. One more is
    /// still answered (it may watch) but neither listed to others nor metered: peer ids
    /// cost nothing to make up, and made-up ones must not run up a channel's bill.
    pub max_ids_per_address: u32,
    /// The same from one network (/24 of IPv4, /48 of IPv6): a school or an office.
    pub max_ids_per_network: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            interval_s: 60,
            seed_interval_s: 15,
            peer_timeout_s: 150,
            max_numwant: 200,
            seeds_per_list: 2,
            max_ids_per_address: 64,
            max_ids_per_network: 1_024,
        }
    }
}

/// One peer as the tracker keeps it (48 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerRec {
    /// 64-bit BLAKE3 of the 20-byte peer id ([`peer_key`]): the same on every node and
    /// across restarts, so metering marks survive them. (Tables hash it again with a
    /// per-process key, so crafted ids can't collide in them.)
    pub(crate) key: [u8; 8],
    /// The IPv4 address; for an IPv6 peer ([`V6`]) its slot in its swarm's table of
    /// IPv6 addresses (most peers are IPv4: 12 bytes a peer kept off the record).
    ip: u32,
    pub(crate) port: u16,
    pub(crate) flags: u8,
    pub(crate) free_slots: u8,
    last_seen: u32,
    /// Metering: the viewer's first announce seen in the hour since the last drain
    /// (its mark's start: [`First`]; the ad counter's top bits are `flags`' high nibble).
    first: First,
    /// Metering: the viewer's highest counters in the hour (also what this tracker
    /// credited) and the hour.
    metered: Metered,
    /// Metering: the viewer's `downloaded` counter, KiB ([`kib`]), at its mark's start
    /// and at its latest announce (what it took in: [`Mark::bytes`]).
    down_first: u32,
    down: u32,
}

/// A byte counter in KiB, as a record keeps it (4 TiB at most).
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes / 1024).unwrap_or(u32::MAX)
}

/// A viewer's first announce in an hour as seen since the last drain: seconds into the
/// hour (12 bits), its `watched` (12 bits) and the low 8 bits of its `ad_watched`; the
/// ad counter's high 4 bits are kept in the record's `flags` ([`FIRST_AD_HI`]), so the
/// record stays 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct First(u32);

impl First {
    /// (into the hour, watched, ad watched) → the packed field and the flags' high nibble.
    fn new(into: u16, watched: u16, ad: u16) -> (First, u8) {
        let (into, watched, ad) = (u32::from(into.min(0xfff)), u32::from(watched.min(0xfff)), ad.min(0xfff));
        (First(into | (watched << 12) | (u32::from(ad & 0xff) << 24)), ((ad >> 8) as u8) << 4)
    }

    /// (into the hour, watched, ad watched), given the record's flags.
    fn get(self, flags: u8) -> (u16, u16, u16) {
        let ad = ((self.0 >> 24) as u16) | (u16::from(flags >> 4) << 8);
        ((self.0 & 0xfff) as u16, ((self.0 >> 12) & 0xfff) as u16, ad)
    }
}

/// A viewer's `watched` and `ad_watched` counters already credited (seconds in the
/// current UTC hour: ≤ 3,600 < 2^12 each) and that hour (hours since the epoch, mod
/// 2^8: a peer silent for days has long expired), packed in 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Metered(u32);

impl Metered {
    fn new(watched: u16, ad: u16, hour: u64) -> Self {
        Metered(u32::from(watched.min(0xfff)) | (u32::from(ad.min(0xfff)) << 12) | (((hour & 0xff) as u32) << 24))
    }

    fn watched(self) -> u16 {
        (self.0 & 0xfff) as u16
    }

    fn ad(self) -> u16 {
        ((self.0 >> 12) & 0xfff) as u16
    }

    fn hour8(self) -> u8 {
        (self.0 >> 24) as u8
    }
}

pub(crate) const SEED: u8 = 1;
pub(crate) const REACHABLE: u8 = 2;
/// A viewer seen since the last drain: its mark (`first`, `metered`) is to be drained.
const SIGHTED: u8 = 4;
/// The record's `ip` is a slot in its swarm's IPv6 table.
const V6: u8 = 8;
/// The high 4 bits of the first announce's ad counter ([`First`]).
const FIRST_AD_HI: u8 = 0xf0;

impl PeerRec {
    /// A record of metering alone (no address: a mark of a viewer not in the swarm).
    fn mark_only(key: [u8; 8], flags: u8, last_seen: u32, first: First, metered: Metered) -> Self {
        PeerRec { key, ip: 0, port: 0, flags, free_slots: 0, last_seen, first, metered, down_first: 0, down: 0 }
    }

    fn is_seed(&self) -> bool {
        self.flags & SEED != 0
    }

    fn reachable(&self) -> bool {
        self.flags & REACHABLE != 0
    }

    /// The record without its address (a mark kept for draining: an IPv6 slot is its
    /// swarm's, reused once the peer is gone).
    fn unplaced(self) -> Self {
        PeerRec { ip: 0, port: 0, flags: self.flags & !V6, ..self }
    }
}

/// A peer that may go into a peer list, as a store found it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) out: PeerOut,
    pub(crate) free_slots: u8,
}

/// A peer in an answer. (Peer ids are not kept, so answers carry addresses only, as
/// compact answers do; BEP 23's `no_peer_id`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerOut {
    pub ip: IpAddr,
    pub port: u16,
    pub seed: bool,
    /// The peer's 64-bit key ([`peer_key`] of its peer id): Shoal peers use it as their
    /// protocol peer id, so a joiner knows each candidate's club before connecting.
    pub key: [u8; 8],
}

/// What an announce gets back (before encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceReply {
    pub seeds: u32,
    pub viewers: u32,
    pub peers: Vec<PeerOut>,
    /// Answered but not kept (neither listed nor metered): the cap it is over,
    /// `"address_cap"` or `"network_cap"` (see [`StoreConfig::max_ids_per_address`]).
    pub over_cap: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub expired_peers: u64,
    pub pruned_swarms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub swarms: u64,
    pub seeds: u64,
    pub viewers: u64,
}

/// Info-hashes are already uniform: their first 8 bytes are the hash.
#[derive(Debug, Default, Clone, Copy)]
struct InfoHashHasher(u64);

impl Hasher for InfoHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

/// Swarms bigger than this find peers through a hash index; smaller ones scan.
pub const INDEX_ABOVE: usize = 32;

#[derive(Debug, Default)]
struct Swarm {
    peers: Vec<PeerRec>,
    /// Positions in `peers`, hashed by key; none while the swarm is small (most are:
    /// a swarm is ~10 peers, and its fixed size counts as much as its records).
    index: Option<Box<HashTable<u32>>>,
    /// IPv6 peers' addresses; none while the swarm has no IPv6 peer.
    v6: Option<Box<V6Table>>,
    seeds: u32,
    /// Usage not yet drained, by hour.
    usage: Vec<HourUsage>,
    /// Seeds' counters in their latest hour, and of hours that ended before they were
    /// drained ([`SeedCounter::ended`]; seeds are few: a scan).
    seed_counters: Vec<SeedCounter>,
}

/// IPv6 peers' addresses, by the slot their record holds; free slots are reused.
#[derive(Debug, Default)]
struct V6Table {
    slots: Vec<[u8; 16]>,
    free: Vec<u32>,
}

/// Gives back an IPv6 slot; the table goes once no slot is taken.
fn release_v6(v6: &mut Option<Box<V6Table>>, slot: u32) {
    if let Some(t) = v6 {
        t.free.push(slot);
        if t.free.len() == t.slots.len() {
            *v6 = None;
        }
    }
}

/// An address (or a network) at its cap of viewer ids on a channel, as found at a scan.
#[derive(Debug, Clone, Copy)]
struct Capped {
    info_hash: [u8; 20],
    /// The address, or the network as `httpkit::guard::network` numbers it.
    key: u128,
    network: bool,
    /// Until when (store seconds) it is taken as still at its cap.
    until: u32,
}

/// How long an address or network found at its cap is taken as at it: a made-up id
/// costs one scan of the swarm per this, per address, not one per announce; an id that
/// left makes room within it.
const CAPPED_FOR_S: u32 = 10;
/// Capped addresses and networks remembered per shard, a 64th of the channels (past
/// these, each new id scans).
const MAX_CAPPED: usize = 256;

/// One hour's usage of a swarm, not yet drained.
#[derive(Debug, Clone, Copy, Default)]
struct HourUsage {
    /// Hours since the epoch.
    hour: u32,
    viewer_seconds: u64,
    ad_viewer_seconds: u64,
    seed_bytes: u64,
    peak_viewers: u32,
    /// Announces of new viewer ids refused a place for being over a cap.
    ids_over_cap: u32,
}

/// What this tracker saw of a seed's `uploaded` and `downloaded` counters in one hour
/// (drained as a [`SeedMark`]).
#[derive(Debug, Clone, Copy)]
struct SeedCounter {
    key: [u8; 8],
    /// Hours since the Unix epoch.
    hour: u32,
    low: u64,
    high: u64,
    /// Unix times of its first and latest announce in the hour, and its `downloaded`
    /// counter at them.
    first_seen: u64,
    last_seen: u64,
    down_low: u64,
    down_high: u64,
    /// Changed since the last drain.
    dirty: bool,
    /// Of an hour that ended before it was drained (the seed's current counter is another).
    ended: bool,
}

/// The metering key of a peer id: the first 8 bytes of its BLAKE3.
pub fn peer_key(peer_id: &[u8; 20]) -> [u8; 8] {
    catalogue::hll::peer_hash(peer_id).to_le_bytes()
}

impl Swarm {
    fn find(&self, h: &RandomState, key: &[u8; 8]) -> Option<usize> {
        let Some(index) = &self.index else {
            return self.peers.iter().position(|p| p.key == *key);
        };
        let peers = &self.peers;
        index.find(h.hash_one(key), |&i| peers[i as usize].key == *key).map(|&i| i as usize)
    }

    /// A peer's address.
    fn addr(&self, p: &PeerRec) -> IpAddr {
        if p.flags & V6 == 0 {
            return IpAddr::V4(Ipv4Addr::from(p.ip));
        }
        // A slot is always in the table (`place` takes it, `remove` gives it back).
        let slot = self.v6.as_ref().and_then(|t| t.slots.get(p.ip as usize));
        IpAddr::V6(slot.map_or(Ipv6Addr::UNSPECIFIED, |a| Ipv6Addr::from(*a)))
    }

    /// Puts `ip` in record `i`: an IPv4 address in the record itself, an IPv6 one in the
    /// slot the record holds or a new one (a slot given back when it turns IPv4).
    fn place(&mut self, i: usize, ip: IpAddr) {
        let Swarm { peers, v6, .. } = self;
        let p = &mut peers[i];
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                if p.flags & V6 != 0 {
                    p.flags &= !V6;
                    release_v6(v6, p.ip);
                }
                p.ip = u32::from(a);
            }
            IpAddr::V6(a) => {
                let t = v6.get_or_insert_with(Box::default);
                if p.flags & V6 == 0 {
                    p.ip = t.free.pop().unwrap_or_else(|| {
                        t.slots.push([0; 16]);
                        (t.slots.len() - 1) as u32
                    });
                    p.flags |= V6;
                }
                if let Some(slot) = t.slots.get_mut(p.ip as usize) {
                    *slot = a.octets();
                }
            }
        }
    }

    /// Adds a record (whose address is placed after).
    fn insert(&mut self, h: &RandomState, rec: PeerRec) {
        if self.peers.len() == self.peers.capacity() {
            // A quarter more at a time: at most ~25 % slack, still amortised O(1).
            self.peers.reserve_exact((self.peers.len() / 4).max(2));
        }
        if rec.is_seed() {
            self.seeds += 1;
        }
        let i = self.peers.len() as u32;
        self.peers.push(rec);
        match &mut self.index {
            None if self.peers.len() <= INDEX_ABOVE => {}
            None => self.rebuild_index(h),
            Some(index) => {
                let peers = &self.peers;
                index.insert_unique(h.hash_one(rec.key), i, |&j| h.hash_one(peers[j as usize].key));
            }
        }
    }

    fn rebuild_index(&mut self, h: &RandomState) {
        let peers = &self.peers;
        let mut index = HashTable::with_capacity(peers.len() + peers.len() / 4);
        for (i, p) in peers.iter().enumerate() {
            index.insert_unique(h.hash_one(p.key), i as u32, |&j| h.hash_one(peers[j as usize].key));
        }
        self.index = Some(Box::new(index));
    }

    /// Removes a peer and gives back its record.
    fn remove(&mut self, h: &RandomState, i: usize) -> PeerRec {
        let rec = self.peers[i];
        if let Some(index) = &mut self.index
            && let Ok(e) = index.find_entry(h.hash_one(rec.key), |&j| j as usize == i)
        {
            e.remove();
        }
        self.peers.swap_remove(i);
        if let Some(index) = &mut self.index
            && i < self.peers.len()
        {
            // The last record moved into `i`: point its index entry there.
            let moved = self.peers[i].key;
            let last = self.peers.len() as u32;
            if let Some(slot) = index.find_mut(h.hash_one(moved), |&j| j == last) {
                *slot = i as u32;
            }
        }
        if self.peers.len() < INDEX_ABOVE / 2 {
            self.index = None;
        }
        if rec.is_seed() {
            self.seeds -= 1;
        }
        if rec.flags & V6 != 0 {
            release_v6(&mut self.v6, rec.ip);
        }
        rec.unplaced()
    }

    fn shrink(&mut self, h: &RandomState) {
        if let Some(t) = &mut self.v6
            && t.slots.capacity() > 2 * t.slots.len() + 4
        {
            t.slots.shrink_to_fit();
            t.free.shrink_to_fit();
        }
        if self.peers.capacity() > self.peers.len() + self.peers.len() / 2 + 4 {
            self.peers.shrink_to_fit();
            if self.index.is_some() {
                self.rebuild_index(h);
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        self.peers.capacity() * size_of::<PeerRec>()
            + self.index.as_ref().map_or(0, |ix| size_of::<HashTable<u32>>() + ix.capacity() * (size_of::<u32>() + 1))
            + self.v6.as_ref().map_or(0, |t| size_of::<V6Table>() + t.slots.capacity() * 16 + t.free.capacity() * 4)
            + self.usage.capacity() * size_of::<HourUsage>()
            + self.seed_counters.capacity() * size_of::<SeedCounter>()
    }

    /// The usage of the hour `unix` falls in.
    fn usage_at(&mut self, unix: u64) -> &mut HourUsage {
        let hour = (unix / 3600) as u32;
        if self.usage.last().is_none_or(|u| u.hour != hour) {
            // Usually one hour at a time: don't let `push` reserve four.
            self.usage.reserve_exact(1);
            self.usage.push(HourUsage { hour, ..HourUsage::default() });
        }
        let last = self.usage.len() - 1;
        &mut self.usage[last]
    }

    /// Nothing left in it: no peers, no usage waiting to be drained, no seed counter
    /// waiting to be persisted.
    fn is_idle(&self) -> bool {
        self.peers.is_empty() && self.usage.is_empty() && self.seed_counters.iter().all(|c| !c.dirty)
    }
}

#[derive(Debug, Default)]
struct Shard {
    swarms: HashMap<[u8; 20], Swarm, BuildHasherDefault<InfoHashHasher>>,
    /// Records of viewers removed (left, expired, changed role) or moved to a new hour
    /// while [`SIGHTED`], with their channel: their marks, drained with the others.
    /// Per shard, not per swarm: most swarms never have one, and a swarm is 10 peers.
    left: Vec<([u8; 20], PeerRec)>,
    /// Addresses and networks found at their cap on a channel lately: a new id from one
    /// is over it without another scan of the swarm (see [`Swarms::over_cap`]).
    capped: Vec<Capped>,
}

/// Keeps a removed viewer's record for the next drain if it was seen since the last.
fn keep_sighting(left: &mut Vec<([u8; 20], PeerRec)>, info_hash: &[u8; 20], rec: PeerRec) {
    if rec.flags & SIGHTED != 0 {
        left.push((*info_hash, rec.unplaced()));
    }
}

/// All swarms.
#[derive(Debug)]
pub struct Swarms {
    cfg: StoreConfig,
    shards: Box<[Mutex<Shard>]>,
    /// Hashes peer keys for the swarms' index tables (random per process: a client
    /// can't choose ids whose keys collide in them).
    hasher: RandomState,
    /// Where each peer list starts scanning (a counter through SplitMix64).
    rng: AtomicU64,
    /// Unix time when the store's clock (`now_s`) was 0.
    epoch_unix: u64,
}

const SHARDS: usize = 64;

/// How long into an hour a viewer's `watched_prev` is taken (clients send it for the
/// first ten minutes).
const PREVIOUS_WITHIN_S: u64 = 900;

/// The full hour number for a stored `hour mod 2^8`: the latest such hour up to `unix_now`.
fn hour_of(h8: u8, unix_now: u64) -> u64 {
    let now = unix_now / 3600;
    now - u64::from((now as u8).wrapping_sub(h8))
}

impl Swarms {
    pub fn new(cfg: StoreConfig) -> Self {
        Swarms {
            cfg,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            rng: AtomicU64::new(0x5eed),
            epoch_unix: crate::http::unix_now(),
        }
    }

    /// A store whose clock starts at `epoch_unix` (tests drive hours with it).
    pub fn with_epoch(cfg: StoreConfig, epoch_unix: u64) -> Self {
        Swarms { epoch_unix, ..Swarms::new(cfg) }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    fn shard(&self, info_hash: &[u8; 20]) -> std::sync::MutexGuard<'_, Shard> {
        let i = usize::from(info_hash[19]) % SHARDS;
        // A panic while holding a shard can't leave a half-written record (every
        // mutation is a whole push/swap_remove), so a poisoned lock is still usable.
        self.shards[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn random(&self) -> u64 {
        let mut z = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Records the announce and chooses the peers to give back. The caller has checked
    /// the channel and, for a seed, its token.
    pub fn announce(&self, now_s: u32, a: &Announce, ip: IpAddr) -> AnnounceReply {
        let mut guard = self.shard(&a.info_hash);
        let Shard { swarms, left, capped } = &mut *guard;
        if a.event == Event::Stopped {
            let mut reply = AnnounceReply { seeds: 0, viewers: 0, peers: Vec::new(), over_cap: None };
            if let Some(swarm) = swarms.get_mut(&a.info_hash) {
                if let Some(i) = swarm.find(&self.hasher, &peer_key(&a.peer_id)) {
                    // Its last counters, if it says them, are credited before it goes.
                    let unix = self.epoch_unix + u64::from(now_s);
                    let p = swarm.peers[i];
                    if p.is_seed() {
                        let bytes = self.credit_seed(swarm, Some(&p), a, now_s, unix);
                        swarm.usage_at(unix).seed_bytes += bytes;
                    } else if let Some(w) = a.watched_s {
                        let (credit, ad, metered) = self.credit(Some(&p), now_s, unix, w, a.ad_watched_s);
                        let u = swarm.usage_at(unix);
                        u.viewer_seconds += credit;
                        u.ad_viewer_seconds += ad;
                        let down = kib(a.downloaded);
                        let (first, hi, down_first) = Self::sighting(left, &a.info_hash, Some(&p), unix, metered, down);
                        let q = &mut swarm.peers[i];
                        (q.first, q.flags, q.metered, q.last_seen) =
                            (first, (q.flags & !FIRST_AD_HI) | hi, metered, now_s);
                        (q.down_first, q.down) = (down_first, down);
                    }
                    keep_sighting(left, &a.info_hash, swarm.remove(&self.hasher, i));
                }
                reply.seeds = swarm.seeds;
                reply.viewers = swarm.peers.len() as u32 - swarm.seeds;
                if swarm.is_idle() {
                    swarms.remove(&a.info_hash);
                }
            }
            return reply;
        }
        let key = peer_key(&a.peer_id);
        let unix = self.epoch_unix + u64::from(now_s);
        let swarm = swarms.entry(a.info_hash).or_default();
        let flags = if a.role == Role::Seed { SEED } else { 0 } | if a.reachable { REACHABLE } else { 0 };
        let found = swarm.find(&self.hasher, &key);
        if found.is_none()
            && a.role == Role::Viewer
            && let Some(cap) = self.over_cap(swarm, capped, &a.info_hash, now_s, ip)
        {
            // Reported once per channel and hour as a usage anomaly (`Db::record_flush`).
            swarm.usage_at(unix).ids_over_cap += 1;
            let want = a.numwant.min(self.cfg.max_numwant) as usize;
            let peers = self.choose(swarm, &key, a.role, want);
            return AnnounceReply {
                seeds: swarm.seeds,
                viewers: swarm.peers.len() as u32 - swarm.seeds,
                peers,
                over_cap: Some(cap),
            };
        }
        // Metering: viewers' `watched` counters become viewer-seconds, seeds'
        // `uploaded` counters seed bytes.
        let mut known = found.map(|i| swarm.peers[i]);
        if a.role == Role::Viewer && a.watched_s.is_some() {
            known = self.previous_hour(left, &a.info_hash, key, known, unix, a);
        }
        let (credit, ad, metered_now) = match a.watched_s {
            Some(w) if a.role == Role::Viewer => self.credit(known.as_ref(), now_s, unix, w, a.ad_watched_s),
            _ => (0, 0, known.map_or(Metered::default(), |p| p.metered)),
        };
        let metered = a.watched_s.is_some() && a.role == Role::Viewer;
        let (first, sighting, down_first, down) = if metered {
            let u = swarm.usage_at(unix);
            u.viewer_seconds += credit;
            u.ad_viewer_seconds += ad;
            let down = kib(a.downloaded);
            let (first, sighting, down_first) =
                Self::sighting(left, &a.info_hash, known.as_ref(), unix, metered_now, down);
            (first, sighting, down_first, down)
        } else {
            known.map_or((First::default(), 0, 0, 0), |p| {
                (p.first, p.flags & (SIGHTED | FIRST_AD_HI), p.down_first, p.down)
            })
        };
        if a.role == Role::Seed {
            let seed_known = known.filter(PeerRec::is_seed);
            let bytes = self.credit_seed(swarm, seed_known.as_ref(), a, now_s, unix);
            if bytes > 0 {
                swarm.usage_at(unix).seed_bytes += bytes;
            }
        }
        match found {
            Some(i) if swarm.peers[i].is_seed() == (a.role == Role::Seed) => {
                let p = &mut swarm.peers[i];
                p.port = a.port;
                p.flags = flags | sighting | (p.flags & V6);
                p.free_slots = a.free_slots;
                p.last_seen = now_s;
                p.first = first;
                p.metered = metered_now;
                (p.down_first, p.down) = (down_first, down);
                swarm.place(i, ip);
            }
            found => {
                // New, or changed role: (re)inserted so the seed count stays right (a
                // viewer's sighting so far is left to be drained).
                if let Some(i) = found {
                    keep_sighting(left, &a.info_hash, swarm.remove(&self.hasher, i));
                }
                let (first, sighting, down_first, down) =
                    if metered { (first, sighting, down_first, down) } else { (First::default(), 0, 0, 0) };
                let rec = PeerRec {
                    key,
                    ip: 0,
                    port: a.port,
                    flags: flags | sighting,
                    free_slots: a.free_slots,
                    last_seen: now_s,
                    first,
                    metered: metered_now,
                    down_first,
                    down,
                };
                swarm.insert(&self.hasher, rec);
                swarm.place(swarm.peers.len() - 1, ip);
            }
        }
        let viewers = swarm.peers.len() as u32 - swarm.seeds;
        if let Some(u) = swarm.usage.last_mut()
            && u64::from(u.hour) == unix / 3600
        {
            u.peak_viewers = u.peak_viewers.max(viewers);
        }
        let want = a.numwant.min(self.cfg.max_numwant) as usize;
        let peers = self.choose(swarm, &key, a.role, want);
        AnnounceReply { seeds: swarm.seeds, viewers: swarm.peers.len() as u32 - swarm.seeds, peers, over_cap: None }
    }

    /// Whether a new viewer id from `ip` would take its address or its network past
    /// the channel's cap (which one). Loopback is not capped (local tests and demos).
    /// A scan of the swarm, done only for ids not seen before and not for an address
    /// or network found at its cap in the last [`CAPPED_FOR_S`].
    fn over_cap(
        &self,
        swarm: &Swarm,
        capped: &mut Vec<Capped>,
        info_hash: &[u8; 20],
        now_s: u32,
        ip: IpAddr,
    ) -> Option<&'static str> {
        const LABEL: [&str; 2] = ["address_cap", "network_cap"];
        let net = httpkit::guard::network(ip)?;
        let ip = ip.to_canonical();
        let address = match ip {
            IpAddr::V4(v4) => u128::from_be_bytes(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => u128::from_be_bytes(v6.octets()),
        };
        capped.retain(|c| c.until > now_s);
        let known = capped.iter().find(|c| c.info_hash == *info_hash && c.key == if c.network { net } else { address });
        if let Some(c) = known {
            return Some(LABEL[usize::from(c.network)]);
        }
        let (mut same_address, mut same_network) = (0u32, 0u32);
        for p in swarm.peers.iter().filter(|p| !p.is_seed()) {
            let at = swarm.addr(p);
            if at == ip {
                same_address += 1;
            }
            if httpkit::guard::network(at) == Some(net) {
                same_network += 1;
            }
        }
        let network = if same_address >= self.cfg.max_ids_per_address {
            false
        } else if same_network >= self.cfg.max_ids_per_network {
            true
        } else {
            return None;
        };
        if capped.len() < MAX_CAPPED {
            let key = if network { net } else { address };
            capped.push(Capped { info_hash: *info_hash, key, network, until: now_s.saturating_add(CAPPED_FOR_S) });
        }
        Some(LABEL[usize::from(network)])
    }

    /// A viewer's final counters for the previous hour (`watched_prev`, sent early in an
    /// hour): its mark of that hour runs to the hour's end, so the hour's tail — from its
    /// last announce there to the hour's end — is billed too. Noted once per replica (at
    /// the viewer's first announce here in the hour: its record here still holds the
    /// previous hour, or there is none). Returns the record as the rest of the announce
    /// sees it (starting the new hour afresh).
    fn previous_hour(
        &self,
        left: &mut Vec<([u8; 20], PeerRec)>,
        info_hash: &[u8; 20],
        key: [u8; 8],
        known: Option<PeerRec>,
        unix: u64,
        a: &Announce,
    ) -> Option<PeerRec> {
        let Some(prev) = a.watched_prev_s else { return known };
        let hour = unix / 3600;
        let end = (hour * 3600).saturating_sub(1);
        // Early in the hour only, and not for an hour before this store's clock began.
        if unix % 3600 >= PREVIOUS_WITHIN_S
            || end < self.epoch_unix
            || known.is_some_and(|p| p.metered.hour8() == hour as u8)
        {
            return known;
        }
        let end_s = u32::try_from(end - self.epoch_unix).unwrap_or(u32::MAX);
        let (w, ad) = (prev.min(3600) as u16, a.ad_watched_prev_s.map_or(0, |x| x.min(prev).min(3600)) as u16);
        let prev_hour = hour - 1;
        match known.filter(|p| p.metered.hour8() == prev_hour as u8) {
            Some(mut p) => {
                if p.flags & SIGHTED == 0 {
                    let (first, hi) = First::new(3599, w, ad);
                    (p.first, p.flags, p.down_first) = (first, (p.flags & !FIRST_AD_HI) | hi | SIGHTED, p.down);
                }
                p.metered = Metered::new(p.metered.watched().max(w), p.metered.ad().max(ad), prev_hour);
                p.last_seen = end_s;
                left.push((*info_hash, p.unplaced()));
                p.flags &= !(SIGHTED | FIRST_AD_HI);
                Some(p)
            }
            None => {
                // No record of that hour here (it announced to another replica then): a
                // mark of the hour's end alone, merged with theirs.
                let (first, hi) = First::new(3599, w, ad);
                let metered = Metered::new(w, ad, prev_hour);
                left.push((*info_hash, PeerRec::mark_only(key, SIGHTED | hi, end_s, first, metered)));
                known
            }
        }
    }

    /// A metered viewer's mark start after an announce at `unix` whose counters are now
    /// `metered` and `down` (KiB downloaded): kept if it was seen earlier in this hour
    /// since the last drain; else this announce starts it (a sighting of an earlier hour
    /// not yet drained is left to be). Returns the `first` field, the flags to set
    /// (SIGHTED and the ad bits) and the `down_first` field.
    fn sighting(
        left: &mut Vec<([u8; 20], PeerRec)>,
        info_hash: &[u8; 20],
        known: Option<&PeerRec>,
        unix: u64,
        metered: Metered,
        down: u32,
    ) -> (First, u8, u32) {
        let hour = unix / 3600;
        if let Some(p) = known.filter(|p| p.flags & SIGHTED != 0) {
            if p.metered.hour8() == hour as u8 {
                return (p.first, p.flags & (SIGHTED | FIRST_AD_HI), p.down_first);
            }
            left.push((*info_hash, p.unplaced()));
        }
        let (first, hi) = First::new((unix - hour * 3600) as u16, metered.watched(), metered.ad());
        (first, SIGHTED | hi, down)
    }

    /// Seconds this tracker credits for a viewer's `watched` counter `w` (seconds watched
    /// in the current UTC hour) and, of those, during ad breaks (`ad`, its `ad_watched`
    /// counter), and its new metering state: what the counters grew by since its
    /// previous announce here, never more than the time since (plus a little slack); a
    /// peer seen here for the first time is credited nothing (it just joined). This is
    /// the tracker's own account (its `viewer_seconds` metrics and usage events); the
    /// bill is computed from the viewers' marks, which replicas share (`Mark::billed`).
    fn credit(&self, known: Option<&PeerRec>, now_s: u32, unix: u64, w: u64, ad: Option<u64>) -> (u64, u64, Metered) {
        let hour = unix / 3600;
        let into_hour = unix - hour * 3600;
        let w = w.min(into_hour + SLACK_S).min(3600) as u16;
        let (before, before_ad, elapsed) = match known {
            Some(p) => {
                let elapsed = u64::from(now_s.saturating_sub(p.last_seen)) + SLACK_S;
                let (b, b_ad) =
                    if p.metered.hour8() == hour as u8 { (p.metered.watched(), p.metered.ad()) } else { (0, 0) };
                (b, b_ad, elapsed)
            }
            // Just joined: its counters are the baseline.
            None => (w, ad.map_or(0, |a| a.min(u64::from(w)) as u16), 0),
        };
        let credit = u64::from(w.saturating_sub(before)).min(elapsed).min(into_hour + SLACK_S);
        let ad_w = ad.map_or(before_ad, |a| a.min(u64::from(w)) as u16);
        let ad_credit = u64::from(ad_w.saturating_sub(before_ad)).min(credit);
        (credit, ad_credit, Metered::new(w.max(before), ad_w.max(before_ad), hour))
    }

    /// Bytes to credit for a seed's `uploaded` counter on this tracker (its own
    /// running count, `shoal_tracker_seed_bytes_total`; the bill comes from the seed's
    /// marks, whichever replica saw what): what it grew by since the previous announce
    /// here (a counter that went down is a restarted seed: all of it is new), at most
    /// [`MAX_SEED_BYTES_PER_S`] since then; a seed new here, its counter only with
    /// `event=started`. Notes the counter in the seed's hour (the mark's low is 0 for
    /// a seed that started in it).
    fn credit_seed(&self, swarm: &mut Swarm, known: Option<&PeerRec>, a: &Announce, now_s: u32, unix: u64) -> u64 {
        let up = a.uploaded;
        let elapsed = known.map_or(SLACK_S, |p| u64::from(now_s.saturating_sub(p.last_seen)) + SLACK_S);
        let cap = elapsed.saturating_mul(MAX_SEED_BYTES_PER_S);
        let key = peer_key(&a.peer_id);
        let hour = (unix / 3600) as u32;
        let started = a.event == Event::Started;
        let down = a.downloaded;
        let fresh = |low, high| SeedCounter {
            key,
            hour,
            low,
            high,
            first_seen: unix,
            last_seen: unix,
            down_low: down,
            down_high: down,
            dirty: true,
            ended: false,
        };
        let Some(c) = swarm.seed_counters.iter_mut().find(|c| c.key == key && !c.ended) else {
            swarm.seed_counters.reserve_exact(1);
            swarm.seed_counters.push(fresh(if started { 0 } else { up }, up));
            return if started { up.min(cap) } else { 0 };
        };
        let credit = if up >= c.high { up - c.high } else { up }.min(cap);
        if c.hour != hour {
            let ended = SeedCounter { ended: true, ..*c };
            *c = fresh(c.high.min(up), up);
            if ended.dirty {
                swarm.seed_counters.push(ended);
            }
        } else {
            c.dirty |= c.high != up || c.down_high != down || started;
            c.low = if started { 0 } else { c.low.min(up) };
            c.high = c.high.max(up);
            c.last_seen = c.last_seen.max(unix);
            c.down_low = c.down_low.min(down);
            c.down_high = c.down_high.max(down);
        }
        credit
    }

    /// Takes the usage accumulated since the last drain, the viewers' marks (what was
    /// seen of them since), and the seeds' whose counters moved, to be written together;
    /// `unix_now` places the marks' hours.
    pub fn drain_usage(&self, unix_now: u64) -> Drained {
        let mut out = Drained::default();
        let epoch = self.epoch_unix;
        let mark = |info_hash: &[u8; 20], p: &PeerRec| {
            let hour_start = hour_of(p.metered.hour8(), unix_now) * 3600;
            let (into, first_watched, first_ad) = p.first.get(p.flags);
            Mark {
                info_hash: *info_hash,
                hour_start,
                peer_key: p.key,
                first_seen: hour_start + u64::from(into),
                first_watched,
                first_ad,
                last_seen: epoch + u64::from(p.last_seen),
                watched: p.metered.watched(),
                ad: p.metered.ad(),
                first_down: u64::from(p.down_first) * 1024,
                down: u64::from(p.down) * 1024,
            }
        };
        for shard in self.shards.iter() {
            let mut guard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Shard { swarms, left, .. } = &mut *guard;
            out.marks.extend(left.drain(..).map(|(h, p)| mark(&h, &p)));
            if left.capacity() > 1_024 {
                left.shrink_to_fit();
            }
            for (info_hash, swarm) in swarms.iter_mut() {
                for u in swarm.usage.drain(..) {
                    out.usage.push(UsageDelta {
                        info_hash: *info_hash,
                        hour_start: u64::from(u.hour) * 3600,
                        viewer_seconds: u.viewer_seconds,
                        ad_viewer_seconds: u.ad_viewer_seconds,
                        seed_bytes: u.seed_bytes,
                        peak_viewers: u.peak_viewers,
                        ids_over_cap: u.ids_over_cap,
                    });
                }
                for p in swarm.peers.iter_mut().filter(|p| p.flags & SIGHTED != 0) {
                    out.marks.push(mark(info_hash, p));
                    p.flags &= !(SIGHTED | FIRST_AD_HI);
                }
                let seed_mark = |c: &SeedCounter| SeedMark {
                    info_hash: *info_hash,
                    peer_key: c.key,
                    hour_start: u64::from(c.hour) * 3600,
                    low: c.low,
                    high: c.high,
                    first_seen: c.first_seen,
                    last_seen: c.last_seen,
                    down_low: c.down_low,
                    down_high: c.down_high,
                };
                swarm.seed_counters.retain(|c| {
                    if c.ended {
                        out.seed_marks.push(seed_mark(c));
                    }
                    !c.ended
                });
                for c in swarm.seed_counters.iter_mut().filter(|c| c.dirty) {
                    c.dirty = false;
                    out.seed_marks.push(seed_mark(c));
                }
            }
        }
        out
    }

    /// Dialable peers only (an unreachable peer can't be connected to by anyone; it
    /// finds its neighbours by dialling out). A viewer gets a few seeds and then
    /// viewers, those with a free upload slot first, from a window of the swarm that
    /// starts at a random place (bounded work per announce whatever the swarm's size).
    /// A seed gets viewers only.
    fn choose(&self, swarm: &Swarm, me: &[u8; 8], role: Role, want: usize) -> Vec<PeerOut> {
        let n = swarm.peers.len();
        if n == 0 || want == 0 {
            return Vec::new();
        }
        let mut seeds_left = if role == Role::Viewer { self.cfg.seeds_per_list as usize } else { 0 };
        let mut out = Vec::with_capacity(want.min(n));
        let mut viewers = Vec::with_capacity((want * 2).min(n));
        let candidate = |p: &PeerRec| Candidate {
            out: PeerOut { ip: swarm.addr(p), port: p.port, seed: p.is_seed(), key: p.key },
            free_slots: p.free_slots,
        };
        let budget = (want * 4).max(64).min(n);
        let start = (self.random() % n as u64) as usize;
        for k in 0..budget {
            let p = &swarm.peers[(start + k) % n];
            if p.key == *me || !p.reachable() {
                continue;
            }
            if p.is_seed() {
                if seeds_left > 0 && out.len() < want {
                    seeds_left -= 1;
                    out.push(candidate(p).out);
                }
            } else {
                viewers.push(candidate(p));
            }
        }
        // Seeds are few; if the window missed them, a viewer still gets one.
        if seeds_left > 0 && swarm.seeds as usize > out.len() {
            for p in swarm.peers.iter().filter(|p| p.is_seed() && p.reachable()) {
                if seeds_left == 0 || out.len() >= want {
                    break;
                }
                if !out.iter().any(|q: &PeerOut| q.key == p.key) {
                    seeds_left -= 1;
                    out.push(candidate(p).out);
                }
            }
        }
        peer_list(out, viewers, want)
    }

    /// (seeds, viewers) of a swarm, for scrape.
    pub fn scrape(&self, info_hash: &[u8; 20]) -> (u32, u32) {
        let shard = self.shard(info_hash);
        shard.swarms.get(info_hash).map_or((0, 0), |s| (s.seeds, s.peers.len() as u32 - s.seeds))
    }

    /// Drops peers not heard from within the timeout and swarms left empty; gives
    /// back memory a shrunken swarm no longer needs.
    pub fn sweep(&self, now_s: u32) -> SweepStats {
        let mut stats = SweepStats::default();
        for shard in self.shards.iter() {
            let mut guard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Shard { swarms, left, .. } = &mut *guard;
            swarms.retain(|info_hash, swarm| {
                let mut i = 0;
                while i < swarm.peers.len() {
                    if now_s.saturating_sub(swarm.peers[i].last_seen) > self.cfg.peer_timeout_s {
                        keep_sighting(left, info_hash, swarm.remove(&self.hasher, i));
                        stats.expired_peers += 1;
                    } else {
                        i += 1;
                    }
                }
                swarm.shrink(&self.hasher);
                let keep = !swarm.is_idle();
                stats.pruned_swarms += u64::from(!keep);
                keep
            });
            if swarms.capacity() > 2 * swarms.len() + 16 {
                swarms.shrink_to_fit();
            }
        }
        stats
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            t.swarms += shard.swarms.len() as u64;
            for s in shard.swarms.values() {
                t.seeds += u64::from(s.seeds);
                t.viewers += (s.peers.len() as u32 - s.seeds) as u64;
            }
        }
        t
    }

    /// Heap bytes held for swarms and peers (capacities, not lengths).
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                shard.swarms.capacity() * (20 + size_of::<Swarm>() + 1)
                    + shard.swarms.values().map(Swarm::heap_bytes).sum::<usize>()
                    + shard.left.capacity() * size_of::<([u8; 20], PeerRec)>()
                    + shard.capped.capacity() * size_of::<Capped>()
            })
            .sum()
    }
}

/// A peer list from the seeds chosen and the candidate viewers (in the random order
/// they were sampled in): the seeds, then viewers that say they have a free upload
/// slot, then the rest, `want` in all. How many slots a viewer claims is not ranked:
/// the claim is unchecked, and ranking by it let one announcer claiming 255 top every
/// list it was sampled into.
pub(crate) fn peer_list(mut out: Vec<PeerOut>, mut viewers: Vec<Candidate>, want: usize) -> Vec<PeerOut> {
    viewers.sort_by_key(|c| c.free_slots == 0);
    let room = want.saturating_sub(out.len());
    out.extend(viewers.into_iter().take(room).map(|c| c.out));
    out
}

/// The compact peer strings (BEP 23 for IPv4, BEP 7 for IPv6).
pub fn compact(peers: &[PeerOut]) -> (Vec<u8>, Vec<u8>) {
    let mut v4 = Vec::with_capacity(peers.len() * 6);
    let mut v6 = Vec::new();
    for p in peers {
        match p.ip {
            IpAddr::V4(ip) => {
                v4.extend_from_slice(&ip.octets());
                v4.extend_from_slice(&p.port.to_be_bytes());
            }
            IpAddr::V6(ip) => {
                v6.extend_from_slice(&ip.octets());
                v6.extend_from_slice(&p.port.to_be_bytes());
            }
        }
    }
    (v4, v6)
}

/// An unspecified address, for callers that have none (tests).
pub const NO_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ann(hash: u8, id: u32, role: Role, reachable: bool, slots: u8) -> Announce {
        let mut peer_id = [b'x'; 20];
        peer_id[..4].copy_from_slice(&id.to_be_bytes());
        Announce { role, reachable, free_slots: slots, ..Announce::new([hash; 20], peer_id, 7000 + (id % 1000) as u16) }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_record_is_36_bytes_and_a_swarm_96() {
        // What keeps the store near 50 bytes a peer with ~10 peers a swarm (`shoal bench tracker`).
        assert_eq!(size_of::<PeerRec>(), 36);
        assert_eq!(size_of::<Swarm>(), 96);
    }

    #[test]
    fn lists_dialable_peers_seeds_first_then_least_loaded_never_self() {
        let s = Swarms::new(StoreConfig::default());
        s.announce(0, &ann(1, 1, Role::Seed, true, 0), ip(1));
        s.announce(0, &ann(1, 2, Role::Viewer, true, 1), ip(2));
        s.announce(0, &ann(1, 3, Role::Viewer, true, 9), ip(3));
        s.announce(0, &ann(1, 4, Role::Viewer, false, 50), ip(4));
        let r = s.announce(0, &ann(1, 5, Role::Viewer, false, 0), ip(5));
        assert_eq!((r.seeds, r.viewers), (1, 4));
        let ids: Vec<u16> = r.peers.iter().map(|p| p.port - 7000).collect();
        assert_eq!(ids[0], 1, "the seed first");
        assert_eq!(
            ids[1..].iter().copied().collect::<HashSet<u16>>(),
            HashSet::from([2, 3]),
            "no unreachable, not self"
        );
        assert_eq!(r.peers[0].ip, ip(1));
        assert_eq!(r.peers[0].port, 7001);
        // A seed gets viewers only.
        let r = s.announce(0, &ann(1, 1, Role::Seed, true, 0), ip(1));
        assert!(r.peers.iter().all(|p| !p.seed) && r.peers.len() == 2);
    }

    #[test]
    fn claiming_more_free_slots_does_not_top_the_lists() {
        let s = Swarms::new(StoreConfig::default());
        s.announce(0, &ann(4, 1, Role::Seed, true, 0), ip(1));
        for id in 2..52 {
            s.announce(0, &ann(4, id, Role::Viewer, true, 1), ip(id));
        }
        let liar = 99;
        s.announce(0, &ann(4, liar, Role::Viewer, true, u8::MAX), ip(liar));
        let full = 98;
        s.announce(0, &ann(4, full, Role::Viewer, true, 0), ip(full));
        let (mut with_liar, mut with_full) = (0, 0);
        // One viewer announcing again and again: the swarm (54) fits in one sample
        // window, so every list is drawn from all of it.
        let mut a = ann(4, 1_000, Role::Viewer, false, 0);
        a.numwant = 10;
        for _ in 0..100 {
            let ports: Vec<u16> = s.announce(0, &a, ip(1_000)).peers.iter().map(|p| p.port - 7000).collect();
            with_liar += usize::from(ports.contains(&(liar as u16)));
            with_full += usize::from(ports.contains(&(full as u16)));
        }
        // Before: the liar was in all 100 lists. Now it is one of 51 viewers with room.
        assert!(with_liar < 40, "the liar was in {with_liar} of 100 lists");
        assert_eq!(with_full, 0, "a viewer without a free slot comes after those with one");
    }

    #[test]
    fn numwant_bounds_the_list_and_the_work() {
        let s = Swarms::new(StoreConfig::default());
        for id in 0..5_000 {
            s.announce(0, &ann(2, id, Role::Viewer, true, (id % 7) as u8), ip(id));
        }
        let mut a = ann(2, 9_999, Role::Viewer, true, 0);
        a.numwant = 10;
        assert_eq!(s.announce(0, &a, ip(9_999)).peers.len(), 10);
        a.numwant = 100_000;
        assert_eq!(s.announce(0, &a, ip(9_999)).peers.len(), 200, "max_numwant");
    }

    #[test]
    fn stopped_removes_and_empty_swarms_go() {
        let s = Swarms::new(StoreConfig::default());
        s.announce(0, &ann(3, 1, Role::Viewer, true, 0), ip(1));
        let mut a = ann(3, 2, Role::Viewer, true, 0);
        s.announce(0, &a, ip(2));
        a.event = Event::Stopped;
        let r = s.announce(0, &a, ip(2));
        assert_eq!((r.seeds, r.viewers), (0, 1));
        let mut b = ann(3, 1, Role::Viewer, true, 0);
        b.event = Event::Stopped;
        s.announce(0, &b, ip(1));
        assert_eq!(s.totals(), Totals::default());
    }

    #[test]
    fn silent_peers_expire_and_memory_comes_back() {
        let s = Swarms::new(StoreConfig::default());
        for h in 0..50u8 {
            for id in 0..100 {
                s.announce(0, &ann(h, id, Role::Viewer, true, 0), ip(id));
            }
        }
        let full = s.heap_bytes();
        // Half the channels' peers keep announcing.
        for h in 0..25u8 {
            for id in 0..100 {
                s.announce(100, &ann(h, id, Role::Viewer, true, 0), ip(id));
            }
        }
        let st = s.sweep(200);
        assert_eq!(st, SweepStats { expired_peers: 2_500, pruned_swarms: 25 });
        assert_eq!(s.totals(), Totals { swarms: 25, seeds: 0, viewers: 2_500 });
        assert!(s.heap_bytes() < full * 3 / 4, "{} of {full}", s.heap_bytes());
        assert_eq!(s.sweep(400).expired_peers, 2_500);
        assert_eq!(s.totals(), Totals::default());
    }

    #[test]
    fn role_change_and_re_announce_keep_counts_right() {
        let s = Swarms::new(StoreConfig::default());
        s.announce(0, &ann(4, 1, Role::Viewer, true, 0), ip(1));
        s.announce(1, &ann(4, 1, Role::Viewer, true, 3), ip(9));
        assert_eq!(s.scrape(&[4; 20]), (0, 1));
        s.announce(2, &ann(4, 1, Role::Seed, true, 0), ip(1));
        assert_eq!(s.scrape(&[4; 20]), (1, 0));
        let r = s.announce(3, &ann(4, 2, Role::Viewer, true, 0), ip(2));
        assert_eq!(r.peers[0].ip, ip(1), "the address is the latest announce's");
    }

    #[test]
    fn index_stays_consistent_through_removals() {
        let s = Swarms::new(StoreConfig::default());
        for id in 0..300 {
            s.announce(id % 3, &ann(5, id, Role::Viewer, true, 0), ip(id));
        }
        // Every third peer re-announces late; the others expire in one sweep.
        for id in (0..300).step_by(3) {
            s.announce(500, &ann(5, id, Role::Viewer, true, 0), ip(id));
        }
        assert_eq!(s.sweep(600).expired_peers, 200);
        // Each survivor is still found by id (a re-announce updates, not duplicates).
        for id in (0..300).step_by(3) {
            s.announce(601, &ann(5, id, Role::Viewer, true, 1), ip(id));
        }
        assert_eq!(s.scrape(&[5; 20]), (0, 100));
    }

    proptest::proptest! {
        /// Announces, stops and sweeps in any order, across the scan/index threshold,
        /// agree with a plain map of who is in the swarm.
        #[test]
        fn agrees_with_a_model(ops in proptest::collection::vec((0u32..80, 0u8..10), 1..400)) {
            use std::collections::BTreeMap;
            let s = Swarms::new(StoreConfig { peer_timeout_s: 5, ..StoreConfig::default() });
            // id -> (seed, last_seen, address); a third of announces come from IPv6.
            let mut model: BTreeMap<u32, (bool, u32, IpAddr)> = BTreeMap::new();
            let at = |id: u32, now: u32| {
                if (id + now).is_multiple_of(3) { IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, now as u16, id as u16)) } else { ip(id) }
            };
            for (t, (id, op)) in ops.into_iter().enumerate() {
                let now = t as u32;
                match op {
                    0 => {
                        let mut a = ann(9, id, Role::Viewer, true, 0);
                        a.event = Event::Stopped;
                        s.announce(now, &a, ip(id));
                        model.remove(&id);
                    }
                    1 => {
                        s.sweep(now);
                        model.retain(|_, (_, seen, _)| now - *seen <= 5);
                    }
                    2 => {
                        s.announce(now, &ann(9, id, Role::Seed, true, 0), at(id, now));
                        model.insert(id, (true, now, at(id, now)));
                    }
                    _ => {
                        s.announce(now, &ann(9, id, Role::Viewer, true, op), at(id, now));
                        model.insert(id, (false, now, at(id, now)));
                    }
                }
                let seeds = model.values().filter(|(seed, ..)| *seed).count() as u32;
                proptest::prop_assert_eq!(s.scrape(&[9; 20]), (seeds, model.len() as u32 - seeds));
                // Every peer's address is its latest announce's; the IPv6 table holds a
                // slot per IPv6 peer and no more than it needs.
                let shard = s.shard(&[9; 20]);
                if let Some(swarm) = shard.swarms.get(&[9; 20]) {
                    let want: BTreeMap<[u8; 8], IpAddr> =
                        model.iter().map(|(&id, &(.., a))| (peer_key(&ann(9, id, Role::Viewer, true, 0).peer_id), a)).collect();
                    let got: BTreeMap<[u8; 8], IpAddr> = swarm.peers.iter().map(|p| (p.key, swarm.addr(p))).collect();
                    proptest::prop_assert_eq!(got, want);
                    let v6_peers = swarm.peers.iter().filter(|p| p.flags & V6 != 0).count();
                    let taken = swarm.v6.as_ref().map_or(0, |t| t.slots.len() - t.free.len());
                    proptest::prop_assert_eq!(taken, v6_peers);
                    proptest::prop_assert!(v6_peers > 0 || swarm.v6.is_none());
                }
            }
        }
    }

    /// An hour's start, so tests know where hours turn.
    const H0: u64 = 1_800_000_000; // a multiple of 3600

    fn watched(hash: u8, id: u32, w: u64) -> Announce {
        Announce { watched_s: Some(w), ..ann(hash, id, Role::Viewer, true, 0) }
    }

    #[test]
    fn made_up_ids_past_an_address_or_network_cap_are_answered_but_neither_listed_nor_metered() {
        let cfg = StoreConfig { max_ids_per_address: 4, max_ids_per_network: 6, ..StoreConfig::default() };
        let s = Swarms::with_epoch(cfg, H0);
        let at = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        // Ten ids from one address, then each again 30 s later, counters moving.
        let over = |t: u32, w: u64, ids: std::ops::RangeInclusive<u32>, from: IpAddr| {
            ids.map(|id| s.announce(t, &watched(1, id, w), from).over_cap).collect::<Vec<_>>()
        };
        let first = over(0, 0, 1..=10, at(203, 0, 113, 1));
        assert_eq!(first[..4], [None; 4]);
        assert_eq!(first[4..], [Some("address_cap"); 6]);
        let r = s.announce(0, &ann(1, 99, Role::Viewer, true, 0), at(198, 51, 100, 9));
        assert_eq!((r.viewers, r.over_cap), (5, None), "four listed from that address, and this one");
        assert!(r.peers.iter().filter(|p| p.ip == at(203, 0, 113, 1)).count() <= 4);
        // An id over the cap is still answered: it may watch, from the peers it is given.
        let answered = s.announce(0, &watched(1, 7, 0), at(203, 0, 113, 1));
        assert_eq!(answered.over_cap, Some("address_cap"));
        assert!(!answered.peers.is_empty());
        // Metered: the four kept ids' 30 s each, nothing for the six made up beyond them.
        assert_eq!(over(30, 30, 1..=10, at(203, 0, 113, 1)).iter().flatten().count(), 6);
        let billed: u64 = s.drain_usage(H0 + 7_200).usage.iter().map(|u| u.viewer_seconds).sum();
        assert_eq!(billed, 4 * 30);
        // Its network (/24): two more ids from a neighbour address, then the cap.
        assert_eq!(over(30, 0, 11..=13, at(203, 0, 113, 2)), [None, None, Some("network_cap")]);
        // Another network, a seed on the capped address, and loopback are not capped.
        assert_eq!(
            over(30, 0, 14..=20, at(203, 0, 114, 1)),
            [None, None, None, None, Some("address_cap"), Some("address_cap"), Some("address_cap")]
        );
        assert_eq!(s.announce(30, &ann(1, 21, Role::Seed, true, 0), at(203, 0, 113, 1)).over_cap, None);
        assert!(over(30, 0, 100..=199, IpAddr::from([127, 0, 0, 1])).iter().all(Option::is_none));
        // A kept id that leaves makes room for another, noticed within 10 s (an address
        // found at its cap is not scanned for again before).
        s.announce(31, &Announce { event: Event::Stopped, ..watched(1, 1, 31) }, at(203, 0, 113, 1));
        assert_eq!(over(32, 0, 30..=30, at(203, 0, 113, 1)), [Some("address_cap")]);
        assert_eq!(over(40, 0, 30..=31, at(203, 0, 113, 1)), [None, Some("address_cap")]);
    }

    #[test]
    fn watched_counters_become_capped_viewer_seconds() {
        let s = Swarms::with_epoch(StoreConfig::default(), H0);
        s.announce(0, &watched(1, 1, 0), ip(1));
        s.announce(60, &watched(1, 1, 60), ip(1));
        // Claims 500 s two minutes into the hour: capped by the time since the last announce.
        s.announce(120, &watched(1, 1, 500), ip(1));
        // A peer seen for the first time is credited nothing: it just joined.
        s.announce(120, &watched(1, 2, 90), ip(2));
        let Drained { usage, marks, .. } = s.drain_usage(H0 + 7_200);
        assert_eq!(
            usage,
            vec![UsageDelta {
                info_hash: [1; 20],
                hour_start: H0,
                viewer_seconds: 125,
                peak_viewers: 2,
                ..Default::default()
            }]
        );
        // The marks: what was seen of each viewer (its claim capped at the time into the hour).
        let mark = |id: u32| marks.iter().find(|m| m.peer_key == peer_key(&watched(1, id, 0).peer_id)).unwrap();
        let one = mark(1);
        assert_eq!((one.first_seen, one.first_watched, one.last_seen, one.watched), (H0, 0, H0 + 120, 125));
        assert_eq!(one.billed(false), (125, 0), "the bill from the mark: as the per-announce credit");
        assert_eq!(mark(2).billed(false), (0, 0), "a joiner's first announce is its baseline");
        // Nothing new: nothing drained.
        assert_eq!(s.drain_usage(H0 + 7_200), Drained::default());
        // Next hour: the counter restarts from 0.
        s.announce(3_610, &watched(1, 1, 10), ip(1));
        let usage = s.drain_usage(H0 + 7_200).usage;
        assert_eq!((usage[0].hour_start, usage[0].viewer_seconds), (H0 + 3_600, 10));
    }

    #[test]
    fn viewers_and_seeds_downloaded_counters_are_marked_for_the_hour() {
        let s = Swarms::with_epoch(StoreConfig::default(), H0);
        let view = |w: u64, down: u64| Announce { downloaded: down, ..watched(1, 1, w) };
        let seed = |down: u64| Announce { downloaded: down, uploaded: 5, ..ann(1, 9, Role::Seed, true, 0) };
        s.announce(100, &view(0, 2_048_000), ip(1));
        s.announce(160, &view(60, 17_408_000), ip(1));
        s.announce(100, &seed(1_000_000), ip(9));
        s.announce(400, &seed(76_000_000), ip(9));
        let d = s.drain_usage(H0 + 3_000);
        assert_eq!((d.marks[0].first_down, d.marks[0].down, d.marks[0].bytes()), (2_048_000, 17_408_000, 15_360_000));
        let m = &d.seed_marks[0];
        assert_eq!((m.first_seen, m.last_seen, m.down_low, m.down_high), (H0 + 100, H0 + 400, 1_000_000, 76_000_000));
        assert_eq!(m.stream_rate(), Some(250_000.0));
        // After a drain the viewer's next mark starts at its counter then (the catalogue
        // keeps the earliest); a counter past 4 TiB is held at it, not wrapped.
        s.announce(220, &view(120, 32_768_000), ip(1));
        s.announce(280, &view(180, u64::MAX), ip(1));
        let v = &s.drain_usage(H0 + 3_000).marks[0];
        assert_eq!((v.first_down, v.down), (32_768_000, u64::from(u32::MAX) * 1024));
    }

    #[test]
    fn a_viewer_that_leaves_expires_or_crosses_the_hour_before_the_drain_keeps_its_marks() {
        let s = Swarms::with_epoch(StoreConfig::default(), H0 + 3_500);
        s.announce(0, &watched(1, 1, 3_500), ip(1));
        s.announce(60, &watched(1, 1, 3_560), ip(1));
        // Crosses into the next hour before a drain: both hours' marks.
        s.announce(120, &watched(1, 1, 20), ip(1));
        s.announce(0, &watched(1, 2, 3_500), ip(2));
        s.announce(30, &Announce { event: Event::Stopped, ..watched(1, 2, 3_530) }, ip(2));
        // Viewer 1 falls silent and expires before the drain.
        assert_eq!(s.sweep(120 + 151).expired_peers, 1);
        let marks = s.drain_usage(H0 + 7_200).marks;
        let keys: std::collections::BTreeSet<[u8; 8]> = marks.iter().map(|m| m.peer_key).collect();
        assert_eq!((marks.len(), keys.len()), (3, 2), "{marks:#?}");
        let of = |id: u32, hour: u64| {
            marks
                .iter()
                .find(|m| m.peer_key == peer_key(&watched(1, id, 0).peer_id) && m.hour_start == hour)
                .unwrap()
                .clone()
        };
        assert_eq!(of(1, H0).billed(false), (60, 0));
        assert_eq!(of(1, H0 + 3_600).billed(true), (20, 0), "continuing: from the hour's start");
        assert_eq!(of(2, H0).billed(false), (30, 0), "its stop's counters count");
        assert_eq!(s.drain_usage(H0 + 7_200), Drained::default(), "drained once");
    }

    #[test]
    fn the_previous_hours_final_counters_bill_its_tail() {
        let s = Swarms::with_epoch(StoreConfig::default(), H0);
        let hour_mark = |marks: &[Mark], hour: u64| marks.iter().find(|m| m.hour_start == hour).cloned().unwrap();
        s.announce(3_500, &watched(1, 1, 3_500), ip(1));
        s.announce(3_560, &watched(1, 1, 3_560), ip(1));
        // 20 s into the next hour it says it watched 3,595 s of the last one.
        let next = Announce { watched_prev_s: Some(3_595), ..watched(1, 1, 20) };
        s.announce(3_620, &next, ip(1));
        s.announce(3_650, &next, ip(1));
        let marks = s.drain_usage(H0 + 7_200).marks;
        assert_eq!(marks.len(), 2, "{marks:#?}");
        assert_eq!(hour_mark(&marks, H0).billed(false), (95, 0), "to the hour's end, not 60");
        assert_eq!(hour_mark(&marks, H0 + 3_600).billed(true), (20, 0));
        // Another replica that saw nothing of the last hour notes its end alone (merged
        // in the catalogue with the first replica's mark); late in the hour, or from a
        // viewer already seen this hour here, the claim is not taken.
        let other = Swarms::with_epoch(StoreConfig::default(), H0);
        other.announce(3_620, &next, ip(1));
        let alone = hour_mark(&other.drain_usage(H0 + 7_200).marks, H0);
        assert_eq!((alone.first_seen, alone.last_seen, alone.watched), (H0 + 3_599, H0 + 3_599, 3_595));
        other.announce(3_600 + 1_000, &Announce { watched_prev_s: Some(3_600), ..watched(1, 2, 5) }, ip(2));
        assert!(other.drain_usage(H0 + 7_200).marks.iter().all(|m| m.hour_start == H0 + 3_600));
    }

    #[test]
    fn marks_from_replicas_and_a_killed_tracker_merge_to_what_one_tracker_saw() {
        use std::collections::HashMap;
        // Two viewers announce every 30 s for 12 minutes; one tracker sees them all.
        let one = Swarms::with_epoch(StoreConfig::default(), H0);
        // Three replicas take the announces in turn; replica `c` is killed at 6 minutes
        // (what it saw since its last drain is lost) and restarted.
        let mut replicas = [0, 1, 2].map(|_| Swarms::with_epoch(StoreConfig::default(), H0));
        let mut written: Vec<Mark> = Vec::new();
        let mut turn = 0;
        for t in (0..=720u32).step_by(30) {
            for id in [1, 2] {
                let w = u64::from(t) + 7;
                one.announce(t, &watched(1, id, w), ip(id));
                replicas[turn % 3].announce(t, &watched(1, id, w), ip(id));
                turn += 1;
            }
            if t % 120 == 0 {
                for r in &replicas[..2] {
                    written.extend(r.drain_usage(H0 + 7_200).marks);
                }
            }
            if t == 360 {
                replicas[2] = Swarms::with_epoch(StoreConfig::default(), H0);
            } else if t % 120 == 0 {
                written.extend(replicas[2].drain_usage(H0 + 7_200).marks);
            }
        }
        for r in &replicas {
            written.extend(r.drain_usage(H0 + 7_200).marks);
        }
        let merged = |marks: Vec<Mark>| {
            let mut by: HashMap<[u8; 8], Mark> = HashMap::new();
            for m in marks {
                by.entry(m.peer_key).and_modify(|x| x.merge(&m)).or_insert(m);
            }
            let mut bill: Vec<_> = by.values().map(|m| (m.peer_key, m.billed(false))).collect();
            bill.sort();
            bill
        };
        let truth = merged(one.drain_usage(H0 + 7_200).marks);
        assert_eq!(truth.iter().map(|(_, b)| b.0).sum::<u64>(), 2 * 720);
        assert_eq!(merged(written), truth, "nothing lost, nothing counted twice");
    }

    #[test]
    fn ad_seconds_are_metered_within_the_seconds_credited() {
        let s = Swarms::with_epoch(StoreConfig::default(), H0);
        let ad = |id, w, a| Announce { ad_watched_s: Some(a), ..watched(1, id, w) };
        s.announce(0, &ad(1, 0, 0), ip(1));
        s.announce(60, &ad(1, 60, 30), ip(1));
        // Claims more ad seconds than seconds credited since: capped by those.
        s.announce(120, &ad(1, 100, 3_000), ip(1));
        // Without ad_watched, the ad counter stays where it was.
        s.announce(180, &watched(1, 1, 160), ip(1));
        let u = &s.drain_usage(H0 + 7_200).usage[0];
        assert_eq!((u.viewer_seconds, u.ad_viewer_seconds), (160, 30 + 40));
        // All of the next minute in ads: 60 s, though the counter claims 120 more.
        s.announce(240, &ad(1, 220, 220), ip(1));
        let u = &s.drain_usage(H0 + 7_200).usage[0];
        assert_eq!((u.viewer_seconds, u.ad_viewer_seconds), (60, 60));
    }

    #[test]
    fn seeds_uploaded_counters_become_seed_bytes_and_hourly_marks() {
        let s = Swarms::with_epoch(StoreConfig::default(), H0);
        let seed = |up: u64, event| {
            let mut a = ann(1, 9, Role::Seed, true, 0);
            a.uploaded = up;
            a.event = event;
            a
        };
        // (hour, low, high) of the drained seed marks.
        let marks = |d: &Drained| d.seed_marks.iter().map(|m| (m.hour_start, m.low, m.high)).collect::<Vec<_>>();
        let mark = |hour_start, low, high| (hour_start, low, high);
        s.announce(0, &seed(1_000, Event::Started), ip(9));
        s.announce(60, &seed(51_000, Event::None), ip(9));
        let d = s.drain_usage(H0 + 7_200);
        assert_eq!(d.usage[0].seed_bytes, 51_000, "from its start: all of it");
        assert_eq!(marks(&d), vec![mark(H0, 0, 51_000)], "started in the hour: its low is 0");
        // A counter that went down is a restarted seed: all of it is new.
        s.announce(120, &seed(7_000, Event::None), ip(9));
        // An impossible jump (more than 10 Gbit/s since the last announce) is capped.
        s.announce(121, &seed(u64::MAX / 2, Event::None), ip(9));
        let d = s.drain_usage(H0 + 7_200);
        assert_eq!(d.usage[0].seed_bytes, 7_000 + 6 * MAX_SEED_BYTES_PER_S);
        // Across the hour: the hour that ended is drained too, the next starts from
        // where the counter was.
        s.announce(3_590, &seed(u64::MAX / 2 + 1_000, Event::None), ip(9));
        s.announce(3_610, &seed(u64::MAX / 2 + 3_000, Event::None), ip(9));
        let d = s.drain_usage(H0 + 7_200);
        assert_eq!(
            marks(&d),
            vec![mark(H0, 0, u64::MAX / 2 + 1_000), mark(H0 + 3_600, u64::MAX / 2 + 1_000, u64::MAX / 2 + 3_000)]
        );
        // Another tracker (a replica, or this one restarted) credits a seed new to it
        // nothing of its own, but marks what it saw: the catalogue bills from marks.
        let b = Swarms::with_epoch(StoreConfig::default(), H0 + 3_600);
        b.announce(60, &seed(u64::MAX / 2 + 5_000, Event::None), ip(9));
        let d = b.drain_usage(H0 + 7_200);
        assert_eq!(d.usage.iter().map(|u| u.seed_bytes).sum::<u64>(), 0);
        assert_eq!(marks(&d), vec![mark(H0 + 3_600, u64::MAX / 2 + 5_000, u64::MAX / 2 + 5_000)]);
        // Its stop credits its last counter.
        b.announce(90, &seed(u64::MAX / 2 + 9_000, Event::Stopped), ip(9));
        let d = b.drain_usage(H0 + 7_200);
        assert_eq!(d.usage[0].seed_bytes, 4_000);
        assert_eq!(marks(&d), vec![mark(H0 + 3_600, u64::MAX / 2 + 5_000, u64::MAX / 2 + 9_000)]);
    }

    #[test]
    fn ipv6_peers_go_to_peers6() {
        let s = Swarms::new(StoreConfig::default());
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        s.announce(0, &ann(6, 1, Role::Viewer, true, 0), v6);
        s.announce(0, &ann(6, 2, Role::Viewer, true, 0), ip(2));
        let r = s.announce(0, &ann(6, 3, Role::Viewer, true, 0), ip(3));
        let (c4, c6) = compact(&r.peers);
        assert_eq!(c4, [10, 0, 0, 2, 0x1b, 0x5a]);
        assert_eq!(c6.len(), 18);
        assert_eq!(&c6[..16], &"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    }
}
