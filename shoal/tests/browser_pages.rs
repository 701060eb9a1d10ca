//! Browsers against `shoal up`, in headless Chromium: the seeder's watch page plays a
//! live ffmpeg feed; two pages announce the channel on the tracker's WebSocket
//! (PROTOCOL.md §6.1), one's WebRTC offer reaches the other, the answer comes back, a
//! data channel opens between them and each decodes the `Hello` the other sent with the
//! browser peer's codec (`web/`); the npm `bittorrent-tracker` client does the same
//! on Shoal's tracker; many pages play a minute from each other; a page that gets no
//! data channel plays the seeder's LL-HLS; the watch page plays encoders one after
//! another. Needs Node.js, `npm ci` in web/, Debian's chromium
//! (and ffmpeg for the watch page): CI installs them and sets `SHOAL_REQUIRE_CHROMIUM`
//! (elsewhere the tests say they skipped).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{eventually, ffmpeg_available, start_logged, testsrc_to, up_args, word_after};

/// Whether the browser test can run here (or must, under `SHOAL_REQUIRE_CHROMIUM`).
fn chromium_available(web: &Path) -> bool {
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let ok = node && Path::new("/usr/bin/chromium").exists() && web.join("node_modules/playwright-core").exists();
    if !ok {
        assert!(
            std::env::var_os("SHOAL_REQUIRE_CHROMIUM").is_none(),
            "SHOAL_REQUIRE_CHROMIUM is set but Node.js, /usr/bin/chromium or web/node_modules is missing"
        );
        eprintln!("SKIPPED the browser test: needs Node.js, /usr/bin/chromium and `npm ci` in web/");
    }
    ok
}

/// `shoal up` fed an ffmpeg test pattern of `size`: (its process, log and printout,
/// ffmpeg, the watch page's URL).
/// web/, if the browser tests and ffmpeg can run here (else they say they skipped).
fn web_with_chromium_and_ffmpeg() -> Option<PathBuf> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    (chromium_available(&web) && ffmpeg_available()).then_some(web)
}

/// Runs `node SCRIPT WATCH_URL 10` in web/ (watch.mjs, embed.mjs): its one JSON line,
/// once it played 10 s of media with no stall over a second.
fn plays_10_s_without_a_stall(web: &Path, script: &str, watch: &str) -> serde_json::Value {
    let out = Command::new("node").args([script, watch, "10"]).current_dir(web).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "{script}: it did not play: {text}");
    let r: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(r["played"].as_f64().unwrap() >= 10.0, "{r}");
    assert!(r["longestStallMs"].as_u64().unwrap() <= 1_000, "a stall over 1 s: {r}");
    r
}

/// An empty data directory for the test `name` (in this process's temporary one).
fn fresh_data_dir(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("shoal-browser-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("data").display().to_string()
}

fn up_with_feed(name: &str, size: &str) -> ((common::Killed, common::LogTape, Vec<String>), common::Killed, String) {
    let data = fresh_data_dir(name);
    let (up_proc, up, log) = start_logged(&up_args(&data), "Ctrl-C stops it");
    let ffmpeg = testsrc_to(&word_after(&up, "push:    "), size);
    let watch = word_after(&up, "browser: ");
    ((up_proc, log, up), ffmpeg, watch)
}

/// Bundles web/browser/*-entry.ts, starts `shoal up` (no feed) and runs
/// `node web/browser/SCRIPT ws://TRACKER/announce CHANNEL_HEX`: its one JSON line.
fn pages_against_the_tracker(script: &str) -> serde_json::Value {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let build = Command::new("npm").args(["run", "build:browser", "--silent"]).current_dir(&web).output().unwrap();
    assert!(build.status.success(), "bundling the pages: {}", String::from_utf8_lossy(&build.stderr));
    let dir = std::env::temp_dir().join(format!("shoal-browser-{script}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data").display().to_string();
    let (_up, up, _log) = start_logged(&up_args(&data), "Ctrl-C stops it");
    let tracker = word_after(&up, "--tracker http://");
    let channel = word_after(&up, "--channel-id ");
    let out = Command::new("node")
        .args([&format!("browser/{script}"), &format!("ws://{tracker}/announce"), &channel])
        .current_dir(&web)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "{script} failed: {text}");
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

#[test]
fn two_pages_meet_through_the_tracker_and_exchange_hellos_over_a_data_channel() {
    if !chromium_available(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")) {
        return;
    }
    let result = pages_against_the_tracker("two-pages.mjs");
    assert_eq!(result["a"]["hellos"], serde_json::json!(["2"]), "page 1 got page 2's Hello");
    assert_eq!(result["b"]["hellos"], serde_json::json!(["1"]), "page 2 got page 1's Hello");
}

/// The WebTorrent ecosystem's own tracker client (npm `bittorrent-tracker`, which
/// p2p-media-loader and WebTorrent use) announces on Shoal's tracker, gets its offers
/// relayed and answered, and opens a data channel to another such client; an unknown
/// info-hash gets the tracker's reason as the client's warning.
#[test]
fn the_npm_bittorrent_tracker_client_announces_and_exchanges_offers_on_shoals_tracker() {
    if !chromium_available(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../web")) {
        return;
    }
    let result = pages_against_the_tracker("bt-clients.mjs");
    assert!(result["a"]["got"].as_array().unwrap().contains(&"hello from B".into()), "{result}");
    assert!(result["b"]["got"].as_array().unwrap().contains(&"hello from A".into()), "{result}");
    // The tracker's answer to B's announce as the client reads it: B is a page (incomplete).
    assert!(result["b"]["updates"][0]["incomplete"].as_u64().unwrap() >= 1, "{result}");
    let warning = result["c"]["warnings"][0].as_str().unwrap();
    assert!(warning.starts_with("unknown channel"), "{warning}");
    assert_eq!(result["a"]["errors"], serde_json::json!([]), "{result}");
}

/// The watch page plays the live feed from the swarm: the seeder pushes over WebRTC,
/// and a native `shoal viewer` sharing with browsers (`--webrtc-listen`) is one of the
/// page's neighbours and passes it pieces — native viewers and pages in one swarm.
#[test]
fn the_watch_page_plays_the_live_feed_from_the_seeder_and_a_native_viewer() {
    let Some(web) = web_with_chromium_and_ffmpeg() else { return };
    let ((_up, _log, up), _ffmpeg, watch) = up_with_feed("watch", "640x360");
    let tracker = format!("http://{}", word_after(&up, "--tracker http://"));
    let channel = word_after(&up, "--channel-id ");
    let viewer_args = ["viewer", "--tracker", &tracker, "--channel-id", &channel, "--listen", "127.0.0.1:0"];
    let more = ["--play", "127.0.0.1:0", "--webrtc-listen", "127.0.0.1:0"];
    let (_viewer, lines, _viewer_log) = start_logged(&[&viewer_args[..], &more].concat(), "VIEWER  watch");
    assert!(lines.iter().any(|l| l.contains("reach this viewer over WebRTC at [127.0.0.1:")), "{lines:?}");
    // The viewer is on the tracker's WebSocket (beside the seeder) before the page asks.
    let on_ws = || {
        let (_, body) = common::http_get(&format!("{tracker}/metrics"));
        String::from_utf8_lossy(&body).lines().any(|l| l == "shoal_tracker_ws_connections 2")
    };
    assert!(eventually(Duration::from_secs(20), on_ws), "the viewer joined the tracker's WebSocket");
    // Test artifacts: the screenshot stays under target/ for whoever looks at the run.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("watch-page.png");
    let out = Command::new("node")
        .args(["browser/watch.mjs", &watch, "20", &shot.display().to_string()])
        .current_dir(&web)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text} (screenshot: {})", shot.display());
    assert!(out.status.success(), "the watch page did not play: {text}");
    let r: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(r["played"].as_f64().unwrap() >= 20.0, "{r}");
    assert!(r["longestStallMs"].as_u64().unwrap() <= 1_000, "a stall over 1 s: {r}");
    assert!(r["overlay"].as_str().unwrap().starts_with("behind live"), "{r}");
    // It played from the swarm: the seeder and the viewer pushed pieces over WebRTC,
    // verified in the page; HTTP brought only the start segment from before it joined.
    let bytes = |k: &str| r["bytes"][k].as_f64().unwrap();
    let swarm = bytes("seeds") + bytes("peers");
    // (The start segment's keyframe is a large share of a test pattern's bytes: at 6 s
    // played HTTP was 34 % once; over 20 s, most bytes must have come over WebRTC.)
    assert!(swarm >= 0.5 * (swarm + bytes("http")), "most bytes over WebRTC: {r}");
    // The only neighbour that is not a seed is the native viewer. It forwards only its
    // club's substream (PROTOCOL.md §3.2): the page, refused the others, moves that one
    // from the seed to it within a few 2 s reviews, and pulls gaps from it meanwhile.
    assert!(bytes("peers") > 0.0, "the native viewer passed the page pieces: {r}");
    assert_eq!(r["peer"]["forgedRefused"], 0, "{r}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1_000, "a screenshot was taken");
    // The seeder and the native viewer count their pages' WebRTC sessions for the ops team.
    let play = word_after(&lines, "ffplay http://").trim_end_matches("/live.ts").to_owned();
    for url in [common::metrics_urls(&up)[2].clone(), format!("http://{play}/metrics")] {
        let (_, metrics) = common::http_get(&url);
        let metrics = String::from_utf8_lossy(&metrics);
        let opened = metrics
            .lines()
            .find(|l| l.starts_with("shoal_webrtc_events_total{") && l.contains(r#"event="channel_opened""#))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
        assert!(opened.is_some_and(|n| n >= 1), "the page's data channel counted at {url}: {metrics}");
    }
}

#[test]
fn many_pages_play_a_minute_mostly_from_each_other_a_forger_is_dropped_and_a_parent_leaves() {
    let Some(web) = web_with_chromium_and_ffmpeg() else { return };
    let (up, _ffmpeg, watch) = up_with_feed("many", "320x180");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("many-pages");
    std::fs::create_dir_all(&shots).unwrap();
    // Six pages for 60 s: the first forges every piece it passes on, the last opens
    // halfway through, and at 45 s the honest page pushing to the most others closes.
    let out = Command::new("node")
        .args(["browser/pages.mjs", &watch, "6", "60", "--late", "1", "--forgers", "1", "--leavers", "1"])
        .args(["--shots", &shots.display().to_string()])
        .current_dir(&web)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text} (screenshots: {})", shots.display());
    assert!(out.status.success(), "not every page played: {text}");
    let r: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let pages = r["pages"].as_array().unwrap();
    let honest: Vec<&serde_json::Value> = pages.iter().filter(|p| p["forger"] == false).collect();
    let (mut peers, mut all) = (0.0, 0.0);
    for p in &honest {
        assert!(p["longestStallMs"].as_u64().unwrap() <= 1_000, "page {} stalled over 1 s: {p}", p["i"]);
        assert!(p["playedWallMs"].as_u64().unwrap() >= 25_000, "page {} played: {p}", p["i"]);
        let b = |k: &str| p["bytes"][k].as_f64().unwrap();
        peers += b("peers");
        all += b("peers") + b("seeds") + b("http");
    }
    assert!(peers > 0.5 * all, "most bytes from other pages: {peers} of {all}");
    // The page that left was pushing to others; none of them stalled over 1 s (above).
    let leaver = honest.iter().find(|p| p["left"] == true).unwrap();
    assert!(leaver["childrenAtLeave"].as_u64().unwrap() >= 1, "the page that left was a parent: {leaver}");
    let late = honest.iter().find(|p| p["late"] == true).unwrap();
    assert!(late["startupMs"].as_u64().unwrap() <= 2_500, "a page joining mid-stream started late: {late}");
    // The forger sent forgeries; none reached any page's player, and pages that got
    // one dropped it.
    let forger = &pages[0];
    assert!(forger["forgedSent"].as_u64().unwrap() > 0, "the forger forged: {forger}");
    assert_eq!(pages.iter().map(|p| p["forgedPlayed"].as_u64().unwrap()).sum::<u64>(), 0);
    let refused: u64 = honest.iter().map(|p| p["peer"]["forgedRefused"].as_u64().unwrap()).sum();
    assert!(refused >= 1, "a page refused a forged piece and dropped its sender");
    // The tracker keeps handing out the forger's offers: a page that banned it turns
    // them away before any connection (before, it came back as a new WebRTC link to
    // be refused at Hello every ~5 s). One link already being set up when the ban
    // fell may still reach Hello.
    let at_hello: u64 = honest.iter().map(|p| p["peer"]["bannedAtHello"].as_u64().unwrap()).sum();
    assert!(at_hello <= 2 * refused, "a banned page kept reconnecting: {at_hello} links refused at Hello");
    // Pages told the tracker what they watched: metered as viewers (there is no
    // other viewer here), as the tracker's metrics say once it has flushed (`shoal up`
    // flushes every 10 s, at the first tick of each window of the clock).
    assert!(honest.iter().all(|p| p["watchedS"].as_u64().unwrap() >= 25), "each page counted its seconds");
    let tracker = word_after(&up.2, "--tracker http://");
    let mut seconds = 0.0;
    let metered = eventually(Duration::from_secs(25), || {
        let (_, metrics) = common::http_get(&format!("http://{tracker}/metrics"));
        seconds = String::from_utf8_lossy(&metrics)
            .lines()
            .find_map(|l| l.strip_prefix("shoal_tracker_viewer_seconds_total ").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0);
        seconds >= 30.0
    });
    assert!(metered, "viewer-seconds metered from pages: {seconds}");
}

/// A page that cannot reach the seeder's WebRTC socket (UDP blocked, or a NAT no
/// candidate gets through: here the seeder's only candidate is an address nothing
/// answers at, `shoal up --host 192.0.2.1`) gets no data channel: it plays the seeder's
/// LL-HLS parts instead, without a stall over a second.
#[test]
fn a_page_that_gets_no_data_channel_plays_from_the_seeders_ll_hls() {
    let Some(web) = web_with_chromium_and_ffmpeg() else { return };
    let data = fresh_data_dir("no-channel");
    // (192.0.2.0/24 is TEST-NET-1: never routed. The printed URLs carry it too; the
    // test reaches the same sockets on loopback.)
    let (_up, up, _log) = start_logged(&[&up_args(&data)[..], &["--host", "192.0.2.1"]].concat(), "Ctrl-C stops it");
    let local = |url: String| url.replace("192.0.2.1", "127.0.0.1");
    let _ffmpeg = testsrc_to(&local(word_after(&up, "push:    ")), "320x180");
    let watch = local(word_after(&up, "browser: "));
    let r = plays_10_s_without_a_stall(&web, "browser/watch.mjs", &watch);
    let bytes = |k: &str| r["bytes"][k].as_f64().unwrap();
    assert_eq!((bytes("seeds"), bytes("peers")), (0.0, 0.0), "no data channel, so no swarm bytes: {r}");
    assert!(bytes("http") > 0.0, "{r}");
    // The seeder answered the page's offer, and no channel opened.
    let (_, metrics) = common::http_get(&local(common::metrics_urls(&up)[2].clone()));
    let metrics = String::from_utf8_lossy(&metrics);
    let count = |event: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("shoal_webrtc_events_total{") && l.contains(&format!(r#"event="{event}""#)))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(count("offer_answered") >= 1, "the page's offer reached the seeder: {metrics}");
    assert_eq!(count("channel_opened"), 0, "no data channel opened: {metrics}");
    let _ = std::fs::remove_dir_all(Path::new(&data).parent().unwrap());
}

/// A broadcaster's own site with its own hls.js (another origin than the seeder's)
/// includes the seeder's `shoal-hls.js` as the watch page's embed snippet says: its
/// player plays the channel with the swarm, pieces pushed over WebRTC and verified.
#[test]
fn a_site_with_its_own_hls_js_plays_from_the_swarm_through_the_seeders_script() {
    let Some(web) = web_with_chromium_and_ffmpeg() else { return };
    let ((_up, _log, _), _ffmpeg, watch) = up_with_feed("embed", "320x180");
    let r = plays_10_s_without_a_stall(&web, "browser/embed.mjs", &watch);
    // The playlist, from the seeder's origin (the site is on another).
    let origin = watch.split("/watch/").next().unwrap();
    assert_eq!(r["src"].as_str().unwrap(), watch.replace("/watch/", "/hls/") + "/live.m3u8", "{r}");
    assert!(r["src"].as_str().unwrap().starts_with(origin), "{r}");
    let bytes = |k: &str| r["bytes"][k].as_f64().unwrap();
    let swarm = bytes("seeds") + bytes("peers");
    assert!(swarm >= 0.5 * (swarm + bytes("http")), "most bytes over WebRTC: {r}");
    assert_eq!(r["peer"]["forgedRefused"], 0, "{r}");
}

/// One channel published by three encoders one after another (issue 21): H.264 + AAC
/// each time, but another picture size, protocol and timeline (RTMP from 0; SRT with its
/// 33-bit clock wrapping; RTMP from 1 h), idle between them. The watch page, opened on
/// the first, plays every one of them in order (`web/browser/sessions.mjs`).
#[test]
fn the_watch_page_plays_encoders_one_after_another() {
    let Some(web) = web_with_chromium_and_ffmpeg() else { return };
    let data = fresh_data_dir("sessions");
    let (_up, up, _log) = start_logged(&up_args(&data), "Ctrl-C stops it");
    let (rtmp, srt, watch) = (word_after(&up, "push:    "), word_after(&up, "or:   "), word_after(&up, "browser: "));
    let ingest_metrics = common::metrics_urls(&up)[1].clone();
    let push = |size: &str, url: &str, format: &str, offset: &str| {
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i"])
            .arg(format!("testsrc=size={size}:rate=25"))
            .args(["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "10"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"])
            .args(["-output_ts_offset", offset, "-f", format, url])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let idle = || {
        eventually(Duration::from_secs(30), || {
            common::metric(&ingest_metrics, "shoal_ingest_publishers_active", &[]) == 0.0
        })
    };
    let mut first = common::Killed(push("320x180", &rtmp, "flv", "0"));
    let playlist = watch.replace("/watch/", "/hls/") + "/live.m3u8";
    assert!(
        eventually(Duration::from_secs(20), || common::http_get(&playlist).0 == 200),
        "the first session is served"
    );
    let page = Command::new("node")
        .args(["browser/sessions.mjs", &watch, "90", "320x180,480x270,640x360"])
        .current_dir(&web)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(first.0.wait().unwrap().success());
    assert!(idle(), "the first session ended");
    assert!(common::Killed(push("480x270", &srt, "mpegts", "95440")).0.wait().unwrap().success());
    assert!(idle(), "the second session ended");
    assert!(common::Killed(push("640x360", &rtmp, "flv", "3600")).0.wait().unwrap().success());
    let out = page.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "the page did not play every session in order: {text}");
    let r: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let fatal: Vec<&str> =
        r["errors"].as_array().unwrap().iter().filter_map(|e| e.as_str()).filter(|e| e.contains(":fatal")).collect();
    assert!(fatal.is_empty(), "fatal player errors: {fatal:?}");
    let _ = std::fs::remove_dir_all(Path::new(&data).parent().unwrap());
}
