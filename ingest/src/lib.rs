//! Ingest: a TV channel's feed in (RTMP tags or MPEG-TS), signed pieces out.
//!
//! The media path is sans-IO and shared by both protocols:
//! `flv` parses RTMP/FLV tag bodies, `codec` turns length-prefixed NAL units and raw
//! AAC into Annex B and ADTS, [`timeline`] unwraps timestamps, [`epoch`] places them on
//! the channel's numbering (agreed with other ingest nodes through [`epochs`]), [`ts`]
//! muxes MPEG-TS, and [`segmenter`] cuts it into keyframe-aligned pieces and signs them.
//!
//! [`timeline`]: media::timeline
//! [`epoch`]: media::epoch
//! [`ts`]: media::ts
//! [`segmenter`]: media::segmenter

pub mod epochs;
pub mod http;
pub mod hub;
pub mod media;
pub mod merged;
pub mod metrics;
pub mod rtmp;
pub mod rtmp_client;
pub mod srt;

pub use media::segmenter::{Segmenter, SegmenterConfig, SegmenterStats};

/// 4 s of ffmpeg `testsrc` + `sine` (H.264 High with B-frames, AAC), as FLV: the test
/// and bench fixture.
pub const FIXTURE_FLV: &[u8] = include_bytes!("../tests/fixtures/testsrc-h264-aac-4s.flv");
