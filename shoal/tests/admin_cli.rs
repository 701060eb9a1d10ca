//! The operator's path end to end, as processes: `shoal admin` makes an account and a
//! plan in a SQLite catalogue, `shoal tracker` serves the admin API over it, `shoal
//! admin` creates a channel (its signing key written here) and rotates its stream key,
//! and `shoal ingest --database-url` lets exactly the catalogue's stream keys publish.
#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

/// Kills the child and removes the directory when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `shoal ARGS` and returns it once it prints a line starting with `ready`, and that line.
fn start(args: &[&str], ready: &str) -> (Running, String) {
    let mut child = shoal().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let line = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with(ready))
        .unwrap_or_else(|| panic!("shoal {args:?} exited before printing {ready:?}"));
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (Running(child), line)
}

/// Runs `shoal admin ARGS`; (success, stdout + stderr).
fn admin(dir: &Path, tracker: &str, token: &str, args: &[&str]) -> (bool, String) {
    let out = shoal()
        .arg("admin")
        .args(["--database-url", &db_url(dir), "--tracker", tracker, "--token", token])
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("catalogue.db").display())
}

/// The value after `label` on the line that has it.
fn after(text: &str, label: &str) -> String {
    let line = text.lines().find(|l| l.contains(label)).unwrap_or_else(|| panic!("no {label:?} in {text}"));
    line.split(label).nth(1).unwrap().trim().to_owned()
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("shoal-admin-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn publish(rtmp: std::net::SocketAddr, key: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        match ingest::rtmp_client::RtmpPublisher::connect(rtmp, "live", key).await {
            Ok(p) => p.close().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
}

#[test]
fn an_operator_creates_a_channel_and_ingest_lets_only_its_key_publish() {
    let dir = temp_dir();
    let (ok, out) = admin(&dir, "http://unused", "unused", &["account", "create", "acme"]);
    assert!(ok, "{out}");
    let token = after(&out, "API token (shown once):");
    let plan = ["plan", "create", "broadcast", "--commercial", "--monthly-price-cents", "49900"];
    assert!(admin(&dir, "http://unused", "unused", &plan).0);

    let data = dir.display().to_string();
    let tracker_args =
        ["tracker", "--database-url", &db_url(&dir), "--listen", "127.0.0.1:0", "--data-dir", &data, "--threads", "1"];
    let (_tracker, line) = start(&tracker_args, "TRACKER");
    let url = after(&line, "TRACKER").split_whitespace().next().unwrap().trim_end_matches("/announce").to_owned();

    let keys = dir.join("keys");
    let keys_arg = keys.display().to_string();
    let (ok, out) = admin(&dir, &url, &token, &["channel", "create", "news", "--ads", "--key-dir", &keys_arg]);
    assert!(ok, "{out}");
    let key1 = after(&out, "stream key (shown once):");
    assert!(out.contains("add a commercial licence"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("news.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let (ok, out) =
        admin(&dir, &url, &token, &["channel", "create", "news", "--key-dir", &dir.join("k2").display().to_string()]);
    assert!(!ok && out.contains("409"), "a second channel of that name: {out}");
    assert!(!dir.join("k2/news.key").exists(), "no key left behind by a refused create");
    let (ok, out) = admin(&dir, &url, "shoal_guess", &["channel", "list"]);
    assert!(!ok && out.contains("401"), "{out}");

    let ingest_args = [
        "ingest",
        "--database-url",
        &db_url(&dir),
        "--data-dir",
        &data,
        "--key-dir",
        &keys_arg,
        "--rtmp-listen",
        "127.0.0.1:0",
        "--srt-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    let (_ingest, _) = start(&ingest_args, "HTTP");
    let ports: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("ports.json")).unwrap()).unwrap();
    let rtmp: std::net::SocketAddr = ports["rtmp"].as_str().unwrap().parse().unwrap();
    let refused = publish(rtmp, &key1).unwrap_err();
    assert!(refused.contains("no commercial license"), "{refused}");
    assert!(publish(rtmp, "guess").unwrap_err().contains("unknown stream key"));

    // A licence and a rotation; ingest re-reads the catalogue every 10 s, so a fresh
    // ingest is started to see them now rather than waiting.
    let (ok, out) = admin(&dir, &url, &token, &["license", "add", "news", "--plan", "broadcast"]);
    assert!(ok, "{out}");
    let (ok, out) = admin(&dir, &url, &token, &["channel", "rotate-key", "news", "--grace-seconds", "600"]);
    assert!(ok, "{out}");
    let key2 = after(&out, "(shown once):");
    drop(_ingest);
    let (_ingest, _) = start(&ingest_args, "HTTP");
    let ports: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("ports.json")).unwrap()).unwrap();
    let rtmp: std::net::SocketAddr = ports["rtmp"].as_str().unwrap().parse().unwrap();
    publish(rtmp, &key2).unwrap();
    publish(rtmp, &key1).unwrap();

    let (ok, out) = admin(&dir, &url, &token, &["audit"]);
    assert!(ok && out.contains("channel.rotate_stream_key") && out.contains("license.add"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
