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
    /// Live-to-playout latency of the last piece played, µs.
    latency_us: u64,
    max_latency_us: u64,
    /// Live-to-playout latency of each piece played, ms (the newest [`SAMPLES`]).
    samples: VecDeque<u32>,
    /// When the first piece was played, µs since the epoch.
    first_play_us: Option<u64>,
}

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
        let mut inner = self.lock();
        let now = now_us();
        inner.played += 1;
        inner.latency_us = now.saturating_sub(piece.timestamp_us());
        inner.max_latency_us = inner.max_latency_us.max(inner.latency_us);
        let ms = u32::try_from(inner.latency_us / 1000).unwrap_or(u32::MAX);
        if inner.samples.len() == SAMPLES {
            inner.samples.pop_front();
        }
        inner.samples.push_back(ms);
        inner.first_play_us.get_or_insert(now);
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

    pub fn skipped(&self) {
        self.lock().skipped += 1;
    }

    pub fn stats(&self) -> PlayStats {
        let i = self.lock();
        PlayStats { played: i.played, skipped: i.skipped, latency_us: i.latency_us, max_latency_us: i.max_latency_us }
    }

    /// The stream for one player: the current GOP, then everything played after it. A
    /// player too slow to keep up skips to the next segment start.
    pub fn subscribe(self: &Arc<Self>) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(256);
        let (gop, mut live) = {
            let inner = self.lock();
            (inner.gop.clone(), self.live.subscribe())
        };
        tokio::spawn(async move {
            let mut synced = !gop.is_empty();
            // One stream: counters and times run on across segments and epochs.
            let mut out = swarm::ts_out::TsOut::default();
            for p in gop {
                if tx.send(out.write(p.payload(), p.flags().contains(PieceFlags::DISCONTINUITY))).await.is_err() {
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
                        if tx.send(out.write(p.payload(), p.flags().contains(PieceFlags::DISCONTINUITY))).await.is_err()
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
