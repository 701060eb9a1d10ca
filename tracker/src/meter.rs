//! Metering's way to the catalogue: usage drained from the swarms every flush interval
//! and written with the viewers' and seeds' marks in one transaction
//! ([`Db::record_flush`]). A failed write keeps the batch, in order, with its window
//! number, and is retried — the same keys, so nothing is counted twice. Marks merge in
//! the catalogue (whichever replica writes them, however often), and the bill's
//! viewer-seconds and seed bytes are computed from them at the roll-up; a killed
//! tracker's unwritten marks are carried on by the peers' next announces to any
//! replica, so a restarted tracker loads nothing.

use std::collections::{BTreeSet, VecDeque};

use tokio::sync::Mutex;

use catalogue::db::Db;
use catalogue::usage::Drained;

use crate::store::Swarms;

/// Batches kept while the database is unreachable (a day of minutely flushes).
pub const MAX_QUEUED: usize = 1_440;

#[derive(Debug)]
struct Batch {
    window: i64,
    drained: Drained,
}

#[derive(Debug)]
pub struct Meter {
    db: Db,
    node: String,
    /// Random, per process: in every batch's key, so a restarted tracker (or a second
    /// one left on the same node name) never writes a key an earlier one wrote, which
    /// `ON CONFLICT DO NOTHING` would drop.
    epoch: u64,
    queue: Mutex<(i64, VecDeque<Batch>)>,
    /// Hours that written batches had usage of, not yet rolled up: usage that comes
    /// late (a batch queued through an outage) is rolled up too, not only the last
    /// two hours'.
    touched: std::sync::Mutex<BTreeSet<i64>>,
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushOutcome {
    pub written_batches: usize,
    pub queued_batches: usize,
    pub dropped_batches: usize,
    pub viewer_seconds: u64,
    pub ad_viewer_seconds: u64,
    pub seed_bytes: u64,
    /// Seconds since the oldest batch still queued was drained (0: none queued).
    pub lag_s: u64,
    pub failed: bool,
}

impl Meter {
    pub fn new(db: Db, node: impl Into<String>) -> Self {
        use std::hash::BuildHasher;
        let epoch = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
        Meter { db, node: node.into(), epoch, queue: Mutex::new((0, VecDeque::new())), touched: Default::default() }
    }

    /// Drains the swarms and writes everything queued, oldest first.
    pub async fn flush(&self, swarms: &Swarms, unix_now: u64) -> FlushOutcome {
        let drained = swarms.drain_usage(unix_now);
        let mut out = FlushOutcome {
            viewer_seconds: drained.usage.iter().map(|u| u.viewer_seconds).sum(),
            ad_viewer_seconds: drained.usage.iter().map(|u| u.ad_viewer_seconds).sum(),
            seed_bytes: drained.usage.iter().map(|u| u.seed_bytes).sum(),
            ..Default::default()
        };
        let mut q = self.queue.lock().await;
        let (last_window, queue) = &mut *q;
        if !drained.is_empty() {
            // Windows only go up, so two flushes of this process never share a key.
            let window = (unix_now / 60) as i64;
            *last_window = window.max(*last_window + 1);
            queue.push_back(Batch { window: *last_window, drained });
        }
        while queue.len() > MAX_QUEUED {
            queue.pop_front();
            out.dropped_batches += 1;
        }
        while let Some(b) = queue.front() {
            let batch = format!("{:016x}.{}", self.epoch, b.window);
            match self.db.record_flush(&self.node, &batch, &b.drained, unix_now as i64).await {
                Ok(_) => {
                    let d = &b.drained;
                    let hours = d.usage.iter().map(|u| u.hour_start).chain(d.seed_marks.iter().map(|m| m.hour_start));
                    self.touched().extend(hours.map(|h| h as i64));
                    queue.pop_front();
                    out.written_batches += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, queued = queue.len(), "usage not written; kept and retried at the next flush");
                    out.failed = true;
                    break;
                }
            }
        }
        out.queued_batches = queue.len();
        out.lag_s = queue.front().map_or(0, |b| unix_now.saturating_sub(b.window as u64 * 60));
        out
    }

    /// Rolls up the current hour (so usage queries see it), the previous one (for
    /// usage that arrived after it ended), and any other hour a batch written since
    /// the last roll-up had usage of (late usage) and the hour after each (whose
    /// viewers continuing from it are billed from its marks).
    pub async fn roll_up(&self, unix_now: u64) -> catalogue::db::Result<()> {
        let hour = (unix_now - unix_now % 3600) as i64;
        let mut hours = std::mem::take(&mut *self.touched());
        let next: Vec<i64> = hours.iter().map(|h| h + 3600).filter(|h| *h <= hour).collect();
        hours.extend(next);
        hours.extend([hour - 3600, hour]);
        while let Some(h) = hours.pop_first() {
            if let Err(e) = self.db.roll_up_hour(h, unix_now as i64).await {
                // Tried again at the next roll-up.
                self.touched().extend(hours.into_iter().chain([h]));
                return Err(e);
            }
        }
        Ok(())
    }

    fn touched(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.touched.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
