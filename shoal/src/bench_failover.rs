//! `shoal bench failover`: main/backup ingest failovers as processes on loopback, N
//! times (issue 21). Each run starts a tracker, two `shoal ingest` nodes on one data
//! directory, two seeders reading both and viewers through the tracker, then:
//! - (a) ffmpeg pushes one feed to both ingests (`-f tee`); the ingest most seeders
//!   take from is SIGKILLed;
//! - (b) ffmpeg's feed goes to ingest A through `shoal relay --mode backup` (an encoder
//!   with a backup URL, retrying after 1.5 s); A is SIGKILLed and the feed moves to B.
//!
//! Every viewer's `/stats.json` and every seeder's `/metrics` are polled every 50 ms:
//! pieces lost (viewers' `skipped` over the 12 s after the kill), the longest time a
//! viewer played nothing (after the kill, and over the 4 s before it: what polling
//! alone shows), and how long after the kill each seeder that took from the dead
//! ingest failed over. Writes `target/bench/bench-failover.json`, prints a table,
//! asserts nothing. Needs ffmpeg.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::bench_nginx::{Reaped, http_get};

#[derive(Debug, clap::Args)]
pub(crate) struct FailoverBenchArgs {
    /// Runs of each arrangement.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Viewer processes per run.
    #[arg(long, default_value_t = 6)]
    viewers: u32,
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

const TOKEN: &str = "bench-failover-token";
const ANY: &str = "127.0.0.1:0";
/// How often viewers and seeders are polled.
const POLL: Duration = Duration::from_millis(50);
/// Watched before the kill (the polling's own floor) and after it.
const BEFORE: Duration = Duration::from_secs(4);
const AFTER: Duration = Duration::from_secs(12);
/// The relay's wait before it moves to the backup (an encoder's retry delay).
const RETRY_MS: u64 = 1_500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Arrangement {
    /// One encoder to both ingests; the one most seeders take from dies.
    #[serde(rename = "a-tee")]
    Tee,
    /// One feed to A; A dies; the encoder moves to B.
    #[serde(rename = "b-move")]
    Move,
}

#[derive(Debug, Serialize)]
struct Run {
    arrangement: Arrangement,
    viewers: u32,
    /// Pieces the viewers skipped after the kill, all of them together and the most of
    /// one, less the numbers the outage left unused (never made; (b) only).
    lost_total: u64,
    lost_max: u64,
    /// (b): numbers between A's newest before the kill and B's first.
    unused: Option<u64>,
    /// The longest time a viewer played nothing after the kill, and before it (the
    /// polling floor), ms.
    longest_stall_ms: u64,
    stall_floor_ms: u64,
    /// (b): from the kill to the encoder's connection to the backup, ms.
    outage_ms: Option<u64>,
    /// From the kill to each failover of a seeder that took from the dead ingest, ms.
    seeder_switch_ms: Vec<u64>,
}

#[derive(Debug, Serialize)]
struct Summary {
    arrangement: Arrangement,
    runs: usize,
    lost_per_failover_max: u64,
    longest_stall_ms: u64,
    stall_floor_ms: u64,
    seeder_switch_ms_max: u64,
    /// (a): 0 lost, no stall past the floor; (b): a stall of at most the outage + 1 s.
    target: String,
    met: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    runs: Vec<Run>,
    summary: Vec<Summary>,
}

pub(crate) fn run(a: FailoverBenchArgs) -> anyhow::Result<()> {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        bail!("ffmpeg is needed (apt-get install -y ffmpeg)");
    }
    let mut runs = Vec::new();
    for i in 0..a.runs.max(1) {
        for arrangement in [Arrangement::Tee, Arrangement::Move] {
            let r = once(arrangement, a.viewers.max(1)).with_context(|| format!("run {i}, {arrangement:?}"))?;
            eprintln!("run {i} {arrangement:?}: {r:?}");
            runs.push(r);
        }
    }
    let summary: Vec<Summary> = [Arrangement::Tee, Arrangement::Move].iter().map(|a| summarize(*a, &runs)).collect();
    print_table(&runs, &summary);
    crate::machine::write_bench_json(&a.out.join("bench-failover.json"), &Report { runs, summary })
}

fn summarize(arrangement: Arrangement, runs: &[Run]) -> Summary {
    let of: Vec<&Run> = runs.iter().filter(|r| r.arrangement == arrangement).collect();
    let max = |f: &dyn Fn(&Run) -> u64| of.iter().map(|r| f(r)).max().unwrap_or(0);
    let (lost, stall, floor) = (max(&|r| r.lost_max), max(&|r| r.longest_stall_ms), max(&|r| r.stall_floor_ms));
    let switch = max(&|r| r.seeder_switch_ms.iter().copied().max().unwrap_or(0));
    let (target, met) = match arrangement {
        Arrangement::Tee => (
            "0 lost; stall <= floor + 100 ms".to_owned(),
            of.iter().all(|r| r.lost_total == 0 && r.longest_stall_ms <= r.stall_floor_ms + 100),
        ),
        Arrangement::Move => (
            "0 lost beyond the unused numbers; stall <= outage + 1 s".to_owned(),
            of.iter().all(|r| r.lost_total == 0 && r.outage_ms.is_some_and(|o| r.longest_stall_ms <= o + 1_000)),
        ),
    };
    Summary {
        arrangement,
        runs: of.len(),
        lost_per_failover_max: lost,
        longest_stall_ms: stall,
        stall_floor_ms: floor,
        seeder_switch_ms_max: switch,
        target,
        met,
    }
}

fn print_table(runs: &[Run], summary: &[Summary]) {
    println!(
        "{:<8} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9}  seeder switch ms",
        "run", "viewers", "lost", "lost max", "unused", "stall ms", "floor ms", "outage ms"
    );
    for r in runs {
        let dash = |o: Option<u64>| o.map_or("-".to_owned(), |o| o.to_string());
        println!(
            "{:<8} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9}  {:?}",
            if r.arrangement == Arrangement::Tee { "(a) tee" } else { "(b) move" },
            r.viewers,
            r.lost_total,
            r.lost_max,
            dash(r.unused),
            r.longest_stall_ms,
            r.stall_floor_ms,
            dash(r.outage_ms),
            r.seeder_switch_ms
        );
    }
    println!();
    for s in summary {
        println!(
            "{:?} x{}: lost per failover (most of one viewer) {}, longest stall {} ms (floor {} ms), seeders switched within {} ms; target {}: {}",
            s.arrangement,
            s.runs,
            s.lost_per_failover_max,
            s.longest_stall_ms,
            s.stall_floor_ms,
            s.seeder_switch_ms_max,
            s.target,
            if s.met { "met" } else { "NOT MET" }
        );
    }
}

/// `shoal ARGS` (this binary), its stdout read until a line contains `until`: the
/// process and the lines so far (the rest is drained).
fn start(args: &[&str], until: &str) -> anyhow::Result<(Reaped, Vec<String>)> {
    let mut child = Reaped(
        Command::new(std::env::current_exe()?)
            .args(args)
            .env("SHOAL_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting shoal {}", args[0]))?,
    );
    let mut lines = BufReader::new(child.0.stdout.take().context("stdout is piped")?).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line?;
        let done = line.contains(until);
        seen.push(line);
        if done {
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((child, seen));
        }
    }
    bail!("shoal {} ended before saying {until:?}: {seen:?}", args[0])
}

/// The word after `marker` in the first line that has it.
fn word_after(lines: &[String], marker: &str) -> anyhow::Result<String> {
    lines
        .iter()
        .find_map(|l| l.split(marker).nth(1)?.split_whitespace().next())
        .map(|w| w.trim_matches('\'').to_owned())
        .with_context(|| format!("no {marker:?} in {lines:?}"))
}

/// A JSON or text body by plain HTTP.
fn body(addr: SocketAddr, path: &str) -> Option<String> {
    let raw = http_get(addr, path).ok()?;
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// The sum of a metric's samples whose line has every one of `with`.
fn metric(addr: SocketAddr, name: &str, with: &[&str]) -> f64 {
    body(addr, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A viewer's (played, skipped).
fn played(addr: SocketAddr) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(&body(addr, "/stats.json")?).ok()?;
    Some((v["played"].as_u64()?, v["skipped"].as_u64()?))
}

/// The number an ingest will give its next piece (`GET /v1/channels`).
fn next_seq(http: &str) -> anyhow::Result<u64> {
    let text = body(http.parse()?, "/v1/channels").context("GET /v1/channels")?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("/v1/channels: {text}"))?;
    v["channels"][0]["next_seq"].as_u64().with_context(|| format!("no next_seq in {v}"))
}

/// The oldest number in an ingest's window (the 410 for `from=0` says it).
fn oldest(http: &str) -> anyhow::Result<u64> {
    let text = body(http.parse()?, &format!("/v1/channels/news/pieces?from=0&token={TOKEN}")).unwrap_or_default();
    text.trim().rsplit(' ').next().and_then(|n| n.parse().ok()).with_context(|| format!("no oldest number in {text:?}"))
}

/// One run of `arrangement` on fresh processes.
fn once(arrangement: Arrangement, viewers: u32) -> anyhow::Result<Run> {
    let dir = std::env::temp_dir().join(format!("shoal-bench-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = once_in(&dir, arrangement, viewers);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn once_in(dir: &Path, arrangement: Arrangement, viewers: u32) -> anyhow::Result<Run> {
    let data = dir.join("data").display().to_string();
    let added =
        Command::new(std::env::current_exe()?).args(["ingest", "add-channel", "news", "--data-dir", &data]).output()?;
    if !added.status.success() {
        bail!("add-channel: {}", String::from_utf8_lossy(&added.stderr));
    }
    let said: Vec<String> = String::from_utf8_lossy(&added.stdout).lines().map(str::to_owned).collect();
    let key = word_after(&said, "stream key (shown once): ")?;
    let channel_id = word_after(&said, "channel id (public key): ")?;
    let (_tracker, lines) =
        start(&["tracker", "--data-dir", &data, "--listen", ANY, "--seeder-token", TOKEN], "TRACKER")?;
    let tracker = word_after(&lines, "TRACKER  ")?.trim_end_matches("/announce").to_owned();
    let mut ingests = Vec::new();
    for _ in 0..2 {
        let args = ["ingest", "--data-dir", &data, "--rtmp-listen", ANY, "--srt-listen", ANY, "--http-listen", ANY];
        let (child, lines) = start(&[&args[..], &["--seeder-token", TOKEN]].concat(), "HTTP")?;
        let rtmp = word_after(&lines, "RTMP  rtmp://")?.split('/').next().unwrap_or_default().to_owned();
        let http = word_after(&lines, "HTTP  http://")?;
        ingests.push((Some(child), rtmp, http));
    }
    // The feed first: a seeder starts once its channel is published.
    let mut encoder = Command::new("ffmpeg");
    encoder
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-re"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "60", "-map", "0:v", "-map", "1:a"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .stdin(Stdio::null());
    let (mut _ffmpeg, mut _relay, mut connections) = (None, None, None);
    match arrangement {
        Arrangement::Tee => {
            let url = |i: usize| format!("[f=flv:onfail=ignore]rtmp://{}/live/{key}", ingests[i].1);
            // FLV in a tee needs global headers (ffmpeg's documentation).
            encoder.args(["-flags", "+global_header", "-f", "tee", &format!("{}|{}", url(0), url(1))]);
            _ffmpeg = Some(Reaped(encoder.spawn().context("starting ffmpeg")?));
        }
        Arrangement::Move => {
            let mut ffmpeg = Reaped(encoder.args(["-f", "flv", "-"]).stdout(Stdio::piped()).spawn()?);
            let to = |i: usize| format!("rtmp://{}/live/{key}", ingests[i].1);
            let mut relay = Reaped(
                Command::new(std::env::current_exe()?)
                    .args(["relay", "--mode", "backup", "--retry-ms", &RETRY_MS.to_string(), "--to", &to(0)])
                    .args(["--to", &to(1)])
                    .env("SHOAL_LOG", "error")
                    .stdin(ffmpeg.0.stdout.take().context("ffmpeg's stdout is piped")?)
                    .stdout(Stdio::piped())
                    .spawn()?,
            );
            let out = relay.0.stdout.take().context("the relay's stdout is piped")?;
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if line.starts_with("RELAY connected 1 ") {
                        let _ = tx.send(Instant::now());
                    }
                }
            });
            (_ffmpeg, _relay, connections) = (Some(ffmpeg), Some(relay), Some(rx));
        }
    }
    let from = |i: usize| format!("http://{}", ingests[i].2);
    let mut seeders = Vec::new();
    for _ in 0..2 {
        let args = ["seeder", "--tracker", &tracker, "--ingest", &from(0), "--ingest", &from(1), "--channel", "news"];
        let more = ["--seeder-token", TOKEN, "--data-dir", &data, "--listen", ANY, "--http", ANY, "--no-webrtc"];
        let (child, lines) = start(&[&args[..], &more[..]].concat(), "SEEDER")?;
        let http: SocketAddr =
            word_after(&lines, "browsers: http://")?.split('/').next().unwrap_or_default().parse()?;
        seeders.push((child, http));
    }
    let mut plays = Vec::new();
    for _ in 0..viewers {
        let args = ["viewer", "--tracker", &tracker, "--channel-id", &channel_id, "--listen", ANY, "--play", ANY];
        let (child, lines) = start(&args, "VIEWER  watch")?;
        let play: SocketAddr = word_after(&lines, "ffplay http://")?.split('/').next().unwrap_or_default().parse()?;
        plays.push((child, play));
    }
    // Playing: every viewer 5 s in.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !plays.iter().all(|(_, p)| played(*p).is_some_and(|(n, _)| n >= 100)) {
        if Instant::now() > deadline {
            bail!("the viewers did not all play 5 s within 40 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The ingest to kill: the one most seeders take from (b: A, the only one fed).
    let leading = |i: usize| {
        let label = format!("ingest=\"{}\"", ingests[i].2);
        seeders.iter().filter(|(_, m)| metric(*m, "shoal_seeder_ingest_leading", &[&label]) >= 1.0).count()
    };
    let victim = if arrangement == Arrangement::Tee && leading(1) > leading(0) { 1 } else { 0 };
    let label = format!("ingest=\"{}\"", ingests[victim].2);
    let followers: Vec<SocketAddr> = seeders
        .iter()
        .filter(|(_, m)| metric(*m, "shoal_seeder_ingest_leading", &[&label]) >= 1.0)
        .map(|(_, m)| *m)
        .collect();
    let failovers = |m: SocketAddr| metric(m, "shoal_seeder_ingest_failovers_total", &[]);
    let failovers_before: Vec<f64> = followers.iter().map(|m| failovers(*m)).collect();

    let mut watch = Watch::new(plays.len());
    let started = Instant::now();
    while started.elapsed() < BEFORE {
        watch.poll(&plays);
        std::thread::sleep(POLL);
    }
    let floor = watch.longest_stall();
    let skipped_before = watch.skipped.clone();
    watch.restart();
    let next_before = next_seq(&ingests[victim].2);
    let killed = Instant::now();
    if let Some(mut dead) = ingests[victim].0.take() {
        dead.0.kill()?;
        dead.0.wait()?;
    }
    let mut switched: Vec<Option<Duration>> = vec![None; followers.len()];
    let mut outage = None;
    while killed.elapsed() < AFTER {
        watch.poll(&plays);
        for (k, m) in followers.iter().enumerate() {
            if switched[k].is_none() && failovers(*m) > failovers_before[k] {
                switched[k] = Some(killed.elapsed());
            }
        }
        if let Some(rx) = &connections
            && let Ok(at) = rx.try_recv()
        {
            outage = Some(at.saturating_duration_since(killed));
        }
        std::thread::sleep(POLL);
    }
    // (b): B's window begins where the feed came back (it had none before).
    let unused = match arrangement {
        Arrangement::Tee => None,
        Arrangement::Move => Some(oldest(&ingests[1 - victim].2)?.saturating_sub(next_before?)),
    };
    let lost: Vec<u64> = watch
        .skipped
        .iter()
        .zip(&skipped_before)
        .map(|(a, b)| a.saturating_sub(*b).saturating_sub(unused.unwrap_or(0)))
        .collect();
    let ms = |d: Duration| d.as_millis() as u64;
    Ok(Run {
        arrangement,
        viewers,
        lost_total: lost.iter().sum(),
        lost_max: lost.iter().copied().max().unwrap_or(0),
        unused,
        longest_stall_ms: ms(watch.longest_stall()),
        stall_floor_ms: ms(floor),
        outage_ms: outage.map(ms),
        seeder_switch_ms: switched.into_iter().flatten().map(ms).collect(),
    })
}

/// What the viewers played, polled: per viewer, its counts and when `played` last rose.
struct Watch {
    played: Vec<u64>,
    skipped: Vec<u64>,
    rose: Vec<Option<Instant>>,
    /// The longest time between rises of one viewer's `played` since the last restart.
    stall: Duration,
}

impl Watch {
    fn new(n: usize) -> Self {
        Watch { played: vec![0; n], skipped: vec![0; n], rose: vec![None; n], stall: Duration::ZERO }
    }

    fn poll(&mut self, plays: &[(Reaped, SocketAddr)]) {
        let now = Instant::now();
        for (i, (_, p)) in plays.iter().enumerate() {
            let Some((played, skipped)) = played(*p) else { continue };
            self.skipped[i] = skipped;
            if played > self.played[i] {
                if let Some(t) = self.rose[i] {
                    self.stall = self.stall.max(now - t);
                }
                self.played[i] = played;
                self.rose[i] = Some(now);
            }
        }
    }

    /// Including the time since each viewer's last rise.
    fn longest_stall(&self) -> Duration {
        let now = Instant::now();
        self.rose.iter().flatten().map(|t| now - *t).fold(self.stall, Duration::max)
    }

    fn restart(&mut self) {
        self.stall = Duration::ZERO;
    }
}
