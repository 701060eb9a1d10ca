//! `shoal tracker`: channels' swarms and peer lists over the BitTorrent HTTP announce.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use catalogue::db::Db;
use catalogue::directory::{AnyChannel, CachedDirectory, ChannelDirectory, DbDirectory, FileDirectory};
use catalogue::secrets::SeederTokens;
use clap::Args;
use tracker::Tracker;
use tracker::http::Reload;
use tracker::meter::Meter;
use tracker::store::StoreConfig;

#[derive(Debug, Args)]
pub(crate) struct TrackerArgs {
    #[command(flatten)]
    common: crate::ingest_cmd::Common,
    /// HTTP listen address: /announce, /scrape, /metrics.
    #[arg(long, env = "SHOAL_TRACKER_LISTEN", default_value = "0.0.0.0:8700")]
    listen: SocketAddr,
    /// Re-announce interval given to peers, seconds.
    #[arg(long, env = "SHOAL_TRACKER_INTERVAL", default_value_t = 60)]
    interval: u32,
    /// A peer silent for this long is dropped, seconds (default: 2.5 intervals).
    #[arg(long, env = "SHOAL_TRACKER_PEER_TIMEOUT")]
    peer_timeout: Option<u32>,
    /// Viewer ids a channel lists and meters from one address at once; more are
    /// answered (they may watch) but neither listed nor metered
    /// (`shoal_tracker_ids_over_cap_total`). Loopback is not capped.
    #[arg(long, env = "SHOAL_TRACKER_MAX_IDS_PER_ADDRESS", default_value_t = 64)]
    max_ids_per_address: u32,
    /// The same from one network (/24 of IPv4, /48 of IPv6).
    #[arg(long, env = "SHOAL_TRACKER_MAX_IDS_PER_NETWORK", default_value_t = 1_024)]
    max_ids_per_network: u32,
    /// Token seed nodes announce with (`role=seed&token=`); default: DATA_DIR/seeder-token.
    #[arg(long, env = "SHOAL_TRACKER_SEEDER_TOKEN", hide_env_values = true)]
    seeder_token: Option<String>,
    /// The SQL catalogue (`sqlite://PATH` or `postgres://…`: accounts, licences,
    /// metering, the admin API; channels made with `shoal admin channel create`)
    /// instead of the channel file (`shoal ingest add-channel`; no metering).
    #[arg(long, env = "SHOAL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Share swarm membership with other tracker replicas through this Redis
    /// (`redis://HOST:PORT[/DB]`). Without it, each tracker knows only its own peers.
    #[arg(long, env = "SHOAL_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Prefix of the tracker's Redis keys (replicas of one tracker share it).
    #[arg(long, env = "SHOAL_REDIS_PREFIX", default_value = "shoal")]
    redis_prefix: String,
    /// This tracker's name in usage records (`node:channel:window` keys, marks):
    /// unique per tracker process sharing a catalogue, stable across its restarts.
    #[arg(long, env = "SHOAL_TRACKER_NODE", default_value = "tracker-1")]
    node: String,
    /// Webhooks may go to private and local addresses (endpoints inside the operator's
    /// own network). Off: only public addresses, so an account can't aim deliveries at
    /// the platform's internal services.
    #[arg(long, env = "SHOAL_WEBHOOKS_ALLOW_PRIVATE")]
    webhooks_allow_private: bool,
    /// Usage is written to the catalogue this often, seconds (at least 10; at the first
    /// 10-second tick of each such window of the clock).
    #[arg(long, default_value_t = 60)]
    flush_interval: u32,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Tests only: the tracker's time is the unix time written in this file, read at
    /// each use (`tracker::http::drive_clock`), so tests drive whole processes through
    /// hours. Never in production.
    #[arg(long, hide = true)]
    clock_file: Option<std::path::PathBuf>,
    /// Benchmarks only: treat every info-hash as an open channel (load testers make
    /// info-hashes up). Never in production: it opens the tracker to any swarm.
    #[arg(long, hide = true)]
    bench_any_info_hash: bool,
}

pub(crate) fn run(a: TrackerArgs) -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = a.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        let running = start(&a).await?;
        println!("TRACKER  http://{}/announce  (scrape: /scrape, /metrics)", running.addr);
        crate::shutdown_signal().await?;
        tracing::info!("shutting down: writing the usage not yet flushed");
        tracker::http::flush_usage(&running.tracker, running.meter.as_deref()).await;
        Ok(())
    })
}

/// A started tracker: where it listens, and what a shutdown flushes.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    tracker: Arc<Tracker>,
    meter: Option<Arc<Meter>>,
}

/// Opens the directory (and catalogue), binds, and serves from spawned tasks.
pub(crate) async fn start(a: &TrackerArgs) -> anyhow::Result<Running> {
    if !(10..=3600).contains(&a.interval) {
        bail!("--interval must be 10..=3600 seconds, got {}", a.interval);
    }
    if let Some(path) = &a.clock_file {
        tracing::warn!(path = %path.display(), "--clock-file: the time is read from a file (tests only)");
        tracker::http::drive_clock(path.clone()).map_err(|e| anyhow::anyhow!("--clock-file {e}"))?;
    }
    let cfg = StoreConfig {
        interval_s: a.interval,
        peer_timeout_s: a.peer_timeout.unwrap_or(a.interval * 5 / 2),
        max_ids_per_address: a.max_ids_per_address,
        max_ids_per_network: a.max_ids_per_network,
        ..StoreConfig::default()
    };
    let token = crate::ingest_cmd::seeder_token(a.seeder_token.as_deref(), &a.common.data_dir)?;
    {
        let cache = Arc::new(CachedDirectory::default());
        let mut meter = None;
        let mut admin = None;
        let (directory, reload): (Arc<dyn ChannelDirectory>, Reload) = if a.bench_any_info_hash {
            tracing::warn!("--bench-any-info-hash: every info-hash is served (benchmarks only)");
            (Arc::new(AnyChannel), Reload::Nothing)
        } else if let Some(url) = &a.database_url {
            let db = Db::open(url).await.context("opening the catalogue")?;
            meter = Some(Arc::new(Meter::new(db.clone(), a.node.clone())));
            admin = Some(db.clone());
            (cache.clone(), Reload::Db(DbDirectory::new(db, cache)))
        } else {
            (cache.clone(), Reload::File(FileDirectory::new(a.common.channel_file(), cache)))
        };
        match reload.run(tracker::http::unix_now()).await {
            Ok(n) => tracing::info!(channels = n, "channel directory read"),
            Err(e) => tracing::warn!(
                error = %e,
                "no channel directory yet: every announce gets 404 until channels exist"
            ),
        }
        let listener =
            tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("binding tracker {}", a.listen))?;
        let addr = listener.local_addr()?;
        let mut tracker = Tracker::new(cfg, directory, SeederTokens::from_tokens([token.as_str()]));
        if let Some(url) = &a.redis_url {
            let shared = tracker::shared::SharedSwarms::connect(url, &a.redis_prefix, cfg)
                .await
                .context("connecting to Redis (--redis-url)")?;
            tracing::info!(prefix = %a.redis_prefix, "swarm membership shared through Redis");
            tracker = tracker.with_shared(shared);
        }
        if let Some(db) = admin {
            tracker = tracker.with_admin(db);
        }
        let tracker = Arc::new(tracker);
        if let Some(db) = &tracker.admin {
            let outcomes = tracker.metrics.webhook_attempts.clone();
            tokio::spawn(tracker::webhooks::Deliverer::new(db.clone(), a.webhooks_allow_private, outcomes).run());
        }
        tokio::spawn(tracker::http::serve(listener, tracker.clone()));
        // With a driven clock, often: the test's minutes pass in a fraction of a second.
        let tick = Duration::from_millis(if a.clock_file.is_some() { 20 } else { 10_000 });
        let flush = u64::from(a.flush_interval.max(10));
        tokio::spawn(tracker::http::maintain(tracker.clone(), reload, meter.clone(), flush, tick));
        Ok(Running { addr, tracker, meter })
    }
}
