//! A seed node: reads a channel's signed pieces from ingest ([`source`]), injects them
//! into the viewers' swarm with the seed profile, and serves what its peer verified as
//! Low-Latency HLS for browsers and phones without the viewer ([`serve`]). Any seeder
//! may die without viewers noticing: they hold several, and each resumes ingest's
//! stream where it left off. A seeder may read several ingest nodes fed the same
//! encoder ([`merge`]): each piece comes from whichever delivers it first, so any one
//! ingest may die too.

pub mod merge;
pub mod source;
pub mod watch_page;

use std::net::SocketAddr;
use std::sync::Arc;

use httpkit::{ServerConfig, Site};
use net::hls::Hls;
use net::{Deliver, Join, Node, NodeConfig, NodeMetrics};
use swarm::piece::{ChannelId, Piece};
use swarm::wire::Role;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::source::Source;

/// What a seed's peer verified goes to its HLS.
#[derive(Debug)]
struct Packager(Arc<Hls>);

impl Deliver for Packager {
    fn accepted(&self, piece: &Piece) {
        self.0.push(piece);
    }
}

/// Joins the swarm as a seed (`node`: [`NodeConfig::seed`]'s, maybe adjusted) fed by
/// `origin` (pieces it injects after verifying them like any other); what it verified
/// goes to `hls`.
pub async fn inject(node: NodeConfig, origin: mpsc::Receiver<Piece>, hls: Arc<Hls>) -> std::io::Result<Node> {
    Node::start(node, Some(origin), Arc::new(Packager(hls))).await
}

/// A seeder to start.
#[derive(Debug, Clone)]
pub struct SeederConfig {
    /// `http://HOST:PORT` of the tracker.
    pub tracker: String,
    /// `http://HOST:PORT` of each ingest node to read (at least one).
    pub ingests: Vec<String>,
    pub channel: String,
    /// The channel id, if known; else it comes with ingest's piece stream.
    pub id: Option<ChannelId>,
    /// The seeder token ingest and the tracker check.
    pub token: String,
    /// Where viewers connect.
    pub listen: SocketAddr,
    pub upload_kbps: u32,
    /// Share of the audience's bytes the seeds' pushes may carry
    /// (`PeerConfig::seed_share_budget`).
    pub seed_share_budget: f64,
    /// Pages connect over WebRTC here (None: pages get only the HLS fallback).
    pub pages: Option<net::rtc::RtcSettings>,
    /// Threads of its own the HTTP origin serves connections on
    /// (`httpkit::ServerConfig::threads`; 0: the process's runtime).
    pub http_threads: usize,
}

/// Why a seeder did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("the piece source of channel {0} stopped before ingest said the channel's id")]
    SourceStopped(String),
    #[error("starting the seeder's peer: {0}")]
    Peer(#[from] std::io::Error),
}

/// A running seeder.
#[derive(Debug)]
pub struct Seeder {
    pub node: Node,
    pub hls: Arc<Hls>,
    /// Where pages reach it over WebRTC.
    pub pages: Option<net::rtc::RtcHost>,
}

impl Seeder {
    /// Reads ingest's piece stream, and once it has said the channel's id, joins the
    /// channel's swarm through the tracker. Its HLS is served on `http` at once (not
    /// ready until it has a segment).
    pub async fn start(cfg: SeederConfig, http: TcpListener) -> Result<Seeder, StartError> {
        let hls = Arc::new(Hls::new(&cfg.channel));
        let metrics = NodeMetrics::new(Role::Seed);
        let merged = merge::MergeMetrics::new(&metrics.registry);
        // The node exists once ingest has said the channel's id; until then its metrics stay at zero.
        let node_handle: Arc<std::sync::OnceLock<net::shell::NodeHandle>> = Arc::default();
        let page_swarm: Arc<std::sync::OnceLock<watch_page::PageSwarm>> = Arc::default();
        tokio::spawn(serve(http, cfg.http_threads, hls.clone(), metrics, node_handle.clone(), page_swarm.clone()));
        let (id_tx, mut id_rx) = watch::channel(cfg.id);
        let pieces_rx = read_ingests(&cfg.ingests, &cfg.channel, &cfg.token, id_tx, merged);
        tracing::info!(channel = %cfg.channel, ingests = ?cfg.ingests, "waiting for the channel on ingest");
        let id = loop {
            if let Some(id) = *id_rx.borrow_and_update() {
                break id;
            }
            if id_rx.changed().await.is_err() {
                return Err(StartError::SourceStopped(cfg.channel));
            }
        };
        let join = Join {
            tracker: cfg.tracker.clone(),
            channel: id,
            listen: cfg.listen,
            seed_token: Some(cfg.token),
            upload_kbps: cfg.upload_kbps,
            shell: net::shell::ShellOptions::default(),
        };
        let mut node_cfg = NodeConfig::seed(join);
        node_cfg.peer.seed_share_budget = cfg.seed_share_budget;
        let node = inject(node_cfg, pieces_rx, hls.clone()).await?;
        let _ = node_handle.set(node.handle.clone());
        let pages = match &cfg.pages {
            Some(settings) => {
                let host = node.serve_pages(settings).await?;
                let _ = page_swarm.set(watch_page::PageSwarm {
                    channel_id: id.to_hex(),
                    tracker: cfg.tracker.clone(),
                    substreams: swarm::peer::PeerConfig::seed(swarm::wire::PeerId(0), id).n_substreams,
                    host: Some(host.clone()),
                    ice_servers: settings.ice_servers.clone(),
                });
                Some(host)
            }
            None => None,
        };
        Ok(Seeder { node, hls, pages })
    }
}

/// Reads `channel` from every ingest node in `ingests` and merges their streams
/// ([`merge`]): the pieces to inject. `id` learns the channel's id from ingest. The
/// sources stop once the returned stream's reader is gone.
pub fn read_ingests(
    ingests: &[String],
    channel: &str,
    token: &str,
    id: watch::Sender<Option<ChannelId>>,
    metrics: merge::MergeMetrics,
) -> mpsc::Receiver<Piece> {
    let (pieces_tx, pieces_rx) = mpsc::channel(256);
    let (from_tx, from_rx) = mpsc::channel(256);
    let (stop_tx, stop_rx) = watch::channel(false);
    let labels: Vec<String> = ingests.iter().map(|u| u.trim_start_matches("http://").to_owned()).collect();
    for (i, base) in ingests.iter().enumerate() {
        let src = Source { base: base.clone(), channel: channel.to_owned(), token: token.to_owned() };
        let connected = metrics.connected.with_label_values(&[&labels[i]]);
        tokio::spawn(source::run(src, i, from_tx.clone(), id.clone(), stop_rx.clone(), connected));
    }
    let id_rx = id.subscribe();
    tokio::spawn(async move {
        merge::run(from_rx, pieces_tx, id_rx, labels, metrics).await;
        drop(stop_tx);
    });
    pieces_rx
}

/// Serves the HLS fallback, and the kit's `/metrics` (the node's, once it runs),
/// `/healthz` and `/readyz` (ready once it has a segment to offer browsers).
pub async fn serve(
    listener: TcpListener,
    threads: usize,
    hls: Arc<Hls>,
    metrics: NodeMetrics,
    node: Arc<std::sync::OnceLock<net::shell::NodeHandle>>,
    page_swarm: Arc<std::sync::OnceLock<watch_page::PageSwarm>>,
) {
    let (ready, pages) = (hls.clone(), page_swarm.clone());
    let site = Site::new(metrics.registry.clone())
        .ready_when(move || ready.playlist().map(|_| ()).ok_or_else(|| "no segment yet".to_owned()))
        .refresh_with(move || {
            if let Some(h) = node.get() {
                metrics.update(&h.snapshot());
            }
            if let Some(host) = pages.get().and_then(|p| p.host.as_ref()) {
                metrics.update_rtc(&host.stats());
            }
        });
    let mut cfg = ServerConfig::new("seeder");
    cfg.spool = hls.spool_index();
    cfg.threads = threads;
    httpkit::serve(listener, cfg, site, move |req, _peer| {
        let (hls, page_swarm) = (hls.clone(), page_swarm.clone());
        async move {
            let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok());
            if let Some(page) = watch_page::answer(req.uri().path(), hls.channel(), host, page_swarm.get()) {
                return page;
            }
            hls.answer_or_404(req.uri().path(), req.uri().query()).await
        }
    })
    .await;
}
