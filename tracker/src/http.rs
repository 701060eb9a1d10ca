//! The tracker's HTTP service (hyper): `GET /announce` and `GET /scrape` in the
//! BitTorrent form (bencoded; failures as `failure reason` with a 4xx status),
//! `/metrics`, `/healthz`, `/readyz`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use catalogue::secrets::SeederTokens;
use httpkit::body::{HttpError, read_all};
use httpkit::{Body, ServerConfig, Site};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::admin;
use crate::announce::Announce;
use crate::announce::{Role, parse_announce, parse_scrape};
use crate::bencode::{self, DictWriter};
use crate::meter::Meter;
use crate::metrics::TrackerMetrics;
use crate::shared::SharedSwarms;
use crate::store::{AnnounceReply, StoreConfig, Swarms, compact};
use catalogue::db::Db;
use catalogue::directory::{Admission, ChannelDirectory, DbDirectory, FileDirectory};

/// The tracker's state: swarms, the channel directory, who may announce as a seed.
#[derive(Debug)]
pub struct Tracker {
    pub swarms: Swarms,
    pub directory: Arc<dyn ChannelDirectory>,
    pub seeders: SeederTokens,
    pub metrics: TrackerMetrics,
    /// The catalogue, for the admin API (absent without `--database-url`).
    pub admin: Option<Db>,
    /// Membership shared with other replicas (absent without `--redis-url`).
    pub shared: Option<SharedSwarms>,
    /// Pages on the WebSocket tracker (`/announce` upgraded), by channel.
    pub relay: Arc<crate::ws::Relay>,
    started: Instant,
    /// [`unix_now`] when the tracker started (its store's epoch).
    started_unix: u64,
}

impl Tracker {
    pub fn new(cfg: StoreConfig, directory: Arc<dyn ChannelDirectory>, seeders: SeederTokens) -> Self {
        let metrics = TrackerMetrics::new();
        let relay = Arc::new(crate::ws::Relay::new(&metrics.registry));
        let started_unix = unix_now();
        Tracker {
            swarms: Swarms::with_epoch(cfg, started_unix),
            directory,
            seeders,
            metrics,
            admin: None,
            shared: None,
            relay,
            started: Instant::now(),
            started_unix,
        }
    }

    /// Serves the admin API (`/v1/...`) from this catalogue.
    pub fn with_admin(mut self, db: Db) -> Self {
        self.admin = Some(db);
        self
    }

    /// Shares swarm membership with other replicas through Redis.
    pub fn with_shared(mut self, shared: SharedSwarms) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Seconds since the tracker started: the swarm store's clock (monotonic; with a
    /// driven clock, [`drive_clock`], the driven time since the start).
    pub fn now_s(&self) -> u32 {
        let s = if CLOCK_FILE.get().is_some() {
            unix_now().saturating_sub(self.started_unix)
        } else {
            self.started.elapsed().as_secs()
        };
        u32::try_from(s).unwrap_or(u32::MAX)
    }

    /// One announce, from the query string and the connection's address, answered
    /// from this process's swarms.
    pub fn announce(&self, query: &str, ip: IpAddr, now_s: u32, now_unix: u64) -> (StatusCode, Vec<u8>) {
        let _span = tracing::trace_span!("announce", %ip).entered();
        match self.accept(query, ip, now_unix) {
            Ok(a) => {
                let reply = self.swarms.announce(now_s, &a, ip);
                self.metrics.count_over_cap(&reply);
                self.answer(&a, &reply)
            }
            Err(refused) => refused,
        }
    }

    /// [`Tracker::announce`], with the peer list from every replica's peers when
    /// membership is shared; if the shared store fails, from this process's (counted).
    pub async fn announce_shared(&self, query: &str, ip: IpAddr, now_s: u32, now_unix: u64) -> (StatusCode, Vec<u8>) {
        let Some(shared) = &self.shared else {
            return self.announce(query, ip, now_s, now_unix);
        };
        let a = match self.accept(query, ip, now_unix) {
            Ok(a) => a,
            Err(refused) => return refused,
        };
        // Metering (and the fallback answer) are this process's.
        let local = self.swarms.announce(now_s, &a, ip);
        self.metrics.count_over_cap(&local);
        if local.over_cap.is_some() {
            // Not kept here, so not shared either: other replicas do not list it.
            return self.answer(&a, &local);
        }
        let span = tracing::trace_span!("announce", %ip);
        let reply = match shared.announce(&a, ip, now_unix).instrument(span).await {
            Ok(r) => r,
            Err(e) => {
                self.metrics.redis_errors.inc();
                tracing::debug!(error = %e, "shared swarm store failed; answered from this replica's peers");
                local
            }
        };
        self.answer(&a, &reply)
    }

    /// The announce if it is to be answered: well formed, a channel open now, a seed
    /// with its token. Otherwise the failure answer (counted).
    fn accept(&self, query: &str, ip: IpAddr, now_unix: u64) -> Result<Announce, (StatusCode, Vec<u8>)> {
        let result = |r: &'static str| self.metrics.announce_result(r);
        let a = match parse_announce(query) {
            Ok(a) => a,
            Err(e) => {
                result("bad_request");
                tracing::debug!(%ip, error = %e, "announce refused");
                return Err(failure(StatusCode::BAD_REQUEST, &e.to_string()));
            }
        };
        match self.directory.admit(&a.info_hash, now_unix) {
            Admission::Open { .. } => {}
            Admission::Unknown => {
                result("unknown_channel");
                return Err(failure(StatusCode::NOT_FOUND, "unknown channel: no channel has this info_hash"));
            }
            Admission::Refused { channel, reason, label } => {
                result("refused");
                tracing::debug!(%channel, label, "announce refused");
                return Err(failure(StatusCode::FORBIDDEN, &reason));
            }
        }
        if a.role == Role::Seed {
            match &a.token {
                None => {
                    result("unauthorized");
                    return Err(failure(StatusCode::UNAUTHORIZED, "role=seed needs token=<seeder token>"));
                }
                Some(t) if !self.seeders.allows(t) => {
                    result("unauthorized");
                    return Err(failure(StatusCode::FORBIDDEN, "seeder token not accepted"));
                }
                Some(_) => {}
            }
        }
        result("ok");
        Ok(a)
    }

    /// The bencoded answer to an accepted announce.
    fn answer(&self, a: &Announce, reply: &AnnounceReply) -> (StatusCode, Vec<u8>) {
        let cfg = self.swarms.config();
        let interval = if a.role == Role::Seed { cfg.seed_interval_s.min(cfg.interval_s) } else { cfg.interval_s };
        let mut d = DictWriter::new()
            .int("complete", i64::from(reply.seeds))
            .int("incomplete", i64::from(reply.viewers))
            .int("interval", i64::from(interval))
            .int("min interval", i64::from(interval / 2));
        if a.want_keys {
            // In the order the answer lists them (compact: IPv4 peers, then IPv6).
            let ordered: Vec<&crate::store::PeerOut> = if a.compact {
                reply
                    .peers
                    .iter()
                    .filter(|p| p.ip.is_ipv4())
                    .chain(reply.peers.iter().filter(|p| p.ip.is_ipv6()))
                    .collect()
            } else {
                reply.peers.iter().collect()
            };
            let mut keys = Vec::with_capacity(ordered.len() * 9);
            for p in ordered {
                keys.extend_from_slice(&p.key);
                keys.push(u8::from(p.seed));
            }
            d = d.bytes("peer keys", &keys);
        }
        if a.compact {
            let (v4, v6) = compact(&reply.peers);
            d = d.bytes("peers", &v4);
            if !v6.is_empty() {
                d = d.bytes("peers6", &v6);
            }
        } else {
            let mut list = vec![b'l'];
            for p in &reply.peers {
                // No "peer id": the tracker keeps a hash of it only (BEP 23's no_peer_id).
                list.extend(
                    DictWriter::new().bytes("ip", p.ip.to_string().as_bytes()).int("port", i64::from(p.port)).finish(),
                );
            }
            list.push(b'e');
            d = d.raw("peers", &list);
        }
        (StatusCode::OK, d.finish())
    }

    /// One scrape: seeds and viewers of each asked channel (unknown ones are left out).
    pub async fn scrape(&self, query: &str, now_unix: u64) -> (StatusCode, Vec<u8>) {
        self.metrics.scrapes.inc();
        let mut hashes = match parse_scrape(query) {
            Ok(h) => h,
            Err(e) => return failure(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        hashes.sort_unstable();
        hashes.dedup();
        let mut files = vec![b'd'];
        for h in hashes {
            if !matches!(self.directory.admit(&h, now_unix), Admission::Open { .. }) {
                continue;
            }
            let (seeds, viewers) = match &self.shared {
                None => self.swarms.scrape(&h),
                Some(shared) => shared.scrape(&h).await.unwrap_or_else(|e| {
                    self.metrics.redis_errors.inc();
                    tracing::debug!(error = %e, "shared swarm store failed; scrape answered from this replica");
                    self.swarms.scrape(&h)
                }),
            };
            bencode::write_bytes(&mut files, &h);
            files.extend(
                DictWriter::new()
                    .int("complete", i64::from(seeds))
                    .int("downloaded", 0)
                    .int("incomplete", i64::from(viewers))
                    .finish(),
            );
        }
        files.push(b'e');
        (StatusCode::OK, DictWriter::new().raw("files", &files).finish())
    }

    /// Expires silent peers and empty swarms; refreshes the gauges.
    pub fn sweep(&self, now_s: u32) {
        let st = self.swarms.sweep(now_s);
        self.metrics.expired.inc_by(st.expired_peers);
        self.metrics.pruned.inc_by(st.pruned_swarms);
        let t = self.swarms.totals();
        self.metrics.swarms.set(t.swarms as i64);
        self.metrics.seeds.set(t.seeds as i64);
        self.metrics.viewers.set(t.viewers as i64);
        self.metrics.memory.set(self.swarms.heap_bytes() as i64);
    }
}

fn failure(status: StatusCode, reason: &str) -> (StatusCode, Vec<u8>) {
    (status, DictWriter::new().bytes("failure reason", reason.as_bytes()).finish())
}

pub fn unix_now() -> u64 {
    if let Some(path) = CLOCK_FILE.get() {
        // Read at each use; a read that fails (the file mid-replace) keeps the last time.
        return match std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse::<u64>().ok()) {
            Some(t) => {
                CLOCK_LAST.store(t, std::sync::atomic::Ordering::Relaxed);
                t
            }
            None => CLOCK_LAST.load(std::sync::atomic::Ordering::Relaxed),
        };
    }
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

static CLOCK_FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
static CLOCK_LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Tests only (`shoal tracker --clock-file`): the tracker's time — metering's hours,
/// the store's clock, expiry — is the unix time written in `path`, read at each use,
/// so a test drives whole tracker processes through hours in seconds. Set before the
/// tracker is made; once per process.
///
/// # Errors
/// The clock was already driven, or the file holds no time.
pub fn drive_clock(path: std::path::PathBuf) -> Result<(), String> {
    let t = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("{}: unix seconds expected", path.display()))?;
    CLOCK_LAST.store(t, std::sync::atomic::Ordering::Relaxed);
    CLOCK_FILE.set(path).map_err(|_| "the clock is already driven".to_owned())
}

/// Serves announces, scrapes and the admin API (and `/metrics`, `/healthz`, `/readyz`:
/// serving means ready, the directory was loaded before the listener opened).
pub async fn serve(listener: TcpListener, tracker: Arc<Tracker>) {
    let site = Site::new(tracker.metrics.registry.clone());
    let cfg = ServerConfig { max_buf_size: 16 * 1024, ..ServerConfig::new("tracker") };
    httpkit::serve(listener, cfg, site, move |req, peer| {
        let tracker = tracker.clone();
        async move { route(req, peer.ip(), &tracker).await }
    })
    .await;
}

/// Where the channel directory is re-read from.
#[derive(Debug)]
pub enum Reload {
    /// A fixed directory (tests, benchmarks).
    Nothing,
    File(FileDirectory),
    Db(DbDirectory),
}

impl Reload {
    pub async fn run(&self, now_unix: u64) -> Result<usize, String> {
        match self {
            Reload::Nothing => Ok(0),
            Reload::File(f) => f.reload(now_unix),
            Reload::Db(d) => d.reload(now_unix).await,
        }
    }

    /// Re-reads the SQL catalogue's channels if a write moved its change counter.
    pub async fn refresh(&self, now_unix: u64) -> Result<bool, String> {
        match self {
            Reload::Db(d) => d.refresh(now_unix).await,
            Reload::Nothing | Reload::File(_) => Ok(false),
        }
    }

    fn failed(&self, tracker: &Tracker, e: &str) {
        tracker.metrics.directory_errors.inc();
        if matches!(self, Reload::Db(_)) {
            tracker.metrics.db_errors.with_label_values(&["directory"]).inc();
        }
        tracing::warn!(error = %e, "channel directory not reloaded; the last good one stays in use");
    }
}

/// Sweeps and re-reads the channel directory every `tick` (10 s; licences begin and end
/// with time) and, over the SQL catalogue, twice a second when a write moved its change
/// counter (a channel disabled stops taking announces within 0.5 s); a failed read
/// keeps the last good directory and is counted. At the first tick of each
/// `flush_interval_s` window of the tracker's clock (every minute, by default), usage
/// goes to the catalogue (or, without one, is only counted).
pub async fn maintain(
    tracker: Arc<Tracker>,
    reload: Reload,
    meter: Option<Arc<Meter>>,
    flush_interval_s: u64,
    tick: Duration,
) {
    let mut tick = tokio::time::interval(tick);
    let mut follow = tokio::time::interval(Duration::from_millis(500));
    follow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flushed_window = unix_now() / flush_interval_s.max(1);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = follow.tick(), if matches!(reload, Reload::Db(_)) => {
                // A failure here is counted as a database error; the 10 s reload
                // reports an outage (a log line twice a second would say nothing more).
                if reload.refresh(unix_now()).await.is_err() {
                    tracker.metrics.db_errors.with_label_values(&["directory"]).inc();
                }
                continue;
            }
        }
        let now_s = tracker.now_s();
        tracker.sweep(now_s);
        if let Some(shared) = &tracker.shared {
            match shared.sweep(unix_now()).await {
                Ok(st) => {
                    tracker.metrics.shared_expired.inc_by(st.expired_peers);
                }
                Err(e) => {
                    tracker.metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "shared swarm store not swept; retried in 10 s");
                }
            }
        }
        if let Err(e) = reload.run(unix_now()).await {
            reload.failed(&tracker, &e);
        }
        let window = unix_now() / flush_interval_s.max(1);
        if window != flushed_window {
            flushed_window = window;
            flush_usage(&tracker, meter.as_deref()).instrument(tracing::debug_span!("usage_flush")).await;
        }
    }
}

/// Drains the swarms' usage to the catalogue (or, without one, only counts it), and
/// rolls up the hours it touched; also at shutdown, so a stopped tracker leaves
/// nothing unwritten.
pub async fn flush_usage(tracker: &Tracker, meter: Option<&Meter>) {
    let m = &tracker.metrics;
    match meter {
        Some(meter) => {
            let o = meter.flush(&tracker.swarms, unix_now()).await;
            m.viewer_seconds.inc_by(o.viewer_seconds);
            m.ad_viewer_seconds.inc_by(o.ad_viewer_seconds);
            m.seed_bytes.inc_by(o.seed_bytes);
            m.usage_flushes.with_label_values(&[if o.failed { "error" } else { "ok" }]).inc();
            m.usage_queued.set(o.queued_batches as i64);
            m.usage_lag.set(o.lag_s as i64);
            m.usage_dropped.inc_by(o.dropped_batches as u64);
            if o.failed {
                m.db_errors.with_label_values(&["flush"]).inc();
            }
            if o.dropped_batches > 0 {
                tracing::error!(batches = o.dropped_batches, "usage dropped: the catalogue was unreachable for a day");
            }
            if !o.failed
                && let Err(e) = meter.roll_up(unix_now()).await
            {
                m.db_errors.with_label_values(&["rollup"]).inc();
                tracing::warn!(error = %e, "hourly roll-up failed; it is recomputed at the next flush");
            }
        }
        None => {
            let d = tracker.swarms.drain_usage(unix_now());
            m.viewer_seconds.inc_by(d.usage.iter().map(|u| u.viewer_seconds).sum());
            m.ad_viewer_seconds.inc_by(d.usage.iter().map(|u| u.ad_viewer_seconds).sum());
            m.seed_bytes.inc_by(d.usage.iter().map(|u| u.seed_bytes).sum());
        }
    }
}

async fn route(req: Request<Incoming>, ip: IpAddr, tracker: &Arc<Tracker>) -> Response<Body> {
    let path = req.uri().path();
    if path.starts_with("/v1/") {
        return admin_route(req, tracker).await;
    }
    if req.method() != Method::GET {
        let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", b"only GET is served here\n".to_vec());
        r.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET"));
        return r;
    }
    let query = req.uri().query().unwrap_or("");
    // IPv4 clients on a dual-stack socket arrive as IPv4-mapped IPv6.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match path {
        "/announce" if wants_websocket(&req) => websocket(req, ip, tracker),
        "/announce" => {
            let (status, body) = tracker.announce_shared(query, ip, tracker.now_s(), unix_now()).await;
            respond(status, "text/plain", body)
        }
        "/scrape" => {
            let (status, body) = tracker.scrape(query, unix_now()).await;
            respond(status, "text/plain", body)
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"not found: /announce, /scrape, /metrics, /healthz, /v1/...\n".to_vec(),
        ),
    }
}

/// Whether `req` asks to become a WebSocket (RFC 6455 §4.1).
fn wants_websocket(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    let has = |name: hyper::header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
    };
    has(hyper::header::UPGRADE, "websocket") && has(hyper::header::CONNECTION, "upgrade")
}

/// The WebSocket tracker ([`crate::ws`]): answers the upgrade, then serves the
/// connection on its own task.
fn websocket(mut req: Request<Incoming>, ip: IpAddr, tracker: &Arc<Tracker>) -> Response<Body> {
    let h = req.headers();
    let version_13 = h.get(hyper::header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let Some(key) = h.get(hyper::header::SEC_WEBSOCKET_KEY).filter(|_| version_13) else {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            b"a WebSocket upgrade needs Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key\n".to_vec(),
        );
    };
    // A seeder joins with its token (`role=seed&token=…`, as on `/announce`) to be
    // handed pages' offers as a seed's.
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| swarm::announce::percent_decode(v).ok())
            .and_then(|v| String::from_utf8(v).ok())
    };
    let seed = param("role").as_deref() == Some("seed");
    if seed {
        let refuse = |status, why: &str| respond(status, "text/plain", format!("{why}\n").into_bytes());
        match param("token") {
            None => return refuse(StatusCode::UNAUTHORIZED, "role=seed needs token=<seeder token>"),
            Some(t) if !tracker.seeders.allows(&t) => {
                return refuse(StatusCode::FORBIDDEN, "seeder token not accepted");
            }
            Some(_) => {}
        }
    }
    if let Err(why) = tracker.relay.reserve(ip) {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n").into_bytes());
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    let (relay, tracker) = (tracker.relay.clone(), tracker.clone());
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => crate::ws::serve(hyper_util::rt::TokioIo::new(io), tracker, ip, seed).await,
            Err(e) => {
                relay.release(ip);
                tracing::debug!(%ip, error = %e, "WebSocket upgrade failed");
            }
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(hyper::header::UPGRADE, hyper::header::HeaderValue::from_static("websocket"));
    h.insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("Upgrade"));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
        h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

async fn admin_route(req: Request<Incoming>, tracker: &Tracker) -> Response<Body> {
    let Some(db) = &tracker.admin else {
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"the admin API needs the catalogue: start the tracker with --database-url\n".to_vec(),
        );
    };
    let (parts, body) = req.into_parts();
    let body = match read_all(body, admin::MAX_BODY).await {
        Ok(b) => b,
        Err(e @ HttpError::TooLong(_)) => return httpkit::text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        Err(e) => return httpkit::text(StatusCode::BAD_REQUEST, format!("request body: {e}")),
    };
    let request = admin::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        authorization: parts.headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
        body: &body,
        now: unix_now() as i64,
    };
    let span = tracing::debug_span!("admin", method = request.method, path = request.path);
    match admin::route(db, request).instrument(span).await {
        Some((status, ct, body)) => {
            if status == 503 {
                tracker.metrics.db_errors.with_label_values(&["admin"]).inc();
            }
            let mut r = respond(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), ct, body);
            if let Some(allow) = admin::allowed(parts.uri.path()).filter(|_| status == 405) {
                r.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static(allow));
            }
            r
        }
        None => respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    httpkit::whole(status, content_type, body)
}
