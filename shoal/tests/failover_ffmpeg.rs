//! Main/backup ingest as processes (issue 21, test a): one ffmpeg pushes the same feed to
//! two `shoal ingest` nodes (`-f tee`), which share a data directory (the channel file
//! and the epochs file beside it); two seeders each read both; ten viewers play through
//! the tracker. Both ingests cut the same pieces — numbers, bytes, signatures. The
//! ingest the seeders take most pieces from first is then SIGKILLed: no viewer misses a
//! piece, and a player reading a viewer's `/live.ts` across the kill (ffmpeg `-xerror`)
//! decodes clean.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

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

#[test]
fn two_ingests_fed_by_one_encoder_cut_the_same_pieces_and_either_may_die() {
    if !ffmpeg_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("shoal-failover-{}", std::process::id()));
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

    let (_tracker, lines) =
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

    // One encoder, two outputs (a hardware encoder's main and backup).
    let tee = format!(
        "[f=flv:onfail=ignore]rtmp://{}/live/{key}|[f=flv:onfail=ignore]rtmp://{}/live/{key}",
        ingests[0].1, ingests[1].1
    );
    let _ffmpeg = Killed(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-re"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "90"])
            .args(["-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-g", "25"])
            // The tee muxer can't tell the encoders FLV wants global headers (ffmpeg's
            // documentation): without this, no AVC sequence header and no video.
            .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-flags", "+global_header", "-f", "tee", &tee])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let both = [format!("http://{}", ingests[0].2), format!("http://{}", ingests[1].2)];
    let mut seeders = Vec::new();
    for _ in 0..2 {
        let args = [
            "seeder",
            "--tracker",
            &tracker,
            "--ingest",
            &both[0],
            "--ingest",
            &both[1],
            "--channel",
            "news",
            "--seeder-token",
            TOKEN,
            "--data-dir",
            &data,
            "--listen",
            ANY,
            "--http",
            ANY,
            "--no-webrtc",
        ];
        let (child, lines) = start(&args, "SEEDER");
        let http = word_after(&lines, "browsers: http://").split('/').next().unwrap().to_owned();
        seeders.push((child, format!("http://{http}/metrics")));
    }
    let mut viewers = Vec::new();
    for _ in 0..10 {
        let args = ["viewer", "--tracker", &tracker, "--channel-id", &channel_id, "--listen", ANY, "--play", ANY];
        let (child, lines) = start(&args, "VIEWER  watch");
        let play = word_after(&lines, "ffplay http://").split('/').next().unwrap().to_owned();
        viewers.push((child, play));
    }
    assert!(
        eventually(Duration::from_secs(40), || viewers.iter().all(|(_, play)| stat(play, "played") >= 100)),
        "every viewer plays 5 s"
    );

    // The same pieces from both: every number both hold, byte for byte (signatures too).
    let (a, b) = (window(&ingests[0].2), window(&ingests[1].2));
    let common: Vec<u64> = a.keys().filter(|s| b.contains_key(s)).copied().collect();
    assert!(common.len() >= 100, "{} numbers held by both (A {}, B {})", common.len(), a.len(), b.len());
    for s in &common {
        assert_eq!(a[s].wire(), b[s].wire(), "piece {s} differs between the two ingests");
    }
    eprintln!("ingests: {} pieces in common, identical", common.len());

    // Kill the ingest most seeders take their pieces from.
    let leading = |i: usize| -> f64 {
        let label = format!("ingest=\"{}\"", ingests[i].2);
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
    let mut dead = ingests[leader].0.take().unwrap();
    dead.0.kill().unwrap();
    dead.0.wait().unwrap();
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
    let _ = std::fs::remove_dir_all(&dir);
}
