//! `shoal up`: a whole broadcaster on one machine — the tracker (SQLite catalogue in the
//! data directory, metering on), ingest (RTMP, SRT) and one seeder, in one process, on
//! embedded defaults. The first start makes a demo account and an ad-free channel and
//! keeps what it made in the data directory, so a restart serves the same channel with
//! the same stream key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use catalogue::db::Db;
use clap::{Args, Parser};
use serde::{Deserialize, Serialize};
use swarm::piece::ChannelId;

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Everything it keeps: catalogue, keys, tokens.
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "shoal-data")]
    data_dir: PathBuf,
    /// The host name to print in URLs (what encoders and viewers reach this machine by).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value = "0.0.0.0:8700")]
    tracker_listen: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:1935")]
    rtmp_listen: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:8890")]
    srt_listen: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:8710")]
    ingest_listen: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:8720")]
    seeder_listen: SocketAddr,
    /// The seeder's HLS fallback for browsers.
    #[arg(long, default_value = "0.0.0.0:8730")]
    hls_listen: SocketAddr,
    /// The seeder's WebRTC socket for pages (candidates: --host when it is an address).
    #[arg(long, default_value = "0.0.0.0:8731")]
    webrtc_listen: SocketAddr,
    /// No WebRTC: pages play the HLS fallback only.
    #[arg(long)]
    no_webrtc: bool,
    /// Media time per piece (and LL-HLS part), ms.
    #[arg(long, default_value_t = 50)]
    piece_ms: u32,
}

/// What the first start made, kept (0600) in `DATA_DIR/demo.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Demo {
    channel: String,
    channel_id: String,
    stream_key: String,
    api_token: String,
}

#[derive(Debug, Parser)]
struct TrackerOnly {
    #[command(flatten)]
    a: crate::tracker_cmd::TrackerArgs,
}

#[derive(Debug, Parser)]
struct IngestOnly {
    #[command(flatten)]
    a: crate::ingest_cmd::RunArgs,
}

pub(crate) fn run(a: UpArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        std::fs::create_dir_all(&a.data_dir).with_context(|| format!("creating {}", a.data_dir.display()))?;
        let data = a.data_dir.display().to_string();
        let url = format!("sqlite://{}", a.data_dir.join("catalogue.db").display());
        let demo = provision(&url, &a.data_dir).await?;
        let token = crate::ingest_cmd::seeder_token(None, &a.data_dir)?;

        let t = TrackerOnly::try_parse_from([
            "tracker",
            "--data-dir",
            &data,
            "--database-url",
            &url,
            "--listen",
            &a.tracker_listen.to_string(),
            // The all-in-one node shows usage within seconds (SQLite, one writer).
            "--flush-interval",
            "10",
        ])?;
        let tracker_addr = crate::tracker_cmd::start(&t.a).await.context("starting the tracker")?.addr;
        let i = IngestOnly::try_parse_from([
            "ingest",
            "--data-dir",
            &data,
            "--database-url",
            &url,
            "--rtmp-listen",
            &a.rtmp_listen.to_string(),
            "--srt-listen",
            &a.srt_listen.to_string(),
            "--http-listen",
            &a.ingest_listen.to_string(),
            "--piece-ms",
            &a.piece_ms.to_string(),
        ])?;
        let ingest = crate::ingest_cmd::start(&i.a).await.context("starting ingest")?;
        let local = |addr: SocketAddr| format!("http://127.0.0.1:{}", addr.port());
        let id = ChannelId::from_hex(&demo.channel_id).context("demo.json: bad channel id")?;
        let seeder_cfg = seeder::SeederConfig {
            tracker: local(tracker_addr),
            ingests: vec![local(ingest.http)],
            channel: demo.channel.clone(),
            id: Some(id),
            token: token.clone(),
            listen: a.seeder_listen,
            upload_kbps: 200_000,
            seed_share_budget: swarm::peer::SEED_SHARE_BUDGET,
            pages: (!a.no_webrtc).then(|| {
                // Port 0: the socket's, once bound.
                let public = a.host.parse().map(|ip| vec![SocketAddr::new(ip, 0)]).unwrap_or_default();
                net::rtc::RtcSettings::new(a.webrtc_listen, public)
            }),
            http_threads: 1,
        };
        let (seeder, hls) = crate::node_cmd::start_seeder(seeder_cfg, a.hls_listen).await?;

        let h = &a.host;
        println!();
        println!("Shoal is up: tracker, ingest and a seeder (data in {data}).");
        println!();
        println!("  push:    rtmp://{h}:{}/live/{}", ingest.rtmp.port(), demo.stream_key);
        println!("     or:   srt://{h}:{}?streamid=#!::r=live/{},m=publish", ingest.srt.port(), demo.stream_key);
        println!(
            "           e.g. ffmpeg -re -i input.mp4 -c:v libx264 -g 50 -c:a aac -f flv rtmp://{h}:{}/live/{}",
            ingest.rtmp.port(),
            demo.stream_key
        );
        println!(
            "  watch:   shoal viewer --tracker http://{h}:{} --channel-id {}",
            tracker_addr.port(),
            demo.channel_id
        );
        println!("           then: ffplay http://127.0.0.1:8900/live.ts   (or vlc, mpv)");
        println!("  browser: http://{h}:{}/watch/{}   (the watch page, with an embed snippet)", hls.port(), demo.channel);
        println!("           LL-HLS: http://{h}:{}/hls/{}/live.m3u8   (for any HLS player)", hls.port(), demo.channel);
        println!(
            "  check:   ffplay 'http://{h}:{}/v1/channels/{}/live.ts?token={token}'   (ingest's own tap)",
            ingest.http.port(),
            demo.channel
        );
        println!(
            "  metrics: http://{h}:{}/metrics (tracker)  http://{h}:{}/metrics (ingest)  http://{h}:{}/metrics (seeder)",
            tracker_addr.port(),
            ingest.http.port(),
            hls.port()
        );
        println!("           Grafana dashboards and a Prometheus scrape config: dashboards/ (README)");
        println!(
            "  admin:   SHOAL_API_TOKEN={} shoal admin --tracker http://{h}:{} channel list",
            demo.api_token,
            tracker_addr.port()
        );
        println!("  seeder:  peers connect to {}", seeder.node.handle.listen);
        if let Some(p) = &seeder.pages {
            println!("           pages over WebRTC (and STUN): udp {} as {:?}", p.local, p.candidates);
        }
        println!();
        println!("Ctrl-C stops it; a restart keeps the channel and its stream key.");
        crate::shutdown_signal().await?;
        seeder.node.stop().await;
        tracing::info!("shutting down");
        Ok(())
    })
}

/// The demo account and channel: made at the first start, read back after.
async fn provision(url: &str, data_dir: &Path) -> anyhow::Result<Demo> {
    let path = data_dir.join("demo.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return serde_json::from_str(&text).with_context(|| format!("{} is not what shoal up wrote", path.display()));
    }
    let db = Db::open(url).await.context("opening the catalogue")?;
    let now = tracker::http::unix_now() as i64;
    let account = db.create_account("demo", now).await.context("creating the demo account")?;
    let api_token = db.create_api_token(account, "shoal up", now).await?;
    let keys = catalogue::secrets::KeyDir::new(data_dir.join("keys"));
    let key = keys.create("demo").map_err(anyhow::Error::msg).context("writing the demo channel's key")?;
    let stream_key = catalogue::secrets::generate_stream_key();
    db.create_channel(account, "demo", key.id(), &stream_key, false, now).await.context("creating the demo channel")?;
    db.audit(now, Some(account), "shoal up", "channel.create", "demo", "the first start's demo channel").await?;
    let demo = Demo { channel: "demo".into(), channel_id: key.id().to_hex(), stream_key, api_token };
    catalogue::secrets::write_secret(&path, &serde_json::to_string_pretty(&demo)?).map_err(anyhow::Error::msg)?;
    Ok(demo)
}
