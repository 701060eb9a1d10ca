//! What metering writes to the catalogue: per channel and hour, the usage the tracker
//! drained from its swarms, with the marks (what each viewer and seed was credited) that
//! let a restarted tracker credit only what is new.

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

/// A viewer's credited `watched` and `ad_watched` counters for the hour, persisted with
/// the usage so that a restarted tracker credits only what is new. The marks of an
/// hour are also who watched in it: its unique viewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub info_hash: [u8; 20],
    pub hour_start: u64,
    pub peer_key: [u8; 8],
    pub credited: u16,
    pub ad_credited: u16,
}

/// A seed's credited `uploaded` counter, persisted likewise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedMark {
    pub info_hash: [u8; 20],
    pub peer_key: [u8; 8],
    pub uploaded: u64,
}

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
