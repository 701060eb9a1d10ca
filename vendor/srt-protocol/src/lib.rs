// Shoal: vendored third-party code, kept as published except the marked patches;
// its own warnings are not ours to fix.
#![allow(warnings)]
pub mod access;
pub mod connection;
pub mod listener;
pub mod options;
pub mod packet;
pub mod protocol;
pub mod settings;
pub mod statistics;
