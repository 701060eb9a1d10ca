//! Channels, their publish sessions and their live windows.
//!
//! A channel outlives its sessions: its segmenter (bound to the channel's current
//! epoch, [`crate::media::epoch`]) and its window of signed pieces stay when a publisher
//! goes. Each session places its feed's timestamps on an epoch agreed with the other
//! ingest nodes through the [`EpochStore`]: the one whose timeline the feed is on, or a
//! new one. One session publishes at a time. A new publisher of the same
//! channel takes over at once when it comes from the same address (an encoder
//! reconnecting: no "already publishing") or when the current session has sent nothing
//! for [`HEALTHY_WITHIN`]; from another address while the current one is healthy it
//! is refused by default ([`Takeover::IfIdleOrSameAddress`]) or takes over
//! ([`Takeover::Always`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use swarm::piece::{ChannelId, Piece, PieceFlags};
use tokio::sync::watch;

use crate::epochs::{EpochStore, MemoryEpochs};
use crate::media::cutter::Placement;
use crate::media::epoch::{Epoch, FeedClock};
use crate::media::remux::{FlvRemuxer, RemuxError, Remuxed};
use crate::media::timeline::{JumpLimits, Timeline};
use crate::media::ts_demux::{DemuxStats, Demuxed, TsDemuxer};
use crate::media::{Frame, Track};
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
    /// Media held to the wall clock ([`Publisher::ahead_of_clock`]). Off only in
    /// benchmarks that replay media faster than real time.
    pub clock_bound: bool,
    /// Where this node agrees on epochs with the others.
    pub epochs: Arc<dyn EpochStore>,
    /// How often publishing RTMP connections are read ([`crate::merged`]): each read
    /// may wait this long; fewer wake-ups the longer it is.
    pub read_tick: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            segmenter: SegmenterConfig::default(),
            window_pieces: Self::window_for(SegmenterConfig::default().piece_ms),
            takeover: Takeover::default(),
            jump_limits: JumpLimits::default(),
            clock_bound: true,
            epochs: Arc::new(MemoryEpochs::default()),
            read_tick: crate::merged::READ_TICK,
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
    /// Sessions cutting an epoch, kept in the store by one task ([`keep_epochs`]).
    cutting: Mutex<Cutting>,
    pub metrics: IngestMetrics,
}

/// What [`keep_epochs`] tells the store and asks it about.
#[derive(Debug, Default)]
struct Cutting {
    sessions: HashMap<u64, Cut>,
    /// A keeper task runs (it ends when no session is left).
    keeper: bool,
}

/// A session cutting epoch `number` of `channel`.
#[derive(Debug)]
struct Cut {
    channel: String,
    number: u64,
    state: Arc<CutState>,
}

/// What a session cutting an epoch and the keeper share.
#[derive(Debug)]
struct CutState {
    /// Media arrived since the keeper last looked: only then is the store told.
    fresh: AtomicBool,
    /// A newer epoch than the session's, once the store named one (asked off the media
    /// path every [`EPOCH_CHECK_EVERY`] by [`keep_epochs`]; looked at on the next keyframe).
    newer: Mutex<Option<Epoch>>,
}

/// One channel's state shared by its publisher and its subscribers.
#[derive(Debug)]
pub struct Channel {
    pub name: String,
    pub id: ChannelId,
    state: Mutex<ChannelState>,
    /// The number after the newest piece (0 before any): subscribers wait on changes.
    produced: watch::Sender<u64>,
}

#[derive(Debug)]
struct ChannelState {
    window: VecDeque<Piece>,
    segmenter: Segmenter,
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

/// A channel's media is bound to wall time: a publisher faster than real time — ffmpeg
/// without `-re`, a keyframe storm — is held back ([`Publisher::ahead_of_clock`]) and
/// ended past [`MAX_AHEAD_OF_CLOCK`] numbers' worth, so numbering (one per piece, slower
/// than the clock's [`SEQ_PER_SECOND`]) never runs ahead of the protocol's bound.
pub use swarm::piece::{MAX_AHEAD_OF_CLOCK, SEQ_PER_SECOND, clock_seq};

/// [`MAX_AHEAD_OF_CLOCK`] as time, µs.
const MAX_AHEAD_US: u64 = MAX_AHEAD_OF_CLOCK * (1_000_000 / SEQ_PER_SECOND);

/// How far a feed's media may run ahead of the wall clock before its input is paused
/// (then until it is back on the clock): a burst — an encoder flushing its buffer,
/// ffmpeg's `-readrate` writing a few hundred ms at once — costs one pause per this
/// much media, not a timer per tag. Four pieces at 50 ms, a fifth of the protocol's
/// [`MAX_AHEAD_OF_CLOCK`]. With a timer per tag, the pauses were most of `shoal
/// ingest`'s wake-ups in `shoal bench ingest-vs-nginx` (2026-12-04, docs/measurements.md).
pub const PACE_SLACK_US: u64 = 200_000;

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
            cutting: Mutex::default(),
            metrics: IngestMetrics::new(),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
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
                    Arc::new(Channel {
                        name: grant.channel.clone(),
                        id: grant.key.id(),
                        state: Mutex::new(ChannelState {
                            window: VecDeque::new(),
                            segmenter: Segmenter::new(self.cfg.segmenter.clone(), grant.key.clone()),
                            session: None,
                        }),
                        produced: watch::channel(0).0,
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
            Protocol::Rtmp => FeedClock::Rtmp,
            Protocol::Srt => FeedClock::MpegTs,
        };
        // Whatever the last session left open is not published (it may be whole on
        // another node); media waits for a keyframe.
        st.segmenter.end_session();
        drop(st);
        self.metrics.publishers_active.inc();
        self.metrics.publishes.with_label_values(&[protocol.label()]).inc();
        Ok(Publisher {
            hub: self.clone(),
            channel,
            session: id,
            remuxer: FlvRemuxer::default(),
            timeline: Timeline::new(clock, self.cfg.jump_limits),
            binding: None,
            newest_wall_us: 0,
            demuxer: TsDemuxer::default(),
            ts_reported: DemuxStats::default(),
            cancelled,
            consecutive_errors: 0,
            bytes_in: self.metrics.bytes_in.with_label_values(&[protocol.label()]),
            keyframe_interval: self.metrics.keyframe_interval.with_label_values(&[&grant.channel]),
            carries_ads: grant.carries_ads,
            ad_cue_logged: false,
            bad_logged: None,
            bad_unlogged: 0,
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
        st.segmenter.end_session();
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
            // Numbers only rise in the window (a node that moved to a newer epoch late
            // may have cut past its start): a piece at or below the newest is dropped.
            if let Some(newest) = st.window.back().map(Piece::seq)
                && p.seq() <= newest
            {
                m.epoch_events.with_label_values(&["piece_below_newest"]).inc();
                tracing::warn!(channel = %channel.name, seq = p.seq(), newest, "piece numbered below the window's newest: dropped");
                continue;
            }
            m.pieces.inc();
            m.piece_bytes.inc_by(p.payload().len() as u64);
            st.window.push_back(p);
        }
        while st.window.len() > self.cfg.window_pieces {
            st.window.pop_front();
        }
        m.added_latency.observe(arrived.elapsed().as_secs_f64());
        if let Some(newest) = st.window.back().map(Piece::seq) {
            channel.produced.send_replace(newest + 1);
        }
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
    #[error("media arrives faster than real time: {0} ms ahead of the clock")]
    AheadOfClock(u64),
    #[error("another feed publishes this channel (epoch {0} is not on this feed's timeline)")]
    OtherFeed(u64),
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
    /// The feed's timestamps, unwrapped.
    timeline: Timeline,
    /// Where the feed sits on its epoch.
    binding: Option<Binding>,
    /// Wall time (on the epoch's clock) of the newest frame's end, µs.
    newest_wall_us: u64,
    /// SRT sessions: MPEG-TS in.
    demuxer: TsDemuxer,
    /// Demuxer counters already added to the metrics.
    ts_reported: DemuxStats,
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
    /// When a malformed tag was last logged, and how many were skipped unlogged since.
    bad_logged: Option<Instant>,
    bad_unlogged: u64,
}

/// Malformed tags are logged at most this often per session (each is counted).
const BAD_LOG_EVERY: Duration = Duration::from_secs(10);

/// The session's feed placed on an epoch.
#[derive(Debug, Clone)]
struct Binding {
    placement: Placement,
    /// Shared with the keeper: `fresh` set on every frame, `newer` looked at on keyframes.
    cut: Arc<CutState>,
}

/// How often a publishing node tells the store it is cutting its epochs.
const TOUCH_EVERY: Duration = Duration::from_millis(500);
/// A node that binds to an epoch nobody said they cut for this long publishes at once
/// (there is no one to differ from): the feed moved here from a dead ingest.
const ALONE_AFTER_US: u64 = 1_500_000;

/// How often a publishing session asks the epoch store whether another node started
/// a newer epoch (another feed took the channel).
const EPOCH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// One task per hub, while any session cuts: every [`TOUCH_EVERY`] it tells the store
/// which epochs this node cut media on since the last time (one call for every
/// channel: the file store is written once, not once per channel), and every
/// [`EPOCH_CHECK_EVERY`] asks it for each channel's newest epoch, leaving a newer one
/// where its session looks on the next keyframe. Off the media path: a slow store
/// delays no tag. Replaces two tasks spawned per channel and second, each a wake-up of
/// the runtime's other worker and a file rewrite (2026-12-04, docs/measurements.md).
async fn keep_epochs(hub: Weak<Hub>) {
    let mut tick = tokio::time::interval(TOUCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let checks_every = (EPOCH_CHECK_EVERY.as_millis() / TOUCH_EVERY.as_millis()).max(1) as u64;
    for round in 0u64.. {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        let check = round % checks_every == 0;
        let (touch, asks) = {
            let mut cutting = lock(&hub.cutting);
            if cutting.sessions.is_empty() {
                cutting.keeper = false;
                return;
            }
            let touch: Vec<(String, u64)> = cutting
                .sessions
                .values()
                .filter(|c| c.state.fresh.swap(false, Ordering::Relaxed))
                .map(|c| (c.channel.clone(), c.number))
                .collect();
            let asks: Vec<(String, u64, Arc<CutState>)> = if check {
                cutting.sessions.values().map(|c| (c.channel.clone(), c.number, c.state.clone())).collect()
            } else {
                Vec::new()
            };
            (touch, asks)
        };
        let store = hub.cfg.epochs.clone();
        let failed = hub.metrics.epoch_events.with_label_values(&["store_error"]);
        drop(hub); // not held across the store's awaits or the next tick
        if !touch.is_empty()
            && let Err(e) = store.touch_all(&touch, now_us()).await
        {
            failed.inc();
            tracing::debug!(error = %e, "epoch store not told which epochs this node cuts");
        }
        if asks.is_empty() {
            continue;
        }
        let mut channels: Vec<String> = asks.iter().map(|(c, ..)| c.clone()).collect();
        channels.sort();
        channels.dedup();
        match store.latest_all(&channels).await {
            Ok(latest) => {
                for (channel, number, state) in asks {
                    if let Some(e) = latest.get(&channel).filter(|e| e.number > number) {
                        *lock(&state.newer) = Some(e.clone());
                    }
                }
            }
            Err(e) => {
                failed.inc();
                tracing::debug!(error = %e, "epoch store not asked for newer epochs");
            }
        }
    }
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

    /// How long to pause input before the next tag: `Some` once the feed's media runs
    /// more than [`PACE_SLACK_US`] ahead of the wall clock (a publisher faster than real
    /// time), for all of it. Listeners wait this out, which holds the publisher back
    /// through TCP's (or SRT's) flow control; one that pushes on regardless is ended at
    /// [`MAX_AHEAD_OF_CLOCK`].
    pub fn ahead_of_clock(&self) -> Option<Duration> {
        if !self.hub.cfg.clock_bound {
            return None;
        }
        let ahead = self.newest_wall_us.saturating_sub(now_us());
        (ahead > PACE_SLACK_US).then(|| {
            self.hub.metrics.paced.inc();
            Duration::from_micros(ahead)
        })
    }

    /// `Err` once the feed's media is more than [`MAX_AHEAD_OF_CLOCK`] past the clock.
    fn check_clock(&self) -> Result<(), PublishError> {
        let ahead = self.newest_wall_us.saturating_sub(now_us());
        if self.hub.cfg.clock_bound && ahead > MAX_AHEAD_US {
            self.hub.metrics.bad_input.with_label_values(&["ahead_of_clock"]).inc();
            return Err(PublishError::AheadOfClock(ahead / 1_000));
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

    /// The channel's state, while this session is still its publisher.
    fn ours(&self, arrived: Instant) -> Result<MutexGuard<'_, ChannelState>, PublishError> {
        let mut st = lock(&self.channel.state);
        match &mut st.session {
            Some(s) if s.id == self.session => {
                s.last_data = arrived;
                Ok(st)
            }
            _ => Err(self.ended()),
        }
    }

    /// A video tag's body (an RTMP message); its frame's bytes stay in it, uncopied,
    /// until they are written into a piece.
    pub async fn push_video(&mut self, timestamp: u32, body: Bytes) -> Result<(), PublishError> {
        self.push_tag(Track::Video, timestamp, body).await
    }

    /// An audio tag's body (an RTMP message).
    pub async fn push_audio(&mut self, timestamp: u32, body: Bytes) -> Result<(), PublishError> {
        self.push_tag(Track::Audio, timestamp, body).await
    }

    async fn push_tag(&mut self, track: Track, timestamp: u32, body: Bytes) -> Result<(), PublishError> {
        let arrived = Instant::now();
        self.bytes_in.inc_by(body.len() as u64);
        drop(self.ours(arrived)?);
        self.check_clock()?;
        let out = match track {
            Track::Video => self.remuxer.push_video(timestamp, &body),
            Track::Audio => self.remuxer.push_audio(timestamp, &body),
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
                // Logged at most every 10 s (a feed whose video never gets its sequence
                // header sends 25 bad tags a second, between good audio); all are counted.
                if self.bad_logged.is_none_or(|t| t.elapsed() >= BAD_LOG_EVERY) {
                    let also = std::mem::take(&mut self.bad_unlogged);
                    self.bad_logged = Some(Instant::now());
                    tracing::warn!(channel = %self.channel.name, error = %e, also, "malformed tag skipped (and `also` since the last said)");
                } else {
                    self.bad_unlogged += 1;
                }
                if self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    return Err(PublishError::TooManyErrors(self.consecutive_errors, e));
                }
                return Ok(());
            }
        };
        let program = self.remuxer.program();
        match out {
            Remuxed::Frame { raw, frame } => self.place_and_push(raw, frame, program, arrived).await,
            Remuxed::Nothing => Ok(()),
        }
    }

    /// Places a frame on the channel's timeline (binding the feed to an epoch first, at
    /// its first frame and after a jump) and cuts it.
    async fn place_and_push(
        &mut self,
        raw: u64,
        mut frame: Frame,
        program: crate::media::ts::Program,
        arrived: Instant,
    ) -> Result<(), PublishError> {
        let at = self.timeline.map(raw);
        let jumped = at.rebind && self.binding.is_some();
        if at.rebind {
            self.bind(raw, at.ticks, jumped).await?;
        } else if frame.keyframe
            && let Some(newer) = self.binding.as_ref().and_then(|b| lock(&b.cut.newer).take())
        {
            self.follow_newer_epoch(newer, raw, at.ticks).await?;
        }
        let Some(b) = &mut self.binding else { return Ok(()) };
        let end_us = b.placement.place(at.ticks, at.rebind, &mut frame);
        let number = b.placement.epoch.number;
        // The store hears of it from the hub's keeper, off the media path.
        b.cut.fresh.store(true, Ordering::Relaxed);
        self.newest_wall_us = self.newest_wall_us.max(end_us);
        let mut st = self.ours(arrived)?;
        if st.segmenter.epoch().is_none_or(|e| e.number != number) {
            // Another session of this channel on this node moved it to another epoch.
            return Err(PublishError::Superseded);
        }
        st.segmenter.set_program(program);
        self.push_frame(&mut st, &frame, arrived);
        Ok(())
    }

    /// Binds the feed, whose timestamp `raw` is unwrapped tick `ticks`, to the newest
    /// epoch if its timeline is that one's, else to a new epoch proposed to the store
    /// (the store's choice wins). `jumped`: the feed's timestamps jumped, so the epoch it
    /// was on is not its timeline any more. A store that can't be reached leaves the
    /// node on an epoch of its own (logged and counted): it keeps publishing.
    async fn bind(&mut self, raw: u64, ticks: i64, jumped: bool) -> Result<(), PublishError> {
        let clock = self.timeline.clock();
        let store = self.hub.cfg.epochs.clone();
        let name = self.channel.name.clone();
        let piece_ms = self.hub.cfg.segmenter.piece_ms;
        let current = self.binding.as_ref().map(|b| b.placement.epoch.number);
        let (local, reach_ms, floor) = {
            let st = lock(&self.channel.state);
            let floor = st.window.back().map_or(0, |p| p.seq() + 1).max(st.segmenter.next_seq().unwrap_or(0));
            (st.segmenter.epoch().cloned(), st.segmenter.reach_ms(), floor)
        };
        let m = &self.hub.metrics;
        let mut newest = match store.latest(&name).await {
            Ok(e) => e,
            Err(e) => {
                m.epoch_events.with_label_values(&["store_error"]).inc();
                tracing::warn!(channel = %name, error = %e, "epoch store unreadable: going on with this node's epochs");
                None
            }
        };
        // The newer of what the store and this node know.
        if local.as_ref().is_some_and(|l| newest.as_ref().is_none_or(|n| l.number > n.number)) {
            newest = local.clone();
        }
        let now = now_us();
        let mut how = "joined";
        // Not on the epoch just left by a jump; and not back before what this node cut
        // of it (an encoder restarted with its clock at 0 soon after the epoch began).
        let backward_ms = self.hub.cfg.jump_limits.backward_ms;
        let behind_us = |e: &Epoch, rel: i64| {
            local.as_ref().is_some_and(|l| l.number == e.number)
                && reach_ms.is_some_and(|r| rel / clock.ticks_per_ms() < r - backward_ms)
        };
        let mut placed = newest
            .as_ref()
            .filter(|e| !(jumped && current == Some(e.number)))
            .and_then(|e| e.place(clock, raw, now).map(|rel| (e.clone(), rel)))
            .filter(|(e, rel)| !behind_us(e, *rel));
        for _ in 0..3 {
            if placed.is_some() {
                break;
            }
            let proposal = Epoch::successor(newest.as_ref(), clock, raw, now, piece_ms, floor);
            let stored = match store.propose(&name, &proposal).await {
                Ok(e) => {
                    how = "created";
                    e
                }
                Err(e) => {
                    m.epoch_events.with_label_values(&["store_error"]).inc();
                    tracing::warn!(channel = %name, error = %e, "epoch not stored: this node goes on alone with it");
                    how = "local";
                    proposal.clone()
                }
            };
            placed = stored.place(clock, raw, now).map(|rel| (stored.clone(), rel));
            if placed.is_none() {
                tracing::warn!(channel = %name, epoch = stored.number, "another feed took the next epoch");
            }
            newest = Some(stored);
        }
        let Some((epoch, rel)) = placed else {
            return Err(PublishError::OtherFeed(newest.map_or(0, |e| e.number)));
        };
        // Numbers never run ahead of the clock (so that a node restarted without the
        // store's memory, numbering from the clock, still numbers above them): epochs
        // begun in quick succession wait for the clock to catch up, the publisher held
        // back meanwhile.
        let ahead = epoch.seq0.saturating_sub(clock_seq(now_us()) + 1);
        if ahead > 0 && self.hub.cfg.clock_bound {
            tokio::time::sleep(Duration::from_micros(ahead * (1_000_000 / SEQ_PER_SECOND))).await;
        }
        m.epoch_events.with_label_values(&[how]).inc();
        let from_start = rel == 0;
        let alone = how != "joined" || epoch.unattended(now_us(), ALONE_AFTER_US);
        if from_start && epoch.number > 1 {
            m.discontinuities.inc();
        }
        tracing::info!(
            channel = %name,
            session = self.session,
            epoch = epoch.number,
            seq0 = epoch.seq0,
            how,
            alone,
            rel_ms = rel / clock.ticks_per_ms(),
            "feed bound to an epoch: media resumes at the next keyframe"
        );
        let mut st = self.ours(Instant::now())?;
        st.segmenter.bind(&epoch, from_start, alone);
        drop(st);
        let state = Arc::new(CutState { fresh: AtomicBool::new(true), newer: Mutex::default() });
        let cut = Cut { channel: name, number: epoch.number, state: state.clone() };
        self.binding = Some(Binding { placement: Placement::new(epoch, ticks, rel), cut: state });
        let start_keeper = {
            let mut cutting = lock(&self.hub.cutting);
            cutting.sessions.insert(self.session, cut);
            !std::mem::replace(&mut cutting.keeper, true)
        };
        if start_keeper {
            tokio::spawn(keep_epochs(Arc::downgrade(&self.hub)));
        }
        Ok(())
    }

    /// A newer epoch than the one the feed is on, named by the store: one whose timeline
    /// the feed is on (another node moved first) is followed; one it is not on means
    /// another feed publishes the channel now: this session ends.
    async fn follow_newer_epoch(&mut self, newest: Epoch, raw: u64, ticks: i64) -> Result<(), PublishError> {
        if self.binding.as_ref().is_none_or(|b| b.placement.epoch.number >= newest.number) {
            return Ok(()); // this session moved past it meanwhile
        }
        if newest.place(self.timeline.clock(), raw, now_us()).is_some() {
            self.bind(raw, ticks, false).await
        } else {
            self.hub.metrics.epoch_events.with_label_values(&["other_feed"]).inc();
            tracing::warn!(channel = %self.channel.name, epoch = newest.number, "a newer epoch is another feed's: this session ends");
            Err(PublishError::OtherFeed(newest.number))
        }
    }

    fn push_frame(&self, st: &mut ChannelState, frame: &Frame, arrived: Instant) {
        let before = st.segmenter.stats().clone();
        let mut pieces = Vec::new();
        st.segmenter.push(frame, &mut pieces);
        let after = st.segmenter.stats();
        let m = &self.hub.metrics;
        m.segments.inc_by(after.segments - before.segments);
        m.long_gops.inc_by(after.long_gops - before.long_gops);
        m.frames_before_keyframe.inc_by(after.frames_dropped_before_keyframe - before.frames_dropped_before_keyframe);
        m.pieces_withheld.inc_by(after.pieces_withheld - before.pieces_withheld);
        if let Some(k) = after.keyframe_interval_ms {
            self.keyframe_interval.set(k as f64 / 1000.0);
        }
        self.publish(st, pieces, arrived);
    }

    fn publish(&self, st: &mut ChannelState, pieces: Vec<Piece>, arrived: Instant) {
        self.hub.publish(&self.channel, st, pieces, arrived);
    }

    /// MPEG-TS bytes (an SRT session), in any split.
    pub async fn push_ts(&mut self, data: &[u8]) -> Result<(), PublishError> {
        self.bytes_in.inc_by(data.len() as u64);
        let mut events = Vec::new();
        self.demuxer.push(data, &mut events);
        self.ts_events(events).await
    }

    /// The feed ended: its last access units are complete.
    pub async fn flush_ts(&mut self) -> Result<(), PublishError> {
        let mut events = Vec::new();
        self.demuxer.flush(&mut events);
        self.ts_events(events).await
    }

    async fn ts_events(&mut self, events: Vec<Demuxed>) -> Result<(), PublishError> {
        let arrived = Instant::now();
        let stats = self.demuxer.stats.clone();
        let bad = &self.hub.metrics.bad_input;
        bad.with_label_values(&["ts_sync"]).inc_by(stats.resyncs - self.ts_reported.resyncs);
        bad.with_label_values(&["ts_pes"]).inc_by(stats.bad_pes - self.ts_reported.bad_pes);
        bad.with_label_values(&["ts_section"]).inc_by(stats.bad_sections - self.ts_reported.bad_sections);
        self.ts_reported = stats;
        drop(self.ours(arrived)?);
        self.check_clock()?;
        let mut program = self.demuxer.program();
        program.scte35 = false;
        for event in events {
            match event {
                Demuxed::Cue(flags) => {
                    if self.cue_allowed() {
                        let mut st = self.ours(arrived)?;
                        let mut pieces = Vec::new();
                        st.segmenter.mark(flags, &mut pieces);
                        self.publish(&mut st, pieces, arrived);
                    }
                }
                Demuxed::Frame(f) => {
                    let cts = f.pts.wrapping_sub(f.dts) & ((1 << 33) - 1);
                    let cts_ms = if cts < 1 << 32 { (cts / 90) as i32 } else { 0 };
                    let duration_ms = if f.video {
                        0 // set when placed
                    } else {
                        (u64::from(f.audio_frames) * 1_024_000 / u64::from(f.sample_rate.max(1))) as u32
                    };
                    let frame = Frame {
                        track: if f.video { Track::Video } else { Track::Audio },
                        dts_ms: 0,
                        cts_ms,
                        keyframe: f.keyframe,
                        duration_ms,
                        data: f.data.into(),
                    };
                    self.place_and_push(f.dts, frame, program, arrived).await?;
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
        let Ok(mut st) = self.ours(Instant::now()) else { return };
        let mut pieces = Vec::new();
        st.segmenter.mark(flags, &mut pieces);
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
        lock(&self.hub.cutting).sessions.remove(&self.session);
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
    /// Pieces with seq ≥ `from`, at most `max`. (Numbers rise in the window but may
    /// skip: a new epoch starts past the old one's reach.)
    pub fn fetch(&self, from: u64, max: usize) -> Fetch {
        let st = lock(&self.state);
        let Some(first) = st.window.front().map(Piece::seq) else { return Fetch::Pieces(Vec::new()) };
        if from < first {
            return Fetch::Gone { oldest: first };
        }
        let skip = st.window.partition_point(|p| p.seq() < from);
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

    /// The newest piece's number.
    pub fn newest(&self) -> Option<u64> {
        lock(&self.state).window.back().map(Piece::seq)
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
