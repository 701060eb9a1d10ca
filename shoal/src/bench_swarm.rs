//! `shoal bench swarm`: the swarm on real sockets, in one process on loopback — the
//! tracker over HTTP, seeders fed signed pieces at the channel's bitrate (as ingest
//! makes them: 50 ms pieces, a segment start every second), and viewers joining a few
//! at a time, every link delayed by `--delay-ms` each way. Writes measuring.md's JSON
//! (`target/bench/bench-swarm.json`) and prints a table; asserts nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::http::SeederTokens;
use node::roles::{self, Join, Node};
use node::shell::now_us;
use serde::Serialize;
use swarm::piece::{ChannelKeypair, PieceFlags, filler_payload};
use tracker::Tracker;
use tracker::directory::StaticDirectory;
use tracker::store::StoreConfig;

#[derive(Debug, clap::Args)]
pub(crate) struct SwarmBenchArgs {
    #[arg(long, default_value_t = 200)]
    viewers: u32,
    #[arg(long, default_value_t = 2)]
    seeders: u32,
    /// Channel bitrate, kbit/s.
    #[arg(long, default_value_t = 3_000)]
    kbps: u32,
    /// Seconds after the last viewer joined before measuring.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// One-way delay of every link, ms.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// Viewers' upload capacity, kbit/s.
    #[arg(long, default_value_t = 6_000)]
    viewer_kbps: u32,
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: u32,
    p95: u32,
    p99: u32,
    max: u32,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    viewers: u32,
    seeds: u32,
    bitrate_kbps: u32,
    link_delay_ms: u64,
    latency_ms: Percentiles,
    continuity: f64,
    seed_share: f64,
    duplicate_ratio: f64,
    startup_ms: Percentiles,
    seed_upload_bytes: u64,
    viewer_download_bytes: u64,
    viewer_upload_bytes: u64,
    forged_pieces_accepted: u64,
    wall_s: f64,
}

/// Counters summed over the nodes at one moment.
#[derive(Debug, Default)]
struct Totals {
    played: u64,
    skipped: u64,
    down: u64,
    up: u64,
    seed_up: u64,
    dup: u64,
    accepted: u64,
    forged: u64,
    /// Latency samples held per viewer.
    samples: Vec<usize>,
}

fn totals(viewers: &[(Node, u64)], seeders: &[Node]) -> Totals {
    let mut t = Totals::default();
    for (v, _) in viewers {
        let s = v.playout.stats();
        t.played += s.played;
        t.skipped += s.skipped;
        t.samples.push(v.playout.sample_count());
        let snap = v.handle.snapshot();
        t.down += snap.bytes_received;
        t.up += snap.bytes_sent;
        t.dup += snap.stats.duplicate_bytes;
        t.accepted += snap.stats.piece_bytes_accepted;
        t.forged += snap.stats.forged_pieces;
    }
    t.seed_up = seeders.iter().map(|s| s.handle.snapshot().bytes_sent).sum();
    t
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn percentiles(mut v: Vec<u32>) -> Percentiles {
    v.sort_unstable();
    Percentiles { p50: pct(&v, 0.5), p95: pct(&v, 0.95), p99: pct(&v, 0.99), max: v.last().copied().unwrap_or(0) }
}

pub(crate) fn run(a: SwarmBenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = Instant::now();
    let report = rt.block_on(bench(&a))?;
    let report = Report { wall_s: started.elapsed().as_secs_f64(), ..report };
    println!("{:<28} {:>16} {:>12}", "figure", "measured", "target");
    let l = &report.latency_ms;
    println!("{:<28} {:>16} {:>12}", "viewers / seeders", format!("{} / {}", report.viewers, report.seeds), "");
    println!("{:<28} {:>16} {:>12}", "latency p50/p99/max ms", format!("{}/{}/{}", l.p50, l.p99, l.max), "p99 ≤ 2000");
    println!("{:<28} {:>16.5} {:>12}", "continuity", report.continuity, "≥ 0.999");
    println!("{:<28} {:>16.4} {:>12}", "seed share", report.seed_share, "≤ 0.05");
    println!("{:<28} {:>16.4} {:>12}", "duplicate ratio", report.duplicate_ratio, "");
    let s = &report.startup_ms;
    println!("{:<28} {:>16} {:>12}", "startup p50/p99 ms", format!("{}/{}", s.p50, s.p99), "");
    println!("{:<28} {:>16.1} {:>12}", "wall s", report.wall_s, "");
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join("bench-swarm.json");
    crate::write_atomic(&path, &serde_json::to_vec_pretty(&report)?)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

async fn bench(a: &SwarmBenchArgs) -> anyhow::Result<Report> {
    let key = ChannelKeypair::from_secret_bytes(&[0x5b; 32]);
    let channel = key.id();
    let dir = StaticDirectory::new([("bench".to_owned(), channel)]);
    let tracker = Arc::new(Tracker::new(StoreConfig::default(), Arc::new(dir), SeederTokens::from_tokens(["seed"])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(tracker::http::serve(listener, tracker));
    let local: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let delay = Duration::from_millis(a.delay_ms);
    let join = |seed: bool, kbps: u32| Join {
        tracker: url.clone(),
        channel,
        listen: local,
        seed_token: seed.then(|| "seed".to_owned()),
        upload_kbps: kbps,
        shell: node::shell::ShellOptions { link_delay: delay, ..Default::default() },
    };
    let mut origins = Vec::new();
    let mut seeders = Vec::new();
    for _ in 0..a.seeders.max(1) {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        seeders.push(roles::seeder(join(true, 1_000_000), rx, None).await.context("starting a seeder")?);
        origins.push(tx);
    }
    // 50 ms pieces at the bitrate, whole TS packets.
    let packets = ((u64::from(a.kbps) * 1000 / 8 / 20) as usize).div_ceil(188).max(1);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for seq in 0u64.. {
            tick.tick().await;
            let flags = if seq % 20 == 0 { PieceFlags::SEGMENT_START } else { PieceFlags::NONE };
            let Ok(piece) = key.sign_piece(seq, now_us(), flags, filler_payload(packets, seq)) else { return };
            for o in &origins {
                let _ = o.try_send(piece.clone());
            }
        }
    });
    // Viewers join 20 per second.
    let mut viewers: Vec<(Node, u64)> = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..a.viewers {
        pace.tick().await;
        let joined = now_us();
        viewers.push((roles::viewer(join(false, a.viewer_kbps)).await.context("starting a viewer")?, joined));
    }
    eprintln!("{} viewers joined; {} s warm-up, then {} s measured", a.viewers, a.warmup, a.seconds);
    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    let before = totals(&viewers, &seeders);
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let after = totals(&viewers, &seeders);
    let mut latencies = Vec::new();
    let mut startups = Vec::new();
    for ((v, joined), skip) in viewers.iter().zip(&before.samples) {
        let (samples, first) = v.playout.samples();
        latencies.extend(samples.into_iter().skip(*skip));
        startups.push(first.map_or(u32::MAX, |f| u32::try_from(f.saturating_sub(*joined) / 1000).unwrap_or(u32::MAX)));
    }
    let d = |f: fn(&Totals) -> u64| f(&after).saturating_sub(f(&before));
    let (played, skipped, seed_up, up) = (d(|t| t.played), d(|t| t.skipped), d(|t| t.seed_up), d(|t| t.up));
    Ok(Report {
        scenario: "swarm-loopback",
        viewers: a.viewers,
        seeds: a.seeders.max(1),
        bitrate_kbps: a.kbps,
        link_delay_ms: a.delay_ms,
        latency_ms: percentiles(latencies),
        continuity: played as f64 / (played + skipped).max(1) as f64,
        seed_share: seed_up as f64 / (seed_up + up).max(1) as f64,
        duplicate_ratio: d(|t| t.dup) as f64 / d(|t| t.accepted).max(1) as f64,
        startup_ms: percentiles(startups),
        seed_upload_bytes: seed_up,
        viewer_download_bytes: d(|t| t.down),
        viewer_upload_bytes: up,
        forged_pieces_accepted: after.forged,
        wall_s: 0.0,
    })
}
