//! Any sequence of RTMP tags (kind, timestamp, body) through the FLV remuxer and the
//! segmenter: errors are returned, nothing panics, and every piece out verifies.
#![no_main]

use std::sync::Arc;

use ingest::SegmenterConfig;
use ingest::media::cutter::FlvCutter;
use ingest::media::epoch::{Epoch, FeedClock};
use libfuzzer_sys::fuzz_target;
use swarm::piece::ChannelKeypair;

fuzz_target!(|data: &[u8]| {
    let key = Arc::new(ChannelKeypair::from_secret_bytes(&[5; 32]));
    let channel = key.id();
    let cfg = SegmenterConfig { max_piece_packets: 8, ..SegmenterConfig::default() };
    // Records: kind (1), timestamp (4), body length (2), body. The epoch starts at the
    // first record's timestamp; later ones may jump anywhere.
    let first = data.get(1..5).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let epoch = Epoch { number: 1, clock: FeedClock::Rtmp, raw0: u64::from(first), seq0: 0, wall0_us: 0, piece_ms: 50, cut_at_us: 0 };
    let mut cutter = FlvCutter::new(cfg, key, epoch, 0);
    let mut pieces = Vec::new();
    let mut rest = data;
    while rest.len() >= 7 {
        let kind = if rest[0] & 1 == 0 { 9 } else { 8 };
        let ts = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let len = usize::from(u16::from_be_bytes([rest[5], rest[6]])).min(rest.len() - 7);
        // As an RTMP message arrives: a buffer of its own, which frames keep slices of.
        let body = bytes::Bytes::copy_from_slice(&rest[7..7 + len]);
        rest = &rest[7 + len..];
        let _ = cutter.push(kind, ts, &body, &mut pieces);
    }
    cutter.segmenter.flush(&mut pieces);
    for p in &pieces {
        assert!(p.verify(&channel).is_ok());
    }
});
