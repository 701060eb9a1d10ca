//! Shoal's swarm core: what every node that carries a channel shares.
//!
//! - [`piece`]: the signed [`piece::Piece`] (header, whole TS packets, Ed25519
//!   signature), [`piece::ChannelId`] (a channel's public key), [`piece::ChannelKeypair`]
//!   (only ingest holds one) and [`piece::ChannelVerifier`].
//! - [`wire`]: the peer protocol's [`wire::Message`]s, their encoding, the stream
//!   [`wire::FrameDecoder`] and the [`wire::datagram`] fragmenter. `PROTOCOL.md` specifies it.
//! - [`peer`]: the sans-IO [`peer::Peer`] state machine that seeds, viewers and the
//!   simulator run unchanged.
//! - [`rng`]: the seeded generator that keeps peers and simulations deterministic.
//! - [`bencode`]: the tracker protocol's encoding (BEP 3), for the tracker and its clients.
//! - [`announce`]: the tracker's announce and scrape requests, parsed (BEP 3, 23, 7 and
//!   Shoal's parameters); here, with no I/O, so that it is fuzzed on its own.
//!
//! Nothing here knows tokio, sockets, clocks or SQL.

pub mod announce;
pub mod bencode;
pub mod peer;
pub mod piece;
pub mod rng;
pub mod ts_out;
pub mod wire;
