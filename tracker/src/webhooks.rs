//! Delivers webhook events to the accounts' endpoints (what is delivered, and when, is
//! the catalogue's: `catalogue::db` webhooks, `catalogue::webhooks`). Every tracker with
//! a catalogue runs one; replicas share the work through the catalogue (a delivery is
//! claimed before it is sent). Each round: licence events (once a minute), then every
//! due delivery — signed at the moment it is sent, sent concurrently, at most 10 s
//! each, the outcome recorded (delivered, or retried later, or given up).

use std::sync::Arc;
use std::time::Duration;

use catalogue::db::{Attempt, Db, DbError, DueDelivery};
use catalogue::webhooks::{self as hooks, EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER};
use httpkit::client::{self, AddrFilter};
use prometheus::IntCounterVec;

/// An attempt's time limit.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery is held before another deliverer may take it (longer
/// than an attempt: only a deliverer that died mid-attempt leaves one that long).
pub const LEASE_S: i64 = 60;
/// Deliveries taken per round.
pub const BATCH: i64 = 64;
/// How often licences are scanned for `licence.expiring` / `licence.expired`, seconds.
pub const LICENCE_SCAN_S: i64 = 60;

#[derive(Debug, Clone)]
pub struct Deliverer {
    db: Db,
    tls: Arc<rustls::ClientConfig>,
    allow: AddrFilter,
    /// outcome: delivered, retry, gave_up, refused.
    pub outcomes: IntCounterVec,
}

impl Deliverer {
    /// Delivers from `db`; to public addresses only unless `allow_private` (endpoints
    /// inside the operator's own network, and tests). Counts outcomes in `outcomes`.
    pub fn new(db: Db, allow_private: bool, outcomes: IntCounterVec) -> Self {
        let allow = if allow_private { client::any_address } else { client::public_only };
        Deliverer { db, tls: client::tls_client_config(), allow, outcomes }
    }

    /// Trusts `tls`'s roots instead of Mozilla's (tests with their own certificate).
    pub fn with_tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// One round at Unix time `now`: licence events if `scan`, then the due deliveries.
    /// Returns how many attempts were made.
    pub async fn round(&self, now: i64, scan: bool) -> Result<usize, DbError> {
        if scan {
            self.db.emit_licence_events(now).await?;
        }
        let mut mine = Vec::new();
        for d in self.db.due_deliveries(now, BATCH).await? {
            if self.db.claim_delivery(&d, now + LEASE_S).await? {
                mine.push(d);
            }
        }
        let attempts = futures_util::future::join_all(mine.iter().map(|d| self.attempt(d, now))).await;
        for (d, outcome) in mine.iter().zip(&attempts) {
            self.db.record_attempt(d, outcome, now).await?;
            let label = match outcome {
                Attempt::Delivered(_) => "delivered",
                Attempt::Failed(..) if d.attempts + 1 >= hooks::MAX_ATTEMPTS => "gave_up",
                Attempt::Failed(None, why) if why.contains("refused") => "refused",
                Attempt::Failed(..) => "retry",
            };
            self.outcomes.with_label_values(&[label]).inc();
            if let Attempt::Failed(status, why) = outcome {
                tracing::warn!(event = %d.event_id, url = %d.url, ?status, why, attempt = d.attempts + 1, "webhook not delivered");
            }
        }
        Ok(attempts.len())
    }

    async fn attempt(&self, d: &DueDelivery, now: i64) -> Attempt {
        let headers = [
            (SIGNATURE_HEADER, hooks::sign(&d.secret, now, d.payload.as_bytes())),
            (EVENT_ID_HEADER, d.event_id.clone()),
            (EVENT_TYPE_HEADER, d.event_type.clone()),
            ("user-agent", "shoal-webhooks/1".to_owned()),
        ];
        let body = d.payload.clone().into_bytes();
        match client::post(&d.url, &headers, body, ATTEMPT_TIMEOUT, Some(&self.tls), self.allow, 4096).await {
            Ok((status, _)) if (200..300).contains(&status) => Attempt::Delivered(status),
            Ok((status, _)) => Attempt::Failed(Some(status), format!("answered {status}")),
            Err(e) => Attempt::Failed(None, e.to_string()),
        }
    }

    /// Rounds every second, for as long as the process runs; a catalogue error is
    /// logged and the next round tries again.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_scan: Option<i64> = None;
        loop {
            tick.tick().await;
            let now = crate::http::unix_now() as i64;
            let scan = licence_scan_due(last_scan, now);
            match self.round(now, scan).await {
                Ok(_) if scan => last_scan = Some(now),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "webhook round failed; next in 1 s"),
            }
        }
    }
}

/// Whether the licence scan is due at `now`, the last one having run at `last`: at the
/// first round, then every [`LICENCE_SCAN_S`]. (It was `now - i64::MIN >= 60`, which
/// overflows: a panic in debug builds, and in release a negative difference — licences
/// were never scanned by a running tracker, so `licence.expiring` and `licence.expired`
/// were never sent.)
fn licence_scan_due(last: Option<i64>, now: i64) -> bool {
    last.is_none_or(|l| now.saturating_sub(l) >= LICENCE_SCAN_S)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_licence_scan_runs_at_the_first_round_then_every_minute() {
        use super::{LICENCE_SCAN_S, licence_scan_due};
        assert!(licence_scan_due(None, 1_800_000_000));
        assert!(licence_scan_due(None, i64::MIN));
        assert!(!licence_scan_due(Some(1_000), 1_000 + LICENCE_SCAN_S - 1));
        assert!(licence_scan_due(Some(1_000), 1_000 + LICENCE_SCAN_S));
        assert!(!licence_scan_due(Some(i64::MAX), i64::MIN), "a clock that went back: not yet");
    }
}
