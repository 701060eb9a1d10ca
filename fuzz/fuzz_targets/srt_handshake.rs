//! The SRT listener's handshake state machine (srt-protocol's `Listen`, what ingest's
//! SRT port runs for every caller before any stream id or passphrase is checked) fed
//! any sequence of datagrams from one or two addresses, with access control answered
//! either way: a handshake step, a rejection or nothing, never a panic.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use srt_protocol::packet::{Packet, RejectReason, ServerRejectReason};
use srt_protocol::protocol::pending_connection::listen::Listen;
use srt_protocol::protocol::pending_connection::{AccessControlResponse, ConnectionResult};
use srt_protocol::settings::ConnInitSettings;

fuzz_target!(|data: &[u8]| {
    let mut listen = Listen::new(ConnInitSettings::default(), true);
    let start = Instant::now();
    let addrs: [SocketAddr; 2] = ["192.0.2.1:4000".parse().unwrap(), "198.51.100.7:5000".parse().unwrap()];
    // Records: [flags, len, datagram of len bytes]...
    let mut rest = data;
    let mut step = 0u64;
    while let [flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (mut datagram, next) = tail.split_at(n);
        rest = next;
        step += 1;
        let now = start + Duration::from_millis(step * 10);
        let from = addrs[usize::from(flags & 1)];
        let Ok(packet) = Packet::parse(&mut datagram, false) else { continue };
        if let ConnectionResult::RequestAccess(_) = listen.handle_packet(now, Ok((packet, from))) {
            let answer = if flags & 2 == 0 {
                AccessControlResponse::Accepted(None)
            } else {
                AccessControlResponse::Rejected(RejectReason::Server(ServerRejectReason::Forbidden))
            };
            let _ = listen.handle_access_control_response(now, answer);
        }
        let _ = listen.handle_timer(now);
    }
});
