//! Seeder and tracker failover stay as they were (issue 21, item 4): two `shoal tracker`
//! processes share Redis behind one address (a spreader that passes each connection
//! to the next tracker that takes it, as a load balancer's health checks would), one
//! ingest, two seeders, six viewers. One tracker is SIGKILLed, then one seeder: no
//! viewer stalls more than 1 s, none skips a piece. Every viewer's `/stats.json` is
//! polled every 50 ms; a stall is the time between rises of its `played`. Needs
//! `SHOAL_TEST_REDIS_URL` (`.ci/run` sets it); skipped, saying so, without it.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Killed, eventually, ffmpeg_available, http_get, start, word_after};

const TOKEN: &str = "trackers-seeders-token";
const ANY: &str = "127.0.0.1:0";

/// A viewer's (played, skipped).
fn counts(play: &str) -> (u64, u64) {
    let (_, body) = http_get(&format!("http://{play}/stats.json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (v["played"].as_u64().unwrap(), v["skipped"].as_u64().unwrap())
}

/// Polls every viewer for `span`: the longest time one played nothing (including the
/// time since its last piece) and the pieces they skipped meanwhile, all together.
fn watch(plays: &[String], span: Duration) -> (Duration, u64) {
    let start = Instant::now();
    let first: Vec<(u64, u64)> = plays.iter().map(|p| counts(p)).collect();
    let mut last: Vec<(u64, Instant)> = first.iter().map(|c| (c.0, start)).collect();
    let mut longest = Duration::ZERO;
    let mut now_counts = first.clone();
    while start.elapsed() < span {
        std::thread::sleep(Duration::from_millis(50));
        for (i, p) in plays.iter().enumerate() {
            now_counts[i] = counts(p);
            if now_counts[i].0 > last[i].0 {
                longest = longest.max(last[i].1.elapsed());
                last[i] = (now_counts[i].0, Instant::now());
            }
        }
    }
    longest = last.iter().map(|(_, t)| t.elapsed()).fold(longest, Duration::max);
    let skipped = now_counts.iter().zip(&first).map(|(n, f)| n.1 - f.1).sum();
    (longest, skipped)
}

/// Passes each connection to the first backend, from the next in turn, that accepts it.
fn spreader(rt: &tokio::runtime::Runtime, backends: Vec<SocketAddr>) -> SocketAddr {
    let listener = rt.block_on(tokio::net::TcpListener::bind(ANY)).unwrap();
    let addr = listener.local_addr().unwrap();
    let turn = Arc::new(Mutex::new(0usize));
    rt.spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (backends, turn) = (backends.clone(), turn.clone());
            tokio::spawn(async move {
                let first = {
                    let mut t = turn.lock().unwrap();
                    *t += 1;
                    *t
                };
                for k in 0..backends.len() {
                    let to = backends[(first + k) % backends.len()];
                    if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_tracker_and_a_seeder_killed_cost_viewers_no_stall_over_a_second() {
    let Ok(redis) = std::env::var("SHOAL_TEST_REDIS_URL") else {
        eprintln!("SKIPPED: SHOAL_TEST_REDIS_URL is needed (.ci/run sets it)");
        return;
    };
    if !ffmpeg_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("shoal-trackers-seeders-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data").display().to_string();
    let (key, channel_id) = common::add_channel(&data, "news");

    // Two trackers on one Redis (keys of their own, under this run's prefix).
    let prefix = format!("shoal-trackers-seeders-{}", std::process::id());
    let mut trackers: Vec<Option<Killed>> = Vec::new();
    let mut backends = Vec::new();
    for node in ["tracker-a", "tracker-b"] {
        let args = ["tracker", "--data-dir", &data, "--listen", ANY, "--seeder-token", TOKEN, "--node", node];
        let (child, lines) =
            start(&[&args[..], &["--redis-url", &redis, "--redis-prefix", &prefix]].concat(), "TRACKER");
        let url = word_after(&lines, "TRACKER  http://");
        backends.push(url.split('/').next().unwrap().parse::<SocketAddr>().unwrap());
        trackers.push(Some(child));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let tracker = format!("http://{}", spreader(&rt, backends));

    let args = ["ingest", "--data-dir", &data, "--rtmp-listen", ANY, "--srt-listen", ANY, "--http-listen", ANY];
    let (_ingest, lines) = start(&[&args[..], &["--seeder-token", TOKEN]].concat(), "HTTP");
    let rtmp = word_after(&lines, "RTMP  rtmp://").split('/').next().unwrap().to_owned();
    let ingest = format!("http://{}", word_after(&lines, "HTTP  http://"));
    let _ffmpeg = Killed(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25"])
            .args(["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "90"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"])
            .args(["-f", "flv", &format!("rtmp://{rtmp}/live/{key}")])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seeders: Vec<Option<Killed>> = (0..2)
        .map(|_| {
            let args = ["seeder", "--tracker", &tracker, "--ingest", &ingest, "--channel", "news"];
            let more = ["--seeder-token", TOKEN, "--data-dir", &data, "--listen", ANY, "--http", ANY, "--no-webrtc"];
            Some(start(&[&args[..], &more[..]].concat(), "SEEDER").0)
        })
        .collect();
    let mut viewers = Vec::new();
    let mut plays = Vec::new();
    for _ in 0..6 {
        let args = ["viewer", "--tracker", &tracker, "--channel-id", &channel_id, "--listen", ANY, "--play", ANY];
        let (child, lines) = start(&args, "VIEWER  watch");
        plays.push(word_after(&lines, "ffplay http://").split('/').next().unwrap().to_owned());
        viewers.push(child);
    }
    assert!(eventually(Duration::from_secs(40), || plays.iter().all(|p| counts(p).0 >= 100)), "every viewer plays 5 s");
    let (floor, _) = watch(&plays, Duration::from_secs(3));
    let kill = |who: &mut Option<Killed>| {
        let mut dead = who.take().unwrap();
        dead.0.kill().unwrap();
        dead.0.wait().unwrap();
    };
    kill(&mut trackers[0]);
    let (tracker_stall, tracker_skipped) = watch(&plays, Duration::from_secs(8));
    kill(&mut seeders[0]);
    let (seeder_stall, seeder_skipped) = watch(&plays, Duration::from_secs(8));
    eprintln!(
        "longest stall of 6 viewers: {floor:?} before, {tracker_stall:?} after a tracker died ({tracker_skipped} \
         skipped), {seeder_stall:?} after a seeder died ({seeder_skipped} skipped)"
    );
    // A viewer announcing now reaches the tracker left, which knows the swarm (Redis).
    let (status, body) = http_get(&format!(
        "{tracker}/announce?info_hash={}&peer_id=-SH0100-000000000001&port=1&uploaded=0&downloaded=0&left=0&compact=1",
        channel_info_hash(&channel_id)
    ));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = swarm::bencode::decode(&body).unwrap();
    let listed = answer.get("peers").and_then(swarm::bencode::Value::as_bytes).unwrap_or_default().len() / 6;
    assert!(listed >= 6, "the tracker left lists {listed} peers: {}", String::from_utf8_lossy(&body));
    assert!(tracker_stall <= Duration::from_secs(1), "a viewer stalled {tracker_stall:?} when a tracker died");
    assert!(seeder_stall <= Duration::from_secs(1), "a viewer stalled {seeder_stall:?} when a seeder died");
    assert_eq!((tracker_skipped, seeder_skipped), (0, 0), "pieces skipped");
    drop((viewers, seeders, trackers));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The channel's BitTorrent info_hash, percent-encoded.
fn channel_info_hash(hex: &str) -> String {
    let id = swarm::piece::ChannelId::from_hex(hex).unwrap();
    id.info_hash().iter().map(|b| format!("%{b:02x}")).collect()
}
