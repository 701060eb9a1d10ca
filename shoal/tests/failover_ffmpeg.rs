//! Main/backup ingest as processes (issue 21). Two `shoal ingest` nodes share a data
//! directory (the channel file and the epochs file beside it); two seeders each read
//! both; viewers play through the tracker.
//!
//! (a) One ffmpeg pushes the same feed to both (`-f tee`). Both cut the same pieces —
//! numbers, bytes, signatures. The ingest most seeders take from is SIGKILLed: no viewer
//! misses a piece, and a player reading a viewer's `/live.ts` across the kill (ffmpeg
//! `-xerror`) decodes clean.
//! (b) One feed, to ingest A; A is SIGKILLed and the encoder (ffmpeg's FLV through
//! `shoal relay --mode backup`: an encoder with a backup URL, the same clock,
//! reconnecting after 1.5 s) goes on to ingest B. Numbering goes on where the timeline says, on the same
//! epoch; no viewer skips more than the numbers the outage left unused.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Killed, eventually, ffmpeg_available, http_get, metric, start, word_after};
use swarm::piece::{Piece, PieceDecoder};

const TOKEN: &str = "failover-seeder-token";
const ANY: &str = "127.0.0.1:0";

/// A viewer's `/stats.json`.
fn stats(play: &str) -> serde_json::Value {
    let (status, body) = http_get(&format!("http://{play}/stats.json"));
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

/// A viewer's playout counter from its `/stats.json`.
fn stat(play: &str, key: &str) -> u64 {
    let v = stats(play);
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// The runs of numbers a viewer skipped, `(first, last)`, the newest few.
fn skipped_runs(play: &str) -> Vec<(u64, u64)> {
    let v = stats(play);
    let runs = v["skipped_runs"].as_array().unwrap_or_else(|| panic!("skipped_runs in {v}"));
    runs.iter().map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap())).collect()
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
    /// (process, RTMP address, HTTP address, SRT address)
    ingests: Vec<(Option<Killed>, String, String, String)>,
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
    let (key, channel_id) = common::add_channel(&data, "news");
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
        let srt = word_after(&lines, "SRT   srt://").split('?').next().unwrap().to_owned();
        ingests.push((Some(child), rtmp, http, srt));
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
    let s = setup("tee");
    let url = |i: usize| format!("[f=flv:onfail=ignore]rtmp://{}/live/{}", s.ingests[i].1, s.key);
    // The tee muxer can't tell the encoders FLV wants global headers (ffmpeg's
    // documentation): without this, no AVC sequence header and no video.
    let ffmpeg = encoder(90).args(["-flags", "+global_header", "-f", "tee", &format!("{}|{}", url(0), url(1))]).spawn();
    tee_and_kill(s, Killed(ffmpeg.unwrap()));
}

/// (a) over SRT: an encoder's two SRT outputs (MPEG-TS, 33-bit clock) to two ingests.
#[test]
fn two_ingests_fed_over_srt_cut_the_same_pieces_and_either_may_die() {
    if !ffmpeg_available() {
        return;
    }
    let s = setup("tee-srt");
    let url = |i: usize| {
        format!("[f=mpegts:onfail=ignore]srt://{}?streamid=#!::r=live/{}\\,m=publish", s.ingests[i].3, s.key)
    };
    let ffmpeg = encoder(90).args(["-f", "tee", &format!("{}|{}", url(0), url(1))]).spawn();
    tee_and_kill(s, Killed(ffmpeg.unwrap()));
}

/// Both ingests fed by `ffmpeg`: they cut the same pieces; the ingest most seeders take
/// from is SIGKILLed and no viewer misses a piece.
fn tee_and_kill(mut s: Setup, ffmpeg: Killed) {
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
    drop((viewers, seeders, ffmpeg));
}

/// ffmpeg's FLV through `shoal relay --mode {mode}` to both ingests (A first): the
/// processes, and each connection the relay makes as (when, which ingest).
fn relayed(s: &Setup, mode: &str, retry_ms: u64) -> (Killed, Killed, std::sync::mpsc::Receiver<(Instant, usize)>) {
    let mut ffmpeg = Killed(encoder(90).args(["-f", "flv", "-"]).stdout(Stdio::piped()).spawn().unwrap());
    let mut args = vec!["relay".to_owned(), "--mode".to_owned(), mode.to_owned(), "--retry-ms".to_owned()];
    args.push(retry_ms.to_string());
    for i in &s.ingests {
        args.extend(["--to".to_owned(), format!("rtmp://{}/live/{}", i.1, s.key)]);
    }
    let mut relay = Killed(
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(&args)
            .stdin(ffmpeg.0.stdout.take().unwrap())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = relay.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(i) = line.strip_prefix("RELAY connected ").and_then(|r| r.split(' ').next()?.parse().ok()) {
                let _ = tx.send((Instant::now(), i));
            }
        }
    });
    (ffmpeg, relay, rx)
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
    let (ffmpeg, relay, connected) = relayed(&s, "all", 300);
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
    assert_eq!(connected.recv_timeout(Duration::from_secs(10)).map(|c| c.1), Ok(0), "the output to A reconnected");
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
    drop((viewers, seeders, relay, ffmpeg));
}

#[test]
fn a_feed_moved_to_the_backup_ingest_goes_on_where_its_timeline_says() {
    if !ffmpeg_available() {
        return;
    }
    let mut s = setup("move");
    let (ffmpeg, relay, connected) = relayed(&s, "backup", 1_500);
    assert_eq!(connected.recv_timeout(Duration::from_secs(20)).map(|c| c.1), Ok(0), "the relay pushes to A");
    let seeders = s.seeders(2);
    let viewers = s.viewers(4);
    assert!(
        eventually(Duration::from_secs(40), || viewers.iter().all(|(_, play)| stat(play, "played") >= 100)),
        "every viewer plays 5 s"
    );
    let runs_before: Vec<Vec<(u64, u64)>> = viewers.iter().map(|(_, p)| skipped_runs(p)).collect();
    let played_before: Vec<u64> = viewers.iter().map(|(_, p)| stat(p, "played")).collect();
    let a_newest = *window(&s.ingests[0].2).keys().next_back().unwrap();
    let killed = Instant::now();
    s.kill(0);
    let (moved, to) = connected.recv_timeout(Duration::from_secs(10)).expect("the encoder went on to the backup");
    assert_eq!(to, 1, "the backup is B");
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
    // What a viewer skipped over the move is the numbers the outage left unused, and at
    // most A's newest as well: a piece A had published but not yet written to any
    // seeder's stream when it was SIGKILLed dies with it.
    for (((_, p), before), played_before) in viewers.iter().zip(&runs_before).zip(&played_before) {
        let runs: Vec<(u64, u64)> = skipped_runs(p).into_iter().filter(|r| !before.contains(r)).collect();
        let skipped: u64 = runs.iter().map(|(first, last)| last - first + 1).sum();
        eprintln!("viewer {p}: skipped {skipped} over the move {runs:?}, played {}", stat(p, "played") - played_before);
        for (first, last) in &runs {
            assert!(
                *first >= a_newest && *last < b_first,
                "a viewer skipped {first}..={last}, outside what the outage left unused and A's newest ({a_newest} ≤ n < {b_first})"
            );
        }
    }
    let failovers: f64 = seeders.iter().map(|(_, m)| metric(m, "shoal_seeder_ingest_failovers_total", &[])).sum();
    assert_eq!(failovers, 2.0, "both seeders went on with B");
    drop((viewers, seeders, relay, ffmpeg));
}
