//! Prometheus metrics of the ingest service. Labels are bounded: protocol (2 values),
//! refusal reason and bad-input kind (fixed sets), channel (operator-defined channels,
//! never anything a publisher sends).

use httpkit::registered;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Debug, Clone)]
pub struct IngestMetrics {
    pub registry: Registry,
    pub bytes_in: IntCounterVec,
    pub pieces: IntCounter,
    pub piece_bytes: IntCounter,
    pub segments: IntCounter,
    pub publishers_active: IntGauge,
    pub publishes: IntCounterVec,
    pub refusals: IntCounterVec,
    pub takeovers: IntCounter,
    pub revoked: IntCounterVec,
    pub paced: IntCounter,
    pub bad_input: IntCounterVec,
    pub long_gops: IntCounter,
    pub ad_cues_dropped: IntCounter,
    pub discontinuities: IntCounter,
    pub epoch_events: IntCounterVec,
    pub pieces_withheld: IntCounter,
    pub frames_before_keyframe: IntCounter,
    pub keyframe_interval: GaugeVec,
    pub added_latency: Histogram,
    pub subscribers: IntGauge,
    pub srt_rtt: GaugeVec,
    pub srt_lost: IntGaugeVec,
    pub srt_retransmitted: IntGaugeVec,
    pub srt_dropped: IntGaugeVec,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IngestMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let counter = |name: &str, help: &str| registered(&registry, IntCounter::new(name, help));
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help));
        let keyframe_interval = GaugeVec::new(
            Opts::new("shoal_ingest_keyframe_interval_seconds", "Last keyframe interval per channel"),
            &["channel"],
        )
        .expect("valid metric");
        registry.register(Box::new(keyframe_interval.clone())).expect("registered once");
        let added_latency = Histogram::with_opts(
            HistogramOpts::new(
                "shoal_ingest_added_latency_seconds",
                "From the tag or packet that completes a piece arriving to the signed piece in the live window",
            )
            .buckets(vec![0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]),
        )
        .expect("valid metric");
        registry.register(Box::new(added_latency.clone())).expect("registered once");
        let int_gauge_vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["channel"]).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let srt_rtt = GaugeVec::new(
            Opts::new("shoal_ingest_srt_rtt_seconds", "Smoothed round-trip time of the channel's SRT publisher"),
            &["channel"],
        )
        .expect("valid metric");
        registry.register(Box::new(srt_rtt.clone())).expect("registered once");
        let m = IngestMetrics {
            srt_lost: int_gauge_vec(
                "shoal_ingest_srt_session_lost_packets",
                "Packets the current SRT session of the channel reported lost (before retransmission)",
            ),
            srt_retransmitted: int_gauge_vec(
                "shoal_ingest_srt_session_retransmitted_packets",
                "Retransmitted packets received in the current SRT session of the channel",
            ),
            srt_dropped: int_gauge_vec(
                "shoal_ingest_srt_session_dropped_packets",
                "Packets the current SRT session dropped as too late (lost for good)",
            ),
            srt_rtt,
            bytes_in: counter_vec("shoal_ingest_bytes_in_total", "Media bytes received", &["protocol"]),
            pieces: counter("shoal_ingest_pieces_total", "Signed pieces produced"),
            piece_bytes: counter("shoal_ingest_piece_bytes_total", "Payload bytes of signed pieces"),
            segments: counter("shoal_ingest_segments_total", "Segment starts (keyframes) produced"),
            publishers_active: gauge("shoal_ingest_publishers_active", "Publish sessions now active"),
            publishes: counter_vec("shoal_ingest_publishes_total", "Publish sessions accepted", &["protocol"]),
            refusals: counter_vec("shoal_ingest_publish_refusals_total", "Publish attempts refused", &["reason"]),
            takeovers: counter(
                "shoal_ingest_publisher_takeovers_total",
                "Publishers that replaced a session of the same channel (reconnects)",
            ),
            revoked: counter_vec(
                "shoal_ingest_sessions_revoked_total",
                "Live publish sessions ended because their key or channel may no longer publish",
                &["reason"],
            ),
            paced: counter(
                "shoal_ingest_publisher_paced_total",
                "Pauses of a publisher faster than real time until its media met the wall clock",
            ),
            bad_input: counter_vec(
                "shoal_ingest_bad_input_total",
                "Tags, packets or connections refused as malformed",
                &["kind"],
            ),
            long_gops: counter("shoal_ingest_long_gops_total", "GOPs longer than the configured maximum"),
            ad_cues_dropped: counter(
                "shoal_ingest_ad_cues_dropped_total",
                "Ad-break cues from encoders on channels registered ad-free (dropped)",
            ),
            discontinuities: counter(
                "shoal_ingest_discontinuities_total",
                "New timelines cut from their start after a channel's first (encoder restarts, timestamp jumps)",
            ),
            epoch_events: counter_vec(
                "shoal_ingest_epoch_events_total",
                "Feeds bound to an epoch (joined: on the newest one's timeline; created: a new one; local: the store \
                 unreachable), store errors, newer epochs of another feed (other_feed), pieces below the window's \
                 newest dropped",
                &["event"],
            ),
            pieces_withheld: counter(
                "shoal_ingest_pieces_withheld_total",
                "Pieces cut but not published: a node's first segment after joining a timeline mid-stream, a \
                 session's unfinished last piece",
            ),
            frames_before_keyframe: counter(
                "shoal_ingest_frames_before_keyframe_total",
                "Frames dropped waiting for a keyframe (at a session start or after a discontinuity)",
            ),
            subscribers: gauge("shoal_ingest_piece_subscribers", "Open piece streams (seeders, debug taps)"),
            keyframe_interval,
            added_latency,
            registry,
        };
        // Every series a dashboard or alert may query exists from the start, at 0
        // (Prometheus can't tell "none yet" from "not exported"). Per-channel series
        // appear with the channel's first publish.
        for p in ["rtmp", "srt"] {
            m.bytes_in.with_label_values(&[p]);
            m.publishes.with_label_values(&[p]);
        }
        for r in [
            "unknown_key",
            "bad_application",
            "channel_disabled",
            "license_required",
            "license_expired",
            "no_signing_key",
            "already_publishing",
            "directory_error",
            "handshake_failed",
            "bad_mode",
            "bad_stream_id",
            "connection_cap",
            "publish_timeout",
        ] {
            m.refusals.with_label_values(&[r]);
        }
        for r in ["unknown_key", "channel_disabled", "license_required", "license_expired"] {
            m.revoked.with_label_values(&[r]);
        }
        for e in ["joined", "created", "local", "store_error", "other_feed", "piece_below_newest"] {
            m.epoch_events.with_label_values(&[e]);
        }
        for k in ["flv_tag", "codec", "rtmp_protocol", "ts_sync", "ts_pes", "ts_section", "ahead_of_clock"] {
            m.bad_input.with_label_values(&[k]);
        }
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        httpkit::render(&self.registry)
    }
}
