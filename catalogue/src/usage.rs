//! What metering writes to the catalogue: per channel and hour, the usage the tracker
//! drained from its swarms; per viewer and hour, what the tracker saw of it (a
//! [`Mark`]: the bill's viewer-seconds are computed from these); per seed and hour,
//! the lowest and highest `uploaded` counter seen (a [`SeedMark`]: the bill's seed bytes
//! are computed from these).

/// Usage drained from the store for one channel and hour: since the last drain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageDelta {
    pub info_hash: [u8; 20],
    /// Unix time of the hour's start.
    pub hour_start: u64,
    pub viewer_seconds: u64,
    /// Of `viewer_seconds`, those watched during ad breaks.
    pub ad_viewer_seconds: u64,
    /// Bytes seed nodes uploaded to the channel's viewers.
    pub seed_bytes: u64,
    pub peak_viewers: u32,
    /// Announces of new viewer ids over the per-address or per-network cap (answered,
    /// not listed or metered): reported as a `usage.anomaly`.
    pub ids_over_cap: u32,
}

/// Seconds a viewer may claim beyond the time the tracker saw it for (clock skew,
/// request latency).
pub const SLACK_S: u64 = 5;

/// What the tracker saw of one viewer in one UTC hour: its first and its latest
/// announce with the counters they carried (`watched`, `ad_watched`: seconds in the
/// hour). Marks from any replica and any flush merge ([`Mark::merge`]: earliest first,
/// latest last, highest counters) in the catalogue, so what they bill
/// ([`Mark::billed`]) doesn't depend on which replica answered which announce, nor
/// on a replica killed before writing its last ones (the viewer's next announce, to
/// any replica, carries its counters on). The marks of an hour are also who watched
/// in it: its unique viewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub info_hash: [u8; 20],
    pub hour_start: u64,
    pub peer_key: [u8; 8],
    /// Unix time of the first announce seen in the hour, and its counters.
    pub first_seen: u64,
    pub first_watched: u16,
    pub first_ad: u16,
    /// Unix time of the latest announce seen in the hour.
    pub last_seen: u64,
    /// The highest counters seen in the hour.
    pub watched: u16,
    pub ad: u16,
    /// The viewer's `downloaded` counter (bytes it took in since it started) at its
    /// first announce seen in the hour, and the highest seen: what it took in during the
    /// hour, set against its viewer-seconds ([`unbacked`]).
    pub first_down: u64,
    pub down: u64,
}

impl Mark {
    /// Both marks of one viewer and hour as one.
    pub fn merge(&mut self, other: &Mark) {
        if other.first_seen < self.first_seen {
            (self.first_seen, self.first_watched, self.first_ad, self.first_down) =
                (other.first_seen, other.first_watched, other.first_ad, other.first_down);
        }
        self.last_seen = self.last_seen.max(other.last_seen);
        self.watched = self.watched.max(other.watched);
        self.ad = self.ad.max(other.ad);
        self.down = self.down.max(other.down);
    }

    /// Bytes the viewer took in during the hour, as its counter says.
    pub fn bytes(&self) -> u64 {
        self.down.saturating_sub(self.first_down)
    }

    /// (viewer-seconds, of those in ad breaks) the hour bills for this viewer:
    /// what its counters grew by while the tracker saw it, never more than that time
    /// (plus [`SLACK_S`]). A viewer `continuing` from the previous hour (it has a mark
    /// there) is billed from the hour's start (its counters restarted at 0); otherwise
    /// it joined this hour, and its first announce's counters are the baseline (what it
    /// watched before the tracker saw it is not billed).
    pub fn billed(&self, continuing: bool) -> (u64, u64) {
        let (base, base_ad, from) =
            if continuing { (0, 0, self.hour_start) } else { (self.first_watched, self.first_ad, self.first_seen) };
        let seen_for = self.last_seen.saturating_sub(from) + SLACK_S;
        let seconds = u64::from(self.watched.saturating_sub(base)).min(seen_for).min(3_600);
        let ad = u64::from(self.ad.saturating_sub(base_ad)).min(seconds);
        (seconds, ad)
    }
}

/// What the tracker saw of one seed's `uploaded` counter (bytes sent since that seed
/// started; a seed's peer id is new each run) in one UTC hour: the lowest (0 if it
/// announced `started` in the hour) and the highest. Marks from any replica and flush
/// merge in the catalogue (lowest low, highest high), and the hour's seed bytes are
/// the high less the seed's high of its latest earlier hour — or less the low, in its
/// first hour — at most [`MAX_SEED_BYTES_PER_S`] for the hour: whichever replica saw
/// which announce, and across restarts, the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedMark {
    pub info_hash: [u8; 20],
    pub peer_key: [u8; 8],
    /// Unix time of the hour's start.
    pub hour_start: u64,
    pub low: u64,
    pub high: u64,
    /// The stream as this seed took it in: its `downloaded` counter (bytes from ingest
    /// and peers since it started) at its first and at its latest announce seen in the
    /// hour, and their times (unix). Merged lowest / highest; the hour's stream rate is
    /// [`SeedMark::stream_rate`].
    pub first_seen: u64,
    pub last_seen: u64,
    pub down_low: u64,
    pub down_high: u64,
}

impl SeedMark {
    /// Bytes per second of the stream the seed took in over the hour, if it was seen
    /// over at least [`RATE_SPAN_S`] and took something in.
    pub fn stream_rate(&self) -> Option<f64> {
        let span = self.last_seen.checked_sub(self.first_seen).filter(|s| *s >= RATE_SPAN_S)?;
        let bytes = self.down_high.checked_sub(self.down_low).filter(|b| *b > 0)?;
        Some(bytes as f64 / span as f64)
    }
}

/// The shortest time a seed must be seen over in an hour for its rate to count.
pub const RATE_SPAN_S: u64 = 120;

/// A channel-hour's viewer-seconds not backed by bytes: fewer than this share of the
/// billed seconds could have been watched with the bytes its viewers took in, at the
/// stream's rate. Honest viewers take in at least the stream (with overhead and
/// repairs, more), so half leaves room for counters caught between announces.
pub const BACKED_SHARE: f64 = 0.5;

/// Billed viewer-seconds below which an hour is not judged (too few to tell).
pub const UNBACKED_MIN_S: u64 = 1_800;

/// A channel-hour whose billed viewer-seconds its viewers' bytes don't back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unbacked {
    pub viewer_seconds: u64,
    /// Seconds the viewers' bytes could have played at the stream's rate.
    pub backed_seconds: u64,
    pub viewer_bytes: u64,
    /// Bytes per second of the stream, from the seeds.
    pub stream_rate: f64,
}

/// Judges a channel-hour: its billed viewer-seconds, the bytes its viewers took in
/// (Σ [`Mark::bytes`]) and its seeds' marks (the stream's rate: the fastest seed's,
/// each seed taking in the whole stream). `None` when it is backed, too small to judge,
/// or no seed told its rate (a seed that sends no `downloaded`).
pub fn unbacked(viewer_seconds: u64, viewer_bytes: u64, seeds: &[SeedMark]) -> Option<Unbacked> {
    let stream_rate = seeds
        .iter()
        .filter_map(SeedMark::stream_rate)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))?;
    let backed_seconds = (viewer_bytes as f64 / stream_rate) as u64;
    let judged = viewer_seconds >= UNBACKED_MIN_S;
    (judged && (backed_seconds as f64) < BACKED_SHARE * viewer_seconds as f64).then_some(Unbacked {
        viewer_seconds,
        backed_seconds,
        viewer_bytes,
        stream_rate,
    })
}

/// The most a seed is credited per second (10 Gbit/s): a seed's counter gone wrong
/// can't run up a bill.
pub const MAX_SEED_BYTES_PER_S: u64 = 1_250_000_000;

/// What the tracker's `Swarms::drain_usage` takes out: to be written together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    pub usage: Vec<UsageDelta>,
    pub marks: Vec<Mark>,
    pub seed_marks: Vec<SeedMark>,
}

impl Drained {
    pub fn is_empty(&self) -> bool {
        self.usage.is_empty() && self.marks.is_empty() && self.seed_marks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(first: (u64, u16), last: (u64, u16)) -> Mark {
        Mark {
            info_hash: [1; 20],
            hour_start: 3_600,
            peer_key: [2; 8],
            first_seen: first.0,
            first_watched: first.1,
            first_ad: 0,
            last_seen: last.0,
            watched: last.1,
            ad: last.1 / 3,
            first_down: u64::from(first.1) * 1_000,
            down: u64::from(last.1) * 1_000,
        }
    }

    #[test]
    fn a_viewer_is_billed_what_its_counter_grew_while_seen_never_more() {
        // Joined at 3,700 having watched 20 s; seen until 4,300 with 620: 600 billed.
        let m = mark((3_700, 20), (4_300, 620));
        assert_eq!(m.billed(false), (600, 206));
        // Continuing from the previous hour: from the hour's start.
        assert_eq!(m.billed(true), (620, 206));
        // A counter claiming more than the time seen is cut to it (plus slack).
        assert_eq!(mark((3_700, 0), (3_760, 3_000)).billed(false).0, 60 + SLACK_S);
        assert_eq!(mark((3_700, 500), (3_700, 400)).billed(false), (0, 0), "a counter that went down bills nothing");
    }

    fn seed(first_seen: u64, last_seen: u64, down_low: u64, down_high: u64) -> SeedMark {
        SeedMark {
            info_hash: [1; 20],
            peer_key: [3; 8],
            hour_start: 0,
            low: 0,
            high: 0,
            first_seen,
            last_seen,
            down_low,
            down_high,
        }
    }

    #[test]
    fn hours_whose_viewer_bytes_dont_cover_half_their_seconds_are_unbacked() {
        // A 250 kB/s stream (one seed seen 1,000 s; a slower one is not the rate).
        let seeds = [seed(100, 1_100, 5_000, 250_005_000), seed(0, 3_000, 0, 300_000_000)];
        // 10,000 billed seconds with 2.5 GB: all backed.
        assert_eq!(unbacked(10_000, 2_500_000_000, &seeds), None);
        // Just over half backed: not flagged; just under: flagged, with the figures.
        assert_eq!(unbacked(10_000, 1_250_250_000, &seeds), None);
        let u = unbacked(10_000, 1_000_000_000, &seeds).unwrap();
        assert_eq!((u.viewer_seconds, u.backed_seconds, u.viewer_bytes), (10_000, 4_000, 1_000_000_000));
        assert!((u.stream_rate - 250_000.0).abs() < 1e-6);
        // Too little to judge; no seed rate (seen too briefly, or nothing taken in).
        assert_eq!(unbacked(UNBACKED_MIN_S - 1, 0, &seeds), None);
        assert_eq!(unbacked(10_000, 0, &[seed(100, 100 + RATE_SPAN_S - 1, 0, 1 << 30)]), None);
        assert_eq!(unbacked(10_000, 0, &[seed(0, 3_000, 7, 7)]), None);
        assert_eq!(unbacked(10_000, 0, &[]), None);
    }

    proptest::proptest! {
        /// However a viewer's announces are split between replicas and flushes, the
        /// merged marks bill the same as one tracker seeing them all.
        #[test]
        fn marks_merge_to_the_same_bill_in_any_split(
            steps in proptest::collection::vec((1u64..120, 0u16..130), 1..40),
            split in proptest::collection::vec(0usize..3, 40),
        ) {
            let mut t = 3_600 + 10;
            let mut w = 5u16;
            let mut seen = vec![(t, w)];
            for (dt, dw) in steps {
                t = (t + dt).min(7_199);
                w = (w + dw).min(3_600);
                seen.push((t, w));
            }
            let one = |obs: &[(u64, u16)]| {
                let mut m = mark(obs[0], obs[0]);
                for &(t, w) in obs {
                    m.merge(&mark((t, w), (t, w)));
                }
                m
            };
            let all = one(&seen);
            let mut parts: Vec<Vec<(u64, u16)>> = vec![Vec::new(); 3];
            for (i, o) in seen.iter().enumerate() {
                parts[split[i % split.len()]].push(*o);
            }
            let mut merged: Option<Mark> = None;
            for p in parts.iter().filter(|p| !p.is_empty()).rev() {
                let m = one(p);
                match &mut merged {
                    Some(x) => x.merge(&m),
                    None => merged = Some(m),
                }
            }
            let merged = merged.unwrap_or_else(|| all.clone());
            proptest::prop_assert_eq!(merged.billed(false), all.billed(false));
            proptest::prop_assert_eq!(merged.billed(true), all.billed(true));
            proptest::prop_assert_eq!(merged.bytes(), all.bytes());
            proptest::prop_assert!(all.billed(false).0 <= all.last_seen - all.first_seen + SLACK_S);
        }
    }
}
