//! Several ingest nodes' piece streams into one (`shoal seeder --ingest A --ingest B`):
//! each sequence number from whichever ingest delivers a verified copy first. Ingest
//! nodes reading the same feed cut the same pieces (`ingest::media::epoch`), so later
//! copies are the same bytes; one that is not (same number, another signature) is
//! logged and counted, and the first stays. Killing an ingest costs nothing while
//! another still delivers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use httpkit::registered;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use swarm::piece::{ChannelId, ChannelVerifier, Piece, SIGNATURE_LEN};
use tokio::sync::{mpsc, watch};

/// Numbers remembered behind the newest, to tell a late copy from a new piece.
const REMEMBERED: u64 = 4_096;

/// An ingest that delivered nothing for this long while another delivers has failed
/// over (ingest nodes fed the same encoder take turns at being first by milliseconds:
/// that is no failover).
pub const SILENT_FOR: Duration = Duration::from_millis(500);

/// The merge's counters, labelled by ingest (the operator's `--ingest` URLs).
#[derive(Debug, Clone)]
pub struct MergeMetrics {
    /// By ingest and result: `first` (forwarded), `copy` (same as the first),
    /// `disagree` (another piece under the number), `invalid` (failed verification),
    /// `stale` (older than what is remembered).
    pub pieces: IntCounterVec,
    /// Times the ingest leading went silent ([`SILENT_FOR`]) and another took over.
    pub failovers: IntCounter,
    /// 1 while the ingest's piece stream is open.
    pub connected: IntGaugeVec,
    /// 1 for the ingest the seeder takes its pieces from (the first to deliver, until
    /// it goes silent).
    pub leading: IntGaugeVec,
}

/// Counters nobody scrapes (benches, tests).
impl Default for MergeMetrics {
    fn default() -> Self {
        Self::new(&Registry::new())
    }
}

impl MergeMetrics {
    pub fn new(registry: &Registry) -> Self {
        MergeMetrics {
            pieces: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "shoal_seeder_ingest_pieces_total",
                        "Pieces from each ingest: first (forwarded), copy (same as another's), disagree (another \
                         piece under the same number), invalid (failed verification), stale",
                    ),
                    &["ingest", "result"],
                ),
            ),
            failovers: registered(
                registry,
                IntCounter::new(
                    "shoal_seeder_ingest_failovers_total",
                    "Times the ingest a seeder was taking pieces from went silent for 0.5 s and another took over",
                ),
            ),
            connected: registered(
                registry,
                IntGaugeVec::new(
                    Opts::new("shoal_seeder_ingest_connected", "1 while the ingest's piece stream is open"),
                    &["ingest"],
                ),
            ),
            leading: registered(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "shoal_seeder_ingest_leading",
                        "1 for the ingest the seeder takes its pieces from (until it goes silent for 0.5 s)",
                    ),
                    &["ingest"],
                ),
            ),
        }
    }
}

/// What became of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    First,
    Copy,
    Disagree,
    Invalid,
    Stale,
}

impl Taken {
    fn label(self) -> &'static str {
        match self {
            Taken::First => "first",
            Taken::Copy => "copy",
            Taken::Disagree => "disagree",
            Taken::Invalid => "invalid",
            Taken::Stale => "stale",
        }
    }
}

/// The merge's state (no I/O): which numbers were taken, from whom, with what signature.
#[derive(Debug)]
pub struct Merge {
    verifier: ChannelVerifier,
    seen: BTreeMap<u64, ([u8; SIGNATURE_LEN], usize)>,
    /// The ingest being taken from, and when each ingest last delivered any copy.
    leader: Option<usize>,
    last_heard: Vec<Option<Instant>>,
    pub failovers: u64,
}

impl Merge {
    pub fn new(verifier: ChannelVerifier) -> Self {
        Merge { verifier, seen: BTreeMap::new(), leader: None, last_heard: Vec::new(), failovers: 0 }
    }

    /// The ingest being taken from.
    pub fn leader(&self) -> Option<usize> {
        self.leader
    }

    /// A copy of `piece` from ingest `from`, arrived at `now`: forward it if it is
    /// [`Taken::First`].
    pub fn offer(&mut self, from: usize, piece: &Piece, now: Instant) -> Taken {
        if self.last_heard.len() <= from {
            self.last_heard.resize(from + 1, None);
        }
        let seq = piece.seq();
        let newest = self.seen.last_key_value().map(|(s, _)| *s);
        if newest.is_some_and(|n| seq + REMEMBERED <= n) {
            return Taken::Stale;
        }
        if self.verifier.verify(piece).is_err() {
            return Taken::Invalid;
        }
        self.last_heard[from] = Some(now);
        if let Some((sig, _)) = self.seen.get(&seq) {
            return if sig == piece.signature() { Taken::Copy } else { Taken::Disagree };
        }
        self.seen.insert(seq, (*piece.signature(), from));
        match self.leader {
            None => self.leader = Some(from),
            Some(l) if l != from => {
                let silent = self.last_heard[l].is_none_or(|t| now.saturating_duration_since(t) >= SILENT_FOR);
                if silent {
                    self.failovers += 1;
                    self.leader = Some(from);
                }
            }
            Some(_) => {}
        }
        if newest.is_none_or(|n| seq > n) {
            while self.seen.first_key_value().is_some_and(|(s, _)| s + REMEMBERED <= seq) {
                self.seen.pop_first();
            }
        }
        Taken::First
    }
}

/// Merges `(ingest index, piece)` from the sources into `out` once the channel's id is
/// known; ends when every source or the consumer is gone.
pub async fn run(
    mut from: mpsc::Receiver<(usize, Piece)>,
    out: mpsc::Sender<Piece>,
    mut id: watch::Receiver<Option<ChannelId>>,
    labels: Vec<String>,
    metrics: MergeMetrics,
) {
    let channel = loop {
        if let Some(c) = *id.borrow_and_update() {
            break c;
        }
        if id.changed().await.is_err() {
            return;
        }
    };
    let Ok(verifier) = ChannelVerifier::new(channel) else {
        tracing::error!(channel = %channel.to_hex(), "the channel id is not a valid public key: nothing can verify");
        return;
    };
    let mut merge = Merge::new(verifier);
    while let Some((i, piece)) = from.recv().await {
        let label = labels.get(i).map_or("?", String::as_str);
        let (before, led) = (merge.failovers, merge.leader());
        let taken = merge.offer(i, &piece, Instant::now());
        metrics.pieces.with_label_values(&[label, taken.label()]).inc();
        if merge.failovers != before {
            metrics.failovers.inc();
            tracing::warn!(
                ingest = label,
                seq = piece.seq(),
                "the ingest pieces came from went silent: taking them from this one"
            );
        }
        if merge.leader() != led {
            for (j, l) in labels.iter().enumerate() {
                metrics.leading.with_label_values(&[l]).set(i64::from(merge.leader() == Some(j)));
            }
        }
        match taken {
            Taken::First => {
                if out.send(piece).await.is_err() {
                    return;
                }
            }
            Taken::Disagree => tracing::warn!(
                ingest = label,
                seq = piece.seq(),
                "ingest nodes disagree on a piece: the first verified copy stays (are they fed the same encoder?)"
            ),
            Taken::Invalid => {
                tracing::warn!(ingest = label, seq = piece.seq(), "a piece from ingest failed verification")
            }
            Taken::Copy | Taken::Stale => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm::piece::{ChannelKeypair, PieceFlags, filler_payload};

    #[test]
    fn the_first_verified_copy_wins_and_disagreements_are_told() {
        let key = ChannelKeypair::from_secret_bytes(&[3; 32]);
        let piece =
            |seq: u64, seed: u64| key.sign_piece(seq, 1_000 + seq, PieceFlags::NONE, filler_payload(2, seed)).unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut m = Merge::new(ChannelVerifier::new(key.id()).unwrap());
        assert_eq!(m.offer(0, &piece(10, 1), at(0)), Taken::First);
        assert_eq!(m.offer(1, &piece(10, 1), at(1)), Taken::Copy);
        // Ingest 1 first by a millisecond: no failover while ingest 0 delivers.
        assert_eq!(m.offer(1, &piece(11, 1), at(50)), Taken::First);
        assert_eq!(m.offer(0, &piece(11, 2), at(51)), Taken::Disagree);
        assert_eq!(m.failovers, 0);
        // Another channel's piece, or a forged one, never counts.
        let other = ChannelKeypair::from_secret_bytes(&[4; 32]);
        let forged = other.sign_piece(12, 0, PieceFlags::NONE, filler_payload(2, 0)).unwrap();
        assert_eq!(m.offer(0, &forged, at(100)), Taken::Invalid);
        assert_eq!(m.offer(0, &piece(12, 1), at(100)), Taken::First);
        // Ingest 0 goes silent: half a second on, ingest 1 has taken over.
        assert_eq!(m.offer(1, &piece(13, 1), at(400)), Taken::First);
        assert_eq!(m.failovers, 0);
        assert_eq!(m.offer(1, &piece(14, 1), at(700)), Taken::First);
        assert_eq!(m.failovers, 1, "ingest 1 took over from a silent ingest 0");
        // Far behind the newest: stale.
        assert_eq!(m.offer(1, &piece(14 + REMEMBERED, 1), at(750)), Taken::First);
        assert_eq!(m.offer(0, &piece(10, 1), at(800)), Taken::Stale);
    }
}
