//! Numbering from the feed's own timeline: what makes two ingest nodes given the same
//! feed cut the same pieces.
//!
//! An **epoch** binds a feed's timeline to the channel's numbering and to wall time:
//! the feed timestamp `raw0` is relative time 0, which is sequence number `seq0` and
//! wall time `wall0_us`. Within an epoch a frame's place follows from its own timestamp
//! alone: `rel` = its timestamp minus `raw0` (unwrapped across the clock's wrap), its
//! grid cell `rel / piece_ms` is its sequence number minus `seq0`, and its wall time is
//! `wall0_us + rel`. Nothing depends on when a node started reading the feed or on its
//! clock, so a node that joins (a backup ingest, a restarted one) cuts the pieces the
//! others cut, byte for byte — Ed25519 signatures being deterministic, signature for
//! signature.
//!
//! Epochs are agreed through a shared store (the catalogue): a node whose feed sits on
//! the newest epoch's timeline (its timestamp is where that epoch's clock says the feed
//! should be now, within [`MATCH_MS`]) binds to it; otherwise it proposes the next
//! epoch, and whichever proposal the store took first is the one every node uses. A new
//! epoch (an encoder restarted, timestamps reset or jumped) starts its numbering past
//! every number the previous one can have used ([`Epoch::next_seq0`]): numbers only
//! rise, and only by the unused slots of the outage.
//!
//! The numbering stays bound to wall time (the hostile-audience rule,
//! [`swarm::piece::clock_seq`]): a channel's first epoch starts at the clock's number,
//! pieces advance one per `piece_ms` (slower than the clock's [`SEQ_PER_SECOND`]), and a
//! publisher whose media runs ahead of the wall clock is held back by ingest.

use swarm::piece::{MAX_AHEAD_OF_CLOCK, SEQ_PER_SECOND, clock_seq};

/// How far a feed's timestamp may sit from where an epoch's clock expects it and still
/// be on that epoch's timeline, ms: encoder and network latency, a reconnect's gap.
pub const MATCH_MS: i64 = 3_000;

/// Numbers left unused past an epoch's bound, for pieces a frame too big for one piece
/// pushed ahead of the grid.
const SPILL_ROOM: u64 = 16;

/// How a feed counts time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedClock {
    /// RTMP: 32-bit milliseconds.
    Rtmp,
    /// MPEG-TS (SRT): 33-bit, 90 kHz.
    MpegTs,
}

impl FeedClock {
    pub fn bits(self) -> u32 {
        match self {
            FeedClock::Rtmp => 32,
            FeedClock::MpegTs => 33,
        }
    }

    pub fn ticks_per_ms(self) -> i64 {
        match self {
            FeedClock::Rtmp => 1,
            FeedClock::MpegTs => 90,
        }
    }

    /// As stored.
    pub fn label(self) -> &'static str {
        match self {
            FeedClock::Rtmp => "rtmp",
            FeedClock::MpegTs => "mpegts",
        }
    }

    pub fn from_label(s: &str) -> Option<FeedClock> {
        match s {
            "rtmp" => Some(FeedClock::Rtmp),
            "mpegts" => Some(FeedClock::MpegTs),
            _ => None,
        }
    }

    fn modulus(self) -> u64 {
        1u64 << self.bits()
    }
}

/// One binding of a feed's timeline to the channel's numbering and to wall time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// 1, 2, …: the store keeps one epoch per number, the first proposed.
    pub number: u64,
    pub clock: FeedClock,
    /// The feed timestamp (raw, in the clock's ticks) at relative time 0.
    pub raw0: u64,
    /// Sequence number of grid cell 0.
    pub seq0: u64,
    /// Wall time at relative time 0, µs since the Unix epoch.
    pub wall0_us: u64,
    /// Grid cell (piece) length, ms.
    pub piece_ms: u32,
    /// When a node last said it was cutting pieces of this epoch, µs since the Unix
    /// epoch (0: never). Not part of what the epoch is ([`Epoch::same`]).
    pub cut_at_us: u64,
}

impl Epoch {
    /// The epoch that follows `prev` (the newest in the store, if any) for a feed whose
    /// timestamp `raw` arrived at `now_us`; numbered from `floor` at least (the number
    /// after the highest this node cut).
    pub fn successor(
        prev: Option<&Epoch>,
        clock: FeedClock,
        raw: u64,
        now_us: u64,
        piece_ms: u32,
        floor: u64,
    ) -> Epoch {
        let seq0 = match prev {
            Some(p) => p.next_seq0(now_us),
            // A channel's first epoch: from the clock, as numbering always began.
            None => clock_seq(now_us) + 1,
        }
        .max(floor);
        Epoch {
            number: prev.map_or(1, |p| p.number + 1),
            clock,
            raw0: raw % clock.modulus(),
            seq0,
            wall0_us: now_us,
            piece_ms: piece_ms.max(1),
            cut_at_us: 0,
        }
    }

    /// The same epoch (what binds the timeline; not when it was last cut).
    pub fn same(&self, other: &Epoch) -> bool {
        (self.number, self.clock, self.raw0, self.seq0, self.wall0_us, self.piece_ms)
            == (other.number, other.clock, other.raw0, other.seq0, other.wall0_us, other.piece_ms)
    }

    /// Nobody said they were cutting it in the last `within_us` before `now_us`.
    pub fn unattended(&self, now_us: u64, within_us: u64) -> bool {
        now_us.saturating_sub(self.cut_at_us) > within_us
    }

    /// Where the feed timestamp `raw`, seen at `now_us`, lies on this epoch's timeline:
    /// its relative time in ticks — the value congruent to `raw - raw0` (modulo the
    /// clock's wrap) nearest to where this epoch's wall clock says the feed is now —
    /// if that is within [`MATCH_MS`] of it; `None` if the feed is not on this timeline.
    pub fn place(&self, clock: FeedClock, raw: u64, now_us: u64) -> Option<i64> {
        if clock != self.clock {
            return None;
        }
        let tpm = clock.ticks_per_ms();
        let modulus = clock.modulus() as i128;
        let expected = (i128::from(now_us) - i128::from(self.wall0_us)) / 1_000 * i128::from(tpm);
        let diff = (i128::from(raw % clock.modulus()) - i128::from(self.raw0)).rem_euclid(modulus);
        // The congruent value nearest to `expected`.
        let wraps = (expected - diff + modulus / 2).div_euclid(modulus);
        let rel = diff + wraps * modulus;
        let off_ms = (rel - expected).abs() / i128::from(tpm);
        (off_ms <= i128::from(MATCH_MS)).then(|| i64::try_from(rel).ok()).flatten()
    }

    /// The grid cell of relative time `rel_ms` (cells before 0 are cell 0).
    pub fn cell(&self, rel_ms: i64) -> u64 {
        rel_ms.div_euclid(i64::from(self.piece_ms)).max(0) as u64
    }

    /// Wall time of relative time `rel_ms`, µs.
    pub fn wall_us(&self, rel_ms: i64) -> u64 {
        self.wall0_us.saturating_add_signed(rel_ms.saturating_mul(1_000))
    }

    /// Past every number this epoch can have used by `now_us`: media is never let run
    /// more than [`MAX_AHEAD_OF_CLOCK`] ahead of the wall clock, so its relative time is
    /// at most `now + that - wall0`; one number per cell, the spill room on top.
    pub fn next_seq0(&self, now_us: u64) -> u64 {
        let ahead_us = MAX_AHEAD_OF_CLOCK * (1_000_000 / SEQ_PER_SECOND);
        let reach_ms = (now_us + ahead_us).saturating_sub(self.wall0_us) / 1_000;
        self.seq0 + reach_ms / u64::from(self.piece_ms) + 2 + SPILL_ROOM
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000_000;

    fn rtmp_epoch(raw0: u64) -> Epoch {
        Epoch { number: 1, clock: FeedClock::Rtmp, raw0, seq0: 1_000, wall0_us: T0, piece_ms: 50, cut_at_us: 0 }
    }

    #[test]
    fn a_feed_on_the_epochs_timeline_is_placed_from_its_timestamp_alone() {
        let e = rtmp_epoch(5_000);
        // Ten seconds on, the feed says 15,000: relative 10,000 wherever the node started.
        assert_eq!(e.place(FeedClock::Rtmp, 15_000, T0 + 10_000_000), Some(10_000));
        // Within the match window either way.
        assert_eq!(e.place(FeedClock::Rtmp, 12_500, T0 + 10_000_000), Some(7_500));
        // An encoder that restarted at 0: not this timeline.
        assert_eq!(e.place(FeedClock::Rtmp, 0, T0 + 10_000_000), None);
        // Another clock kind never matches.
        assert_eq!(e.place(FeedClock::MpegTs, 15_000 * 90, T0 + 10_000_000), None);
        assert_eq!(e.cell(10_000), 200);
        assert_eq!(e.cell(-30), 0);
        assert_eq!(e.wall_us(10_000), T0 + 10_000_000);
    }

    #[test]
    fn placing_unwraps_the_clock() {
        // 33-bit PTS: the epoch began 10 ms before the wrap.
        let top = (1u64 << 33) - 900;
        let e =
            Epoch { number: 3, clock: FeedClock::MpegTs, raw0: top, seq0: 7, wall0_us: T0, piece_ms: 50, cut_at_us: 0 };
        // 40 ms later the raw value has wrapped to 2,700.
        assert_eq!(e.place(FeedClock::MpegTs, 2_700, T0 + 40_000), Some(3_600));
        // 27 hours later (one wrap is 26.5 h) a node that joins still places it.
        let later_ms: u64 = 27 * 3_600_000;
        let raw = (top + later_ms * 90) % (1 << 33);
        assert_eq!(e.place(FeedClock::MpegTs, raw, T0 + later_ms * 1_000), Some((later_ms * 90) as i64));
        // RTMP's 32-bit milliseconds wrap after 49.7 days.
        let e = rtmp_epoch(u64::from(u32::MAX) - 100);
        assert_eq!(e.place(FeedClock::Rtmp, 99, T0 + 200_000), Some(200));
    }

    #[test]
    fn a_new_epoch_numbers_past_everything_the_last_could_use() {
        let first = Epoch::successor(None, FeedClock::Rtmp, 77, T0, 50, 0);
        assert_eq!(first.number, 1);
        assert_eq!(first.seq0, clock_seq(T0) + 1);
        assert_eq!(first.raw0, 77);
        // 60 s later, after a 2 s outage: the old epoch reached at most cell (61 s / 50 ms).
        let second = Epoch::successor(Some(&first), FeedClock::Rtmp, 0, T0 + 60_000_000, 50, 0);
        assert_eq!(second.number, 2);
        assert_eq!(second.seq0, first.seq0 + 61_000 / 50 + 2 + SPILL_ROOM);
        // Still behind the wall clock's numbering.
        assert!(second.seq0 <= clock_seq(T0 + 60_000_000));
        // Never below what the proposing node already cut.
        let third = Epoch::successor(Some(&second), FeedClock::Rtmp, 0, T0 + 60_000_000, 50, second.seq0 + 5_000);
        assert_eq!(third.seq0, second.seq0 + 5_000);
    }
}
