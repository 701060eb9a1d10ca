//! A viewer's playout for ordinary players: the pieces the peer plays (verified, in
//! order, at their deadline), as one continuous MPEG-TS per player that starts at the
//! latest segment start (a piece flagged `SEGMENT_START` begins with PAT/PMT and a
//! keyframe) so a player can decode from its first byte; VLC, mpv and ffplay take it as
//! is. Pieces are carried whole and each player is sent their payloads (slices of the
//! pieces' buffers): nothing is copied per player.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use net::shell::now_us;
use swarm::piece::{Piece, PieceFlags};
use tokio::sync::{broadcast, mpsc};

/// What has been played, shared with the HTTP clients.
#[derive(Debug)]
pub struct Playout {
    live: broadcast::Sender<Piece>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The pieces played since the latest segment start: where a new player begins.
    gop: Vec<Piece>,
    played: u64,
    skipped: u64,
    /// The newest runs of consecutive numbers skipped, `[first, last]`, oldest first (at
    /// most [`SKIPPED_RUNS`]): which pieces a viewer missed, not only how many.
    skipped_runs: VecDeque<[u64; 2]>,
    /// Live-to-playout latency of the last piece played, µs.
    latency_us: u64,
    max_latency_us: u64,
    /// Live-to-playout latency of each piece played, ms (the newest [`SAMPLES`]).
    samples: VecDeque<u32>,
    /// When the first piece was played, µs since the epoch.
    first_play_us: Option<u64>,
    /// When the latest piece was played.
    last_play_us: Option<u64>,
}

/// A player that connects after nothing was played for this long (the channel is idle:
/// its publisher went) starts at the next segment start, not on the last session's
/// unfinished tail.
pub const IDLE_AFTER_US: u64 = 2_000_000;

/// Runs of skipped numbers kept per playout.
pub const SKIPPED_RUNS: usize = 32;

/// Latency samples kept per playout.
pub const SAMPLES: usize = 100_000;

/// Counters of what was played.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayStats {
    pub played: u64,
    pub skipped: u64,
    pub latency_us: u64,
    pub max_latency_us: u64,
}

impl Default for Playout {
    fn default() -> Self {
        Self::new()
    }
}

impl Playout {
    pub fn new() -> Self {
        Playout { live: broadcast::channel(1024).0, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A piece the peer plays now.
    pub fn play(&self, piece: &Piece) {
        self.play_at(piece, now_us());
    }

    /// A piece played at `now` (µs since the epoch).
    pub fn play_at(&self, piece: &Piece, now: u64) {
        let mut inner = self.lock();
        inner.played += 1;
        inner.latency_us = now.saturating_sub(piece.timestamp_us());
        inner.max_latency_us = inner.max_latency_us.max(inner.latency_us);
        let ms = u32::try_from(inner.latency_us / 1000).unwrap_or(u32::MAX);
        if inner.samples.len() == SAMPLES {
            inner.samples.pop_front();
        }
        inner.samples.push_back(ms);
        inner.first_play_us.get_or_insert(now);
        inner.last_play_us = Some(now);
        let starts = starts_segment(piece);
        if starts {
            inner.gop.clear();
        }
        if !inner.gop.is_empty() || starts {
            inner.gop.push(piece.clone());
        }
        // Sent under the lock, so a joining player's snapshot and its stream meet exactly.
        let _ = self.live.send(piece.clone());
    }

    /// The latency of every piece played (ms, the newest [`SAMPLES`]) and when playing began.
    pub fn samples(&self) -> (Vec<u32>, Option<u64>) {
        let i = self.lock();
        (i.samples.iter().copied().collect(), i.first_play_us)
    }

    /// How many latency samples are held (without copying them).
    pub fn sample_count(&self) -> usize {
        self.lock().samples.len()
    }

    /// Piece `seq` missed its deadline.
    pub fn skipped(&self, seq: u64) {
        let mut i = self.lock();
        i.skipped += 1;
        match i.skipped_runs.back_mut() {
            Some(run) if run[1].checked_add(1) == Some(seq) => run[1] = seq,
            _ => {
                if i.skipped_runs.len() == SKIPPED_RUNS {
                    i.skipped_runs.pop_front();
                }
                i.skipped_runs.push_back([seq, seq]);
            }
        }
    }

    /// The newest runs of skipped numbers, `[first, last]`, oldest first.
    pub fn skipped_runs(&self) -> Vec<[u64; 2]> {
        self.lock().skipped_runs.iter().copied().collect()
    }

    pub fn stats(&self) -> PlayStats {
        let i = self.lock();
        PlayStats { played: i.played, skipped: i.skipped, latency_us: i.latency_us, max_latency_us: i.max_latency_us }
    }

    /// The stream for one player: the current GOP, then everything played after it. A
    /// player too slow to keep up skips to the next segment start; one that connects
    /// while the channel is idle ([`IDLE_AFTER_US`]) starts at the next segment start.
    pub fn subscribe(self: &Arc<Self>) -> mpsc::Receiver<Bytes> {
        self.subscribe_at(now_us())
    }

    /// [`Playout::subscribe`] at `now` (µs since the epoch).
    pub fn subscribe_at(self: &Arc<Self>, now: u64) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(256);
        let (gop, mut live) = {
            let inner = self.lock();
            let idle = inner.last_play_us.is_none_or(|t| now.saturating_sub(t) > IDLE_AFTER_US);
            (if idle { Vec::new() } else { inner.gop.clone() }, self.live.subscribe())
        };
        tokio::spawn(async move {
            let mut synced = !gop.is_empty();
            // One stream: counters and times run on across segments and epochs.
            let mut out = swarm::ts_out::TsOut::default();
            for p in gop {
                if (starts_segment(&p) && out.layout_changes(p.payload()))
                    || tx.send(out.write(p.payload(), p.flags().contains(PieceFlags::DISCONTINUITY))).await.is_err()
                {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(p) => {
                        // Without a GOP yet, wait for a segment start.
                        if !synced {
                            if !starts_segment(&p) {
                                continue;
                            }
                            synced = true;
                        }
                        // Another codec or track set: the stream ends, the player
                        // reconnects and starts afresh on it.
                        if (starts_segment(&p) && out.layout_changes(p.payload()))
                            || tx
                                .send(out.write(p.payload(), p.flags().contains(PieceFlags::DISCONTINUITY)))
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => synced = false,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        rx
    }
}

/// Whether a player can start decoding at this piece: ingest flags the pieces that
/// begin a segment (PAT/PMT, then a keyframe).
fn starts_segment(piece: &Piece) -> bool {
    piece.flags().contains(PieceFlags::SEGMENT_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm::piece::{ChannelKeypair, filler_payload};

    fn piece(seq: u64, flags: PieceFlags) -> Piece {
        ChannelKeypair::from_secret_bytes(&[9; 32]).sign_piece(seq, seq * 1_000, flags, filler_payload(1, seq)).unwrap()
    }

    #[tokio::test]
    async fn a_player_that_connects_while_the_channel_is_idle_starts_at_the_next_segment() {
        let p = Arc::new(Playout::new());
        let t = 1_800_000_000_000_000;
        p.play_at(&piece(1, PieceFlags::SEGMENT_START), t);
        p.play_at(&piece(2, PieceFlags::NONE), t + 50_000);
        // Playing: a new player gets the GOP so far at once.
        let mut live = p.subscribe_at(t + 100_000);
        assert!(live.recv().await.is_some());
        // The publisher went: after 2 s without a piece, a player gets nothing of the old
        // session's tail; the next session's first segment start is its first byte.
        let mut idle = p.subscribe_at(t + 50_000 + IDLE_AFTER_US + 1);
        p.play_at(&piece(3, PieceFlags::NONE), t + 5_000_000);
        let next = piece(40, PieceFlags::SEGMENT_START.union(PieceFlags::DISCONTINUITY));
        p.play_at(&next, t + 5_050_000);
        let first = idle.recv().await.unwrap();
        assert_eq!(&first[..], &next.payload()[..], "the new session's segment start, untouched");
    }

    #[test]
    fn skipped_numbers_are_kept_as_runs_the_newest_few() {
        let p = Playout::new();
        for seq in [10, 11, 12, 20, 22, 23] {
            p.skipped(seq);
        }
        assert_eq!(p.stats().skipped, 6);
        assert_eq!(p.skipped_runs(), vec![[10, 12], [20, 20], [22, 23]]);
        // Only the newest runs stay; the count keeps everything.
        for k in 0..SKIPPED_RUNS as u64 {
            p.skipped(100 + 2 * k);
        }
        let runs = p.skipped_runs();
        assert_eq!(runs.len(), SKIPPED_RUNS);
        assert_eq!(runs[0], [100, 100]);
        assert_eq!(p.stats().skipped, 6 + SKIPPED_RUNS as u64);
        p.skipped(u64::MAX);
        p.skipped(0);
        assert_eq!(p.skipped_runs()[SKIPPED_RUNS - 2..], [[u64::MAX, u64::MAX], [0, 0]]);
    }
}
