//! Any byte stream given to `PieceDecoder`, cut anywhere, yields pieces or an error,
//! never a panic, and never buffers more than one piece's worth: each piece it yields
//! is exactly the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::piece::{MAX_PIECE_LEN, PieceDecoder};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses where reads split.
    let Some((&cut, stream)) = data.split_first() else { return };
    let cut = usize::from(cut).max(1);
    let mut dec = PieceDecoder::default();
    let mut consumed = 0usize;
    for chunk in stream.chunks(cut) {
        dec.extend(chunk);
        loop {
            match dec.next_piece() {
                Ok(Some(p)) => {
                    assert_eq!(&stream[consumed..consumed + p.encoded_len()], &p.wire()[..]);
                    consumed += p.encoded_len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(dec.buffered() <= MAX_PIECE_LEN + cut);
    }
});
