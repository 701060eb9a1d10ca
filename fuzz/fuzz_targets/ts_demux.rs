//! Any bytes through the MPEG-TS demuxer (what an SRT publisher sends), in arbitrary
//! splits: frames, cues or nothing, never a panic; buffers stay bounded.
#![no_main]

use ingest::media::ts_demux::TsDemuxer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut d = TsDemuxer::default();
    let mut out = Vec::new();
    for chunk in rest.chunks(usize::from(split).max(1)) {
        d.push(chunk, &mut out);
    }
    d.flush(&mut out);
    let _ = d.program();
});
