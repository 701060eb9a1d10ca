//! Main/backup ingest as processes (issue 21). Two `shoal ingest` nodes share a data
//! directory (the channel file and the epochs file beside it); two seeders each read
//! both; viewers play through the tracker.
//!
//! (a) One ffmpeg pushes the same feed to both (`-f tee`). Both cut the same pieces —
//! numbers, bytes, signatures. The ingest most seeders take from is SIGKILLed: no viewer
//! misses a piece, and a player reading a viewer's `/live.ts` across the kill (ffmpeg
//! `-xerror`) decodes clean.
//! (b) One feed, to ingest A; A is SIGKILLed and the encoder (ffmpeg's FLV, relayed by
//! this test as an encoder with a backup URL relays: same clock, reconnecting after
//! 1.5 s) goes on to ingest B. Numbering goes on where the timeline says, on the same
//! epoch; no viewer skips more than the numbers the outage left unused.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Killed, eventually, ffmpeg_available, http_get, metric, start, word_after};
use swarm::piece::{Piece, PieceDecoder};

const TOKEN: &str = "failover-seeder-token";
const ANY: &str = "127.0.0.1:0";

/// A viewer's playout counter from its `/stats.json`.
fn stat(play: &str, key: &str) -> u64 {
    let (status, body) = http_get(&format!("http://{play}/stats.json"));
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// An ingest's whole live window, by number.
fn window(http: &str) -> BTreeMap<u64, Piece> {
    // `from=0` has left the window: the 410 says the oldest number held.
    let (status, body) = http_get(&format!("http://{http}/v1/channels/news/pieces?from=0&token={TOKEN}"));
    assert_eq!(status, 410, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body);
    let oldest: u64 = text.rsplit(' ').next().and_then(|s| s.trim().parse().ok()).unwrap();
    let url = format!("http://{http}/v1/channels/news/pieces?from={oldest}&follow=false&token={TOKEN}");
    let (status, body) = http_get(&url);
    assert_eq!(status, 200);
    let mut split = PieceDecoder::default();
    split.extend(&body);
    let mut out = BTreeMap::new();
    while let Some(p) = split.next_piece().unwrap() {
        out.insert(p.seq(), p);
    }
    out
}

/// Two ingest nodes on one data directory, a tracker, and the channel: what both tests
/// start from.
struct Setup {
    dir: std::path::PathBuf,
    data: String,
    key: String,
    channel_id: String,
    tracker: String,
    _tracker: Killed,
    /// (process, RTMP address, HTTP address)
    ingests: Vec<(Option<Killed>, String, String)>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup(name: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("shoal-failover-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["ingest", "add-channel", "news", "--data-dir", &data])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    let key = word_after(&said, "stream key (shown once): ");
    let channel_id = word_after(&said, "channel id (public key): ");
    let (tracker_child, lines) =
        start(&["tracker", "--data-dir", &data, "--listen", ANY, "--seeder-token", TOKEN], "TRACKER");
    let tracker = word_after(&lines, "TRACKER  ").trim_end_matches("/announce").to_owned();
    let ingest_args = [
        "ingest",
        "--data-dir",
        &data,
        "--rtmp-listen",
        ANY,
        "--srt-listen",
        ANY,
        "--http-listen",
        ANY,
        "--seeder-token",
        TOKEN,
    ];
    let mut ingests = Vec::new();
    for _ in 0..2 {
        let (child, lines) = start(&ingest_args, "HTTP");
        let rtmp = word_after(&lines, "RTMP  rtmp://").split('/').next().unwrap().to_owned();
        let http = word_after(&lines, "HTTP  http://");
        ingests.push((Some(child), rtmp, http));
    }
    Setup { dir, data, key, channel_id, tracker, _tracker: tracker_child, ingests }
}

impl Setup {
    /// Seeders reading both ingests: (process, metrics URL).
    fn seeders(&self, n: usize) -> Vec<(Killed, String)> {
        let both = [format!("http://{}", self.ingests[0].2), format!("http://{}", self.ingests[1].2)];
        (0..n)
            .map(|_| {
                let args = [
                    "seeder",
                    "--tracker",
                    &self.tracker,
                    "--ingest",
                    &both[0],
                    "--ingest",
                    &both[1],
                    "--channel",
                    "news",
                    "--seeder-token",
                    TOKEN,
                    "--data-dir",
                    &self.data,
                    "--listen",
                    ANY,
                    "--http",
                    ANY,
                    "--no-webrtc",
                ];
                let (child, lines) = start(&args, "SEEDER");
                let http = word_after(&lines, "browsers: http://").split('/').next().unwrap().to_owned();
                (child, format!("http://{http}/metrics"))
            })
            .collect()
    }

    /// Viewers: (process, play address).
    fn viewers(&self, n: usize) -> Vec<(Killed, String)> {
        (0..n)
            .map(|_| {
                let args = [
                    "viewer",
                    "--tracker",
                    &self.tracker,
                    "--channel-id",
                    &self.channel_id,
                    "--listen",
                    ANY,
                    "--play",
                    ANY,
                ];
                let (child, lines) = start(&args, "VIEWER  watch");
                let play = word_after(&lines, "ffplay http://").split('/').next().unwrap().to_owned();
                (child, play)
            })
            .collect()
    }

    /// SIGKILLs ingest `i`.
    fn kill(&mut self, i: usize) {
        let mut dead = self.ingests[i].0.take().unwrap();
        dead.0.kill().unwrap();
        dead.0.wait().unwrap();
    }

    /// Starts ingest `i` again on its old addresses.
    fn restart(&mut self, i: usize) {
        let (rtmp, http) = (self.ingests[i].1.clone(), self.ingests[i].2.clone());
        let args = [
            "ingest",
            "--data-dir",
            &self.data,
            "--rtmp-listen",
            &rtmp,
            "--srt-listen",
            ANY,
            "--http-listen",
            &http,
            "--seeder-token",
            TOKEN,
        ];
        self.ingests[i].0 = Some(start(&args, "HTTP").0);
    }
}

/// ffmpeg's test pattern and tone, H.264 + AAC, in real time, for `seconds`.
fn encoder(seconds: u32) -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-re"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", &seconds.to_string()])
        .args(["-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-g", "25"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
        .stdin(Stdio::null());
    c
}

#[test]
fn two_ingests_fed_by_one_encoder_cut_the_same_pieces_and_either_may_die() {
    if !ffmpeg_available() {
        return;
    }
    let mut s = setup("tee");
    let (key, ingests) = (&s.key, &s.ingests);
    // One encoder, two outputs (a hardware encoder's main and backup).
    let tee = format!(
        "[f=flv:onfail=ignore]rtmp://{}/live/{key}|[f=flv:onfail=ignore]rtmp://{}/live/{key}",
        ingests[0].1, ingests[1].1
    );
    // The tee muxer can't tell the encoders FLV wants global headers (ffmpeg's
    // documentation): without this, no AVC sequence header and no video.
    let _ffmpeg = Killed(encoder(90).args(["-flags", "+global_header", "-f", "tee", &tee]).spawn().unwrap());
    let seeders = s.seeders(2);
    let viewers = s.viewers(10);
    assert!(
        eventually(Duration::from_secs(40), || viewers.iter().all(|(_, play)| stat(play, "played") >= 100)),
        "every viewer plays 5 s"
    );

    // The same pieces from both: every number both hold, byte for byte (signatures too).
    let (a, b) = (window(&s.ingests[0].2), window(&s.ingests[1].2));
    let common: Vec<u64> = a.keys().filter(|s| b.contains_key(s)).copied().collect();
    assert!(common.len() >= 100, "{} numbers held by both (A {}, B {})", common.len(), a.len(), b.len());
    for s in &common {
        assert_eq!(a[s].wire(), b[s].wire(), "piece {s} differs between the two ingests");
    }
    eprintln!("ingests: {} pieces in common, identical", common.len());

    // Kill the ingest most seeders take their pieces from.
    let leading = |i: usize| -> f64 {
        let label = format!("ingest=\"{}\"", s.ingests[i].2);
        seeders.iter().map(|(_, m)| metric(m, "shoal_seeder_ingest_leading", &[&label])).sum()
    };
    let (la, lb) = (leading(0), leading(1));
    assert_eq!(la + lb, 2.0, "each seeder takes its pieces from one ingest");
    let leader = usize::from(lb > la);
    let led = la.max(lb);
    eprintln!("seeders taking from ingest A: {la}, from B: {lb}; killing {}", if leader == 0 { "A" } else { "B" });
    let skipped_before: u64 = viewers.iter().map(|(_, p)| stat(p, "skipped")).sum();
    let played_before: Vec<u64> = viewers.iter().map(|(_, p)| stat(p, "played")).collect();
    // A player on one viewer's /live.ts across the kill: 16 s of media, any decoder error fails it.
    let player = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-xerror", "-i"])
        .arg(format!("http://{}/live.ts", viewers[0].1))
        .args(["-t", "16", "-map", "0:v", "-f", "framecrc", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    s.kill(leader);
    // Ten seconds on the other ingest alone.
    assert!(
        eventually(Duration::from_secs(30), || viewers
            .iter()
            .zip(&played_before)
            .all(|((_, p), before)| stat(p, "played") >= before + 300)),
        "every viewer plays 15 s more"
    );
    let skipped: u64 = viewers.iter().map(|(_, p)| stat(p, "skipped")).sum::<u64>() - skipped_before;
    let failovers: f64 = seeders.iter().map(|(_, m)| metric(m, "shoal_seeder_ingest_failovers_total", &[])).sum();
    eprintln!("after the kill: {skipped} pieces skipped over 10 viewers; seeders' failovers {failovers}");
    assert_eq!(skipped, 0, "a viewer missed pieces when an ingest died");
    assert_eq!(failovers, led, "each seeder that took from the dead ingest failed over, once");
    let played = player.wait_with_output().unwrap();
    assert!(played.status.success(), "the player failed: {}", String::from_utf8_lossy(&played.stderr));
    let frames = String::from_utf8_lossy(&played.stdout).lines().filter(|l| l.starts_with("0,")).count();
    assert!(frames >= 350, "{frames} frames decoded across the kill (16 s at 25 fps)");
    drop((viewers, seeders));
}

/// FLV tags from a byte stream (ffmpeg's `-f flv -`), as they come: (kind, timestamp,
/// body); ends with the stream.
fn flv_tags(mut from: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<(u8, u32, Vec<u8>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    std::thread::spawn(move || {
        let mut header = [0u8; 13]; // FLV header, then the first PreviousTagSize
        if from.read_exact(&mut header).is_err() {
            return;
        }
        let mut head = [0u8; 11];
        while from.read_exact(&mut head).is_ok() {
            let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
            let ts = u32::from_be_bytes([head[7], head[4], head[5], head[6]]);
            let mut body = vec![0u8; size + 4]; // and the PreviousTagSize after it
            if from.read_exact(&mut body).is_err() {
                return;
            }
            body.truncate(size);
            if tx.send((head[0], ts, body)).is_err() {
                return;
            }
        }
    });
    rx
}

type Tag = (u8, u32, Vec<u8>);

/// Keeps the first sequence header (AVC/AAC packet type 0) of each track: an encoder
/// sends them first on every connection.
fn keep_config(configs: &mut Vec<Tag>, tag: &Tag) {
    let (kind, _, body) = tag;
    if (*kind == 8 || *kind == 9) && body.get(1) == Some(&0) && configs.iter().all(|c| c.0 != *kind) {
        configs.push(tag.clone());
    }
}

/// The tags onto a tokio channel.
fn to_async(tags: std::sync::mpsc::Receiver<Tag>) -> tokio::sync::mpsc::Receiver<Tag> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    std::thread::spawn(move || {
        for t in tags {
            if tx.blocking_send(t).is_err() {
                return;
            }
        }
    });
    rx
}

/// An encoder with a main and a backup URL: pushes the tags to `targets[0]`; when that
/// connection fails, waits `retry` (the frames meanwhile are lost, as live frames are)
/// and goes on to the next target with the same clock, sequence headers first. Returns
/// when the tags end; says on `switched` when it moved.
async fn relay(
    tags: std::sync::mpsc::Receiver<Tag>,
    targets: Vec<std::net::SocketAddr>,
    key: String,
    retry: Duration,
    switched: std::sync::mpsc::Sender<Instant>,
) {
    use ingest::rtmp_client::RtmpPublisher;
    let mut rx = to_async(tags);
    let mut configs: Vec<Tag> = Vec::new();
    let mut target = 0;
    let mut p = RtmpPublisher::connect(targets[0], "live", &key).await.unwrap();
    while let Some(tag) = rx.recv().await {
        keep_config(&mut configs, &tag);
        let (kind, ts, body) = tag;
        if kind == 18 {
            continue;
        }
        if p.send_tag(kind, ts, &body).await.is_ok() {
            continue;
        }
        // The main ingest is gone: the backup, after the encoder's retry delay.
        let failed = Instant::now();
        target += 1;
        let Some(&next) = targets.get(target) else { return };
        tokio::time::sleep(retry.saturating_sub(failed.elapsed())).await;
        while rx.try_recv().is_ok() {} // what was encoded meanwhile is not sent late
        p = RtmpPublisher::connect(next, "live", &key).await.unwrap();
        for (kind, ts, body) in &configs {
            p.send_tag(*kind, *ts, body).await.unwrap();
        }
        let _ = switched.send(Instant::now());
    }
}

/// An encoder pushing the same tags to every target at once (a hardware encoder's main
/// and backup outputs): each output reconnects on its own every `retry`, sequence
/// headers first, the clock unchanged. Says on `connected` each time an output
/// (re)connects.
async fn fan_out(
    tags: std::sync::mpsc::Receiver<Tag>,
    targets: Vec<std::net::SocketAddr>,
    key: String,
    retry: Duration,
    connected: std::sync::mpsc::Sender<usize>,
) {
    use ingest::rtmp_client::RtmpPublisher;
    let mut rx = to_async(tags);
    let (tx, _) = tokio::sync::broadcast::channel::<Tag>(4096);
    let configs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Tag>::new()));
    for (i, target) in targets.into_iter().enumerate() {
        let (mut feed, configs, key, connected) = (tx.subscribe(), configs.clone(), key.clone(), connected.clone());
        tokio::spawn(async move {
            loop {
                let Ok(mut p) = RtmpPublisher::connect(target, "live", &key).await else {
                    tokio::time::sleep(retry).await;
                    continue;
                };
                let headers = configs.lock().unwrap().clone();
                let mut ok = true;
                for (kind, ts, body) in &headers {
                    ok &= p.send_tag(*kind, *ts, body).await.is_ok();
                }
                let _ = connected.send(i);
                feed = feed.resubscribe(); // from now on: what was encoded meanwhile is lost
                while ok {
                    match feed.recv().await {
                        Ok((18, _, _)) => {}
                        Ok((kind, ts, body)) => ok = p.send_tag(kind, ts, &body).await.is_ok(),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
                tokio::time::sleep(retry).await;
            }
        });
    }
    while let Some(tag) = rx.recv().await {
        keep_config(&mut configs.lock().unwrap(), &tag);
        let _ = tx.send(tag);
    }
}

/// (a), the other half: the killed ingest restarted on its addresses is fed again by the
/// encoder's output that reconnects, joins the epoch the other ingest is cutting, and
/// cuts the same pieces (from its second keyframe on: its first segment is withheld).
#[test]
fn a_killed_ingest_restarted_rejoins_with_the_same_pieces() {
    if !ffmpeg_available() {
        return;
    }
    let mut s = setup("rejoin");
    let mut ffmpeg = Killed(encoder(90).args(["-f", "flv", "-"]).stdout(Stdio::piped()).spawn().unwrap());
    let tags = flv_tags(ffmpeg.0.stdout.take().unwrap());
    let targets: Vec<std::net::SocketAddr> = s.ingests.iter().map(|i| i.1.parse().unwrap()).collect();
    let (connected_tx, connected) = std::sync::mpsc::channel();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.spawn(fan_out(tags, targets, s.key.clone(), Duration::from_millis(300), connected_tx));
    let seeders = s.seeders(2);
    let viewers = s.viewers(4);
    assert!(
        eventually(Duration::from_secs(40), || viewers.iter().all(|(_, play)| stat(play, "played") >= 100)),
        "every viewer plays 5 s"
    );
    let skipped_before: u64 = viewers.iter().map(|(_, p)| stat(p, "skipped")).sum();
    while connected.try_recv().is_ok() {}
    s.kill(0);
    std::thread::sleep(Duration::from_secs(2));
    s.restart(0);
    assert_eq!(connected.recv_timeout(Duration::from_secs(10)), Ok(0), "the encoder's output reconnected to A");
    // A's own pieces: its second keyframe on (1 s GOPs), then 3 s of them.
    let a_http = s.ingests[0].2.clone();
    assert!(
        eventually(Duration::from_secs(20), || {
            let (status, _) = http_get(&format!("http://{a_http}/v1/channels/news/pieces?from=0&token={TOKEN}"));
            status == 410 && window(&a_http).len() >= 60
        }),
        "the restarted ingest cuts pieces"
    );
    let (a, b) = (window(&s.ingests[0].2), window(&s.ingests[1].2));
    let common: Vec<u64> = a.keys().filter(|n| b.contains_key(n)).copied().collect();
    assert!(common.len() >= 50, "{} numbers held by both", common.len());
    for n in &common {
        assert_eq!(a[n].wire(), b[n].wire(), "piece {n} differs between the rejoined ingest and the other");
    }
    let a_metrics = format!("http://{a_http}/metrics");
    assert!(metric(&a_metrics, "shoal_ingest_pieces_withheld_total", &[]) >= 1.0, "its first segment was withheld");
    assert_eq!(metric(&a_metrics, "shoal_ingest_epoch_events_total", &["event=\"joined\""]), 1.0);
    let skipped: u64 = viewers.iter().map(|(_, p)| stat(p, "skipped")).sum::<u64>() - skipped_before;
    eprintln!("rejoined: {} numbers in common, identical; {skipped} pieces skipped over 4 viewers", common.len());
    assert_eq!(skipped, 0, "viewers lost nothing while an ingest died and came back");
    drop((viewers, seeders, ffmpeg));
}

#[test]
fn a_feed_moved_to_the_backup_ingest_goes_on_where_its_timeline_says() {
    if !ffmpeg_available() {
        return;
    }
    let mut s = setup("move");
    let mut ffmpeg = Killed(encoder(90).args(["-f", "flv", "-"]).stdout(Stdio::piped()).spawn().unwrap());
    let tags = flv_tags(ffmpeg.0.stdout.take().unwrap());
    let targets: Vec<std::net::SocketAddr> = s.ingests.iter().map(|i| i.1.parse().unwrap()).collect();
    let (switched_tx, switched) = std::sync::mpsc::channel();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let key = s.key.clone();
    rt.spawn(relay(tags, targets, key, Duration::from_millis(1_500), switched_tx));
    let seeders = s.seeders(2);
    let viewers = s.viewers(4);
    assert!(
        eventually(Duration::from_secs(40), || viewers.iter().all(|(_, play)| stat(play, "played") >= 100)),
        "every viewer plays 5 s"
    );
    let skipped_before: Vec<u64> = viewers.iter().map(|(_, p)| stat(p, "skipped")).collect();
    let played_before: Vec<u64> = viewers.iter().map(|(_, p)| stat(p, "played")).collect();
    let a_newest = *window(&s.ingests[0].2).keys().next_back().unwrap();
    let killed = Instant::now();
    s.kill(0);
    let moved = switched.recv_timeout(Duration::from_secs(10)).expect("the encoder went on to the backup");
    let outage = moved - killed;
    assert!(
        eventually(Duration::from_secs(30), || viewers
            .iter()
            .zip(&played_before)
            .all(|((_, p), before)| stat(p, "played") >= before + 200)),
        "every viewer plays 10 s more"
    );
    // B numbers on A's epoch, where the timeline says: past A's newest by the outage
    // and the wait for the feed's next keyframe (a GOP is 1 s here) at 20 numbers a
    // second, nothing flagged as a new timeline.
    let b = window(&s.ingests[1].2);
    let b_first = *b.keys().next().unwrap();
    let hole = b_first - a_newest - 1;
    eprintln!("outage {outage:?}: A's newest {a_newest}, B's first {b_first} ({hole} numbers unused)");
    assert!(b_first > a_newest);
    let bound = (outage.as_secs_f64() + 1.0 + 0.5) * 20.0;
    assert!(hole as f64 <= bound, "a jump of {hole} numbers for a {outage:?} outage (at most {bound:.0})");
    assert!(b.values().all(|p| !p.flags().contains(swarm::piece::PieceFlags::DISCONTINUITY)), "no new epoch");
    let b_metrics = format!("http://{}/metrics", s.ingests[1].2);
    assert_eq!(metric(&b_metrics, "shoal_ingest_pieces_withheld_total", &[]), 0.0, "B alone published at once");
    assert_eq!(metric(&b_metrics, "shoal_ingest_epoch_events_total", &["event=\"joined\""]), 1.0);
    for (((_, p), before), after_played) in viewers.iter().zip(&skipped_before).zip(&played_before) {
        let skipped = stat(p, "skipped") - before;
        eprintln!("viewer {p}: skipped {skipped} over the move, played {}", stat(p, "played") - after_played);
        assert!(skipped <= hole, "a viewer skipped {skipped} pieces, more than the {hole} the outage left unused");
    }
    let failovers: f64 = seeders.iter().map(|(_, m)| metric(m, "shoal_seeder_ingest_failovers_total", &[])).sum();
    assert_eq!(failovers, 2.0, "both seeders went on with B");
    drop((viewers, seeders, ffmpeg));
}
