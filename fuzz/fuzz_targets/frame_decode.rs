//! Any byte stream, split anywhere, through the stream decoder and the datagram
//! reassembler: messages or errors, never a panic, never unbounded buffering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::wire::{FrameDecoder, MAX_FRAME_LEN, datagram};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(1, |b| usize::from(*b).max(1));
    let mut dec = FrameDecoder::new();
    'feed: for chunk in data.chunks(split) {
        dec.extend(chunk);
        loop {
            match dec.next_message() {
                Ok(Some(msg)) => {
                    let mut out = Vec::new();
                    msg.encode(&mut out);
                    assert_eq!(out.len(), msg.encoded_len());
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        assert!(dec.buffered() <= MAX_FRAME_LEN + 4 + split);
    }
    let mut r = datagram::Reassembler::new();
    for d in data.chunks(split) {
        let _ = r.push(d);
    }
});
