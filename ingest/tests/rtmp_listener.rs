//! The RTMP listener in-process: the recorded fixture published through a real TCP
//! connection by the minimal client, refusals with reasons, garbage, takeovers, and
//! live sessions ended when their key or channel may no longer publish.

use std::sync::Arc;

use catalogue::admission::Authorizer;

use catalogue::file::ChannelFile;
use ingest::hub::{Fetch, Hub, HubConfig};
use ingest::media::flv::{self, TAG_SCRIPT};
use ingest::rtmp_client::{ClientError, RtmpPublisher};
use swarm::piece::PieceFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FIXTURE: &[u8] = include_bytes!("fixtures/testsrc-h264-aac-4s.flv");

struct Setup {
    addr: std::net::SocketAddr,
    hub: Arc<Hub>,
    auth: Arc<dyn Authorizer>,
    key: String,
    /// The stream key of "ads", a licensed channel registered as carrying ads.
    ads_key: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn setup(name: &str) -> Setup {
    setup_with(name, HubConfig::default()).await
}

async fn setup_with(name: &str, config: HubConfig) -> Setup {
    let dir = std::env::temp_dir().join(format!("shoal-rtmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = ChannelFile::new(dir.join("channels.json"), dir.join("keys"));
    let key = file.create_channel("news", false, None).expect("channel");
    file.create_channel("sport", true, None).expect("channel");
    let licence = catalogue::file::License { commercial: true, valid_until_unix: None };
    let ads_key = file.create_channel("ads", true, Some(licence)).expect("channel");
    let auth: Arc<dyn Authorizer> = Arc::new(file);
    let hub = Hub::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(ingest::rtmp::serve(listener, hub.clone(), auth.clone()));
    Setup { addr, hub, auth, key, ads_key, _dir: TempDir(dir) }
}

/// Every piece the channel's window holds, oldest first.
fn window(ch: &ingest::hub::Channel) -> Vec<swarm::piece::Piece> {
    let oldest = match ch.fetch(0, 1) {
        Fetch::Gone { oldest } => oldest,
        Fetch::Pieces(p) => p.first().map_or(0, |p| p.seq()),
    };
    match ch.fetch(oldest, usize::MAX) {
        Fetch::Pieces(p) => p,
        Fetch::Gone { .. } => panic!("the window moved while nothing publishes"),
    }
}

/// The fixture's first 40 tags (about a second): a publisher on air.
async fn publish_start(p: &mut RtmpPublisher) {
    for tag in flv::read_file(FIXTURE).expect("fixture").into_iter().take(40) {
        if tag.kind != TAG_SCRIPT {
            p.send_tag(tag.kind, tag.timestamp, tag.body).await.expect("send");
        }
    }
}

async fn publish_fixture(p: &mut RtmpPublisher) {
    for tag in flv::read_file(FIXTURE).expect("fixture") {
        if tag.kind != TAG_SCRIPT {
            p.send_tag(tag.kind, tag.timestamp, tag.body).await.expect("send");
        }
    }
}

/// Waits (without sleeping) until the channel's window holds `n` pieces.
async fn wait_for_pieces(hub: &Hub, channel: &str, n: usize) {
    let mut rx = loop {
        match hub.channel(channel) {
            Some(ch) => break ch.subscribe(),
            None => tokio::task::yield_now().await,
        }
    };
    let ch = hub.channel(channel).expect("channel");
    while window(&ch).len() < n {
        if tokio::time::timeout(std::time::Duration::from_secs(10), rx.changed()).await.is_err() {
            panic!("no {n} pieces within 10 s");
        }
    }
}

/// Waits (without sleeping) until news's session ended.
async fn wait_for_session_end(hub: &Hub) {
    wait_for_end_of(hub, "news").await
}

/// Waits (without sleeping) until the channel's session ended.
async fn wait_for_end_of(hub: &Hub, channel: &str) {
    let ch = hub.channel(channel).expect("channel exists after a publish");
    let mut rx = ch.subscribe();
    while ch.live() {
        // Each piece produced (and the final flush) wakes us.
        if tokio::time::timeout(std::time::Duration::from_secs(10), rx.changed()).await.is_err() {
            panic!("session did not end");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_published_over_rtmp_becomes_signed_pieces() {
    let s = setup("publish").await;
    let mut p = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("publish accepted");
    publish_fixture(&mut p).await;
    p.close().await.expect("close");
    wait_for_session_end(&s.hub).await;
    let ch = s.hub.channel("news").expect("channel");
    let all = window(&ch);
    assert!((60..=110).contains(&all.len()), "{} pieces", all.len());
    for (i, p) in all.iter().enumerate() {
        p.verify(&ch.id).expect("signed by the channel");
        assert_eq!(p.seq(), all[0].seq() + i as u64);
    }
    assert!(all[0].flags().contains(PieceFlags::SEGMENT_START));
    assert_eq!(all.iter().filter(|p| p.flags().contains(PieceFlags::SEGMENT_START)).count(), 4);
    let m = s.hub.metrics.render();
    assert!(m.contains("shoal_ingest_publishes_total{protocol=\"rtmp\"} 1"), "{m}");
    assert!(m.contains("shoal_ingest_keyframe_interval_seconds{channel=\"news\"} 1\n"), "{m}");
    assert!(m.contains("shoal_ingest_publishers_active 0"), "{m}");
}

/// The fixture with an `onCueOut` script tag from the encoder halfway through.
async fn publish_fixture_with_cue(p: &mut RtmpPublisher) {
    let tags = media_tags();
    let mut cue = Vec::new();
    ingest::media::amf0::Amf0::String("onCueOut".into()).encode(&mut cue);
    for (i, tag) in tags.iter().enumerate() {
        if i == tags.len() / 2 {
            p.send_tag(TAG_SCRIPT, tag.timestamp, &cue).await.expect("send cue");
        }
        p.send_tag(tag.kind, tag.timestamp, tag.body).await.expect("send");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_break_cues_mark_only_channels_registered_as_carrying_ads() {
    let s = setup("cues").await;
    let ad_start = |ch: &str| {
        let ch = s.hub.channel(ch).expect("channel");
        window(&ch).iter().filter(|p| p.flags().contains(PieceFlags::AD_BREAK_START)).count()
    };
    let mut p = RtmpPublisher::connect(s.addr, "live", &s.ads_key).await.expect("publish accepted");
    publish_fixture_with_cue(&mut p).await;
    p.close().await.expect("close");
    wait_for_end_of(&s.hub, "ads").await;
    assert_eq!(ad_start("ads"), 1, "the channel with ads gets its ad break");
    // Before: the ad-free channel's pieces carried the ad-break flag as well.
    let mut p = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("publish accepted");
    publish_fixture_with_cue(&mut p).await;
    p.close().await.expect("close");
    wait_for_session_end(&s.hub).await;
    assert_eq!(ad_start("news"), 0, "an ad-free channel's cue is dropped");
    let m = s.hub.metrics.render();
    assert!(m.contains("shoal_ingest_ad_cues_dropped_total 1\n"), "{m}");
}

/// Raises this process's open-files limit to at least `n` (up to the hard limit).
fn allow_open_files(n: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|c| c < n) {
        lim.current = Some(lim.maximum.map_or(n, |m| m.min(n)));
        setrlimit(Resource::Nofile, lim).expect("raising the open-files limit");
    }
}

/// 2,000 connections from one address that drip their handshake a byte a second
/// (before: 1,024 of them took every RTMP slot for as long as they dripped): all but
/// 32 are closed at once, and a real publisher gets in and publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_from_one_address_leave_room_for_publishers() {
    allow_open_files(8_192);
    let s = setup("slow").await;
    let mut drips = tokio::task::JoinSet::new();
    for _ in 0..2_000 {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(std::net::SocketAddr::from(([127, 66, 0, 1], 0))).expect("bind");
        let mut c = sock.connect(s.addr).await.expect("connect");
        drips.spawn(async move {
            while c.write_all(&[3]).await.is_ok() {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
    let mut p = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("publish accepted");
    publish_fixture(&mut p).await;
    p.close().await.expect("close");
    wait_for_session_end(&s.hub).await;
    drips.abort_all();
    assert!(window(&s.hub.channel("news").expect("channel")).len() >= 60);
    let m = s.hub.metrics.render();
    assert!(m.contains("shoal_ingest_publish_refusals_total{reason=\"connection_cap\"} 1968\n"), "{m}");
}

/// A connection that drips its handshake a byte every 1.5 s (each read in time, so
/// the per-read timeout never fires; before, it held its slot for good) is closed at
/// the publish deadline — on tokio's paused clock, so without waiting — and counted.
#[tokio::test(start_paused = true)]
async fn a_connection_that_never_publishes_is_closed_at_the_deadline() {
    let s = setup("deadline").await;
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(std::net::SocketAddr::from(([127, 66, 0, 2], 0))).expect("bind");
    let c = sock.connect(s.addr).await.expect("connect");
    let (mut rd, mut wr) = c.into_split();
    let started = tokio::time::Instant::now();
    let drip = tokio::spawn(async move {
        while wr.write_all(&[3]).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        }
    });
    let mut buf = [0u8; 4096];
    while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
    let held = started.elapsed();
    drip.abort();
    assert!(
        held >= ingest::rtmp::PUBLISH_DEADLINE && held < ingest::rtmp::PUBLISH_DEADLINE * 2,
        "closed after {held:?}"
    );
    let m = s.hub.metrics.render();
    assert!(m.contains("shoal_ingest_publish_refusals_total{reason=\"publish_timeout\"} 1\n"), "{m}");
}

/// A publisher's reads wait at most 2.5 s each (upstream's limit, now on one timer per
/// session: scuffle-rtmp patch 6). On tokio's paused clock, so without waiting: a
/// publisher whose bytes come every 2 s is kept however long that lasts, and one that
/// goes quiet is ended 2.5 s (and at most a read tick) after its last bytes. (Media
/// is not held to the wall clock here, which the paused clock does not move.)
#[tokio::test(start_paused = true)]
async fn a_publisher_that_goes_quiet_is_ended_at_the_read_timeout() {
    use std::time::Duration;
    let s = setup_with("quiet", HubConfig { clock_bound: false, ..HubConfig::default() }).await;
    let mut p = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("publish accepted");
    let tags: Vec<_> = flv::read_file(FIXTURE).expect("fixture").into_iter().filter(|t| t.kind != TAG_SCRIPT).collect();
    for tag in tags.iter().take(40) {
        p.send_tag(tag.kind, tag.timestamp, tag.body).await.expect("send");
    }
    wait_for_pieces(&s.hub, "news", 1).await;
    let ch = s.hub.channel("news").expect("channel");
    let audio = tags.iter().find(|t| t.kind == flv::TAG_AUDIO && t.timestamp > 0).expect("an audio frame");
    let mut ts = tags[39].timestamp;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        ts += 2_000;
        p.send_tag(audio.kind, ts, audio.body).await.expect("send");
        assert!(ch.live(), "a read completed every 2 s: the session stays");
    }
    let quiet = tokio::time::Instant::now();
    wait_for_session_end(&s.hub).await;
    let held = quiet.elapsed();
    let limit = Duration::from_millis(2_500);
    assert!(held >= limit && held <= limit + ingest::merged::READ_TICK * 2, "ended {held:?} after the last bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_their_reason_to_the_encoder() {
    let s = setup("refuse").await;
    match RtmpPublisher::connect(s.addr, "live", "wrong-key").await {
        Err(ClientError::Refused(why)) => assert!(why.contains("unknown stream key"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    match RtmpPublisher::connect(s.addr, "other", &s.key).await {
        Err(ClientError::Refused(why)) => assert!(why.contains("rtmp://HOST/live/<stream-key>"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    let m = s.hub.metrics.render();
    assert!(m.contains("shoal_ingest_publish_refusals_total{reason=\"unknown_key\"} 1"), "{m}");
    assert!(m.contains("shoal_ingest_publish_refusals_total{reason=\"bad_application\"} 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dropped_and_others_keep_publishing() {
    let s = setup("garbage").await;
    // Not RTMP at all: the server closes the connection.
    let mut junk = TcpStream::connect(s.addr).await.expect("connect");
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    junk.write_all(&[0xAB; 4000]).await.expect("write");
    let mut buf = Vec::new();
    let _ = junk.read_to_end(&mut buf).await; // ends: closed by the server
    // A truncated handshake: closed too, after the handshake timeout.
    let mut half = TcpStream::connect(s.addr).await.expect("connect");
    half.write_all(&[3, 0, 0]).await.expect("write");
    // Meanwhile a real publisher is served.
    let mut p = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("publish accepted");
    publish_fixture(&mut p).await;
    p.close().await.expect("close");
    wait_for_session_end(&s.hub).await;
    assert!(s.hub.metrics.pieces.get() > 50);
    let _ = half.read_to_end(&mut buf).await;
    assert!(s.hub.metrics.render().contains("shoal_ingest_bad_input_total{kind=\"rtmp_protocol\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_encoder_takes_over_at_once() {
    let s = setup("takeover").await;
    let mut first = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("first publish");
    let tags = flv::read_file(FIXTURE).expect("fixture");
    publish_start(&mut first).await;
    wait_for_pieces(&s.hub, "news", 10).await;
    // Same address, same key, while the first is healthy: no "already publishing".
    let mut second = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("takeover");
    // A restarted encoder: its clock starts elsewhere (here, an hour on).
    for tag in flv::read_file(FIXTURE).expect("fixture").into_iter().filter(|t| t.kind != TAG_SCRIPT) {
        second.send_tag(tag.kind, tag.timestamp + 3_600_000, tag.body).await.expect("send");
    }
    // The first connection's session is over: the server closes it on its next data.
    if let Some(tag) = tags.iter().find(|t| t.kind != TAG_SCRIPT) {
        let _ = first.send_tag(tag.kind, tag.timestamp, tag.body).await;
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), first.wait_closed())
        .await
        .expect("the replaced session's connection is closed by the server");
    second.close().await.expect("close");
    wait_for_session_end(&s.hub).await;
    let m = s.hub.metrics.render();
    assert!(m.contains("shoal_ingest_publisher_takeovers_total 1"), "{m}");
    // The second session starts with a discontinuity, at a segment start, seq rising.
    let ch = s.hub.channel("news").expect("channel");
    let all = window(&ch);
    let disc: Vec<_> = all.iter().filter(|p| p.flags().contains(PieceFlags::DISCONTINUITY)).collect();
    assert_eq!(disc.len(), 1, "one discontinuity");
    assert!(disc[0].flags().contains(PieceFlags::SEGMENT_START));
    // Numbers rise: one after another within each epoch, past the first's reach at the new one.
    assert!(all.windows(2).all(|w| w[1].seq() == w[0].seq() + 1 || w[1].flags().contains(PieceFlags::DISCONTINUITY)));
    let at = all.iter().position(|p| p.flags().contains(PieceFlags::DISCONTINUITY)).expect("new epoch");
    assert!(at > 0 && all[at].seq() > all[at - 1].seq());
}

/// An encoder restarted with its clock at 0 (ffmpeg run again) on the same node starts
/// a new epoch even within the old one's first seconds: its media is not taken as
/// going back on the old timeline.
#[tokio::test]
async fn an_encoder_restarted_at_zero_starts_a_new_timeline() {
    use ingest::hub::Protocol;
    let hub = Hub::new(HubConfig { clock_bound: false, ..HubConfig::default() });
    let grant = news_grant();
    let ip = std::net::IpAddr::from([192, 0, 2, 1]);
    let tags = media_tags();
    for _ in 0..2 {
        let mut p = hub.begin_publish(&grant, "k", ip, Protocol::Rtmp).expect("publish");
        for t in &tags {
            let r = push(&mut p, t, t.timestamp).await;
            r.expect("taken");
        }
    }
    let all = window(&hub.channel("news").expect("channel"));
    let starts: Vec<_> = all.iter().filter(|p| p.flags().contains(PieceFlags::SEGMENT_START)).collect();
    assert_eq!(starts.len(), 8, "both runs' four segments are published");
    assert_eq!(all.iter().filter(|p| p.flags().contains(PieceFlags::DISCONTINUITY)).count(), 1);
    assert!(hub.metrics.render().contains("shoal_ingest_epoch_events_total{event=\"piece_below_newest\"} 0\n"));
}

/// Reads an HTTP/1.1 response: status line and headers, then the chunked body as it
/// arrives, until `want` bytes of body are in (the piece stream never ends by itself).
async fn http_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>, want: usize) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed before the headers");
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut rest = raw[head_end..].to_vec();
    let mut body = Vec::new();
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().ok()))
            .flatten()
            .unwrap_or(0);
        while rest.len() < len {
            let n = s.read(&mut buf).await.expect("read");
            rest.extend_from_slice(&buf[..n]);
        }
        return (head, rest);
    }
    // Chunked: size line, data, CRLF.
    while body.len() < want {
        if let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..i]).expect("ascii").trim(), 16).expect("hex");
            if rest.len() >= i + 2 + size + 2 {
                body.extend_from_slice(&rest[i + 2..i + 2 + size]);
                rest.drain(..i + 2 + size + 2);
                continue;
            }
        }
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "stream ended after {} bytes", body.len());
        rest.extend_from_slice(&buf[..n]);
    }
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeders_stream_pieces_over_http_and_resume_from_a_seq() {
    use swarm::piece::{HEADER_LEN, Piece, PieceHeader, SIGNATURE_LEN};
    let s = setup("http").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = listener.local_addr().expect("addr");
    const TOKEN: &str = "seed-secret";
    let tokens = catalogue::secrets::SeederTokens::from_tokens([TOKEN]);
    tokio::spawn(ingest::http::serve(listener, s.hub.clone(), tokens));

    let mut p = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("publish");
    publish_fixture(&mut p).await;
    p.close().await.expect("close");
    wait_for_session_end(&s.hub).await;
    let ch = s.hub.channel("news").expect("channel");
    let all = window(&ch);
    let oldest = all[0].seq();

    // Without a token: 401. Unknown channel: 404. A seq that left the window: 410.
    let (head, _) = http_get(http, "/v1/channels/news/pieces", Some("wrong"), 0).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = http_get(http, "/v1/channels/nope/pieces", Some(TOKEN), 0).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, body) = http_get(http, &format!("/v1/channels/news/pieces?from={}", oldest - 1), Some(TOKEN), 0).await;
    assert!(head.starts_with("HTTP/1.1 410"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains(&format!("the oldest held is {oldest}")));

    // Resume from the 10th piece: every piece after it, byte for byte, in order.
    let from = all[10].seq();
    let want: usize = all[10..].iter().map(Piece::encoded_len).sum();
    let (head, body) = http_get(http, &format!("/v1/channels/news/pieces?from={from}"), Some(TOKEN), want).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&ch.id.to_hex()));
    let mut got = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        let header = PieceHeader::decode(rest).expect("a piece header");
        let len = HEADER_LEN + header.payload_len as usize + SIGNATURE_LEN;
        got.push(Piece::decode(bytes::Bytes::copy_from_slice(&rest[..len])).expect("a piece"));
        rest = &rest[len..];
    }
    assert_eq!(got.len(), all.len() - 10);
    for (a, b) in got.iter().zip(&all[10..]) {
        assert!(a.same_bytes(b));
        a.verify(&ch.id).expect("verifies");
    }

    // The debug tap, while the channel is idle: nothing of the last session's tail; the
    // next session's first segment start is its first byte.
    let tap = tokio::spawn(async move {
        let path = format!("/v1/channels/news/live.ts?token={TOKEN}");
        http_get(http, &path, None, 3 * 188).await
    });
    let mut p = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("publish");
    publish_fixture(&mut p).await;
    p.close().await.expect("close");
    let (head, ts) = tap.await.expect("tap");
    assert!(head.contains("video/mp2t"), "{head}");
    let again = window(&ch);
    let first = again.iter().find(|p| p.seq() > all.last().expect("pieces").seq()).expect("the new session's");
    assert!(first.flags().contains(PieceFlags::SEGMENT_START) && first.flags().contains(PieceFlags::DISCONTINUITY));
    assert_eq!(
        &ts[..3 * 188],
        &first.payload()[..3 * 188],
        "PAT, PMT and the keyframe's first packet of the new session"
    );
    let (head, metrics) = http_get(http, "/metrics", None, 0).await;
    assert!(head.starts_with("HTTP/1.1 200"));
    assert!(String::from_utf8_lossy(&metrics).contains("shoal_ingest_pieces_total"));
}

/// A command claiming an AMF0 ECMA array of 2^32 - 1 entries (a 20-byte message any
/// client can send before its stream key is checked) is an error, not a reservation
/// that aborts ingest (scuffle-amf0 reserved the claimed size; vendored fix).
#[test]
fn an_amf0_array_claiming_four_billion_entries_is_an_error() {
    // An unknown command: its arguments are decoded as they come.
    let mut payload = vec![0x02, 0, 5];
    payload.extend_from_slice(b"hello");
    payload.push(0x00);
    payload.extend_from_slice(&1f64.to_be_bytes());
    payload.push(0x08);
    payload.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(scuffle_rtmp::command_messages::Command::read(bytes::Bytes::from(payload)).is_err());
}

#[test]
fn before_a_publish_a_connection_holds_at_most_64_kib_of_messages() {
    // Before: any connection, before it said which stream key it has, could make the
    // reader hold 4 partial messages of 10 MB each.
    use scuffle_rtmp::chunk::reader::{ChunkReader, PRE_PUBLISH_MAX_MESSAGE};
    let header = |len: u32| {
        let l = len.to_be_bytes();
        // Type 0 on chunk stream 3: timestamp 0, length, type 9 (video), stream 1.
        bytes::BytesMut::from(&[3, 0, 0, 0, l[1], l[2], l[3], 9, 1, 0, 0, 0][..])
    };
    let mut reader = ChunkReader::default();
    assert!(reader.read_chunk(&mut header(1 << 20)).is_err(), "1 MB before a publish");
    let mut reader = ChunkReader::default();
    assert!(matches!(reader.read_chunk(&mut header(PRE_PUBLISH_MAX_MESSAGE as u32)), Ok(None)), "64 KiB is fine");
    // Messages in progress on several chunk streams count together.
    let mut reader = ChunkReader::default();
    assert!(reader.update_max_chunk_size(60_000));
    let mut two = bytes::BytesMut::new();
    for csid in [4u8, 5] {
        let mut h = header(60_001);
        h[0] = csid;
        two.extend_from_slice(&h);
        two.extend_from_slice(&vec![0u8; 60_000]);
    }
    assert!(reader.read_chunk(&mut two).is_err(), "120 KB in progress before a publish");
    // After a publish, keyframes of megabytes are taken.
    let mut reader = ChunkReader::default();
    reader.allow_media();
    assert!(matches!(reader.read_chunk(&mut header(1 << 20)), Ok(None)));
}

#[test]
fn a_message_assembled_from_chunks_reuses_the_last_ones_buffer_once_it_is_dropped() {
    // scuffle-rtmp patch 5: a frame in several chunks no longer costs a malloc (and the
    // growth of a new buffer) each.
    use scuffle_rtmp::chunk::reader::ChunkReader;
    let mut reader = ChunkReader::default();
    reader.allow_media();
    // A 300-byte video message on chunk stream 3 in 128-byte chunks (Type 0, then Type 3).
    let message = |fill: u8| {
        let mut b = bytes::BytesMut::from(&[3, 0, 0, 0, 0, 1, 44, 9, 1, 0, 0, 0][..]);
        for (i, chunk) in [128usize, 128, 44].into_iter().enumerate() {
            if i > 0 {
                b.extend_from_slice(&[0xc3]);
            }
            b.extend_from_slice(&vec![fill; chunk]);
        }
        b
    };
    let read = |reader: &mut ChunkReader, fill: u8| {
        let mut buf = message(fill);
        std::iter::from_fn(|| reader.read_chunk(&mut buf).expect("a valid chunk")).next().expect("the message")
    };
    let first = read(&mut reader, 1);
    assert_eq!(&first.payload[..], &[1u8; 300][..]);
    let at = first.payload.as_ptr();
    // Still held by its handler: the next message gets a buffer of its own.
    let second = read(&mut reader, 2);
    assert_eq!(&second.payload[..], &[2u8; 300][..]);
    assert_ne!(second.payload.as_ptr(), at);
    assert_eq!(&first.payload[..], &[1u8; 300][..], "a message handed out is never written over");
    let at = second.payload.as_ptr();
    drop(first);
    drop(second);
    // Both dropped: the next message is assembled where the last one was.
    let third = read(&mut reader, 3);
    assert_eq!(&third.payload[..], &[3u8; 300][..]);
    assert_eq!(third.payload.as_ptr(), at);
}

/// Edits the channel file as an operator's tool does (write aside, rename over).
fn edit_channels(s: &Setup, edit: impl FnOnce(&mut catalogue::file::ChannelList)) {
    let path = s._dir.0.join("channels.json");
    let mut list: catalogue::file::ChannelList =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    edit(&mut list);
    let tmp = path.with_extension("edit");
    std::fs::write(&tmp, serde_json::to_vec(&list).expect("json")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}

fn now_unix() -> u64 {
    ingest::hub::now_us() / 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_key_is_cut_off_and_the_owners_new_key_publishes() {
    let s = setup("revoke").await;
    // Someone with the leaked key is on air.
    let mut thief = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("publish accepted");
    publish_start(&mut thief).await;
    assert_eq!(s.hub.revalidate(&*s.auth, now_unix()), 0, "a valid key stays on air");
    // The owner rotates the key with no grace.
    let new_key = "owners-new-key-0123456789";
    edit_channels(&s, |l| {
        let news = l.channels.iter_mut().find(|c| c.name == "news").expect("news");
        news.stream_key_sha256 = vec![swarm::piece::encode_hex(&catalogue::secrets::hash_stream_key(new_key))];
    });
    assert_eq!(s.hub.revalidate(&*s.auth, now_unix()), 1);
    let ch = s.hub.channel("news").expect("channel");
    assert!(!ch.live(), "the channel is free at once");
    // The thief's connection is closed by ingest, without waiting for its next tag.
    tokio::time::timeout(std::time::Duration::from_secs(10), thief.wait_closed())
        .await
        .expect("the revoked session's connection is closed");
    match RtmpPublisher::connect(s.addr, "live", &s.key).await {
        Err(ClientError::Refused(why)) => assert!(why.contains("unknown stream key"), "{why}"),
        other => panic!("the old key publishes again: {other:?}"),
    }
    // The owner's new key publishes: no "already publishing", no takeover needed.
    let mut owner = RtmpPublisher::connect(s.addr, "live", new_key).await.expect("the new key publishes");
    publish_start(&mut owner).await;
    assert_eq!(s.hub.revalidate(&*s.auth, now_unix()), 0);
    // A catalogue that can't be read ends nothing.
    let path = s._dir.0.join("channels.json");
    let good = std::fs::read(&path).expect("read");
    std::fs::write(&path, b"{ not json").expect("write");
    assert_eq!(s.hub.revalidate(&*s.auth, now_unix()), 0, "an unreadable catalogue ends nothing");
    assert!(ch.live());
    std::fs::write(&path, good).expect("write");
    // Disabling the channel ends the owner's session too.
    edit_channels(&s, |l| {
        let news = l.channels.iter_mut().find(|c| c.name == "news").expect("news");
        news.status = catalogue::file::ChannelStatus::Disabled;
    });
    assert_eq!(s.hub.revalidate(&*s.auth, now_unix()), 1);
    tokio::time::timeout(std::time::Duration::from_secs(10), owner.wait_closed())
        .await
        .expect("the disabled channel's connection is closed");
    let m = s.hub.metrics.render();
    assert!(m.contains("shoal_ingest_sessions_revoked_total{reason=\"unknown_key\"} 1\n"), "{m}");
    assert!(m.contains("shoal_ingest_sessions_revoked_total{reason=\"channel_disabled\"} 1\n"), "{m}");
    assert!(m.contains("shoal_ingest_publisher_takeovers_total 0\n"), "{m}");
    assert!(m.contains("shoal_ingest_publishers_active 0\n"), "{m}");
}

/// A grant for "news", as a catalogue gives it.
fn news_grant() -> catalogue::admission::Grant {
    catalogue::admission::Grant {
        channel: "news".into(),
        key: Arc::new(swarm::piece::ChannelKeypair::from_secret_bytes(&[5; 32])),
        carries_ads: false,
        srt_passphrase: None,
    }
}

/// Stands in for a catalogue whose answer the test changes.
#[derive(Debug)]
struct Switch(std::sync::Mutex<Result<String, catalogue::admission::Refusal>>);

impl Authorizer for Switch {
    fn check(&self, _key: &str, _now: u64) -> Result<String, catalogue::admission::Refusal> {
        self.0.lock().expect("lock").clone()
    }

    fn authorize(&self, _key: &str, _now: u64) -> Result<catalogue::admission::Grant, catalogue::admission::Refusal> {
        unreachable!("sessions here start without it")
    }
}

#[tokio::test(start_paused = true)]
async fn live_sessions_are_checked_every_half_second() {
    use catalogue::admission::Refusal;
    use ingest::hub::{CHECK_EVERY, Ended, Protocol};
    let hub = Hub::new(HubConfig::default());
    let grant = news_grant();
    let auth = Arc::new(Switch(std::sync::Mutex::new(Ok("news".into()))));
    let ip = std::net::IpAddr::from([192, 0, 2, 1]);
    let publisher = hub.begin_publish(&grant, "k", ip, Protocol::Rtmp).expect("publish");
    let refreshes = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = refreshes.clone();
    tokio::spawn(ingest::hub::keep_checking(hub.clone(), auth.clone(), CHECK_EVERY, move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async { Ok(()) }
    }));
    // An unreadable catalogue for 5 s: the session stays.
    *auth.0.lock().expect("lock") = Err(Refusal::Directory("down".into()));
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert!(hub.channel("news").expect("channel").live());
    // The channel is disabled: the session ends at the next check.
    *auth.0.lock().expect("lock") = Err(Refusal::Disabled("news".into()));
    let changed = tokio::time::Instant::now();
    let mut cancelled = publisher.cancelled();
    let why = cancelled.wait_for(Option::is_some).await.expect("ended").clone();
    assert_eq!(why, Some(Ended::Revoked(Refusal::Disabled("news".into()))));
    assert!(changed.elapsed() <= CHECK_EVERY, "ended {:?} after the change", changed.elapsed());
    assert!(refreshes.load(std::sync::atomic::Ordering::Relaxed) >= 10, "the catalogue is looked at each check");
    // Another address publishes at once: the channel is not held by the ended session.
    let other = std::net::IpAddr::from([198, 51, 100, 7]);
    drop(hub.begin_publish(&grant, "k2", other, Protocol::Rtmp).expect("the channel is free"));
    drop(publisher);
    assert!(hub.metrics.render().contains("shoal_ingest_publishers_active 0\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_faster_than_real_time_is_held_to_the_clock() {
    // Unpaced, the fixture pushed twice (8 s of media in milliseconds) would carry
    // media times seconds past the wall clock, and numbers a restarted ingest would
    // have to jump over.
    use ingest::hub::{PACE_SLACK_US, clock_seq, now_us};
    let s = setup("fast").await;
    let mut p = RtmpPublisher::connect(s.addr, "live", &s.key).await.expect("publish accepted");
    publish_fixture(&mut p).await;
    publish_fixture(&mut p).await;
    p.close().await.expect("close");
    wait_for_session_end(&s.hub).await;
    let ended = now_us();
    let all = window(&s.hub.channel("news").expect("channel"));
    assert!(all.len() >= 120, "{} pieces", all.len());
    for piece in &all {
        // The media's wall time was reached before the session ended, within the slack
        // a feed may run ahead before it is paused: it was held back.
        assert!(
            piece.timestamp_us() <= ended + PACE_SLACK_US + 100_000,
            "piece {} is {} µs ahead",
            piece.seq(),
            piece.timestamp_us() - ended
        );
        let clock = clock_seq(piece.timestamp_us());
        assert!(piece.seq() <= clock + 4, "piece {} sealed when the clock was at {clock}", piece.seq());
    }
    let m = s.hub.metrics.render();
    assert!(!m.contains("shoal_ingest_publisher_paced_total 0\n"), "the publisher was held back: {m}");
}

/// An ingest restarted (sharing the epoch store, as nodes on one catalogue do; or with a
/// store of its own) numbers a new feed above everything the old run made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_ingest_numbers_above_the_old_run() {
    use ingest::epochs::{EpochStore, MemoryEpochs};
    use ingest::hub::{Protocol, clock_seq, now_us};
    let tags = media_tags();
    let shared: Arc<dyn EpochStore> = Arc::new(MemoryEpochs::default());
    let grant = news_grant();
    let ip = std::net::IpAddr::from([192, 0, 2, 1]);
    let mut last = 0;
    let stores = [shared.clone(), shared.clone(), Arc::new(MemoryEpochs::default())];
    for (run, store) in (0u32..).zip(stores) {
        let hub = Hub::new(HubConfig { epochs: store, ..HubConfig::default() });
        let mut p = hub.begin_publish(&grant, "k", ip, Protocol::Rtmp).expect("publish");
        // Each run an encoder started afresh: its clock elsewhere. Held to the clock as
        // the listeners hold it.
        for t in tags.iter().take_while(|t| t.timestamp < 500) {
            if let Some(wait) = p.ahead_of_clock() {
                tokio::time::sleep(wait).await;
            }
            let ts = t.timestamp + run * 3_600_000;
            let r = push(&mut p, t, ts).await;
            r.expect("taken");
        }
        let pieces = window(&hub.channel("news").expect("channel"));
        let first = pieces.first().expect("pieces").seq();
        assert!(first > last, "a restart numbers from {first}, the old run ended at {last}");
        assert!(first <= clock_seq(now_us()) + 1, "{first} is ahead of the clock");
        last = pieces.last().expect("pieces").seq();
    }
}

#[tokio::test]
async fn a_publisher_that_does_not_wait_for_the_clock_is_ended() {
    use ingest::hub::{MAX_AHEAD_OF_CLOCK, Protocol, PublishError, SEQ_PER_SECOND};
    let hub = Hub::new(HubConfig::default());
    let grant = news_grant();
    let mut p = hub.begin_publish(&grant, "k", std::net::IpAddr::from([192, 0, 2, 1]), Protocol::Rtmp).expect("ok");
    let tags = media_tags();
    let mut ended = None;
    'replay: for pass in 0..20u32 {
        for t in &tags {
            let ts = t.timestamp + pass * 4_040;
            let r = push(&mut p, t, ts).await;
            if let Err(e) = r {
                ended = Some(e);
                break 'replay;
            }
        }
    }
    match ended {
        Some(PublishError::AheadOfClock(ms)) => assert!(ms > MAX_AHEAD_OF_CLOCK * 1_000 / SEQ_PER_SECOND, "{ms}"),
        other => panic!("80 s of media in a moment was taken: {other:?}"),
    }
    assert!(hub.metrics.render().contains("shoal_ingest_bad_input_total{kind=\"ahead_of_clock\"} 1\n"));
}

/// Two nodes on one epoch store, two different feeds: the second binds a new epoch (its
/// timeline is not the first's), and the first, which learns of it off its media path,
/// ends its session at a keyframe: another feed publishes the channel now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_channel_another_feed_took_ends_its_session() {
    use ingest::epochs::{EpochStore, MemoryEpochs};
    use ingest::hub::{Protocol, PublishError};
    let tags = media_tags();
    let store: Arc<dyn EpochStore> = Arc::new(MemoryEpochs::default());
    let grant = news_grant();
    let ip = std::net::IpAddr::from([192, 0, 2, 1]);
    let first = Hub::new(HubConfig { epochs: store.clone(), ..HubConfig::default() });
    let second = Hub::new(HubConfig { epochs: store.clone(), ..HubConfig::default() });
    let mut a = first.begin_publish(&grant, "k", ip, Protocol::Rtmp).expect("publish");
    let mut b = second.begin_publish(&grant, "k", ip, Protocol::Rtmp).expect("publish");
    let mut ended = None;
    for t in &tags {
        if let Some(wait) = a.ahead_of_clock() {
            tokio::time::sleep(wait).await;
        }
        let r = push(&mut a, t, t.timestamp).await;
        if let Err(e) = r {
            ended = Some((t.timestamp, e));
            break;
        }
        // 1.5 s in, another encoder (its clock an hour away) publishes on the second node.
        if (1_500..1_540).contains(&t.timestamp) {
            for t in tags.iter().take(8) {
                let ts = t.timestamp + 3_600_000;
                let r = push(&mut b, t, ts).await;
                r.expect("the second feed is taken");
            }
        }
    }
    let newest = store.latest("news").await.expect("store").expect("an epoch");
    match ended {
        Some((at, PublishError::OtherFeed(n))) => {
            assert_eq!(n, newest.number, "the second feed's epoch");
            assert!(at < 3_600, "ended at {at} ms of media: by the keyframe after the next check");
        }
        other => panic!("the first feed went on: {other:?}"),
    }
    assert!(first.metrics.render().contains("shoal_ingest_epoch_events_total{event=\"other_feed\"} 1\n"));
    assert!(second.metrics.render().contains("shoal_ingest_epoch_events_total{event=\"created\"} 1\n"));
}

/// The fixture's media tags (its script data left out).
fn media_tags() -> Vec<flv::FileTag<'static>> {
    flv::read_file(FIXTURE).expect("fixture").into_iter().filter(|t| t.kind != TAG_SCRIPT).collect()
}

/// One of the fixture's tags into a publish session, at timestamp `ts`.
async fn push(p: &mut ingest::hub::Publisher, t: &flv::FileTag<'_>, ts: u32) -> Result<(), ingest::hub::PublishError> {
    let body = bytes::Bytes::copy_from_slice(t.body);
    if t.kind == flv::TAG_VIDEO { p.push_video(ts, body).await } else { p.push_audio(ts, body).await }
}
