//! The WebSocket tracker (WebTorrent protocol) over a real socket, as a page's client
//! speaks it: two pages exchange an offer and an answer through `/announce`; bad
//! messages get a close frame with a reason; the plain HTTP announce still answers on
//! the same port.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use catalogue::directory::StaticDirectory;
use catalogue::secrets::SeederTokens;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use swarm::piece::ChannelKeypair;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};
use tracker::Tracker;
use tracker::store::StoreConfig;

type Ws = WebSocketStream<TcpStream>;

async fn start() -> (std::net::SocketAddr, String) {
    let (addr, hash, _) = start_tracker().await;
    (addr, hash)
}

async fn start_tracker() -> (std::net::SocketAddr, String, Arc<Tracker>) {
    let id = ChannelKeypair::from_secret_bytes(&[3; 32]).id();
    let dir = StaticDirectory::new([("news".to_owned(), id)]);
    let tracker = Arc::new(Tracker::new(StoreConfig::default(), Arc::new(dir), SeederTokens::from_tokens(["s"])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tracker::http::serve(listener, tracker.clone()));
    (addr, id.info_hash().iter().map(|&b| char::from(b)).collect(), tracker)
}

async fn page(addr: std::net::SocketAddr) -> Ws {
    let tcp = TcpStream::connect(addr).await.unwrap();
    client_async(format!("ws://{addr}/announce"), tcp).await.unwrap().0
}

/// The next text message, as JSON (10 s at most: a hang fails the test).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The close frame the tracker ends with: (code, reason).
async fn closed(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

fn id(c: char) -> String {
    std::iter::repeat_n(c, 20).collect()
}

#[tokio::test]
async fn two_pages_exchange_an_offer_and_an_answer() {
    let (addr, hash) = start().await;
    let (mut a, mut b) = (page(addr).await, page(addr).await);
    let announce = |peer: char, offers: Value| {
        Message::text(
            json!({"action": "announce", "info_hash": hash, "peer_id": id(peer), "numwant": 5,
            "uploaded": 0, "downloaded": 0, "left": 0, "event": "started", "offers": offers})
            .to_string(),
        )
    };
    b.send(announce('B', json!([]))).await.unwrap();
    assert_eq!(next(&mut b).await["incomplete"], 1);
    let offer = json!([{"offer": {"type": "offer", "sdp": "v=0 from A"}, "offer_id": id('o')}]);
    a.send(announce('A', offer)).await.unwrap();
    assert_eq!(next(&mut a).await["incomplete"], 2);
    let got = next(&mut b).await;
    assert_eq!((got["offer"]["sdp"].as_str(), got["peer_id"].as_str()), (Some("v=0 from A"), Some(id('A').as_str())));
    let answer = json!({"action": "announce", "info_hash": hash, "peer_id": id('B'), "to_peer_id": id('A'),
        "answer": {"type": "answer", "sdp": "v=0 from B"}, "offer_id": id('o')});
    b.send(Message::text(answer.to_string())).await.unwrap();
    let got = next(&mut a).await;
    assert_eq!((got["answer"]["sdp"].as_str(), got["offer_id"].as_str()), (Some("v=0 from B"), Some(id('o').as_str())));
}

#[tokio::test]
async fn bad_messages_are_closed_with_a_reason() {
    let (addr, _) = start().await;
    let mut p = page(addr).await;
    p.send(Message::text("not json")).await.unwrap();
    assert_eq!(closed(&mut p).await, (1008, "malformed message: not JSON".to_owned()));
    let mut p = page(addr).await;
    p.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(closed(&mut p).await.0, 1003);
    // Over 64 KiB: refused by the frame reader before it is buffered whole.
    let mut p = page(addr).await;
    let _ = p.send(Message::text("x".repeat(tracker::ws::MAX_MESSAGE + 1))).await;
    assert_eq!(closed(&mut p).await.0, 1009);
}

#[tokio::test]
async fn a_pages_watched_seconds_are_metered_like_a_native_viewers() {
    let (addr, hash, tracker) = start_tracker().await;
    let info_hash: [u8; 20] = hash.chars().map(|c| c as u8).collect::<Vec<u8>>().try_into().unwrap();
    let mut a = page(addr).await;
    let announce = |watched: u64, ad: u64| {
        let m = json!({"action": "announce", "info_hash": hash, "peer_id": id('A'), "numwant": 0, "offers": [],
            "watched": watched, "ad_watched": ad});
        Message::text(m.to_string())
    };
    // The first announce is its baseline; the next one's growth is credited.
    a.send(announce(10, 0)).await.unwrap();
    next(&mut a).await;
    a.send(announce(14, 1)).await.unwrap();
    next(&mut a).await;
    assert_eq!(tracker.swarms.scrape(&info_hash), (0, 1), "the page counts as a viewer");
    let usage = tracker.swarms.drain_usage(tracker::http::unix_now()).usage;
    let sum = |f: fn(&catalogue::usage::UsageDelta) -> u64| usage.iter().map(f).sum::<u64>();
    // Credits are capped by the time into the hour (plus 5 s): only in an hour's first
    // seconds is that below 4.
    let into_hour = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 3600;
    assert_eq!(sum(|u| u.viewer_seconds), 4u64.min(into_hour + 5));
    assert_eq!(sum(|u| u.ad_viewer_seconds), 1u64.min(into_hour + 5));
    // Seeders on the WebSocket are not viewers.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut seed = client_async(format!("ws://{addr}/announce?role=seed&token=s"), tcp).await.unwrap().0;
    let m = json!({"action": "announce", "info_hash": hash, "peer_id": id('S'), "numwant": 0, "watched": 100});
    seed.send(Message::text(m.to_string())).await.unwrap();
    assert_eq!(next(&mut seed).await["complete"], 1, "counted as a seeder on the WebSocket");
    assert_eq!(tracker.swarms.scrape(&info_hash), (0, 1));
}
