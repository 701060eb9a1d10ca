//! A peer fed whatever a hostile neighbour can send: every frame that decodes is
//! delivered, time moves, and the peer must neither panic nor accept a piece it did
//! not verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::peer::{Event, NodeId, Peer, PeerConfig};
use swarm::piece::ChannelKeypair;
use swarm::wire::{FrameDecoder, PeerId, Role};

fuzz_target!(|data: &[u8]| {
    let channel = ChannelKeypair::from_secret_bytes(&[5; 32]).id();
    let mut cfg = PeerConfig::new(Role::Viewer, PeerId(1), channel);
    cfg.n_substreams = 4;
    let mut now = 1_000_000_000u64;
    let Ok(mut peer) = Peer::new(cfg, now) else { return };
    peer.handle_connected(now, NodeId(2), false);
    let mut dec = FrameDecoder::new();
    dec.extend(data);
    while let Ok(Some(msg)) = dec.next_message() {
        now += 7_000;
        peer.handle_message(now, NodeId(2), msg);
        peer.handle_timeout(now);
        while peer.poll_transmit(now).is_some() {}
        while let Some(ev) = peer.poll_event() {
            // Nothing from random bytes can be signed by the channel's key.
            assert!(!matches!(ev, Event::Accepted { .. }));
        }
    }
});
