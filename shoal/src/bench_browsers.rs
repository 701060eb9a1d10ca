//! `shoal bench browsers`: watch pages in headless Chromium against `shoal up` on
//! loopback, fed by ffmpeg's test pattern over RTMP. Each page joins the swarm over
//! WebRTC and plays; `web/browser/pages.mjs` drives them and reports what each saw.
//! Writes `target/bench/bench-browsers.json` (issue 20's fields) and prints a table
//! (what each page saw: `bench-browsers-{player}-pages.json` beside it);
//! asserts nothing. With `--vs-p2pml` the same pages then play the same feed with
//! p2p-media-loader 2.x (hls.js + its loader, an npm `bittorrent-tracker` server, the
//! seeder's HLS as its CDN) and both are printed side by side. Needs ffmpeg, Node.js
//! with `npm ci` done in `web/`, and Debian's chromium.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

use crate::bench_nginx::{Reaped, tree_cpu};

#[derive(Debug, clap::Args)]
pub(crate) struct BrowsersBenchArgs {
    /// Watch pages (one Chromium, a browser context each).
    #[arg(long, default_value_t = 12)]
    pages: u32,
    /// Seconds the pages play (the late ones join halfway).
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Pages that open halfway through.
    #[arg(long, default_value_t = 1)]
    late: u32,
    /// Pages that forge every piece they pass on.
    #[arg(long, default_value_t = 1)]
    forgers: u32,
    /// The test pattern's size (ffmpeg -s).
    #[arg(long, default_value = "640x360")]
    size: String,
    /// Every page plays the seeder's LL-HLS over HTTP, no swarm: the same pages' cost
    /// and quality without P2P, to compare.
    #[arg(long)]
    http_only: bool,
    /// Then the same pages on the same feed with p2p-media-loader 2.x instead of Shoal's
    /// peer (no forgers: it checks nothing), printed side by side.
    #[arg(long, conflicts_with = "http_only")]
    vs_p2pml: bool,
    /// The niceness Node and Chromium run at (`nice -n`), below the broadcaster's side
    /// (`shoal up` and ffmpeg): a deployment's encoder and seeders never share a CPU with
    /// their audience, and on one 2-core machine the renderers Chromium starts for new
    /// pages otherwise keep both off the CPU for up to a second at a time, stalling every
    /// page at once (measured with /proc/PID/task/*/schedstat). 0: all share alike.
    #[arg(long, default_value_t = 10)]
    browsers_nice: u8,
    /// The web/ directory (with `npm ci` done).
    #[arg(long, default_value = "web")]
    web: PathBuf,
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

/// What played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Player {
    /// The watch page in the swarm.
    Shoal,
    /// The watch page, no swarm (`?p2p=0`).
    HttpOnly,
    /// hls.js + p2p-media-loader 2.x on the plain playlist (whole segments).
    P2pml,
}

impl Player {
    fn name(self) -> &'static str {
        match self {
            Player::Shoal => "shoal",
            Player::HttpOnly => "http-only",
            Player::P2pml => "p2pml",
        }
    }

    /// pages.mjs's flag for it.
    fn flag(self) -> Option<&'static str> {
        match self {
            Player::Shoal => None,
            Player::HttpOnly => Some("--http-only"),
            Player::P2pml => Some("--p2pml"),
        }
    }
}

#[derive(Debug, Serialize)]
struct Pct {
    p50: u64,
    p99: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    player: Player,
    pages: u32,
    seconds: u32,
    feed: String,
    /// Niceness of the pages' Node and Chromium (`--browsers-nice`).
    browsers_nice: u8,
    /// Bytes played that came from other pages / all bytes played (honest pages).
    p2p_share: f64,
    /// From seeders, over WebRTC or HTTP.
    seed_share: f64,
    /// Of which over HTTP (the fallback).
    http_share: f64,
    /// Frame on screen vs ingest's clock, every 500 ms on every page.
    latency_ms: Pct,
    startup_ms: Pct,
    /// The late pages' startup, ms (joining mid-stream).
    late_startup_ms: Vec<u64>,
    /// Time stalled / time playing, all honest pages.
    rebuffer_ratio: f64,
    longest_stall_ms: u64,
    forged_sent: u64,
    forged_played: u64,
    /// Pages that refused a forged piece (and dropped its sender).
    forged_refused: u64,
    /// Chromium's CPU per page per minute of playing.
    cpu_s_per_page_minute: f64,
    /// `shoal up`'s (tracker, ingest, seeder) over the same run.
    server_cpu_s: f64,
    /// With `--vs-p2pml`: the same pages and feed with p2p-media-loader, run after.
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_p2pml: Option<Box<Report>>,
}

fn pct(mut v: Vec<u64>) -> Pct {
    v.sort_unstable();
    let at = |q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
    Pct { p50: at(0.5), p99: at(0.99) }
}

pub(crate) fn run(a: BrowsersBenchArgs) -> anyhow::Result<()> {
    if !a.web.join("node_modules/playwright-core").exists() {
        bail!("{} has no node_modules: run `npm ci` there (and apt-get install -y chromium ffmpeg)", a.web.display());
    }
    let data = std::env::temp_dir().join(format!("shoal-bench-browsers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let any = "127.0.0.1:0";
    let mut up = Reaped(
        Command::new(std::env::current_exe()?)
            .args(["up", "--data-dir"])
            .arg(&data)
            .args(["--tracker-listen", any, "--rtmp-listen", any, "--srt-listen", any, "--ingest-listen", any])
            .args(["--seeder-listen", any, "--hls-listen", any, "--webrtc-listen", any])
            .env("SHOAL_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting shoal up")?,
    );
    let mut lines = std::io::BufReader::new(up.0.stdout.take().context("stdout is piped")?).lines();
    let (mut rtmp, mut watch) = (None, None);
    for line in lines.by_ref() {
        let line = line?;
        let word = |after: &str| line.split(after).nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_owned);
        rtmp = rtmp.or_else(|| word("push:    "));
        watch = watch.or_else(|| word("browser: "));
        if line.contains("Ctrl-C stops it") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let (rtmp, watch) = (rtmp.context("shoal up printed no push URL")?, watch.context("no browser URL")?);
    let _ffmpeg = Reaped(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i"])
            .arg(format!("testsrc=size={}:rate=25", a.size))
            .args(["-f", "lavfi", "-i", "sine=frequency=440", "-c:v", "libx264", "-preset", "ultrafast"])
            .args(["-tune", "zerolatency", "-g", "25", "-c:a", "aac", "-f", "flv"])
            .arg(&rtmp)
            .stdin(Stdio::null())
            .spawn()
            .context("starting ffmpeg (apt-get install -y ffmpeg)")?,
    );
    // The first segment takes a second or two: pages open once the playlist is served.
    let hls = watch.replace("/watch/", "/hls/") + "/live.m3u8";
    let addr = hls.trim_start_matches("http://").split('/').next().unwrap_or_default().parse()?;
    let path = format!("/{}", hls.trim_start_matches("http://").split_once('/').map_or("", |(_, p)| p));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !crate::bench_nginx::http_get(addr, &path).is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
        if std::time::Instant::now() > deadline {
            bail!("the seeder served no playlist within 20 s of ffmpeg starting");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let player = if a.http_only { Player::HttpOnly } else { Player::Shoal };
    let mut report = play(&a, &watch, up.0.id(), player)?;
    if a.vs_p2pml {
        report.vs_p2pml = Some(Box::new(play(&a, &watch, up.0.id(), Player::P2pml)?));
    }
    let name = if a.http_only { "bench-browsers-http-only.json" } else { "bench-browsers.json" };
    crate::machine::write_bench_json(&a.out.join(name), &report)?;
    print_table(&report);
    Ok(())
}

/// One run of `pages.mjs` with `player`'s pages on the watch page `watch`; `server` is
/// `shoal up`'s pid (its CPU over the run is counted).
fn play(a: &BrowsersBenchArgs, watch: &str, server: u32, player: Player) -> anyhow::Result<Report> {
    let forgers = if player == Player::P2pml { 0 } else { a.forgers };
    if player == Player::P2pml {
        // Its page is bundled from web/browser/p2pml-entry.ts (the watch page is the seeder's).
        let built = Command::new("npm").args(["run", "build:browser", "--silent"]).current_dir(&a.web).status();
        if !built.is_ok_and(|s| s.success()) {
            bail!("could not bundle web/browser/p2pml-entry.ts (npm run build:browser in {})", a.web.display());
        }
    }
    let cpu0 = tree_cpu(server);
    eprintln!("{} {} pages for {} s on {watch} ...", a.pages, player.name(), a.seconds);
    let out = Command::new("nice")
        .args(["-n", &a.browsers_nice.to_string(), "node", "browser/pages.mjs"])
        .args([watch, &a.pages.to_string(), &a.seconds.to_string()])
        .args(["--late", &a.late.to_string(), "--forgers", &forgers.to_string()])
        .args(player.flag())
        .current_dir(&a.web)
        .output()
        .context("running node browser/pages.mjs")?;
    let server_cpu_s = (tree_cpu(server) - cpu0).as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .with_context(|| format!("pages.mjs said: {text}{}", String::from_utf8_lossy(&out.stderr)))?;
    // What every page saw, for whoever digs into a figure.
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join(format!("bench-browsers-{}-pages.json", player.name())), text.as_bytes())?;
    if r["ok"] != Value::Bool(true) {
        bail!("the {} pages did not all play (each page: {})", player.name(), a.out.display());
    }
    summarize(a, &r, server_cpu_s, player)
}

fn summarize(a: &BrowsersBenchArgs, r: &Value, server_cpu_s: f64, player: Player) -> anyhow::Result<Report> {
    let http_only = player == Player::HttpOnly;
    let pages = r["pages"].as_array().context("pages")?;
    let honest: Vec<&Value> = pages.iter().filter(|p| p["forger"] != Value::Bool(true)).collect();
    let sum = |k: &str| honest.iter().map(|p| p["bytes"][k].as_f64().unwrap_or(0.0)).sum::<f64>();
    let (peers, seeds, http) = (sum("peers"), sum("seeds"), sum("http"));
    let all = (peers + seeds + http).max(1.0);
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let latency: Vec<u64> = honest
        .iter()
        .flat_map(|p| p["behind"].as_array().into_iter().flatten().map(|b| b.as_f64().unwrap_or(0.0).max(0.0) as u64))
        .collect();
    let startup: Vec<u64> = honest.iter().map(|p| u(&p["startupMs"])).collect();
    let late_startup_ms =
        honest.iter().filter(|p| p["late"] == Value::Bool(true)).map(|p| u(&p["startupMs"])).collect();
    let stalled: u64 = honest.iter().map(|p| u(&p["stalledMs"])).sum();
    let played: u64 = honest.iter().map(|p| u(&p["playedWallMs"])).sum();
    let played_minutes = pages.iter().map(|p| u(&p["playedWallMs"])).sum::<u64>() as f64 / 60_000.0;
    Ok(Report {
        player,
        pages: a.pages,
        seconds: a.seconds,
        feed: format!("ffmpeg testsrc {} 25 fps x264 ultrafast, RTMP into shoal up", a.size),
        browsers_nice: a.browsers_nice,
        // Without the swarm every byte is the seeder's, over HTTP.
        p2p_share: if http_only { 0.0 } else { peers / all },
        seed_share: if http_only { 1.0 } else { (seeds + http) / all },
        http_share: if http_only { 1.0 } else { http / all },
        latency_ms: pct(latency),
        startup_ms: pct(startup),
        late_startup_ms,
        rebuffer_ratio: stalled as f64 / played.max(1) as f64,
        longest_stall_ms: honest.iter().map(|p| u(&p["longestStallMs"])).max().unwrap_or(0),
        forged_sent: pages.iter().map(|p| u(&p["forgedSent"])).sum(),
        forged_played: pages.iter().map(|p| u(&p["forgedPlayed"])).sum(),
        forged_refused: pages.iter().map(|p| u(&p["peer"]["forgedRefused"])).sum(),
        cpu_s_per_page_minute: r["cpuSeconds"].as_f64().unwrap_or(0.0) / played_minutes.max(1e-9),
        server_cpu_s,
        vs_p2pml: None,
    })
}

fn print_table(r: &Report) {
    // One column per player: this run's, and p2p-media-loader's when it ran too.
    let runs: Vec<&Report> = std::iter::once(r).chain(r.vs_p2pml.as_deref()).collect();
    let row = |k: &str, v: &dyn Fn(&Report) -> String, t: &str| {
        let cells: String = runs.iter().map(|r| format!(" {:>17}", v(r))).collect();
        println!("{k:<26}{cells} {t:>14}");
    };
    row("figure", &|r| r.player.name().to_owned(), "target");
    row("pages / seconds", &|r| format!("{} / {}", r.pages, r.seconds), "12 / 60");
    row("browsers nice", &|r| r.browsers_nice.to_string(), "");
    row("p2p share", &|r| format!("{:.3}", r.p2p_share), "≥ 0.85");
    row("seed share (HTTP)", &|r| format!("{:.3} ({:.3})", r.seed_share, r.http_share), "");
    row("latency p50/p99 ms", &|r| format!("{}/{}", r.latency_ms.p50, r.latency_ms.p99), "≤ 1500/2500");
    row("startup p50/p99 ms", &|r| format!("{}/{}", r.startup_ms.p50, r.startup_ms.p99), "p99 ≤ 2500");
    row("late startup ms", &|r| format!("{:?}", r.late_startup_ms), "≤ 2500");
    row("rebuffer ratio", &|r| format!("{:.4}", r.rebuffer_ratio), "≤ 0.005");
    row("longest stall ms", &|r| r.longest_stall_ms.to_string(), "≤ 1000");
    row("forged sent/played", &|r| format!("{}/{}", r.forged_sent, r.forged_played), "played 0");
    row("CPU s per page-minute", &|r| format!("{:.2}", r.cpu_s_per_page_minute), "");
    row("server CPU s", &|r| format!("{:.1}", r.server_cpu_s), "");
}
