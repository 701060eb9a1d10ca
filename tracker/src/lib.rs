//! The tracker: which channels exist, who is in each channel's swarm, which seed nodes
//! serve it. Speaks the BitTorrent HTTP announce (BEP 3, 23, 7) so standard tools and
//! load testers work against it; Shoal's peers add a few parameters
//! ([`announce`]). Swarm state is in memory, sharded ([`store`]), and optionally shared
//! by replicas through Redis ([`shared`]).

pub mod admin;
/// The announce and scrape request parser (in `swarm`, beside `bencode`).
pub use swarm::announce;
pub mod http;
pub mod meter;
pub mod metrics;
pub mod shared;
pub mod store;
pub mod webhooks;
pub mod ws;

pub use http::Tracker;
/// Bencoding lives in the swarm crate: the tracker's clients (seeders, viewers) share it.
pub use swarm::bencode;
