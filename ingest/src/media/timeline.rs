//! One publish session's clock, unwrapped.
//!
//! Inputs are RTMP's 32-bit millisecond timestamps (wrapping after ~49.7 days, and
//! after ~4 h 39 m on encoders that treat them as signed) or MPEG-TS's 33-bit 90 kHz
//! PTS/DTS (wrapping after ~26.5 h). Each is unwrapped against the previous value into
//! a count of ticks that runs on across the wrap. A jump (an encoder restart, a
//! timestamp reset, a clock step) is reported: the frames after it are on another
//! timeline, which the hub binds to a new epoch ([`super::epoch`]).

use super::epoch::FeedClock;

/// Jumps bigger than these are discontinuities, not jitter or A/V interleaving.
#[derive(Debug, Clone, Copy)]
pub struct JumpLimits {
    pub forward_ms: i64,
    pub backward_ms: i64,
}

impl Default for JumpLimits {
    fn default() -> Self {
        JumpLimits { forward_ms: 5_000, backward_ms: 1_000 }
    }
}

/// Unwraps one session's raw timestamps.
#[derive(Debug, Clone)]
pub struct Timeline {
    clock: FeedClock,
    limits: JumpLimits,
    /// Last raw input and its unwrapped value, in ticks.
    last: Option<(u64, i64)>,
}

/// One raw timestamp, unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwrapped {
    /// Ticks since the session's first timestamp, continuing across wraps and jumps.
    pub ticks: i64,
    /// The first timestamp of the session, or one that jumped from the last: the
    /// timeline must be (re)bound to an epoch here.
    pub rebind: bool,
}

impl Timeline {
    pub fn new(clock: FeedClock, limits: JumpLimits) -> Self {
        Timeline { clock, limits, last: None }
    }

    pub fn clock(&self) -> FeedClock {
        self.clock
    }

    /// Unwraps one raw timestamp.
    pub fn map(&mut self, raw: u64) -> Unwrapped {
        let modulus = 1u64 << self.clock.bits();
        let raw = raw % modulus;
        let Some((last_raw, last_unwrapped)) = self.last else {
            self.last = Some((raw, 0));
            return Unwrapped { ticks: 0, rebind: true };
        };
        // The shortest signed distance on the circle of `bits`-bit values.
        let half = modulus / 2;
        let diff = raw.wrapping_sub(last_raw) % modulus;
        let delta = if diff >= half { diff as i64 - modulus as i64 } else { diff as i64 };
        let ticks = last_unwrapped + delta;
        self.last = Some((raw, ticks));
        let delta_ms = delta / self.clock.ticks_per_ms();
        let rebind = delta_ms > self.limits.forward_ms || delta_ms < -self.limits.backward_ms;
        Unwrapped { ticks, rebind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_wrap_is_seamless() {
        let mut t = Timeline::new(FeedClock::Rtmp, JumpLimits::default());
        let start = u64::from(u32::MAX) - 100;
        assert_eq!(t.map(start), Unwrapped { ticks: 0, rebind: true });
        assert_eq!(t.map(start + 40), Unwrapped { ticks: 40, rebind: false });
        // Past 2^32: the raw value wrapped to a small number.
        assert_eq!(t.map((start + 140) % (1 << 32)), Unwrapped { ticks: 140, rebind: false });
        // Audio slightly behind video is not a jump.
        assert_eq!(t.map((start + 120) % (1 << 32)), Unwrapped { ticks: 120, rebind: false });
    }

    #[test]
    fn pts_33_bit_wrap_is_seamless() {
        let mut t = Timeline::new(FeedClock::MpegTs, JumpLimits::default());
        let top = (1u64 << 33) - 900; // 10 ms before the wrap
        assert_eq!(t.map(top).ticks, 0);
        assert_eq!(t.map(top + 3_600), Unwrapped { ticks: 3_600, rebind: false }); // wrapped: 2,700 ticks past zero
    }

    #[test]
    fn jumps_ask_for_a_new_binding() {
        let mut t = Timeline::new(FeedClock::Rtmp, JumpLimits::default());
        t.map(1_000);
        assert!(!t.map(2_000).rebind);
        // Encoder reset its clock to zero.
        assert!(t.map(0).rebind);
        assert!(!t.map(40).rebind);
        // A forward leap of an hour.
        assert!(t.map(3_600_000).rebind);
    }
}
