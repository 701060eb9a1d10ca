//! The swarm over real sockets on loopback: the tracker (in process, over HTTP), a
//! seeder fed signed pieces as ingest would (20 per second), viewers that find it and
//! each other through the tracker, verify, re-share and play. Waits by polling with a
//! deadline; asserts what was played, not how fast the machine is.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, join, tracker_for};
use net::shell::now_us;
use swarm::piece::{ChannelKeypair, PieceFlags, filler_payload};
use tracker::Tracker;
use viewer::Viewer;

#[test]
fn viewers_play_what_the_seeder_injects() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (channel, url, t, seeder) = one_seeder(9).await;
        let mut viewers = Vec::new();
        for _ in 0..5 {
            viewers.push(Viewer::start(join(&url, channel, false)).await.unwrap());
        }
        let all_played =
            eventually(Duration::from_secs(30), || viewers.iter().all(|v| v.playout.stats().played >= 60)).await;
        let stats: Vec<_> = viewers.iter().map(|v| (v.playout.stats(), v.node.handle.snapshot().neighbours)).collect();
        eprintln!("viewers (play stats, neighbours): {stats:?}");
        assert!(all_played, "every viewer plays 3 s of the channel: {stats:?}");
        for (s, neighbours) in &stats {
            assert!(*neighbours >= 1, "{stats:?}");
            assert!(s.skipped <= 2, "{stats:?}");
            assert!(s.latency_us < 3_000_000, "seconds behind live, not more: {stats:?}");
        }
        assert_eq!(t.swarms.scrape(&channel.info_hash()), (1, 5), "the tracker knows the seed and every viewer");
        for v in &viewers {
            v.stop().await;
        }
        seeder.stop().await;
    });
}

/// A channel with its tracker and one seeder fed as ingest would: (channel, tracker
/// URL, tracker, seeder).
async fn one_seeder(key_byte: u8) -> (swarm::piece::ChannelId, String, Arc<Tracker>, net::Node) {
    let key = ChannelKeypair::from_secret_bytes(&[key_byte; 32]);
    let channel = key.id();
    let (url, t) = tracker_for(channel).await;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let seeder = common::seeder(join(&url, channel, true), rx).await.unwrap();
    feed(key, vec![tx]);
    (channel, url, t, seeder)
}

/// Ingest's part for several seeders: a piece every 50 ms to each, a segment start
/// every second.
fn feed(key: ChannelKeypair, seeders: Vec<tokio::sync::mpsc::Sender<swarm::piece::Piece>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for seq in 0u64.. {
            tick.tick().await;
            let flags = if seq % 20 == 0 { PieceFlags::SEGMENT_START } else { PieceFlags::NONE };
            let piece = key.sign_piece(seq, now_us(), flags, filler_payload(40, seq)).unwrap();
            for s in &seeders {
                let _ = s.try_send(piece.clone());
            }
        }
    });
}

/// One of two seeders dies (its runtime is torn down: sockets closed, no goodbye):
/// no viewer loses more than a second of pieces, and all keep playing.
#[test]
fn a_killed_seeder_stalls_no_viewer() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let doomed_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let key = ChannelKeypair::from_secret_bytes(&[10; 32]);
    let channel = key.id();
    let (url, _t) = rt.block_on(tracker_for(channel));
    let (a_tx, a_rx) = tokio::sync::mpsc::channel(64);
    let (b_tx, b_rx) = tokio::sync::mpsc::channel(64);
    let doomed = doomed_rt.block_on(common::seeder(join(&url, channel, true), a_rx)).unwrap();
    rt.block_on(async {
        let _survivor = common::seeder(join(&url, channel, true), b_rx).await.unwrap();
        feed(ChannelKeypair::from_secret_bytes(&[10; 32]), vec![a_tx, b_tx]);
        let mut viewers = Vec::new();
        for _ in 0..8 {
            viewers.push(Viewer::start(join(&url, channel, false)).await.unwrap());
        }
        let warm = eventually(Duration::from_secs(30), || viewers.iter().all(|v| v.playout.stats().played >= 40)).await;
        assert!(warm, "{:?}", viewers.iter().map(|v| v.playout.stats()).collect::<Vec<_>>());
        let before: Vec<_> = viewers.iter().map(|v| v.playout.stats()).collect();
        eprintln!("killing the seeder at {}", doomed.handle.listen);
        doomed_rt.shutdown_background();
        // Five more seconds of the channel (100 pieces) for everyone.
        let more = eventually(Duration::from_secs(30), || {
            viewers.iter().zip(&before).all(|(v, b)| v.playout.stats().played >= b.played + 100)
        })
        .await;
        let after: Vec<_> = viewers.iter().map(|v| v.playout.stats()).collect();
        eprintln!("before the kill: {before:?}\nafter: {after:?}");
        assert!(more, "every viewer keeps playing: {after:?}");
        for (a, b) in after.iter().zip(&before) {
            assert!(a.skipped - b.skipped <= 20, "no viewer misses more than 1 s of pieces: {after:?}");
        }
    });
}

/// A hand-driven peer ([`net::raw`]): connects to `to` from 127.66.0.x (by `id`: the
/// honest peers here are on 127.0.0.1, so a ban touches nobody else) and says `Hello`
/// as a viewer of `channel`.
async fn raw_peer(to: std::net::SocketAddr, channel: swarm::piece::ChannelId, id: u64) -> tokio::net::TcpStream {
    net::raw::viewer_from(to, host_of(id), channel, id).await.unwrap()
}

fn host_of(id: u64) -> u8 {
    1 + (id % 250) as u8
}

/// A TCP connection to `to` from raw peer `id`'s address.
async fn raw_connect(to: std::net::SocketAddr, id: u64) -> tokio::net::TcpStream {
    net::raw::connect_from(to, host_of(id)).await.unwrap()
}

/// Reads until the viewer closes (10 s at most): the reason of its goodbye.
async fn goodbye_then_close(s: &mut tokio::net::TcpStream) -> Option<swarm::wire::GoodbyeReason> {
    net::raw::goodbye_then_close(s, Duration::from_secs(10)).await.unwrap()
}

/// A viewer that has played 20 pieces of a channel with one seeder.
async fn playing_victim(key_byte: u8, shell: net::shell::ShellOptions) -> (swarm::piece::ChannelId, Viewer, net::Node) {
    let (channel, url, _t, seeder) = one_seeder(key_byte).await;
    let victim = Viewer::start(net::Join { shell, ..join(&url, channel, false) }).await.unwrap();
    assert!(eventually(Duration::from_secs(30), || victim.playout.stats().played >= 20).await);
    (channel, victim, seeder)
}

/// The victim plays 2 s more without losing a piece.
async fn plays_on(victim: &Viewer, before: viewer::playout::PlayStats) {
    let more = eventually(Duration::from_secs(30), || victim.playout.stats().played >= before.played + 40).await;
    let after = victim.playout.stats();
    assert!(more, "{after:?}");
    assert_eq!(after.skipped, before.skipped, "{after:?}");
}

/// A peer that connects to a viewer and sends a forged piece is dropped (Goodbye
/// Forged, connection closed), counted, and its address banned; the viewer keeps
/// playing.
#[test]
fn a_forging_peer_is_dropped() {
    use swarm::piece::{PieceHeader, SIGNATURE_LEN};
    use swarm::wire::{GoodbyeReason, Message};
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (channel, victim, _seeder) = playing_victim(11, Default::default()).await;
        let before = victim.playout.stats();
        let mut s = raw_peer(victim.node.handle.listen, channel, 0xbad).await;
        // The channel's id, a sequence number 5 s ahead (not yet held, inside the window), a zero signature.
        let newest = victim.node.handle.snapshot().newest.unwrap_or(0);
        let header = PieceHeader {
            channel,
            seq: newest + 100,
            timestamp_us: now_us(),
            flags: PieceFlags::NONE,
            payload_len: 188 * 4,
        };
        let forged = swarm::piece::Piece::from_parts(header, filler_payload(4, 1), [0; SIGNATURE_LEN]).unwrap();
        let mut out = Vec::new();
        Message::Piece(forged).encode(&mut out);
        s.write_all(&out).await.unwrap();
        assert_eq!(goodbye_then_close(&mut s).await, Some(GoodbyeReason::Forged));
        // Banned by address, not only by the peer id it chose: from the same host it is
        // closed at once, without a word, under any id.
        let mut again = raw_connect(victim.node.handle.listen, 0xbad).await;
        assert_eq!(goodbye_then_close(&mut again).await, None);
        plays_on(&victim, before).await;
        let snap = victim.node.handle.snapshot();
        assert_eq!(snap.stats.forged_pieces, 1);
        assert_eq!((snap.guard.bans, snap.guard.refused_banned), (1, 1));
    });
}

/// Sybils from one host: inbound connections from one address beyond the cap are
/// closed at once and counted; the ones within it stay, and the viewer plays on.
#[test]
fn connections_from_one_address_beyond_the_cap_are_refused() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let guard = httpkit::guard::GuardConfig { per_ip: 2, ..Default::default() };
        let (channel, victim, _seeder) =
            playing_victim(15, net::shell::ShellOptions { guard, ..Default::default() }).await;
        let before = victim.playout.stats();
        let listen = victim.node.handle.listen;
        // Ids 250 apart: different peers (a repeated id would be dropped as a
        // duplicate) from the same address.
        let _kept = [raw_peer(listen, channel, 0x5b1).await, raw_peer(listen, channel, 0x5b1 + 250).await];
        let mut third = raw_connect(listen, 0x5b1 + 500).await;
        assert_eq!(goodbye_then_close(&mut third).await, None, "closed at once, without a word");
        plays_on(&victim, before).await;
        let snap = victim.node.handle.snapshot();
        assert_eq!((snap.guard.refused_capped, snap.guard.refused_banned), (1, 0));
    });
}

/// A peer that floods a viewer with messages (valid ones: `Have`s of pieces it holds)
/// is dropped with Goodbye Flooding before its messages reach the peer core in bulk;
/// so is one sending 300 full `HaveMap`s (each costs the receiver work per claim, and
/// its budget 17 tokens: 5,100 over the burst of 4,000 — as 300 small messages, it
/// was let through before); the viewer plays on without losing a piece.
#[test]
fn a_flooding_peer_is_dropped() {
    use swarm::wire::{GoodbyeReason, Message};
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (channel, victim, _seeder) = playing_victim(14, Default::default()).await;
        let before = victim.playout.stats();
        let newest = victim.node.handle.snapshot().newest.unwrap_or(0);
        let haves: Vec<Message> =
            (0..20_000u64).map(|i| Message::Have { seq: newest.saturating_sub(i % 10) }).collect();
        let maps = vec![Message::HaveMap { base: newest.saturating_sub(512), bits: vec![u64::MAX; 16] }; 300];
        for (id, flood) in [(0xf100d, haves), (0xf100e, maps)] {
            let mut s = raw_peer(victim.node.handle.listen, channel, id).await;
            let mut out = Vec::new();
            flood.iter().for_each(|m| m.encode(&mut out));
            // The viewer may close mid-write: that is the point.
            let _ = s.write_all(&out).await;
            assert_eq!(goodbye_then_close(&mut s).await, Some(GoodbyeReason::Flooding), "peer {id:x}");
        }
        plays_on(&victim, before).await;
        assert_eq!(victim.node.handle.snapshot().stats.floods, 2);
    });
}

/// A peer that subscribes to a viewer's substreams and then never reads: what the
/// viewer pushes to it piles up until the connection's queue limit and it is dropped;
/// the viewer plays on without losing a piece. (Kernel buffers are kept small here —
/// 16 KiB to send, a 64 KiB queue — so it shows in seconds rather than after the
/// megabytes Linux would buffer by default.)
#[test]
fn a_peer_that_stops_reading_is_dropped() {
    use swarm::wire::{Message, Status};
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let shell =
            net::shell::ShellOptions { max_conn_queue: 64 * 1024, send_buffer: 16 * 1024, ..Default::default() };
        let (channel, victim, _seeder) = playing_victim(15, shell).await;
        let before = victim.playout.stats();
        let mut s = raw_peer(victim.node.handle.listen, channel, 0x57a11).await;
        let status = Status {
            free_slots: 0,
            children: 0,
            min_child_kbps: 0,
            busy_ms: 0,
            segment_start: None,
            depth: vec![Status::NO_PATH; 4].into(),
            latency_ms: vec![Status::NO_LATENCY; 4].into(),
            root: vec![Status::NO_ROOT; 4].into(),
            parent: vec![Status::NO_ROOT; 4].into(),
        };
        let mut out = Vec::new();
        Message::Status(status).encode(&mut out);
        Message::Subscribe { substreams: 0b1111 }.encode(&mut out);
        s.write_all(&out).await.unwrap();
        // As a child does, it asks again on each Status until the viewer takes it (the
        // viewer forwards its club's substream once that is pushed to it).
        let taken = tokio::time::timeout(Duration::from_secs(20), async {
            use tokio::io::AsyncReadExt;
            let mut dec = swarm::wire::FrameDecoder::new();
            let mut buf = vec![0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => dec.extend(&buf[..n]),
                }
                while let Ok(Some(m)) = dec.next_message() {
                    match m {
                        Message::SubscribeReply { accepted } if accepted != 0 => return true,
                        Message::Status(_) => {
                            let mut again = Vec::new();
                            Message::Subscribe { substreams: 0b1111 }.encode(&mut again);
                            s.write_all(&again).await.unwrap();
                        }
                        _ => {}
                    }
                }
            }
        })
        .await;
        assert_eq!(taken, Ok(true), "the viewer took the raw peer as a child");
        // Never read again; wait for the viewer to give up on it.
        let dropped = eventually(Duration::from_secs(30), || victim.node.handle.snapshot().stalled_dropped == 1).await;
        let snap = victim.node.handle.snapshot();
        assert!(dropped, "the stalled peer is dropped: {snap:?}");
        assert!(snap.stats.pushes_sent > 0, "it had been taken as a child: {snap:?}");
        plays_on(&victim, before).await;
        drop(s);
    });
}

fn viewers_stats(viewers: &[Viewer]) -> Vec<viewer::playout::PlayStats> {
    viewers.iter().map(|v| v.playout.stats()).collect()
}

/// The tracker goes away mid-stream (its runtime torn down): viewers keep playing with
/// the neighbours they have, losing nothing.
#[test]
fn viewers_play_on_while_the_tracker_is_down() {
    let tracker_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let key = ChannelKeypair::from_secret_bytes(&[12; 32]);
    let channel = key.id();
    let (url, _t) = tracker_rt.block_on(tracker_for(channel));
    let (viewers, _seeder) = rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let seeder = common::seeder(join(&url, channel, true), rx).await.unwrap();
        feed(key, vec![tx]);
        let mut viewers = Vec::new();
        for _ in 0..4 {
            viewers.push(Viewer::start(join(&url, channel, false)).await.unwrap());
        }
        assert!(eventually(Duration::from_secs(30), || viewers.iter().all(|v| v.playout.stats().played >= 20)).await);
        (viewers, seeder)
    });
    tracker_rt.shutdown_background();
    rt.block_on(async {
        let before: Vec<_> = viewers_stats(&viewers);
        let more = eventually(Duration::from_secs(30), || {
            viewers.iter().zip(&before).all(|(v, b)| v.playout.stats().played >= b.played + 60)
        })
        .await;
        let after = viewers_stats(&viewers);
        assert!(more, "{after:?}");
        for (a, b) in after.iter().zip(&before) {
            assert_eq!(a.skipped, b.skipped, "nothing lost while the tracker is down: {after:?}");
        }
    });
}

/// A peer that connects to a viewer and lies: a `Status` of a seed's child with a very
/// short path and free slots, `Have`s of the pieces just ahead, subscriptions accepted
/// and never served, requests never answered. The viewer keeps it as a neighbour and
/// plays on without losing a piece. (Here the viewer already has the seeder as a fast
/// parent, so it neither subscribes to the liar nor asks it for repairs — the count is
/// printed; a viewer that does adopt such a parent is covered by the simulator's
/// attackers, not yet over sockets.)
#[test]
fn a_peer_lying_about_its_pieces_costs_nothing() {
    use swarm::wire::{FrameDecoder, Hello, Message, PROTOCOL_VERSION, PeerId, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (channel, url, _t, _seeder) = one_seeder(13).await;
        let victim = Viewer::start(join(&url, channel, false)).await.unwrap();
        assert!(eventually(Duration::from_secs(30), || victim.playout.stats().played >= 20).await);
        let before = victim.playout.stats();
        let alone = victim.node.handle.snapshot().neighbours;

        let mut s = tokio::net::TcpStream::connect(victim.node.handle.listen).await.unwrap();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            channel,
            peer_id: PeerId(0x11e),
            role: Role::Viewer,
            reachable: false,
            n_substreams: 4,
            upload_kbps: 100_000,
        };
        let status = net::raw::best_parent_status();
        let mut out = Vec::new();
        Message::Hello(hello).encode(&mut out);
        Message::Status(status).encode(&mut out);
        s.write_all(&out).await.unwrap();
        let handle = victim.node.handle.clone();
        let requests = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = requests.clone();
        let liar = tokio::spawn(async move {
            let mut dec = FrameDecoder::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let n = tokio::select! {
                    r = s.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
                    _ = tokio::time::sleep(Duration::from_millis(50)) => 0,
                };
                dec.extend(&buf[..n]);
                let mut out = Vec::new();
                while let Ok(Some(m)) = dec.next_message() {
                    match m {
                        Message::Request { seqs } => {
                            counted.fetch_add(seqs.len() as u32, std::sync::atomic::Ordering::Relaxed);
                        }
                        Message::Subscribe { substreams } => {
                            Message::SubscribeReply { accepted: substreams }.encode(&mut out);
                        }
                        _ => {}
                    }
                }
                // Claim the next pieces before the victim has them.
                let newest = handle.snapshot().newest.unwrap_or(0);
                for seq in newest + 1..newest + 4 {
                    Message::Have { seq }.encode(&mut out);
                }
                if s.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        let more = eventually(Duration::from_secs(30), || victim.playout.stats().played >= before.played + 100).await;
        assert_eq!(victim.node.handle.snapshot().neighbours, alone + 1, "the liar stays connected");
        let after = victim.playout.stats();
        assert!(more, "{after:?}");
        assert_eq!(after.skipped, before.skipped, "the liar cost no piece: {after:?}");
        liar.abort();
        let asked = requests.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("pieces asked of the liar (never sent): {asked}; victim: {after:?}");
    });
}
