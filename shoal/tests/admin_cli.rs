//! The operator's path end to end, as processes: `shoal admin` makes an account and a
//! plan in a SQLite catalogue, `shoal tracker` serves the admin API over it, `shoal
//! admin` creates a channel (its signing key written here) and rotates its stream key,
//! and `shoal ingest --database-url` lets exactly the catalogue's stream keys publish —
//! and ends a live session when its key is rotated out, its channel disabled or its
//! licence ended, without a restart. And billing: the account previews a month's
//! invoice, the platform finalizes and voids it.
#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The platform's first steps in a catalogue in `dir` — account `acme` and a commercial
/// plan `broadcast` at €499 a month — and a tracker over it: (the tracker, its base URL,
/// acme's token).
fn account_plan_and_tracker(dir: &Path) -> (Running, String, String) {
    let (ok, out) = admin(dir, "http://unused", "unused", &["account", "create", "acme"]);
    assert!(ok, "{out}");
    let token = after(&out, "API token (shown once):");
    let plan = ["plan", "create", "broadcast", "--commercial", "--monthly-price-cents", "49900"];
    assert!(admin(dir, "http://unused", "unused", &plan).0);
    let data = dir.display().to_string();
    let tracker_args =
        ["tracker", "--database-url", &db_url(dir), "--listen", "127.0.0.1:0", "--data-dir", &data, "--threads", "1"];
    let (tracker, line) = start(&tracker_args, "TRACKER");
    let url = after(&line, "TRACKER").split_whitespace().next().unwrap().trim_end_matches("/announce").to_owned();
    (tracker, url, token)
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

/// Polls `ok` every 50 ms until it holds; fails after 15 s.
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Waits until ingest closes this live publisher's connection (at most 15 s) and says
/// how long after the change it took.
fn cut_off(rt: &tokio::runtime::Runtime, p: ingest::rtmp_client::RtmpPublisher, change: &str) {
    let changed = Instant::now();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(15), p.wait_closed()).await })
        .unwrap_or_else(|_| panic!("{change}: the live session was not ended within 15 s"));
    eprintln!("{change}: live session ended {:?} after the admin command returned", changed.elapsed());
}

#[test]
fn an_operator_creates_a_channel_and_ingest_lets_only_its_key_publish() {
    let dir = temp_dir();
    let (_tracker, url, token) = account_plan_and_tracker(&dir);
    let data = dir.display().to_string();

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

    // A licence: the running ingest sees it (it reads the catalogue's change counter
    // twice a second).
    let (ok, out) = admin(&dir, &url, &token, &["license", "add", "news", "--plan", "broadcast"]);
    assert!(ok, "{out}");
    let licence: serde_json::Value = serde_json::from_str(&out).unwrap();
    eventually("the licence reaches ingest", || publish(rtmp, &key1).is_ok());

    // The key leaks and someone is on air with it. The owner rotates the key with no
    // grace: ingest ends that session (its connection closes) and the new key publishes.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let thief = rt.block_on(ingest::rtmp_client::RtmpPublisher::connect(rtmp, "live", &key1)).unwrap();
    let (ok, out) = admin(&dir, &url, &token, &["channel", "rotate-key", "news", "--grace-seconds", "0"]);
    assert!(ok, "{out}");
    let key2 = after(&out, "(shown once):");
    cut_off(&rt, thief, "rotation");
    let refused = publish(rtmp, &key1).unwrap_err();
    assert!(refused.contains("unknown stream key"), "{refused}");
    // Disabling the channel ends the owner's own session; enabling lets it back.
    let owner = rt.block_on(ingest::rtmp_client::RtmpPublisher::connect(rtmp, "live", &key2)).unwrap();
    let (ok, out) = admin(&dir, &url, &token, &["channel", "disable", "news"]);
    assert!(!ok && out.contains("\"licences\": \"keep\""), "a licence runs: say what of it: {out}");
    assert!(admin(&dir, &url, &token, &["channel", "disable", "news", "--licences", "keep"]).0);
    cut_off(&rt, owner, "disable");
    assert!(publish(rtmp, &key2).unwrap_err().contains("disabled"));
    assert!(admin(&dir, &url, &token, &["channel", "enable", "news"]).0);
    eventually("enabling reaches ingest", || publish(rtmp, &key2).is_ok());
    // Ending the licence of a channel that carries ads ends its session.
    let owner = rt.block_on(ingest::rtmp_client::RtmpPublisher::connect(rtmp, "live", &key2)).unwrap();
    let id = licence["id"].as_i64().unwrap().to_string();
    let (ok, out) = admin(&dir, &url, &token, &["license", "end", &id]);
    assert!(ok, "{out}");
    cut_off(&rt, owner, "licence end");
    assert!(publish(rtmp, &key2).unwrap_err().contains("licen"));

    // A rotation with grace: both keys publish until it ends.
    let (ok, out) = admin(&dir, &url, &token, &["license", "add", "news", "--plan", "broadcast"]);
    assert!(ok, "{out}");
    let (ok, out) = admin(&dir, &url, &token, &["channel", "rotate-key", "news", "--grace-seconds", "600"]);
    assert!(ok, "{out}");
    let key3 = after(&out, "(shown once):");
    eventually("the new licence and key reach ingest", || publish(rtmp, &key3).is_ok());
    publish(rtmp, &key2).unwrap();

    // Deleting the channel: its licence must end with it; its live session ends and
    // its keys publish nothing after.
    let (ok, out) = admin(&dir, &url, &token, &["channel", "delete", "news"]);
    assert!(!ok && out.contains("\"licences\": \"end\""), "a licence runs: end it with the channel: {out}");
    let owner = rt.block_on(ingest::rtmp_client::RtmpPublisher::connect(rtmp, "live", &key3)).unwrap();
    let (ok, out) = admin(&dir, &url, &token, &["channel", "delete", "news", "--licences", "end"]);
    assert!(ok, "{out}");
    cut_off(&rt, owner, "delete");
    let refused = publish(rtmp, &key3).unwrap_err();
    assert!(refused.contains("unknown stream key"), "{refused}");
    let (ok, out) = admin(&dir, &url, &token, &["channel", "list"]);
    assert!(ok && !out.contains("news"), "{out}");

    let (ok, out) = admin(&dir, &url, &token, &["audit"]);
    assert!(ok && out.contains("channel.rotate_stream_key") && out.contains("license.add"), "{out}");
    assert!(out.contains("channel.delete"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Billing from the command line: the platform grants a licence for last month (an
/// account can't back-date one), the account previews its invoice over the API, the
/// platform finalizes it (a number from the issuer's series) and voids it (a
/// credit note), and both are in the account's list and audit log.
#[test]
fn the_platform_finalizes_and_voids_an_invoice_the_account_previewed() {
    use catalogue::calendar::Month;
    let dir = temp_dir().join("billing");
    std::fs::create_dir_all(&dir).unwrap();
    let (_tracker, url, token) = account_plan_and_tracker(&dir);
    let keys = dir.join("keys").display().to_string();
    assert!(admin(&dir, &url, &token, &["channel", "create", "news", "--ads", "--key-dir", &keys]).0);

    // Licensed for all of last month.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let last = Month::of(Month::of(now).start() - 1);
    let (from, until) = (last.start().to_string(), last.end().to_string());
    let add = ["license", "add", "news", "--plan", "broadcast", "--from", &from, "--until", &until];
    let (ok, out) = admin(&dir, &url, &token, &add);
    assert!(!ok && out.contains("400") && out.contains("back"), "an account can't back-date a licence: {out}");
    let grant =
        ["license", "grant", "--account", "acme", "news", "--plan", "broadcast", "--from", &from, "--until", &until];
    let (ok, out) = admin(&dir, &url, &token, &grant);
    assert!(ok, "the platform can: {out}");
    let month = last.to_string();
    let (ok, out) = admin(&dir, &url, &token, &["invoice", "preview", "--month", &month]);
    assert!(ok, "{out}");
    let preview: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((preview[0]["total_cents"].as_i64(), preview[0]["status"].as_str()), (Some(49_900), Some("preview")));
    let (ok, out) = admin(&dir, &url, &token, &["invoice", "list"]);
    assert!(ok && out.trim() == "[]", "a preview issues nothing: {out}");

    let (ok, out) = admin(&dir, &url, &token, &["invoice", "finalize", "--month", &Month::of(now).to_string()]);
    assert!(!ok && out.contains("finalize it once it has ended"), "{out}");
    let (ok, out) = admin(&dir, &url, &token, &["invoice", "finalize", "--month", &month]);
    assert!(ok, "{out}");
    let issued = format!("acme\tSHOAL-000001\t{month}\tEUR\t49900");
    assert!(out.lines().any(|l| l == issued), "{out}");
    let (ok, out) = admin(&dir, &url, &token, &["invoice", "show", "SHOAL-000001", "--csv"]);
    assert!(ok && out.contains(&format!("SHOAL-000001,{month},total,,,,,,49900,EUR,")), "{out}");
    let (ok, out) = admin(&dir, &url, "shoal_guess", &["invoice", "show", "SHOAL-000001"]);
    assert!(!ok && out.contains("401"), "{out}");

    let (ok, out) = admin(&dir, &url, &token, &["invoice", "void", "SHOAL-000001", "--reason", "wrong address"]);
    assert!(ok, "{out}");
    assert!(out.contains("credit note SHOAL-000002 (EUR -49900 cents)"), "{out}");
    let (ok, out) = admin(&dir, &url, &token, &["invoice", "show", "SHOAL-000001", "--html"]);
    assert!(ok && out.contains("<title>Invoice SHOAL-000001</title>"), "{out}");
    assert!(
        out.contains("VOID — wrong address") && out.contains("to <b>acme</b>") && out.contains("499.00 EUR"),
        "{out}"
    );
    let (ok, out) = admin(&dir, &url, &token, &["invoice", "list"]);
    assert!(ok, "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let summary: Vec<_> = list.as_array().unwrap().iter().map(|i| (i["number"].clone(), i["status"].clone())).collect();
    assert_eq!(summary, [("SHOAL-000001".into(), "void".into()), ("SHOAL-000002".into(), "finalized".into())]);
    let (ok, out) = admin(&dir, &url, &token, &["audit"]);
    assert!(ok && out.contains("invoice.finalize") && out.contains("invoice.void"), "{out}");

    // A webhook endpoint: its secret shown once; the events above were before it.
    let (ok, out) = admin(&dir, &url, &token, &["webhook", "create", "https://billing.example/hooks"]);
    assert!(ok && after(&out, "signing secret (shown once):").starts_with("whsec_"), "{out}");
    let (ok, out) = admin(&dir, &url, &token, &["webhook", "list"]);
    assert!(ok && out.contains("https://billing.example/hooks") && !out.contains("whsec_"), "{out}");
    let (ok, out) = admin(&dir, &url, &token, &["webhook", "deliveries"]);
    assert!(ok && out.trim() == "[]", "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The API contract (issue 22): schemathesis, with every check, against a live tracker
/// with an account's token — every answer the API gives is in `/v1/openapi.json`, and
/// the API takes what the document allows (the exceptions, with reasons, in
/// `tools/contract/schemathesis.toml`). Needs schemathesis's `st` (`SHOAL_SCHEMATHESIS`;
/// `.ci/run` installs it from PyPI); skipped without it unless
/// `SHOAL_REQUIRE_SCHEMATHESIS` is set.
#[test]
fn the_admin_api_answers_as_its_openapi_document_says() {
    let st = match std::env::var("SHOAL_SCHEMATHESIS") {
        Ok(st) => st,
        Err(_) if std::env::var_os("SHOAL_REQUIRE_SCHEMATHESIS").is_some() => {
            panic!("SHOAL_REQUIRE_SCHEMATHESIS is set but SHOAL_SCHEMATHESIS (schemathesis's st) is not")
        }
        Err(_) => {
            eprintln!("SKIPPED: SHOAL_SCHEMATHESIS (schemathesis's st) is not set; .ci/run installs it");
            return;
        }
    };
    let dir = temp_dir().join("contract");
    std::fs::create_dir_all(&dir).unwrap();
    let (_tracker, url, token) = account_plan_and_tracker(&dir);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/contract/schemathesis.toml");
    let out = Command::new(st)
        .args(["--config-file", config, "run", &format!("{url}/v1/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--max-examples", "50", "--seed", "1", "--no-color"])
        .current_dir(&dir) // its cache (.schemathesis/) stays out of the source tree
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "schemathesis found the API and its document apart:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
