//! Golden vectors for the browser peer (`web/`), its second implementation of
//! PROTOCOL.md: pieces and frames made by this crate, with what each must decode to or
//! why each must be refused, in `web/test/vectors.json`. This test fails when the
//! file differs from what the code makes now (a change to the wire or the pieces):
//! rerun it with `SHOAL_BLESS=1` to rewrite the file, and the TypeScript tests
//! (`npm test` in `web/`) show whether the browser peer still agrees.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use swarm::piece::{ChannelKeypair, Piece, PieceFlags, filler_payload};
use swarm::wire::{GoodbyeReason, Hello, Message, PROTOCOL_VERSION, PeerId, Role, Status};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a message must decode to, in the TypeScript peer's terms (64-bit integers as
/// decimal strings; a piece as its hex).
fn describe(m: &Message) -> Value {
    let s = |x: u64| x.to_string();
    match m {
        Message::Hello(h) => json!({"kind": "hello", "version": h.version, "channel": h.channel.to_hex(),
            "peerId": s(h.peer_id.0), "role": if h.role == Role::Seed { 1 } else { 2 },
            "reachable": h.reachable, "nSubstreams": h.n_substreams, "uploadKbps": h.upload_kbps}),
        Message::Status(st) => json!({"kind": "status", "freeSlots": st.free_slots, "children": st.children,
            "minChildKbps": st.min_child_kbps, "busyMs": st.busy_ms, "segmentStart": st.segment_start.map(s),
            "depth": st.depth.to_vec(), "latencyMs": st.latency_ms.to_vec(),
            "root": st.root.iter().map(|p| s(p.0)).collect::<Vec<_>>(),
            "parent": st.parent.iter().map(|p| s(p.0)).collect::<Vec<_>>()}),
        Message::Have { seq } => json!({"kind": "have", "seq": s(*seq)}),
        Message::HaveMap { base, bits } => {
            json!({"kind": "have_map", "base": s(*base), "words": bits.iter().map(|w| s(*w)).collect::<Vec<_>>()})
        }
        Message::Subscribe { substreams } => json!({"kind": "subscribe", "substreams": s(*substreams)}),
        Message::SubscribeReply { accepted } => json!({"kind": "subscribe_reply", "accepted": s(*accepted)}),
        Message::Request { seqs } => json!({"kind": "request", "seqs": seqs.iter().map(|q| s(*q)).collect::<Vec<_>>()}),
        Message::Piece(p) => json!({"kind": "piece", "piece": hex(p.wire())}),
        Message::DontHave { seq } => json!({"kind": "dont_have", "seq": s(*seq)}),
        Message::Busy { seq } => json!({"kind": "busy", "seq": s(*seq)}),
        Message::Ping { nonce } => json!({"kind": "ping", "nonce": s(*nonce)}),
        Message::Pong { nonce } => json!({"kind": "pong", "nonce": s(*nonce)}),
        Message::Goodbye { reason } => json!({"kind": "goodbye", "reason": reason.code()}),
    }
}

fn frame(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

fn vectors() -> Value {
    let key = ChannelKeypair::from_secret_bytes(&[7; 32]);
    let other = ChannelKeypair::from_secret_bytes(&[8; 32]);
    let good =
        key.sign_piece(1_000_042, 1_795_000_000_123_456, PieceFlags::SEGMENT_START, filler_payload(3, 9)).unwrap();
    let flagged = key.sign_piece(u64::MAX - 1, 1, PieceFlags::from_bits(0x06).unwrap(), filler_payload(1, 1)).unwrap();
    // The same header and signature over another payload.
    let mut tampered = good.wire().to_vec();
    tampered[56 + 100] ^= 1;
    let mut zero_sig = good.wire().to_vec();
    let n = zero_sig.len();
    zero_sig[n - 64..].fill(0);
    let foreign = other.sign_piece(5, 5, PieceFlags::NONE, filler_payload(1, 5)).unwrap();
    let mut bad_sync = good.wire().to_vec();
    bad_sync[56 + 188] = 0x48;
    let mut short = good.wire().to_vec();
    short.pop();
    // The genuine signature with S + L: the same scalar, not its canonical encoding
    // (RFC 8032 §5.1.7 refuses it; a lax verifier would not).
    let mut big_s = good.wire().to_vec();
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (i, l) in l.iter().enumerate() {
        let at = n - 32 + i;
        let sum = u16::from(big_s[at]) + u16::from(*l) + carry;
        big_s[at] = sum as u8;
        carry = sum >> 8;
    }
    let mut bad_flags = good.wire().to_vec();
    bad_flags[1] = 0x10;
    let piece = |name: &str, wire: &[u8], verdict: &str| json!({"name": name, "hex": hex(wire), "verdict": verdict});
    let p = |p: &Piece| {
        json!({"seq": p.seq().to_string(), "timestampUs": p.timestamp_us().to_string(),
        "flags": p.flags().bits(), "payloadLen": p.payload().len()})
    };
    let pieces = vec![
        json!({"name": "genuine segment start", "hex": hex(good.wire()), "verdict": "ok", "fields": p(&good)}),
        json!({"name": "genuine, flags, top of the numbering", "hex": hex(flagged.wire()), "verdict": "ok", "fields": p(&flagged)}),
        piece("payload changed under a genuine signature", &tampered, "forged"),
        piece("zero signature", &zero_sig, "forged"),
        piece("genuine signature with S + L", &big_s, "forged"),
        piece("another channel's genuine piece", foreign.wire(), "wrong_channel"),
        piece("second packet without sync byte", &bad_sync, "malformed"),
        piece("one byte short", &short, "malformed"),
        piece("unknown flag bit", &bad_flags, "malformed"),
    ];
    let status = Status {
        free_slots: 3,
        children: 2,
        min_child_kbps: 1_500,
        busy_ms: 40,
        segment_start: Some(1_000_040),
        depth: Arc::from(vec![1, 2, u8::MAX, 0]),
        latency_ms: Arc::from(vec![120, 340, u16::MAX, 0]),
        root: Arc::from(vec![PeerId(11), PeerId(u64::MAX), PeerId(13), PeerId(1 << 63)]),
        parent: Arc::from(vec![PeerId(21), PeerId(22), Status::NO_ROOT, PeerId(24)]),
    };
    let messages = [
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            channel: key.id(),
            peer_id: PeerId(0x0123_4567_89ab_cdef),
            role: Role::Viewer,
            reachable: true,
            n_substreams: 4,
            upload_kbps: 1_000,
        }),
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            channel: key.id(),
            peer_id: PeerId(u64::MAX),
            role: Role::Seed,
            reachable: false,
            n_substreams: 64,
            upload_kbps: u32::MAX,
        }),
        Message::Status(status.clone()),
        Message::Status(Status { segment_start: None, ..status }),
        Message::Have { seq: 1_000_041 },
        Message::HaveMap { base: 1_000_000, bits: vec![u64::MAX, 1, 1 << 63] },
        Message::Subscribe { substreams: 0b1010 },
        Message::SubscribeReply { accepted: 0b10 },
        Message::Request { seqs: vec![1, 2, u64::MAX] },
        Message::Request { seqs: vec![] },
        Message::Piece(good.clone()),
        Message::DontHave { seq: 7 },
        Message::Busy { seq: 8 },
        Message::Ping { nonce: 0xdead_beef },
        Message::Pong { nonce: u64::MAX },
        Message::Goodbye { reason: GoodbyeReason::Forged },
    ];
    let frames: Vec<Value> = messages.iter().map(|m| json!({"hex": hex(&frame(m)), "message": describe(m)})).collect();
    // Frames the TypeScript decoder must refuse (the Rust one refuses each; checked below).
    let have = frame(&Message::Have { seq: 1 });
    let with_len = |body: &[u8]| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let mut hello = frame(&messages[0]);
    hello[4 + 1 + 2 + 32 + 8] = 3; // role 3
    let mut hello_flags = frame(&messages[0]);
    hello_flags[4 + 1 + 2 + 32 + 8 + 1] = 2;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("have one byte short", with_len(&have[4..have.len() - 1])),
        ("have with a trailing byte", with_len(&[&have[4..], &[0]].concat())),
        ("unknown kind 0x0f", with_len(&[0x0f, 0, 0, 0, 0, 0, 0, 0, 1])),
        ("fragment on a message transport", with_len(&[0x0d, 0, 0, 0, 1, 0, 0, 0, 2, 9])),
        ("request of 33 seqs", with_len(&[&[0x07, 33][..], &[0u8; 33 * 8]].concat())),
        ("have_map of 17 words", with_len(&[&[0x04][..], &[0u8; 8], &[17], &[0u8; 17 * 8]].concat())),
        ("status of 65 substreams", with_len(&[&[0x02][..], &[0u8; 10], &[0xff; 8], &[65], &[0u8; 19 * 65]].concat())),
        ("hello with role 3", hello),
        ("hello with an unknown flag", hello_flags),
        ("piece with a bad sync byte", with_len(&[&[0x08][..], &bad_sync].concat())),
        ("empty frame", with_len(&[])),
    ];
    for (name, f) in &bad {
        let len = u32::from_be_bytes(f[..4].try_into().unwrap()) as usize;
        assert_eq!(len, f.len() - 4);
        assert!(Message::decode_frame(Bytes::copy_from_slice(&f[4..])).is_err(), "Rust accepts {name}");
    }
    let bad: Vec<Value> = bad.iter().map(|(name, f)| json!({"name": name, "hex": hex(f)})).collect();
    let peer_ids: Vec<Value> = [*b"-SH0100-abcdefghijkl", [0u8; 20], [0xffu8; 20]]
        .iter()
        .map(|t| json!({"trackerId": hex(t), "peerId": PeerId::from_tracker_id(t).0.to_string()}))
        .collect();
    json!({
        "about": "written by swarm/tests/golden.rs (SHOAL_BLESS=1 cargo test -p swarm --test golden); do not edit",
        "channel": key.id().to_hex(),
        "infoHash": hex(&key.id().info_hash()),
        "peerIds": peer_ids,
        "pieces": pieces,
        "frames": frames,
        "badFrames": bad,
    })
}

#[test]
fn the_browser_peer_s_golden_vectors_match_what_this_code_makes() {
    let text = serde_json::to_string_pretty(&vectors()).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/test/vectors.json");
    if std::env::var_os("SHOAL_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == text,
        "{} differs from what the code makes now: if the change to the wire or the pieces is meant, rerun with \
         SHOAL_BLESS=1 and run the browser peer's tests (npm test in web/)",
        path.display()
    );
}

/// The browser peer's own tests (`npm test` in `web/`: these vectors, through its
/// TypeScript decoder and verifier). Needs Node.js and `npm ci` in `web/` (CI does
/// both, and sets `SHOAL_REQUIRE_NODE` so that it fails instead of skipping).
#[test]
fn the_browser_peer_agrees_with_the_vectors() {
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !node || !web.join("node_modules/.bin/esbuild").exists() {
        assert!(
            std::env::var_os("SHOAL_REQUIRE_NODE").is_none(),
            "SHOAL_REQUIRE_NODE is set but Node.js or web/node_modules is missing (run `npm ci` in web/)"
        );
        eprintln!("SKIPPED the browser peer's tests: Node.js or web/node_modules missing (run `npm ci` in web/)");
        return;
    }
    let out = std::process::Command::new("npm").args(["test", "--silent"]).current_dir(&web).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "the browser peer's tests failed:\n{text}");
    assert!(text.contains("# fail 0") && !text.contains("# pass 0"), "no test ran:\n{text}");
}
