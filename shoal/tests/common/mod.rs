//! What the tests that run `shoal` as a process share: starting it and reading what
//! it prints, plain HTTP GETs, and whether ffmpeg is here.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub fn ffmpeg_available() -> bool {
    let ok = Command::new("ffmpeg").arg("-version").output().is_ok();
    if !ok {
        assert!(std::env::var_os("SHOAL_REQUIRE_FFMPEG").is_none(), "ffmpeg is required here but not installed");
        eprintln!("SKIPPED: ffmpeg is not installed (CI installs it)");
    }
    ok
}

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `shoal ARGS` and collects its stdout lines until one starts with `until`.
pub fn start(args: &[&str], until: &str) -> (Killed, Vec<String>) {
    start_with_env(args, &[], until)
}

/// [`start`] with extra environment variables.
pub fn start_with_env(args: &[&str], env: &[(&str, &str)], until: &str) -> (Killed, Vec<String>) {
    spawn(args, env, until, None)
}

/// What a process wrote to stderr: (when, bytes) per read.
pub type LogTape = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, usize)>>>;

/// [`start`] at the operators' log level (info), with every write to stderr timed
/// (and not shown): what an attack makes it log.
pub fn start_logged(args: &[&str], until: &str) -> (Killed, Vec<String>, LogTape) {
    let tape = LogTape::default();
    let (child, lines) = spawn(args, &[("SHOAL_LOG", "info")], until, Some(tape.clone()));
    (child, lines, tape)
}

fn spawn(args: &[&str], env: &[(&str, &str)], until: &str, tape: Option<LogTape>) -> (Killed, Vec<String>) {
    use std::io::Read;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    let stderr = if tape.is_some() { Stdio::piped() } else { Stdio::inherit() };
    // SHOAL_TEST_LOG: another level for every process a test starts (when debugging one).
    let level = std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "warn".to_owned());
    cmd.args(args).env("SHOAL_LOG", level).stdout(Stdio::piped()).stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Killed(cmd.spawn().unwrap());
    if let (Some(tape), Some(mut stderr)) = (tape, child.0.stderr.take()) {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tape.lock().unwrap().push((std::time::Instant::now(), n));
            }
        });
    }
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.trim_start().starts_with(until);
        seen.push(line);
        if done {
            std::thread::spawn(move || lines.for_each(drop));
            return (child, seen);
        }
    }
    panic!("shoal {args:?} ended before printing {until:?}: {seen:?}");
}

/// Sends SIGTERM and waits (20 s at most) for the exit status.
pub fn terminate(child: &mut Killed) -> std::process::ExitStatus {
    assert!(Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap().success());
    // A watchdog kills it if it outlives 20 s; the wait itself blocks on the exit.
    let pid = child.0.id().to_string();
    let (exited, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let hung = watch.recv_timeout(std::time::Duration::from_secs(20)).is_err();
        if hung {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        hung
    });
    let status = child.0.wait().unwrap();
    let _ = exited.send(());
    assert!(!watchdog.join().unwrap(), "still running 20 s after SIGTERM");
    status
}

/// The RTMP address and stream key `shoal up` printed (`push:` line).
pub fn rtmp_target(lines: &[String]) -> (std::net::SocketAddr, String) {
    let url = word_after(lines, "push:    ");
    let (host, path) = url.strip_prefix("rtmp://").unwrap().split_once('/').unwrap();
    (host.parse().unwrap(), path.rsplit('/').next().unwrap().to_owned())
}

/// The `/metrics` URLs `shoal up` printed: tracker, ingest, seeder.
pub fn metrics_urls(lines: &[String]) -> Vec<String> {
    let line = lines.iter().find(|l| l.contains("metrics: ")).unwrap();
    let urls: Vec<String> = line.split_whitespace().filter(|w| w.starts_with("http://")).map(str::to_owned).collect();
    assert_eq!(urls.len(), 3, "tracker, ingest and seeder: {line}");
    urls
}

/// The word after `marker` in the first line that has it.
pub fn word_after(lines: &[String], marker: &str) -> String {
    let line = lines.iter().find(|l| l.contains(marker)).unwrap_or_else(|| panic!("no {marker:?} in {lines:?}"));
    line.split(marker).nth(1).unwrap().split_whitespace().next().unwrap().trim_matches('\'').to_owned()
}

/// `shoal up` with everything on free loopback ports.
pub fn up_args(data: &str) -> Vec<&str> {
    let any = "127.0.0.1:0";
    let mut a = vec!["up", "--data-dir", data];
    for flag in [
        "--tracker-listen",
        "--rtmp-listen",
        "--srt-listen",
        "--ingest-listen",
        "--seeder-listen",
        "--hls-listen",
        "--webrtc-listen",
    ] {
        a.extend([flag, any]);
    }
    a
}

/// `GET url` (http://HOST:PORT/PATH) with `Connection: close`: (status, body).
pub fn http_get(url: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") { dechunk(&raw[end..]) } else { raw[end..].to_vec() };
    (String::from_utf8_lossy(&raw[9..12]).parse().unwrap(), body)
}

/// The sum of a metric's samples in the Prometheus text page at `url` whose line
/// contains every one of `with` (label matches, e.g. `result="first"`).
pub fn metric(url: &str, name: &str, with: &[&str]) -> f64 {
    let (status, body) = http_get(url);
    assert_eq!(status, 200, "{url}");
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(name) && with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A chunked body's bytes.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// ffmpeg pushing a `size` test pattern (25 fps, a keyframe a second, 150 s) to `rtmp`,
/// in real time; killed when dropped.
pub fn testsrc_to(rtmp: &str, size: &str) -> Killed {
    Killed(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=25"), "-t", "150"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p"])
            .args(["-f", "flv", rtmp])
            .spawn()
            .expect("ffmpeg starts"),
    )
}

/// Polls `f` every 100 ms until it holds or `limit` passes.
pub fn eventually(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::park_timeout(std::time::Duration::from_millis(100));
    }
    f()
}

/// `shoal ingest add-channel NAME` on the data directory `data`: (stream key, channel id).
pub fn add_channel(data: &str, name: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["ingest", "add-channel", name, "--data-dir", data])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    (word_after(&said, "stream key (shown once): "), word_after(&said, "channel id (public key): "))
}
