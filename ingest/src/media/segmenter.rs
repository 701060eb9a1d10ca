//! Cuts the muxed stream into signed pieces as frames arrive.
//!
//! - A **segment** starts at every video keyframe (every `audio_segment_ms` on an
//!   audio-only feed): its first piece carries `SEGMENT_START` and begins with PAT and
//!   PMT, so a viewer can join there.
//! - A **piece** is closed as soon as the media it holds spans `piece_ms` — right after
//!   the frame that completes it arrives, so ingest adds no waiting of its own — or when
//!   the next frame would overflow the piece size limit.
//! - A GOP longer than `max_gop_ms` is logged and counted; pieces keep flowing.
//! - Frames before the first keyframe are dropped (no viewer could decode them).

use std::sync::Arc;

use swarm::piece::{ChannelKeypair, HEADER_LEN, MAX_TS_PACKETS, Piece, PieceFlags, SIGNATURE_LEN, TS_PACKET_LEN};

use super::Frame;
use super::Track;
use super::pool::BufferPool;
use super::ts::{Program, TsMuxer};

#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    /// Media per piece, ms (the swarm's unit of forwarding).
    pub piece_ms: u32,
    /// GOPs longer than this are reported.
    pub max_gop_ms: u32,
    /// Segment length of an audio-only feed, ms.
    pub audio_segment_ms: u32,
    /// Most TS packets per piece.
    pub max_piece_packets: usize,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig { piece_ms: 50, max_gop_ms: 10_000, audio_segment_ms: 1_000, max_piece_packets: MAX_TS_PACKETS }
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Default)]
pub struct SegmenterStats {
    pub pieces: u64,
    pub piece_bytes: u64,
    pub segments: u64,
    pub frames: u64,
    pub frames_dropped_before_keyframe: u64,
    pub long_gops: u64,
    /// Last keyframe interval seen, ms.
    pub keyframe_interval_ms: Option<i64>,
}

#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    key: Arc<ChannelKeypair>,
    next_seq: u64,
    mux: TsMuxer,
    /// What the next segment's PMT should announce.
    program: Program,
    buf: Vec<u8>,
    /// Where piece buffers come from and go back to.
    pool: BufferPool,
    /// Running average of piece sizes: the capacity each new piece buffer starts with.
    typical_len: usize,
    buf_first_ms: Option<i64>,
    buf_flags: PieceFlags,
    /// Flags for the next piece that starts (discontinuity, ad-break edges).
    pending: PieceFlags,
    started: bool,
    last_segment_ms: Option<i64>,
    long_gop_reported: bool,
    stats: SegmenterStats,
}

impl Segmenter {
    /// `next_seq`: the first sequence number to use (the channel's sequence numbers
    /// keep rising across sessions and restarts).
    pub fn new(cfg: SegmenterConfig, key: Arc<ChannelKeypair>, next_seq: u64) -> Self {
        let program = Program { video: None, audio: false, scte35: false };
        Segmenter {
            mux: TsMuxer::new(program),
            program,
            cfg,
            key,
            next_seq,
            buf: vec![0; HEADER_LEN],
            pool: BufferPool::default(),
            typical_len: 0,
            buf_first_ms: None,
            buf_flags: PieceFlags::NONE,
            pending: PieceFlags::NONE,
            started: false,
            last_segment_ms: None,
            long_gop_reported: false,
            stats: SegmenterStats::default(),
        }
    }

    pub fn stats(&self) -> &SegmenterStats {
        &self.stats
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// What the tracks are; takes effect at the next segment start.
    pub fn set_program(&mut self, program: Program) {
        self.program = program;
    }

    /// Sets `flags` on the next piece that starts (closing the open one first, so the
    /// flag marks the first media after the event).
    pub fn mark(&mut self, flags: PieceFlags, now_us: u64, out: &mut Vec<Piece>) {
        self.close(now_us, out);
        self.pending = self.pending.union(flags);
    }

    /// A new session (or a timeline jump): everything after is flagged as a
    /// discontinuity and waits for a keyframe.
    pub fn discontinuity(&mut self, now_us: u64, out: &mut Vec<Piece>) {
        self.mark(PieceFlags::DISCONTINUITY, now_us, out);
        self.started = false;
    }

    pub fn push(&mut self, frame: &Frame, now_us: u64, out: &mut Vec<Piece>) {
        let has_video = self.program.video.is_some();
        let segment_start = if has_video {
            frame.track == Track::Video && frame.keyframe
        } else {
            self.last_segment_ms.is_none_or(|s| frame.dts_ms - s >= i64::from(self.cfg.audio_segment_ms))
        };
        if !self.started && !segment_start {
            self.stats.frames_dropped_before_keyframe += 1;
            return;
        }
        self.stats.frames += 1;
        if segment_start {
            self.close(now_us, out);
            if has_video && let Some(last) = self.last_segment_ms {
                self.stats.keyframe_interval_ms = Some(frame.dts_ms - last);
            }
            self.started = true;
            self.last_segment_ms = Some(frame.dts_ms);
            self.long_gop_reported = false;
            self.stats.segments += 1;
            self.mux.set_program(self.program);
            self.open(frame.dts_ms, PieceFlags::SEGMENT_START);
            self.mux.write_tables(&mut self.buf);
        } else {
            if let Some(last) = self.last_segment_ms
                && has_video
                && !self.long_gop_reported
                && frame.dts_ms - last > i64::from(self.cfg.max_gop_ms)
            {
                self.long_gop_reported = true;
                self.stats.long_gops += 1;
                tracing::warn!(
                    gop_ms = frame.dts_ms - last,
                    max_gop_ms = self.cfg.max_gop_ms,
                    "GOP longer than configured: viewers can join only at keyframes; set the encoder's keyframe interval"
                );
            }
            // A frame that would overflow the piece goes to the next one.
            let packets = self.payload_len() / TS_PACKET_LEN + frame.data.len() / (TS_PACKET_LEN - 8) + 2;
            if self.buf_first_ms.is_some() && packets > self.cfg.max_piece_packets {
                self.close(now_us, out);
            }
            if self.buf_first_ms.is_none() {
                self.open(frame.dts_ms, PieceFlags::NONE);
            }
        }
        self.mux.write_frame(frame, &mut self.buf);
        // A frame bigger than a whole piece (a huge keyframe) spills over several.
        while self.payload_len() > self.cfg.max_piece_packets * TS_PACKET_LEN {
            let rest = self.buf.split_off(HEADER_LEN + self.cfg.max_piece_packets * TS_PACKET_LEN);
            self.close(now_us, out);
            self.open(frame.dts_ms, PieceFlags::NONE);
            self.buf.extend_from_slice(&rest);
        }
        let end = frame.dts_ms + i64::from(frame.duration_ms);
        if self.buf_first_ms.is_some_and(|first| end - first >= i64::from(self.cfg.piece_ms)) {
            self.close(now_us, out);
        }
    }

    fn open(&mut self, first_ms: i64, flags: PieceFlags) {
        self.buf_first_ms = Some(first_ms);
        self.buf_flags = flags.union(self.pending);
        self.pending = PieceFlags::NONE;
    }

    /// Payload bytes in the open piece's buffer (after the header's room).
    fn payload_len(&self) -> usize {
        self.buf.len() - HEADER_LEN
    }

    /// A piece buffer (a recycled one once the window is full) with room for the
    /// header, `payload` bytes and the signature, so it rarely grows (and copies).
    fn fresh_buf(&self, payload: usize) -> Vec<u8> {
        let mut buf = self.pool.take(HEADER_LEN + payload + SIGNATURE_LEN);
        buf.resize(HEADER_LEN, 0);
        buf
    }

    /// Signs and emits the open piece, if any. The piece is signed in its own buffer
    /// ([`ChannelKeypair::seal`]): its payload is never copied.
    pub fn close(&mut self, now_us: u64, out: &mut Vec<Piece>) {
        if self.buf_first_ms.take().is_none() || self.payload_len() == 0 {
            self.buf.truncate(HEADER_LEN);
            return;
        }
        let len = self.payload_len();
        self.typical_len = (self.typical_len * 7 + len) / 8;
        let next = self.fresh_buf(self.typical_len + self.typical_len / 4 + 2 * TS_PACKET_LEN);
        let mut buf = std::mem::replace(&mut self.buf, next);
        let sealed = self.key.seal(self.next_seq, now_us, self.buf_flags, &mut buf);
        match sealed.and_then(|()| Piece::decode(self.pool.share(buf))) {
            Ok(piece) => {
                self.next_seq += 1;
                self.stats.pieces += 1;
                self.stats.piece_bytes += len as u64;
                out.push(piece);
            }
            // Cannot happen for what the muxer writes (whole packets within the
            // limit); if it ever does, the media is lost, never the process.
            Err(e) => tracing::error!(error = %e, "muxed payload refused by the piece format"),
        }
    }
}
