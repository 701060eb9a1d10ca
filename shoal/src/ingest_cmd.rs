//! `shoal ingest`: the RTMP and SRT listeners and the HTTP piece API on one node; and
//! `shoal ingest add-channel`, which creates a channel in the channel file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use catalogue::admission::Authorizer;
use catalogue::db::StreamEpoch;
use catalogue::file::{ChannelFile, License};
use catalogue::secrets::{SeederTokens, generate_stream_key, write_secret};
use clap::{Args, Subcommand, ValueEnum};
use ingest::epochs::{BoxFuture, EpochStore, FileEpochs};
use ingest::hub::{Hub, HubConfig, Takeover};
use ingest::media::epoch::{Epoch, FeedClock};
use tokio::net::TcpListener;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct IngestArgs {
    #[command(subcommand)]
    cmd: Option<IngestCmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum IngestCmd {
    /// Create a channel: a signing key in the key directory, a stream key (printed
    /// once; only its hash is stored) in the channel file.
    AddChannel(AddChannelArgs),
}

#[derive(Debug, Args)]
pub(crate) struct Common {
    /// Where ingest keeps its state (channel file, keys, seeder token, ports.json).
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "shoal-data")]
    pub(crate) data_dir: PathBuf,
    /// Channel file (default: DATA_DIR/channels.json).
    #[arg(long, env = "SHOAL_INGEST_CHANNELS")]
    channels: Option<PathBuf>,
    /// Directory of the channels' signing keys (default: DATA_DIR/keys).
    #[arg(long, env = "SHOAL_INGEST_KEY_DIR")]
    key_dir: Option<PathBuf>,
}

impl Common {
    pub(crate) fn channel_file(&self) -> ChannelFile {
        ChannelFile::new(self.channels.clone().unwrap_or_else(|| self.data_dir.join("channels.json")), self.key_dir())
    }

    pub(crate) fn key_dir(&self) -> PathBuf {
        self.key_dir.clone().unwrap_or_else(|| self.data_dir.join("keys"))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TakeoverArg {
    /// A new publisher replaces one from the same address or an idle one; others are refused.
    IfIdleOrSameAddress,
    /// A new publisher always replaces the current one.
    Always,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// RTMP listen address (port 0: any free port, printed).
    #[arg(long, env = "SHOAL_RTMP_LISTEN", default_value = "0.0.0.0:1935")]
    rtmp_listen: SocketAddr,
    /// SRT listen address (UDP; callers publish with streamid=#!::r=live/<key>,m=publish).
    #[arg(long, env = "SHOAL_SRT_LISTEN", default_value = "0.0.0.0:8890")]
    srt_listen: SocketAddr,
    /// HTTP listen address: piece stream, debug tap, /metrics.
    #[arg(long, env = "SHOAL_HTTP_LISTEN", default_value = "0.0.0.0:8710")]
    http_listen: SocketAddr,
    /// Token seeders present to read piece streams (default: DATA_DIR/seeder-token,
    /// created on first start).
    #[arg(long, env = "SHOAL_INGEST_SEEDER_TOKEN", hide_env_values = true)]
    seeder_token: Option<String>,
    /// What a second publisher of a live channel does.
    #[arg(long, value_enum, default_value = "if-idle-or-same-address")]
    takeover: TakeoverArg,
    /// Media per piece, ms.
    #[arg(long, default_value_t = 50)]
    piece_ms: u32,
    /// Publishing RTMP connections are read on this tick, ms (1-250): each read waits
    /// up to this long, and a longer tick costs fewer wake-ups per second.
    #[arg(long, env = "SHOAL_INGEST_READ_TICK_MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=250))]
    read_tick_ms: u64,
    /// GOPs longer than this are logged and counted, ms.
    #[arg(long, default_value_t = 10_000)]
    max_gop_ms: u32,
    /// Pieces kept per channel for seeders to resume from [default: 30 s of them, 600
    /// at 50 ms pieces, 120 at 250 ms].
    #[arg(long)]
    window_pieces: Option<usize>,
    /// Decide publishing by the tracker's SQL catalogue (`sqlite://PATH` or
    /// `postgres://…`; channels made with `shoal admin channel create`) instead of the
    /// channel file. Signing keys still come from the key directory.
    #[arg(long, env = "SHOAL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Debug, Args)]
struct AddChannelArgs {
    #[command(flatten)]
    common: Common,
    /// Channel name: 1-64 of a-z, 0-9, '-' and '_'.
    name: String,
    /// The channel carries ads (it then needs a commercial license to publish).
    #[arg(long)]
    ads: bool,
    /// Give it a commercial license valid until this Unix time (0: open-ended).
    #[arg(long)]
    commercial_until: Option<u64>,
    /// SRT publishers must encrypt with this passphrase (10-79 characters).
    #[arg(long)]
    srt_passphrase: Option<String>,
}

pub(crate) fn run(args: IngestArgs) -> anyhow::Result<()> {
    match args.cmd {
        Some(IngestCmd::AddChannel(a)) => add_channel(a),
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
            rt.block_on(async {
                let a = start(&args.run).await?;
                println!("RTMP  rtmp://{}/live/<stream-key>", a.rtmp);
                println!("SRT   srt://{}?streamid=#!::r=live/<stream-key>,m=publish", a.srt);
                println!(
                    "HTTP  http://{}  (pieces: /v1/channels/NAME/pieces, tap: /v1/channels/NAME/live.ts, /metrics)",
                    a.http
                );
                crate::shutdown_signal().await?;
                tracing::info!("shutting down");
                Ok(())
            })
        }
    }
}

fn add_channel(a: AddChannelArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.common.data_dir).with_context(|| format!("creating {}", a.common.data_dir.display()))?;
    let license = a.commercial_until.map(|u| License { commercial: true, valid_until_unix: (u != 0).then_some(u) });
    if let Some(p) = &a.srt_passphrase
        && !(10..=79).contains(&p.len())
    {
        bail!("--srt-passphrase must be 10-79 characters (SRT's rule), got {}", p.len());
    }
    let file = a.common.channel_file();
    let key =
        file.create_channel_with(&a.name, a.ads, license, a.srt_passphrase.clone()).map_err(anyhow::Error::msg)?;
    println!("channel {} created", a.name);
    println!("stream key (shown once): {key}");
    if let Some(id) = file
        .list()
        .ok()
        .and_then(|l| l.channels.into_iter().find(|c| c.name == a.name))
        .and_then(|c| c.channel_id)
        .and_then(|hex| swarm::piece::ChannelId::from_hex(&hex))
    {
        println!("channel id (public key): {}", id.to_hex());
        println!("tracker info_hash: {}", swarm::piece::encode_hex(&id.info_hash()));
    }
    println!("push:  rtmp://HOST:1935/live/{key}");
    let pass = a.srt_passphrase.as_deref().map(|p| format!("&passphrase={p}")).unwrap_or_default();
    println!("  or:  srt://HOST:8890?streamid=#!::r=live/{key},m=publish{pass}");
    Ok(())
}

/// The seeder token (ingest and tracker share it): given, or read from (or created
/// in) the data directory.
pub(crate) fn seeder_token(given: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(t) = given {
        return Ok(t.to_owned());
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join("seeder-token");
    if !path.exists() {
        write_secret(&path, &generate_stream_key()).map_err(anyhow::Error::msg)?;
        println!("seeder token created in {}", path.display());
    }
    Ok(std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?.trim().to_owned())
}

/// Where a started ingest listens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IngestAddrs {
    pub(crate) rtmp: SocketAddr,
    pub(crate) srt: SocketAddr,
    pub(crate) http: SocketAddr,
}

/// Binds ingest's listeners and serves them from spawned tasks.
pub(crate) async fn start(run: &RunArgs) -> anyhow::Result<IngestAddrs> {
    std::fs::create_dir_all(&run.common.data_dir)
        .with_context(|| format!("creating {}", run.common.data_dir.display()))?;
    if !(10..=250).contains(&run.piece_ms) {
        bail!("--piece-ms must be 10..=250, got {}", run.piece_ms);
    }
    let token = seeder_token(run.seeder_token.as_deref(), &run.common.data_dir)?;
    // Epochs (how ingest nodes agree on numbering): in the catalogue when there is one
    // (nodes sharing it cut the same pieces), else in a file beside the channel file.
    let (auth, catalogue, epochs): (Arc<dyn Authorizer>, _, Arc<dyn EpochStore>) = match &run.database_url {
        Some(url) => {
            let db = catalogue::db::Db::open(url).await.context("opening the catalogue")?;
            let c = catalogue_authorizer(db.clone(), &run.common).await?;
            (c.clone(), Some(c), Arc::new(CatalogueEpochs(db)))
        }
        None => {
            let file = run.common.channel_file();
            match file.list() {
                Ok(list) => tracing::info!(channels = list.channels.len(), "channel file read"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "no channel file yet: every publish is refused until `shoal ingest add-channel`"
                ),
            }
            let epochs = FileEpochs::open(run.common.data_dir.join("epochs.json"));
            (Arc::new(file), None, Arc::new(epochs))
        }
    };
    let mut cfg = HubConfig { epochs, ..HubConfig::default() };
    cfg.segmenter.piece_ms = run.piece_ms;
    cfg.segmenter.max_gop_ms = run.max_gop_ms;
    cfg.window_pieces = run.window_pieces.map_or_else(|| HubConfig::window_for(run.piece_ms), |n| n.max(16));
    cfg.read_tick = std::time::Duration::from_millis(run.read_tick_ms);
    cfg.takeover = match run.takeover {
        TakeoverArg::IfIdleOrSameAddress => Takeover::IfIdleOrSameAddress,
        TakeoverArg::Always => Takeover::Always,
    };
    let hub = Hub::new(cfg);
    let rtmp = TcpListener::bind(run.rtmp_listen).await.with_context(|| format!("binding RTMP {}", run.rtmp_listen))?;
    let http = TcpListener::bind(run.http_listen).await.with_context(|| format!("binding HTTP {}", run.http_listen))?;
    let rtmp_addr = rtmp.local_addr()?;
    let http_addr = http.local_addr()?;
    let srt_addr = ingest::srt::bind(run.srt_listen, hub.clone(), auth.clone())
        .await
        .with_context(|| format!("binding SRT {}", run.srt_listen))?;
    write_ports(&run.common.data_dir, rtmp_addr, srt_addr, http_addr)?;
    tokio::spawn(ingest::hub::keep_checking(hub.clone(), auth.clone(), ingest::hub::CHECK_EVERY, move || {
        let catalogue = catalogue.clone();
        async move {
            match catalogue {
                Some(c) => c.refresh().await.map(drop),
                None => Ok(()), // the channel file is looked at by every check
            }
        }
    }));
    tokio::spawn(ingest::rtmp::serve(rtmp, hub.clone(), auth));
    tokio::spawn(ingest::http::serve(http, hub, SeederTokens::from_tokens([token.as_str()])));
    Ok(IngestAddrs { rtmp: rtmp_addr, srt: srt_addr, http: http_addr })
}

/// Publishing decided by the catalogue; [`start`] re-reads it when it changes.
/// Epochs in the catalogue's `stream_epochs` table.
#[derive(Debug)]
struct CatalogueEpochs(catalogue::db::Db);

fn to_row(e: &Epoch) -> StreamEpoch {
    StreamEpoch {
        number: e.number as i64,
        clock: e.clock.label().to_owned(),
        raw0: e.raw0 as i64,
        seq0: e.seq0 as i64,
        wall0_us: e.wall0_us as i64,
        piece_ms: i64::from(e.piece_ms),
        cut_at_us: e.cut_at_us as i64,
    }
}

fn from_row(r: StreamEpoch) -> Result<Epoch, String> {
    let clock = FeedClock::from_label(&r.clock)
        .ok_or_else(|| format!("epoch {} has an unknown clock {:?}", r.number, r.clock))?;
    let n = |v: i64, what: &str| u64::try_from(v).map_err(|_| format!("epoch {} has a negative {what}", r.number));
    Ok(Epoch {
        number: n(r.number, "number")?,
        clock,
        raw0: n(r.raw0, "raw0")?,
        seq0: n(r.seq0, "seq0")?,
        wall0_us: n(r.wall0_us, "wall0_us")?,
        piece_ms: u32::try_from(r.piece_ms).map_err(|_| format!("epoch {} has a bad piece_ms", r.number))?,
        cut_at_us: n(r.cut_at_us, "cut_at_us")?,
    })
}

impl EpochStore for CatalogueEpochs {
    fn latest<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Option<Epoch>, String>> {
        Box::pin(async move {
            let row = self.0.latest_stream_epoch(channel).await.map_err(|e| e.to_string())?;
            row.map(from_row).transpose()
        })
    }

    fn propose<'a>(&'a self, channel: &'a str, epoch: &'a Epoch) -> BoxFuture<'a, Result<Epoch, String>> {
        Box::pin(async move {
            let now = (ingest::hub::now_us() / 1_000_000) as i64;
            let row = self.0.propose_stream_epoch(channel, &to_row(epoch), now).await.map_err(|e| e.to_string())?;
            from_row(row)
        })
    }

    fn touch<'a>(&'a self, channel: &'a str, number: u64, at_us: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.0.touch_stream_epoch(channel, number as i64, at_us as i64).await.map_err(|e| e.to_string())
        })
    }
}

async fn catalogue_authorizer(
    db: catalogue::db::Db,
    common: &Common,
) -> anyhow::Result<Arc<catalogue::directory::CatalogueAuthorizer>> {
    let auth =
        Arc::new(catalogue::directory::CatalogueAuthorizer::new(db, catalogue::secrets::KeyDir::new(common.key_dir())));
    let n = auth.reload().await.map_err(anyhow::Error::msg).context("reading the catalogue")?;
    tracing::info!(channels = n, "catalogue read");
    Ok(auth)
}

fn write_ports(dir: &Path, rtmp: SocketAddr, srt: SocketAddr, http: SocketAddr) -> anyhow::Result<()> {
    let json = serde_json::json!({ "rtmp": rtmp.to_string(), "srt": srt.to_string(), "http": http.to_string() });
    crate::write_atomic(&dir.join("ports.json"), json.to_string().as_bytes())
}
