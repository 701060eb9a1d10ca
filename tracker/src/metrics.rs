//! Prometheus metrics of the tracker. Labels are fixed sets (result, reason); nothing
//! per peer or per channel.

use httpkit::registered;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug, Clone)]
pub struct TrackerMetrics {
    pub registry: Registry,
    /// result: ok, bad_request, unknown_channel, refused, unauthorized.
    pub announces: IntCounterVec,
    /// The `announces` children, resolved once (the announce path is hot).
    announce_results: [(&'static str, IntCounter); 5],
    pub scrapes: IntCounter,
    pub swarms: IntGauge,
    pub seeds: IntGauge,
    pub viewers: IntGauge,
    pub memory: IntGauge,
    pub expired: IntCounter,
    pub pruned: IntCounter,
    pub directory_errors: IntCounter,
    /// result: ok, error.
    pub usage_flushes: IntCounterVec,
    pub usage_queued: IntGauge,
    pub usage_dropped: IntCounter,
    /// Age of the oldest usage not yet in the catalogue.
    pub usage_lag: IntGauge,
    pub viewer_seconds: IntCounter,
    pub ad_viewer_seconds: IntCounter,
    pub seed_bytes: IntCounter,
    /// operation: flush, rollup, directory, admin.
    pub db_errors: IntCounterVec,
    pub redis_errors: IntCounter,
    pub shared_expired: IntCounter,
    /// cap: address_cap, network_cap.
    pub over_cap: IntCounterVec,
    /// outcome: delivered, retry, gave_up, refused.
    pub webhook_attempts: IntCounterVec,
}

impl Default for TrackerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl TrackerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| registered(&registry, IntCounter::new(name, help));
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help));
        let announces = registered(
            &registry,
            IntCounterVec::new(
                Opts::new("shoal_tracker_announces_total", "Announces answered, by result"),
                &["result"],
            ),
        );
        let announce_results = ["ok", "bad_request", "unknown_channel", "refused", "unauthorized"]
            .map(|r| (r, announces.with_label_values(&[r])));
        let m = TrackerMetrics {
            announces,
            announce_results,
            scrapes: counter("shoal_tracker_scrapes_total", "Scrapes answered"),
            swarms: gauge("shoal_tracker_swarms", "Channels with at least one peer (at the last sweep)"),
            seeds: gauge("shoal_tracker_seeds", "Seed nodes announcing (at the last sweep)"),
            viewers: gauge("shoal_tracker_viewers", "Viewers announcing (at the last sweep)"),
            memory: gauge("shoal_tracker_swarm_memory_bytes", "Heap held for swarm state (at the last sweep)"),
            expired: counter("shoal_tracker_expired_peers_total", "Peers dropped for not re-announcing"),
            pruned: counter("shoal_tracker_pruned_swarms_total", "Empty swarms removed"),
            directory_errors: counter(
                "shoal_tracker_directory_errors_total",
                "Failed reloads of the channel directory (the last good one is kept)",
            ),
            usage_flushes: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new("shoal_tracker_usage_flushes_total", "Usage flushes to the catalogue, by result"),
                    &["result"],
                ),
            ),
            usage_queued: gauge(
                "shoal_tracker_usage_queued_batches",
                "Usage batches waiting for the catalogue (it was unreachable)",
            ),
            usage_dropped: counter(
                "shoal_tracker_usage_dropped_batches_total",
                "Usage batches dropped after the catalogue was unreachable for a day",
            ),
            usage_lag: gauge(
                "shoal_tracker_usage_flush_lag_seconds",
                "Age of the oldest usage not yet written to the catalogue (0: all written)",
            ),
            viewer_seconds: counter("shoal_tracker_viewer_seconds_total", "Viewer-seconds credited from announces"),
            ad_viewer_seconds: counter(
                "shoal_tracker_ad_viewer_seconds_total",
                "Viewer-seconds during ad breaks credited from announces",
            ),
            seed_bytes: counter("shoal_tracker_seed_bytes_total", "Bytes seeds reported uploading, credited"),
            db_errors: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new("shoal_tracker_db_errors_total", "Failed catalogue operations, by operation"),
                    &["operation"],
                ),
            ),
            redis_errors: counter(
                "shoal_tracker_redis_errors_total",
                "Failed or timed-out calls to the shared swarm store (the replica answered from its own peers)",
            ),
            shared_expired: counter(
                "shoal_tracker_shared_expired_peers_total",
                "Peers this replica removed from the shared swarm store for not re-announcing",
            ),
            over_cap: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "shoal_tracker_ids_over_cap_total",
                        "Announces of new viewer ids answered but neither listed nor metered: their address or \
                         network already had as many ids on the channel as allowed",
                    ),
                    &["cap"],
                ),
            ),
            webhook_attempts: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "shoal_tracker_webhook_attempts_total",
                        "Webhook delivery attempts, by outcome (retry: failed, tried again later; gave_up: the \
                         last attempt failed; refused: the endpoint's address is private or local)",
                    ),
                    &["outcome"],
                ),
            ),
            registry,
        };
        m.initialize_series();
        m
    }

    /// Counts an announce by its result (one of the five labels).
    pub fn announce_result(&self, result: &'static str) {
        match self.announce_results.iter().find(|(r, _)| *r == result) {
            Some((_, c)) => c.inc(),
            None => self.announces.with_label_values(&[result]).inc(),
        }
    }

    /// Every series a dashboard or alert may query exists from the start, at 0
    /// (Prometheus can't tell "none yet" from "not exported").
    fn initialize_series(&self) {
        for r in ["ok", "error"] {
            self.usage_flushes.with_label_values(&[r]);
        }
        for op in ["flush", "rollup", "directory", "admin"] {
            self.db_errors.with_label_values(&[op]);
        }
        for cap in ["address_cap", "network_cap"] {
            self.over_cap.with_label_values(&[cap]);
        }
        for o in ["delivered", "retry", "gave_up", "refused"] {
            self.webhook_attempts.with_label_values(&[o]);
        }
    }

    /// Counts a new viewer id that was over a cap ([`crate::store::AnnounceReply::over_cap`]).
    pub fn count_over_cap(&self, reply: &crate::store::AnnounceReply) {
        if let Some(cap) = reply.over_cap {
            self.over_cap.with_label_values(&[cap]).inc();
        }
    }

    pub fn render(&self) -> String {
        httpkit::render(&self.registry)
    }
}
