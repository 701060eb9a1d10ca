//! Cuts the muxed stream into signed pieces as frames arrive — the same pieces on every
//! node that reads the same feed ([`super::epoch`]).
//!
//! - Each frame belongs to a **grid cell** of its epoch: `piece_ms` of the feed's own
//!   timeline. A piece holds the frames of one cell and its sequence number is the
//!   cell's (`seq0 + cell`), so numbers follow the timeline, not a count kept by the node.
//!   A frame that arrives for a cell whose piece is already cut joins the next piece.
//! - A **segment** starts at every video keyframe (on an audio-only feed, at the first
//!   frame of each `audio_segment_ms` block of the timeline): its first piece carries
//!   `SEGMENT_START` and begins with PAT and PMT, so a viewer can join there, and the
//!   TS continuity counters start again at 0 — a segment's bytes depend on its own
//!   frames only, never on how long the node has been cutting. (Players of a
//!   continuous stream see counters that run on: [`swarm::ts_out`] renumbers them.)
//! - A piece is closed as soon as its frames reach the end of its cell — right after
//!   the frame that completes it arrives, so ingest adds no waiting of its own — or when
//!   the next frame would overflow the piece size limit (the rest spills into the next
//!   number; the grid catches up).
//! - A node that joins an epoch mid-stream cuts its first segment without publishing it
//!   ([`Segmenter::bind`]): from its second keyframe on, everything its pieces depend on
//!   (the last number used) is what every other node has.
//! - The piece open when a session ends is not published: a backup ingest may still be
//!   cutting it whole.
//! - A GOP longer than `max_gop_ms` is logged and counted; pieces keep flowing.
//! - Frames before the first keyframe are dropped (no viewer could decode them).

use std::sync::Arc;

use swarm::piece::{ChannelKeypair, HEADER_LEN, MAX_TS_PACKETS, Piece, PieceFlags, SIGNATURE_LEN, TS_PACKET_LEN};

use super::Frame;
use super::Track;
use super::epoch::Epoch;
use super::pool::{self, BufferPool};
use super::ts::{Program, TABLES_LEN, TsMuxer};

#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    /// Media per piece, ms (the swarm's unit of forwarding): the grid of new epochs.
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
    /// Pieces cut but not published: a joining node's first segment, a session's
    /// unfinished last piece.
    pub pieces_withheld: u64,
    /// Last keyframe interval seen, ms.
    pub keyframe_interval_ms: Option<i64>,
}

/// Whether the pieces being cut are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publishing {
    Yes,
    /// Joined mid-epoch: from the segment after the first one.
    FromSecondSegment,
}

/// The open piece.
#[derive(Debug, Clone, Copy)]
struct Open {
    seq: u64,
    flags: PieceFlags,
    /// Where its media ends, ms relative to the epoch.
    end_ms: i64,
    /// Its newest frame's decode time, ms relative to the epoch: its timestamp.
    last_ms: i64,
}

#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    key: Arc<ChannelKeypair>,
    epoch: Option<Epoch>,
    publishing: Publishing,
    /// The highest number cut in this epoch.
    last_seq: Option<u64>,
    /// Where the media cut in this epoch ends, ms relative to it.
    reach_ms: Option<i64>,
    mux: TsMuxer,
    /// What the next segment's PMT should announce.
    program: Program,
    /// The open piece, header room first, in a buffer from the pool that becomes the
    /// piece's own when it closes (no copy). What each write adds is known before it
    /// is written (a frame's TS bytes exactly), so the buffer is moved to a bigger size
    /// class only before a write that would not fit, and always holds its piece in the
    /// smallest class that fits: the window's memory is what its pieces need.
    buf: Vec<u8>,
    /// Where piece buffers come from and go back to.
    pool: BufferPool,
    open: Option<Open>,
    /// Flags for the next piece that starts (discontinuity, ad-break edges).
    pending: PieceFlags,
    started: bool,
    last_segment_ms: Option<i64>,
    /// Audio-only feeds: the block of the last frame seen.
    last_audio_block: Option<i64>,
    long_gop_reported: bool,
    stats: SegmenterStats,
}

impl Segmenter {
    /// Cuts nothing until [`Segmenter::bind`] gives it an epoch.
    pub fn new(cfg: SegmenterConfig, key: Arc<ChannelKeypair>) -> Self {
        let program = Program { video: None, audio: false, scte35: false };
        let pool = BufferPool::default();
        Segmenter {
            mux: TsMuxer::new(program),
            program,
            cfg,
            key,
            epoch: None,
            publishing: Publishing::Yes,
            last_seq: None,
            reach_ms: None,
            buf: header_room(&pool),
            pool,
            open: None,
            pending: PieceFlags::NONE,
            started: false,
            last_segment_ms: None,
            last_audio_block: None,
            long_gop_reported: false,
            stats: SegmenterStats::default(),
        }
    }

    pub fn stats(&self) -> &SegmenterStats {
        &self.stats
    }

    pub fn epoch(&self) -> Option<&Epoch> {
        self.epoch.as_ref()
    }

    /// Where the media cut in the current epoch ends, ms relative to it.
    pub fn reach_ms(&self) -> Option<i64> {
        self.reach_ms
    }

    /// The number after the highest cut.
    pub fn next_seq(&self) -> Option<u64> {
        self.last_seq.map(|s| s + 1)
    }

    /// What the tracks are; takes effect at the next segment start.
    pub fn set_program(&mut self, program: Program) {
        self.program = program;
    }

    /// Frames from here on are on `epoch`'s timeline; media waits for a keyframe.
    /// `from_start`: this node's frames begin at the epoch's own beginning (it made the
    /// epoch, or its first frame is the epoch's time 0), so its pieces are every other
    /// node's from the first segment — flagged `DISCONTINUITY` after an earlier epoch.
    /// Otherwise it joined mid-stream and publishes from its second segment on — unless
    /// `alone` (no other node is cutting the epoch: a feed moved here from a dead
    /// ingest), when there is no one to differ from and it publishes at once.
    /// Binding again to the epoch already held (a publisher back on the same timeline)
    /// keeps the numbering and just waits for the next keyframe.
    pub fn bind(&mut self, epoch: &Epoch, from_start: bool, alone: bool) {
        self.withhold_open();
        self.started = false;
        self.last_audio_block = None;
        if self.epoch.as_ref().is_some_and(|e| e.same(epoch)) {
            return;
        }
        self.epoch = Some(epoch.clone());
        self.mux.set_time_base((epoch.wall0_us / 1_000) as i64);
        self.last_seq = None;
        self.reach_ms = None;
        self.last_segment_ms = None;
        self.publishing = if from_start || alone { Publishing::Yes } else { Publishing::FromSecondSegment };
        self.pending = if from_start && epoch.number > 1 { PieceFlags::DISCONTINUITY } else { PieceFlags::NONE };
    }

    /// Sets `flags` on the next piece that starts (closing the open one first, so the
    /// flag marks the first media after the event).
    pub fn mark(&mut self, flags: PieceFlags, out: &mut Vec<Piece>) {
        self.close(out);
        self.pending = self.pending.union(flags);
    }

    /// The session ended: its unfinished piece is dropped, media waits for a keyframe.
    pub fn end_session(&mut self) {
        self.withhold_open();
        self.started = false;
        self.last_audio_block = None;
    }

    /// Publishes the open piece now: the end of a recording, where nothing more will
    /// come for it. (A live session's end withholds it: [`Segmenter::end_session`].)
    pub fn flush(&mut self, out: &mut Vec<Piece>) {
        self.close(out);
    }

    /// The lowest number free for a piece of grid cell `cell_seq`.
    fn free_seq(&self, cell_seq: u64) -> u64 {
        self.last_seq.map_or(cell_seq, |last| cell_seq.max(last + 1))
    }

    pub fn push(&mut self, frame: &Frame, out: &mut Vec<Piece>) {
        let Some(epoch) = &self.epoch else {
            self.stats.frames_dropped_before_keyframe += 1;
            return;
        };
        let cell_seq = epoch.seq0 + epoch.cell(frame.dts_ms);
        let piece_ms = i64::from(epoch.piece_ms);
        let seq0 = epoch.seq0;
        let has_video = self.program.video.is_some();
        let segment_start = if has_video {
            frame.track == Track::Video && frame.keyframe
        } else {
            // Blocks of the timeline, so that every node starts segments at the same frames.
            let block = frame.dts_ms.div_euclid(i64::from(self.cfg.audio_segment_ms.max(1)));
            let starts = self.last_audio_block.is_some_and(|b| block > b);
            self.last_audio_block = Some(block);
            starts
        };
        if !self.started && !segment_start {
            self.stats.frames_dropped_before_keyframe += 1;
            return;
        }
        self.stats.frames += 1;
        if segment_start {
            self.close(out);
            if self.started && self.publishing == Publishing::FromSecondSegment {
                self.publishing = Publishing::Yes;
            }
            if has_video && let Some(last) = self.last_segment_ms {
                self.stats.keyframe_interval_ms = Some(frame.dts_ms - last);
            }
            self.started = true;
            self.last_segment_ms = Some(frame.dts_ms);
            self.long_gop_reported = false;
            self.stats.segments += 1;
            self.mux.set_program(self.program);
            self.mux.reset_counters();
            self.open(self.free_seq(cell_seq), frame.dts_ms, PieceFlags::SEGMENT_START);
            self.make_room(TABLES_LEN);
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
            match self.open {
                // A frame that would overflow the piece goes to the next number.
                Some(o) if cell_seq <= o.seq => {
                    let packets = self.payload_len() / TS_PACKET_LEN + frame.data.len() / (TS_PACKET_LEN - 8) + 2;
                    if packets > self.cfg.max_piece_packets {
                        self.close(out);
                        self.open(o.seq + 1, frame.dts_ms, PieceFlags::NONE);
                    }
                }
                _ => {
                    self.close(out);
                    self.open(self.free_seq(cell_seq), frame.dts_ms, PieceFlags::NONE);
                }
            }
        }
        self.make_room(self.mux.frame_len(frame));
        self.mux.write_frame(frame, &mut self.buf);
        let end_ms = frame.dts_ms + i64::from(frame.duration_ms);
        self.reach_ms = Some(self.reach_ms.map_or(end_ms, |r| r.max(end_ms)));
        // A frame bigger than a whole piece (a huge keyframe) spills over several.
        while self.payload_len() > self.cfg.max_piece_packets * TS_PACKET_LEN {
            let rest = self.buf.split_off(HEADER_LEN + self.cfg.max_piece_packets * TS_PACKET_LEN);
            let seq = self.open.map_or(cell_seq, |o| o.seq);
            self.close(out);
            self.open(seq + 1, frame.dts_ms, PieceFlags::NONE);
            self.make_room(rest.len());
            self.buf.extend_from_slice(&rest);
        }
        if let Some(o) = &mut self.open {
            o.end_ms = o.end_ms.max(end_ms);
            o.last_ms = o.last_ms.max(frame.dts_ms);
            // Its cell is over: out at once.
            if o.end_ms >= (o.seq - seq0 + 1) as i64 * piece_ms {
                self.close(out);
            }
        }
    }

    fn open(&mut self, seq: u64, first_ms: i64, flags: PieceFlags) {
        self.open = Some(Open { seq, flags: flags.union(self.pending), end_ms: first_ms, last_ms: first_ms });
        self.last_seq = Some(self.last_seq.map_or(seq, |l| l.max(seq)));
        self.pending = PieceFlags::NONE;
    }

    /// Room in the open piece's buffer for `more` bytes and the signature: if they do
    /// not fit, what is written so far moves to a buffer of the class that holds it all
    /// (a few hundred bytes of audio, as a rule, before a piece's video frame).
    fn make_room(&mut self, more: usize) {
        let need = self.buf.len() + more + SIGNATURE_LEN;
        if need > self.buf.capacity() {
            let mut bigger = self.pool.take(need);
            bigger.extend_from_slice(&self.buf);
            self.pool.give_back(std::mem::replace(&mut self.buf, bigger));
        }
    }

    /// Payload bytes in the open piece's buffer (after the header's room).
    fn payload_len(&self) -> usize {
        self.buf.len() - HEADER_LEN
    }

    /// The open piece is dropped unpublished.
    fn withhold_open(&mut self) {
        if self.open.take().is_some() && self.payload_len() > 0 {
            self.stats.pieces_withheld += 1;
        }
        // The next piece starts in the smallest class, as after a close.
        self.pool.give_back(std::mem::replace(&mut self.buf, header_room(&self.pool)));
    }

    /// Signs and emits the open piece, if any, in its own buffer ([`ChannelKeypair::seal`]
    /// appends the signature in the room kept for it); the next piece starts in a
    /// buffer of the smallest class.
    /// Its timestamp is the wall time of its newest frame on the epoch's clock — the
    /// same on every node, and never ahead of when ingest had that frame (a publisher is
    /// held to the clock).
    fn close(&mut self, out: &mut Vec<Piece>) {
        let Some(open) = self.open else { return };
        if self.payload_len() == 0 || self.publishing != Publishing::Yes {
            self.withhold_open();
            return;
        }
        self.open = None;
        let Some(epoch) = &self.epoch else { return };
        let timestamp_us = epoch.wall_us(open.last_ms);
        let len = self.payload_len();
        let need = self.buf.len() + SIGNATURE_LEN;
        let mut buf = std::mem::replace(&mut self.buf, header_room(&self.pool));
        if buf.capacity() != pool::class_capacity(need) {
            // A bigger class than the piece needs (the rest of a frame that spilled
            // over pieces): copied into its own class.
            let mut fitting = self.pool.take(need);
            fitting.extend_from_slice(&buf);
            self.pool.give_back(std::mem::replace(&mut buf, fitting));
        }
        let sealed = self.key.seal(open.seq, timestamp_us, open.flags, &mut buf);
        match sealed.and_then(|()| Piece::decode(self.pool.share(buf))) {
            Ok(piece) => {
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

/// A buffer of the smallest class from `pool`, holding the room for a piece's header.
fn header_room(pool: &BufferPool) -> Vec<u8> {
    let mut buf = pool.take(HEADER_LEN);
    buf.resize(HEADER_LEN, 0);
    buf
}
