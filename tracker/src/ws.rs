//! The WebTorrent tracker protocol, for peers in web pages: a WebSocket on the
//! tracker's port (`GET /announce` with `Upgrade: websocket`), JSON text messages, as
//! the npm `bittorrent-tracker` client and p2p-media-loader speak it. A page announces
//! a channel's info-hash with WebRTC offers; the tracker hands each offer to another
//! page in that channel and relays the answer back, so two pages can open a data
//! channel. Nothing else passes through the tracker.
//!
//! Everything a page sends is hostile until checked: a message is text of at most
//! [`MAX_MESSAGE`] bytes, an announce names a channel open now (the same admission as
//! `/announce`), one connection holds one peer id in at most [`MAX_SWARMS_PER_CONN`]
//! channels, offers come at most [`MAX_OFFERS`] an announce and within a budget of
//! [`OFFER_BURST`] at once and [`OFFERS_PER_SECOND`] a second, and answers go only to
//! a peer of the same channel. A breach closes the connection with a close code and a
//! reason a developer can act on (and is counted); a slow page loses the messages it
//! could not take, not the relay's time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use catalogue::directory::{Admission, ChannelDirectory};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde_json::{Map, Value, json};
use swarm::announce::{Announce, Event, Role};
use swarm::bencode::latin1;
use tokio::sync::mpsc;

/// Largest message a page may send (a WebRTC offer is 2–6 KB of SDP).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most offers in one announce (the `bittorrent-tracker` client sends up to 10).
pub const MAX_OFFERS: usize = 10;
/// Offers a connection may send at once, and then per second.
pub const OFFER_BURST: f64 = 50.0;
pub const OFFERS_PER_SECOND: f64 = 1.0;
/// Offers to seeders one address may send at once, and then per second (a seeder holds
/// a WebRTC session for each until it opens or 15 s pass).
pub const SEED_OFFER_BURST: f64 = 32.0;
pub const SEED_OFFERS_PER_SECOND: f64 = 1.0;
/// Channels one connection may be in at once.
pub const MAX_SWARMS_PER_CONN: usize = 4;
/// Messages queued for a page before more are dropped (it reads too slowly).
pub const QUEUE: usize = 64;
/// How often a page should announce again, seconds.
pub const INTERVAL_S: u64 = 120;
/// Pages connected at once; past it an upgrade is answered 503 (each holds a socket
/// and a task for as long as it watches).
pub const MAX_CONNECTIONS: usize = 20_000;
/// Pages connected at once from one address: generous (a school or an office shows
/// one address for many viewers), but one host cannot take the relay.
pub const MAX_PER_ADDRESS: u32 = 256;

/// Why a connection is closed: the WebSocket close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// 1003 unsupported data, 1008 policy violation, 1009 too big.
    pub code: u16,
    pub reason: String,
    /// The `result` label it is counted under.
    pub label: &'static str,
}

impl Close {
    fn policy(label: &'static str, reason: impl Into<String>) -> Self {
        Close { code: 1008, reason: reason.into(), label }
    }

    /// A message over [`MAX_MESSAGE`].
    pub fn too_big() -> Self {
        Close { code: 1009, reason: format!("message over {MAX_MESSAGE} bytes"), label: "oversize" }
    }

    /// A binary message.
    pub fn binary() -> Self {
        Close { code: 1003, reason: "binary messages are not spoken here: send JSON text".into(), label: "binary" }
    }
}

/// A page's connection, as the relay knows it.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    /// What goes out to the page.
    tx: mpsc::Sender<String>,
    /// (info-hash, peer id) it announced.
    joined: Vec<([u8; 20], [u8; 20])>,
    offer_tokens: f64,
    refilled: Instant,
    /// A seeder (its token checked at the upgrade): pages' offers that ask for a seed
    /// come to it.
    seed: bool,
    /// What the last announce said of the page's watching, for the caller to meter
    /// ([`Relay::take_usage`]).
    usage: Option<Announce>,
}

/// Pages by channel (info-hash), by peer id.
type Swarms = HashMap<[u8; 20], HashMap<[u8; 20], Member>>;

#[derive(Debug)]
struct Member {
    conn: u64,
    tx: mpsc::Sender<String>,
    seed: bool,
}

/// Pages by channel, and the relay's counters.
#[derive(Debug)]
pub struct Relay {
    swarms: Mutex<Swarms>,
    /// Connections reserved (upgrades answered), in all and by address.
    slots: Mutex<(usize, HashMap<IpAddr, u32>)>,
    next_conn: std::sync::atomic::AtomicU64,
    /// Which seed the next page that asks for one gets (in turn).
    seed_turn: std::sync::atomic::AtomicU64,
    /// Offers to seeders by address: (tokens, last refill).
    seed_offers: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    /// result: announce, offer, answer, stopped, refused, unknown_channel, malformed,
    /// oversize, binary, over_budget, no_peer, dropped_slow, full.
    pub messages: IntCounterVec,
    pub connections: IntGauge,
}

impl Relay {
    pub fn new(registry: &Registry) -> Self {
        let messages = IntCounterVec::new(
            Opts::new("shoal_tracker_ws_messages_total", "WebSocket tracker messages, by what became of them"),
            &["result"],
        )
        .expect("a valid metric");
        let connections = IntGauge::new("shoal_tracker_ws_connections", "Pages connected to the WebSocket tracker")
            .expect("a valid metric");
        for m in [Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>, Box::new(connections.clone())] {
            if let Err(e) = registry.register(m) {
                tracing::warn!(error = %e, "WebSocket tracker metric not registered");
            }
        }
        Relay {
            swarms: Mutex::default(),
            slots: Mutex::default(),
            next_conn: 0.into(),
            seed_turn: 0.into(),
            seed_offers: Mutex::default(),
            messages,
            connections,
        }
    }

    /// Takes a connection slot for a page at `ip`, or says why there is none (counted
    /// as `full`). Every slot taken is given back with [`Relay::release`].
    pub fn reserve(&self, ip: IpAddr) -> Result<(), String> {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let from_ip = slots.1.get(&ip).copied().unwrap_or(0);
        let refused = if slots.0 >= MAX_CONNECTIONS {
            Some(format!("the WebSocket tracker holds {MAX_CONNECTIONS} pages already"))
        } else if from_ip >= MAX_PER_ADDRESS {
            Some(format!("{MAX_PER_ADDRESS} pages from this address already"))
        } else {
            None
        };
        if let Some(why) = refused {
            self.count("full");
            return Err(why);
        }
        slots.0 += 1;
        slots.1.insert(ip, from_ip + 1);
        Ok(())
    }

    /// Gives back a slot [`Relay::reserve`] took.
    pub fn release(&self, ip: IpAddr) {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.0 = slots.0.saturating_sub(1);
        if let Some(n) = slots.1.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                slots.1.remove(&ip);
            }
        }
    }

    /// A new connection whose outgoing messages go to `tx`.
    /// `seed`: a seeder whose token was checked.
    pub fn connect(&self, tx: mpsc::Sender<String>, now: Instant, seed: bool) -> Conn {
        self.connections.inc();
        let id = self.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Conn { id, tx, joined: Vec::new(), offer_tokens: OFFER_BURST, refilled: now, seed, usage: None }
    }

    /// Takes one of `ip`'s offers to seeders, if it has one left.
    fn seed_offer(&self, ip: IpAddr, now: Instant) -> bool {
        let mut m = self.seed_offers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() >= MAX_CONNECTIONS {
            // Addresses whose budget has refilled need no entry.
            let full = SEED_OFFER_BURST / SEED_OFFERS_PER_SECOND;
            m.retain(|_, (_, at)| now.saturating_duration_since(*at).as_secs_f64() < full);
        }
        let (tokens, at) = m.entry(ip).or_insert((SEED_OFFER_BURST, now));
        *tokens =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * SEED_OFFERS_PER_SECOND).min(SEED_OFFER_BURST);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    /// The page's watching as its last announce said it (Shoal's `watched` and
    /// `ad_watched` fields: seconds in the current UTC hour, as a native viewer's HTTP
    /// announce carries them), as an announce for the swarm store: a viewer that cannot
    /// be dialled (never listed to native peers), metered like one.
    pub fn take_usage(conn: &mut Conn) -> Option<Announce> {
        conn.usage.take()
    }

    /// The connection is gone: it leaves every channel it was in.
    pub fn disconnect(&self, conn: Conn) {
        self.connections.dec();
        let mut swarms = self.lock();
        for (hash, peer) in &conn.joined {
            remove(&mut swarms, hash, peer, conn.id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Swarms> {
        self.swarms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn count(&self, result: &str) {
        self.messages.with_label_values(&[result]).inc();
    }

    /// Sends `msg` to a page, or drops it (counted) if the page is not reading.
    fn send(&self, tx: &mpsc::Sender<String>, msg: &Value) {
        if tx.try_send(msg.to_string()).is_err() {
            self.count("dropped_slow");
        }
    }

    /// One text message from `conn`. `Err`: close the connection so.
    pub fn on_text(
        &self,
        directory: &dyn ChannelDirectory,
        conn: &mut Conn,
        text: &str,
        ip: IpAddr,
        now: Instant,
        now_unix: u64,
    ) -> Result<(), Close> {
        let result = self.handle(directory, conn, text, ip, now, now_unix);
        if let Err(c) = &result {
            self.count(c.label);
            tracing::debug!(%ip, code = c.code, reason = %c.reason, "WebSocket tracker connection closed");
        }
        result
    }

    fn handle(
        &self,
        directory: &dyn ChannelDirectory,
        conn: &mut Conn,
        text: &str,
        ip: IpAddr,
        now: Instant,
        now_unix: u64,
    ) -> Result<(), Close> {
        if text.len() > MAX_MESSAGE {
            return Err(Close::too_big());
        }
        let malformed = |why: &str| Close::policy("malformed", format!("malformed message: {why}"));
        let msg: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(malformed("not a JSON object")),
            Err(_) => return Err(malformed("not JSON")),
        };
        match msg.get("action").and_then(Value::as_str) {
            Some("announce") => {}
            Some("scrape") => return Err(Close::policy("malformed", "scrape is not served on the WebSocket")),
            _ => return Err(malformed("action must be \"announce\"")),
        }
        let info_hash = binary20(msg.get("info_hash")).ok_or_else(|| malformed("info_hash must be 20 bytes"))?;
        let peer_id = binary20(msg.get("peer_id")).ok_or_else(|| malformed("peer_id must be 20 bytes"))?;
        let hash_text = Value::String(latin1(&info_hash));
        match directory.admit(&info_hash, now_unix) {
            Admission::Open { .. } => {}
            Admission::Unknown => {
                self.count("unknown_channel");
                let failure = "unknown channel: no channel has this info_hash";
                self.send(&conn.tx, &json!({"action": "announce", "info_hash": hash_text, "failure reason": failure}));
                return Ok(());
            }
            Admission::Refused { reason, .. } => {
                self.count("refused");
                self.send(&conn.tx, &json!({"action": "announce", "info_hash": hash_text, "failure reason": reason}));
                return Ok(());
            }
        }
        let sender = Value::String(latin1(&peer_id));
        // An answer to an offer: to the page that made it, if it is in this channel.
        if let Some(answer) = msg.get("answer") {
            let to = binary20(msg.get("to_peer_id")).ok_or_else(|| malformed("to_peer_id must be 20 bytes"))?;
            let offer_id = msg.get("offer_id").filter(|v| binary20(Some(v)).is_some());
            let offer_id = offer_id.ok_or_else(|| malformed("offer_id must be 20 bytes"))?;
            if !conn.joined.contains(&(info_hash, peer_id)) {
                return Err(Close::policy("malformed", "answer before announcing in that channel"));
            }
            let out = json!({"action": "announce", "info_hash": hash_text, "peer_id": sender,
                "answer": answer, "offer_id": offer_id});
            match self.lock().get(&info_hash).and_then(|s| s.get(&to)) {
                Some(m) => {
                    self.count("answer");
                    self.send(&m.tx, &out);
                }
                None => self.count("no_peer"),
            }
            return Ok(());
        }
        let stopped = msg.get("event").and_then(Value::as_str) == Some("stopped");
        if let Some(w) = msg.get("watched").and_then(Value::as_u64).filter(|_| !conn.seed) {
            conn.usage = Some(Announce {
                info_hash,
                peer_id,
                port: 0,
                // Bytes sent and taken in since the page joined (pieces from peers
                // and seeds, and over HTTP): set against its watching at the roll-up.
                uploaded: msg.get("uploaded").and_then(Value::as_u64).unwrap_or(0),
                downloaded: msg.get("downloaded").and_then(Value::as_u64).unwrap_or(0),
                left: 0,
                event: if stopped { Event::Stopped } else { Event::None },
                compact: true,
                want_keys: false,
                numwant: 0,
                role: Role::Viewer,
                reachable: false,
                free_slots: 0,
                watched_s: Some(w),
                ad_watched_s: msg.get("ad_watched").and_then(Value::as_u64),
                watched_prev_s: msg.get("watched_prev").and_then(Value::as_u64),
                ad_watched_prev_s: msg.get("ad_watched_prev").and_then(Value::as_u64),
                token: None,
            });
        }
        let offers = match msg.get("offers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.len() <= MAX_OFFERS => a.clone(),
            Some(Value::Array(a)) => {
                return Err(Close::policy(
                    "over_budget",
                    format!("{} offers in one announce, at most {MAX_OFFERS}", a.len()),
                ));
            }
            Some(_) => return Err(malformed("offers must be an array")),
        };
        for o in &offers {
            if o.get("offer").is_none() || binary20(o.get("offer_id")).is_none() {
                return Err(malformed("each offer needs offer and a 20-byte offer_id"));
            }
        }
        let elapsed = now.saturating_duration_since(conn.refilled).as_secs_f64();
        conn.refilled = now;
        conn.offer_tokens = (conn.offer_tokens + elapsed * OFFERS_PER_SECOND).min(OFFER_BURST);
        if offers.len() as f64 > conn.offer_tokens {
            return Err(Close::policy(
                "over_budget",
                format!("offer budget spent: {OFFER_BURST} at once, then {OFFERS_PER_SECOND} a second"),
            ));
        }
        conn.offer_tokens -= offers.len() as f64;
        let mut swarms = self.lock();
        if stopped {
            self.count("stopped");
            remove(&mut swarms, &info_hash, &peer_id, conn.id);
            conn.joined.retain(|j| *j != (info_hash, peer_id));
            return Ok(());
        }
        if !conn.joined.contains(&(info_hash, peer_id)) {
            if conn.joined.iter().any(|(h, _)| *h == info_hash) {
                return Err(Close::policy("malformed", "a second peer_id in one channel on one connection"));
            }
            if conn.joined.len() >= MAX_SWARMS_PER_CONN {
                return Err(Close::policy("over_budget", format!("in {MAX_SWARMS_PER_CONN} channels already")));
            }
            let swarm = swarms.entry(info_hash).or_default();
            if swarm.get(&peer_id).is_some_and(|m| m.conn != conn.id) {
                return Err(Close::policy("malformed", "peer_id in use by another connection"));
            }
            swarm.insert(peer_id, Member { conn: conn.id, tx: conn.tx.clone(), seed: conn.seed });
            conn.joined.push((info_hash, peer_id));
        }
        self.count("announce");
        let members = swarms.get(&info_hash);
        let seeds = members.map_or(0, |s| s.values().filter(|m| m.seed).count());
        let pages = members.map_or(0, |s| s.len()) - seeds;
        // Each offer to another member of the channel, none twice (the order of a hash
        // map is as good as a shuffle here: the tracker's seed differs per process). A
        // page that asks for a seed (`want_seed`, Shoal's field) sends its first offer to
        // one, taken in turn; other offers go to pages, then to seeds if pages run out.
        let others: Vec<&Member> =
            members.into_iter().flatten().filter(|(id, _)| **id != peer_id).map(|(_, m)| m).collect();
        let mut order: Vec<&Member> = Vec::with_capacity(others.len());
        let seed_list: Vec<&Member> = others.iter().copied().filter(|m| m.seed).collect();
        let want_seed = msg.get("want_seed").and_then(Value::as_bool) == Some(true);
        let first_seed = (want_seed && !seed_list.is_empty())
            .then(|| self.seed_turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as usize % seed_list.len());
        if let Some(i) = first_seed {
            order.push(seed_list[i]);
        }
        order.extend(others.iter().copied().filter(|m| !m.seed));
        order.extend(seed_list.iter().enumerate().filter(|(i, _)| Some(*i) != first_seed).map(|(_, m)| *m));
        // An offer to a seeder takes one of its few WebRTC sessions until it opens or
        // times out: one address gets SEED_OFFER_BURST of them, then
        // SEED_OFFERS_PER_SECOND; past that its offers go to pages only.
        let mut takers: Vec<&Member> = Vec::with_capacity(offers.len());
        for m in order {
            if takers.len() == offers.len() {
                break;
            }
            if m.seed && !self.seed_offer(ip, now) {
                self.count("seed_limited");
                continue;
            }
            takers.push(m);
        }
        for (member, offer) in takers.into_iter().zip(&offers) {
            self.count("offer");
            let out = json!({"action": "announce", "info_hash": hash_text, "peer_id": sender,
                "offer": offer["offer"], "offer_id": offer["offer_id"]});
            self.send(&member.tx, &out);
        }
        drop(swarms);
        self.send(
            &conn.tx,
            &json!({"action": "announce", "info_hash": hash_text, "interval": INTERVAL_S,
                "complete": seeds, "incomplete": pages}),
        );
        Ok(())
    }
}

fn remove(swarms: &mut Swarms, hash: &[u8; 20], peer: &[u8; 20], conn: u64) {
    if let Some(s) = swarms.get_mut(hash) {
        if s.get(peer).is_some_and(|m| m.conn == conn) {
            s.remove(peer);
        }
        if s.is_empty() {
            swarms.remove(hash);
        }
    }
}

/// 20 bytes from a WebTorrent "binary string" (each character one byte, U+0000–U+00FF)
/// or from 40 hex digits.
fn binary20(v: Option<&Value>) -> Option<[u8; 20]> {
    let s = v?.as_str()?;
    let mut out = [0u8; 20];
    if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        return Some(out);
    }
    let mut chars = s.chars();
    for o in &mut out {
        *o = u8::try_from(u32::from(chars.next()?)).ok()?;
    }
    chars.next().is_none().then_some(out)
}

/// Serves one upgraded connection (its slot reserved): messages in, relayed messages
/// out, until either side closes; then gives the slot back.
pub async fn serve<S>(stream: S, tracker: Arc<crate::http::Tracker>, ip: IpAddr, seed: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::{Error, Message};

    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let (relay, directory) = (tracker.relay.clone(), tracker.directory.clone());
    let mut conn = relay.connect(tx, Instant::now(), seed);
    let close = loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(text) = out else { break None };
                if ws.send(Message::text(text)).await.is_err() {
                    break None;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let now_unix = crate::http::unix_now();
                    if let Err(c) = relay.on_text(directory.as_ref(), &mut conn, t.as_str(), ip, Instant::now(), now_unix) {
                        break Some(c);
                    }
                    // A page's watching is metered as a native viewer's is.
                    if let Some(a) = Relay::take_usage(&mut conn) {
                        let reply = tracker.swarms.announce(tracker.now_s(), &a, ip);
                        tracker.metrics.count_over_cap(&reply);
                    }
                }
                Some(Ok(Message::Binary(_))) => break Some(Close::binary()),
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(_)) => {}
                Some(Err(Error::Capacity(_))) => {
                    relay.count("oversize");
                    break Some(Close::too_big());
                }
                Some(Err(_)) => break None,
            }
        }
    };
    relay.disconnect(conn);
    relay.release(ip);
    if let Some(c) = close {
        let frame = CloseFrame { code: c.code.into(), reason: c.reason.into() };
        let _ = ws.close(Some(frame)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use catalogue::directory::StaticDirectory;
    use swarm::piece::ChannelId;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    struct Page {
        conn: Conn,
        rx: mpsc::Receiver<String>,
    }

    impl Page {
        fn new(relay: &Relay, now: Instant) -> Self {
            let (tx, rx) = mpsc::channel(QUEUE);
            Page { conn: relay.connect(tx, now, false), rx }
        }

        fn seed(relay: &Relay, now: Instant) -> Self {
            let (tx, rx) = mpsc::channel(QUEUE);
            Page { conn: relay.connect(tx, now, true), rx }
        }

        fn got(&mut self) -> Vec<Value> {
            std::iter::from_fn(|| self.rx.try_recv().ok()).map(|t| serde_json::from_str(&t).unwrap()).collect()
        }
    }

    struct World {
        relay: Relay,
        dir: StaticDirectory,
        hash: String,
        t0: Instant,
    }

    impl World {
        fn new() -> Self {
            let id = ChannelId::from_bytes([5; 32]);
            let hash = latin1(&id.info_hash());
            let relay = Relay::new(&Registry::new());
            World { relay, dir: StaticDirectory::new([("demo".to_string(), id)]), hash, t0: Instant::now() }
        }

        fn say(&self, page: &mut Page, msg: &Value) -> Result<(), Close> {
            self.say_at(page, msg, self.t0)
        }

        fn say_at(&self, page: &mut Page, msg: &Value, now: Instant) -> Result<(), Close> {
            self.relay.on_text(&self.dir, &mut page.conn, &msg.to_string(), IP, now, 0)
        }

        fn announce(&self, peer: char, offers: usize) -> Value {
            let offers: Vec<Value> = (0..offers)
                .map(|i| json!({"offer": {"type": "offer", "sdp": format!("v=0 {peer}{i}")}, "offer_id": id(char::from(b'a' + i as u8))}))
                .collect();
            json!({"action": "announce", "info_hash": self.hash, "peer_id": id(peer), "numwant": offers.len(), "offers": offers})
        }

        fn count(&self, result: &str) -> u64 {
            self.relay.messages.with_label_values(&[result]).get()
        }
    }

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 20).collect()
    }

    #[test]
    fn offers_reach_other_pages_and_answers_come_back() {
        let w = World::new();
        let (mut a, mut b, mut c) = (Page::new(&w.relay, w.t0), Page::new(&w.relay, w.t0), Page::new(&w.relay, w.t0));
        w.say(&mut b, &w.announce('B', 0)).unwrap();
        w.say(&mut c, &w.announce('C', 0)).unwrap();
        assert_eq!(b.got()[0]["interval"], INTERVAL_S);
        c.got();
        // A's two offers go one each to B and C, named as A's.
        w.say(&mut a, &w.announce('A', 2)).unwrap();
        let reply = a.got();
        assert_eq!(reply.len(), 1);
        assert_eq!(reply[0]["incomplete"], 3);
        assert_eq!(reply[0]["info_hash"], w.hash.as_str());
        let (to_b, to_c) = (b.got(), c.got());
        assert_eq!((to_b.len(), to_c.len()), (1, 1));
        let sdps: std::collections::BTreeSet<&str> =
            [&to_b[0], &to_c[0]].iter().map(|m| m["offer"]["sdp"].as_str().unwrap()).collect();
        assert_eq!(sdps, ["v=0 A0", "v=0 A1"].into());
        assert_eq!(to_b[0]["peer_id"], id('A'));
        // B answers: A hears it, from B, with the offer's id.
        let offer_id = to_b[0]["offer_id"].clone();
        let answer = json!({"action": "announce", "info_hash": w.hash, "peer_id": id('B'), "to_peer_id": id('A'),
            "answer": {"type": "answer", "sdp": "v=0 answer"}, "offer_id": offer_id});
        w.say(&mut b, &answer).unwrap();
        let got = a.got();
        assert_eq!(got[0]["answer"]["sdp"], "v=0 answer");
        assert_eq!(got[0]["peer_id"], id('B'));
        assert_eq!(got[0]["offer_id"], offer_id);
        assert_eq!((w.count("offer"), w.count("answer")), (2, 1));
        // A leaves: an answer to it goes nowhere (counted), its next offers reach no one.
        w.relay.disconnect(a.conn);
        w.say(&mut b, &answer).unwrap();
        assert_eq!(w.count("no_peer"), 1);
    }

    #[test]
    fn a_page_that_asks_for_a_seed_sends_its_first_offer_to_one_in_turn_and_the_rest_to_pages() {
        let w = World::new();
        let (mut s1, mut s2) = (Page::seed(&w.relay, w.t0), Page::seed(&w.relay, w.t0));
        let (mut b, mut a) = (Page::new(&w.relay, w.t0), Page::new(&w.relay, w.t0));
        for (p, who) in [(&mut s1, 'S'), (&mut s2, 'T'), (&mut b, 'B')] {
            w.say(p, &w.announce(who, 0)).unwrap();
            p.got();
        }
        // Two offers asking for a seed: one to a seed, one to page B.
        let mut ask = w.announce('A', 2);
        ask["want_seed"] = json!(true);
        w.say(&mut a, &ask).unwrap();
        let reply = a.got();
        assert_eq!((reply[0]["complete"].as_u64(), reply[0]["incomplete"].as_u64()), (Some(2), Some(2)));
        let (to_s1, to_s2, to_b) = (s1.got().len(), s2.got().len(), b.got().len());
        assert_eq!((to_s1 + to_s2, to_b), (1, 1));
        // Again: the other seed's turn.
        ask["offers"] = json!([ask["offers"][0]]);
        w.say(&mut a, &ask).unwrap();
        assert_eq!((s1.got().len() + to_s1, s2.got().len() + to_s2), (1, 1), "seeds taken in turn");
        // Without asking, offers go to pages first: one offer, to B.
        let plain = w.announce('A', 1);
        w.say(&mut a, &plain).unwrap();
        assert_eq!((s1.got().len(), s2.got().len(), b.got().len()), (0, 0, 1));
        // More offers than pages: the rest go to seeds.
        w.say(&mut a, &w.announce('A', 3)).unwrap();
        assert_eq!((s1.got().len(), s2.got().len(), b.got().len()), (1, 1, 1));
    }

    #[test]
    fn a_pages_watched_seconds_become_a_viewers_announce_and_a_seeders_do_not() {
        let w = World::new();
        let mut page = Page::new(&w.relay, w.t0);
        let mut ann = w.announce('A', 0);
        w.say(&mut page, &ann).unwrap();
        assert!(Relay::take_usage(&mut page.conn).is_none(), "no watched field: nothing to meter");
        ann["watched"] = json!(42);
        ann["ad_watched"] = json!(7);
        ann["watched_prev"] = json!(3_000);
        w.say(&mut page, &ann).unwrap();
        let a = Relay::take_usage(&mut page.conn).unwrap();
        assert_eq!((a.watched_s, a.ad_watched_s, a.role, a.reachable), (Some(42), Some(7), Role::Viewer, false));
        assert_eq!((a.watched_prev_s, a.ad_watched_prev_s), (Some(3_000), None));
        assert_eq!((a.peer_id, a.event), ([b'A'; 20], Event::None));
        assert_eq!((a.uploaded, a.downloaded), (0, 0), "no byte counts: none");
        ann["downloaded"] = json!(5_000_000);
        ann["uploaded"] = json!(1_000);
        w.say(&mut page, &ann).unwrap();
        let a = Relay::take_usage(&mut page.conn).unwrap();
        assert_eq!((a.uploaded, a.downloaded), (1_000, 5_000_000), "the page's bytes, set against its watching");
        ann["downloaded"] = json!(-1);
        w.say(&mut page, &ann).unwrap();
        assert_eq!(Relay::take_usage(&mut page.conn).unwrap().downloaded, 0, "not a byte count: none");
        ann["event"] = json!("stopped");
        w.say(&mut page, &ann).unwrap();
        assert_eq!(Relay::take_usage(&mut page.conn).unwrap().event, Event::Stopped, "its last counters");
        let mut seed = Page::seed(&w.relay, w.t0);
        let mut s = w.announce('S', 0);
        s["watched"] = json!(42);
        w.say(&mut seed, &s).unwrap();
        assert!(Relay::take_usage(&mut seed.conn).is_none(), "a seeder watches nothing");
    }

    #[test]
    fn one_address_sends_seeders_a_burst_of_offers_then_one_a_second_and_pages_the_rest() {
        let w = World::new();
        let mut seed = Page::seed(&w.relay, w.t0);
        let mut b = Page::new(&w.relay, w.t0);
        for (p, who) in [(&mut seed, 'S'), (&mut b, 'B')] {
            w.say(p, &w.announce(who, 0)).unwrap();
            p.got();
        }
        let ask = |who: char| {
            let mut a = w.announce(who, 1);
            a["want_seed"] = json!(true);
            a
        };
        // 40 pages from one address ask for a seed at once: 32 offers reach it, the
        // other 8 go to pages of the channel.
        let mut pages: Vec<Page> = Vec::new();
        for i in 0..40u8 {
            let mut p = Page::new(&w.relay, w.t0);
            w.say(&mut p, &ask(char::from(0xC0 + i))).unwrap();
            pages.push(p);
        }
        let offers_to_pages = |pages: &mut Vec<Page>, b: &mut Page| {
            b.got().len()
                + pages.iter_mut().map(|p| p.got().iter().filter(|m| m.get("offer").is_some()).count()).sum::<usize>()
        };
        assert_eq!(seed.got().len(), SEED_OFFER_BURST as usize);
        assert_eq!(offers_to_pages(&mut pages, &mut b), 40 - SEED_OFFER_BURST as usize);
        assert_eq!(w.count("seed_limited"), 40 - SEED_OFFER_BURST as u64);
        // Two seconds later, two more reach the seeder; the third goes to a page.
        let later = w.t0 + std::time::Duration::from_secs(2);
        for who in ['X', 'Y', 'Z'] {
            let mut p = Page::new(&w.relay, w.t0);
            w.say_at(&mut p, &ask(who), later).unwrap();
            pages.push(p);
        }
        assert_eq!((seed.got().len(), offers_to_pages(&mut pages, &mut b)), (2, 1));
    }

    #[test]
    fn unknown_and_refused_channels_get_a_failure_reason_and_stay_connected() {
        let w = World::new();
        let mut p = Page::new(&w.relay, w.t0);
        let other = json!({"action": "announce", "info_hash": id('z'), "peer_id": id('P')});
        w.say(&mut p, &other).unwrap();
        assert!(p.got()[0]["failure reason"].as_str().unwrap().starts_with("unknown channel"));
        assert_eq!(w.count("unknown_channel"), 1);
        w.say(&mut p, &w.announce('P', 0)).unwrap();
        assert_eq!(p.got()[0]["incomplete"], 1, "the same connection may still announce a real channel");
    }

    #[test]
    fn bad_messages_close_with_a_code_and_a_reason() {
        let w = World::new();
        let bad = |text: &str| {
            let mut p = Page::new(&w.relay, w.t0);
            w.relay.on_text(&w.dir, &mut p.conn, text, IP, w.t0, 0).unwrap_err()
        };
        assert_eq!(bad("{").code, 1008);
        assert!(bad("[1]").reason.contains("not a JSON object"));
        assert!(bad(r#"{"action":"scrape"}"#).reason.contains("scrape"));
        let short = json!({"action": "announce", "info_hash": "abc", "peer_id": id('P')}).to_string();
        assert!(bad(&short).reason.contains("info_hash must be 20 bytes"));
        let wide = json!({"action": "announce", "info_hash": id('\u{100}'), "peer_id": id('P')}).to_string();
        assert!(bad(&wide).reason.contains("info_hash"), "a character past U+00FF is not a byte");
        let big = format!(r#"{{"action":"announce","pad":"{}"}}"#, "x".repeat(MAX_MESSAGE));
        assert_eq!(bad(&big).code, 1009);
        let eleven = w.announce('P', 11).to_string();
        assert!(bad(&eleven).reason.contains("11 offers in one announce"));
        let mut no_id = w.announce('P', 1);
        no_id["offers"][0]["offer_id"] = json!("short");
        assert!(bad(&no_id.to_string()).reason.contains("offer_id"));
        let answer_first = json!({"action": "announce", "info_hash": w.hash, "peer_id": id('P'), "to_peer_id": id('Q'),
            "answer": {}, "offer_id": id('o')});
        assert!(bad(&answer_first.to_string()).reason.contains("before announcing"));
        assert!(w.count("malformed") >= 7 && w.count("oversize") == 1 && w.count("over_budget") == 1);
    }

    #[test]
    fn offers_beyond_the_budget_close_the_connection() {
        let w = World::new();
        let mut listener = Page::new(&w.relay, w.t0);
        w.say(&mut listener, &w.announce('L', 0)).unwrap();
        let mut p = Page::new(&w.relay, w.t0);
        // 50 at once (5 announces of 10), then 1 a second.
        for _ in 0..5 {
            w.say(&mut p, &w.announce('P', 10)).unwrap();
        }
        let later = w.t0 + std::time::Duration::from_secs(3);
        w.say_at(&mut p, &w.announce('P', 3), later).unwrap();
        let c = w.say_at(&mut p, &w.announce('P', 1), later).unwrap_err();
        assert_eq!((c.code, c.label), (1008, "over_budget"));
        assert!(c.reason.contains("offer budget"), "{}", c.reason);
        assert_eq!(listener.got().len(), 1 + 5 + 1, "its reply, then one offer per announce (one other page)");
    }

    #[test]
    fn a_peer_id_cannot_be_taken_over_nor_a_page_be_in_many_channels_or_twice_in_one() {
        let w = World::new();
        let mut a = Page::new(&w.relay, w.t0);
        w.say(&mut a, &w.announce('A', 0)).unwrap();
        let mut thief = Page::new(&w.relay, w.t0);
        assert!(w.say(&mut thief, &w.announce('A', 0)).unwrap_err().reason.contains("in use"));
        assert!(w.say(&mut a, &w.announce('B', 0)).unwrap_err().reason.contains("second peer_id"));
        // Stopped: it leaves, and the id is free again.
        let mut stop = w.announce('A', 0);
        stop["event"] = json!("stopped");
        w.say(&mut a, &stop).unwrap();
        let mut again = Page::new(&w.relay, w.t0);
        w.say(&mut again, &w.announce('A', 0)).unwrap();
        assert_eq!(again.got()[0]["incomplete"], 1);
        let _ = MAX_SWARMS_PER_CONN;
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_the_relay() {
        let w = World::new();
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        for _ in 0..MAX_PER_ADDRESS {
            w.relay.reserve(IP).unwrap();
        }
        let why = w.relay.reserve(IP).unwrap_err();
        assert!(why.contains("from this address"), "{why}");
        assert_eq!(w.count("full"), 1);
        w.relay.reserve(other).unwrap();
        w.relay.release(IP);
        w.relay.reserve(IP).unwrap();
    }
}
