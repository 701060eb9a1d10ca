//! The media path from tags or TS packets to signed pieces (no I/O).

pub mod amf0;
pub mod codec;
pub mod cutter;
pub mod epoch;
pub mod flv;
pub mod pool;
pub mod remux;
pub mod segmenter;
pub mod timeline;
pub mod ts;
pub mod ts_demux;

use bytes::Bytes;

/// Elementary stream of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    Video,
    Audio,
}

/// Video codecs ingest carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    H264,
    Hevc,
}

/// One access unit ready for the muxer, placed on its epoch's timeline ([`epoch`]).
#[derive(Debug, Clone)]
pub struct Frame {
    pub track: Track,
    /// Decode time, ms relative to the epoch's time 0.
    pub dts_ms: i64,
    /// Presentation minus decode time, ms (B-frames).
    pub cts_ms: i32,
    /// A random access point (an IDR/IRAP picture; every AAC frame is one).
    pub keyframe: bool,
    /// How long it lasts (video: the frame interval seen so far), ms.
    pub duration_ms: u32,
    pub data: Payload,
}

/// A frame's bytes as MPEG-TS carries them — Annex B video, ADTS audio — kept as they
/// arrived where that differs: the muxer writes the start codes, parameter sets and
/// ADTS headers on the way into TS packets, so a frame's bytes are copied once, from
/// the network's buffer into its piece.
#[derive(Debug, Clone)]
pub enum Payload {
    /// As they are (frames demuxed from MPEG-TS).
    Plain(Bytes),
    /// An ADTS header, then the raw AAC frame (RTMP audio).
    Adts { header: [u8; codec::ADTS_HEADER_LEN], raw: Bytes },
    /// Length-prefixed NAL units (RTMP video), written as one Annex B access unit.
    Nalus(codec::Nalus),
}

impl Payload {
    /// Bytes in the TS stream.
    pub fn len(&self) -> usize {
        match self {
            Payload::Plain(b) => b.len(),
            Payload::Adts { header, raw } => header.len() + raw.len(),
            Payload::Nalus(n) => n.annex_b_len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the slices whose concatenation is the bytes in the TS stream.
    pub fn parts<'a>(&'a self, out: &mut Vec<&'a [u8]>) {
        match self {
            Payload::Plain(b) => out.push(b),
            Payload::Adts { header, raw } => out.extend([&header[..], raw]),
            Payload::Nalus(n) => n.parts(out),
        }
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload::Plain(b)
    }
}

/// A video track's frame interval: how long the newest frame lasts, for the piece
/// cutter's "this frame ends at". The interval from the previous frame (not an average
/// over more): a function of the last two frames only, so every node that saw them
/// agrees ([`epoch`]).
#[derive(Debug, Clone, Default)]
pub struct FrameInterval {
    last_ms: Option<i64>,
}

impl FrameInterval {
    /// Without a previous frame (or after a jump): unknown, so 0 — a guess could close
    /// a piece early that another node, knowing the interval, keeps open.
    pub const DEFAULT_MS: u32 = 0;

    /// A frame at `dts_ms`; returns the duration to give it.
    pub fn observe(&mut self, dts_ms: i64, rebound: bool) -> u32 {
        let d = self.last_ms.filter(|_| !rebound).map(|last| dts_ms - last);
        self.last_ms = Some(dts_ms);
        match d {
            Some(d @ 1..=1_000) => d as u32,
            _ => Self::DEFAULT_MS,
        }
    }
}

/// Input that ended before a field it must hold (every parser's first error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} truncated: need {need} more bytes, have {have}")]
pub struct Truncated {
    pub what: &'static str,
    pub need: usize,
    pub have: usize,
}

/// A cursor over untrusted bytes: every read is bounds-checked.
#[derive(Debug, Clone)]
pub(crate) struct ByteReader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        ByteReader { buf, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        if self.buf.len() < n {
            return Err(Truncated { what: self.what, need: n, have: self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Truncated> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u24(&mut self) -> Result<u32, Truncated> {
        let b = self.take(3)?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    /// Signed 24-bit (FLV composition time).
    pub(crate) fn i24(&mut self) -> Result<i32, Truncated> {
        let v = self.u24()?;
        Ok(((v << 8) as i32) >> 8)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Truncated> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}
