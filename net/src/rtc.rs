//! WebRTC for pages: one UDP socket carries every page's session (str0m, sans-IO, driven
//! by one task like the swarm core is by the shell). A page's offer (relayed by the
//! tracker's WebSocket, [`crate::signal`]) is answered here; once the page opens its
//! `shoal` data channel, that channel is handed to the shell as a [`PageStream`], a byte
//! stream like a TCP connection (PROTOCOL.md §2: frames back to back, cut into messages
//! of at most [`CHUNK`] bytes). The shell never learns it is not TCP.
//!
//! The host is ICE-lite with host candidates only (a seeder has a public address; the
//! page does the checks), and answers plain STUN binding requests on the same port, so
//! pages can learn their public address from a seeder instead of a third party's STUN
//! server.
//!
//! What a page sends is hostile until checked: an offer must parse and carry a data
//! channel; at most [`MAX_SESSIONS`] sessions at once, and [`MAX_SESSIONS_PER_ADDRESS`]
//! from one IP address (checked on a session's first datagram: an offer does not say
//! where it comes from); one that has no open channel [`HANDSHAKE_TIMEOUT`] after its
//! offer is dropped; a data-channel message above
//! [`CHUNK`] bytes, or more than [`INBOUND_QUEUE`] messages the shell has not read yet,
//! ends the session (counted in [`RtcStats`]).
//!
//! The driver's work per event does not grow with the sessions it holds: a datagram
//! from a known address goes to its session (only a STUN check from a new address is
//! offered to every session), and only the sessions that took input, or whose wake-up
//! has come, are polled and given the time.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Largest data-channel message, either way (PROTOCOL.md §2).
pub const CHUNK: usize = 16 * 1024;
/// Sessions at once (each holds DTLS and SCTP state, a few hundred KiB at most): as
/// many as a seed takes neighbours, so that every page of a large audience can hold a
/// seed (its last resort for a late piece, and its quick start).
pub const MAX_SESSIONS: usize = swarm::peer::SEED_MAX_NEIGHBOURS;
/// Sessions from one IP address (a school's or an office's NAT holds many pages, each
/// wanting one seeder session at most; one attacker should not hold all the seeder's).
pub const MAX_SESSIONS_PER_ADDRESS: usize = 128;
/// Time from an offer to an open data channel before the session is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Data-channel messages from a page waiting for the shell: past it the page sends
/// faster than it is read and is dropped.
pub const INBOUND_QUEUE: usize = 256;
/// Bytes from the shell waiting for SCTP's buffer, per page.
const OUTBOUND_WINDOW: usize = 256 * 1024;
/// SCTP's own send buffer per session (str0m's default is 128 KiB).
const SCTP_BUFFER: usize = 256 * 1024;
/// The in-memory pipe between a session and the shell, each way.
const PIPE: usize = 64 * 1024;

/// Where pages reach a host.
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// The UDP socket (port 0: any).
    pub listen: SocketAddr,
    /// The addresses put in answers as host candidates. Empty: the socket's own address
    /// (127.0.0.1 when it listens on every address: set this for pages elsewhere).
    pub public: Vec<SocketAddr>,
    /// Sessions from one IP address ([`MAX_SESSIONS_PER_ADDRESS`] unless set).
    pub per_address: usize,
    /// STUN and TURN servers pages use to reach this host and each other (none: the
    /// host candidates and the seeders' own STUN answers, enough on a LAN or with
    /// public addresses).
    pub ice_servers: Vec<IceServer>,
}

impl RtcSettings {
    /// `listen`, answering with `public` (see the fields), the default limits.
    pub fn new(listen: SocketAddr, public: Vec<SocketAddr>) -> Self {
        RtcSettings { listen, public, per_address: MAX_SESSIONS_PER_ADDRESS, ice_servers: Vec::new() }
    }
}

/// A STUN or TURN server for pages, as a browser's `RTCIceServer` names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URL (RFC 7064, RFC 7065).
    pub url: String,
    /// A TURN server's credentials.
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// Why an ICE server setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceServerError {
    #[error("{0:?} is not a STUN or TURN URL (stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp], stuns:, turns:)")]
    NotIceUrl(String),
    #[error("{0:?} is a TURN server: it needs a username and a credential")]
    TurnWithoutCredentials(String),
}

impl IceServer {
    /// `url` checked; TURN servers take `username` and `credential`, STUN servers none.
    pub fn new(url: &str, username: Option<&str>, credential: Option<&str>) -> Result<IceServer, IceServerError> {
        let bad = || IceServerError::NotIceUrl(url.to_owned());
        let (scheme, rest) = url.split_once(':').ok_or_else(bad)?;
        let turn = matches!(scheme, "turn" | "turns");
        let host = rest.split(['?', ':']).next().unwrap_or_default();
        let clean = url.len() <= 256 && url.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:[]?=&%~".contains(c));
        if !(turn || matches!(scheme, "stun" | "stuns")) || host.is_empty() || rest.starts_with('/') || !clean {
            return Err(bad());
        }
        if !turn {
            return Ok(IceServer { url: url.to_owned(), username: None, credential: None });
        }
        match (username, credential) {
            (Some(u), Some(c)) => {
                Ok(IceServer { url: url.to_owned(), username: Some(u.to_owned()), credential: Some(c.to_owned()) })
            }
            _ => Err(IceServerError::TurnWithoutCredentials(url.to_owned())),
        }
    }

    /// `servers` as the JSON array `RTCPeerConnection`'s `iceServers` takes.
    pub fn to_json(servers: &[IceServer]) -> serde_json::Value {
        let list: Vec<serde_json::Value> = servers
            .iter()
            .map(|s| {
                let mut o = serde_json::json!({ "urls": s.url });
                if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                    o["username"] = u.as_str().into();
                    o["credential"] = c.as_str().into();
                }
                o
            })
            .collect();
        serde_json::Value::Array(list)
    }
}

/// A page's data channel, ready to be a neighbour: read and write it like a socket.
#[derive(Debug)]
pub struct PageStream {
    pub stream: DuplexStream,
    /// The page's address, as ICE chose it.
    pub remote: SocketAddr,
}

/// Why an offer was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    #[error("not a usable SDP offer: {0}")]
    BadOffer(String),
    #[error("{MAX_SESSIONS} page sessions already: no room")]
    Full,
    #[error("the WebRTC host has stopped")]
    Stopped,
}

/// Counters of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtcStats {
    pub sessions: u64,
    pub offers_answered: u64,
    pub offers_refused: u64,
    pub channels_opened: u64,
    /// Sessions dropped: no channel in time, ICE lost, or rules broken.
    pub timed_out: u64,
    pub oversize: u64,
    pub flooded: u64,
    pub stun_answered: u64,
    /// Datagrams no session took and that were not a STUN request.
    pub stray_datagrams: u64,
    /// Sessions dropped at their first datagram: their address had its share already.
    pub per_address_refused: u64,
}

type OfferReq = (String, oneshot::Sender<Result<String, AnswerError>>);

/// A running host. Dropping every clone stops it.
#[derive(Debug, Clone)]
pub struct RtcHost {
    /// The socket's address.
    pub local: SocketAddr,
    /// The host candidates answers carry.
    pub candidates: Vec<SocketAddr>,
    offers: mpsc::Sender<OfferReq>,
    stats: Arc<Mutex<RtcStats>>,
}

impl RtcHost {
    /// Binds the socket and starts the host; each page's data channel goes to `streams`.
    pub async fn bind(settings: &RtcSettings, streams: mpsc::Sender<PageStream>) -> std::io::Result<RtcHost> {
        let socket = UdpSocket::bind(settings.listen).await?;
        let local = socket.local_addr()?;
        let candidates = if !settings.public.is_empty() {
            let port = |c: &SocketAddr| if c.port() == 0 { SocketAddr::new(c.ip(), local.port()) } else { *c };
            settings.public.iter().map(port).collect()
        } else if local.ip().is_unspecified() {
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())]
        } else {
            vec![local]
        };
        for c in &candidates {
            Candidate::host(*c, "udp").map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("WebRTC address {c}: {e}"))
            })?;
        }
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| std::io::Error::other("could not make a DTLS certificate"))?;
        let (offers, offers_rx) = mpsc::channel(64);
        let (out_tx, out_rx) = mpsc::channel(1024);
        let stats = Arc::new(Mutex::new(RtcStats::default()));
        let driver = Driver {
            socket,
            local,
            candidates: candidates.clone(),
            cert,
            provider: Arc::new(provider),
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: HashSet::new(),
            per_address: settings.per_address.max(1),
            next_id: 0,
            streams,
            out_tx,
            stats: stats.clone(),
        };
        tokio::spawn(driver.run(offers_rx, out_rx));
        tracing::info!(%local, ?candidates, "WebRTC host listening for pages");
        Ok(RtcHost { local, candidates, offers, stats })
    }

    /// Answers a page's SDP offer with an SDP answer.
    pub async fn answer(&self, offer_sdp: &str) -> Result<String, AnswerError> {
        let (tx, rx) = oneshot::channel();
        self.offers.send((offer_sdp.to_owned(), tx)).await.map_err(|_| AnswerError::Stopped)?;
        rx.await.map_err(|_| AnswerError::Stopped)?
    }

    pub fn stats(&self) -> RtcStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// One page's session.
struct Session {
    rtc: Rtc,
    created: Instant,
    channel: Option<ChannelId>,
    /// The page's address, from its last datagram.
    remote: Option<SocketAddr>,
    /// Every address its datagrams came from (the driver's routes to it).
    addrs: Vec<SocketAddr>,
    /// When it next wants time ([`Driver::timers`]).
    wake: Instant,
    /// Chunks from the shell not yet in SCTP's buffer, with the window they hold.
    pending: VecDeque<(Bytes, OwnedSemaphorePermit)>,
    /// Data-channel messages to the shell.
    inbound: Option<mpsc::Sender<Vec<u8>>>,
    /// Tasks pumping between the pipe and this session; aborted when it ends.
    pumps: Vec<tokio::task::AbortHandle>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for p in &self.pumps {
            p.abort();
        }
    }
}

struct Driver {
    socket: UdpSocket,
    local: SocketAddr,
    candidates: Vec<SocketAddr>,
    cert: str0m::config::DtlsCert,
    provider: Arc<str0m::crypto::CryptoProvider>,
    sessions: HashMap<u64, Session>,
    /// Which session a page's address belongs to (a datagram from a known address
    /// goes to its session without asking every session).
    by_addr: HashMap<SocketAddr, u64>,
    /// Each session's next wake-up: only due sessions are given the time.
    timers: BTreeSet<(Instant, u64)>,
    /// Sessions that took input since they were last polled.
    dirty: HashSet<u64>,
    per_address: usize,
    next_id: u64,
    streams: mpsc::Sender<PageStream>,
    /// Chunks the pumps read from the shell, for the sessions to send.
    out_tx: mpsc::Sender<Outgoing>,
    stats: Arc<Mutex<RtcStats>>,
}

/// A chunk from the shell for a session, holding its share of the page's window.
type Outgoing = (u64, Bytes, OwnedSemaphorePermit);

impl Driver {
    async fn run(mut self, mut offers: mpsc::Receiver<OfferReq>, mut out_rx: mpsc::Receiver<Outgoing>) {
        let mut buf = vec![0u8; 2048];
        let mut offers_open = true;
        loop {
            let wake = self.poll_dirty().await;
            self.publish();
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.datagram(&buf[..n], from).await,
                    Err(e) => tracing::debug!(error = %e, "WebRTC socket read"),
                },
                req = offers.recv(), if offers_open => match req {
                    Some((sdp, reply)) => {
                        let r = self.offer(&sdp);
                        let _ = reply.send(r);
                    }
                    None => offers_open = false,
                },
                Some((id, chunk, permit)) = out_rx.recv() => {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.pending.push_back((chunk, permit));
                        flush(s);
                        self.dirty.insert(id);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            if !offers_open && self.sessions.is_empty() {
                return;
            }
            // Time for the sessions whose wake-up has come (not every session).
            let now = Instant::now();
            while let Some(&(t, id)) = self.timers.first()
                && t <= now
            {
                self.timers.pop_first();
                if let Some(s) = self.sessions.get_mut(&id) {
                    let _ = s.rtc.handle_input(Input::Timeout(now));
                    self.dirty.insert(id);
                }
            }
        }
    }

    fn offer(&mut self, sdp: &str) -> Result<String, AnswerError> {
        let refuse = |stats: &Mutex<RtcStats>, e: AnswerError| {
            if let Ok(mut s) = stats.lock() {
                s.offers_refused += 1;
            }
            Err(e)
        };
        if self.sessions.len() >= MAX_SESSIONS {
            return refuse(&self.stats, AnswerError::Full);
        }
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(o) => o,
            Err(e) => return refuse(&self.stats, AnswerError::BadOffer(e.to_string())),
        };
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_crypto_provider(self.provider.clone())
            .set_dtls_cert(self.cert.clone())
            .set_sctp_max_buffered_amount(SCTP_BUFFER)
            .build(Instant::now());
        for c in &self.candidates {
            if let Ok(c) = Candidate::host(*c, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        let answer = match rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => return refuse(&self.stats, AnswerError::BadOffer(e.to_string())),
        };
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        self.dirty.insert(id);
        self.sessions.insert(
            id,
            Session {
                rtc,
                created: now,
                channel: None,
                remote: None,
                addrs: Vec::new(),
                wake: now,
                pending: VecDeque::new(),
                inbound: None,
                pumps: Vec::new(),
            },
        );
        if let Ok(mut s) = self.stats.lock() {
            s.offers_answered += 1;
        }
        Ok(answer.to_sdp_string())
    }

    /// One datagram: to the session it belongs to, else a STUN binding request is
    /// answered, else it is dropped.
    async fn datagram(&mut self, data: &[u8], from: SocketAddr) {
        let destination = self.destination(from);
        if let Ok(receive) = Receive::new(Protocol::Udp, from, destination, data) {
            let input = Input::Receive(Instant::now(), receive);
            // A known address goes to its session; only a STUN check from a new one
            // (ICE trying a page's candidates) is offered to every session.
            let known = self
                .by_addr
                .get(&from)
                .copied()
                .filter(|id| self.sessions.get(id).is_some_and(|s| s.rtc.accepts(&input)));
            let found = known.or_else(|| {
                is_stun(data)
                    .then(|| self.sessions.iter().find(|(_, s)| s.rtc.accepts(&input)).map(|(&id, _)| id))
                    .flatten()
            });
            if let Some(id) = found {
                // A session's first datagram says where it is: its address's share is checked then.
                let first = self.sessions.get(&id).is_some_and(|s| s.remote.is_none());
                let held = || self.sessions.values().filter(|o| o.remote.is_some_and(|r| r.ip() == from.ip())).count();
                let over = first && held() >= self.per_address;
                if over {
                    tracing::info!(remote = %from, "WebRTC session refused: this address has {} already", self.per_address);
                    self.count(|st| st.per_address_refused += 1);
                }
                self.dirty.insert(id);
                if let Some(s) = self.sessions.get_mut(&id) {
                    if over {
                        s.rtc.disconnect();
                    } else {
                        if !s.addrs.contains(&from) && s.addrs.len() < MAX_ADDRS_PER_SESSION {
                            s.addrs.push(from);
                            self.by_addr.insert(from, id);
                        }
                        s.remote = Some(from);
                        if s.rtc.handle_input(input).is_err() {
                            s.rtc.disconnect();
                        }
                    }
                }
                return;
            }
        }
        if let Some(reply) = stun_binding_reply(data, from) {
            let _ = self.socket.send_to(&reply, from).await;
            self.count(|s| s.stun_answered += 1);
        } else {
            self.count(|s| s.stray_datagrams += 1);
        }
    }

    /// The local address a datagram from `from` reached, as the sessions know it (the
    /// advertised candidate of its family, when the socket listens on every address).
    fn destination(&self, from: SocketAddr) -> SocketAddr {
        if !self.local.ip().is_unspecified() {
            return self.local;
        }
        let same = |c: &&SocketAddr| c.is_ipv4() == from.is_ipv4();
        self.candidates.iter().find(same).or(self.candidates.first()).copied().unwrap_or(self.local)
    }

    /// Drives the sessions that took input until each waits; returns when the next
    /// session wants time.
    async fn poll_dirty(&mut self) -> Instant {
        let mut ended = Vec::new();
        let ids: Vec<u64> = self.dirty.drain().collect();
        for id in ids {
            let mut transmits = Vec::new();
            let mut opened = None;
            let Some(s) = self.sessions.get_mut(&id) else { continue };
            loop {
                if !s.rtc.is_alive() {
                    ended.push(id);
                    break;
                }
                match s.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => {
                        // A session without its channel yet is also woken at its deadline.
                        let deadline = s.created + HANDSHAKE_TIMEOUT + Duration::from_millis(1);
                        let t = if s.channel.is_none() { t.min(deadline) } else { t };
                        self.timers.remove(&(s.wake, id));
                        s.wake = t;
                        self.timers.insert((t, id));
                        break;
                    }
                    Ok(Output::Transmit(t)) => transmits.push((t.destination, t.contents.to_vec())),
                    Ok(Output::Event(ev)) => match ev {
                        Event::ChannelOpen(ch, label) if s.channel.is_none() && label == "shoal" => {
                            s.channel = Some(ch);
                            opened = Some(ch);
                        }
                        Event::ChannelData(d) => {
                            if Some(d.id) != s.channel {
                                continue;
                            }
                            if d.data.len() > CHUNK {
                                tracing::info!(remote = ?s.remote, len = d.data.len(), "page sent a data-channel message above {CHUNK} bytes: dropped");
                                self.stats.lock().map(|mut st| st.oversize += 1).ok();
                                s.rtc.disconnect();
                                continue;
                            }
                            if let Some(tx) = &s.inbound
                                && tx.try_send(d.data).is_err()
                            {
                                tracing::info!(remote = ?s.remote, "page sends faster than it is read: dropped");
                                self.stats.lock().map(|mut st| st.flooded += 1).ok();
                                s.rtc.disconnect();
                            }
                        }
                        Event::ChannelBufferedAmountLow(_) => flush(s),
                        Event::ChannelClose(ch) if Some(ch) == s.channel => s.rtc.disconnect(),
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => s.rtc.disconnect(),
                        _ => {}
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "WebRTC session failed");
                        s.rtc.disconnect();
                    }
                }
            }
            if s.channel.is_none() && s.created.elapsed() > HANDSHAKE_TIMEOUT && !ended.contains(&id) {
                self.count(|st| st.timed_out += 1);
                ended.push(id);
            }
            for (to, bytes) in transmits {
                let _ = self.socket.send_to(&bytes, to).await;
            }
            if let Some(ch) = opened {
                self.open(id, ch).await;
            }
        }
        for id in ended {
            if let Some(s) = self.sessions.remove(&id) {
                self.timers.remove(&(s.wake, id));
                for a in &s.addrs {
                    if self.by_addr.get(a) == Some(&id) {
                        self.by_addr.remove(a);
                    }
                }
            }
        }
        let idle = Instant::now() + Duration::from_millis(500);
        self.timers.first().map_or(idle, |&(t, _)| t.min(idle))
    }

    /// The page opened its channel: a pipe to the shell, and two pumps.
    async fn open(&mut self, id: u64, ch: ChannelId) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        let Some(remote) = s.remote else { return };
        if let Some(mut c) = s.rtc.channel(ch) {
            c.set_buffered_amount_low_threshold(SCTP_BUFFER / 2);
        }
        let (shell_end, ours) = tokio::io::duplex(PIPE);
        let (mut rd, mut wr) = tokio::io::split(ours);
        let (in_tx, mut in_rx) = mpsc::channel::<Vec<u8>>(INBOUND_QUEUE);
        s.inbound = Some(in_tx);
        let writer = tokio::spawn(async move {
            while let Some(chunk) = in_rx.recv().await {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        let window = Arc::new(Semaphore::new(OUTBOUND_WINDOW));
        let out = self.out_tx.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let Ok(permit) = window.clone().acquire_many_owned(n as u32).await else { return };
                if out.send((id, Bytes::copy_from_slice(&buf[..n]), permit)).await.is_err() {
                    return;
                }
            }
        });
        s.pumps = vec![writer.abort_handle(), reader.abort_handle()];
        if let Ok(mut st) = self.stats.lock() {
            st.channels_opened += 1;
        }
        if self.streams.send(PageStream { stream: shell_end, remote }).await.is_err() {
            s.rtc.disconnect();
        }
    }

    fn count(&self, f: impl FnOnce(&mut RtcStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    fn publish(&self) {
        let n = self.sessions.len() as u64;
        self.count(|s| s.sessions = n);
    }
}

/// Addresses a session is routed from at most (a page's candidates; more are still
/// found by asking every session).
const MAX_ADDRS_PER_SESSION: usize = 8;

/// A STUN message by its first byte (RFC 7983: 0–3; DTLS is 20–63).
fn is_stun(data: &[u8]) -> bool {
    data.first().is_some_and(|b| *b < 4)
}

/// Moves what the shell wrote into SCTP's buffer, as far as it has room.
fn flush(s: &mut Session) {
    let Some(ch) = s.channel else { return };
    let Some(mut c) = s.rtc.channel(ch) else { return };
    while let Some((chunk, _)) = s.pending.front() {
        match c.write(true, chunk) {
            Ok(true) => {
                s.pending.pop_front();
            }
            Ok(false) => return,
            Err(_) => {
                s.pending.clear();
                return;
            }
        }
    }
}

const STUN_MAGIC: u32 = 0x2112_A442;

/// The answer to a plain STUN binding request (RFC 8489: no attributes needed, none
/// required to be understood) telling the sender the address it came from; `None` for
/// anything else.
pub fn stun_binding_reply(data: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if data.len() < 20 || data.len() > 548 {
        return None;
    }
    let kind = u16::from_be_bytes([data[0], data[1]]);
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let magic = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    if kind != 0x0001 || magic != STUN_MAGIC || len != data.len() - 20 || len % 4 != 0 {
        return None;
    }
    // A comprehension-required attribute we do not know (0x0000–0x7FFF) would need a
    // 420 answer; a plain client sends none (SOFTWARE, FINGERPRINT are optional ones).
    let mut at = 20;
    while at + 4 <= data.len() {
        let t = u16::from_be_bytes([data[at], data[at + 1]]);
        let l = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        if t < 0x8000 {
            return None;
        }
        at += 4 + l.div_ceil(4) * 4;
    }
    let txn = &data[8..20];
    let port = from.port() ^ (STUN_MAGIC >> 16) as u16;
    let mut attr = Vec::with_capacity(24);
    match from.ip() {
        IpAddr::V4(ip) => {
            attr.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
            attr.extend_from_slice(&port.to_be_bytes());
            attr.extend_from_slice(&(u32::from(ip) ^ STUN_MAGIC).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            attr.extend_from_slice(&[0x00, 0x20, 0x00, 0x14, 0x00, 0x02]);
            attr.extend_from_slice(&port.to_be_bytes());
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&STUN_MAGIC.to_be_bytes());
            key[4..].copy_from_slice(txn);
            attr.extend(ip.octets().iter().zip(key).map(|(a, k)| a ^ k));
        }
    }
    let mut out = Vec::with_capacity(20 + attr.len());
    out.extend_from_slice(&0x0101u16.to_be_bytes());
    out.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    out.extend_from_slice(&STUN_MAGIC.to_be_bytes());
    out.extend_from_slice(txn);
    out.extend_from_slice(&attr);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(attrs: &[u8]) -> Vec<u8> {
        let mut r = vec![0x00, 0x01];
        r.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        r.extend_from_slice(&STUN_MAGIC.to_be_bytes());
        r.extend_from_slice(b"0123456789ab");
        r.extend_from_slice(attrs);
        r
    }

    #[test]
    fn ice_servers_are_checked_and_given_to_pages_as_rtc_ice_servers() {
        let stun = IceServer::new("stun:stun.example.org:3478", None, None).unwrap();
        let turn = IceServer::new("turn:turn.example.org:3478?transport=udp", Some("shoal"), Some("s\"cret")).unwrap();
        assert_eq!(
            IceServer::to_json(&[stun, turn]).to_string(),
            r#"[{"urls":"stun:stun.example.org:3478"},{"credential":"s\"cret","urls":"turn:turn.example.org:3478?transport=udp","username":"shoal"}]"#
        );
        assert_eq!(IceServer::to_json(&[]).to_string(), "[]");
        for bad in ["stun.example.org", "http://stun.example.org", "stun:", "stun://x", "stun:a b", "stun:\"x"] {
            assert_eq!(IceServer::new(bad, None, None), Err(IceServerError::NotIceUrl(bad.to_owned())), "{bad}");
        }
        let e = IceServer::new("turns:turn.example.org", Some("u"), None).unwrap_err();
        assert_eq!(e.to_string(), "\"turns:turn.example.org\" is a TURN server: it needs a username and a credential");
    }

    #[test]
    fn a_binding_request_is_answered_with_the_senders_address() {
        let from: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let reply = stun_binding_reply(&request(&[]), from).unwrap();
        assert_eq!(&reply[..2], &[0x01, 0x01], "binding success");
        assert_eq!(&reply[8..20], b"0123456789ab", "same transaction");
        assert_eq!(&reply[20..24], &[0x00, 0x20, 0x00, 0x08], "XOR-MAPPED-ADDRESS");
        let port = u16::from_be_bytes([reply[26], reply[27]]) ^ 0x2112;
        let ip = u32::from_be_bytes([reply[28], reply[29], reply[30], reply[31]]) ^ STUN_MAGIC;
        assert_eq!(SocketAddr::new(IpAddr::V4(ip.into()), port), from);
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let reply = stun_binding_reply(&request(&[]), v6).unwrap();
        assert_eq!(reply.len(), 20 + 24);
        // Optional attributes (SOFTWARE 0x8022) are fine.
        assert!(stun_binding_reply(&request(&[0x80, 0x22, 0x00, 0x01, b'x', 0, 0, 0]), from).is_some());
    }

    #[test]
    fn anything_else_is_not_answered() {
        let from: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let mut not_request = request(&[]);
        not_request[1] = 0x11; // an indication
        let mut bad_magic = request(&[]);
        bad_magic[4] = 0;
        let mut bad_len = request(&[]);
        bad_len[3] = 8;
        // USERNAME (0x0006) is comprehension-required: a session's check, not ours.
        let with_username = request(&[0x00, 0x06, 0x00, 0x04, b'a', b'b', b'c', b'd']);
        for bad in [not_request, bad_magic, bad_len, with_username, vec![0u8; 10], vec![0u8; 600]] {
            assert_eq!(stun_binding_reply(&bad, from), None);
        }
    }
}
