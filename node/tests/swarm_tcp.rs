//! The swarm over real sockets on loopback: the tracker (in process, over HTTP), a
//! seeder fed signed pieces as ingest would (20 per second), viewers that find it and
//! each other through the tracker, verify, re-share and play. Waits by polling with a
//! deadline; asserts what was played, not how fast the machine is.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::http::SeederTokens;
use node::roles::{self, Join};
use node::shell::now_us;
use swarm::piece::{ChannelKeypair, PieceFlags, filler_payload};
use tracker::Tracker;
use tracker::directory::StaticDirectory;
use tracker::store::StoreConfig;

/// Polls `f` every 50 ms until it holds or `limit` passes; whether it held.
async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

#[test]
fn viewers_play_what_the_seeder_injects() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let key = ChannelKeypair::from_secret_bytes(&[9; 32]);
        let channel = key.id();
        let dir = StaticDirectory::new([("news".to_owned(), channel)]);
        let t = Arc::new(Tracker::new(StoreConfig::default(), Arc::new(dir), SeederTokens::from_tokens(["seed"])));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tracker_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(tracker::http::serve(listener, t.clone()));

        let join = |seed: bool| Join {
            tracker: tracker_url.clone(),
            channel,
            listen: "127.0.0.1:0".parse().unwrap(),
            seed_token: seed.then(|| "seed".to_owned()),
            upload_kbps: if seed { 50_000 } else { 8_000 },
        };
        let (origin_tx, origin_rx) = tokio::sync::mpsc::channel(64);
        let seeder = roles::seeder(join(true), origin_rx).await.unwrap();
        // Ingest's part: a piece every 50 ms, a segment start every second.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            for seq in 0u64.. {
                tick.tick().await;
                let flags = if seq % 20 == 0 { PieceFlags::SEGMENT_START } else { PieceFlags::NONE };
                let piece = key.sign_piece(seq, now_us(), flags, filler_payload(40, seq)).unwrap();
                if origin_tx.send(piece).await.is_err() {
                    return;
                }
            }
        });
        let mut viewers = Vec::new();
        for _ in 0..5 {
            viewers.push(roles::viewer(join(false)).await.unwrap());
        }
        let all_played =
            eventually(Duration::from_secs(30), || viewers.iter().all(|v| v.playout.stats().played >= 60)).await;
        let stats: Vec<_> = viewers.iter().map(|v| (v.playout.stats(), v.handle.snapshot().neighbours)).collect();
        eprintln!("viewers (play stats, neighbours): {stats:?}");
        assert!(all_played, "every viewer plays 3 s of the channel: {stats:?}");
        for (s, neighbours) in &stats {
            assert!(*neighbours >= 1, "{stats:?}");
            assert!(s.skipped <= 2, "{stats:?}");
            assert!(s.latency_us < 3_000_000, "seconds behind live, not more: {stats:?}");
        }
        let (_, seeds_viewers) = (0, t.swarms.scrape(&channel.info_hash()));
        assert_eq!(seeds_viewers, (1, 5), "the tracker knows the seed and every viewer");
        for v in &viewers {
            v.stop().await;
        }
        seeder.stop().await;
    });
}
