//! `shoal bench ingest`: the recorded fixture replayed across N channels at full speed
//! through the ingest media path (FLV remux, TS mux, segmenter, Ed25519 signing, live
//! window), in process. Reports pieces/s and MB/s per CPU-second and the added latency
//! (tag in → signed piece in the window) p50/p99. Writes JSON, prints a table, asserts
//! nothing.
//!
//! The RTMP socket path against nginx-rtmp is `shoal bench ingest-vs-nginx`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use catalogue::admission::Grant;
use ingest::hub::{Hub, HubConfig, Protocol};
use ingest::media::flv::{self, TAG_AUDIO, TAG_VIDEO};
use serde::Serialize;
use swarm::piece::ChannelKeypair;

#[derive(Debug, Serialize)]
struct BenchIngest {
    /// The FLV replayed (`fixture`: the recorded 4 s one).
    feed: String,
    channels: usize,
    media_seconds_per_channel: f64,
    wall_s: f64,
    cpu_s: f64,
    pieces: u64,
    piece_mbytes: f64,
    pieces_per_cpu_s: f64,
    mbytes_per_cpu_s: f64,
    /// Media seconds ingested per CPU-second: how many real-time channels one core carries.
    realtime_channels_per_core: f64,
    added_latency_us_p50: u64,
    added_latency_us_p99: u64,
    added_latency_us_max: u64,
}

/// This process's user + system CPU time (Linux `/proc/self/stat`; 0 elsewhere).
fn cpu_time() -> Duration {
    crate::bench_nginx::proc_cpu("self").map_or(Duration::ZERO, |(t, _)| t)
}

pub(crate) fn run(channels: usize, loops: u32, feed: Option<PathBuf>, out: PathBuf) -> anyhow::Result<()> {
    let bytes = match &feed {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => ingest::FIXTURE_FLV.to_vec(),
    };
    // Shared bytes, as an RTMP message arrives: a frame keeps a slice of its tag.
    let bytes = bytes::Bytes::from(bytes);
    let tags = flv::read_file(&bytes).map_err(|e| anyhow::anyhow!("feed: {e}"))?;
    let span_ms = tags.iter().map(|t| t.timestamp).max().unwrap_or(0) + 40;
    // The fixture is replayed as fast as the media path goes: numbering is not bound
    // to the clock here (this hub is never restarted).
    let hub = Hub::new(HubConfig { clock_bound: false, ..HubConfig::default() });
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let mut publishers = Vec::new();
    for i in 0..channels {
        let grant = Grant {
            channel: format!("bench-{i}"),
            key: Arc::new(ChannelKeypair::from_secret_bytes(&[i as u8 + 1; 32])),
            carries_ads: false,
            srt_passphrase: None,
        };
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, (i / 256) as u8, (i % 256) as u8));
        publishers
            .push(hub.begin_publish(&grant, &grant.channel, ip, Protocol::Rtmp).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let mut latencies: Vec<u64> = Vec::new();
    let cpu0 = cpu_time();
    let start = Instant::now();
    for round in 0..loops {
        let offset = round * span_ms;
        for tag in &tags {
            if tag.kind != TAG_VIDEO && tag.kind != TAG_AUDIO {
                continue;
            }
            // Configuration tags only once: a real encoder sends them at the start.
            if round > 0 && tag.body.get(1) == Some(&0) {
                continue;
            }
            for p in &mut publishers {
                let seq_before = *p.channel().subscribe().borrow();
                let t = Instant::now();
                // The hub's futures finish at once here (an in-memory epoch store, no
                // pacing): run in place, they cost what the work costs.
                let body = bytes.slice_ref(tag.body);
                let r = if tag.kind == TAG_VIDEO {
                    rt.block_on(p.push_video(tag.timestamp + offset, body))
                } else {
                    rt.block_on(p.push_audio(tag.timestamp + offset, body))
                };
                let took = t.elapsed();
                r.map_err(|e| anyhow::anyhow!("{e}"))?;
                if *p.channel().subscribe().borrow() != seq_before {
                    latencies.push(took.as_micros() as u64);
                }
            }
        }
    }
    let wall = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0).max(Duration::from_millis(10));
    let pieces = hub.metrics.pieces.get();
    let bytes = hub.metrics.piece_bytes.get();
    latencies.sort_unstable();
    let pct = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    let media_s = f64::from(loops) * f64::from(span_ms) / 1000.0;
    let r = BenchIngest {
        feed: feed.as_ref().map_or_else(|| "fixture".to_owned(), |p| p.display().to_string()),
        channels,
        media_seconds_per_channel: media_s,
        wall_s: wall.as_secs_f64(),
        cpu_s: cpu.as_secs_f64(),
        pieces,
        piece_mbytes: bytes as f64 / 1e6,
        pieces_per_cpu_s: pieces as f64 / cpu.as_secs_f64(),
        mbytes_per_cpu_s: bytes as f64 / 1e6 / cpu.as_secs_f64(),
        realtime_channels_per_core: media_s * channels as f64 / cpu.as_secs_f64(),
        added_latency_us_p50: pct(0.50).copied().unwrap_or(0),
        added_latency_us_p99: pct(0.99).copied().unwrap_or(0),
        added_latency_us_max: latencies.last().copied().unwrap_or(0),
    };
    println!("{:<34} {:>12}", "figure", "measured");
    println!("{:<34} {:>12}", "channels", r.channels);
    println!("{:<34} {:>12.1}", "media seconds per channel", r.media_seconds_per_channel);
    println!("{:<34} {:>12.2}", "CPU seconds", r.cpu_s);
    println!("{:<34} {:>12}", "pieces signed", r.pieces);
    println!("{:<34} {:>12.0}", "pieces per CPU-second", r.pieces_per_cpu_s);
    println!("{:<34} {:>12.1}", "MB per CPU-second", r.mbytes_per_cpu_s);
    println!("{:<34} {:>12.0}", "real-time channels per core", r.realtime_channels_per_core);
    println!("{:<34} {:>12}", "added latency p50 µs (target p99 ≤ 20 ms)", r.added_latency_us_p50);
    println!("{:<34} {:>12}", "added latency p99 µs", r.added_latency_us_p99);
    println!("{:<34} {:>12}", "added latency max µs", r.added_latency_us_max);
    let path = out.join("bench-ingest.json");
    crate::machine::write_bench_json(&path, &r)?;
    Ok(())
}
