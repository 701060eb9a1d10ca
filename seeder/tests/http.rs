//! The seeder's HTTP: its HLS (parts sent from their spool), readiness once it has a
//! segment, the node's metrics.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use httpkit::client;
use net::NodeMetrics;
use net::hls::Hls;
use swarm::piece::{ChannelKeypair, PieceFlags, filler_payload};
use swarm::wire::Role;

async fn get_bytes(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let r = client::get(&format!("http://{addr}"), path, None, Duration::from_secs(5)).await.unwrap();
    let status = r.status().as_u16();
    (status, client::read_all(r.into_body(), 1 << 20).await.unwrap())
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, body) = get_bytes(addr, path).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn ready_once_it_has_a_segment_with_the_nodes_metrics() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hls = Arc::new(Hls::new("demo"));
    tokio::spawn(seeder::serve(
        listener,
        0,
        hls.clone(),
        NodeMetrics::new(Role::Seed),
        Arc::new(OnceLock::new()),
        Arc::default(),
    ));

    assert_eq!(get(addr, "/readyz").await, (503, "no segment yet\n".into()));
    assert_eq!(get(addr, "/hls/demo/live.m3u8").await.0, 503);
    let key = ChannelKeypair::from_secret_bytes(&[3; 32]);
    for seq in 0..49u64 {
        let flags = if seq % 20 == 0 { PieceFlags::SEGMENT_START } else { PieceFlags::NONE };
        hls.push(&key.sign_piece(seq, 1_000_000 + seq * 50_000, flags, filler_payload(2, seq)).unwrap());
    }
    assert_eq!(get(addr, "/readyz").await, (200, "ok\n".into()));
    let (status, playlist) = get(addr, "/hls/demo/live.m3u8").await;
    assert_eq!(status, 200);
    assert!(playlist.contains("1.ts"), "{playlist}");
    let payload = |seq: u64| filler_payload(2, seq).to_vec();
    assert_eq!(get_bytes(addr, "/hls/demo/1.ts").await.1, (20..40).flat_map(payload).collect::<Vec<u8>>());
    assert_eq!(get_bytes(addr, "/hls/demo/2.0.ts").await.1, (40..48).flat_map(payload).collect::<Vec<u8>>());
    assert_eq!(get(addr, "/hls/other/live.m3u8").await.0, 404);
    let (status, metrics) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("shoal_node_neighbours{role=\"seed\"} 0"), "{metrics}");
    assert!(metrics.contains("shoal_http_connections{server=\"seeder\"} 1"), "{metrics}");
    // The segment and the part (eight pieces) went out from the spool, not copied per client.
    let spooled = 28 * 2 * 188;
    assert!(
        metrics.contains(&format!("shoal_http_sendfile_bytes_total{{server=\"seeder\"}} {spooled}\n")),
        "{metrics}"
    );
}
