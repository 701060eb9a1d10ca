//! Any sequence of RTMP tags (kind, timestamp, body) through the FLV remuxer and the
//! segmenter: errors are returned, nothing panics, and every piece out verifies.
#![no_main]

use std::sync::Arc;

use ingest::media::remux::{FlvRemuxer, Remuxed};
use ingest::media::timeline::{JumpLimits, Timeline};
use ingest::{Segmenter, SegmenterConfig};
use libfuzzer_sys::fuzz_target;
use swarm::piece::ChannelKeypair;

fuzz_target!(|data: &[u8]| {
    let key = Arc::new(ChannelKeypair::from_secret_bytes(&[5; 32]));
    let channel = key.id();
    let cfg = SegmenterConfig { max_piece_packets: 8, ..SegmenterConfig::default() };
    let mut seg = Segmenter::new(cfg, key, 0);
    let mut remuxer = FlvRemuxer::default();
    let mut timeline = Timeline::rtmp(JumpLimits::default());
    let mut pieces = Vec::new();
    // Records: kind (1), timestamp (4), body length (2), body.
    let mut rest = data;
    while rest.len() >= 7 {
        let kind = rest[0];
        let ts = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let len = usize::from(u16::from_be_bytes([rest[5], rest[6]])).min(rest.len() - 7);
        let body = &rest[7..7 + len];
        rest = &rest[7 + len..];
        let out = if kind & 1 == 0 { remuxer.push_video(&mut timeline, ts, body) } else { remuxer.push_audio(&mut timeline, ts, body) };
        seg.set_program(remuxer.program());
        match out {
            Ok(Remuxed::Frame(f)) => seg.push(&f, 0, &mut pieces),
            Ok(Remuxed::DiscontinuityThen(f)) => {
                seg.discontinuity(0, &mut pieces);
                seg.push(&f, 0, &mut pieces);
            }
            Ok(Remuxed::Nothing) | Err(_) => {}
        }
    }
    seg.close(0, &mut pieces);
    for p in &pieces {
        assert!(p.verify(&channel).is_ok());
    }
});
