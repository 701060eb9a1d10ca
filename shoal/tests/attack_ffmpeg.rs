//! The hostile audience against real processes: `shoal up` on free ports fed by ffmpeg
//! (`testsrc`, real time) and a `shoal viewer` process, both at the operators' log
//! level (info), and raw peers speaking PROTOCOL.md at the viewer and then at the seed
//! from addresses of their own (127.66.0.x): withholders that claim the best parent
//! profile and send nothing, forgers (and their reconnects), flooders over the message
//! budget, junk claims under it, new forgers from fresh addresses.
//! The viewer keeps playing (no more than 1 s of pieces lost), each process writes
//! under 50 KB/s of log while attacked, and banned addresses stay out. Needs ffmpeg (CI installs it; elsewhere it says it
//! skipped). Waits on the processes' output and polls with deadlines; no sleeps.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    eventually, ffmpeg_available, http_get, metric, metrics_urls, start_logged, testsrc_to, up_args, word_after,
};
use swarm::piece::{ChannelId, PieceFlags, PieceHeader, SIGNATURE_LEN, filler_payload};
use swarm::wire::{GoodbyeReason, Message};
use tokio::net::TcpStream;

/// The viewer's `/stats.json` figure `key`.
fn stat(play: &str, key: &str) -> u64 {
    let (status, body) = http_get(&format!("http://{play}/stats.json"));
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// A raw peer ([`net::raw`]) from 127.66.0.`host`, `Hello` said as viewer `id`.
async fn raw_peer(to: SocketAddr, host: u8, channel: ChannelId, id: u64) -> TcpStream {
    net::raw::viewer_from(to, host, channel, id).await.unwrap()
}

/// Writes `msgs`; the viewer may close mid-write (that is often the point).
async fn send(s: &mut TcpStream, msgs: &[Message]) {
    let _ = net::raw::send(s, msgs).await;
}

/// Reads until the viewer closes (10 s at most): the reason of its goodbye.
async fn goodbye_then_close(s: &mut TcpStream) -> Option<GoodbyeReason> {
    net::raw::goodbye_then_close(s, Duration::from_secs(10)).await.unwrap()
}

/// A piece of `channel` with a zero signature, 5 s ahead of `newest`.
fn forged(channel: ChannelId, newest: u64) -> Message {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let header =
        PieceHeader { channel, seq: newest + 100, timestamp_us: now, flags: PieceFlags::NONE, payload_len: 188 * 4 };
    Message::Piece(swarm::piece::Piece::from_parts(header, filler_payload(4, 1), [0; SIGNATURE_LEN]).unwrap())
}

/// Attacks the peer listening on `listen` (a process of `channel` whose newest piece
/// is about `newest`) from 127.66.0.x: 3 forgers, each of whose reconnects must be
/// closed at once; 3 flooders over the message budget; for 6 s, 20 peers of junk
/// claims under it beside 60 fresh forgers. Returns how long it took.
fn attack(listen: SocketAddr, channel: ChannelId, newest: u64) -> Duration {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = Instant::now();
    rt.block_on(async {
        // Forgers: dropped and banned; from the same address, under any id, closed at
        // once without a word.
        for host in 1..=3u8 {
            let mut s = raw_peer(listen, host, channel, 0xbad0 + u64::from(host)).await;
            send(&mut s, &[forged(channel, newest)]).await;
            assert_eq!(goodbye_then_close(&mut s).await, Some(GoodbyeReason::Forged), "forger {host}");
            let mut again = net::raw::connect_from(listen, host).await.unwrap();
            assert_eq!(goodbye_then_close(&mut again).await, None, "banned {host}");
        }
        // Flooders over the message budget: dropped (and banned).
        for host in 10..=12u8 {
            let mut s = raw_peer(listen, host, channel, 0xf100 + u64::from(host)).await;
            let haves: Vec<Message> = (0..20_000u64).map(|i| Message::Have { seq: newest - i % 10 }).collect();
            send(&mut s, &haves).await;
            assert_eq!(goodbye_then_close(&mut s).await, Some(GoodbyeReason::Flooding), "flooder {host}");
        }
        // Junk under the budget, for 6 s from 20 peers at once: claims far ahead (each
        // refused and counted), beside fresh forgers from new addresses (each banned).
        let mut tasks = Vec::new();
        for host in 20..40u8 {
            tasks.push(tokio::spawn(async move {
                let mut s = raw_peer(listen, host, channel, 0x1a00 + u64::from(host)).await;
                let mut base = newest + 1_000_000;
                // Paced at 200 messages a second, a tenth of the budget, for 6 s.
                let mut pace = tokio::time::interval(Duration::from_millis(10));
                for _ in 0..600 {
                    pace.tick().await;
                    base += 1_024;
                    let junk =
                        [Message::HaveMap { base, bits: vec![u64::MAX; 16] }, Message::Have { seq: base + 5_000 }];
                    if net::raw::send(&mut s, &junk).await.is_err() {
                        return;
                    }
                }
            }));
        }
        for host in 100..160u8 {
            let mut s = raw_peer(listen, host, channel, 0xbad00 + u64::from(host)).await;
            send(&mut s, &[forged(channel, newest)]).await;
            assert_eq!(goodbye_then_close(&mut s).await, Some(GoodbyeReason::Forged), "forger {host}");
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    started.elapsed()
}

/// Withholders at the peer listening on `listen`, from 127.66.0.200..208 for `secs`:
/// each claims the best parent profile there is (unbounded upload, one hop from a seed,
/// 1 ms behind it, room for everyone), claims every piece it hears of, accepts every
/// subscription, and sends nothing. Returns the subscriptions they were sent.
fn withhold(listen: SocketAddr, channel: ChannelId, secs: u64) -> u64 {
    use swarm::wire::{FrameDecoder, Hello, PROTOCOL_VERSION, PeerId, Role};
    use tokio::io::AsyncReadExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for host in 200..208u8 {
            tasks.push(tokio::spawn(async move {
                let mut s = net::raw::connect_from(listen, host).await.unwrap();
                let hello = Hello {
                    version: PROTOCOL_VERSION,
                    channel,
                    peer_id: PeerId(0x3170_0000 + u64::from(host)),
                    role: Role::Viewer,
                    reachable: true,
                    n_substreams: 4,
                    upload_kbps: u32::MAX,
                };
                let status = Message::Status(net::raw::best_parent_status());
                send(&mut s, &[Message::Hello(hello), status.clone()]).await;
                let (mut dec, mut buf, mut subscribes) = (FrameDecoder::new(), vec![0u8; 65_536], 0u64);
                let end = tokio::time::Instant::now() + Duration::from_secs(secs);
                let mut pace = tokio::time::interval(Duration::from_millis(500));
                loop {
                    let mut reply = Vec::new();
                    tokio::select! {
                        _ = tokio::time::sleep_until(end) => return subscribes,
                        _ = pace.tick() => reply.push(status.clone()),
                        read = s.read(&mut buf) => match read {
                            Ok(0) | Err(_) => return subscribes,
                            Ok(n) => dec.extend(&buf[..n]),
                        },
                    }
                    while let Ok(Some(m)) = dec.next_message() {
                        match m {
                            Message::Have { seq } => reply.push(Message::Have { seq }),
                            Message::Subscribe { substreams } => {
                                subscribes += 1;
                                reply.push(Message::SubscribeReply { accepted: substreams });
                            }
                            _ => {}
                        }
                    }
                    if net::raw::send(&mut s, &reply).await.is_err() {
                        return subscribes;
                    }
                }
            }));
        }
        let mut subscribes = 0;
        for t in tasks {
            subscribes += t.await.unwrap();
        }
        subscribes
    })
}

/// What `tape` got from `from` on, per second of `took` (and the second after, for
/// what was in flight): under the 50 KB/s.
fn assert_logged_little(who: &str, tape: &common::LogTape, from: Instant, took: Duration) {
    let logged: usize = tape.lock().unwrap().iter().filter(|(at, _)| *at >= from).map(|(_, n)| n).sum();
    let rate = logged as f64 / (took.as_secs_f64() + 1.0);
    eprintln!("{who}: attacked for {took:?}, logged {logged} bytes ({rate:.0} B/s)");
    assert!(rate < 50_000.0, "{who}'s log output under attack: {rate:.0} B/s");
}

#[test]
fn a_viewer_and_a_seeder_process_under_attack_play_on_log_little_and_keep_banned_addresses_out() {
    if !ffmpeg_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("shoal-attack-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data").display().to_string();
    let (_up, up, up_log) = start_logged(&up_args(&data), "Ctrl-C stops it");
    let rtmp = word_after(&up, "push:    ");
    let tracker = format!("http://127.0.0.1:{}", word_after(&up, "--tracker http://127.0.0.1:"));
    let channel_hex = word_after(&up, "--channel-id ");
    let channel = ChannelId::from_hex(&channel_hex).unwrap();
    let seeder: SocketAddr = word_after(&up, "seeder:  peers connect to ").parse().unwrap();
    let seeder_metrics = metrics_urls(&up)[2].clone();
    let mut ffmpeg = testsrc_to(&rtmp, "320x180");
    let viewer_args = [
        "viewer",
        "--tracker",
        &tracker,
        "--channel-id",
        &channel_hex,
        "--listen",
        "127.0.0.1:0",
        "--play",
        "127.0.0.1:0",
    ];
    let (viewer, lines, viewer_log) = start_logged(&viewer_args, "VIEWER");
    let banner = lines.last().unwrap();
    let play = banner.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let listen: SocketAddr = banner.rsplit("peers connect to ").next().unwrap().trim().parse().unwrap();
    assert!(eventually(Duration::from_secs(30), || stat(&play, "played") >= 40), "the viewer plays");
    let (played, skipped) = (stat(&play, "played"), stat(&play, "skipped"));

    // Withholders that look like the best parents, for 10 s. A viewer whose parent
    // delivers on time keeps it (a switch must gain 150 ms: a healthy seed parent is
    // within that of the best claim); one that takes a withholder — after a stall of its
    // own parent — finds it delivers nothing against the substream's schedule and drops
    // it. Either way it plays on. (The swarm simulator's withholding scenarios drive the
    // second case every run; here it happened only when the feed's start stalled the
    // viewer's first parent.)
    let subscribes = withhold(listen, channel, 10);
    let stalled = stat(&play, "parents_stalled");
    eprintln!("withholders: {subscribes} subscriptions; parents stalled {stalled}");
    assert!(subscribes == 0 || stalled >= 1, "{subscribes} subscriptions to withholders and none judged stalled");
    let played_on = stat(&play, "played") - played;
    assert!(played_on >= 150, "played {played_on} pieces in 10 s among withholders");
    let lost = stat(&play, "skipped") - skipped;
    assert!(lost <= 20, "lost {lost} pieces beside withholders");

    // The viewer attacked.
    let (from, newest) = (Instant::now(), stat(&play, "newest"));
    let took = attack(listen, channel, newest);
    assert_logged_little("the viewer", &viewer_log, from, took);
    assert!(stat(&play, "forged") >= 63, "every forgery counted");
    assert!(stat(&play, "flood_drops") >= 3);
    assert!(stat(&play, "address_bans") >= 66, "forgers and flooders banned by address");
    assert!(stat(&play, "refused_banned") >= 3, "their reconnects refused");

    // Its seed (in `shoal up`, beside the tracker and ingest) attacked: the viewer it
    // feeds plays on through both.
    let (from, newest) = (Instant::now(), stat(&play, "newest"));
    let took_too = attack(seeder, channel, newest);
    assert_logged_little("shoal up", &up_log, from, took_too);
    let seed = |name: &str| metric(&seeder_metrics, name, &[]);
    assert!(seed("shoal_node_forged_pieces_total") >= 63.0, "every forgery counted at the seed");
    assert!(seed("shoal_node_flood_drops_total") >= 3.0);
    assert!(seed("shoal_node_address_bans_total") >= 66.0);
    assert!(seed("shoal_node_inbound_refused_banned_total") >= 3.0);

    // It plays on: 2 s more than the attacks lasted at half speed, and it lost no more
    // than 1 s of pieces in all.
    let more = 40 + (took + took_too).as_secs() * 20 / 2;
    assert!(eventually(Duration::from_secs(30), || stat(&play, "played") >= played + more));
    let lost = stat(&play, "skipped") - skipped;
    assert!(lost <= 20, "lost {lost} pieces while it and its seed were attacked");
    drop(viewer);
    let _ = ffmpeg.0.kill();
}
