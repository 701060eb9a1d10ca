//! The dashboards query what the services export: `shoal up` on free ports takes the
//! recorded fixture over RTMP and then over SRT (so per-channel and SRT series exist),
//! its three `/metrics` endpoints (tracker, ingest, seeder) are scraped, and every
//! `shoal_*` series named in a query of `dashboards/grafana/dashboards/*.json` must be
//! among what was scraped. Also: the dashboards are well formed for provisioning (unique
//! panel ids, the provisioned datasource's uid), and the exposition is Prometheus's
//! (every family has HELP and TYPE, counters end in `_total`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{http_get, metrics_urls, rtmp_target, start, up_args, word_after};
use futures_util::SinkExt;

const FIXTURE: &[u8] = include_bytes!("../../ingest/tests/fixtures/testsrc-h264-aac-4s.flv");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Series names (no labels) of a text exposition, and the families' declared types.
fn series(text: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    let mut names = BTreeSet::new();
    let mut types = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            types.push((w.next().unwrap().to_owned(), w.next().unwrap().to_owned()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap();
            names.insert(line[..end].to_owned());
        }
    }
    (names, types)
}

/// Every `shoal_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("shoal_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_metric_a_dashboard_queries_is_exported() {
    let dir = std::env::temp_dir().join(format!("shoal-dashboards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data").display().to_string();
    let (_up, up) = start(&up_args(&data), "Ctrl-C stops it");
    let (rtmp_addr, key) = rtmp_target(&up);
    let srt = word_after(&up, "or:   srt://");
    let srt_addr: std::net::SocketAddr = srt.split('?').next().unwrap().parse().unwrap();
    let endpoints = metrics_urls(&up);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        // RTMP: the fixture once, at an encoder's pace.
        let p = ingest::rtmp_client::RtmpPublisher::connect(rtmp_addr, "live", &key).await.unwrap();
        p.replay_paced(FIXTURE, Some(1)).await.unwrap();
        // SRT: 3 s of MPEG-TS (the tap's own output) so the SRT session reports stats.
        let tap = word_after(&up, "check:   ffplay ");
        let (status, ts) = http_get(&format!("{}&follow=false", tap.trim_matches('\'')));
        assert_eq!(status, 200);
        assert!(ts.len() > 10 * 188, "{} bytes of TS from the tap", ts.len());
        let stream_id = format!("#!::r=live/{key},m=publish");
        let mut sock = srt_tokio::SrtSocket::builder()
            .latency(Duration::from_millis(120))
            .call(srt_addr, Some(stream_id.as_str()))
            .await
            .unwrap();
        let chunks: Vec<&[u8]> = ts.chunks(7 * 188).collect();
        let start = Instant::now();
        let n = chunks.len() * 3;
        for (i, chunk) in chunks.iter().cycle().take(n).enumerate() {
            let at = start + Duration::from_millis(3_000 * i as u64 / n as u64);
            tokio::time::sleep_until(at.into()).await;
            sock.send((at, Bytes::copy_from_slice(chunk))).await.unwrap();
        }
        sock.close().await.unwrap();
    });

    let mut exported = BTreeSet::new();
    for url in &endpoints {
        let (status, body) = http_get(url);
        assert_eq!(status, 200, "{url}");
        let text = String::from_utf8(body).unwrap();
        let (names, types) = series(&text);
        for (name, kind) in &types {
            assert!(text.contains(&format!("# HELP {name} ")), "{url}: {name} has no HELP");
            assert!(name.starts_with("shoal_"), "{url}: {name} is not namespaced");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{url}: {name} is a {kind}");
        }
        exported.extend(names);
    }
    for needed in ["shoal_ingest_srt_rtt_seconds", "shoal_ingest_keyframe_interval_seconds", "shoal_node_neighbours"] {
        assert!(exported.contains(needed), "the feed reached {needed}: {exported:?}");
    }

    let datasources =
        std::fs::read_to_string(repo().join("dashboards/grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert!(datasources.contains("uid: prometheus"));
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("dashboards/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() >= 6, "{}: {} panels", path.display(), panels.len());
        let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
        assert_eq!(ids.len(), panels.len(), "{}: panel ids repeat", path.display());
        for p in panels {
            assert_eq!(p["datasource"]["uid"], "prometheus", "{}", path.display());
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{}: {expr} queries no Shoal metric", path.display());
                for name in names {
                    assert!(
                        exported.contains(&name),
                        "{} panel {:?} queries {name}, which no service exports",
                        path.display(),
                        p["title"]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 40, "{checked} metric references checked");
    eprintln!("{checked} metric references in the dashboards, all exported ({} series)", exported.len());
    let _ = std::fs::remove_dir_all(&dir);
}
