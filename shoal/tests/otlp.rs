//! Traces leave over OTLP/HTTP when `SHOAL_OTLP_ENDPOINT` is set: `shoal up` pointed at a
//! collector (a minimal one in this test, recording what is POSTed), an RTMP publish of
//! the recorded fixture (an `rtmp_session` span), then SIGTERM: the spans are flushed to
//! `/v1/traces` as protobuf, named by service. Without the variable nothing is sent
//! (the other tests run that way).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{rtmp_target, start_with_env, terminate, up_args};

const FIXTURE: &[u8] = include_bytes!("../../ingest/tests/fixtures/testsrc-h264-aac-4s.flv");

/// What the collector received: (path, content type, body) per request.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Accepts OTLP/HTTP exports: records each request, answers 200.
fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let store = store.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut w = stream;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let (mut len, mut ctype) = (0usize, String::new());
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap(),
                            "content-type" => ctype = v.trim().to_owned(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    store.lock().unwrap().push((path, ctype, body));
                    let _ = w.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (url, got)
}

#[test]
fn spans_are_exported_over_otlp_when_an_endpoint_is_set() {
    let (endpoint, got) = collector();
    let dir = std::env::temp_dir().join(format!("shoal-otlp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data").display().to_string();
    let (mut child, lines) =
        start_with_env(&up_args(&data), &[("SHOAL_OTLP_ENDPOINT", endpoint.as_str())], "Ctrl-C stops it");
    let (addr, key) = rtmp_target(&lines);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let p = ingest::rtmp_client::RtmpPublisher::connect(addr, "live", &key).await.unwrap();
        p.replay_paced(FIXTURE, Some(1)).await.unwrap();
    });

    assert!(terminate(&mut child).success());
    let got = got.lock().unwrap();
    assert!(!got.is_empty(), "nothing was exported");
    for (path, ctype, _) in got.iter() {
        assert_eq!(path, "/v1/traces");
        assert_eq!(ctype, "application/x-protobuf");
    }
    let all: Vec<u8> = got.iter().flat_map(|(_, _, b)| b.iter().copied()).collect();
    let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"shoal-up"), "the service name is in the resource");
    assert!(has(b"rtmp_session"), "the publish's session span was exported");
    let _ = std::fs::remove_dir_all(&dir);
}
