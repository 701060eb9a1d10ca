//! `shoal sim` as a user runs it: the binary, a JSON file, the keys measuring.md names.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

#[test]
fn sim_small_writes_the_measuring_json() {
    let dir = std::env::temp_dir().join(format!("shoal-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.json");
    let out = shoal().args(["sim", "--scenario", "small", "--json"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("continuity"), "prints a table: {stdout}");

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for key in [
        "scenario",
        "viewers",
        "seeds",
        "bitrate_kbps",
        "rng_seed",
        "latency_ms",
        "continuity",
        "seed_share",
        "duplicate_ratio",
        "startup_ms",
        "seed_upload_bytes",
        "viewer_download_bytes",
        "forged_pieces_sent",
        "forged_pieces_accepted",
        "events",
        "wall_s",
    ] {
        assert!(json.get(key).is_some(), "missing key {key}");
    }
    for key in ["p50", "p95", "p99", "max"] {
        assert!(json["latency_ms"][key].is_u64(), "latency_ms.{key}");
    }
    for key in ["p50", "p99"] {
        assert!(json["startup_ms"][key].is_u64(), "startup_ms.{key}");
    }
    assert_eq!(json["scenario"], "small");
    assert_eq!(json["viewers"], 100);
    assert_eq!(json["seeds"], 2);
    assert_eq!(json["viewers_without_pieces"], 0);
    assert!(json["continuity"].as_f64().unwrap() > 0.99);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_scenario_and_bad_override_fail_clearly() {
    let out = shoal().args(["sim", "--scenario", "huge"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario \"huge\""));

    let out = shoal().args(["sim", "--set", "nonsense=1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such scenario field"));
}

#[test]
fn print_scenario_shows_every_field() {
    let out = shoal().args(["sim", "--scenario", "small", "--viewers", "7", "--print-scenario"]).output().unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["viewers"], 7);
    assert_eq!(json["loss"], 0.001);
    assert_eq!(json["unreachable_share"], 0.5);
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn plot_and_sweep_write_svg() {
    let dir = temp_dir("plots");
    let quick = ["--viewers", "30", "--warmup-s", "2", "--window-s", "2"];
    let out = shoal().args(["sim", "--plot"]).arg(&dir).args(quick).output().unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    for name in ["latency_cdf.svg", "seed_egress.svg"] {
        let svg = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{name}");
    }
    let out = shoal()
        .args(["sim", "--sweep", "--sweep-viewers", "10,20", "--warmup-s", "2", "--window-s", "2", "--plot"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let svg = std::fs::read_to_string(dir.join("seed_egress_vs_viewers.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2, "seeds and the CDN line");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("CDN Mbit/s"), "{table}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_sim_writes_figures_against_targets() {
    let dir = temp_dir("bench");
    let out = shoal().args(["bench", "sim", "--scenario", "small", "--out"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("bench-sim-small.json")).unwrap()).unwrap();
    let checks = json["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["figure"] == "latency p99 ms" && c["met"].is_boolean()));
    assert_eq!(json["report"]["scenario"], "small");
    std::fs::remove_dir_all(&dir).unwrap();
}
