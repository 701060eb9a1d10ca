//! One feed's whole media path without I/O: FLV tags → frames placed on an epoch →
//! signed pieces. What the hub does for a session, minus the shared store: for
//! fixtures, tests (two cutters joining one feed at different points cut the same
//! pieces) and fuzzing.

use std::sync::Arc;

use bytes::Bytes;

use swarm::piece::{ChannelKeypair, Piece};

use super::epoch::{Epoch, FeedClock};
use super::flv::{TAG_AUDIO, TAG_VIDEO};
use super::remux::{FlvRemuxer, RemuxError, Remuxed};
use super::segmenter::{Segmenter, SegmenterConfig};
use super::timeline::{JumpLimits, Timeline};
use super::{Frame, FrameInterval, Track};

/// A feed's timestamps placed on an epoch: the relative time of unwrapped tick `t` is
/// `t - ticks + rel`.
#[derive(Debug, Clone)]
pub struct Placement {
    pub epoch: Epoch,
    ticks: i64,
    rel: i64,
    video_interval: FrameInterval,
}

impl Placement {
    /// Unwrapped tick `ticks` is relative time `rel` (ticks) on `epoch`.
    pub fn new(epoch: Epoch, ticks: i64, rel: i64) -> Self {
        Placement { epoch, ticks, rel, video_interval: FrameInterval::default() }
    }

    /// Where the binding was made, relative ticks (0: at the epoch's own start).
    pub fn rel_at_bind(&self) -> i64 {
        self.rel
    }

    /// Sets `frame`'s time (and a video frame's duration) from its unwrapped tick;
    /// `rebound`: the first frame since binding. Returns the wall time its media ends.
    pub fn place(&mut self, ticks: i64, rebound: bool, frame: &mut Frame) -> u64 {
        let tpm = self.epoch.clock.ticks_per_ms();
        frame.dts_ms = (ticks - self.ticks + self.rel).div_euclid(tpm);
        if frame.track == Track::Video {
            frame.duration_ms = self.video_interval.observe(frame.dts_ms, rebound);
        }
        self.epoch.wall_us(frame.dts_ms + i64::from(frame.duration_ms))
    }
}

/// FLV tags of one feed cut on one epoch.
#[derive(Debug)]
pub struct FlvCutter {
    remuxer: FlvRemuxer,
    timeline: Timeline,
    placement: Option<Placement>,
    epoch: Epoch,
    /// Wall time the first tag is taken to arrive at (its place on the epoch's clock).
    now_us: u64,
    pub segmenter: Segmenter,
}

impl FlvCutter {
    /// Cuts on `epoch`, whose clock must be RTMP's; the first tag pushed is taken to
    /// arrive at `now_us` (where it must sit on the epoch's timeline).
    pub fn new(cfg: SegmenterConfig, key: Arc<ChannelKeypair>, epoch: Epoch, now_us: u64) -> Self {
        FlvCutter {
            remuxer: FlvRemuxer::default(),
            timeline: Timeline::new(FeedClock::Rtmp, JumpLimits::default()),
            placement: None,
            epoch,
            now_us,
            segmenter: Segmenter::new(cfg, key),
        }
    }

    /// One tag (`kind` is FLV's tag type; script data is ignored).
    pub fn push(&mut self, kind: u8, timestamp: u32, body: &Bytes, out: &mut Vec<Piece>) -> Result<(), RemuxError> {
        let remuxed = match kind {
            TAG_VIDEO => self.remuxer.push_video(timestamp, body)?,
            TAG_AUDIO => self.remuxer.push_audio(timestamp, body)?,
            _ => return Ok(()),
        };
        self.segmenter.set_program(self.remuxer.program());
        let Remuxed::Frame { raw, mut frame } = remuxed else { return Ok(()) };
        let at = self.timeline.map(raw);
        if self.placement.is_none() {
            let Some(rel) = self.epoch.place(FeedClock::Rtmp, raw, self.now_us) else {
                return Ok(()); // not on the epoch's timeline: nothing to cut
            };
            self.segmenter.bind(&self.epoch, rel == 0, false);
            self.placement = Some(Placement::new(self.epoch.clone(), at.ticks, rel));
        }
        if let Some(p) = &mut self.placement {
            p.place(at.ticks, at.rebind, &mut frame);
            self.segmenter.push(&frame, out);
        }
        Ok(())
    }

    /// Every tag of an FLV file (tags that fail to remux are skipped and counted).
    pub fn push_file(&mut self, flv: &[u8], out: &mut Vec<Piece>) -> Result<u64, super::flv::FlvError> {
        let mut bad = 0;
        let file = Bytes::copy_from_slice(flv);
        for tag in super::flv::read_file(&file)? {
            if self.push(tag.kind, tag.timestamp, &file.slice_ref(tag.body), out).is_err() {
                bad += 1;
            }
        }
        Ok(bad)
    }
}
