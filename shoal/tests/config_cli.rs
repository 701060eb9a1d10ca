//! Settings from a TOML file (`--config`), overridden by SHOAL_* variables and flags,
//! shown by `--print-config`; mistakes in the file are refused with the reason.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

fn shoal(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shoal"));
    c.args(args).env_remove("SHOAL_TRACKER_LISTEN").env_remove("SHOAL_CONFIG").env_remove("SHOAL_TRACKER_INTERVAL");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn file(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!("shoal-config-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn file_then_environment_then_flags() {
    let cfg = file(
        "layers",
        "[tracker]\nlisten = \"127.0.0.1:9999\"\ninterval = 30\nredis_prefix = \"blue\"\n\n[seeder]\nchannel = \"news\"\n",
    );
    let (ok, out) = shoal(&["tracker", "--config", &cfg, "--print-config"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("[tracker]"), "{out}");
    assert!(out.contains("listen = \"127.0.0.1:9999\"   # config file"), "{out}");
    assert!(out.contains("interval = \"30\"   # config file"), "{out}");
    assert!(out.contains("redis-prefix = \"blue\"   # config file"), "snake_case keys work: {out}");
    assert!(out.contains("node = \"tracker-1\"   # default"), "{out}");
    assert!(out.contains("# database-url =   (unset)"), "{out}");

    // The environment beats the file; a flag beats both.
    let (ok, out) = shoal(
        &["tracker", "--config", &cfg, "--interval", "45", "--print-config"],
        &[("SHOAL_TRACKER_LISTEN", "127.0.0.1:1")],
    );
    assert!(ok, "{out}");
    assert!(out.contains("listen = \"127.0.0.1:1\"   # environment"), "{out}");
    assert!(out.contains("interval = \"45\"   # flag"), "{out}");

    // Every service flag has a variable, named SHOAL_<COMMAND>_<FLAG> where none was
    // chosen by hand.
    let (ok, out) = shoal(&["tracker", "--print-config"], &[("SHOAL_TRACKER_FLUSH_INTERVAL", "30")]);
    assert!(ok, "{out}");
    assert!(out.contains("flush-interval = \"30\"   # environment"), "{out}");
    let (ok, out) = shoal(&["up", "--help"], &[]);
    assert!(ok && out.contains("[env: SHOAL_UP_HOST="), "{out}");

    // SHOAL_CONFIG names the file too; secrets are never printed.
    let (ok, out) =
        shoal(&["seeder", "--print-config"], &[("SHOAL_CONFIG", cfg.as_str()), ("SHOAL_SEEDER_TOKEN", "s3cret")]);
    assert!(ok, "{out}");
    assert!(out.contains("channel = \"news\"   # config file"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
}

#[test]
fn mistakes_in_the_file_are_refused_with_the_reason() {
    let typo = file("typo", "[tracker]\nlisen = \"127.0.0.1:1\"\n");
    let (ok, out) = shoal(&["tracker", "--config", &typo, "--print-config"], &[]);
    assert!(!ok);
    assert!(out.contains("has no setting \"lisen\"") && out.contains("listen"), "{out}");

    // One [ingest] section serves `shoal ingest` and `shoal ingest add-channel`: keys of
    // the one are skipped by the other, not refused.
    let shared = file("shared", "[ingest]\nrtmp-listen = \"127.0.0.1:1\"\ndata-dir = \"/tmp/x\"\nads = true\n");
    let (ok, out) = shoal(&["ingest", "add-channel", "news", "--config", &shared, "--print-config"], &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("data-dir = \"/tmp/x\"   # config file") && out.contains("ads = true   # config file"),
        "{out}"
    );
    let (ok, out) = shoal(&["ingest", "--config", &shared, "--print-config"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("rtmp-listen = \"127.0.0.1:1\"   # config file"), "{out}");

    let section = file("section", "[trackers]\nlisten = \"127.0.0.1:1\"\n");
    let (ok, out) = shoal(&["tracker", "--config", &section, "--print-config"], &[]);
    assert!(!ok);
    assert!(out.contains("[trackers] is not a command's section"), "{out}");

    let broken = file("broken", "[tracker\n");
    let (ok, out) = shoal(&["tracker", "--config", &broken], &[]);
    assert!(!ok);
    assert!(out.contains("is not valid TOML"), "{out}");

    let (ok, out) = shoal(&["tracker", "--config", "/nonexistent/shoal.toml"], &[]);
    assert!(!ok);
    assert!(out.contains("reading the config file /nonexistent/shoal.toml"), "{out}");

    // The STUN and TURN servers pages are told of: checked before the seeder starts; a
    // TURN credential is never printed.
    let (ok, out) =
        shoal(&["seeder", "--channel", "news", "--seeder-token", "t", "--ice-server", "stun.example.org"], &[]);
    assert!(!ok);
    assert!(out.contains(r#"--ice-server: "stun.example.org" is not a STUN or TURN URL"#), "{out}");
    let (ok, out) =
        shoal(&["seeder", "--channel", "news", "--seeder-token", "t", "--ice-server", "turn:turn.example.org"], &[]);
    assert!(!ok);
    assert!(out.contains("is a TURN server: it needs a username and a credential"), "{out}");
    let (ok, out) = shoal(&["seeder", "--channel", "news", "--turn-credential", "hunter2", "--print-config"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("turn-credential") && !out.contains("hunter2"), "{out}");
}

/// What an orchestrator relies on: health and readiness endpoints on every service of
/// `shoal up`, and SIGTERM stopping it cleanly (exit status 0).
#[test]
fn probes_answer_and_sigterm_stops_cleanly() {
    use common::{http_get, metrics_urls, start, terminate, up_args};
    let dir = std::env::temp_dir().join(format!("shoal-sigterm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data").display().to_string();
    let (mut up, lines) = start(&up_args(&data), "Ctrl-C stops it");
    let urls = metrics_urls(&lines);
    let bases: Vec<&str> = urls.iter().map(|u| u.strip_suffix("/metrics").unwrap()).collect();
    for base in &bases {
        assert_eq!(http_get(&format!("{base}/healthz")).0, 200, "{base}/healthz");
    }
    // Tracker and ingest are ready at once; the seeder once it has a segment to serve.
    assert_eq!(http_get(&format!("{}/readyz", bases[0])).0, 200);
    assert_eq!(http_get(&format!("{}/readyz", bases[1])).0, 200);
    assert_eq!(http_get(&format!("{}/readyz", bases[2])).0, 503);
    let status = terminate(&mut up);
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
