//! `shoal seeder` and `shoal viewer`: the swarm's two kinds of node on real sockets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use net::Join;
use seeder::{Seeder, SeederConfig};
use swarm::piece::ChannelId;
use tokio::net::TcpListener;
use viewer::Viewer;

#[derive(Debug, Args)]
pub(crate) struct SeederArgs {
    /// The tracker, `http://HOST:PORT`.
    #[arg(long, env = "SHOAL_TRACKER_URL", default_value = "http://127.0.0.1:8700")]
    tracker: String,
    /// Ingest's HTTP API, `http://HOST:PORT`; repeat it for main/backup ingest nodes fed
    /// the same encoder (each piece is taken from whichever has it first).
    #[arg(long = "ingest", env = "SHOAL_INGEST_URL", value_delimiter = ',', default_value = "http://127.0.0.1:8710")]
    ingests: Vec<String>,
    /// The channel to seed (its name on ingest).
    #[arg(long)]
    channel: String,
    /// The seeder token (ingest's piece stream and the tracker both check it; default:
    /// DATA_DIR/seeder-token).
    #[arg(long, env = "SHOAL_SEEDER_TOKEN", hide_env_values = true)]
    seeder_token: Option<String>,
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "shoal-data")]
    data_dir: PathBuf,
    /// Where viewers connect.
    #[arg(long, env = "SHOAL_SEEDER_LISTEN", default_value = "0.0.0.0:8720")]
    listen: SocketAddr,
    /// Upload capacity offered to the swarm, kbit/s.
    #[arg(long, default_value_t = 200_000)]
    upload_kbps: u32,
    /// Share of the audience's bytes this channel's seeds may push (they take more
    /// push children as the tracker counts more viewers, never fewer than 16); repairs
    /// come on top. The seeds' bytes are metered and billed.
    #[arg(long, default_value_t = swarm::peer::SEED_SHARE_BUDGET, value_parser = share)]
    seed_share_budget: f64,
    /// The HLS fallback for browsers: /hls/CHANNEL/live.m3u8.
    #[arg(long, env = "SHOAL_SEEDER_HTTP", default_value = "0.0.0.0:8730")]
    http: SocketAddr,
    /// Threads of its own the HLS origin serves connections on, each a single-threaded
    /// runtime (nginx's worker model); the swarm keeps the rest. One thread sends about
    /// 4 GB/s of parts (`shoal bench seeder`), past what most seeders' links carry, and
    /// measured 1.1× nginx's bytes per CPU-second where the process's shared runtime
    /// measured 0.85×. 0: on the shared runtime.
    #[arg(long, default_value_t = 1)]
    http_threads: usize,
    #[command(flatten)]
    webrtc: WebrtcArgs,
}

/// Where pages reach a seeder over WebRTC.
#[derive(Debug, Args)]
pub(crate) struct WebrtcArgs {
    /// The UDP socket pages' data channels (and STUN) arrive on.
    #[arg(long, env = "SHOAL_WEBRTC_LISTEN", default_value = "0.0.0.0:8731")]
    pub(crate) webrtc_listen: SocketAddr,
    /// The addresses pages reach that socket by (host candidates), comma-separated;
    /// a port 0 means the socket's. Default: 127.0.0.1 when it listens on every
    /// address — set it for pages on other machines.
    #[arg(long, env = "SHOAL_WEBRTC_PUBLIC", value_delimiter = ',')]
    pub(crate) webrtc_public: Vec<SocketAddr>,
    /// No WebRTC: pages play the HLS fallback only.
    #[arg(long)]
    pub(crate) no_webrtc: bool,
    /// STUN or TURN servers pages use to reach seeders and each other behind NATs
    /// (`stun:HOST[:PORT]`, `turn:HOST[:PORT][?transport=udp|tcp]`, `stuns:`, `turns:`),
    /// comma-separated. None: host candidates and the seeders' own STUN answers.
    #[arg(long, env = "SHOAL_ICE_SERVERS", value_delimiter = ',')]
    pub(crate) ice_server: Vec<String>,
    /// The TURN servers' username (with `--turn-credential`).
    #[arg(long, env = "SHOAL_TURN_USERNAME")]
    pub(crate) turn_username: Option<String>,
    /// The TURN servers' credential.
    #[arg(long, env = "SHOAL_TURN_CREDENTIAL", hide_env_values = true)]
    pub(crate) turn_credential: Option<String>,
}

impl WebrtcArgs {
    pub(crate) fn settings(&self) -> anyhow::Result<Option<net::rtc::RtcSettings>> {
        if self.no_webrtc {
            return Ok(None);
        }
        let mut settings = net::rtc::RtcSettings::new(self.webrtc_listen, self.webrtc_public.clone());
        settings.ice_servers = self
            .ice_server
            .iter()
            .map(|url| {
                net::rtc::IceServer::new(url, self.turn_username.as_deref(), self.turn_credential.as_deref())
                    .map_err(|e| anyhow::anyhow!("--ice-server: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(settings))
    }
}

#[derive(Debug, Args)]
pub(crate) struct ViewerArgs {
    /// The tracker, `http://HOST:PORT`.
    #[arg(long, env = "SHOAL_TRACKER_URL", default_value = "http://127.0.0.1:8700")]
    tracker: String,
    /// The channel's id (its public key, 64 hex characters).
    #[arg(long)]
    channel_id: String,
    /// Where other viewers connect (port 0: any).
    #[arg(long, default_value = "0.0.0.0:0")]
    listen: SocketAddr,
    /// Where players read `/live.ts`.
    #[arg(long, default_value = "127.0.0.1:8900")]
    play: SocketAddr,
    /// Upload capacity offered to the swarm, kbit/s.
    #[arg(long, default_value_t = 8_000)]
    upload_kbps: u32,
    /// Also write the stats as JSON to this file (every 2 s).
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Also share with browsers: take pages' WebRTC data channels on this UDP socket
    /// (they reach this viewer through the tracker's WebSocket, as they reach seeders).
    /// Off unless given.
    #[arg(long)]
    webrtc_listen: Option<SocketAddr>,
    /// The addresses pages reach that socket by (as `shoal seeder --webrtc-public`).
    #[arg(long, value_delimiter = ',', requires = "webrtc_listen")]
    webrtc_public: Vec<SocketAddr>,
}

pub(crate) fn run_seeder(a: SeederArgs) -> anyhow::Result<()> {
    let token = crate::ingest_cmd::seeder_token(a.seeder_token.as_deref(), &a.data_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let cfg = SeederConfig {
            tracker: a.tracker.clone(),
            ingests: a.ingests.clone(),
            channel: a.channel.clone(),
            id: None,
            token,
            listen: a.listen,
            upload_kbps: a.upload_kbps,
            seed_share_budget: a.seed_share_budget,
            pages: a.webrtc.settings()?,
            http_threads: a.http_threads,
        };
        let (seeder, hls) = start_seeder(cfg, a.http).await?;
        println!(
            "SEEDER  channel {} from {}, peers connect to {}, browsers: http://{hls}/watch/{} (WebRTC {})",
            a.channel,
            a.ingests.join(" + "),
            seeder.node.handle.listen,
            a.channel,
            seeder.pages.as_ref().map_or("off".to_owned(), |p| format!("{:?}", p.candidates)),
        );
        crate::shutdown_signal().await?;
        seeder.node.stop().await;
        Ok(())
    })
}

/// Binds the seeder's HTTP (its HLS and metrics) and starts it.
pub(crate) async fn start_seeder(cfg: SeederConfig, http: SocketAddr) -> anyhow::Result<(Seeder, SocketAddr)> {
    let listener = TcpListener::bind(http).await.with_context(|| format!("binding HLS {http}"))?;
    let addr = listener.local_addr()?;
    let seeder = Seeder::start(cfg, listener).await?;
    Ok((seeder, addr))
}

pub(crate) fn run_viewer(a: ViewerArgs) -> anyhow::Result<()> {
    let channel = ChannelId::from_hex(&a.channel_id).context("--channel-id: 64 hex characters")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let join = Join {
            tracker: a.tracker.clone(),
            channel,
            listen: a.listen,
            seed_token: None,
            upload_kbps: a.upload_kbps,
            shell: net::shell::ShellOptions::default(),
        };
        let node = Arc::new(Viewer::start(join).await.context("starting the viewer")?);
        let play = TcpListener::bind(a.play).await.with_context(|| format!("binding {}", a.play))?;
        let play_addr = play.local_addr()?;
        tokio::spawn(viewer::serve(play, node.clone()));
        if let Some(listen) = a.webrtc_listen {
            let settings = net::rtc::RtcSettings::new(listen, a.webrtc_public.clone());
            let host = node.serve_pages(&settings).await.with_context(|| format!("WebRTC on {listen}"))?;
            println!("VIEWER  browsers' pages reach this viewer over WebRTC at {:?}", host.candidates);
        }
        println!(
            "VIEWER  watch: ffplay http://{play_addr}/live.ts   (or vlc / mpv; stats: /stats.json, /metrics); peers connect to {}",
            node.node.handle.listen
        );
        let n = node.clone();
        let stats_json = a.stats_json.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            let mut last = n.node.handle.snapshot();
            loop {
                tick.tick().await;
                let snap = n.node.handle.snapshot();
                let s = n.playout.stats();
                let rate = |now: u64, then: u64| (now.saturating_sub(then)) as f64 * 8.0 / 2.0 / 1e6;
                eprintln!(
                    "behind live {:.2} s | peers {} | up {:.1} Mbit/s down {:.1} Mbit/s | played {} late/lost {}",
                    s.latency_us as f64 / 1e6,
                    snap.neighbours,
                    rate(snap.bytes_sent, last.bytes_sent),
                    rate(snap.bytes_received, last.bytes_received),
                    s.played,
                    s.skipped
                );
                last = snap;
                if let Some(path) = &stats_json
                    && let Err(e) = crate::write_atomic(path, n.stats_json().as_bytes())
                {
                    tracing::warn!(error = %e, "stats file not written");
                }
            }
        });
        crate::shutdown_signal().await?;
        node.stop().await;
        Ok(())
    })
}

/// A share, 0..=1 (`--seed-share-budget`).
fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a share between 0 and 1 (0.005 is 0.5 %), got {s:?}")),
    }
}
