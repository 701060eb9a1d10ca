//! Any bytes as an RTMP chunk stream after the handshake, through the (vendored)
//! scuffle-rtmp chunk reader and message decoder that ingest runs on every publisher's
//! bytes: chunks, messages or an error — never a panic. The first byte says where the
//! stream is cut (reads split anywhere), and a SetChunkSize in the stream is applied,
//! as the session does.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use scuffle_rtmp::chunk::reader::ChunkReader;
use scuffle_rtmp::messages::MessageData;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let cut = usize::from(cut).max(1);
    let mut reader = ChunkReader::default();
    let mut buf = BytesMut::new();
    for piece in stream.chunks(cut) {
        buf.extend_from_slice(piece);
        loop {
            match reader.read_chunk(&mut buf) {
                Ok(Some(chunk)) => {
                    if let Ok(MessageData::SetChunkSize(size)) = MessageData::read(&chunk) {
                        // Refused sizes are an error the session reports; either way no panic.
                        let _ = reader.update_max_chunk_size(size.chunk_size as usize);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
