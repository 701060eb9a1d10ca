//! `shoal bench swarm`: the swarm on real sockets, in one process on loopback — the
//! tracker over HTTP, seeders, and viewers joining a few at a time, every link delayed
//! by `--delay-ms` each way. The feed (`--source`): `fixture` (default), ingest itself
//! (its RTMP listener, segmenter, signer and HTTP piece stream) taking the recorded
//! testsrc fixture, looped at an encoder's pace, with each seeder reading the piece
//! stream as `shoal seeder` does; or `synthetic`, signed filler pieces at `--kbps`
//! handed straight to the seeders (50 ms pieces, a segment start every second: a TV
//! bitrate the small fixture does not have). Writes measuring.md's JSON
//! (`target/bench/bench-swarm.json`) and prints a table; asserts nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use catalogue::directory::StaticDirectory;
use catalogue::secrets::SeederTokens;
use net::shell::now_us;
use net::{Join, Node};
use serde::Serialize;
use swarm::piece::{ChannelId, ChannelKeypair, Piece, PieceFlags, filler_payload};
use tokio::sync::mpsc;
use tracker::Tracker;
use tracker::store::StoreConfig;
use viewer::Viewer;

/// Where the channel comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Feed {
    Fixture,
    Synthetic,
}

/// The recorded fixture: 4 s of testsrc + sine, H.264/AAC in FLV.
const FIXTURE: &[u8] = include_bytes!("../../ingest/tests/fixtures/testsrc-h264-aac-4s.flv");

#[derive(Debug, clap::Args)]
pub(crate) struct SwarmBenchArgs {
    /// The feed: ingest taking the recorded fixture, or synthetic pieces at --kbps.
    #[arg(long, value_enum, default_value = "fixture")]
    source: Feed,
    #[arg(long, default_value_t = 200)]
    viewers: u32,
    #[arg(long, default_value_t = 2)]
    seeders: u32,
    /// Channel bitrate, kbit/s (synthetic feed).
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
    source: &'static str,
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
    /// TCP connections between nodes at the end (each counted once), and the most any
    /// seeder held.
    connections: u64,
    seeder_connections_max: u64,
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

fn totals(viewers: &[(Viewer, u64)], seeders: &[Node]) -> Totals {
    let mut t = Totals::default();
    for (v, _) in viewers {
        let s = v.playout.stats();
        t.played += s.played;
        t.skipped += s.skipped;
        t.samples.push(v.playout.sample_count());
        let snap = v.node.handle.snapshot();
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
    println!("{:<28} {:>16} {:>12}", "feed", report.source, "");
    println!("{:<28} {:>16} {:>12}", "bitrate kbit/s", report.bitrate_kbps, "");
    println!("{:<28} {:>16} {:>12}", "viewers / seeders", format!("{} / {}", report.viewers, report.seeds), "");
    println!("{:<28} {:>16} {:>12}", "latency p50/p99/max ms", format!("{}/{}/{}", l.p50, l.p99, l.max), "p99 ≤ 2000");
    println!("{:<28} {:>16.5} {:>12}", "continuity", report.continuity, "≥ 0.999");
    println!("{:<28} {:>16.4} {:>12}", "seed share", report.seed_share, "≤ 0.05");
    println!("{:<28} {:>16.4} {:>12}", "duplicate ratio", report.duplicate_ratio, "");
    let s = &report.startup_ms;
    println!("{:<28} {:>16} {:>12}", "startup p50/p99 ms", format!("{}/{}", s.p50, s.p99), "");
    println!(
        "{:<28} {:>16} {:>12}",
        "connections (seeder max)",
        format!("{} ({})", report.connections, report.seeder_connections_max),
        ""
    );
    println!("{:<28} {:>16.1} {:>12}", "wall s", report.wall_s, "");
    let path = a.out.join("bench-swarm.json");
    crate::machine::write_bench_json(&path, &report)?;
    Ok(())
}

/// Ingest in process taking the fixture over RTMP, looped; seeders read its piece
/// stream. Returns the channel, the feed's bitrate (kbit/s), and per seeder the
/// receiver of its pieces.
async fn fixture_feed(a: &SwarmBenchArgs) -> anyhow::Result<(ChannelId, u32, Vec<mpsc::Receiver<Piece>>)> {
    use catalogue::admission::Authorizer;
    use catalogue::file::ChannelFile;
    use catalogue::secrets::KeyDir;
    let dir = a.out.join("bench-swarm-ingest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = ChannelFile::new(dir.join("channels.json"), dir.join("keys"));
    let stream_key = file.create_channel("bench", false, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let channel = KeyDir::new(dir.join("keys")).signing_key("bench", None).map_err(|e| anyhow::anyhow!("{e}"))?.id();
    let auth: Arc<dyn Authorizer> = Arc::new(file);
    let hub = ingest::hub::Hub::new(ingest::hub::HubConfig::default());
    let rtmp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (rtmp_addr, http_addr) = (rtmp.local_addr()?, http.local_addr()?);
    tokio::spawn(ingest::rtmp::serve(rtmp, hub.clone(), auth));
    tokio::spawn(ingest::http::serve(http, hub, SeederTokens::from_tokens(["seed"])));
    let publisher = ingest::rtmp_client::RtmpPublisher::connect(rtmp_addr, "live", &stream_key)
        .await
        .map_err(|e| anyhow::anyhow!("publishing the fixture: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = publisher.replay_paced(FIXTURE, None).await {
            tracing::error!(error = %e, "the fixture publisher stopped");
        }
    });
    let tags = ingest::media::flv::read_file(FIXTURE).map_err(|e| anyhow::anyhow!("the fixture: {e}"))?;
    let bytes: usize = tags.iter().map(|t| t.body.len()).sum();
    let span_ms = tags.iter().map(|t| t.timestamp).max().unwrap_or(0) + 40;
    let kbps = u32::try_from(bytes as u64 * 8 / u64::from(span_ms.max(1))).unwrap_or(u32::MAX);
    let mut feeds = Vec::new();
    for _ in 0..a.seeders.max(1) {
        let (id_tx, _) = tokio::sync::watch::channel(None);
        let merged = seeder::merge::MergeMetrics::default();
        feeds.push(seeder::read_ingests(&[format!("http://{http_addr}")], "bench", "seed", id_tx, merged));
    }
    Ok((channel, kbps, feeds))
}

/// Signed filler pieces at `kbps`, as ingest makes them (50 ms, a segment start every
/// second), handed to each seeder.
fn synthetic_feed(a: &SwarmBenchArgs) -> (ChannelId, Vec<mpsc::Receiver<Piece>>) {
    let key = ChannelKeypair::from_secret_bytes(&[0x5b; 32]);
    let channel = key.id();
    let (origins, feeds): (Vec<_>, Vec<_>) = (0..a.seeders.max(1)).map(|_| mpsc::channel(256)).unzip();
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
    (channel, feeds)
}

async fn bench(a: &SwarmBenchArgs) -> anyhow::Result<Report> {
    let (channel, kbps, feeds) = match a.source {
        Feed::Fixture => fixture_feed(a).await?,
        Feed::Synthetic => {
            let (channel, feeds) = synthetic_feed(a);
            (channel, a.kbps, feeds)
        }
    };
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
        shell: net::shell::ShellOptions { link_delay: delay, ..Default::default() },
    };
    let mut seeders = Vec::new();
    for rx in feeds {
        let hls = Arc::new(net::hls::Hls::new("bench"));
        seeders.push(
            seeder::inject(net::node::NodeConfig::seed(join(true, 1_000_000)), rx, hls)
                .await
                .context("starting a seeder")?,
        );
    }
    // Viewers join 20 per second.
    let mut viewers: Vec<(Viewer, u64)> = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..a.viewers {
        pace.tick().await;
        let joined = now_us();
        viewers.push((Viewer::start(join(false, a.viewer_kbps)).await.context("starting a viewer")?, joined));
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
    let ends: usize = viewers.iter().map(|(v, _)| v.node.handle.snapshot().neighbours).sum::<usize>()
        + seeders.iter().map(|s| s.handle.snapshot().neighbours).sum::<usize>();
    let seeder_connections_max = seeders.iter().map(|s| s.handle.snapshot().neighbours).max().unwrap_or(0) as u64;
    let d = |f: fn(&Totals) -> u64| f(&after).saturating_sub(f(&before));
    let (played, skipped, seed_up, up) = (d(|t| t.played), d(|t| t.skipped), d(|t| t.seed_up), d(|t| t.up));
    Ok(Report {
        scenario: "swarm-loopback",
        source: match a.source {
            Feed::Fixture => "ingest+fixture",
            Feed::Synthetic => "synthetic",
        },
        viewers: a.viewers,
        seeds: a.seeders.max(1),
        bitrate_kbps: kbps,
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
        connections: ends as u64 / 2,
        seeder_connections_max,
        wall_s: 0.0,
    })
}
