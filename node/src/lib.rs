//! Shoal's network shell: what turns the sans-IO swarm core into a seeder or a viewer
//! on real sockets.
//!
//! - [`shell`]: the [`swarm::peer::Peer`] over TCP (one task owns the peer; a reader and
//!   a writer task per connection; sending paced by a byte budget).
//! - [`announce`]: the tracker client (BitTorrent announce with Shoal's parameters).
//! - [`source`]: ingest's piece stream, resumed after a reconnect (seeders).
//! - [`playout`]: `/live.ts` for players (viewers).
//! - [`hls`]: the seeders' HLS fallback for browsers, from verified pieces.
//! - [`roles`]: seeders and viewers put together (shell, tracker client, origin, playout).

pub mod announce;
pub mod hls;
pub mod playout;
pub mod roles;
pub mod shell;
pub mod source;
