//! The tracker client: BitTorrent announces with Shoal's parameters (PROTOCOL.md §6),
//! answers turned into [`Listed`] candidates with their protocol ids (`keys=1`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use swarm::bencode::{Value, decode, percent_encode as pct};
use swarm::piece::ChannelId;
use swarm::wire::PeerId;

use crate::shell::Listed;
use httpkit::client::{self as http_client, HttpError};

/// How long an announce may take.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the tracker refused ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("the tracker's answer is not a BitTorrent announce answer")]
    BadAnswer,
}

/// Who announces.
#[derive(Debug, Clone)]
pub struct TrackerClient {
    /// `http://HOST:PORT` of the tracker.
    pub base: String,
    pub info_hash: [u8; 20],
    /// The 20-byte BitTorrent peer id; the protocol id is derived from it.
    pub tracker_id: [u8; 20],
    /// The port peers dial (the tracker takes the address from the connection).
    pub port: u16,
    /// Seeds pass the seeder token.
    pub seed_token: Option<String>,
    pub reachable: bool,
}

/// Counters an announce reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    pub uploaded: u64,
    pub downloaded: u64,
    /// Viewers: seconds watched in the current UTC hour, and of those during ad breaks.
    pub watched_s: Option<u64>,
    pub ad_watched_s: Option<u64>,
    pub watched_prev_s: Option<u64>,
    pub ad_watched_prev_s: Option<u64>,
    pub free_slots: u8,
}

/// What the tracker answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub interval_s: u32,
    pub peers: Vec<Listed>,
    /// The channel's audience as the tracker counts it (`incomplete`, `complete`; 0
    /// when a tracker leaves them out).
    pub viewers: u32,
    pub seeds: u32,
}

/// A fresh random BitTorrent peer id: `-SH0100-` and 12 random bytes.
pub fn random_tracker_id() -> [u8; 20] {
    let mut id = *b"-SH0100-000000000000";
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id[8..]);
    id
}

impl TrackerClient {
    pub fn new(base: &str, channel: &ChannelId, port: u16) -> Self {
        TrackerClient {
            base: base.trim_end_matches('/').to_owned(),
            info_hash: channel.info_hash(),
            tracker_id: random_tracker_id(),
            port,
            seed_token: None,
            reachable: true,
        }
    }

    /// The protocol id this client's peer must use.
    pub fn peer_id(&self) -> PeerId {
        PeerId::from_tracker_id(&self.tracker_id)
    }

    /// One announce (`event`: `started`, `stopped` or none).
    pub async fn announce(&self, event: Option<&str>, r: Report) -> Result<Answer, AnnounceError> {
        let mut q = format!(
            "/announce?info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left=0&compact=1&keys=1&numwant=50&slots={}&reachable={}",
            pct(&self.info_hash),
            pct(&self.tracker_id),
            self.port,
            r.uploaded,
            r.downloaded,
            r.free_slots,
            u8::from(self.reachable),
        );
        if let Some(e) = event {
            q.push_str("&event=");
            q.push_str(e);
        }
        match &self.seed_token {
            Some(t) => {
                q.push_str("&role=seed&token=");
                q.push_str(&pct(t.as_bytes()));
            }
            None => q.push_str("&role=viewer"),
        }
        if let Some(w) = r.watched_s {
            q.push_str(&format!("&watched={w}"));
        }
        if let Some(w) = r.ad_watched_s {
            q.push_str(&format!("&ad_watched={w}"));
        }
        if let Some(w) = r.watched_prev_s {
            q.push_str(&format!("&watched_prev={w}"));
        }
        if let Some(w) = r.ad_watched_prev_s {
            q.push_str(&format!("&ad_watched_prev={w}"));
        }
        let resp = http_client::get(&self.base, &q, None, TIMEOUT).await?;
        let status = resp.status().as_u16();
        let body = http_client::read_all(resp.into_body(), 256 * 1024).await?;
        let v = decode(&body).map_err(|_| AnnounceError::BadAnswer)?;
        if let Some(reason) = v.get("failure reason").and_then(Value::as_bytes) {
            return Err(AnnounceError::Refused { status, reason: String::from_utf8_lossy(reason).into_owned() });
        }
        parse_answer(&v).ok_or(AnnounceError::BadAnswer)
    }
}

/// Compact peers (`peers`, `peers6`) with `peer keys` (8-byte key + seed flag each, in
/// the same order). Peers without a key are left out: their club is unknown.
fn parse_answer(v: &Value) -> Option<Answer> {
    let interval_s = u32::try_from(v.get("interval")?.as_int()?).ok()?.max(1);
    let v4 = v.get("peers").and_then(Value::as_bytes).unwrap_or_default();
    let v6 = v.get("peers6").and_then(Value::as_bytes).unwrap_or_default();
    let keys = v.get("peer keys").and_then(Value::as_bytes).unwrap_or_default();
    if !v4.len().is_multiple_of(6) || !v6.len().is_multiple_of(18) || !keys.len().is_multiple_of(9) {
        return None;
    }
    let addrs = v4
        .chunks_exact(6)
        .map(|c| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])), u16::from_be_bytes([c[4], c[5]])))
        .chain(v6.chunks_exact(18).map(|c| {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&c[..16]);
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), u16::from_be_bytes([c[16], c[17]]))
        }));
    let peers = addrs
        .zip(keys.chunks_exact(9))
        .map(|(addr, k)| {
            let mut key = [0u8; 8];
            key.copy_from_slice(&k[..8]);
            Listed { addr, peer_id: PeerId(u64::from_le_bytes(key)), seed: k[8] == 1 }
        })
        .collect();
    let count = |k: &str| v.get(k).and_then(Value::as_int).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    Some(Answer { interval_s, peers, viewers: count("incomplete"), seeds: count("complete") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm::bencode::DictWriter;

    #[test]
    fn answers_parse_with_keys_and_garbage_is_refused() {
        let mut keys = vec![];
        keys.extend_from_slice(&7u64.to_le_bytes());
        keys.push(1);
        keys.extend_from_slice(&9u64.to_le_bytes());
        keys.push(0);
        let mut v6 = [0u8; 18];
        v6[15] = 1;
        v6[17] = 80;
        let body = DictWriter::new()
            .int("complete", 2)
            .int("incomplete", 9_000)
            .int("interval", 60)
            .bytes("peer keys", &keys)
            .bytes("peers", &[10, 0, 0, 1, 0x1f, 0x90])
            .bytes("peers6", &v6)
            .finish();
        let a = parse_answer(&decode(&body).unwrap()).unwrap();
        assert_eq!(a.interval_s, 60);
        assert_eq!(a.peers.len(), 2);
        assert_eq!(a.peers[0], Listed { addr: "10.0.0.1:8080".parse().unwrap(), peer_id: PeerId(7), seed: true });
        assert_eq!(a.peers[1].addr, "[::1]:80".parse().unwrap());
        assert_eq!((a.viewers, a.seeds), (9_000, 2));
        // Counts left out or out of range read as unknown (0), not as a refusal.
        let odd = DictWriter::new().int("incomplete", -5).int("interval", 60).finish();
        assert_eq!(parse_answer(&decode(&odd).unwrap()).map(|a| (a.viewers, a.seeds)), Some((0, 0)));
        let bad = DictWriter::new().int("interval", 60).bytes("peers", &[1, 2, 3]).finish();
        assert_eq!(parse_answer(&decode(&bad).unwrap()), None);
        assert_eq!(parse_answer(&decode(b"de").unwrap()), None);
    }

    #[test]
    fn the_protocol_id_is_the_trackers_key() {
        let c = TrackerClient::new("http://t:1", &swarm::piece::ChannelKeypair::from_secret_bytes(&[1; 32]).id(), 5);
        let key = blake3::hash(&c.tracker_id);
        assert_eq!(c.peer_id().0.to_le_bytes(), key.as_bytes()[..8]);
    }
}
