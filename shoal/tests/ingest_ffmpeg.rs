//! End to end with the real encoder: `shoal ingest` on free ports, ffmpeg pushing
//! 10 s of `testsrc` + `sine` over RTMP and over SRT with a passphrase, the debug tap
//! decoded by ffmpeg `-xerror`; a wrong key and a wrong passphrase are refused.
//! Needs ffmpeg (CI installs it; elsewhere the test says it skipped).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn ffmpeg_available() -> bool {
    let ok = Command::new("ffmpeg").arg("-version").output().is_ok();
    if !ok {
        assert!(std::env::var_os("SHOAL_REQUIRE_FFMPEG").is_none(), "ffmpeg is required here but not installed");
        eprintln!("SKIPPED: ffmpeg is not installed (CI installs it)");
    }
    ok
}

struct Ingest {
    child: Child,
    dir: PathBuf,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

/// Waits for the child to say it is serving: it prints its addresses (the `HTTP` line
/// last) after writing `ports.json`. Reads its stdout, so no polling.
fn wait_until_serving(child: &mut Child) {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in std::io::BufReader::new(stdout).lines() {
        if line.expect("read child stdout").starts_with("HTTP") {
            return;
        }
    }
    panic!("shoal ingest exited before serving: {:?}", child.wait());
}

fn push(rtmp: &str, key: &str, seconds: u32) -> Output {
    encode(&[], seconds, &["-f", "flv", &format!("rtmp://{rtmp}/live/{key}")])
}

/// SRT is live transport: ffmpeg sends in real time (`-re`), as an encoder does.
fn push_srt(srt: &str, key: &str, passphrase: &str, seconds: u32) -> Output {
    let url = format!("srt://{srt}?streamid=#!::r=live/{key},m=publish&passphrase={passphrase}");
    encode(&["-re"], seconds, &["-f", "mpegts", &url])
}

fn encode(input_opts: &[&str], seconds: u32, output: &[&str]) -> Output {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(input_opts)
        .args(["-f", "lavfi", "-i", "testsrc=size=320x180:rate=25"])
        .args(input_opts)
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .args(output)
        .output()
        .expect("run ffmpeg")
}

/// The channel's whole window through the verified debug tap, decoded: the number of
/// video frames, failing on any decoder error or warning.
fn tap_frames(http: &str, channel: &str, token: &str, dir: &Path) -> u32 {
    let (status, body) = get(http, &format!("/v1/channels/{channel}/pieces?from=0&token={token}"));
    assert!(status.contains("410"), "{status}");
    let text = String::from_utf8_lossy(&body);
    let oldest: u64 = text.rsplit(' ').next().and_then(|s| s.trim().parse().ok()).expect("oldest seq in the 410");
    let (status, ts) = get(http, &format!("/v1/channels/{channel}/live.ts?from={oldest}&follow=false&token={token}"));
    assert!(status.contains("200"), "{status}");
    let file = dir.join(format!("{channel}.ts"));
    std::fs::write(&file, &ts).expect("write tap");
    let decode = Command::new("ffmpeg")
        .args(["-hide_banner", "-xerror", "-v", "warning", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg decode");
    assert!(decode.status.success(), "decode failed: {}", String::from_utf8_lossy(&decode.stderr));
    assert!(decode.stderr.is_empty(), "decoder warnings: {}", String::from_utf8_lossy(&decode.stderr));
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"])
        .args(["-of", "csv=p=0"])
        .arg(&file)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&probe.stdout).lines().find_map(|l| l.trim().parse().ok()).expect("a frame count")
}

fn add_channel(dir: &Path, name: &str, extra: &[&str]) -> String {
    let add =
        shoal().args(["ingest", "add-channel", name]).args(extra).arg("--data-dir").arg(dir).output().expect("add");
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let stdout = String::from_utf8_lossy(&add.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("stream key (shown once): "))
        .expect("the stream key is printed")
        .to_owned()
}

/// GET over plain HTTP/1.1 with `Connection: close`; returns (status line, body).
fn get(http: &str, path: &str) -> (String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(http).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("headers") + 4;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut body = raw[end..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let i = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..i]).expect("ascii").trim(), 16).expect("hex");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[i + 2..i + 2 + size]);
            rest = &rest[i + 2 + size + 2..];
        }
        body = out;
    }
    (head.lines().next().unwrap_or("").to_owned(), body)
}

#[test]
fn ffmpeg_rtmp_and_srt_pushes_play_from_the_debug_tap() {
    if !ffmpeg_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("shoal-e2e-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = add_channel(&dir, "news", &[]);
    let srt_key = add_channel(&dir, "field", &["--srt-passphrase", "a long enough secret"]);
    let child = shoal()
        .args(["ingest", "--rtmp-listen", "127.0.0.1:0", "--srt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shoal ingest");
    let mut ingest = Ingest { child, dir: dir.clone() };
    let ports: serde_json::Value = serde_json::from_str(&{
        wait_until_serving(&mut ingest.child);
        std::fs::read_to_string(dir.join("ports.json")).expect("ports.json is written before serving")
    })
    .expect("ports.json");
    let rtmp = ports["rtmp"].as_str().expect("rtmp port").to_owned();
    let http = ports["http"].as_str().expect("http port").to_owned();
    let srt = ports["srt"].as_str().expect("srt port").to_owned();
    let token = std::fs::read_to_string(dir.join("seeder-token")).expect("token").trim().to_owned();

    // A wrong key is refused, and ffmpeg shows why.
    let refused = push(&rtmp, "not-the-key", 1);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("unknown stream key"), "ffmpeg said: {why}");

    // Unpaced (no -re), as a file push or a misconfigured encoder: ffmpeg sends 10 s of
    // media in about one, and ingest holds it to real time (numbering can't run ahead
    // of the clock), reading the rest as the clock allows after ffmpeg is done.
    let ok = push(&rtmp, &key, 10);
    assert!(ok.status.success(), "ffmpeg push failed: {}", String::from_utf8_lossy(&ok.stderr));
    wait_until_no_publisher(&http);

    // 10 s at 25 fps, within one GOP (25 frames).
    let frames = tap_frames(&http, "news", &token, &dir);
    assert!((225..=250).contains(&frames), "RTMP: {frames} frames decoded of 250 sent");

    // SRT with the channel's passphrase; a wrong one is refused in the handshake.
    let refused = push_srt(&srt, &srt_key, "not the passphrase", 1);
    assert!(!refused.status.success(), "a wrong passphrase must be refused");
    let ok = push_srt(&srt, &srt_key, "a long enough secret", 10);
    assert!(ok.status.success(), "ffmpeg SRT push failed: {}", String::from_utf8_lossy(&ok.stderr));
    let frames = tap_frames(&http, "field", &token, &dir);
    assert!((225..=250).contains(&frames), "SRT: {frames} frames decoded of 250 sent");
    let (_, metrics) = get(&http, "/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("shoal_ingest_publish_refusals_total{reason=\"unknown_key\"} 1"), "{metrics}");
    assert!(!metrics.contains("shoal_ingest_publisher_paced_total 0\n"), "the unpaced push was held back: {metrics}");
}

/// Polls ingest's metrics (every 50 ms, at most 30 s) until no session is publishing.
fn wait_until_no_publisher(http: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, metrics) = get(http, "/metrics");
        if String::from_utf8_lossy(&metrics).contains("shoal_ingest_publishers_active 0\n") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the publish session did not end within 30 s");
        std::thread::park_timeout(std::time::Duration::from_millis(50));
    }
}
