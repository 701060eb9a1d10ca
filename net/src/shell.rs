//! The tokio shell around [`swarm::peer::Peer`]: one task owns the peer and the clock;
//! each TCP connection has a reader task (bytes → [`FrameDecoder`] → messages) and a
//! writer task (encoded frames → socket). The peer is asked for the next message only
//! while the bytes queued to all writers are under a budget (so it decides as late as
//! possible what is most worth sending, as in the simulator); a neighbour that lets
//! more than [`MAX_CONN_QUEUE`] pile up is stalled and is disconnected, and one that
//! sends more than [`MAX_MESSAGES_PER_SEC`] (after a burst) is flooding and is
//! disconnected too. Bytes from the
//! network never panic anything: a bad frame is `handle_malformed`, and the peer says
//! goodbye.
//!
//! The shell's owner talks to it through [`NodeHandle`]: candidates from the tracker,
//! pieces from ingest (seeds), leave; and receives [`Output`]s: pieces to play, pieces
//! accepted (a seeder's HLS), requests for more peers, stats.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::buf::Chain;
use bytes::{Buf, Bytes};
use swarm::peer::{Candidate, Event, Micros, NodeId, Peer, PeerConfig, PeerStats, Reject};

use httpkit::guard::{AddrGuard, GuardConfig, GuardStats};
use swarm::piece::Piece;
use swarm::wire::{FrameDecoder, Message, PeerId, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

/// Bytes queued to one neighbour beyond which it is treated as stalled and dropped.
pub const MAX_CONN_QUEUE: usize = 4 * 1024 * 1024;

/// Messages a second one connection may send, sustained; and the burst allowed above
/// it. An honest neighbour sends a few dozen (pieces, statuses, requests): more is a
/// flood, and the connection is dropped (`Goodbye(Flooding)`) before its messages can
/// pile up in front of everyone else's.
pub const MAX_MESSAGES_PER_SEC: u32 = 2_000;
pub const MESSAGE_BURST: u32 = 4_000;

/// A token bucket over one connection's messages.
#[derive(Debug)]
struct MessageBudget {
    tokens: f64,
    at: tokio::time::Instant,
}

impl MessageBudget {
    fn new() -> Self {
        MessageBudget { tokens: f64::from(MESSAGE_BURST), at: tokio::time::Instant::now() }
    }

    /// Adds the tokens earned since the last refill (once per read, not per message).
    fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * f64::from(MAX_MESSAGES_PER_SEC);
        self.tokens = (self.tokens + earned).min(f64::from(MESSAGE_BURST));
        self.at = now;
    }

    /// Takes a message's tokens; false once the connection has flooded.
    fn take(&mut self, m: &Message) -> bool {
        let cost = f64::from(message_cost(m));
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

/// Refusals of what peers sent logged per second at most: a hostile peer can make
/// many (each counted in the node's stats and metrics); the log gets a sample and, in
/// the next second that has one, how many were left out.
const REFUSALS_LOGGED_PER_SEC: u32 = 10;
/// Seed addresses remembered from the tracker's lists.
const MAX_SEED_IPS: usize = 64;

/// Log lines per second for one kind of line; the rest are counted.
#[derive(Debug, Default)]
struct LogLimit {
    second: u64,
    logged: u32,
    held_back: u64,
}

impl LogLimit {
    /// Whether a line may be logged at `now_us`, and how many were held back in the
    /// seconds before this one (reported once).
    fn admit(&mut self, now_us: Micros) -> (bool, u64) {
        let second = now_us / 1_000_000;
        let mut held = 0;
        if second != self.second {
            held = std::mem::take(&mut self.held_back);
            (self.second, self.logged) = (second, 0);
        }
        if self.logged < REFUSALS_LOGGED_PER_SEC {
            self.logged += 1;
            (true, held)
        } else {
            self.held_back += 1;
            (false, held)
        }
    }
}

/// Tokens a message takes from its connection's budget: one, and one more per 64
/// pieces a `HaveMap` claims (each claim is work for the receiver), so a stream of
/// 16-word maps floods at 1/17 of the rate of small messages.
fn message_cost(m: &Message) -> u32 {
    match m {
        Message::HaveMap { bits, .. } => 1 + bits.len() as u32,
        _ => 1,
    }
}

/// How long a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Wall-clock µs since the Unix epoch: the peers' and the pieces' time scale.
pub fn now_us() -> Micros {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as Micros)
}

/// A node the tracker listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub addr: SocketAddr,
    pub peer_id: PeerId,
    pub seed: bool,
}

/// What the owner tells the shell.
#[derive(Debug)]
pub enum Input {
    Candidates(Vec<Listed>),
    /// The channel's audience as the tracker counts it (seeds size their push slots
    /// by it).
    Audience {
        viewers: u32,
        seeds: u32,
    },
    /// A piece from ingest (seeds).
    Origin(Piece),
    /// A page's data channel ([`crate::rtc`]): an inbound neighbour like a TCP one.
    Page(crate::rtc::PageStream),
    /// Say goodbye to everyone and stop.
    Leave,
}

/// What the shell tells its owner.
#[derive(Debug, Clone)]
pub enum Output {
    /// Play this piece now (viewers; in order, at its deadline).
    Play(Piece),
    /// This piece missed its deadline.
    Skipped(u64),
    /// A piece passed verification and entered the window.
    Accepted(Piece),
    /// Fewer neighbours than wanted: announce for more.
    WantPeers,
}

/// Counters the owner can read at any time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub stats: PeerStats,
    pub neighbours: usize,
    /// Push subscriptions accepted in all, and held now.
    pub push_slots: u32,
    pub push_children: u32,
    pub newest: Option<u64>,
    pub bytes_sent: u64,
    /// Bytes read from neighbours, and (seeds) pieces from ingest.
    pub bytes_received: u64,
    /// Neighbours dropped because they stopped reading (their queue filled).
    pub stalled_dropped: u64,
    /// Addresses banned, and inbound connections refused (banned, over a cap).
    pub guard: GuardStats,
}

/// The owner's side of a running shell.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    pub listen: SocketAddr,
    inputs: mpsc::Sender<Input>,
    snapshot: watch::Receiver<Snapshot>,
}

impl NodeHandle {
    pub async fn send(&self, input: Input) -> bool {
        self.inputs.send(input).await.is_ok()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }
}

/// A connection's byte stream.
enum Transport {
    Tcp(TcpStream),
    Page(tokio::io::DuplexStream),
}

enum Internal {
    Inbound(Transport, SocketAddr),
    Dialed(NodeId, std::io::Result<TcpStream>),
    Msg(NodeId, Message),
    Bad(NodeId, WireError),
    Flood(NodeId),
    Closed(NodeId),
}

/// A frame on its way to a socket: its head and, for a piece, the piece's wire form.
type Frame = Chain<Bytes, Bytes>;

struct Conn {
    /// Frames with the time they may leave.
    tx: mpsc::UnboundedSender<(tokio::time::Instant, Frame)>,
    queued: Arc<AtomicUsize>,
    reader: tokio::task::AbortHandle,
}

/// Benchmark knobs of a shell.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellOptions {
    /// Every message leaves this long after it is queued: a link's one-way delay,
    /// emulated on loopback (`shoal bench swarm`). Zero in production.
    pub link_delay: Duration,
    /// Bytes queued to one neighbour beyond which it is dropped as stalled
    /// ([`MAX_CONN_QUEUE`] when zero).
    pub max_conn_queue: usize,
    /// The kernel's send buffer per connection, bytes (zero: the OS default, which
    /// Linux grows to megabytes: a neighbour that stops reading is noticed only once
    /// that is full).
    pub send_buffer: u32,
    /// Bans and inbound caps.
    pub guard: GuardConfig,
}

/// The peer listener; connections accepted from it inherit its send buffer size.
fn listen_socket(addr: SocketAddr, send_buffer: u32) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    if send_buffer > 0 {
        sock.set_send_buffer_size(send_buffer)?;
    }
    sock.bind(addr)?;
    sock.listen(1024)
}

/// Starts a shell for `cfg` listening on `listen` (port 0: any free port); outputs go
/// to `outputs` (dropped if the owner is slow, except `Play`, which waits).
pub async fn spawn(cfg: PeerConfig, listen: SocketAddr, outputs: mpsc::Sender<Output>) -> std::io::Result<NodeHandle> {
    spawn_with(cfg, listen, outputs, ShellOptions::default()).await
}

/// [`spawn`] with benchmark knobs.
pub async fn spawn_with(
    cfg: PeerConfig,
    listen: SocketAddr,
    outputs: mpsc::Sender<Output>,
    opts: ShellOptions,
) -> std::io::Result<NodeHandle> {
    let peer = Peer::new(cfg.clone(), now_us())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let listener = listen_socket(listen, opts.send_buffer)?;
    let addr = listener.local_addr()?;
    let (in_tx, in_rx) = mpsc::channel(256);
    let (int_tx, int_rx) = mpsc::unbounded_channel();
    let (snap_tx, snap_rx) = watch::channel(Snapshot::default());
    let accept_tx = int_tx.clone();
    tokio::spawn(async move {
        loop {
            let (s, from) = httpkit::accept(&listener, "peer listener", None).await;
            if accept_tx.send(Internal::Inbound(Transport::Tcp(s), from)).is_err() {
                return;
            }
        }
    });
    // Whole-node budget of bytes handed to writers but not yet written: about 100 ms
    // of the configured upload, at least 256 KiB.
    let budget = ((u64::from(cfg.upload_kbps) * 1000 / 8 / 10) as usize).max(256 * 1024);
    let shell = Shell {
        peer,
        conns: HashMap::new(),
        node_addr: HashMap::new(),
        addr_node: HashMap::new(),
        next_node: 1,
        queued: Arc::new(AtomicUsize::new(0)),
        written: Arc::new(Notify::new()),
        budget,
        internal: int_tx,
        outputs,
        snapshot: snap_tx,
        bytes_sent: 0,
        bytes_received: Arc::new(AtomicUsize::new(0)),
        link_delay: opts.link_delay,
        max_conn_queue: if opts.max_conn_queue == 0 { MAX_CONN_QUEUE } else { opts.max_conn_queue },
        send_buffer: opts.send_buffer,
        stalled_dropped: 0,
        refusals_logged: LogLimit::default(),
        skips_logged: LogLimit::default(),
        last_skipped: None,
        guard: AddrGuard::new(opts.guard),
        inbound_ip: HashMap::new(),
        seed_ips: HashSet::new(),
    };
    tokio::spawn(shell.run(in_rx, int_rx));
    Ok(NodeHandle { listen: addr, inputs: in_tx, snapshot: snap_rx })
}

struct Shell {
    peer: Peer,
    conns: HashMap<NodeId, Conn>,
    node_addr: HashMap<NodeId, SocketAddr>,
    addr_node: HashMap<SocketAddr, NodeId>,
    next_node: u64,
    queued: Arc<AtomicUsize>,
    written: Arc<Notify>,
    budget: usize,
    internal: mpsc::UnboundedSender<Internal>,
    outputs: mpsc::Sender<Output>,
    snapshot: watch::Sender<Snapshot>,
    bytes_sent: u64,
    bytes_received: Arc<AtomicUsize>,
    link_delay: Duration,
    max_conn_queue: usize,
    send_buffer: u32,
    stalled_dropped: u64,
    refusals_logged: LogLimit,
    /// Skipped pieces explained in the log (the first of each run of them).
    skips_logged: LogLimit,
    last_skipped: Option<u64>,
    guard: AddrGuard,
    /// Inbound connections' addresses, counted in `guard` while open.
    inbound_ip: HashMap<NodeId, IpAddr>,
    /// Addresses of the seeds the tracker listed (a handful): an inbound connection from
    /// one is a seed dialling us, whose claim to be one counts.
    seed_ips: HashSet<IpAddr>,
}

impl Shell {
    async fn run(mut self, mut inputs: mpsc::Receiver<Input>, mut internal: mpsc::UnboundedReceiver<Internal>) {
        let mut snapshot_at = now_us();
        loop {
            if !self.drain().await {
                return;
            }
            let now = now_us();
            if now >= snapshot_at {
                snapshot_at = now + 250_000;
                self.publish_snapshot();
            }
            let wake = self.peer.poll_timeout().unwrap_or(now + 1_000_000).min(snapshot_at);
            let sleep = tokio::time::sleep(Duration::from_micros(wake.saturating_sub(now)));
            let can_send = self.peer.wants_to_transmit();
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(Input::Candidates(c)) => self.candidates(&c),
                    Some(Input::Audience { viewers, seeds }) => self.peer.handle_audience(now_us(), viewers, seeds),
                    Some(Input::Origin(p)) => {
                        // A seed's intake is the stream: its `downloaded`, the rate the
                        // tracker sets viewers' bytes against.
                        self.bytes_received.fetch_add(p.wire().len(), Ordering::Relaxed);
                        if let Err(e) = self.peer.handle_origin_piece(now_us(), p) {
                            tracing::error!(error = %e, "a piece from ingest failed verification");
                        }
                    }
                    Some(Input::Page(p)) => self.internal(Internal::Inbound(Transport::Page(p.stream), p.remote)),
                    Some(Input::Leave) | None => {
                        self.peer.leave();
                        self.drain().await;
                        self.conns.clear();
                        return;
                    }
                },
                Some(msg) = internal.recv() => self.internal(msg),
                _ = sleep => self.peer.handle_timeout(now_us()),
                _ = self.written.notified(), if can_send => {}
            }
        }
    }

    /// Hands the peer's events to the owner and its messages to the writers, until it
    /// has nothing more or the budget is spent. False when the owner is gone.
    async fn drain(&mut self) -> bool {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.peer.poll_event() {
                progressed = true;
                if !self.event(ev).await {
                    return false;
                }
            }
            while self.queued.load(Ordering::Relaxed) < self.budget {
                let Some(t) = self.peer.poll_transmit(now_us()) else { break };
                progressed = true;
                self.transmit(t.to, &t.msg);
            }
            if !progressed {
                return true;
            }
        }
    }

    async fn event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Connect(node) => self.dial(node),
            Event::Disconnect(node, _) => self.close(node),
            Event::WantPeers => {
                let _ = self.outputs.try_send(Output::WantPeers);
            }
            Event::Accepted { piece, .. } => {
                let _ = self.outputs.try_send(Output::Accepted(piece));
            }
            Event::Play(piece) => return self.outputs.send(Output::Play(piece)).await.is_ok(),
            Event::Skipped { seq } => {
                // A gap the player will show: why, for the operator, once per run of
                // skipped pieces (the neighbours' state explains the whole run).
                let now = now_us();
                if self.last_skipped.is_none_or(|last| seq != last + 1) {
                    // `held_back`: runs of skips left unexplained in the seconds before
                    // (over the limit a second), so the log still tells how many there were.
                    let (log, held_back) = self.skips_logged.admit(now);
                    if log {
                        tracing::warn!(held_back, why = %self.peer.explain_missing(now, seq), "piece skipped: missed its deadline");
                    }
                }
                self.last_skipped = Some(seq);
                let _ = self.outputs.try_send(Output::Skipped(seq));
            }
            Event::Rejected { from, reason } => {
                // A forger or a flooder is kept out by address, not only by the peer id
                // it chose (it could reconnect at once under another).
                if matches!(reason, Reject::Forged | Reject::Flooding)
                    && let Some(addr) = self.node_addr.get(&from)
                {
                    tracing::info!(%addr, ?reason, "peer address banned");
                    self.guard.ban(addr.ip(), now_us());
                }
                let (log, held_back) = self.refusals_logged.admit(now_us());
                if held_back > 0 {
                    tracing::info!(
                        held_back,
                        "refusals of what peers sent not logged (over {REFUSALS_LOGGED_PER_SEC}/s)"
                    );
                }
                if log {
                    tracing::info!(node = from.0, addr = ?self.node_addr.get(&from), ?reason, "refused what a peer sent");
                }
            }
            Event::PlaybackStarted { seq } => tracing::info!(seq, "playback started"),
            Event::Jumped { from, to } => {
                tracing::info!(?from, to, "the channel's sequence numbers jumped (ingest restarted?): following")
            }
            _ => {}
        }
        true
    }

    fn transmit(&mut self, to: NodeId, msg: &Message) {
        let Some(c) = self.conns.get(&to) else { return };
        // A piece goes out as its own shared buffer behind a 5-byte frame head.
        let frame = msg.to_frame();
        let len = frame.remaining();
        if c.queued.load(Ordering::Relaxed) + len > self.max_conn_queue {
            tracing::info!(node = to.0, addr = ?self.node_addr.get(&to), "neighbour stalled (its queue is full): disconnected");
            self.stalled_dropped += 1;
            self.close(to);
            self.peer.handle_disconnected(now_us(), to);
            return;
        }
        c.queued.fetch_add(len, Ordering::Relaxed);
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.bytes_sent += len as u64;
        let _ = c.tx.send((tokio::time::Instant::now() + self.link_delay, frame));
    }

    fn candidates(&mut self, listed: &[Listed]) {
        let mut cands = Vec::with_capacity(listed.len());
        let now = now_us();
        for l in listed.iter().filter(|l| !self.guard.banned(l.addr.ip(), now)) {
            let node = match self.addr_node.get(&l.addr) {
                Some(n) => *n,
                None => {
                    let n = NodeId(self.next_node);
                    self.next_node += 1;
                    self.addr_node.insert(l.addr, n);
                    self.node_addr.insert(n, l.addr);
                    n
                }
            };
            if l.seed && self.seed_ips.len() < MAX_SEED_IPS {
                self.seed_ips.insert(l.addr.ip());
            }
            cands.push(Candidate { node, peer_id: l.peer_id, seed: l.seed });
        }
        // A seed may have dialled us before the tracker told us it is one.
        for (&node, ip) in &self.inbound_ip {
            if self.seed_ips.contains(ip) {
                self.peer.handle_listed_seed(node);
            }
        }
        self.peer.handle_candidates(now_us(), &cands);
    }

    fn dial(&mut self, node: NodeId) {
        let send_buffer = self.send_buffer;
        let Some(addr) = self.node_addr.get(&node).copied() else {
            self.peer.handle_connect_failed(now_us(), node);
            return;
        };
        let tx = self.internal.clone();
        tokio::spawn(async move {
            let connect = async {
                let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
                if send_buffer > 0 {
                    sock.set_send_buffer_size(send_buffer)?;
                }
                sock.connect(addr).await
            };
            let r = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
            };
            let _ = tx.send(Internal::Dialed(node, r));
        });
    }

    fn internal(&mut self, msg: Internal) {
        let now = now_us();
        match msg {
            Internal::Inbound(stream, from) => {
                if let Err(why) = self.guard.admit(from.ip(), now) {
                    tracing::debug!(%from, ?why, "inbound peer connection refused");
                    return; // dropped: closed at once
                }
                let node = NodeId(self.next_node);
                self.inbound_ip.insert(node, from.ip());
                self.next_node += 1;
                self.node_addr.insert(node, from);
                self.attach(node, stream);
                self.peer.handle_connected(now, node, false);
                if let Some(network) = httpkit::guard::network(from.ip()) {
                    self.peer.handle_network(node, network);
                }
                if self.seed_ips.contains(&from.ip()) {
                    self.peer.handle_listed_seed(node);
                }
            }
            Internal::Dialed(node, Ok(stream)) => {
                self.attach(node, Transport::Tcp(stream));
                self.peer.handle_connected(now, node, true);
                if let Some(network) = self.node_addr.get(&node).and_then(|a| httpkit::guard::network(a.ip())) {
                    self.peer.handle_network(node, network);
                }
            }
            Internal::Dialed(node, Err(e)) => {
                tracing::debug!(node = node.0, error = %e, "could not connect to a peer");
                self.peer.handle_connect_failed(now, node);
            }
            Internal::Msg(node, m) => {
                if self.conns.contains_key(&node) {
                    self.peer.handle_message(now, node, m);
                }
            }
            Internal::Bad(node, e) => {
                if self.conns.contains_key(&node) {
                    tracing::info!(node = node.0, error = %e, "malformed bytes from a peer");
                    self.peer.handle_malformed(now, node, e);
                }
            }
            Internal::Flood(node) => {
                if self.conns.contains_key(&node) {
                    tracing::info!(node = node.0, addr = ?self.node_addr.get(&node), "a peer flooded us with messages: disconnected");
                    self.peer.handle_flood(now, node);
                }
            }
            Internal::Closed(node) => {
                if self.conns.remove(&node).is_some() {
                    self.forget_inbound(node);
                    self.peer.handle_disconnected(now, node);
                }
            }
        }
    }

    /// Starts a connection's reader and writer tasks.
    fn attach(&mut self, node: NodeId, stream: Transport) {
        match stream {
            Transport::Tcp(s) => {
                let _ = s.set_nodelay(true);
                let (rd, wr) = s.into_split();
                self.attach_halves(node, rd, wr);
            }
            Transport::Page(s) => {
                let (rd, wr) = tokio::io::split(s);
                self.attach_halves(node, rd, wr);
            }
        }
    }

    fn attach_halves<R, W>(&mut self, node: NodeId, mut rd: R, mut wr: W)
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Frame)>();
        let queued = Arc::new(AtomicUsize::new(0));
        let (conn_queued, total, written) = (queued.clone(), self.queued.clone(), self.written.clone());
        tokio::spawn(async move {
            while let Some((at, mut frame)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                let len = frame.remaining();
                let ok = wr.write_all_buf(&mut frame).await.is_ok();
                conn_queued.fetch_sub(len, Ordering::Relaxed);
                total.fetch_sub(len, Ordering::Relaxed);
                written.notify_one();
                if !ok {
                    break;
                }
            }
            // Anything still queued is given back to the budget.
            while let Ok((_, frame)) = rx.try_recv() {
                conn_queued.fetch_sub(frame.remaining(), Ordering::Relaxed);
                total.fetch_sub(frame.remaining(), Ordering::Relaxed);
            }
            written.notify_one();
            let _ = wr.shutdown().await;
        });
        let (itx, received) = (self.internal.clone(), self.bytes_received.clone());
        let reader = tokio::spawn(async move {
            let mut dec = FrameDecoder::new();
            let mut budget = MessageBudget::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                received.fetch_add(n, Ordering::Relaxed);
                budget.refill();
                dec.extend(&buf[..n]);
                loop {
                    match dec.next_message() {
                        Ok(Some(m)) => {
                            if !budget.take(&m) {
                                // Stop reading: what it sends next is not even decoded.
                                let _ = itx.send(Internal::Flood(node));
                                return;
                            }
                            if itx.send(Internal::Msg(node, m)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = itx.send(Internal::Bad(node, e));
                            let _ = itx.send(Internal::Closed(node));
                            return;
                        }
                    }
                }
            }
            let _ = itx.send(Internal::Closed(node));
        });
        self.conns.insert(node, Conn { tx, queued, reader: reader.abort_handle() });
    }

    /// Closes a connection: the writer sends what is queued (a goodbye) and shuts down.
    fn close(&mut self, node: NodeId) {
        if let Some(c) = self.conns.remove(&node) {
            c.reader.abort();
        }
        self.forget_inbound(node);
    }

    /// Inbound nodes are named per connection: forget their address once gone (and
    /// count the connection out of its address's cap).
    fn forget_inbound(&mut self, node: NodeId) {
        if let Some(ip) = self.inbound_ip.remove(&node) {
            self.guard.release(ip);
        }
        if let Some(addr) = self.node_addr.get(&node)
            && self.addr_node.get(addr) != Some(&node)
        {
            self.node_addr.remove(&node);
        }
    }

    fn publish_snapshot(&self) {
        let (push_slots, push_children) = self.peer.push_slots();
        let snap = Snapshot {
            stats: self.peer.stats().clone(),
            neighbours: self.peer.n_neighbours(),
            push_slots,
            push_children,
            newest: self.peer.newest(),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received.load(Ordering::Relaxed) as u64,
            stalled_dropped: self.stalled_dropped,
            guard: self.guard.stats,
        };
        let _ = self.snapshot.send(snap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_logs_are_a_sample_per_second_and_a_count_of_the_rest() {
        let mut limit = LogLimit::default();
        let t = 1_000_000_000 * 1_000_000;
        let first: Vec<(bool, u64)> = (0..1_000).map(|i| limit.admit(t + i)).collect();
        assert_eq!(first.iter().filter(|(log, _)| *log).count(), REFUSALS_LOGGED_PER_SEC as usize);
        assert!(first.iter().all(|(_, held)| *held == 0));
        // The next second: logged again, and the 990 left out are reported once.
        assert_eq!(limit.admit(t + 1_000_000), (true, 990));
        assert_eq!(limit.admit(t + 1_000_001), (true, 0));
    }
}
