//! The peer's configuration: every knob, documented, with defaults for a 3 Mbit/s
//! channel cut into 50 ms pieces.

use crate::piece::ChannelId;
use crate::wire::{MAX_HAVE_WORDS, MAX_SUBSTREAMS, PeerId, Role};

use super::{MS, Micros, SECOND};

/// Everything a peer needs to know.
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
    /// Substreams the channel is split into (1..=64); a property of the channel.
    pub n_substreams: u8,
    /// Share of `upload_kbps` given to push subscriptions; the rest serves repairs.
    pub push_share: f64,
    /// Push subscriptions this peer accepts, overriding the figure derived from
    /// `upload_kbps` (a seed uses it to cap its share of the traffic). A seed spreads
    /// them evenly over the substreams.
    pub max_child_slots: Option<u32>,
    /// (Seeds) share of the audience's bytes the seeds' pushes may carry together. A
    /// seed told the audience ([`super::Peer::handle_audience`]) takes that many
    /// children, never fewer than `max_child_slots`: more children at the top of the
    /// push trees make them shallower, and the share stays within this budget.
    pub seed_share_budget: f64,
    /// Pieces kept behind the newest one.
    pub window_pieces: u64,
    /// How far past the newest verified piece a claim or piece may be.
    pub max_ahead_pieces: u64,
    /// Pieces in a row a neighbour that is not their substream's parent may send that
    /// we already hold before it is dropped for flooding (honest overlap — late
    /// answers, pushes in flight after an unsubscribe — is a few).
    pub max_useless_pieces: u32,
    /// How far in the future a piece timestamp may be (clock skew allowance).
    pub max_clock_skew: Micros,
    /// Oldest piece timestamp accepted, relative to now: older is a replay.
    pub max_piece_age: Micros,
    /// Delay from a piece's ingest timestamp to its playout.
    pub playout_delay: Micros,
    /// A joiner starts at a segment start it already holds, rather than wait for the
    /// newest, if that one is at most this old.
    pub max_start_lag: Micros,
    /// Neighbours this peer tries to keep.
    pub target_neighbours: usize,
    /// Neighbours beyond which incoming connections are refused.
    pub max_neighbours: usize,
    /// Neighbours wanted in each club (the peers that forward one substream).
    pub min_per_club: usize,
    /// How long to wait for a push before pulling a missing piece when the push
    /// latency of its substream is not known yet. Once known, the wait is that latency
    /// plus two mean deviations.
    pub repair_wait: Micros,
    /// The least wait after learning a piece is missing, and the whole wait when no
    /// parent feeds its substream.
    pub repair_wait_min: Micros,
    /// Pull at the latest this long before the playout deadline, whatever the parent.
    pub repair_margin: Micros,
    /// Pull from a seed only this close to the deadline (seeds' upload is the
    /// broadcaster's cost); viewers are asked first.
    pub seed_repair_margin: Micros,
    /// When an unanswered request is given up and sent elsewhere.
    pub request_timeout: Micros,
    /// A request still unanswered this long before the piece's playout deadline is
    /// given up for another source (0: never; a request then waits for its timeout).
    pub hedge_margin: Micros,
    /// Most requests outstanding at one neighbour.
    pub max_requests_per_neighbour: u32,
    /// Most requests of one neighbour this peer queues for answering.
    pub max_queued_responses: u32,
    /// A request is refused (`Busy`) when the uplink's queued piece data would take
    /// longer than this to send at the rate our pushes leave free (they go first): the
    /// requester does better asking elsewhere.
    pub max_response_backlog: Micros,
    /// What a neighbour that gives us nothing (no piece, no push; everyone, at a seed)
    /// may take from us by request, as a share of the stream's rate, sustained (a seed
    /// told the audience gives each less when `seed_share_budget` × viewers / seeds
    /// streams shared by the neighbours it has is less)...
    pub free_repair_share: f64,
    /// ...and at once, as this much of the stream: a joiner's start segment, an
    /// orphan's gap after its seed died. Past it such a neighbour gets `Busy`.
    pub free_repair_burst: Micros,
    /// Period of housekeeping: parent choice, keep-alive, idle checks.
    pub tick: Micros,
    /// `Status` is re-sent this often even when nothing but latencies changed...
    pub status_interval: Micros,
    /// ...and, when slots or depths changed, no more often than this.
    pub status_min_gap: Micros,
    /// A `Ping` (RTT measurement, liveness) goes to each neighbour this often.
    pub keepalive: Micros,
    /// A neighbour silent this long is dropped. `Status` keeps a healthy link busier.
    pub idle_timeout: Micros,
    /// A neighbour that has neither given us a new piece nor taken one from us for
    /// this long is replaced when we have all the neighbours we want.
    pub useless_after: Micros,
    /// A parent that pushed nothing for this long while the stream flows is dropped.
    pub parent_stall: Micros,
    /// A parent is replaced by one predicted to deliver at least this much sooner...
    pub switch_gain: Micros,
    /// ...but not sooner than this after it was chosen.
    pub switch_hold: Micros,
    /// Extra cost, in µs, a seed parent or repair source counts against a viewer
    /// (keeps seeds' upload for injection and last-resort repair).
    pub seed_parent_penalty: Micros,
    /// A neighbour's count of failures (unanswered requests and the like) drops by one
    /// this often: failures are forgiven slowly.
    pub forgive_every: Micros,
    /// An outgoing connection not established within this is given up.
    pub connect_timeout: Micros,
    /// More peers are asked of the tracker at most this often.
    pub want_peers_every: Micros,
    /// A viewer with all the neighbours it wants replaces its least useful one at most
    /// this often.
    pub replace_every: Micros,
    /// A viewer whose substreams all have a parent reconsiders them this often
    /// (orphaned substreams look for one every tick).
    pub parent_review_every: Micros,
    /// (Seeds) a child that no other neighbour has said it is fed through for this
    /// long may lose its slot to a subscriber, and gets none again here for a minute
    /// (doubling with each time, to 16 minutes).
    pub child_probation: Micros,
}

/// Push subscriptions a seed accepts: a few children at the top of each push tree
/// (what the simulator's measurements chose; its scenarios start from it).
pub const SEED_CHILD_SLOTS: u32 = 16;
/// Share of the audience's bytes the seeds' pushes may carry together; repairs come on
/// top (see `seed_share_budget`), and together they stayed under the 1 % target in the
/// scenarios measured with it (`browsers`, `ten-k` and its flood). At 0.5 % the
/// `browsers` scenario (10,000 pages, 30 % of them uploading 0.75× the stream) had a
/// continuity of 0.99867; at 0.75 %, 0.99911 with the seeds at 0.96 % of the bytes
/// (`shoal sim`, 2026-12-05, docs/measurements.md).
pub const SEED_SHARE_BUDGET: f64 = 0.0075;
/// Neighbours a seed accepts: many, for pull repair near the deadline.
pub const SEED_MAX_NEIGHBOURS: usize = 2_500;
/// Share of a peer's upload given to push subscriptions by default.
pub const PUSH_SHARE: f64 = 0.8;

impl PeerConfig {
    pub fn new(role: Role, peer_id: PeerId, channel: ChannelId) -> Self {
        PeerConfig {
            role,
            peer_id,
            channel,
            reachable: true,
            upload_kbps: 6_000,
            stream_kbps: 3_000,
            n_substreams: 4,
            push_share: PUSH_SHARE,
            max_child_slots: None,
            seed_share_budget: SEED_SHARE_BUDGET,
            window_pieces: 256,
            max_ahead_pieces: 200,
            max_useless_pieces: 128,
            max_clock_skew: 5 * SECOND,
            max_piece_age: 60 * SECOND,
            playout_delay: 1_500 * MS,
            max_start_lag: 3 * SECOND,
            target_neighbours: 12,
            max_neighbours: 48,
            min_per_club: 2,
            repair_wait: 400 * MS,
            repair_wait_min: 30 * MS,
            repair_margin: 500 * MS,
            seed_repair_margin: 350 * MS,
            request_timeout: 800 * MS,
            hedge_margin: 400 * MS,
            max_requests_per_neighbour: 8,
            max_queued_responses: 16,
            max_response_backlog: 300 * MS,
            free_repair_share: 0.1,
            free_repair_burst: 3 * SECOND,
            tick: 100 * MS,
            status_interval: 3 * SECOND,
            status_min_gap: 500 * MS,
            keepalive: 10 * SECOND,
            idle_timeout: 15 * SECOND,
            useless_after: 15 * SECOND,
            parent_stall: SECOND,
            switch_gain: 150 * MS,
            switch_hold: 5 * SECOND,
            seed_parent_penalty: 150 * MS,
            forgive_every: 2 * SECOND,
            connect_timeout: 5 * SECOND,
            want_peers_every: SECOND,
            replace_every: 5 * SECOND,
            parent_review_every: SECOND,
            child_probation: 10 * SECOND,
        }
    }

    /// The seed profile, the one that seeders and the simulator's seeds share:
    /// [`SEED_CHILD_SLOTS`] children, [`SEED_MAX_NEIGHBOURS`] neighbours, and no dialling
    /// out (viewers come to seeds).
    pub fn seed(peer_id: PeerId, channel: ChannelId) -> Self {
        PeerConfig {
            max_child_slots: Some(SEED_CHILD_SLOTS),
            max_neighbours: SEED_MAX_NEIGHBOURS,
            target_neighbours: 0,
            ..Self::new(Role::Seed, peer_id, channel)
        }
    }

    /// Push subscriptions accepted in all.
    pub(super) fn child_slots(&self) -> u32 {
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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.n_substreams == 0 || self.n_substreams as usize > MAX_SUBSTREAMS {
            return Err(ConfigError::Substreams(self.n_substreams));
        }
        if !(8..=(MAX_HAVE_WORDS as u64 * 64)).contains(&self.window_pieces) {
            return Err(ConfigError::Window { got: self.window_pieces });
        }
        if !(0.0..=1.0).contains(&self.seed_share_budget) {
            return Err(ConfigError::SeedShareBudget);
        }
        Ok(())
    }
}

/// The club a peer belongs to: the one substream it forwards as an inner node of the
/// push tree. Derived from the peer id, so the tracker and every neighbour know it.
pub fn club_of(peer_id: PeerId, n_substreams: u8) -> usize {
    (peer_id.0 % u64::from(n_substreams.max(1))) as usize
}

/// Why a configuration can't run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("n_substreams must be 1..={MAX_SUBSTREAMS}, got {0}")]
    Substreams(u8),
    #[error("window_pieces must be 8..={max}, got {got}", max = MAX_HAVE_WORDS * 64)]
    Window { got: u64 },
    #[error("seed_share_budget must be a share of the audience's bytes, 0..=1")]
    SeedShareBudget,
    #[error("channel id is not a valid Ed25519 key, or the verifier is for another channel")]
    Channel,
}
