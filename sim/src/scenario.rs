//! Scenarios: the reference ones of `shared/docs/measuring.md`, by name, with every
//! field overridable.

use serde::{Deserialize, Serialize};

/// One simulated run. Times are in milliseconds unless the name says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Name reported in the JSON.
    pub name: String,
    /// Viewers present at any time (churn replaces leavers with joiners).
    pub viewers: u32,
    pub seeds: u32,
    pub bitrate_kbps: u32,
    /// Simulated time before measuring.
    pub warmup_s: u32,
    /// Simulated time measured.
    pub window_s: u32,
    /// Share of viewers that leave (and are replaced by as many joiners) per minute.
    pub churn_per_min: f64,
    pub rng_seed: u64,
    /// Hostile peers, of kind `attack`.
    pub attackers: u32,
    /// What the attackers do.
    pub attack: Attack,
    /// One-way delay between two nodes, drawn once per pair from this range.
    pub delay_min_ms: u32,
    pub delay_max_ms: u32,
    /// Probability that a message is lost on a link.
    pub loss: f64,
    /// Share of viewers behind NAT: they can only open connections to reachable nodes.
    pub unreachable_share: f64,
    /// Viewer upload capacity mix: (share of viewers, multiple of the bitrate).
    pub upload_mix: Vec<(f64, f64)>,
    pub seed_upload_kbps: u32,
    /// Delay from ingest to each seed.
    pub ingest_delay_ms: u32,
    pub playout_delay_ms: u32,
    /// Media duration of one piece.
    pub piece_ms: u32,
    /// Keyframe interval: a segment starts every `gop_ms`.
    pub gop_ms: u32,
    /// Initial viewers join uniformly over this span from the start.
    pub join_spread_ms: u32,
    pub n_substreams: u8,
    /// Push subscriptions each seed accepts at least.
    pub seed_child_slots: u32,
    /// Share of the audience's bytes the seeds' pushes may carry: each seed takes
    /// more children than `seed_child_slots` when the audience calls for it
    /// (`PeerConfig::seed_share_budget`).
    pub seed_share_budget: f64,
    /// Neighbours each seed accepts.
    pub seed_max_neighbours: u32,
    /// Neighbours each viewer tries to keep.
    pub viewer_neighbours: u32,
    /// Share of each viewer's upload given to push subscriptions (`PeerConfig::push_share`).
    pub viewer_push_share: f64,
    /// Viewers' `PeerConfig::repair_margin`, ms (unset: the peer's default).
    pub viewer_repair_margin_ms: Option<u32>,
    /// Viewers' `PeerConfig::hedge_margin`, ms (unset: the peer's default; 0: never).
    pub viewer_hedge_margin_ms: Option<u32>,
    /// Viewers' `PeerConfig::seed_repair_margin` (how close to the deadline they ask a
    /// seed), ms (unset: the peer's default).
    pub viewer_seed_repair_margin_ms: Option<u32>,
    /// Extra simulated time after the window so its last pieces can arrive.
    pub drain_ms: u32,
    /// The last seed dies (without a word, as a killed process) this far into the
    /// run; 0: no seed dies.
    pub seed_dies_at_ms: u32,
    /// Least time between two tracker answers to one viewer, ms: a viewer that wants
    /// peers sooner hears at the end of it, as `shoal viewer` announces for more peers
    /// at most every 5 s (5,000 is that cadence); 0: every want answered at once.
    pub announce_gap_ms: u32,
}

/// What hostile peers do. All claim the most attractive parent profile there is (one
/// hop from a seed or a seed, 1 ms behind ingest, free slots, every piece, unbounded
/// upload) and accept every subscription; they differ in what they then deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// Push and answer forged and tampered pieces.
    #[default]
    Forge,
    /// Send no piece at all; also subscribe to every substream at the seeds, to take
    /// their children's slots and sit on them.
    Withhold,
    /// Deliver genuine pieces, but 1.2 s late; also subscribe at the seeds.
    Liar,
    /// Claim no good profile; flood every neighbour instead, below the shell's message
    /// budget (which drops a connection over it): claims of pieces just ahead and far
    /// ahead, requests for every new piece (a leech), statuses pointing the start
    /// ahead. It pushes nothing and answers nothing.
    Flood,
    /// Withholders with many identities on few addresses (8 hosts in 2 /24s), which
    /// vouch for each other: each names another as the root that feeds it.
    Sybil,
}

impl Attack {
    pub const NAMES: &'static [&'static str] = &["forge", "withhold", "liar", "flood", "sybil"];

    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "forge" => Some(Attack::Forge),
            "withhold" => Some(Attack::Withhold),
            "liar" => Some(Attack::Liar),
            "flood" => Some(Attack::Flood),
            "sybil" => Some(Attack::Sybil),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Attack::Forge => "forge",
            Attack::Withhold => "withhold",
            Attack::Liar => "liar",
            Attack::Flood => "flood",
            Attack::Sybil => "sybil",
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::small()
    }
}

/// Upload capacity mix of measuring.md: 30 % at 0.5×, 40 % at 2×, 25 % at 4×, 5 % at 10×.
pub fn reference_upload_mix() -> Vec<(f64, f64)> {
    vec![(0.30, 0.5), (0.40, 2.0), (0.25, 4.0), (0.05, 10.0)]
}

impl Scenario {
    /// Names accepted by [`Scenario::by_name`].
    pub const NAMES: &'static [&'static str] = &["small", "ten-k", "hundred-k", "browsers"];

    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "small" => Some(Scenario::small()),
            "ten-k" => Some(Scenario::ten_k()),
            "hundred-k" => Some(Scenario::hundred_k()),
            "browsers" => Some(Scenario::browsers()),
            _ => None,
        }
    }

    /// measuring.md `ten-k`: 10,000 viewers, 4 seeds, 30 s + 90 s, 10 %/min churn.
    pub fn ten_k() -> Self {
        Scenario {
            name: "ten-k".into(),
            viewers: 10_000,
            seeds: 4,
            warmup_s: 30,
            window_s: 90,
            churn_per_min: 0.10,
            join_spread_ms: 10_000,
            ..Scenario::small()
        }
    }

    /// measuring.md `hundred-k`: 100,000 viewers, 8 seeds, 30 s + 60 s, 10 %/min churn.
    pub fn hundred_k() -> Self {
        Scenario {
            name: "hundred-k".into(),
            viewers: 100_000,
            seeds: 8,
            warmup_s: 30,
            window_s: 60,
            churn_per_min: 0.10,
            join_spread_ms: 20_000,
            ..Scenario::small()
        }
    }

    /// Issue 20's `browsers`: 10,000 watch pages. A page's upload is around 1 Mbit/s
    /// (0.6, 1 and 2 Mbit/s), so the channel is a browser rendition of 800 kbit/s; a
    /// page stays minutes (a third leave and are replaced each minute); the audience
    /// arrives in a burst at a programme's start (all 10,000 within 5 s); links are
    /// longer (20–120 ms one way). Pages are reached through ICE (the tracker relays
    /// offers): the simulator counts those as reachable, and the 15 % that ICE fails
    /// for (symmetric NATs, UDP blocked) as unreachable — they only reach seeds and
    /// the reachable. (Such pages play the seeder's HLS in life; here they stay in the
    /// swarm, which is the harder case.)
    pub fn browsers() -> Self {
        Scenario {
            name: "browsers".into(),
            viewers: 10_000,
            seeds: 4,
            bitrate_kbps: 800,
            warmup_s: 30,
            window_s: 90,
            churn_per_min: 0.33,
            join_spread_ms: 5_000,
            delay_min_ms: 20,
            delay_max_ms: 120,
            unreachable_share: 0.15,
            upload_mix: vec![(0.3, 0.75), (0.5, 1.25), (0.2, 2.5)],
            ..Scenario::small()
        }
    }

    /// measuring.md `small`: 100 viewers, 2 seeds, 3 Mbit/s, 20 s + 40 s, no churn.
    pub fn small() -> Self {
        Scenario {
            name: "small".into(),
            viewers: 100,
            seeds: 2,
            bitrate_kbps: 3_000,
            warmup_s: 20,
            window_s: 40,
            churn_per_min: 0.0,
            rng_seed: 1,
            attackers: 0,
            attack: Attack::Forge,
            delay_min_ms: 5,
            delay_max_ms: 50,
            loss: 0.001,
            unreachable_share: 0.5,
            upload_mix: reference_upload_mix(),
            seed_upload_kbps: 1_000_000,
            ingest_delay_ms: 5,
            playout_delay_ms: 1_500,
            piece_ms: 50,
            gop_ms: 2_000,
            join_spread_ms: 5_000,
            n_substreams: 4,
            seed_child_slots: swarm::peer::SEED_CHILD_SLOTS,
            seed_share_budget: swarm::peer::SEED_SHARE_BUDGET,
            seed_max_neighbours: swarm::peer::SEED_MAX_NEIGHBOURS as u32,
            viewer_neighbours: 12,
            viewer_push_share: swarm::peer::PUSH_SHARE,
            viewer_repair_margin_ms: None,
            viewer_hedge_margin_ms: None,
            viewer_seed_repair_margin_ms: None,
            drain_ms: 3_000,
            seed_dies_at_ms: 0,
            announce_gap_ms: 0,
        }
    }

    /// Checks the fields make a runnable scenario.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |m: &str| Err(format!("scenario {}: {m}", self.name));
        if self.seeds == 0 {
            return fail("needs at least one seed");
        }
        if self.bitrate_kbps == 0 || self.piece_ms == 0 || self.gop_ms < self.piece_ms {
            return fail("bitrate, piece_ms must be positive and gop_ms >= piece_ms");
        }
        if self.delay_min_ms > self.delay_max_ms {
            return fail("delay_min_ms > delay_max_ms");
        }
        if !(0.0..=1.0).contains(&self.loss) || !(0.0..=1.0).contains(&self.unreachable_share) {
            return fail("loss and unreachable_share are probabilities (0..=1)");
        }
        if !(0.0..=1.0).contains(&self.churn_per_min) {
            return fail("churn_per_min is a share of viewers per minute (0..=1)");
        }
        if !(0.0..=1.0).contains(&self.seed_share_budget) {
            return fail("seed_share_budget is a share of the audience's bytes (0..=1)");
        }
        let margins = [self.viewer_repair_margin_ms, self.viewer_hedge_margin_ms, self.viewer_seed_repair_margin_ms];
        if margins.into_iter().flatten().any(|m| m >= self.playout_delay_ms) {
            return fail("a viewer's repair, hedge or seed repair margin must be shorter than playout_delay_ms");
        }
        if !(0.0..=1.0).contains(&self.viewer_push_share) {
            return fail("viewer_push_share is a share of upload (0..=1)");
        }
        let total: f64 = self.upload_mix.iter().map(|(s, _)| s).sum();
        if self.upload_mix.is_empty()
            || (total - 1.0).abs() > 1e-6
            || self.upload_mix.iter().any(|&(s, m)| s < 0.0 || m <= 0.0)
        {
            return fail("upload_mix shares must be non-negative and sum to 1, multiples positive");
        }
        if self.n_substreams == 0 || self.n_substreams > 64 {
            return fail("n_substreams must be 1..=64");
        }
        if self.window_s == 0 {
            return fail("window_s must be positive");
        }
        if self.seed_dies_at_ms > 0 && self.seeds < 2 {
            return fail("seed_dies_at_ms needs a second seed to carry on");
        }
        Ok(())
    }

    /// TS packets per piece at this bitrate.
    pub fn packets_per_piece(&self) -> usize {
        let bytes = u64::from(self.bitrate_kbps) * 1000 / 8 * u64::from(self.piece_ms) / 1000;
        ((bytes / 188) as usize).clamp(1, swarm::piece::MAX_TS_PACKETS)
    }

    pub fn end_ms(&self) -> u64 {
        u64::from(self.warmup_s + self.window_s) * 1000 + u64::from(self.drain_ms)
    }
}
