//! The tracker over a real socket: BitTorrent announces and scrapes as a client sends
//! them, answers decoded as a client decodes them.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use catalogue::directory::StaticDirectory;
use catalogue::secrets::SeederTokens;
use swarm::piece::ChannelKeypair;
use tracker::Tracker;
use tracker::announce::percent_encode;
use tracker::bencode::{Value, decode};
use tracker::store::StoreConfig;

/// Where swarm state lives: every test here runs against each backend there is.
#[derive(Debug, Clone)]
enum Backend {
    Memory,
    /// Redis at this URL, under this key prefix.
    Redis(String, String),
}

/// Memory, and Redis if `SHOAL_TEST_REDIS_URL` is set (`.ci/run` sets it).
fn backends(test: &str) -> Vec<Backend> {
    let mut all = vec![Backend::Memory];
    match std::env::var("SHOAL_TEST_REDIS_URL") {
        Ok(url) => all.push(Backend::Redis(url, format!("shoal-test-{test}-{}", std::process::id()))),
        Err(_) => eprintln!("SKIPPED Redis: SHOAL_TEST_REDIS_URL is not set (.ci/run sets it)"),
    }
    all
}

/// A running tracker serving the channel "news"; its Redis keys go when it is dropped.
struct Running {
    addr: SocketAddr,
    hash: [u8; 20],
    rt: tokio::runtime::Runtime,
    shared: Option<tracker::shared::SharedSwarms>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.shared.take() {
            let _ = self.rt.block_on(s.clear());
        }
    }
}

fn start(backend: &Backend) -> Running {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let id = ChannelKeypair::from_secret_bytes(&[3; 32]).id();
    let dir = StaticDirectory::new([("news".to_owned(), id)]);
    let mut tracker = Tracker::new(StoreConfig::default(), Arc::new(dir), SeederTokens::from_tokens(["seed-secret"]));
    let mut shared = None;
    if let Backend::Redis(url, prefix) = backend {
        let s = rt.block_on(tracker::shared::SharedSwarms::connect(url, prefix, StoreConfig::default())).unwrap();
        rt.block_on(s.clear()).unwrap();
        tracker = tracker.with_shared(s.clone());
        shared = Some(s);
    }
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(tracker::http::serve(listener, Arc::new(tracker)));
    Running { addr, hash: id.info_hash(), rt, shared }
}

/// GET with `Connection: close`; (status code, body).
fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    get_with(addr, path, "")
}

/// GET with extra header lines (each ending in CRLF).
fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let status = String::from_utf8_lossy(&raw[9..12]).parse().unwrap();
    (status, raw[end..].to_vec())
}

/// Any method with a body; (status code, body).
fn request(addr: SocketAddr, method: &str, path: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let status = String::from_utf8_lossy(&raw[9..12]).parse().unwrap();
    (status, serde_json::from_slice(&raw[end..]).unwrap_or(serde_json::Value::Null))
}

fn announce(addr: SocketAddr, hash: &[u8; 20], peer: u8, port: u16, extra: &str) -> (u16, Value) {
    let q = format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=0&compact=1{extra}",
        percent_encode(hash),
        percent_encode(&[peer; 20])
    );
    let (status, body) = get(addr, &q);
    (status, decode(&body).expect("a bencoded answer"))
}

fn reason(v: &Value) -> String {
    String::from_utf8_lossy(v.get("failure reason").and_then(Value::as_bytes).unwrap_or_default()).into_owned()
}

#[test]
fn viewers_find_the_seed_and_each_other() {
    for backend in backends("find") {
        viewers_find_the_seed_and_each_other_in(&backend);
    }
}

fn viewers_find_the_seed_and_each_other_in(backend: &Backend) {
    let t = start(backend);
    let (addr, hash) = (t.addr, t.hash);
    let (status, v) = announce(addr, &hash, 1, 9001, "&role=seed&token=seed-secret&event=started");
    assert_eq!(status, 200, "{}", reason(&v));
    assert_eq!(v.get("interval").and_then(Value::as_int), Some(15), "seeds hear the audience every 15 s");
    let (_, v) = announce(addr, &hash, 2, 9002, "&event=started&slots=4");
    assert_eq!(v.get("interval").and_then(Value::as_int), Some(60));
    assert_eq!(v.get("complete").and_then(Value::as_int), Some(1));
    assert_eq!(v.get("incomplete").and_then(Value::as_int), Some(1));
    assert_eq!(v.get("peers").and_then(Value::as_bytes), Some(&[127, 0, 0, 1, 0x23, 0x29][..]), "the seed, port 9001");
    let (_, v) = announce(addr, &hash, 3, 9003, "&reachable=0");
    let peers = v.get("peers").and_then(Value::as_bytes).unwrap();
    assert_eq!(peers.len(), 12, "the seed and the reachable viewer");
    assert_eq!(&peers[..6], &[127, 0, 0, 1, 0x23, 0x29]);
    assert_eq!(&peers[6..], &[127, 0, 0, 1, 0x23, 0x2a]);
    // With keys=1, each listed peer's key (the peer protocol's id) and seed flag.
    let (_, v) = announce(addr, &hash, 3, 9003, "&reachable=0&keys=1");
    let keys = v.get("peer keys").and_then(Value::as_bytes).unwrap();
    assert_eq!(keys.len(), 18);
    assert_eq!(&keys[..8], &tracker::store::peer_key(&[1; 20]));
    assert_eq!((keys[8], keys[17]), (1, 0), "the seed, then the viewer");
    // Nobody is given the unreachable viewer.
    let (_, v) = announce(addr, &hash, 2, 9002, "");
    assert_eq!(v.get("peers").and_then(Value::as_bytes).unwrap().len(), 6);

    let (status, body) = get(addr, &format!("/scrape?info_hash={}", percent_encode(&hash)));
    assert_eq!(status, 200);
    let files = decode(&body).unwrap();
    let stats = match files.get("files") {
        Some(Value::Dict(d)) => d[0].1.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (stats.get("complete").and_then(Value::as_int), stats.get("incomplete").and_then(Value::as_int)),
        (Some(1), Some(2))
    );

    let (_, metrics) = get(addr, "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("shoal_tracker_announces_total{result=\"ok\"} 5"), "{metrics}");
}

#[test]
fn bad_requests_get_a_status_and_a_failure_reason() {
    for backend in backends("bad") {
        bad_requests_in(&backend);
    }
}

fn bad_requests_in(backend: &Backend) {
    let t = start(backend);
    let (addr, hash) = (t.addr, t.hash);
    let (status, v) = announce(addr, &[7; 20], 1, 9001, "");
    assert_eq!((status, reason(&v).as_str()), (404, "unknown channel: no channel has this info_hash"));
    let (status, v) = announce(addr, &hash, 1, 9001, "&role=seed");
    assert_eq!((status, reason(&v).as_str()), (401, "role=seed needs token=<seeder token>"));
    let (status, v) = announce(addr, &hash, 1, 9001, "&role=seed&token=guess");
    assert_eq!((status, reason(&v).as_str()), (403, "seeder token not accepted"));
    let (status, body) = get(addr, "/announce?info_hash=short&port=1");
    assert_eq!((status, reason(&decode(&body).unwrap()).as_str()), (400, "bad parameter info_hash: must be 20 bytes"));
    let (status, _) = get(addr, &format!("/announce?{}", "x".repeat(5_000)));
    assert_eq!(status, 400);
    // Still serving.
    let (status, _) = announce(addr, &hash, 1, 9001, "");
    assert_eq!(status, 200);
    let (_, metrics) = get(addr, "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("shoal_tracker_announces_total{result=\"bad_request\"} 2"), "{metrics}");
    assert!(metrics.contains("shoal_tracker_announces_total{result=\"unauthorized\"} 2"), "{metrics}");
}

/// A fresh SQLite catalogue in a temporary directory with accounts `a` and `b` and an
/// API token each: (runtime, catalogue, account ids, tokens, directory).
fn catalogue(
    test: &str,
) -> (tokio::runtime::Runtime, catalogue::db::Db, (i64, i64), (String, String), std::path::PathBuf) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("shoal-admin-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = rt.block_on(catalogue::db::Db::open(&format!("sqlite://{}", dir.join("t.db").display()))).unwrap();
    let (ids, tokens) = rt.block_on(async {
        let a = db.create_account("a", 1).await.unwrap();
        let b = db.create_account("b", 1).await.unwrap();
        ((a, b), (db.create_api_token(a, "ops", 1).await.unwrap(), db.create_api_token(b, "ops", 1).await.unwrap()))
    });
    (rt, db, ids, tokens, dir)
}

/// Serves the tracker with the admin API over `db` on a free port.
fn serve_admin(rt: &tokio::runtime::Runtime, db: catalogue::db::Db) -> SocketAddr {
    let tracker = Tracker::new(StoreConfig::default(), Arc::new(StaticDirectory::default()), SeederTokens::default())
        .with_admin(db);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(tracker::http::serve(listener, Arc::new(tracker)));
    addr
}

#[test]
fn the_admin_api_shows_an_account_only_its_own() {
    use catalogue::db::UsageEvent;
    let (rt, db, (a, b), (ta, tb), dir) = catalogue("read");
    rt.block_on(async {
        let ka = ChannelKeypair::from_secret_bytes(&[1; 32]).id();
        let kb = ChannelKeypair::from_secret_bytes(&[2; 32]).id();
        let ca = db.create_channel(a, "a-news", ka, "k1", false, 1).await.unwrap();
        db.create_channel(b, "b-ads", kb, "k2", true, 1).await.unwrap();
        let ev = UsageEvent {
            idempotency_key: "n:a".into(),
            channel_id: ca,
            hour_start: 3_600,
            viewer_seconds: 120,
            ad_viewer_seconds: 0,
            seed_bytes: 0,
            peak_viewers: 2,
        };
        db.record_usage(&[ev], 3_700).await.unwrap();
        db.roll_up_hour(3_600, 7_200).await.unwrap();
    });
    let addr = serve_admin(&rt, db);
    let auth = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let json = |b: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&b).unwrap();

    let (status, body) = get_with(addr, "/v1/channels", &auth(&ta));
    assert_eq!(status, 200);
    let chans = json(body);
    assert_eq!(chans.as_array().unwrap().len(), 1, "{chans}");
    assert_eq!(chans[0]["name"], "a-news");
    assert!(chans[0]["refused"].is_null());
    let (_, body) = get_with(addr, "/v1/channels", &auth(&tb));
    let chans = json(body);
    assert_eq!(chans[0]["name"], "b-ads");
    assert!(chans[0]["refused"].as_str().unwrap().contains("no commercial license"), "{chans}");

    let (_, body) = get_with(addr, "/v1/usage?from=0&to=7200", &auth(&ta));
    assert_eq!(json(body)[0]["viewer_seconds"], 120);
    let (_, body) = get_with(addr, "/v1/usage?from=0&to=7200", &auth(&tb));
    assert_eq!(json(body).as_array().unwrap().len(), 0, "b sees none of a's usage");
    let (status, body) = get_with(addr, "/v1/usage?from=0&to=7200&format=csv", &auth(&ta));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    assert!(text.starts_with("channel,hour_start,hour_start_utc,viewer_seconds,"), "{text}");
    assert!(text.contains(",3600,1970-01-01T01:00:00Z,120,"), "{text}");
    let (status, body) = get_with(addr, "/v1/usage/summary?from=0&to=172800&by=day", &auth(&ta));
    let days = json(body);
    assert_eq!((status, days[0]["from"].as_i64(), days[0]["to"].as_i64()), (200, Some(0), Some(86_400)), "{days}");
    assert_eq!(get_with(addr, "/v1/usage/summary?from=0&to=10&by=week", &auth(&ta)).0, 400);

    let (status, body) = get_with(addr, "/v1/invoices/preview?month=1970-01", &auth(&ta));
    assert_eq!((status, json(body)), (200, serde_json::json!([])), "an ad-free channel is free");
    let (status, body) = get_with(addr, "/v1/invoices/preview?month=1970-01&format=csv", &auth(&ta));
    assert_eq!(status, 200);
    assert!(String::from_utf8(body).unwrap().starts_with("invoice,month,kind,channel,"));
    assert_eq!(get_with(addr, "/v1/invoices/preview?month=1970-13", &auth(&ta)).0, 400);
    assert_eq!(get_with(addr, "/v1/invoices/preview", &auth(&ta)).0, 400);
    assert_eq!(get_with(addr, "/v1/invoices/SHOAL-000001", &auth(&ta)).0, 404);
    assert_eq!(json(get_with(addr, "/v1/invoices", &auth(&ta)).1), serde_json::json!([]));

    assert_eq!(get(addr, "/v1/channels").0, 401, "no token");
    assert_eq!(get_with(addr, "/v1/channels", &auth("shoal_guess")).0, 401);
    let (status, body) = get_with(addr, "/v1/usage?from=5&to=1", &auth(&ta));
    assert_eq!((status, json(body)), (200, serde_json::json!([])), "to before from: an empty period");
    assert_eq!(get_with(addr, "/v1/usage?from=x&to=1", &auth(&ta)).0, 400);
    assert_eq!(get_with(addr, "/v1/invoices?format=xml", &auth(&ta)).0, 400, "a format it doesn't offer");
    let (status, body) = get(addr, "/v1/openapi.json");
    assert_eq!(status, 200);
    let doc = json(body);
    assert_eq!(doc["openapi"], "3.1.0");
    // Filled in as served: every operation with a token documents the 401 it can give.
    let plans = &doc["paths"]["/v1/plans"]["get"]["responses"];
    assert!(plans["401"].is_object() && plans["503"].is_object(), "{plans}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The write half: channels, stream keys, licences, each change in the audit log, and
/// nothing of another account's can be touched.
#[test]
fn the_admin_api_manages_channels_keys_and_licences() {
    let (rt, db, (a, _), (ta, tb), dir) = catalogue("write");
    rt.block_on(db.create_plan(&catalogue::testing::commercial(), 1)).unwrap();
    let platform = db.clone();
    let addr = serve_admin(&rt, db);
    let key = ChannelKeypair::from_secret_bytes(&[5; 32]).id().to_hex();

    let body = format!(r#"{{"name": "sport", "public_key": "{key}", "carries_ads": true}}"#);
    let (status, created) = request(addr, "POST", "/v1/channels", &ta, &body);
    assert_eq!(status, 201, "{created}");
    let stream_key = created["stream_key"].as_str().unwrap().to_owned();
    assert_eq!(stream_key.len(), 32);
    assert_eq!(created["info_hash"].as_str().unwrap().len(), 40);
    assert_eq!(request(addr, "POST", "/v1/channels", &tb, &body).0, 409, "names are unique");
    let (status, e) = request(addr, "POST", "/v1/channels", &ta, r#"{"name": "x", "public_key": "zz"}"#);
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("public_key"), "{e}");
    assert_eq!(request(addr, "POST", "/v1/channels", &ta, r#"{"name": "x", "pubkey": "zz"}"#).0, 400);
    assert_eq!(request(addr, "POST", "/v1/channels", &ta, "not json").0, 400);

    let (_, chans) = request(addr, "GET", "/v1/channels", &ta, "");
    assert!(chans[0]["refused"].as_str().unwrap().contains("no commercial license"), "{chans}");
    let (status, e) =
        request(addr, "POST", "/v1/channels/sport/licenses", &ta, r#"{"plan": "broadcast", "valid_from": 1}"#);
    assert_eq!(status, 400, "an account can't back-date a licence: {e}");
    let (status, lic) = request(addr, "POST", "/v1/channels/sport/licenses", &ta, r#"{"plan": "broadcast"}"#);
    assert_eq!(status, 201, "{lic}");
    assert_eq!(lic["plan_version"], 1);
    assert_eq!(request(addr, "POST", "/v1/channels/sport/licenses", &ta, r#"{"plan": "gold"}"#).0, 400);
    let (status, e) = request(addr, "POST", "/v1/channels/sport/licenses", &ta, r#"{"plan": "broadcast"}"#);
    assert!(status == 409 && e["error"].as_str().unwrap().contains("already covers"), "overlap: {e}");
    let (_, chans) = request(addr, "GET", "/v1/channels", &ta, "");
    assert!(chans[0]["refused"].is_null(), "{chans}");

    // Another account can't touch it.
    assert_eq!(request(addr, "POST", "/v1/channels/sport/disable", &tb, "").0, 403);
    assert_eq!(request(addr, "POST", "/v1/channels/sport/stream-key", &tb, "").0, 403);
    assert_eq!(request(addr, "POST", &format!("/v1/licenses/{}/end", lic["id"]), &tb, "").0, 403);
    assert_eq!(request(addr, "GET", "/v1/licenses", &tb, "").1.as_array().unwrap().len(), 0);
    assert_eq!(request(addr, "POST", "/v1/channels/nope/disable", &ta, "").0, 404);

    let (status, rotated) = request(addr, "POST", "/v1/channels/sport/stream-key", &ta, r#"{"grace_seconds": 60}"#);
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["stream_key"].as_str().unwrap(), stream_key);
    assert!(rotated["previous_key_valid_until"].is_i64());
    assert_eq!(request(addr, "POST", "/v1/channels/sport/stream-key", &ta, r#"{"grace_seconds": 999999}"#).0, 400);

    // Disabling a licensed channel: the owner says what becomes of the licence.
    let (status, e) = request(addr, "POST", "/v1/channels/sport/disable", &ta, "");
    assert!(status == 400 && e["error"].as_str().unwrap().contains(r#""licences": "end""#), "{e}");
    let (status, ch) = request(addr, "POST", "/v1/channels/sport/disable", &ta, r#"{"licences": "keep"}"#);
    assert_eq!(status, 200);
    assert!(ch["refused"].as_str().unwrap().contains("disabled"), "{ch}");
    let (_, l) = request(addr, "GET", "/v1/licenses", &ta, "");
    assert!(l[0]["valid_until"].is_null(), "kept: {l}");
    let (status, _) = request(addr, "POST", "/v1/channels/sport/disable", &ta, r#"{"licences": "end"}"#);
    assert_eq!(status, 200);
    let (_, l) = request(addr, "GET", "/v1/licenses", &ta, "");
    // Ended now: cut at now, or revoked if it began this very second.
    assert!(l[0]["status"] == "revoked" || l[0]["valid_until"].as_i64() > Some(1_000_000_000), "ended: {l}");
    let (status, ended) = request(addr, "POST", &format!("/v1/licenses/{}/end", lic["id"]), &ta, "");
    assert_eq!((status, &ended), (200, &l[0]), "an ended one stays as it is");

    let (_, audit) = request(addr, "GET", "/v1/audit", &ta, "");
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "license.end",
            "channel.disable",
            "channel.disable",
            "channel.rotate_stream_key",
            "license.add",
            "channel.create"
        ],
        "newest first, refused attempts not logged"
    );
    assert!(audit[0]["actor"].as_str().unwrap().contains("ops"));
    assert_eq!(request(addr, "GET", "/v1/audit", &tb, "").1.as_array().unwrap().len(), 0);
    assert_eq!(request(addr, "GET", "/v1/plans", &tb, "").1[0]["name"], "broadcast");

    // A plan not offered to all: only an account it was granted to sees and buys it.
    let partner = catalogue::db::Plan { name: "partner".into(), offered: false, ..catalogue::testing::commercial() };
    rt.block_on(platform.create_plan(&partner, 1)).unwrap();
    let names = |t: &str| -> Vec<String> {
        let plans = request(addr, "GET", "/v1/plans", t, "").1;
        plans.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&ta), ["broadcast"]);
    let body = format!(
        r#"{{"name": "sport2", "public_key": "{}", "carries_ads": true}}"#,
        ChannelKeypair::from_secret_bytes(&[6; 32]).id().to_hex()
    );
    assert_eq!(request(addr, "POST", "/v1/channels", &ta, &body).0, 201);
    let (status, e) = request(addr, "POST", "/v1/channels/sport2/licenses", &ta, r#"{"plan": "partner"}"#);
    assert!(status == 400 && e["error"].as_str().unwrap().contains("may buy"), "{e}");
    rt.block_on(platform.grant_plan(a, "partner", 1)).unwrap();
    assert_eq!(names(&ta), ["broadcast", "partner"]);
    assert_eq!(names(&tb), ["broadcast"], "granted to a only");
    assert_eq!(request(addr, "POST", "/v1/channels/sport2/licenses", &ta, r#"{"plan": "partner"}"#).0, 201);

    // Deleting: its running licence must be ended with it (keeping one is refused).
    assert_eq!(request(addr, "DELETE", "/v1/channels/sport2", &tb, "").0, 403);
    let (status, e) = request(addr, "DELETE", "/v1/channels/sport2", &ta, "");
    assert!(status == 400 && e["error"].as_str().unwrap().contains(r#""licences": "end""#), "{e}");
    let (status, e) = request(addr, "DELETE", "/v1/channels/sport2", &ta, r#"{"licences": "keep"}"#);
    assert!(status == 400 && e["error"].as_str().unwrap().contains("keeps none"), "{e}");
    let (status, gone) = request(addr, "DELETE", "/v1/channels/sport2", &ta, r#"{"licences": "end"}"#);
    assert_eq!((status, &gone["name"]), (200, &serde_json::json!("sport2")), "{gone}");
    let (_, chans) = request(addr, "GET", "/v1/channels", &ta, "");
    let listed: Vec<&str> = chans.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(listed, ["sport"], "not listed");
    let (_, l) = request(addr, "GET", "/v1/licenses", &ta, "");
    let partner_licence = l.as_array().unwrap().iter().find(|l| l["channel"] == "sport2").unwrap();
    assert!(
        partner_licence["status"] == "revoked" || partner_licence["valid_until"].as_i64() > Some(1_000_000_000),
        "ended with it: {partner_licence}"
    );
    let now = tracker::http::unix_now() as i64;
    let states = rt.block_on(platform.channel_states(now)).unwrap();
    assert!(states.iter().all(|c| c.name != "sport2"), "not admitted: announces and publishes see no such channel");
    assert_eq!(request(addr, "DELETE", "/v1/channels/sport2", &ta, "").0, 404, "gone");
    assert_eq!(request(addr, "POST", "/v1/channels/sport2/enable", &ta, "").0, 404, "not changeable");
    assert_eq!(request(addr, "POST", "/v1/channels", &ta, &body).0, 409, "its name and key stay taken");
    // Without a licence running, no choice is needed.
    assert_eq!(request(addr, "DELETE", "/v1/channels/sport", &ta, "").0, 200);
    assert_eq!(request(addr, "GET", "/v1/audit", &ta, "").1[0]["action"], "channel.delete");

    assert_eq!(request(addr, "DELETE", "/v1/channels", &ta, "").0, 405);
    assert_eq!(request(addr, "POST", "/v1/nothing", &ta, "").0, 404);
    assert_eq!(request(addr, "POST", "/v1/channels", &ta, &"x".repeat(70_000)).0, 413);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two replicas sharing Redis: a viewer announcing to one is listed to a viewer
/// announcing to the other, and the shared sweep expires silent peers.
#[test]
fn replicas_share_swarms_through_redis() {
    let Some(Backend::Redis(url, prefix)) = backends("replicas").pop().filter(|b| matches!(b, Backend::Redis(..)))
    else {
        return;
    };
    let a = start(&Backend::Redis(url.clone(), prefix.clone()));
    let b = start(&Backend::Redis(url, prefix));
    let (status, _) = announce(a.addr, &a.hash, 1, 9001, "&event=started");
    assert_eq!(status, 200);
    let (_, v) = announce(b.addr, &b.hash, 2, 9002, "&event=started");
    assert_eq!(v.get("incomplete").and_then(Value::as_int), Some(2), "both replicas' viewers counted");
    assert_eq!(
        v.get("peers").and_then(Value::as_bytes),
        Some(&[127, 0, 0, 1, 0x23, 0x29][..]),
        "the viewer that announced to the other replica"
    );
    // A stop at one replica takes the peer out for all.
    let (_, v) = announce(b.addr, &b.hash, 1, 9001, "&event=stopped");
    assert_eq!(v.get("incomplete").and_then(Value::as_int), Some(1));

    // The shared sweep: a peer silent past the timeout goes, for every replica.
    let shared = a.shared.clone().unwrap();
    let now = tracker::http::unix_now();
    let st = a.rt.block_on(shared.sweep(now + u64::from(StoreConfig::default().peer_timeout_s) + 5)).unwrap();
    assert_eq!((st.expired_peers, st.pruned_swarms), (1, 1));
    assert_eq!(a.rt.block_on(shared.scrape(&a.hash)).unwrap(), (0, 0));
}

/// Redis going away mid-service: announces are still answered (from the replica's
/// own peers) and the failures are counted.
#[test]
fn a_redis_outage_degrades_to_the_replicas_own_peers() {
    let Some(Backend::Redis(url, prefix)) = backends("outage").pop().filter(|b| matches!(b, Backend::Redis(..))) else {
        return;
    };
    // Redis through a proxy this test can cut.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let proxy = common::Proxy::start(&rt, &common::host_port(&url));
    let proxy_addr = proxy.addr;
    let t = start(&Backend::Redis(format!("redis://{proxy_addr}"), prefix.clone()));
    let (status, _) = announce(t.addr, &t.hash, 1, 9001, "&event=started");
    assert_eq!(status, 200);
    proxy.set_up(false);
    let (status, v) = announce(t.addr, &t.hash, 2, 9002, "&event=started");
    assert_eq!(status, 200, "answered while Redis is unreachable");
    assert_eq!(v.get("peers").and_then(Value::as_bytes).map(<[u8]>::len), Some(6), "the replica's own peer");
    let (_, metrics) = get(t.addr, "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shoal_tracker_redis_errors_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(errors >= 1, "{metrics}");
    // Clean up through Redis itself (the proxy is gone).
    drop(t);
    let direct = rt.block_on(tracker::shared::SharedSwarms::connect(&url, &prefix, StoreConfig::default())).unwrap();
    rt.block_on(direct.clear()).unwrap();
}

#[test]
fn ids_past_an_address_cap_are_answered_counted_and_not_shared() {
    for backend in backends("cap") {
        ids_past_the_cap_in(&backend);
    }
}

fn ids_past_the_cap_in(backend: &Backend) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let id = ChannelKeypair::from_secret_bytes(&[3; 32]).id();
    let dir = StaticDirectory::new([("news".to_owned(), id)]);
    let cfg = StoreConfig { max_ids_per_address: 2, ..StoreConfig::default() };
    let mut tracker = Tracker::new(cfg, Arc::new(dir), SeederTokens::default());
    let mut shared = None;
    if let Backend::Redis(url, prefix) = backend {
        let s = rt.block_on(tracker::shared::SharedSwarms::connect(url, prefix, cfg)).unwrap();
        rt.block_on(s.clear()).unwrap();
        tracker = tracker.with_shared(s.clone());
        shared = Some(s);
    }
    let from = std::net::IpAddr::from([203, 0, 113, 7]);
    let announce = |peer: u8| {
        let q = format!(
            "info_hash={}&peer_id={}&port=7000&compact=1&watched=0",
            percent_encode(&id.info_hash()),
            percent_encode(&[peer; 20])
        );
        let (status, body) = rt.block_on(tracker.announce_shared(&q, from, 0, 1_800_000_000));
        let d = decode(&body).unwrap();
        (status.as_u16(), d.get("incomplete").and_then(Value::as_int))
    };
    assert_eq!(announce(1), (200, Some(1)));
    assert_eq!(announce(2), (200, Some(2)));
    assert_eq!(announce(3), (200, Some(2)), "answered, not counted among the channel's viewers");
    assert_eq!(announce(4), (200, Some(2)));
    let metrics = tracker.metrics.render();
    assert!(metrics.contains("shoal_tracker_ids_over_cap_total{cap=\"address_cap\"} 2\n"), "{metrics}");
    assert!(metrics.contains("shoal_tracker_ids_over_cap_total{cap=\"network_cap\"} 0\n"), "{metrics}");
    if let Some(s) = shared {
        rt.block_on(s.clear()).unwrap();
    }
}
