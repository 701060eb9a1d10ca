//! Any bytes through the AMF0 decoder: values or an error, never a panic or unbounded
//! work; what decodes re-encodes to something that decodes to the same values.
#![no_main]

use ingest::media::amf0::{Amf0, decode_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = decode_all(data) {
        let mut out = Vec::new();
        for v in &values {
            v.encode(&mut out);
        }
        let again = decode_all(&out).expect("our own encoding decodes");
        // NaN != NaN: compare the encodings instead of the values.
        let mut out2 = Vec::new();
        for v in &again {
            v.encode(&mut out2);
        }
        assert_eq!(out, out2);
        let _: Option<&Amf0> = values.first();
    }
});
