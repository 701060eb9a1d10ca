//! Ingest restarts under a live swarm, over real sockets: ingest (in process, RTMP and
//! its HTTP piece stream) takes the recorded fixture from the minimal RTMP client at
//! its own pace, a seeder reads the piece stream, viewers find it through the tracker.
//! Ingest is then torn down and a new one (a new hub: new sequence numbers, from its
//! clock) starts on the same ports. The seeder reconnects and resumes; the swarm
//! follows the jump in numbering; every viewer plays the new run.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use catalogue::file::ChannelFile;
use catalogue::secrets::{KeyDir, SeederTokens};
use common::{TOKEN, eventually, join, tracker_for};
use ingest::hub::{Fetch, Hub, HubConfig};
use ingest::rtmp_client::RtmpPublisher;
use tokio::net::TcpListener;
use tokio::sync::watch;
use viewer::Viewer;

const FIXTURE: &[u8] = include_bytes!("../../ingest/tests/fixtures/testsrc-h264-aac-4s.flv");

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One ingest process's worth: its hub, serving RTMP and HTTP on a runtime of its own
/// (dropping the runtime closes the listeners and every connection, as a process
/// death would).
struct Ingest {
    hub: Arc<Hub>,
    rt: tokio::runtime::Runtime,
    rtmp: SocketAddr,
    http: SocketAddr,
}

impl Ingest {
    /// Serves on the given addresses (port 0 the first time).
    fn start(rtmp: SocketAddr, http: SocketAddr, auth: Arc<dyn catalogue::admission::Authorizer>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let hub = Hub::new(HubConfig::default());
        let (rtmp_l, http_l) = rt.block_on(async { (TcpListener::bind(rtmp).await, TcpListener::bind(http).await) });
        let (rtmp_l, http_l) = (rtmp_l.unwrap(), http_l.unwrap());
        let (rtmp, http) = (rtmp_l.local_addr().unwrap(), http_l.local_addr().unwrap());
        rt.spawn(ingest::rtmp::serve(rtmp_l, hub.clone(), auth));
        rt.spawn(ingest::http::serve(http_l, hub.clone(), SeederTokens::from_tokens([TOKEN])));
        Ingest { hub, rt, rtmp, http }
    }

    /// The process dies: listeners and every connection close at once.
    fn kill(self) {
        self.rt.shutdown_timeout(Duration::from_secs(5));
    }
}

/// Publishes the fixture `passes` times back to back, at an encoder's pace.
async fn publish(rtmp: SocketAddr, key: &str, passes: u32) {
    let p = RtmpPublisher::connect(rtmp, "live", key).await.unwrap();
    p.replay_paced(FIXTURE, Some(passes)).await.unwrap();
}

#[test]
fn the_swarm_plays_on_after_ingest_restarts() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("shoal-ingest-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let file = ChannelFile::new(dir.join("channels.json"), dir.join("keys"));
    let stream_key = file.create_channel("news", false, None).unwrap();
    let auth: Arc<dyn catalogue::admission::Authorizer> = Arc::new(file);
    let channel = KeyDir::new(dir.join("keys")).signing_key("news", None).unwrap().id();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let first = Ingest::start(any, any, auth.clone());
    let (rtmp, http) = (first.rtmp, first.http);

    let (seeder, viewers, before, old_newest) = rt.block_on(async {
        let (tracker_url, _tracker) = tracker_for(channel).await;

        // A seeder's way in (one ingest here).
        let merged = seeder::merge::MergeMetrics::default();
        let (id_tx, _id_rx) = watch::channel(None);
        let pieces_rx = seeder::read_ingests(&[format!("http://{http}")], "news", TOKEN, id_tx, merged);
        let seeder = common::seeder(join(&tracker_url, channel, true), pieces_rx).await.unwrap();
        let mut viewers = Vec::new();
        for _ in 0..4 {
            viewers.push(Viewer::start(join(&tracker_url, channel, false)).await.unwrap());
        }
        // The first ingest's run: 8 s of the channel.
        publish(rtmp, &stream_key, 2).await;
        let played_some =
            eventually(Duration::from_secs(20), || viewers.iter().all(|v| v.playout.stats().played >= 60)).await;
        let before: Vec<_> = viewers.iter().map(|v| v.playout.stats()).collect();
        assert!(played_some, "every viewer plays the first run: {before:?}");
        let old_newest = seeder.handle.snapshot().newest.unwrap();
        (seeder, viewers, before, old_newest)
    });

    // Ingest dies; a new one (fresh sequence numbers, from its clock) starts on the
    // same ports.
    first.kill();
    let second = Ingest::start(rtmp, http, auth);
    rt.block_on(async {
        publish(rtmp, &stream_key, 2).await;
        let new_first = match second.hub.channel("news").unwrap().fetch(0, 1) {
            Fetch::Gone { oldest } => oldest,
            Fetch::Pieces(p) => p[0].seq(),
        };
        assert!(new_first > old_newest + 200, "the new run numbers far past the old ({old_newest} → {new_first})");

        // The seeder resumed on the new ingest and every viewer plays the new run.
        let seeder_newest = seeder.handle.snapshot().newest;
        assert!(seeder_newest.is_some_and(|n| n > new_first), "{seeder_newest:?}");
        let more = eventually(Duration::from_secs(20), || {
            viewers.iter().zip(&before).all(|(v, b)| v.playout.stats().played >= b.played + 100)
        })
        .await;
        let after: Vec<_> = viewers.iter().map(|v| v.playout.stats()).collect();
        eprintln!("before the restart: {before:?}\nafter: {after:?}");

        assert!(more, "every viewer plays 5 s of the new run: {after:?}");
        for v in &viewers {
            let s = v.node.handle.snapshot();
            assert_eq!(s.stats.jumps, 1, "each viewer followed the jump once: {:?}", s.stats);
            assert!(s.newest.is_some_and(|n| n > new_first), "{:?}", s.newest);
            assert!(s.neighbours >= 1, "no viewer lost its neighbours over it");
        }
        for (a, b) in after.iter().zip(&before) {
            // Both runs play whole: the first run's buffered end, then the new run
            // from its first piece (the seeder resumes at it).
            assert_eq!(a.skipped, b.skipped, "{after:?}");
        }
        assert_eq!(seeder.handle.snapshot().stats.jumps, 1);
        for v in &viewers {
            v.stop().await;
        }
        seeder.stop().await;
    });
    second.kill();
}
