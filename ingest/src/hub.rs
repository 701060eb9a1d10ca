//! Channels, their publish sessions and their live windows.
//!
//! A channel outlives its sessions: its segmenter (so sequence numbers keep rising),
//! its timeline (so time only moves forward) and its window of signed pieces stay when
//! a publisher goes. One session publishes at a time. A new publisher of the same
//! channel takes over at once when it comes from the same address (an encoder
//! reconnecting: no "already publishing") or when the current session has sent nothing
//! for [`HEALTHY_WITHIN`]; from another address while the current one is healthy it
//! is refused by default ([`Takeover::IfIdleOrSameAddress`]) or takes over
//! ([`Takeover::Always`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use swarm::piece::{ChannelId, Piece, PieceFlags};
use tokio::sync::watch;

use crate::media::remux::{FlvRemuxer, RemuxError, Remuxed};
use crate::media::timeline::{JumpLimits, Timeline};
use crate::media::ts_demux::{DemuxStats, Demuxed, TsDemuxer};
use crate::media::{Frame, FrameInterval, Track};
use crate::metrics::IngestMetrics;
use crate::{Segmenter, SegmenterConfig};
use catalogue::admission::{Authorizer, Grant, Refusal};

/// A session that sent media this recently is healthy.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Takeover {
    /// Take over from the same address or an idle session; refuse otherwise.
    #[default]
    IfIdleOrSameAddress,
    Always,
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub segmenter: SegmenterConfig,
    /// Pieces kept per channel for seeders to resume from (see [`HubConfig::window_for`]).
    pub window_pieces: usize,
    pub takeover: Takeover,
    pub jump_limits: JumpLimits,
    /// Numbering bound to the clock ([`SEQ_PER_SECOND`]). Off only in benchmarks that
    /// replay media faster than real time through a hub that is never restarted.
    pub clock_bound: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            segmenter: SegmenterConfig::default(),
            window_pieces: Self::window_for(SegmenterConfig::default().piece_ms),
            takeover: Takeover::default(),
            jump_limits: JumpLimits::default(),
            clock_bound: true,
        }
    }
}

/// Media a channel's live window holds by default, ms: how far back a seeder can resume.
pub const WINDOW_MS: u32 = 30_000;

impl HubConfig {
    /// Pieces of `piece_ms` in a [`WINDOW_MS`] window (600 at 50 ms, 120 at 250 ms),
    /// at least 16.
    pub fn window_for(piece_ms: u32) -> usize {
        (WINDOW_MS / piece_ms.max(1)).max(16) as usize
    }
}

/// Which protocol a session came in on (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rtmp,
    Srt,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Srt => "srt",
        }
    }
}

#[derive(Debug)]
pub struct Hub {
    cfg: HubConfig,
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    next_session: Mutex<u64>,
    pub metrics: IngestMetrics,
}

/// One channel's state shared by its publisher and its subscribers.
#[derive(Debug)]
pub struct Channel {
    pub name: String,
    pub id: ChannelId,
    state: Mutex<ChannelState>,
    /// The next sequence number to be produced: subscribers wait on changes.
    produced: watch::Sender<u64>,
}

#[derive(Debug)]
struct ChannelState {
    window: VecDeque<Piece>,
    segmenter: Segmenter,
    timeline: Timeline,
    session: Option<Session>,
}

#[derive(Debug)]
struct Session {
    id: u64,
    peer: IpAddr,
    last_data: Instant,
    /// The key it published with: checked again whenever the catalogue may have changed.
    key: StreamKey,
    /// Set to close the session's connection, with why.
    cancel: watch::Sender<Option<Ended>>,
}

/// A stream key held for re-checking; never printed.
#[derive(Clone)]
struct StreamKey(Arc<str>);

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(..)")
    }
}

/// Why ingest ended a live session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    #[error("another publisher took over the channel")]
    TakenOver,
    /// Its key or channel may no longer publish (a rotation past its grace period, a
    /// disabled channel, an ended licence).
    #[error("no longer allowed to publish: {0}")]
    Revoked(Refusal),
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A channel's numbering is bound to wall time (the protocol's rule, in
/// [`swarm::piece::SEQ_PER_SECOND`]): a publisher faster than real time — ffmpeg
/// without `-re`, a keyframe storm — is held back ([`Publisher::ahead_of_clock`]), so
/// after an ingest restart the new numbers are above every old one and seeders and
/// viewers follow.
pub use swarm::piece::{MAX_AHEAD_OF_CLOCK, SEQ_PER_SECOND, clock_seq};

/// Wall clock, µs since the Unix epoch: the pieces' timestamps.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Arc<Self> {
        Arc::new(Hub {
            cfg,
            channels: Mutex::new(HashMap::new()),
            next_session: Mutex::new(0),
            metrics: IngestMetrics::new(),
        })
    }

    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        lock(&self.channels).get(name).cloned()
    }

    pub fn channel_names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.channels).keys().cloned().collect();
        names.sort();
        names
    }

    /// Starts a publish session for a channel `stream_key` was granted.
    pub fn begin_publish(
        self: &Arc<Self>,
        grant: &Grant,
        stream_key: &str,
        peer: IpAddr,
        protocol: Protocol,
    ) -> Result<Publisher, Refusal> {
        let channel = {
            let mut channels = lock(&self.channels);
            channels
                .entry(grant.channel.clone())
                .or_insert_with(|| {
                    // Sequence numbers start from the clock and never run ahead of it
                    // (see `clock_seq`), so they keep rising across ingest restarts.
                    let first_seq = clock_seq(now_us()) + 1;
                    Arc::new(Channel {
                        name: grant.channel.clone(),
                        id: grant.key.id(),
                        state: Mutex::new(ChannelState {
                            window: VecDeque::new(),
                            segmenter: Segmenter::new(self.cfg.segmenter.clone(), grant.key.clone(), first_seq),
                            timeline: Timeline::rtmp(self.cfg.jump_limits),
                            session: None,
                        }),
                        produced: watch::channel(first_seq).0,
                    })
                })
                .clone()
        };
        let mut st = lock(&channel.state);
        if let Some(old) = &st.session {
            let healthy = old.last_data.elapsed() < HEALTHY_WITHIN;
            if healthy && old.peer != peer && self.cfg.takeover == Takeover::IfIdleOrSameAddress {
                return Err(Refusal::AlreadyPublishing(grant.channel.clone()));
            }
            tracing::info!(channel = %grant.channel, old_session = old.id, "publisher takes over the channel");
            old.cancel.send_replace(Some(Ended::TakenOver));
            self.metrics.takeovers.inc();
            self.metrics.publishers_active.dec();
        }
        let id = {
            let mut n = lock(&self.next_session);
            *n += 1;
            *n
        };
        let (cancel, cancelled) = watch::channel(None);
        let key = StreamKey(Arc::from(stream_key));
        st.session = Some(Session { id, peer, last_data: Instant::now(), key, cancel });
        let clock = match protocol {
            Protocol::Rtmp => Timeline::rtmp(self.cfg.jump_limits),
            Protocol::Srt => Timeline::mpeg_ts(self.cfg.jump_limits),
        };
        st.timeline.new_session_clocked_as(&clock);
        drop(st);
        self.metrics.publishers_active.inc();
        self.metrics.publishes.with_label_values(&[protocol.label()]).inc();
        Ok(Publisher {
            hub: self.clone(),
            channel,
            session: id,
            remuxer: FlvRemuxer::default(),
            demuxer: TsDemuxer::default(),
            ts_reported: DemuxStats::default(),
            video_interval: FrameInterval::default(),
            cancelled,
            consecutive_errors: 0,
            bytes_in: self.metrics.bytes_in.with_label_values(&[protocol.label()]),
            keyframe_interval: self.metrics.keyframe_interval.with_label_values(&[&grant.channel]),
            carries_ads: grant.carries_ads,
            ad_cue_logged: false,
        })
    }
}

impl Hub {
    /// Asks `auth` again about every live session's key, at `now_unix`, and ends the
    /// sessions whose key or channel may no longer publish: their connections close
    /// and the channel is free for the next publisher (the owner's new key). Run each
    /// time the catalogue may have changed (`shoal ingest`: twice a second). A catalogue
    /// that can't be read ends nothing. Returns how many sessions it ended.
    pub fn revalidate(&self, auth: &dyn Authorizer, now_unix: u64) -> usize {
        let live: Vec<(Arc<Channel>, u64, StreamKey)> = lock(&self.channels)
            .values()
            .filter_map(|c| lock(&c.state).session.as_ref().map(|s| (c.clone(), s.id, s.key.clone())))
            .collect();
        let mut ended = 0;
        for (channel, session, key) in live {
            let refusal = match auth.check(&key.0, now_unix) {
                Ok(name) if name == channel.name => continue,
                // The key now opens another channel: not this session's grant any more.
                Ok(_) => Refusal::UnknownKey,
                Err(Refusal::Directory(e)) => {
                    tracing::warn!(channel = %channel.name, error = %e, "live session not re-checked: catalogue unreadable");
                    continue;
                }
                Err(r) => r,
            };
            let st = lock(&channel.state);
            if st.session.as_ref().is_none_or(|s| s.id != session) {
                continue; // it ended meanwhile
            }
            self.metrics.revoked.with_label_values(&[refusal.label()]).inc();
            tracing::warn!(channel = %channel.name, session, reason = %refusal, "live publish session ended");
            self.end_session(&channel, st, Some(Ended::Revoked(refusal)));
            ended += 1;
        }
        ended
    }

    /// Ends the channel's current session: what was cut so far goes out, subscribers
    /// learn the channel went off air, and its connection is told why (`why`).
    fn end_session(&self, channel: &Channel, mut st: MutexGuard<'_, ChannelState>, why: Option<Ended>) {
        let Some(session) = st.session.take() else { return };
        // Counted off before anyone is woken: a waiter that sees the session end sees
        // the gauge agree.
        self.metrics.publishers_active.dec();
        let mut pieces = Vec::new();
        st.segmenter.close(now_us(), &mut pieces);
        self.publish(channel, &mut st, pieces, Instant::now());
        drop(st);
        if let Some(why) = why {
            session.cancel.send_replace(Some(why));
        }
        channel.produced.send_modify(|_| {});
        tracing::info!(channel = %channel.name, session = session.id, "publish session ended");
    }

    /// Pieces into the channel's window; subscribers are woken.
    fn publish(&self, channel: &Channel, st: &mut ChannelState, pieces: Vec<Piece>, arrived: Instant) {
        if pieces.is_empty() {
            return;
        }
        let m = &self.metrics;
        for p in pieces {
            m.pieces.inc();
            m.piece_bytes.inc_by(p.payload().len() as u64);
            st.window.push_back(p);
        }
        while st.window.len() > self.cfg.window_pieces {
            st.window.pop_front();
        }
        m.added_latency.observe(arrived.elapsed().as_secs_f64());
        channel.produced.send_replace(st.segmenter.next_seq());
    }
}

/// How often `shoal ingest` looks for catalogue changes and re-checks live sessions.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Keeps live sessions to what the catalogue allows: every `every`, `refresh` (re-read
/// the catalogue if it changed; a failure keeps the last good one and is logged once
/// until it recovers), then [`Hub::revalidate`] at the wall clock's time.
pub async fn keep_checking<F, Fut>(hub: Arc<Hub>, auth: Arc<dyn Authorizer>, every: Duration, mut refresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match refresh().await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("catalogue read again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "catalogue not re-read; the last good one stays in use");
            }
            Err(_) => {}
        }
        hub.revalidate(&*auth, now_us() / 1_000_000);
    }
}

/// Why a publisher's input stopped being taken.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("another publisher took over the channel")]
    Superseded,
    #[error("{0}")]
    Revoked(Refusal),
    #[error("media arrives faster than real time: the channel's numbering is {0} ahead of the clock")]
    AheadOfClock(u64),
    #[error("{0} consecutive malformed tags; last: {1}")]
    TooManyErrors(u32, RemuxError),
}

/// A session's handle: feed it tags; dropping it ends the session.
#[derive(Debug)]
pub struct Publisher {
    hub: Arc<Hub>,
    channel: Arc<Channel>,
    session: u64,
    remuxer: FlvRemuxer,
    /// SRT sessions: MPEG-TS in.
    demuxer: TsDemuxer,
    /// Demuxer counters already added to the metrics.
    ts_reported: DemuxStats,
    video_interval: FrameInterval,
    cancelled: watch::Receiver<Option<Ended>>,
    consecutive_errors: u32,
    /// Label lookups done once per session, not per tag.
    bytes_in: prometheus::IntCounter,
    keyframe_interval: prometheus::Gauge,
    /// Ad-break cues are kept only on a channel registered as carrying ads: on an
    /// ad-free channel they are dropped (and counted), so an encoder can't make a free
    /// channel look commercial to viewers and metering, or the reverse.
    carries_ads: bool,
    /// An ad-free channel's dropped cue was logged this session (once is enough).
    ad_cue_logged: bool,
}

/// Malformed tags in a row after which the session is closed.
const MAX_CONSECUTIVE_ERRORS: u32 = 50;

impl Publisher {
    pub fn channel(&self) -> &Arc<Channel> {
        &self.channel
    }

    /// Changes to `Some` when ingest ended the session (another publisher took over,
    /// or it may no longer publish): close the connection.
    pub fn cancelled(&self) -> watch::Receiver<Option<Ended>> {
        self.cancelled.clone()
    }

    /// How long to pause input before the next tag: `Some` while the channel's
    /// numbering is ahead of the clock (a publisher faster than real time). Listeners
    /// wait this out, which holds the publisher back through TCP's (or SRT's) flow
    /// control; one that pushes on regardless is ended at [`MAX_AHEAD_OF_CLOCK`].
    pub fn ahead_of_clock(&self) -> Option<Duration> {
        if !self.hub.cfg.clock_bound {
            return None;
        }
        let next = lock(&self.channel.state).segmenter.next_seq();
        let clock = clock_seq(now_us());
        (next > clock).then(|| {
            self.hub.metrics.paced.inc();
            Duration::from_micros((next - clock) * (1_000_000 / SEQ_PER_SECOND))
        })
    }

    /// `Err` once the channel's numbering is more than [`MAX_AHEAD_OF_CLOCK`] past the clock.
    fn check_clock(&self, st: &ChannelState) -> Result<(), PublishError> {
        let ahead = st.segmenter.next_seq().saturating_sub(clock_seq(now_us()));
        if self.hub.cfg.clock_bound && ahead > MAX_AHEAD_OF_CLOCK {
            self.hub.metrics.bad_input.with_label_values(&["ahead_of_clock"]).inc();
            return Err(PublishError::AheadOfClock(ahead));
        }
        Ok(())
    }

    /// Why input is no longer taken, once the session is not the channel's any more.
    fn ended(&self) -> PublishError {
        match &*self.cancelled.borrow() {
            Some(Ended::Revoked(r)) => PublishError::Revoked(r.clone()),
            _ => PublishError::Superseded,
        }
    }

    pub fn push_video(&mut self, timestamp: u32, body: &[u8]) -> Result<(), PublishError> {
        self.push_tag(Track::Video, timestamp, body)
    }

    pub fn push_audio(&mut self, timestamp: u32, body: &[u8]) -> Result<(), PublishError> {
        self.push_tag(Track::Audio, timestamp, body)
    }

    fn push_tag(&mut self, track: Track, timestamp: u32, body: &[u8]) -> Result<(), PublishError> {
        let arrived = Instant::now();
        self.bytes_in.inc_by(body.len() as u64);
        let mut st = lock(&self.channel.state);
        let st = &mut *st;
        match &mut st.session {
            Some(s) if s.id == self.session => s.last_data = arrived,
            _ => return Err(self.ended()),
        }
        self.check_clock(st)?;
        let out = match track {
            Track::Video => self.remuxer.push_video(&mut st.timeline, timestamp, body),
            Track::Audio => self.remuxer.push_audio(&mut st.timeline, timestamp, body),
        };
        let out = match out {
            Ok(out) => {
                self.consecutive_errors = 0;
                out
            }
            Err(e) => {
                // One bad tag costs that tag only; a stream of them ends the session.
                self.consecutive_errors += 1;
                self.hub.metrics.bad_input.with_label_values(&[bad_input_kind(&e)]).inc();
                tracing::warn!(channel = %self.channel.name, error = %e, "malformed tag skipped");
                if self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    return Err(PublishError::TooManyErrors(self.consecutive_errors, e));
                }
                return Ok(());
            }
        };
        st.segmenter.set_program(self.remuxer.program());
        let frame = match out {
            Remuxed::Frame(f) => f,
            Remuxed::DiscontinuityThen(f) => {
                self.discontinuity(st, arrived);
                f
            }
            Remuxed::Nothing => return Ok(()),
        };
        self.push_frame(st, &frame, arrived);
        Ok(())
    }

    /// The timeline was rebased (a new session, or a timestamp jump): the open piece is
    /// closed, the next one is flagged, and media waits for a keyframe.
    fn discontinuity(&self, st: &mut ChannelState, arrived: Instant) {
        self.hub.metrics.discontinuities.inc();
        tracing::info!(
            channel = %self.channel.name,
            session = self.session,
            "timeline discontinuity (new session or timestamp jump): media resumes at the next keyframe"
        );
        let mut pieces = Vec::new();
        st.segmenter.discontinuity(now_us(), &mut pieces);
        self.publish(st, pieces, arrived);
    }

    fn push_frame(&self, st: &mut ChannelState, frame: &Frame, arrived: Instant) {
        let before = st.segmenter.stats().clone();
        let mut pieces = Vec::new();
        st.segmenter.push(frame, now_us(), &mut pieces);
        let after = st.segmenter.stats();
        let m = &self.hub.metrics;
        m.segments.inc_by(after.segments - before.segments);
        m.long_gops.inc_by(after.long_gops - before.long_gops);
        m.frames_before_keyframe.inc_by(after.frames_dropped_before_keyframe - before.frames_dropped_before_keyframe);
        if let Some(k) = after.keyframe_interval_ms {
            self.keyframe_interval.set(k as f64 / 1000.0);
        }
        self.publish(st, pieces, arrived);
    }

    fn publish(&self, st: &mut ChannelState, pieces: Vec<Piece>, arrived: Instant) {
        self.hub.publish(&self.channel, st, pieces, arrived);
    }

    /// MPEG-TS bytes (an SRT session), in any split.
    pub fn push_ts(&mut self, data: &[u8]) -> Result<(), PublishError> {
        self.bytes_in.inc_by(data.len() as u64);
        let mut events = Vec::new();
        self.demuxer.push(data, &mut events);
        self.ts_events(events)
    }

    /// The feed ended: its last access units are complete.
    pub fn flush_ts(&mut self) -> Result<(), PublishError> {
        let mut events = Vec::new();
        self.demuxer.flush(&mut events);
        self.ts_events(events)
    }

    fn ts_events(&mut self, events: Vec<Demuxed>) -> Result<(), PublishError> {
        let arrived = Instant::now();
        let stats = self.demuxer.stats.clone();
        let bad = &self.hub.metrics.bad_input;
        bad.with_label_values(&["ts_sync"]).inc_by(stats.resyncs - self.ts_reported.resyncs);
        bad.with_label_values(&["ts_pes"]).inc_by(stats.bad_pes - self.ts_reported.bad_pes);
        bad.with_label_values(&["ts_section"]).inc_by(stats.bad_sections - self.ts_reported.bad_sections);
        self.ts_reported = stats;
        let events: Vec<Demuxed> =
            events.into_iter().filter(|e| !matches!(e, Demuxed::Cue(_)) || self.cue_allowed()).collect();
        let mut st = lock(&self.channel.state);
        let st = &mut *st;
        match &mut st.session {
            Some(s) if s.id == self.session => s.last_data = arrived,
            _ => return Err(self.ended()),
        }
        self.check_clock(st)?;
        let mut program = self.demuxer.program();
        program.scte35 = false;
        st.segmenter.set_program(program);
        for event in events {
            match event {
                Demuxed::Cue(flags) => {
                    let mut pieces = Vec::new();
                    st.segmenter.mark(flags, now_us(), &mut pieces);
                    self.publish(st, pieces, arrived);
                }
                Demuxed::Frame(f) => {
                    let mapped = st.timeline.map(f.dts);
                    let cts = f.pts.wrapping_sub(f.dts) & ((1 << 33) - 1);
                    let cts_ms = if cts < 1 << 32 { (cts / 90) as i32 } else { 0 };
                    let duration_ms = if f.video {
                        self.video_interval.observe(mapped.ms, mapped.discontinuity)
                    } else {
                        (u64::from(f.audio_frames) * 1_024_000 / u64::from(f.sample_rate.max(1))) as u32
                    };
                    if mapped.discontinuity {
                        self.discontinuity(st, arrived);
                    }
                    let frame = Frame {
                        track: if f.video { Track::Video } else { Track::Audio },
                        dts_ms: mapped.ms,
                        cts_ms,
                        keyframe: f.keyframe,
                        duration_ms,
                        data: f.data,
                    };
                    self.push_frame(st, &frame, arrived);
                }
            }
        }
        Ok(())
    }

    /// Whether an ad-break cue may mark the stream: on an ad-free channel it is
    /// dropped, counted, and logged once per session.
    fn cue_allowed(&mut self) -> bool {
        if self.carries_ads {
            return true;
        }
        self.hub.metrics.ad_cues_dropped.inc();
        if !std::mem::replace(&mut self.ad_cue_logged, true) {
            tracing::warn!(
                channel = %self.channel.name,
                "ad-break cue on a channel registered ad-free: dropped (register it as carrying ads to keep them)"
            );
        }
        false
    }

    /// Marks an ad-break edge on the next piece (dropped on an ad-free channel).
    pub fn mark(&mut self, flags: PieceFlags) {
        if !self.cue_allowed() {
            return;
        }
        let mut st = lock(&self.channel.state);
        if st.session.as_ref().is_none_or(|s| s.id != self.session) {
            return;
        }
        let mut pieces = Vec::new();
        st.segmenter.mark(flags, now_us(), &mut pieces);
        self.publish(&mut st, pieces, Instant::now());
    }
}

fn bad_input_kind(e: &RemuxError) -> &'static str {
    match e {
        RemuxError::Flv(_) => "flv_tag",
        RemuxError::Codec(_) => "codec",
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let st = lock(&self.channel.state);
        if st.session.as_ref().is_some_and(|s| s.id == self.session) {
            self.hub.end_session(&self.channel, st, None);
        }
    }
}

/// Where a subscriber stands against the window.
#[derive(Debug)]
pub enum Fetch {
    /// Pieces from the requested seq on (possibly none yet).
    Pieces(Vec<Piece>),
    /// The requested seq has left the window; the oldest held is given.
    Gone { oldest: u64 },
}

impl Channel {
    /// Pieces with seq ≥ `from`, at most `max`.
    pub fn fetch(&self, from: u64, max: usize) -> Fetch {
        let st = lock(&self.state);
        let Some(first) = st.window.front().map(Piece::seq) else { return Fetch::Pieces(Vec::new()) };
        if from < first {
            return Fetch::Gone { oldest: first };
        }
        let skip = (from - first) as usize;
        Fetch::Pieces(st.window.iter().skip(skip).take(max).cloned().collect())
    }

    /// Where a new subscriber without a position starts: the newest segment start.
    pub fn join_point(&self) -> Option<u64> {
        // Nothing was signed after now: the newest segment start.
        self.resume_point(0)
    }

    /// Where a seeder without a position (new, or back after its place left the
    /// window) starts: the oldest segment start signed within `max_age_us` (pieces
    /// still in time for viewers playing that far behind live: after an ingest
    /// restart, the new run's first segment), else the newest segment start.
    pub fn resume_point(&self, max_age_us: u64) -> Option<u64> {
        let since = now_us().saturating_sub(max_age_us);
        let st = lock(&self.state);
        let segment_starts = || st.window.iter().filter(|p| p.flags().contains(PieceFlags::SEGMENT_START));
        segment_starts().find(|p| p.timestamp_us() >= since).or_else(|| segment_starts().next_back()).map(Piece::seq)
    }

    /// Waits on this to learn of new pieces.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.produced.subscribe()
    }

    /// A session is publishing.
    pub fn live(&self) -> bool {
        lock(&self.state).session.is_some()
    }
}
