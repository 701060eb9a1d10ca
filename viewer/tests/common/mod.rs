//! What the seeder-and-viewer socket tests share: a tracker for one channel, join settings,
//! polling with a deadline.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use catalogue::directory::StaticDirectory;
use catalogue::secrets::SeederTokens;
use net::Join;
use tracker::Tracker;
use tracker::store::StoreConfig;

/// The seeder token the test trackers accept.
pub const TOKEN: &str = "seed";

/// Polls `f` every 50 ms until it holds or `limit` passes; whether it held.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// A tracker on a free port serving one channel, with seeder token [`TOKEN`].
pub async fn tracker_for(channel: swarm::piece::ChannelId) -> (String, Arc<Tracker>) {
    let dir = StaticDirectory::new([("news".to_owned(), channel)]);
    let t = Arc::new(Tracker::new(StoreConfig::default(), Arc::new(dir), SeederTokens::from_tokens([TOKEN])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tracker::http::serve(listener, t.clone()));
    (url, t)
}

/// A seeder on a free port fed by `origin`, as ingest's piece stream would.
pub async fn seeder(
    join: Join,
    origin: tokio::sync::mpsc::Receiver<swarm::piece::Piece>,
) -> std::io::Result<net::Node> {
    seeder::inject(net::node::NodeConfig::seed(join), origin, Arc::new(net::hls::Hls::new("news"))).await
}

/// Join settings on a free port: a seeder (with the token, a wide uplink) or a viewer.
pub fn join(tracker: &str, channel: swarm::piece::ChannelId, seed: bool) -> Join {
    Join {
        tracker: tracker.to_owned(),
        channel,
        listen: "127.0.0.1:0".parse().unwrap(),
        seed_token: seed.then(|| TOKEN.to_owned()),
        upload_kbps: if seed { 50_000 } else { 8_000 },
        shell: net::shell::ShellOptions::default(),
    }
}
