//! HLS of verified pieces — the seeders' fallback for browsers and phones without the
//! viewer, and a viewer's `/live.m3u8` beside its `/live.ts`: segments cut
//! at the channel's segment starts (each begins with PAT/PMT and a keyframe), built only
//! from pieces the seeder's peer verified, the newest few kept in memory. Low-Latency
//! HLS (RFC 8216bis): each piece is also a *part* (~50 ms), listed as soon as the next
//! piece shows how long it lasted, so a player can start and stay within a few parts of
//! live instead of three segments behind.
//!
//! `GET /hls/{channel}/live.m3u8` — a live media playlist: the last [`WINDOW`] complete
//! segments, `#EXTINF` from the pieces' timestamps, `#EXT-X-PROGRAM-DATE-TIME` from
//! ingest's clock (so a player knows how far behind live it plays); the parts of the last two and of the
//! open segment (`#EXT-X-PART`), a `#EXT-X-PRELOAD-HINT` for the next part.
//! `?_HLS_msn=M[&_HLS_part=P]` is a blocking reload: the answer waits until segment M
//! (part P) is listed, up to three target durations.
//! `GET /hls/{channel}/plain.m3u8` — the same segments as a plain live playlist (RFC
//! 8216, no parts, no blocking reloads): for players, CDNs and P2P loaders that share
//! whole segments (p2p-media-loader) and trip over LL-HLS's tags or its `_HLS_msn` query.
//! `GET /hls/{channel}/{n}.ts` — segment `n` while it is listed, and after it leaves
//! the playlist for its own duration plus the playlist's (RFC 8216 §6.2.2: a player
//! that loaded the playlist just before may still ask for it); 404 after that.
//! `GET /hls/{channel}/{n}.{k}.ts` — part `k` of segment `n`, as long as its segment
//! is served; the hinted next part is answered when it exists (the request waits, as
//! for a blocking reload).
//!
//! Nothing is copied to serve: a part is its pieces' payloads (slices of the pieces'
//! buffers), and a segment is sent as its parts back to back. A seeder's parts and
//! segments are also spooled ([`httpkit::spool`]), so that its connections send them
//! with `sendfile` instead of copying them into every socket: each complete part and
//! each complete segment is copied once into a buffer of its own, written to the
//! segment's unnamed file from a page of its own — one `sendfile` from whole pages per
//! request, as nginx does from a file per part. `shoal bench seeder` (runs on one
//! machine, Zen 4): 0.56–0.64 of nginx's bytes per CPU-second with each piece spooled
//! where it fell, 0.67–0.70 with parts from a page of their own, 0.82 with one buffer
//! per part and per segment.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use httpkit::{Body, Spool, SpoolIndex};
use hyper::{Response, StatusCode};
use swarm::piece::{Piece, PieceFlags};
use tokio::sync::watch;

/// Complete segments listed in the playlist.
pub const WINDOW: usize = 6;

/// Shoal's tag before each segment in the playlist: the sequence numbers of its pieces
/// (`FIRST`, and `COUNT` once complete), so a page's peer can answer a part or a
/// segment from the pieces it holds. Players ignore tags they do not know (RFC 8216
/// §4.1).
pub const PIECES_TAG: &str = "#EXT-X-SHOAL-PIECES";

/// Pieces per LL-HLS part: ~400 ms parts at ingest's usual 50 ms pieces (320 ms at 25
/// fps, a piece a frame). A part is what a player asks for and a blocking playlist
/// reload waits for, and hls.js's work per reload costs a page more CPU than the video:
/// 8 HLS pages took 13.8 CPU-s per page-minute with 4-piece parts and 9.7 with 8, and
/// played closer to live with fewer stalls (docs/measurements.md).
pub const PART_PIECES: usize = 8;

/// Complete segments whose parts are still listed (and served).
const PART_SEGMENTS: usize = 2;

/// One part: a piece's payload and how long it plays.
#[derive(Debug, Clone)]
struct Part {
    duration_us: u64,
    data: Bytes,
}

/// One segment: its number, duration and parts (its bytes are theirs, in order).
#[derive(Debug)]
struct Segment {
    n: u64,
    /// The sequence number of its first piece (part `k` is piece `first_seq + k`).
    first_seq: u64,
    /// Ingest's clock at its first piece (Unix µs): `#EXT-X-PROGRAM-DATE-TIME`.
    start_us: u64,
    duration_us: u64,
    parts: Vec<Part>,
    /// Whether its parts are listed (and served one by one): the newest
    /// [`PART_SEGMENTS`] only.
    parts_listed: bool,
    /// Its LL-HLS parts, each in one spooled buffer (a seeder's).
    part_bufs: Vec<Option<Bytes>>,
    /// The spool file holding `part_bufs` and `whole`, while it is served.
    _spool: Option<Spool>,
    /// Its bytes in one spooled buffer (a seeder's): a segment request is one `sendfile`.
    whole: Option<Bytes>,
    /// Once out of the playlist: served until ingest's clock passes this (Unix µs).
    expires_us: Option<u64>,
    /// Listed after `#EXT-X-DISCONTINUITY` ([`Open::discontinuity`]).
    discontinuity: bool,
}

/// The segment being filled.
#[derive(Debug)]
struct Open {
    start_us: u64,
    first_seq: u64,
    /// Complete parts.
    parts: Vec<Part>,
    /// Spooled: each complete LL-HLS part in one buffer ([`spool_whole`]).
    part_bufs: Vec<Option<Bytes>>,
    /// The newest piece: a part once the next piece gives its duration.
    pending: (u64, Bytes),
    spool: Option<Spool>,
    /// It begins a new timeline (its first piece is flagged `DISCONTINUITY`: a new
    /// epoch) or a new layout (its PMT's version differs from the segment before's:
    /// another codec, a track added or dropped), after an earlier segment: players must
    /// reset their decoders and time (RFC 8216 §4.3.2.3).
    discontinuity: bool,
}

/// Segments of one channel, fed with verified pieces in sequence order.
#[derive(Debug)]
pub struct Hls {
    /// Where its files are: `/hls/{channel}` on a seeder, the root on a viewer.
    prefix: String,
    inner: Mutex<Inner>,
    /// Bumped at every change, for requests waiting on a part.
    changed: watch::Sender<u64>,
    /// Where parts are spooled (a seeder's); `None` serves them by copying.
    spool: Option<SpoolIndex>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Complete segments: the listed ones (the last [`WINDOW`]) after those still
    /// served though no longer listed.
    done: VecDeque<Segment>,
    open: Option<Open>,
    next_n: u64,
    /// The last sequence number taken: pieces must follow it (a gap ends the segment).
    last_seq: Option<u64>,
    /// A piece's usual duration, µs: `PART-TARGET` is [`Inner::part_pieces`] of them.
    piece_us: u64,
    /// Pieces per part (the last part of a segment may have fewer).
    part_pieces: usize,
    /// The playlist as last rendered; cleared by every change. Every client at the live
    /// edge asks for the same one (blocking reloads wake together): it is made once.
    rendered: Option<Bytes>,
    /// The plain playlist as last rendered (cleared with [`Inner::rendered`]).
    rendered_plain: Option<Bytes>,
    /// A spool could not be made (logged once; parts are then served by copying).
    spool_failed: bool,
    /// The newest segment's PMT version (its layout), once one had tables.
    layout: Option<u8>,
    /// Discontinuities that have left the playlist: `#EXT-X-DISCONTINUITY-SEQUENCE`.
    discontinuity_seq: u64,
}

impl Inner {
    /// (segment number, complete parts) of the open segment, if any.
    fn open_parts(&self) -> Option<(u64, usize)> {
        self.open.as_ref().map(|o| (self.next_n, o.parts.len() / self.part_pieces))
    }

    /// Whether segment `msn` (with at least `part + 1` parts, if given) is listed.
    fn has(&self, msn: u64, part: Option<usize>) -> bool {
        match (self.open_parts(), part) {
            (Some((n, parts)), Some(p)) if n == msn => parts > p,
            // Past it: complete (or cut short by a gap, which no wait would mend).
            (Some((n, _)), _) if n > msn => true,
            _ => self.done.back().is_some_and(|s| s.n >= msn),
        }
    }

    /// The segments in the playlist.
    fn listed(&self) -> impl Iterator<Item = &Segment> {
        self.done.iter().skip(self.done.len().saturating_sub(WINDOW))
    }

    /// The playlist's target duration, s. Each listed segment's duration rounded to the
    /// nearest second is at most the target (RFC 8216 §4.3.3.1): a segment of 1.02 s
    /// does not make it 2 (which hls.js takes as the room it leaves for stalls).
    fn target_s(&self) -> u64 {
        self.listed().map(|s| (s.duration_us + 500_000) / 1_000_000).max().unwrap_or(1).max(1)
    }
}

impl Hls {
    /// A seeder's: `/hls/{channel}/live.m3u8`, its parts spooled for many clients
    /// (parts of [`PART_PIECES`]).
    pub fn new(channel: &str) -> Self {
        Self::with_prefix(format!("/hls/{channel}"), Some(SpoolIndex::new()))
    }

    /// A viewer's: `/live.m3u8` beside its `/live.ts` (a few local players: not spooled).
    pub fn at_root() -> Self {
        Self::with_prefix(String::new(), None)
    }

    fn with_prefix(prefix: String, spool: Option<SpoolIndex>) -> Self {
        let inner = Inner { part_pieces: PART_PIECES, ..Inner::default() };
        Hls { prefix, inner: Mutex::new(inner), changed: watch::channel(0).0, spool }
    }

    /// The same with `n` pieces to a part (at least 1).
    pub fn with_part_pieces(self, n: usize) -> Self {
        self.lock().part_pieces = n.max(1);
        self
    }

    /// The channel whose files these are (`""` for a viewer's, at the root).
    pub fn channel(&self) -> &str {
        self.prefix.strip_prefix("/hls/").unwrap_or("")
    }

    /// The same, its parts served by copying them into each socket (to measure the
    /// difference).
    pub fn without_spool(mut self) -> Self {
        self.spool = None;
        self
    }

    /// Where its parts are spooled, for the server that sends them
    /// ([`httpkit::ServerConfig::spool`]).
    pub fn spool_index(&self) -> Option<SpoolIndex> {
        self.spool.clone()
    }

    /// A spool for a new segment (none without an index, or if the system has no
    /// file to give: then its parts are served by copying, as on a viewer).
    fn new_spool(&self, i: &mut Inner) -> Option<Spool> {
        let index = self.spool.as_ref()?;
        match Spool::new(index) {
            Ok(s) => Some(s),
            Err(e) => {
                if !std::mem::replace(&mut i.spool_failed, true) {
                    tracing::warn!(error = %e, "HLS: no spool file for a segment; its parts are sent by copying");
                }
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A verified piece. Out-of-order or missing pieces drop the open segment (a
    /// segment with a hole would not decode); the next segment start begins a new one.
    pub fn push(&self, piece: &Piece) {
        {
            let mut i = self.lock();
            let follows = i.last_seq.is_none_or(|l| piece.seq() == l + 1);
            if i.last_seq.is_some_and(|l| piece.seq() <= l) {
                return; // old or duplicate
            }
            i.last_seq = Some(piece.seq());
            i.rendered = None;
            i.rendered_plain = None;
            let ts = piece.timestamp_us();
            let per = i.part_pieces.max(1);
            if let Some(mut o) = i.open.take() {
                // The previous piece is a complete part now that this one gives its end;
                // after a gap (pieces that never came, or the session ended) it is given
                // the usual piece's length.
                let (at, data) = std::mem::take(&mut o.pending);
                let duration_us = if follows { ts.saturating_sub(at).max(1) } else { i.piece_us.max(1) };
                o.parts.push(Part { duration_us, data });
                if o.parts.len() % per == 0
                    && let Some(spool) = o.spool.as_mut()
                {
                    o.part_bufs.push(spool_whole(spool, &o.parts[o.parts.len() - per..]));
                }
                if follows {
                    // The usual piece: a running mean that one late piece (an encoder
                    // that stalled) moves little, so that the playlist's part target and
                    // hold-back (which players take as their latency) stay put.
                    let d = duration_us.min(i.piece_us.saturating_mul(4).max(1));
                    i.piece_us = if i.piece_us == 0 { duration_us } else { (i.piece_us * 15 + d) / 16 };
                }
                if follows && !piece.flags().contains(PieceFlags::SEGMENT_START) {
                    o.pending = (ts, piece.payload().clone());
                    i.open = Some(o);
                } else {
                    // A segment start, or a gap: the segment ends with what it has. (Its
                    // number keeps the parts players may have fetched: a segment's number
                    // never comes back with other media.)
                    let end_us = at + duration_us;
                    finish(&mut i, o, end_us);
                }
            }
            if piece.flags().contains(PieceFlags::SEGMENT_START) {
                let spool = self.new_spool(&mut i);
                let layout = swarm::ts_out::pmt_version(piece.payload());
                let earlier = i.next_n > 0 || i.layout.is_some();
                let new_layout = layout.is_some() && i.layout.is_some() && layout != i.layout;
                let discontinuity = earlier && (piece.flags().contains(PieceFlags::DISCONTINUITY) || new_layout);
                i.layout = layout.or(i.layout);
                i.open = Some(Open {
                    start_us: ts,
                    first_seq: piece.seq(),
                    parts: Vec::new(),
                    part_bufs: Vec::new(),
                    pending: (ts, piece.payload().clone()),
                    spool,
                    discontinuity,
                });
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// The playlist, or `None` before the first segment is complete.
    pub fn playlist(&self) -> Option<Bytes> {
        self.rendered(false)
    }

    /// The plain playlist (complete segments only), or `None` before the first.
    pub fn plain_playlist(&self) -> Option<Bytes> {
        self.rendered(true)
    }

    /// The LL-HLS or the `plain` playlist, rendered once per change.
    fn rendered(&self, plain: bool) -> Option<Bytes> {
        let mut i = self.lock();
        let cached = if plain { &i.rendered_plain } else { &i.rendered };
        if let Some(p) = cached {
            return Some(p.clone());
        }
        let p = render(&i, plain).map(Bytes::from);
        *(if plain { &mut i.rendered_plain } else { &mut i.rendered }) = p.clone();
        p
    }
}

/// `parts`' bytes in one buffer, written to `spool` from a page of its own (a part
/// or segment request is then one `sendfile` from whole pages, as from a file of its
/// own); `None` if the spool could not take it (it is then sent by copying).
/// Lists the open segment `o`, ended at `end_us` (ingest's clock), as complete; the one
/// that leaves the playlist stays served for a while, and older ones go.
fn finish(i: &mut Inner, mut o: Open, end_us: u64) {
    let n = i.next_n;
    i.next_n += 1;
    let duration_us = end_us.saturating_sub(o.start_us).max(1);
    // The segment's last part, if short, and the whole segment: each in one spooled
    // buffer too.
    let per = i.part_pieces.max(1);
    let rest = o.parts.len() % per;
    if rest > 0
        && let Some(spool) = o.spool.as_mut()
    {
        o.part_bufs.push(spool_whole(spool, &o.parts[o.parts.len() - rest..]));
    }
    let whole = o.spool.as_mut().and_then(|spool| spool_whole(spool, &o.parts));
    i.done.push_back(Segment {
        n,
        first_seq: o.first_seq,
        start_us: o.start_us,
        duration_us,
        parts: o.parts,
        parts_listed: true,
        part_bufs: o.part_bufs,
        _spool: o.spool,
        whole,
        expires_us: None,
        discontinuity: o.discontinuity,
    });
    // The one that left the playlist stays for its duration plus the playlist's as it
    // was listed (RFC 8216 §6.2.2), on ingest's clock.
    let listed_us: u64 = i.listed().map(|s| s.duration_us).sum();
    let delisted = i.done.len().checked_sub(WINDOW + 1);
    let mut left_discontinuity = false;
    if let Some(s) = delisted.and_then(|d| i.done.get_mut(d)).filter(|s| s.expires_us.is_none()) {
        s.expires_us = Some(end_us.saturating_add(s.duration_us + listed_us));
        left_discontinuity = s.discontinuity;
    }
    i.discontinuity_seq += u64::from(left_discontinuity);
    while i.done.front().is_some_and(|s| s.expires_us.is_some_and(|e| e <= end_us)) {
        i.done.pop_front();
    }
    let keep_from = i.done.len().saturating_sub(PART_SEGMENTS);
    for s in i.done.iter_mut().take(keep_from) {
        s.parts_listed = false;
    }
}

fn spool_whole(spool: &mut Spool, parts: &[Part]) -> Option<Bytes> {
    let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
    for p in parts {
        bytes.extend_from_slice(&p.data);
    }
    let whole = Bytes::from(bytes);
    spool.align();
    match spool.put(&whole) {
        Ok(()) => Some(whole),
        Err(e) => {
            tracing::debug!(error = %e, "HLS: not spooled; it is sent by copying");
            None
        }
    }
}

/// The playlist of what `i` holds: LL-HLS, or `plain` (segments only).
fn render(i: &Inner, plain: bool) -> Option<String> {
    let first = i.listed().next()?;
    let target = i.target_s();
    let per = i.part_pieces;
    // Rounded up to 10 ms. A part after an encoder's stall is longer than this, which
    // players take in their stride; a target raised by every such part would hold them
    // seconds behind live for good.
    let part_target = ((i.piece_us.max(1) * per as u64).div_ceil(10_000) * 10_000) as f64 / 1e6;
    let mut out = if plain {
        format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n", first.n)
    } else {
        format!(
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-PART-INF:PART-TARGET={part_target:.3}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            part_target * 3.0,
            first.n
        )
    };
    if i.discontinuity_seq > 0 {
        out.push_str(&format!("#EXT-X-DISCONTINUITY-SEQUENCE:{}\n", i.discontinuity_seq));
    }
    // A part is `per` pieces; `pieces` of an open segment list only whole parts.
    let part_lines = |out: &mut String, n: u64, pieces: &[Part]| {
        for (k, p) in pieces.chunks(per).enumerate() {
            let independent = if k == 0 { ",INDEPENDENT=YES" } else { "" };
            let duration_us: u64 = p.iter().map(|p| p.duration_us).sum();
            out.push_str(&format!(
                "#EXT-X-PART:DURATION={:.3},URI=\"{n}.{k}.ts\"{independent}\n",
                duration_us as f64 / 1e6
            ));
        }
    };
    let mut expected_start = None;
    for s in i.listed() {
        if s.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        // Wall-clock time of the segment (ingest signed its first piece then): on
        // the first, and after any gap in time (a new publish session).
        if expected_start.is_none_or(|e: u64| s.start_us.abs_diff(e) > 500_000) {
            out.push_str(&format!("#EXT-X-PROGRAM-DATE-TIME:{}\n", iso8601(s.start_us)));
        }
        expected_start = Some(s.start_us + s.duration_us);
        if !plain {
            out.push_str(&format!("{PIECES_TAG}:FIRST={},COUNT={},PART={per}\n", s.first_seq, s.parts.len()));
            if s.parts_listed {
                part_lines(&mut out, s.n, &s.parts);
            }
        }
        out.push_str(&format!("#EXTINF:{:.3},\n{}.ts\n", s.duration_us as f64 / 1e6, s.n));
    }
    if let Some(o) = i.open.as_ref().filter(|_| !plain) {
        if o.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        out.push_str(&format!("{PIECES_TAG}:FIRST={},PART={per}\n", o.first_seq));
        let whole = o.parts.len() / per;
        part_lines(&mut out, i.next_n, &o.parts[..whole * per]);
        out.push_str(&format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}.{whole}.ts\"\n", i.next_n));
    }
    Some(out)
}

impl Hls {
    /// Segment `n`, while served: its parts' bytes, in order (a seeder's in one buffer).
    pub fn segment(&self, n: u64) -> Option<Vec<Bytes>> {
        self.lock().done.iter().find(|s| s.n == n).map(|s| match &s.whole {
            Some(whole) => vec![whole.clone()],
            None => s.parts.iter().map(|p| p.data.clone()).collect(),
        })
    }

    /// Part `k` of segment `n` (its pieces' payloads), while its segment is served (a
    /// part leaves the playlist before its segment does; a player that saw it listed
    /// may still ask). An open segment's part exists once it is whole.
    pub fn part(&self, n: u64, k: usize) -> Option<Vec<Bytes>> {
        let i = self.lock();
        let per = i.part_pieces;
        let chunk = |pieces: &[Part], bufs: &[Option<Bytes>], whole_only: bool| {
            let c = pieces.chunks(per).nth(k)?;
            (!whole_only || c.len() == per).then(|| match bufs.get(k) {
                Some(Some(b)) => vec![b.clone()],
                _ => c.iter().map(|p| p.data.clone()).collect(),
            })
        };
        if let Some(o) = i.open.as_ref().filter(|_| i.next_n == n) {
            return chunk(&o.parts, &o.part_bufs, true);
        }
        i.done.iter().find(|s| s.n == n).and_then(|s| chunk(&s.parts, &s.part_bufs, false))
    }

    /// Waits (up to `limit`) until `ready` holds; whether it did.
    async fn wait_for(&self, limit: Duration, ready: impl Fn(&Inner) -> bool) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if ready(&self.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return ready(&self.lock());
            }
        }
    }

    /// Three target durations (the playlist's): how long a blocking request may wait.
    fn block_limit(&self) -> Duration {
        Duration::from_secs(3 * self.lock().target_s())
    }

    /// [`Hls::answer`], holding blocking reloads (`_HLS_msn`, `_HLS_part` in `query`) and
    /// requests for the hinted next part until they can be answered.
    pub async fn answer_blocking(&self, path: &str, query: Option<&str>) -> Option<Response<Body>> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        if rest == "/live.m3u8" {
            let q = |name: &str| {
                query?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok())
            };
            if let Some(msn) = q("_HLS_msn") {
                let part = q("_HLS_part").map(|p| p as usize);
                if msn > self.lock().next_n + 2 {
                    // RFC 8216bis §6.2.5.2: more than two segments ahead is a bad request.
                    return Some(answer(StatusCode::BAD_REQUEST, TEXT, Body::full("_HLS_msn too far ahead\n")));
                }
                if !self.wait_for(self.block_limit(), |i| i.has(msn, part)).await {
                    return Some(answer(StatusCode::SERVICE_UNAVAILABLE, TEXT, Body::full("not yet\n")));
                }
            }
        } else if let Some((n, k)) = parse_part(rest) {
            // The hinted part (the open segment's next) is worth waiting for.
            let hinted = self.lock().open_parts().is_some_and(|(open, parts)| open == n && parts == k);
            if hinted {
                self.wait_for(self.block_limit(), |i| i.has(n, Some(k))).await;
            }
        }
        self.answer(path)
    }
}

/// Unix µs as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic Gregorian, UTC).
fn iso8601(unix_us: u64) -> String {
    let secs = unix_us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (H. Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        unix_us % 1_000_000 / 1_000
    )
}

/// `/{n}.{k}.ts` → (n, k).
fn parse_part(rest: &str) -> Option<(u64, usize)> {
    let (n, k) = rest.strip_prefix('/')?.strip_suffix(".ts")?.split_once('.')?;
    Some((n.parse().ok()?, k.parse().ok()?))
}

const TEXT: &str = "text/plain; charset=utf-8";

/// An HLS answer: any origin may fetch it (players in other sites' pages), nobody caches it.
fn answer(status: StatusCode, ctype: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    // Typed names: a name given as a string is parsed again for every answer
    // (`HdrName::from_static`: 0.6 % of the origin's samples under `shoal bench seeder`).
    h.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, hyper::header::HeaderValue::from_static("*"));
    h.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-cache"));
    r
}

impl Hls {
    /// The answer for `path` if it is one of this playlist's files.
    pub fn answer(&self, path: &str) -> Option<Response<Body>> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        Some(match rest {
            playlist @ ("/live.m3u8" | "/plain.m3u8") => match self.rendered(playlist == "/plain.m3u8") {
                Some(p) => answer(StatusCode::OK, "application/vnd.apple.mpegurl", Body::full(p)),
                None => answer(StatusCode::SERVICE_UNAVAILABLE, TEXT, Body::full("no complete segment yet\n")),
            },
            part if parse_part(part).is_some() => match parse_part(part).and_then(|(n, k)| self.part(n, k)) {
                Some(b) => answer(StatusCode::OK, "video/mp2t", Body::chunks(b)),
                None => answer(StatusCode::NOT_FOUND, TEXT, Body::full("part not served (gone or not yet made)\n")),
            },
            seg => match seg.strip_prefix('/').and_then(|s| s.strip_suffix(".ts")).and_then(|n| n.parse().ok()) {
                Some(n) => match self.segment(n) {
                    Some(parts) => answer(StatusCode::OK, "video/mp2t", Body::chunks(parts)),
                    None => {
                        answer(StatusCode::NOT_FOUND, TEXT, Body::full("segment not served (gone or not yet made)\n"))
                    }
                },
                None => return None,
            },
        })
    }

    /// [`Hls::answer_blocking`], or 404 naming the playlist.
    pub async fn answer_or_404(&self, path: &str, query: Option<&str>) -> Response<Body> {
        match self.answer_blocking(path, query).await {
            Some(r) => r,
            None => answer(StatusCode::NOT_FOUND, TEXT, Body::full(format!("try {}/live.m3u8\n", self.prefix))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use swarm::piece::{ChannelKeypair, filler_payload};

    fn text(playlist: Option<Bytes>) -> String {
        String::from_utf8(playlist.expect("a playlist").to_vec()).expect("playlists are UTF-8")
    }

    fn len(parts: &[Bytes]) -> usize {
        parts.iter().map(Bytes::len).sum()
    }

    async fn body(r: Response<Body>) -> Bytes {
        let mut out = Vec::new();
        let mut b = r.into_body();
        while let Some(Ok(f)) =
            std::future::poll_fn(|cx| hyper::body::Body::poll_frame(std::pin::Pin::new(&mut b), cx)).await
        {
            out.extend_from_slice(&f.into_data().unwrap_or_default());
        }
        Bytes::from(out)
    }

    fn piece(seq: u64, start: bool) -> Piece {
        let key = ChannelKeypair::from_secret_bytes(&[3; 32]);
        let flags = if start { PieceFlags::SEGMENT_START } else { PieceFlags::NONE };
        key.sign_piece(seq, 1_000_000 + seq * 50_000, flags, filler_payload(2, seq)).unwrap()
    }

    /// A segment start's payload: a PAT (program 1 at PID 0x1000) and a PMT of `version`.
    fn tables(version: u8) -> Bytes {
        let mut out = Vec::new();
        for (pid, section) in [
            (0x0000u16, vec![0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00]),
            (0x1000, vec![0x02, 0xb0, 0x12, 0x00, 0x01, 0xc1 | (version << 1), 0x00, 0x00, 0xe1, 0x00, 0xf0, 0x00]),
        ] {
            let mut p = vec![0xff; 188];
            p[..5].copy_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0x00]);
            p[5..5 + section.len()].copy_from_slice(&section);
            out.extend_from_slice(&p);
        }
        Bytes::from(out)
    }

    #[test]
    fn a_new_timeline_or_layout_is_a_discontinuity_counted_once_it_leaves() {
        let key = ChannelKeypair::from_secret_bytes(&[3; 32]);
        let h = Hls::new("demo");
        // (first number, flagged DISCONTINUITY, PMT version) of 1 s segments.
        let key = &key;
        let segments = |from: u64, flagged: bool, version: u8| {
            (from..from + 20).map(move |seq| {
                let (flags, payload) = if seq == from {
                    let start = PieceFlags::SEGMENT_START;
                    (if flagged { start.union(PieceFlags::DISCONTINUITY) } else { start }, tables(version))
                } else {
                    (PieceFlags::NONE, filler_payload(2, seq))
                };
                key.sign_piece(seq, 1_000_000 + seq * 50_000, flags, payload).unwrap()
            })
        };
        // The first segment this node sees is flagged (it joined after a restart): no tag.
        let plan = [(0, true, 5), (20, false, 5), (40, true, 5), (60, false, 4), (80, false, 4), (100, false, 4)];
        for (from, flagged, version) in plan {
            segments(from, flagged, version).for_each(|p| h.push(&p));
        }
        let p = text(h.playlist());
        assert_eq!(p.matches("#EXT-X-DISCONTINUITY\n").count(), 2, "{p}");
        for n in [2, 3] {
            let before = p.split(&format!("\n{n}.ts\n")).next().unwrap();
            let since_last = before.rsplit(".ts\n").next().unwrap();
            assert!(since_last.contains("#EXT-X-DISCONTINUITY\n"), "segment {n} follows a tag: {p}");
        }
        assert!(!p.contains("DISCONTINUITY-SEQUENCE"), "{p}");
        let plain = text(h.plain_playlist());
        assert_eq!(plain.matches("#EXT-X-DISCONTINUITY\n").count(), 2, "{plain}");
        // Segments 2 and 3 leave the playlist one by one: the count follows them.
        let mut from = 120;
        let mut seen = Vec::new();
        while seen.last() != Some(&2) {
            segments(from, false, 4).for_each(|p| h.push(&p));
            from += 20;
            let p = text(h.playlist());
            let left: u64 = p
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
                .map_or(0, |n| n.parse().unwrap());
            assert_eq!(p.matches("#EXT-X-DISCONTINUITY\n").count() as u64, 2 - left, "{p}");
            if seen.last() != Some(&left) {
                seen.push(left);
            }
        }
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn segments_cut_at_segment_starts_and_gaps_drop_a_segment() {
        let h = Hls::new("demo");
        assert_eq!(h.playlist(), None);
        for seq in 0..100 {
            h.push(&piece(seq, seq % 20 == 0));
        }
        let p = text(h.playlist());
        assert!(p.starts_with("#EXTM3U\n"), "{p}");
        assert!(p.contains("#EXT-X-TARGETDURATION:1\n"), "{p}");
        assert!(p.contains("#EXTINF:1.000,\n0.ts\n") && p.contains("3.ts\n") && !p.contains("\n4.ts"), "{p}");
        assert_eq!(len(&h.segment(0).unwrap()), 20 * 2 * 188);
        // A hole: the open segment (80..99, whose parts players may have fetched) ends
        // with what it has; pieces up to the next start are not listed; that start
        // begins the next segment.
        let (parts_before, listed_before) = (h.part(4, 0).unwrap(), text(h.playlist()));
        assert!(listed_before.contains("URI=\"4.0.ts\""), "{listed_before}");
        h.push(&piece(102, false));
        let p = text(h.playlist());
        assert!(p.contains("#EXTINF:1.000,\n4.ts\n"), "80..99 ended at the hole: {p}");
        assert_eq!(h.part(4, 0).unwrap(), parts_before, "segment 4 keeps its media");
        assert_eq!(len(&h.segment(4).unwrap()), 20 * 2 * 188);
        for seq in 103..141 {
            h.push(&piece(seq, seq % 20 == 0));
        }
        let p = text(h.playlist());
        assert!(p.contains("\n5.ts\n") && !p.contains("\n6.ts\n"), "the segment 120..140: {p}");
        assert!(h.segment(5).unwrap()[0].starts_with(piece(120, true).payload()), "segment 5 is 120..140");
        assert_eq!(len(&h.segment(5).unwrap()), 20 * 2 * 188);
        h.push(&piece(5, true));
        assert_eq!(h.segment(6), None, "an old piece changes nothing");
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let route = |h: &Hls, path: &str| rt.block_on(h.answer_or_404(path, None));
        assert_eq!(route(&h, "/hls/demo/../x").status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&h, "/hls/other/live.m3u8").status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&h, "/hls/demo/99.ts").status(), StatusCode::NOT_FOUND);
        assert_eq!(route(&h, "/hls/demo/live.m3u8").status(), StatusCode::OK);
        let seg = route(&h, "/hls/demo/5.ts");
        assert_eq!(seg.status(), StatusCode::OK);
        assert_eq!(hyper::body::Body::size_hint(seg.body()).exact(), Some(20 * 2 * 188), "sent as its parts");
    }

    #[test]
    fn parts_are_listed_as_they_complete_and_blocking_reloads_wait_for_them() {
        let h = Arc::new(Hls::new("demo").with_part_pieces(1));
        for seq in 0..45 {
            h.push(&piece(seq, seq % 20 == 0));
        }
        // Segments 0 and 1 complete (pieces 0..40), the open one has pieces 40..45:
        // four complete parts and the fifth hinted.
        let p = text(h.playlist());
        assert!(p.contains("#EXT-X-VERSION:9\n"), "{p}");
        assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=0.050\n"), "{p}");
        assert!(p.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.150\n"), "{p}");
        assert!(p.contains("#EXT-X-PART:DURATION=0.050,URI=\"0.0.ts\",INDEPENDENT=YES\n"), "{p}");
        assert!(p.contains("#EXT-X-PART:DURATION=0.050,URI=\"2.3.ts\"\n") && !p.contains("\"2.4.ts\",D"), "{p}");
        assert!(p.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"2.4.ts\"\n"), "{p}");
        // Each segment says which pieces it is made of (a page answers parts from them).
        assert!(
            p.contains("#EXT-X-SHOAL-PIECES:FIRST=20,COUNT=20,PART=1\n#EXT-X-PART:DURATION=0.050,URI=\"1.0.ts\""),
            "{p}"
        );
        assert!(p.contains("#EXT-X-SHOAL-PIECES:FIRST=40,PART=1\n#EXT-X-PART:DURATION=0.050,URI=\"2.0.ts\""), "{p}");
        assert_eq!(h.part(2, 0).unwrap(), vec![piece(40, true).payload().clone()], "a part is the piece's payload");
        assert_eq!(h.part(2, 4), None, "not complete yet");
        // The parts of a segment concatenate to the segment.
        let parts: Vec<Bytes> = (0..20).flat_map(|k| h.part(1, k).unwrap()).collect();
        assert_eq!(parts.concat(), h.segment(1).unwrap().concat());

        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            // A blocking reload for part 2.5 and a request for the hinted part wait
            // until the pieces arrive; then both are answered.
            let (h1, h2) = (h.clone(), h.clone());
            let reload =
                tokio::spawn(
                    async move { h1.answer_blocking("/hls/demo/live.m3u8", Some("_HLS_msn=2&_HLS_part=5")).await },
                );
            let hinted = tokio::spawn(async move { h2.answer_blocking("/hls/demo/2.4.ts", None).await });
            tokio::task::yield_now().await;
            assert!(!reload.is_finished() && !hinted.is_finished(), "both wait for the parts");
            for seq in 45..47 {
                h.push(&piece(seq, false));
            }
            let r = reload.await.unwrap().unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert!(String::from_utf8_lossy(&body(r).await).contains("URI=\"2.5.ts\""));
            let r = hinted.await.unwrap().unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(body(r).await, piece(44, false).payload().clone());
            // Too far ahead is refused at once.
            let r = h.answer_blocking("/hls/demo/live.m3u8", Some("_HLS_msn=9")).await.unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        });
    }

    /// RFC 8216 §6.2.2. Before, a segment answered 404 the moment it left the
    /// playlist, and an hls.js page that started at the oldest listed one could fail.
    #[test]
    fn a_segment_out_of_the_playlist_is_served_for_its_duration_plus_the_playlist_s() {
        let h = Hls::new("demo");
        // 1 s segments: 0..=6 complete (pieces 0..140), 7 open. 0 left the playlist
        // when 6 completed, at 8.0 s (ingest's clock starts at 1 s, a piece every
        // 50 ms): it stays until 8.0 + 1 + 6 = 15.0 s.
        for seq in 0..141 {
            h.push(&piece(seq, seq % 20 == 0));
        }
        let p = text(h.playlist());
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:1\n") && !p.contains("\n0.ts"), "0 is not listed: {p}");
        assert_eq!(len(&h.segment(0).unwrap()), 20 * 2 * 188, "but served");
        assert_eq!(len(&h.part(0, 0).unwrap()), PART_PIECES * 2 * 188, "and so are its parts");
        // The piece at 15.0 s (seq 280) ends it; segment 1 (out at 9.0 s) has until
        // 16.0 s.
        for seq in 141..280 {
            h.push(&piece(seq, seq % 20 == 0));
        }
        assert!(h.segment(0).is_some(), "14.95 s: still served");
        h.push(&piece(280, true));
        assert_eq!(h.segment(0), None, "15.0 s: gone");
        assert_eq!(h.part(0, 0), None);
        assert!(h.segment(1).is_some());
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let r = rt.block_on(h.answer_or_404("/hls/demo/0.ts", None));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // Memory stays bounded: the playlist, and as much again past it.
        assert!(h.lock().done.len() <= 2 * WINDOW + 1, "{} held", h.lock().done.len());
    }

    #[test]
    fn the_plain_playlist_lists_the_same_complete_segments_without_parts_or_blocking() {
        let h = Hls::new("demo");
        for seq in 0..150 {
            h.push(&piece(seq, seq % 20 == 0));
        }
        let (ll, plain) = (text(h.playlist()), text(h.plain_playlist()));
        let segments = |p: &str| {
            p.lines().filter(|l| l.ends_with(".ts") && !l.contains('"')).map(str::to_owned).collect::<Vec<_>>()
        };
        assert_eq!(segments(&plain), segments(&ll), "{plain}");
        assert_eq!(segments(&plain).len(), WINDOW);
        assert!(
            plain.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:1\n"),
            "{plain}"
        );
        assert!(plain.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{plain}");
        for ll_only in ["PART", "SERVER-CONTROL", "PRELOAD-HINT", PIECES_TAG] {
            assert!(!plain.contains(ll_only), "{ll_only} in {plain}");
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let r = rt.block_on(h.answer_or_404("/hls/demo/plain.m3u8", None));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            Hls::new("empty").answer("/hls/empty/plain.m3u8").unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn program_date_time_is_utc_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_795_000_000_123_456), "2026-11-18T11:06:40.123Z");
        let h = Hls::new("demo");
        for seq in 0..45 {
            h.push(&piece(seq, seq % 20 == 0));
        }
        let p = text(h.playlist());
        assert_eq!(p.matches("#EXT-X-PROGRAM-DATE-TIME:").count(), 1, "one, on the first segment: {p}");
        assert!(p.contains("#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:01.000Z\n"), "{p}");
    }

    #[test]
    fn a_part_is_four_pieces_and_only_whole_ones_are_listed_until_the_segment_ends() {
        let h = Hls::new("demo").with_part_pieces(4);
        for seq in 0..47 {
            h.push(&piece(seq, seq % 22 == 0));
        }
        // Segment 1 is pieces 22..44 (22 of them: parts of 4, 4, 4, 4, 4, 2); the open one
        // holds 44..46 complete and 46 pending: no whole part yet, part 0 is hinted.
        let p = text(h.playlist());
        assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=0.200\n"), "{p}");
        assert!(p.contains("#EXT-X-SHOAL-PIECES:FIRST=22,COUNT=22,PART=4\n"), "{p}");
        assert!(
            p.contains("#EXT-X-PART:DURATION=0.200,URI=\"1.4.ts\"\n#EXT-X-PART:DURATION=0.100,URI=\"1.5.ts\"\n"),
            "{p}"
        );
        assert!(
            p.ends_with("#EXT-X-SHOAL-PIECES:FIRST=44,PART=4\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"2.0.ts\"\n"),
            "{p}"
        );
        let payloads = |r: std::ops::Range<u64>| r.map(|s| piece(s, s % 22 == 0).payload().clone()).collect::<Vec<_>>();
        let one = |r: std::ops::Range<u64>| Some(vec![payloads(r).concat().into()]);
        assert_eq!(h.part(1, 5), one(42..44), "the segment's short last part");
        assert_eq!(h.part(2, 0), None, "not whole yet");
        // Spooled: each part, and the whole segment, in one buffer from a page of its
        // own (one `sendfile` from whole pages, as from a file of its own). A viewer's
        // (not spooled) is sent as its pieces' payloads.
        let index = h.spool_index().unwrap();
        for k in 0..6 {
            let part = h.part(1, k).unwrap();
            assert_eq!(part.len(), 1, "part 1.{k}");
            assert_eq!(index.find(&part[0]).unwrap().1 % 4096, 0, "part 1.{k}");
        }
        assert_eq!(h.segment(1), one(22..44));
        assert_eq!(index.find(&h.segment(1).unwrap()[0]).unwrap().1 % 4096, 0);
        let v = Hls::at_root().with_part_pieces(4);
        for seq in 0..47 {
            v.push(&piece(seq, seq % 22 == 0));
        }
        assert_eq!((v.part(1, 5), v.segment(1)), (Some(payloads(42..44)), Some(payloads(22..44))));
        for seq in 47..49 {
            h.push(&piece(seq, false));
        }
        assert_eq!(h.part(2, 0), one(44..48));
        assert!(
            text(h.playlist())
                .ends_with("URI=\"2.0.ts\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"2.1.ts\"\n")
        );
    }
}
