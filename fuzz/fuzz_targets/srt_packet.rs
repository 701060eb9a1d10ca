//! Any datagram through srt-protocol's packet parser (what reaches the SRT listener
//! from the network), then serialized again, and a NAK's compressed loss list expanded:
//! an error or a packet, never a panic. srt-protocol is vendored with our patches
//! (vendor/srt-protocol/SHOAL-PATCHES.md); this target keeps them honest.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use srt_protocol::packet::{ControlTypes, Packet};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, datagram)) = data.split_first() else { return };
    let mut buf = datagram;
    let Ok(packet) = Packet::parse(&mut buf, flags & 1 == 1) else { return };
    let mut out = BytesMut::new();
    packet.serialize(&mut out);
    let _ = packet.wire_size();
    if let Packet::Control(c) = &packet
        && let ControlTypes::Nak(list) = &c.control_type
    {
        // A loss range may span 2^31 sequence numbers: expand a bounded prefix.
        let _ = list.iter_decompressed().take(4096).count();
    }
});
