//! Any bytes given to `Piece::decode` return a piece or an error, never panic; a piece
//! that decodes re-encodes to the same bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use swarm::piece::{ChannelKeypair, Piece};

fuzz_target!(|data: &[u8]| {
    if let Ok(piece) = Piece::decode(Bytes::copy_from_slice(data)) {
        let mut out = Vec::new();
        piece.encode(&mut out);
        assert_eq!(out, data);
        // Random bytes never carry a valid signature of a fixed key.
        let key = ChannelKeypair::from_secret_bytes(&[3; 32]).id();
        assert!(piece.verify(&key).is_err());
    }
});
