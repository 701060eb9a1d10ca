//! The SRT listener in-process: MPEG-TS (the fixture, remuxed) published by an
//! srt-tokio caller; handshake refusals for a wrong key, a wrong or missing passphrase
//! and a wrong mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use catalogue::admission::Authorizer;
use catalogue::file::ChannelFile;
use futures_util::SinkExt;
use ingest::SegmenterConfig;
use ingest::hub::{Fetch, Hub, HubConfig};
use ingest::media::cutter::FlvCutter;
use ingest::media::epoch::{Epoch, FeedClock};
use srt_tokio::SrtSocket;
use swarm::piece::{ChannelKeypair, PieceFlags};
use swarm::ts_out::TsOut;

const FIXTURE: &[u8] = include_bytes!("fixtures/testsrc-h264-aac-4s.flv");
const PASSPHRASE: &str = "correct horse battery";

/// The fixture as an encoder's MPEG-TS (our own muxer's output, counters run on).
fn fixture_ts() -> Vec<u8> {
    let epoch = Epoch { number: 1, clock: FeedClock::Rtmp, raw0: 0, seq0: 0, wall0_us: 0, piece_ms: 50, cut_at_us: 0 };
    let key = Arc::new(ChannelKeypair::from_secret_bytes(&[1; 32]));
    let mut cutter = FlvCutter::new(SegmenterConfig::default(), key, epoch, 0);
    let mut pieces = Vec::new();
    cutter.push_file(FIXTURE, &mut pieces).expect("fixture");
    cutter.segmenter.flush(&mut pieces);
    let mut out = TsOut::default();
    pieces.iter().flat_map(|p| out.write(p.payload(), false)).collect()
}

struct Setup {
    srt: std::net::SocketAddr,
    hub: Arc<Hub>,
    key: String,
    dir: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn setup(name: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("shoal-srt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = ChannelFile::new(dir.join("channels.json"), dir.join("keys"));
    let key = file.create_channel_with("news", false, None, Some(PASSPHRASE.into())).expect("channel");
    let auth: Arc<dyn Authorizer> = Arc::new(file);
    let hub = Hub::new(HubConfig::default());
    let srt = ingest::srt::bind("127.0.0.1:0".parse().expect("addr"), hub.clone(), auth).await.expect("bind");
    Setup { srt, hub, key, dir }
}

async fn call(addr: std::net::SocketAddr, stream_id: &str, passphrase: Option<&str>) -> std::io::Result<SrtSocket> {
    let mut b = SrtSocket::builder().latency(Duration::from_millis(120));
    if let Some(p) = passphrase {
        b = b.encryption(0, p);
    }
    tokio::time::timeout(Duration::from_secs(10), b.call(addr, Some(stream_id)))
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("handshake timed out")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_over_srt_becomes_signed_pieces() {
    let s = setup("publish").await;
    let mut sock = call(s.srt, &format!("#!::r=live/{},m=publish", s.key), Some(PASSPHRASE)).await.expect("accepted");
    // SRT is live transport: each packet carries its source time, and the receiver
    // releases it that long after. Bursting 4 s of media with one time gets most of
    // it dropped as too late, exactly as a real encoder pushing faster than real time
    // would; so the fixture goes out in real time (about 4 s), paced by the protocol.
    let ts = fixture_ts();
    let chunks: Vec<&[u8]> = ts.chunks(7 * 188).collect();
    let start = Instant::now();
    for (i, chunk) in chunks.iter().enumerate() {
        let at = start + Duration::from_millis(4_000 * i as u64 / chunks.len() as u64);
        tokio::time::sleep_until(at.into()).await;
        sock.send((at, Bytes::copy_from_slice(chunk))).await.expect("send");
    }
    sock.close().await.expect("close");
    let ch = s.hub.channel("news").expect("channel exists after a publish");
    let mut rx = ch.subscribe();
    while ch.live() {
        tokio::time::timeout(Duration::from_secs(15), rx.changed()).await.expect("session ends").ok();
    }
    let oldest = match ch.fetch(0, 1) {
        Fetch::Gone { oldest } => oldest,
        Fetch::Pieces(_) => panic!("pieces start above 0"),
    };
    let Fetch::Pieces(all) = ch.fetch(oldest, usize::MAX) else { panic!("window") };
    for p in &all {
        p.verify(&ch.id).expect("signed");
    }
    let starts = all.iter().filter(|p| p.flags().contains(PieceFlags::SEGMENT_START)).count();
    assert_eq!(starts, 4, "one segment per keyframe of the fixture");
    assert!((60..=110).contains(&all.len()), "{} pieces", all.len());
    assert!(s.hub.metrics.render().contains("shoal_ingest_publishes_total{protocol=\"srt\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refusals() {
    let s = setup("refuse").await;
    let good = format!("#!::r=live/{},m=publish", s.key);
    assert!(call(s.srt, "#!::r=live/nope,m=publish", Some(PASSPHRASE)).await.is_err(), "unknown key");
    assert!(call(s.srt, &good, Some("a wrong passphrase")).await.is_err(), "wrong passphrase");
    assert!(call(s.srt, &good, None).await.is_err(), "missing passphrase");
    assert!(call(s.srt, &format!("#!::r=live/{},m=request", s.key), Some(PASSPHRASE)).await.is_err(), "not a publish");
    let m = s.hub.metrics.render();
    assert!(m.contains("shoal_ingest_publish_refusals_total{reason=\"unknown_key\"} 1"), "{m}");
    assert!(m.contains("shoal_ingest_publish_refusals_total{reason=\"bad_mode\"} 1"), "{m}");
    // The listener survived all of that: a good publisher is still accepted.
    let mut sock = call(s.srt, &format!("publish:live/{}", s.key), Some(PASSPHRASE)).await.expect("accepted");
    sock.close().await.expect("close");
}
