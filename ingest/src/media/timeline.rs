//! One publish session's clock mapped onto the channel's output timeline.
//!
//! Inputs are RTMP's 32-bit millisecond timestamps (wrapping after ~49.7 days, and
//! after ~4 h 39 m on encoders that treat them as signed) or MPEG-TS's 33-bit 90 kHz
//! PTS/DTS (wrapping after ~26.5 h). Each is unwrapped against the previous value,
//! then offset onto an output timeline in ms that never goes backwards: a jump (an
//! encoder restart, a timestamp reset, a clock step) is rebased to continue just
//! after the last output and reported as a discontinuity, as is every new session.
//! The muxer writes output times modulo 2^33 ticks, so the TS wrap is the players'
//! ordinary one.

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

/// Maps input timestamps (`bits` wide, `ticks_per_ms` per millisecond) to output ms.
#[derive(Debug, Clone)]
pub struct Timeline {
    bits: u32,
    ticks_per_ms: i64,
    limits: JumpLimits,
    /// Last raw input and its unwrapped value, in ticks.
    last: Option<(u64, i64)>,
    /// Output ms = unwrapped ticks / ticks_per_ms + offset.
    offset_ms: i64,
    /// Highest output so far.
    high_ms: i64,
    /// Where the next session (or a rebase) continues.
    resume_ms: Option<i64>,
    /// Discontinuities seen (session starts after the first, and jumps).
    pub discontinuities: u64,
}

/// Output time of one input timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    pub ms: i64,
    /// The timeline was rebased here: the piece carrying it gets the discontinuity flag.
    pub discontinuity: bool,
}

/// Gap left at a rebase, ms (one frame at 25 fps).
const REBASE_GAP_MS: i64 = 40;

impl Timeline {
    /// RTMP: 32-bit milliseconds.
    pub fn rtmp(limits: JumpLimits) -> Self {
        Self::new(32, 1, limits)
    }

    /// MPEG-TS: 33-bit, 90 kHz.
    pub fn mpeg_ts(limits: JumpLimits) -> Self {
        Self::new(33, 90, limits)
    }

    fn new(bits: u32, ticks_per_ms: i64, limits: JumpLimits) -> Self {
        Timeline {
            bits,
            ticks_per_ms,
            limits,
            last: None,
            offset_ms: 0,
            high_ms: 0,
            resume_ms: None,
            discontinuities: 0,
        }
    }

    /// A new publish session whose input clock is `like`'s (RTMP or MPEG-TS); see
    /// [`Timeline::new_session`].
    pub fn new_session_clocked_as(&mut self, like: &Timeline) {
        self.bits = like.bits;
        self.ticks_per_ms = like.ticks_per_ms;
        self.new_session();
    }

    /// A new publish session on the same channel: its first timestamp continues the
    /// output just after the last one, flagged as a discontinuity.
    pub fn new_session(&mut self) {
        if self.last.is_some() {
            self.resume_ms = Some(self.high_ms + REBASE_GAP_MS);
        }
        self.last = None;
    }

    /// Maps one raw timestamp.
    pub fn map(&mut self, raw: u64) -> Mapped {
        let modulus = 1u64 << self.bits;
        let raw = raw % modulus;
        let Some((last_raw, last_unwrapped)) = self.last else {
            let unwrapped = raw as i64;
            self.last = Some((raw, unwrapped));
            let discontinuity = self.resume_ms.is_some();
            let start = self.resume_ms.take().unwrap_or(0);
            if discontinuity {
                self.discontinuities += 1;
            }
            self.offset_ms = start - unwrapped / self.ticks_per_ms;
            return self.emit(unwrapped, discontinuity);
        };
        // The shortest signed distance on the circle of `bits`-bit values.
        let half = modulus / 2;
        let diff = raw.wrapping_sub(last_raw) % modulus;
        let delta = if diff >= half { diff as i64 - modulus as i64 } else { diff as i64 };
        let unwrapped = last_unwrapped + delta;
        self.last = Some((raw, unwrapped));
        let delta_ms = delta / self.ticks_per_ms;
        if delta_ms > self.limits.forward_ms || delta_ms < -self.limits.backward_ms {
            self.discontinuities += 1;
            self.offset_ms = self.high_ms + REBASE_GAP_MS - unwrapped / self.ticks_per_ms;
            return self.emit(unwrapped, true);
        }
        self.emit(unwrapped, false)
    }

    fn emit(&mut self, unwrapped: i64, discontinuity: bool) -> Mapped {
        let ms = unwrapped / self.ticks_per_ms + self.offset_ms;
        self.high_ms = self.high_ms.max(ms);
        Mapped { ms, discontinuity }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_wrap_is_seamless() {
        let mut t = Timeline::rtmp(JumpLimits::default());
        let start = u64::from(u32::MAX) - 100;
        assert_eq!(t.map(start), Mapped { ms: 0, discontinuity: false });
        assert_eq!(t.map(start + 40), Mapped { ms: 40, discontinuity: false });
        // Past 2^32: the raw value wrapped to a small number.
        assert_eq!(t.map((start + 140) % (1 << 32)), Mapped { ms: 140, discontinuity: false });
        // Audio slightly behind video is not a jump.
        assert_eq!(t.map((start + 120) % (1 << 32)).ms, 120);
        assert_eq!(t.discontinuities, 0);
    }

    #[test]
    fn pts_33_bit_wrap_is_seamless() {
        let mut t = Timeline::mpeg_ts(JumpLimits::default());
        let top = (1u64 << 33) - 900; // 10 ms before the wrap
        assert_eq!(t.map(top).ms, 0);
        assert_eq!(t.map(top + 3_600).ms, 40); // wrapped: 2,700 ticks past zero
        assert_eq!(t.discontinuities, 0);
    }

    #[test]
    fn jumps_and_new_sessions_continue_forward_with_a_flag() {
        let mut t = Timeline::rtmp(JumpLimits::default());
        t.map(1_000);
        t.map(2_000);
        // Encoder reset its clock to zero.
        let m = t.map(0);
        assert!(m.discontinuity);
        assert_eq!(m.ms, 1_000 + REBASE_GAP_MS);
        assert_eq!(t.map(40).ms, 1_080);
        // A forward leap of an hour.
        let m = t.map(3_600_000);
        assert!(m.discontinuity && m.ms == 1_080 + REBASE_GAP_MS);
        // A new session starts after everything so far.
        t.new_session();
        let m = t.map(77);
        assert!(m.discontinuity);
        assert_eq!(m.ms, 1_120 + REBASE_GAP_MS);
        assert_eq!(t.discontinuities, 3);
    }
}
