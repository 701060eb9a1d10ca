//! The BitTorrent HTTP announce and scrape requests (BEP 3, with BEP 23 compact peers
//! and BEP 7 IPv6), plus Shoal's own parameters. Parsing never allocates more than the
//! bounded query it is given and never panics.
//!
//! Standard parameters: `info_hash`, `peer_id` (20 raw bytes, percent-encoded), `port`,
//! `uploaded`, `downloaded`, `left`, `event` (`started`, `stopped`, `completed` or
//! empty), `compact`, `numwant`. Shoal's: `role=seed|viewer` (seeds also pass
//! `token`), `reachable=0|1` (can others dial this peer; default 1), `slots` (free
//! upload slots, 0-255: less-loaded peers are listed first), `watched` (seconds watched
//! in the current UTC hour, for metering), `ad_watched` (of those, seconds during ad
//! breaks) and `keys=1` (the answer's `peer keys`: per listed peer, in the order of
//! `peers` then `peers6`, its 8-byte key and a seed flag byte). A seed's `uploaded` is metered as the channel's seed bytes.

/// Longest query string taken (a real announce is ~300 bytes).
pub const MAX_QUERY_LEN: usize = 4096;
/// Peers asked for when `numwant` is absent.
pub const DEFAULT_NUMWANT: u32 = 50;
/// Info-hashes in one scrape.
pub const MAX_SCRAPE_HASHES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    None,
    Started,
    Stopped,
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Seed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    pub compact: bool,
    /// `keys=1`: also answer each listed peer's key and whether it is a seed.
    pub want_keys: bool,
    pub numwant: u32,
    pub role: Role,
    pub reachable: bool,
    pub free_slots: u8,
    pub watched_s: Option<u64>,
    /// Of `watched_s`, the seconds watched during ad breaks (the same hour).
    pub ad_watched_s: Option<u64>,
    /// `watched_prev`, `ad_watched_prev`: the same counters' final values for the
    /// previous UTC hour, sent early in an hour, so the tracker can bill the previous
    /// hour's tail (from its last announce there to the hour's end).
    pub watched_prev_s: Option<u64>,
    pub ad_watched_prev_s: Option<u64>,
    pub token: Option<String>,
}

/// Why a request was refused; the text goes back as the BitTorrent `failure reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("bad parameter {0}: {1}")]
    Bad(&'static str, &'static str),
    #[error("query longer than {MAX_QUERY_LEN} bytes")]
    TooLong,
    #[error("more than {MAX_SCRAPE_HASHES} info_hash values in one scrape")]
    TooManyHashes,
}

impl RequestError {
    /// A fixed label for metrics (no unbounded cardinality).
    pub fn label(&self) -> &'static str {
        match self {
            RequestError::Missing(_) => "missing_parameter",
            RequestError::Bad(..) => "bad_parameter",
            RequestError::TooLong => "too_long",
            RequestError::TooManyHashes => "too_many_hashes",
        }
    }
}

impl Announce {
    /// A viewer's plain announce, every optional field at its default.
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20], port: u16) -> Self {
        Announce {
            info_hash,
            peer_id,
            port,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: Event::None,
            compact: true,
            want_keys: false,
            numwant: DEFAULT_NUMWANT,
            role: Role::Viewer,
            reachable: true,
            free_slots: 0,
            watched_s: None,
            ad_watched_s: None,
            watched_prev_s: None,
            ad_watched_prev_s: None,
            token: None,
        }
    }
}

/// Parses an announce's query string (what follows `?`).
pub fn parse_announce(query: &str) -> Result<Announce, RequestError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(RequestError::TooLong);
    }
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut a = Announce::new([0; 20], [0; 20], 0);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "info_hash" => info_hash = Some(id20(v, "info_hash")?),
            "peer_id" => peer_id = Some(id20(v, "peer_id")?),
            "port" => {
                port = Some(v.parse::<u16>().ok().filter(|&p| p != 0).ok_or(RequestError::Bad("port", "1-65535"))?)
            }
            "uploaded" => a.uploaded = number(v, "uploaded")?,
            "downloaded" => a.downloaded = number(v, "downloaded")?,
            "left" => a.left = number(v, "left")?,
            "numwant" => a.numwant = u32::try_from(number(v, "numwant")?).unwrap_or(u32::MAX),
            "compact" => a.compact = flag(v, "compact")?,
            "keys" => a.want_keys = flag(v, "keys")?,
            "reachable" => a.reachable = flag(v, "reachable")?,
            "slots" => a.free_slots = u8::try_from(number(v, "slots")?).unwrap_or(u8::MAX),
            "watched" => a.watched_s = Some(number(v, "watched")?),
            "ad_watched" => a.ad_watched_s = Some(number(v, "ad_watched")?),
            "watched_prev" => a.watched_prev_s = Some(number(v, "watched_prev")?),
            "ad_watched_prev" => a.ad_watched_prev_s = Some(number(v, "ad_watched_prev")?),
            "event" => {
                a.event = match v {
                    "" | "empty" => Event::None,
                    "started" => Event::Started,
                    "stopped" => Event::Stopped,
                    "completed" => Event::Completed,
                    _ => return Err(RequestError::Bad("event", "started, stopped, completed or empty")),
                }
            }
            "role" => {
                a.role = match v {
                    "viewer" => Role::Viewer,
                    "seed" => Role::Seed,
                    _ => return Err(RequestError::Bad("role", "seed or viewer")),
                }
            }
            "token" => {
                let t = percent_decode(v).map_err(|e| RequestError::Bad("token", e))?;
                a.token = Some(String::from_utf8(t).map_err(|_| RequestError::Bad("token", "not UTF-8"))?);
            }
            // BEP 3's `ip` is ignored: the address is the connection's, so nobody can
            // list someone else's address. `key`, `trackerid`, `supportcrypto`,
            // `no_peer_id` and unknown parameters are ignored, as clients expect.
            _ => {}
        }
    }
    a.info_hash = info_hash.ok_or(RequestError::Missing("info_hash"))?;
    a.peer_id = peer_id.ok_or(RequestError::Missing("peer_id"))?;
    a.port = port.ok_or(RequestError::Missing("port"))?;
    Ok(a)
}

/// Parses a scrape's query string: one or more `info_hash` values.
pub fn parse_scrape(query: &str) -> Result<Vec<[u8; 20]>, RequestError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(RequestError::TooLong);
    }
    let mut hashes = Vec::new();
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("info_hash=") {
            if hashes.len() == MAX_SCRAPE_HASHES {
                return Err(RequestError::TooManyHashes);
            }
            hashes.push(id20(v, "info_hash")?);
        }
    }
    if hashes.is_empty() {
        return Err(RequestError::Missing("info_hash"));
    }
    Ok(hashes)
}

fn id20(v: &str, name: &'static str) -> Result<[u8; 20], RequestError> {
    let bytes = percent_decode(v).map_err(|e| RequestError::Bad(name, e))?;
    bytes.try_into().map_err(|_| RequestError::Bad(name, "must be 20 bytes"))
}

fn number(v: &str, name: &'static str) -> Result<u64, RequestError> {
    v.parse().map_err(|_| RequestError::Bad(name, "not a non-negative integer"))
}

fn flag(v: &str, name: &'static str) -> Result<bool, RequestError> {
    match v {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(RequestError::Bad(name, "0 or 1")),
    }
}

/// `%XX` escapes and `+` (a space, in form encoding) decoded to bytes.
pub fn percent_decode(s: &str) -> Result<Vec<u8>, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or("truncated %-escape")?;
                let hi = (hex[0] as char).to_digit(16).ok_or("bad %-escape")?;
                let lo = (hex[1] as char).to_digit(16).ok_or("bad %-escape")?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Percent-encodes every byte that is not unreserved (RFC 3986), as clients encode
/// info-hashes and peer ids.
pub use crate::bencode::percent_encode;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn query(extra: &str) -> String {
        format!(
            "info_hash={}&peer_id={}&port=6881&uploaded=10&downloaded=20&left=0{extra}",
            percent_encode(&[0xab; 20]),
            percent_encode(b"-qB4500-abcdefghijkl")
        )
    }

    #[test]
    fn parses_a_standard_announce() {
        let a = parse_announce(&query("&event=started&compact=1&numwant=30")).unwrap();
        assert_eq!(a.info_hash, [0xab; 20]);
        assert_eq!(&a.peer_id, b"-qB4500-abcdefghijkl");
        assert_eq!((a.port, a.uploaded, a.downloaded, a.left), (6881, 10, 20, 0));
        assert_eq!(
            (a.event, a.compact, a.numwant, a.role, a.reachable),
            (Event::Started, true, 30, Role::Viewer, true)
        );
    }

    #[test]
    fn parses_shoal_parameters() {
        let a = parse_announce(&query("&watched=5&watched_prev=3590&ad_watched_prev=60")).unwrap();
        assert_eq!((a.watched_s, a.watched_prev_s, a.ad_watched_prev_s), (Some(5), Some(3_590), Some(60)));
        let a = parse_announce(&query("&role=seed&token=s3cr%2Bt&reachable=0&slots=7&watched=125")).unwrap();
        assert_eq!(a.role, Role::Seed);
        assert_eq!(a.token.as_deref(), Some("s3cr+t"));
        assert!(!a.reachable);
        assert_eq!((a.free_slots, a.watched_s), (7, Some(125)));
    }

    #[test]
    fn refuses_with_a_reason() {
        assert_eq!(parse_announce("peer_id=x&port=1"), Err(RequestError::Bad("peer_id", "must be 20 bytes")));
        assert_eq!(
            parse_announce(&format!("peer_id={}&port=1", percent_encode(&[1; 20]))),
            Err(RequestError::Missing("info_hash"))
        );
        assert_eq!(parse_announce(&query("&port=0")), Err(RequestError::Bad("port", "1-65535")));
        assert_eq!(parse_announce(&query("&event=paused")).unwrap_err().label(), "bad_parameter");
        assert_eq!(parse_announce(&query("&uploaded=-1")).unwrap_err().label(), "bad_parameter");
        assert_eq!(parse_announce(&"a".repeat(MAX_QUERY_LEN + 1)), Err(RequestError::TooLong));
        assert_eq!(parse_announce(&query("&info_hash=%zz")), Err(RequestError::Bad("info_hash", "bad %-escape")));
    }

    #[test]
    fn scrape_takes_several_hashes() {
        let h = |b: u8| percent_encode(&[b; 20]);
        assert_eq!(parse_scrape(&format!("info_hash={}&info_hash={}", h(1), h(2))).unwrap(), vec![[1; 20], [2; 20]]);
        assert_eq!(parse_scrape(""), Err(RequestError::Missing("info_hash")));
        // Letters need no escapes, so 65 hashes stay within the query limit.
        let many = (0..=MAX_SCRAPE_HASHES).map(|_| format!("info_hash={}", h(b'a'))).collect::<Vec<_>>().join("&");
        assert_eq!(parse_scrape(&many), Err(RequestError::TooManyHashes));
    }

    proptest! {
        #[test]
        fn percent_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(percent_decode(&percent_encode(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn any_query_is_an_answer_not_a_panic(q in ".{0,300}") {
            let _ = parse_announce(&q);
            let _ = parse_scrape(&q);
        }
    }
}
