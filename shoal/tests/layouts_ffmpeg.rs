//! One channel published by one encoder after another (issue 21, (c)): each with
//! another codec, track layout or timeline, over RTMP and SRT, idle between them.
//! `shoal up` carries them; one `shoal viewer` runs throughout. Players read the
//! viewer's `/live.ts`: one from the start to the end, and at every step one that
//! connects while the channel is idle and one that connects mid-session. Every
//! session's player decodes that session (its codec, its picture size) clean from
//! its first frame — never the tail of the session before — and the seeder's HLS
//! playlist marks each new session `EXT-X-DISCONTINUITY`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{eventually, ffmpeg_available, http_get, metric, start, up_args, word_after};

/// One encoder's session: how it is pushed and what a player must find in it.
struct Session {
    what: &'static str,
    srt: bool,
    video_codec: &'static str,
    size: &'static str,
    audio: bool,
    /// ffmpeg's output options beyond the codecs (timeline offset, PIDs).
    extra: &'static [&'static str],
}

const SECONDS: u32 = 8;

const SESSIONS: [Session; 4] = [
    Session {
        what: "RTMP, H.264 320x180 + AAC, timeline from 0",
        srt: false,
        video_codec: "h264",
        size: "320x180",
        audio: true,
        extra: &[],
    },
    // The same tracks as the session before: `/live.ts` goes on through it.
    Session {
        what: "SRT, H.264 480x270 + AAC on other PIDs, its 33-bit clock wrapping mid-session",
        srt: true,
        video_codec: "h264",
        size: "480x270",
        audio: true,
        extra: &["-output_ts_offset", "95440", "-mpegts_start_pid", "0x300", "-mpegts_pmt_start_pid", "0x1200"],
    },
    Session {
        what: "RTMP, H.264 640x360 without audio, timeline from 1 h",
        srt: false,
        video_codec: "h264",
        size: "640x360",
        audio: false,
        extra: &["-output_ts_offset", "3600"],
    },
    Session {
        what: "SRT, HEVC 320x180 + AAC",
        srt: true,
        video_codec: "hevc",
        size: "320x180",
        audio: true,
        extra: &[],
    },
];

/// ffmpeg pushing `s` in real time to `url`, for [`SECONDS`].
fn push(s: &Session, url: &str) -> Output {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-re"]).args([
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc=size={}:rate=25", s.size),
    ]);
    if s.audio {
        c.args(["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
    }
    c.args(["-t", &SECONDS.to_string()]);
    if s.video_codec == "hevc" {
        c.args(["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=25:min-keyint=25:log-level=error"]);
    } else {
        c.args(["-c:v", "libx264", "-preset", "veryfast", "-g", "25"]);
    }
    c.args(["-pix_fmt", "yuv420p"]).args(if s.audio { &["-c:a", "aac"][..] } else { &[] }).args(s.extra);
    c.args(["-f", if s.srt { "mpegts" } else { "flv" }, url]);
    c.stdin(Stdio::null()).output().expect("ffmpeg runs")
}

/// A player reading `GET path` from `host` until stopped, connecting again whenever the
/// stream ends (as VLC with `--repeat` or mpv with `--loop-playlist` do: a new
/// connection, a new demuxer): the body of each connection.
struct Player {
    stop: Arc<AtomicBool>,
    reader: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

/// One connection's whole answer, until it ends or `stop`: (body, whether it ended).
fn read_one(host: &str, path: &str, stop: &AtomicBool) -> (Vec<u8>, bool) {
    let mut s = std::net::TcpStream::connect(host).unwrap();
    // HTTP/1.0: the body is the bytes up to the close, not chunked.
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let ended = loop {
        if stop.load(Ordering::Relaxed) {
            break false;
        }
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading the stream: {e}"),
        }
    };
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer") + 4;
    assert!(raw.starts_with(b"HTTP/1.0 200") || raw.starts_with(b"HTTP/1.1 200"), "{:?}", &raw[..end]);
    (raw.split_off(end), ended)
}

impl Player {
    fn connect(host: &str, path: &str) -> Player {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (host, path) = (host.to_owned(), path.to_owned());
        let reader = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            loop {
                let (body, ended) = read_one(&host, &path, &stopped);
                bodies.push(body);
                if !ended {
                    return bodies;
                }
            }
        });
        Player { stop, reader }
    }

    /// Stops reading: what each connection read, written to `{stem}-{i}.ts`.
    fn finish(self, stem: &Path) -> Vec<PathBuf> {
        self.stop.store(true, Ordering::Relaxed);
        let bodies = self.reader.join().unwrap();
        let mut files = Vec::new();
        for (i, body) in bodies.iter().enumerate().filter(|(_, b)| !b.is_empty()) {
            let file = stem.with_file_name(format!("{}-{i}.ts", stem.file_name().unwrap().to_string_lossy()));
            std::fs::write(&file, body).unwrap();
            files.push(file);
        }
        files
    }
}

/// ffprobe's (codec, WxH) of the first video stream in `file`, and the video frames
/// ffmpeg decodes from it — `Err` with its complaints if it decodes any with an error.
fn decode(file: &Path) -> Result<(String, String, u64), String> {
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&probe.stdout).lines().next().unwrap_or("").to_owned();
    let mut f = said.split(',');
    let (codec, w, h) = (f.next().unwrap_or("").to_owned(), f.next().unwrap_or(""), f.next().unwrap_or(""));
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-xerror", "-i"])
        .arg(file)
        .args(["-map", "0:v:0", "-f", "null", "-", "-progress", "pipe:1", "-nostats"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let frames = stdout.lines().filter_map(|l| l.strip_prefix("frame=")).filter_map(|n| n.parse().ok()).next_back();
    let errors = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if !out.status.success() || !errors.is_empty() {
        return Err(format!("{} ({errors})", out.status));
    }
    Ok((codec, format!("{w}x{h}"), frames.unwrap_or(0)))
}

/// Polls ingest's metrics until no session is publishing.
fn idle(ingest_metrics: &str) -> bool {
    eventually(Duration::from_secs(30), || metric(ingest_metrics, "shoal_ingest_publishers_active", &[]) == 0.0)
}

#[test]
fn encoders_one_after_another_with_other_codecs_layouts_and_timelines_play_at_every_step() {
    if !ffmpeg_available() {
        return;
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("shoal-layouts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data").display().to_string();
    let (_up, up) = start(&up_args(&data), "Ctrl-C stops it");
    let rtmp = word_after(&up, "push:    ");
    let srt = word_after(&up, "or:   ");
    let tracker = format!("http://127.0.0.1:{}", word_after(&up, "--tracker http://127.0.0.1:"));
    let channel_id = word_after(&up, "--channel-id ");
    let playlist = word_after(&up, "LL-HLS: ").replace("live.m3u8", "plain.m3u8");
    let [_, ingest_metrics, _] = <[String; 3]>::try_from(common::metrics_urls(&up)).unwrap();
    let args = ["viewer", "--tracker", &tracker, "--channel-id", &channel_id, "--listen", "127.0.0.1:0"];
    let (_viewer, lines) = start(&[&args[..], &["--play", "127.0.0.1:0"]].concat(), "VIEWER  watch");
    let play = word_after(&lines, "ffplay http://").split('/').next().unwrap().to_owned();
    let played = || {
        let (_, body) = http_get(&format!("http://{play}/stats.json"));
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["played"].as_u64().unwrap()
    };

    let long = Player::connect(&play, "/live.ts");
    let mut failures = Vec::new();
    let mut check = |k: usize, when: &str, files: &[PathBuf], least: u64| {
        let s = &SESSIONS[k];
        if files.len() != 1 {
            failures.push(format!("session {k} {when}: {} connections, not one", files.len()));
        }
        for f in files {
            let got = decode(f);
            eprintln!("session {k} ({}), player connected {when}: {got:?}", s.what);
            match got {
                Ok((codec, size, frames)) => {
                    if codec != s.video_codec || size != s.size {
                        failures.push(format!("session {k} {when}: {codec} {size}, not {} {}", s.video_codec, s.size));
                    }
                    if frames < least {
                        failures.push(format!("session {k} {when}: {frames} frames decoded, fewer than {least}"));
                    }
                }
                Err(e) => failures.push(format!("session {k} {when}: {e}")),
            }
        }
    };
    for (k, s) in SESSIONS.iter().enumerate() {
        let before = metric(&ingest_metrics, "shoal_ingest_pieces_total", &[]) as u64;
        // The channel has been idle longer than a viewer's GOP replay lasts: a player
        // connecting now must get the next session from its start, nothing of the last.
        std::thread::sleep(Duration::from_micros(viewer::playout::IDLE_AFTER_US + 500_000));
        let idle_player = Player::connect(&play, "/live.ts");
        let url = if s.srt { srt.clone() } else { rtmp.clone() };
        let encoder = {
            let s: &'static Session = &SESSIONS[k];
            std::thread::spawn(move || push(s, &url))
        };
        // Mid-session: a player connects, and the playlist has the new session's
        // segments after a discontinuity (the old session's are still listed).
        assert!(eventually(Duration::from_secs(20), || played() >= before + 60), "session {k} plays at the viewer");
        let mid_player = Player::connect(&play, "/live.ts");
        if k > 0 {
            let (status, body) = http_get(&playlist);
            let text = String::from_utf8_lossy(&body);
            assert_eq!(status, 200, "{text}");
            assert!(text.contains("#EXT-X-DISCONTINUITY\n"), "session {k}: no discontinuity listed:\n{text}");
        }
        let out = encoder.join().unwrap();
        assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
        assert!(idle(&ingest_metrics), "session {k} ended at ingest");
        // The session's pieces reach the viewer (played counts pieces): all of them, or
        // as many as it will get (what its players then decode is the test).
        let made = metric(&ingest_metrics, "shoal_ingest_pieces_total", &[]) as u64;
        let (mut last, mut still) = (played(), 0);
        assert!(
            eventually(Duration::from_secs(15), || {
                let now = played();
                still = if now == last { still + 1 } else { 0 };
                last = now;
                now >= made || still >= 15
            }),
            "the viewer's playout settles"
        );
        if last < made {
            let (_, m) = http_get(&ingest_metrics);
            let m = String::from_utf8_lossy(&m).into_owned();
            let lines: Vec<&str> = m.lines().filter(|l| l.contains("epoch_events") || l.contains("withheld")).collect();
            eprintln!("session {k}: the viewer played {last} of {made} pieces; ingest: {lines:?}");
        }
        let files = idle_player.finish(&dir.join(format!("session{k}-idle")));
        check(k, "idle", &files, 25 * (u64::from(SECONDS) - 1));
        let files = mid_player.finish(&dir.join(format!("session{k}-mid")));
        check(k, "mid-session", &files, 25 * 3);
    }
    // The player that stayed: one connection per track layout, each decoding clean —
    // sessions 0 and 1 (the same tracks; another picture size and timeline) on one.
    let files = long.finish(&dir.join("long"));
    let expect =
        [("h264", "320x180", 2 * 25 * (u64::from(SECONDS) - 1)), ("h264", "640x360", 0), ("hevc", "320x180", 0)];
    if files.len() != expect.len() {
        failures.push(format!("the staying player had {} connections, not {}", files.len(), expect.len()));
    }
    for (f, (codec, size, least)) in files.iter().zip(expect) {
        let got = decode(f);
        eprintln!("staying player, {}: {got:?}", f.display());
        match got {
            Ok((c, s, frames)) if c == codec && s == size && frames >= least.max(25 * (u64::from(SECONDS) - 2)) => {}
            other => failures.push(format!("staying player {}: {other:?}, not {codec} {size}", f.display())),
        }
    }
    if std::env::var_os("SHOAL_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
