//! The figures of measuring.md, computed from a finished run.

use serde::{Deserialize, Serialize};
use swarm::peer::PeerStats;

use crate::engine::{Kind, NOT_YET, Outcome};
use crate::scenario::Scenario;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StartupPercentiles {
    pub p50: u64,
    pub p99: u64,
}

/// The JSON `shoal sim --json` writes. The keys of measuring.md first; more after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub viewers: u32,
    pub seeds: u32,
    pub bitrate_kbps: u32,
    pub rng_seed: u64,
    /// Ingest → verified at a viewer, over (viewer, piece) pairs that arrived, ms.
    pub latency_ms: Percentiles,
    /// Share of (viewer, piece) pairs verified by ingest time + playout delay.
    pub continuity: f64,
    /// Seed upload bytes ÷ viewer download bytes, in the window.
    pub seed_share: f64,
    /// Piece bytes received again ÷ useful piece bytes, in the window.
    pub duplicate_ratio: f64,
    /// Join → holding a verified segment start, ms (every viewer that joined).
    pub startup_ms: StartupPercentiles,
    pub seed_upload_bytes: u64,
    pub viewer_download_bytes: u64,
    pub forged_pieces_sent: u64,
    pub forged_pieces_accepted: u64,
    pub events: u64,
    pub wall_s: f64,
    /// Viewers present for the whole window (the population of latency/continuity).
    pub measured_viewers: u64,
    /// Pieces created in the window.
    pub window_pieces: u64,
    /// (viewer, piece) pairs in the window that never arrived.
    pub missing_pairs: u64,
    /// Measured viewers that verified no piece at all.
    pub viewers_without_pieces: u64,
    /// Joined viewers that never started playback.
    pub never_started: u64,
    /// Things honest peers refused (forged pieces, protocol errors, ...).
    pub rejected: u64,
    pub attackers: u32,
    /// What they did (`forge`, `withhold`, `liar`, `flood`, `sybil`).
    #[serde(default)]
    pub attack: String,
    pub playout_delay_ms: u32,
    /// Whole-run peer counters, summed by role: where the bytes went.
    pub seed_pieces_pushed: u64,
    pub seed_pieces_served: u64,
    pub viewer_pieces_pushed: u64,
    pub viewer_pieces_served: u64,
    pub viewer_requests_sent: u64,
    pub viewer_requests_timed_out: u64,
    /// Requests given up near the deadline for another source.
    #[serde(default)]
    pub viewer_requests_hedged: u64,
    /// Neighbours honest peers dropped for flooding (a run of pieces they already
    /// held): zero unless attackers flood, else the rule misfires.
    #[serde(default)]
    pub flood_drops: u64,
    /// Seed child slots taken back because no other neighbour was fed through the child.
    #[serde(default)]
    pub seed_children_unvouched: u64,
    /// Push parents viewers dropped for not delivering in time.
    #[serde(default)]
    pub parents_stalled: u64,
    /// Inbound connections honest nodes refused: over a per-address or per-/24 cap,
    /// or from a banned address.
    #[serde(default)]
    pub connections_refused: u64,
    /// At the end: (viewer, substream) pairs with no push parent, and the mean tree
    /// depth of the others.
    pub orphan_substreams: u64,
    pub mean_depth: f64,
    pub warmup_s: u32,
    pub window_s: u32,
    /// Bytes all seeds sent in each simulated second, from the start.
    pub seed_egress_per_s: Vec<u64>,
    /// Viewers present in each simulated second.
    pub viewers_per_s: Vec<u32>,
    /// Peak resident memory of the process, MiB (Linux; 0 elsewhere).
    pub peak_rss_mib: u64,
    /// Every latency sample, for the CDF plot (not written to JSON).
    #[serde(skip)]
    pub latency_samples_ms: Vec<u32>,
}

pub(crate) fn build(sc: &Scenario, out: &Outcome, wall_s: f64) -> Report {
    let ms = 1_000u64;
    let w_start = u64::from(sc.warmup_s) * 1_000 * ms;
    let w_end = w_start + u64::from(sc.window_s) * 1_000 * ms;
    let end = sc.end_ms() * ms;
    let deadline = u64::from(sc.playout_delay_ms) * ms;
    let window: Vec<(usize, u64)> = out
        .pieces
        .iter()
        .filter(|p| (w_start..w_end).contains(&p.timestamp_us()))
        .map(|p| (p.seq() as usize, p.timestamp_us()))
        .collect();

    let mut latencies = Vec::new();
    let (mut on_time, mut pairs, mut missing, mut without, mut measured) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut dup, mut useful) = (0u64, 0u64);
    // (late or missing pairs, reachable, upload kbps) per measured viewer.
    let mut late_per_viewer: Vec<(u64, bool, u64)> = Vec::new();
    for n in out.nodes.iter().filter(|n| n.kind == Kind::Viewer) {
        let present = n.joined_at <= w_start && n.left_at.is_none_or(|l| l >= end) && n.alive;
        if !present {
            continue;
        }
        measured += 1;
        dup += n.dup_snapshot[1].0.saturating_sub(n.dup_snapshot[0].0);
        useful += n.dup_snapshot[1].1.saturating_sub(n.dup_snapshot[0].1);
        if n.accepted_at.iter().all(|&t| t == NOT_YET) {
            without += 1;
        }
        let on_time_before = on_time;
        for &(seq, ts) in &window {
            pairs += 1;
            match n.accepted_at.get(seq).copied().filter(|&t| t != NOT_YET) {
                Some(t) => {
                    let lat = (u64::from(t) * ms).saturating_sub(ts);
                    latencies.push(lat);
                    if lat <= deadline {
                        on_time += 1;
                    }
                }
                None => missing += 1,
            }
        }
        late_per_viewer.push((window.len() as u64 - (on_time - on_time_before), n.reachable, n.upload_bps / 1000));
    }
    latencies.sort_unstable();
    if std::env::var_os("SIM_DEBUG").is_some() {
        debug_late_pairs(late_per_viewer);
    }

    let mut startups = Vec::new();
    let mut never_started = 0;
    for n in out.nodes.iter().filter(|n| n.kind == Kind::Viewer && n.joined_at + 10_000 * ms <= end) {
        let gone_early = n.left_at.is_some_and(|l| l < n.joined_at + 10_000 * ms);
        match n.started_at {
            Some(t) => startups.push(t - n.joined_at),
            None if !gone_early && (n.alive || n.left_at.is_some()) => never_started += 1,
            None => {}
        }
    }
    startups.sort_unstable();

    let seed_up: u64 = out.nodes.iter().filter(|n| n.kind == Kind::Seed).map(|n| n.bytes_up_window).sum();
    let viewer_down: u64 = out.nodes.iter().filter(|n| n.kind == Kind::Viewer).map(|n| n.bytes_down_window).sum();
    let depths: Vec<u8> = out
        .nodes
        .iter()
        .filter(|n| n.kind == Kind::Viewer && n.alive)
        .filter_map(|n| n.peer_depths())
        .flatten()
        .collect();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Report {
        scenario: sc.name.clone(),
        viewers: sc.viewers,
        seeds: sc.seeds,
        bitrate_kbps: sc.bitrate_kbps,
        rng_seed: sc.rng_seed,
        latency_ms: Percentiles {
            p50: pct(&latencies, 0.50) / ms,
            p95: pct(&latencies, 0.95) / ms,
            p99: pct(&latencies, 0.99) / ms,
            max: latencies.last().copied().unwrap_or(0) / ms,
        },
        continuity: ratio(on_time, pairs),
        seed_share: ratio(seed_up, viewer_down),
        duplicate_ratio: ratio(dup, useful),
        startup_ms: StartupPercentiles { p50: pct(&startups, 0.50) / ms, p99: pct(&startups, 0.99) / ms },
        seed_upload_bytes: seed_up,
        viewer_download_bytes: viewer_down,
        forged_pieces_sent: out.forged_sent,
        forged_pieces_accepted: out.forged_accepted,
        events: out.events,
        wall_s,
        measured_viewers: measured,
        window_pieces: window.len() as u64,
        missing_pairs: missing,
        viewers_without_pieces: without,
        never_started,
        rejected: out.rejected,
        attackers: sc.attackers,
        attack: sc.attack.name().to_owned(),
        playout_delay_ms: sc.playout_delay_ms,
        seed_pieces_pushed: sum(out, Kind::Seed, |s| s.pushes_sent),
        seed_pieces_served: sum(out, Kind::Seed, |s| s.responses_sent),
        viewer_pieces_pushed: sum(out, Kind::Viewer, |s| s.pushes_sent),
        viewer_pieces_served: sum(out, Kind::Viewer, |s| s.responses_sent),
        viewer_requests_sent: sum(out, Kind::Viewer, |s| s.requests_sent),
        viewer_requests_timed_out: sum(out, Kind::Viewer, |s| s.requests_timed_out),
        viewer_requests_hedged: sum(out, Kind::Viewer, |s| s.requests_hedged),
        flood_drops: sum(out, Kind::Viewer, |s| s.floods) + sum(out, Kind::Seed, |s| s.floods),
        seed_children_unvouched: sum(out, Kind::Seed, |s| s.children_unvouched),
        parents_stalled: sum(out, Kind::Viewer, |s| s.parents_stalled),
        connections_refused: out
            .nodes
            .iter()
            .filter_map(|n| n.guard_stats())
            .map(|g| g.refused_banned + g.refused_capped)
            .sum(),
        orphan_substreams: depths.iter().filter(|&&d| d == u8::MAX).count() as u64,
        mean_depth: {
            let fed: Vec<f64> = depths.iter().filter(|&&d| d != u8::MAX).map(|&d| f64::from(d)).collect();
            if fed.is_empty() { 0.0 } else { fed.iter().sum::<f64>() / fed.len() as f64 }
        },
        warmup_s: sc.warmup_s,
        window_s: sc.window_s,
        seed_egress_per_s: out.seed_egress.clone(),
        viewers_per_s: viewers_per_second(out, end),
        peak_rss_mib: peak_rss_mib(),
        latency_samples_ms: latencies.iter().map(|&l| u32::try_from(l / ms).unwrap_or(u32::MAX)).collect(),
    }
}

fn sum(out: &Outcome, kind: Kind, f: impl Fn(&PeerStats) -> u64) -> u64 {
    out.nodes.iter().filter(|n| n.kind == kind).filter_map(|n| n.peer_stats()).map(f).sum()
}

fn viewers_per_second(out: &Outcome, end_us: u64) -> Vec<u32> {
    let secs = end_us.div_ceil(1_000_000) as usize;
    let mut delta = vec![0i64; secs + 1];
    for n in out.nodes.iter().filter(|n| n.kind == Kind::Viewer && (n.alive || n.left_at.is_some())) {
        delta[((n.joined_at / 1_000_000) as usize).min(secs)] += 1;
        if let Some(left) = n.left_at {
            delta[((left / 1_000_000) as usize).min(secs)] -= 1;
        }
    }
    let mut count = 0i64;
    delta[..secs]
        .iter()
        .map(|d| {
            count += d;
            u32::try_from(count.max(0)).unwrap_or(u32::MAX)
        })
        .collect()
}

/// Peak resident set size (VmHWM), MiB, from /proc; 0 where there is none.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `SIM_DEBUG`: how the late (or missing) pairs of the continuity figure spread over
/// the measured viewers, and over their reachability and upload.
fn debug_late_pairs(mut per: Vec<(u64, bool, u64)>) {
    per.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
    let total: u64 = per.iter().map(|p| p.0).sum();
    let with = per.iter().filter(|p| p.0 > 0).count();
    let top = |k: usize| per.iter().take(k).map(|p| p.0).sum::<u64>();
    eprintln!(
        "late pairs {total}: viewers with any {with} of {}; the worst 10 hold {}, 60 {}, 600 {}",
        per.len(),
        top(10),
        top(60),
        top(600)
    );
    let mut by: std::collections::BTreeMap<(bool, u64), (u64, u64)> = Default::default();
    for &(late, reachable, kbps) in &per {
        let e = by.entry((reachable, kbps)).or_default();
        e.0 += 1;
        e.1 += late;
    }
    eprintln!("(reachable, upload kbps) -> (viewers, late pairs): {by:?}");
}

#[cfg(test)]
mod tests {
    use super::pct;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(pct(&v, 0.5), 50);
        assert_eq!(pct(&v, 0.99), 99);
        assert_eq!(pct(&v, 1.0), 100);
        assert_eq!(pct(&[7], 0.99), 7);
        assert_eq!(pct(&[], 0.5), 0);
    }
}
