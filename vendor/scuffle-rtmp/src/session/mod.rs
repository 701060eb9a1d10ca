//! High-level API to drive RTMP sessions.

pub mod server;
