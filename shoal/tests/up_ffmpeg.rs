//! End to end, live, with the real encoder: `shoal up` on free ports, a second seeder
//! (`shoal seeder`), ffmpeg pushing 20 s of `testsrc` + `sine` over RTMP, 20 viewers
//! (in this process, over loopback TCP). The second seeder is killed (SIGKILL) 10 s in.
//! Each viewer's playout decodes with `ffmpeg -xerror`, holds the frames sent within one
//! GOP, and no viewer missed more than 1 s of pieces; one viewer is also read over
//! HTTP (`/live.ts`) by ffmpeg and its `/live.m3u8` checked; the seeder's HLS playlist is
//! valid and a segment decodes.
//! Needs ffmpeg (CI installs it; elsewhere it says it
//! skipped). Waits on the processes' output and polls with deadlines; no sleeps. And,
//! without ffmpeg, that a restarted `shoal up` keeps its channel and stream key.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ffmpeg_available, http_get, start, up_args, word_after};
use net::Join;
use swarm::piece::ChannelId;
use viewer::Viewer;

fn frames(file: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries", "stream=nb_read_packets"])
        .args(["-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap();
    // The stream's count, then the same again under its program: the first line.
    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().parse().unwrap_or(0)
}

fn decodes(file: &Path) -> Result<(), String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

#[test]
fn shoal_up_carries_ffmpeg_to_twenty_viewers_through_a_seeder_kill() {
    if !ffmpeg_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("shoal-up-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data").display().to_string();
    let any = "127.0.0.1:0";
    let (_up, up) = start(&up_args(&data), "Ctrl-C stops it");
    let rtmp = word_after(&up, "push:    ");
    let tracker = format!("http://127.0.0.1:{}", word_after(&up, "--tracker http://127.0.0.1:"));
    let channel = ChannelId::from_hex(&word_after(&up, "--channel-id ")).unwrap();
    let tap = word_after(&up, "check:   ffplay ");
    let ingest = tap.split("/v1/").next().unwrap().to_owned();
    let playlist_url = word_after(&up, "LL-HLS: ");
    let token = tap.split("token=").nth(1).unwrap().to_owned();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Twenty viewers, each recording what it plays.
    let mut viewers = Vec::new();
    let mut recordings = Vec::new();
    for _ in 0..20 {
        let join = Join {
            tracker: tracker.clone(),
            channel,
            listen: "127.0.0.1:0".parse().unwrap(),
            seed_token: None,
            upload_kbps: 8_000,
            shell: net::shell::ShellOptions::default(),
        };
        let v = rt.block_on(Viewer::start(join)).unwrap();
        let rec = Arc::new(Mutex::new(Vec::<u8>::new()));
        let (r, p) = (rec.clone(), v.playout.clone());
        rt.spawn(async move {
            let mut rx = p.subscribe();
            while let Some(b) = rx.recv().await {
                r.lock().unwrap().extend_from_slice(&b);
            }
        });
        recordings.push(rec);
        viewers.push(v);
    }
    // One viewer also over HTTP, as a player reads it.
    let play = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let play_url = format!("http://{}/live.ts", play.local_addr().unwrap());
    rt.spawn(viewer::serve(play, Arc::new(viewers.remove(0))));

    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-re"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "20"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .args(["-f", "flv", &rtmp])
        .spawn()
        .unwrap();
    let started = Instant::now();
    let http_out = dir.join("http.ts");
    let mut http_reader = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i", &play_url, "-t", "12", "-c", "copy", "-f", "mpegts"])
        .arg(&http_out)
        .spawn()
        .unwrap();
    let (second, _) = start(
        &[
            "seeder",
            "--tracker",
            &tracker,
            "--ingest",
            &ingest,
            "--channel",
            "demo",
            "--seeder-token",
            &token,
            "--listen",
            any,
            "--http",
            any,
        ],
        "SEEDER",
    );
    // Kill the second seeder 10 s into the feed.
    let played_at = |d: Duration| {
        while started.elapsed() < d {
            std::thread::park_timeout(d - started.elapsed());
        }
    };
    played_at(Duration::from_secs(10));
    let skipped_before: Vec<u64> = viewers.iter().map(|v| v.playout.stats().skipped).collect();
    drop(second);
    assert!(ffmpeg.wait().unwrap().success(), "ffmpeg pushed 20 s");
    // Everything sent is played 1.5 s after it was sent: wait until playout stops growing.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = 0;
    loop {
        let total: u64 = viewers.iter().map(|v| v.playout.stats().played).sum();
        if (total == last && total > 0) || Instant::now() > deadline {
            break;
        }
        last = total;
        std::thread::park_timeout(Duration::from_secs(2));
    }
    let stats: Vec<_> = viewers.iter().map(|v| v.playout.stats()).collect();
    eprintln!("viewers: {stats:?}");
    for (i, (s, before)) in stats.iter().zip(&skipped_before).enumerate() {
        assert!(s.skipped - before <= 20, "viewer {i} missed more than 1 s of pieces after the kill: {s:?}");
    }
    // Sent: 20 s at 25 fps = 500 frames; one GOP is 25.
    for (i, rec) in recordings.iter().skip(1).enumerate() {
        let file: PathBuf = dir.join(format!("viewer-{i}.ts"));
        std::fs::write(&file, &*rec.lock().unwrap()).unwrap();
        decodes(&file).unwrap_or_else(|e| panic!("viewer {i}'s playout does not decode: {e}"));
        let f = frames(&file);
        let peer = viewers[i].node.handle.snapshot();
        assert!((475..=500).contains(&f), "viewer {i} holds {f} of 500 frames; its peer: {:?}", peer.stats);
    }
    // The seeder's HLS fallback: a live playlist of whole segments that decode.
    let (status, playlist) = http_get(&playlist_url);
    let playlist = String::from_utf8(playlist).unwrap();
    assert_eq!(status, 200, "{playlist}");
    assert!(playlist.starts_with("#EXTM3U\n") && playlist.contains("#EXT-X-TARGETDURATION:"), "{playlist}");
    let segments: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".ts")).collect();
    assert!(segments.len() >= 3, "{playlist}");
    let seg_url = format!("{}/{}", playlist_url.rsplit_once('/').unwrap().0, segments[segments.len() - 1]);
    let (status, seg) = http_get(&seg_url);
    assert_eq!(status, 200);
    let seg_file = dir.join("hls.ts");
    std::fs::write(&seg_file, seg).unwrap();
    decodes(&seg_file).unwrap_or_else(|e| panic!("the HLS segment does not decode: {e}"));
    assert!(frames(&seg_file) >= 20, "a segment is a GOP (25 frames): {}", frames(&seg_file));
    // Low-latency HLS: the parts (of a few pieces) are listed and served as whole TS packets.
    assert!(playlist.contains("#EXT-X-PART-INF:PART-TARGET=") && playlist.contains("CAN-BLOCK-RELOAD=YES"));
    let part = playlist.lines().find(|l| l.starts_with("#EXT-X-PART:")).unwrap();
    let uri = part.split("URI=\"").nth(1).unwrap().split('"').next().unwrap();
    let (status, bytes) = http_get(&format!("{}/{uri}", playlist_url.rsplit_once('/').unwrap().0));
    assert_eq!(status, 200, "{uri}");
    assert!(!bytes.is_empty() && bytes.len() % 188 == 0 && bytes.chunks(188).all(|p| p[0] == 0x47), "{uri}");
    assert_eq!(http_get(&play_url.replace("/live.ts", "/readyz")).0, 200, "a playing viewer is ready");
    // The viewer's own HLS beside its /live.ts.
    let (status, vp) = http_get(&play_url.replace("/live.ts", "/live.m3u8"));
    let vp = String::from_utf8(vp).unwrap();
    assert_eq!(status, 200, "{vp}");
    assert!(vp.lines().filter(|l| l.ends_with(".ts")).count() >= 3, "{vp}");
    assert!(http_reader.wait().unwrap().success());
    decodes(&http_out).unwrap();
    assert!(frames(&http_out) >= 250, "12 s read over HTTP: {} frames", frames(&http_out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restarted `shoal up` serves the same channel with the same stream key.
#[test]
fn shoal_up_restarts_with_the_same_channel_and_key() {
    let dir = std::env::temp_dir().join(format!("shoal-up-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.display().to_string();
    let args = up_args(&data);
    let key_of = |lines: &[String]| word_after(lines, "push:    ").rsplit('/').next().unwrap().to_owned();
    let (first, lines) = start(&args, "Ctrl-C stops it");
    let (key, id) = (key_of(&lines), word_after(&lines, "--channel-id "));
    assert_eq!(key.len(), 32);
    drop(first);
    let (_second, lines) = start(&args, "Ctrl-C stops it");
    assert_eq!((key_of(&lines), word_after(&lines, "--channel-id ")), (key, id));
    let _ = std::fs::remove_dir_all(&dir);
}
