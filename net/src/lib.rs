//! The tokio shell around the sans-IO swarm peer, shared by seeders and viewers.
//!
//! - [`shell`]: the [`swarm::peer::Peer`] over TCP (one task owns the peer; a reader and
//!   a writer task per connection; sending paced by a byte budget).
//! - [`announce`]: the tracker client (BitTorrent announce with Shoal's parameters).
//! - [`node`]: a peer on the network — shell, tracker client, and the role's
//!   [`node::Deliver`] — with its Prometheus metrics.
//! - [`hls`]: LL-HLS of verified pieces (a seeder's fallback for browsers, a viewer's
//!   `/live.m3u8`).
//! - [`rtc`]: WebRTC for pages (str0m on one UDP socket): a page's data channel becomes
//!   a neighbour of the shell like a TCP connection; plain STUN answered.
//! - [`signal`]: a seed on the tracker's WebSocket, answering pages' offers.
//! - [`raw`]: a hand-driven peer, message by message, for the attack tests.

pub mod announce;
pub mod hls;
pub mod node;
pub mod raw;
pub mod rtc;
pub mod shell;
pub mod signal;

pub use node::{Deliver, Join, Node, NodeConfig, NodeMetrics, Watched};
