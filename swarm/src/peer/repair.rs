//! Pull repair: which pieces are missing, when to ask, and whom.
//!
//! A piece is known to exist when a later one arrives (sequence numbers are dense) or a
//! neighbour announces it. It is asked for once its parent is late — the substream's
//! usual latency plus two deviations — and no later than `repair_margin` before its
//! playout deadline; at once before playback starts, soon when no parent feeds it.

use std::collections::BTreeMap;

use crate::piece::Piece;
use crate::wire::{MAX_REQUEST_SEQS, Message, Role};

use super::neighbour::Neighbour;
use super::{MS, Micros, NodeId, Peer, Want};

/// How soon a want that found no neighbour to ask is tried again.
const REQUEST_RETRY: Micros = 20 * MS;
/// How long a neighbour that answered `Busy` is left alone, at least.
const BUSY_BACKOFF: Micros = 200 * MS;
/// Least time a request to a neighbour that has never given us a piece waits.
const UNPROVEN_TIMEOUT: Micros = 250 * MS;
/// Before playback starts, only the start point and the few pieces after it are
/// asked for, so that the one piece startup waits for is not queued behind the rest.
const STARTUP_PIECES: u64 = 4;

impl Peer {
    /// Lowest seq a viewer still wants.
    pub(super) fn want_floor(&self) -> Option<u64> {
        self.playout.cursor.or(self.playout.target)
    }

    /// Records that `seq` exists, if a viewer still wants it. Wants stay within one
    /// window above the floor, whatever neighbours claim.
    pub(super) fn add_want(&mut self, now: Micros, seq: u64) {
        let wanted = self.want_floor().is_some_and(|f| seq >= f && seq < f.saturating_add(self.cfg.window_pieces));
        if self.cfg.role == Role::Viewer && wanted && !self.window.contains(seq) {
            self.wants.get_or_insert_with(seq, || Want { heard_at: now, asked: None, asked_at: 0, gave_up_on: None });
        }
    }

    /// Drops the wants `keep` refuses, releasing the request budget they held.
    pub(super) fn retain_wants(&mut self, keep: impl Fn(u64) -> bool) {
        let mut released = Vec::new();
        self.wants.retain(|seq, w| {
            let kept = keep(seq);
            if !kept && let Some((node, _)) = w.asked {
                released.push(node);
            }
            kept
        });
        for node in released {
            if let Some(i) = self.neighbour_idx(node) {
                let n = &mut self.neighbours[i];
                n.requests_out = n.requests_out.saturating_sub(1);
            }
        }
    }

    pub(super) fn on_dont_have(&mut self, idx: usize, seq: u64) {
        let node = self.neighbours[idx].node;
        let n = &mut self.neighbours[idx];
        n.have.remove(seq);
        n.lacks.insert(seq);
        if let Some(w) = self.wants.get_mut(seq)
            && w.asked.is_some_and(|(asked, _)| asked == node)
        {
            w.asked = None;
            n.requests_out = n.requests_out.saturating_sub(1);
        }
    }

    /// `idx` holds `seq` but its uplink is full: ask elsewhere, and not it for a while.
    pub(super) fn on_busy(&mut self, now: Micros, idx: usize, seq: u64) {
        let node = self.neighbours[idx].node;
        let n = &mut self.neighbours[idx];
        n.have.insert(seq);
        n.busy_until = now + BUSY_BACKOFF.max(n.busy());
        if let Some(w) = self.wants.get_mut(seq)
            && w.asked.is_some_and(|(asked, _)| asked == node)
        {
            w.asked = None;
            n.requests_out = n.requests_out.saturating_sub(1);
        }
    }

    /// When the next want becomes ready or expires.
    pub(super) fn next_want_time(&self) -> Option<Micros> {
        // A want that was ready at the last pass but found no neighbour to ask is
        // retried a little later, not in a busy loop.
        let retry = self.last_request_pass.map_or(0, |t| t + REQUEST_RETRY);
        self.wants
            .iter()
            .map(|(seq, w)| match w.asked {
                Some((_, expires)) => expires.min(self.hedge_at(seq, w).unwrap_or(Micros::MAX)),
                None => self.ready_at(seq, w).max(retry),
            })
            .min()
    }

    /// When a missing piece should be pulled.
    fn ready_at(&self, seq: u64, w: &Want) -> Micros {
        if self.playout.cursor.is_none() {
            return w.heard_at;
        }
        let earliest = w.heard_at + self.cfg.repair_wait_min;
        let b = &self.branches[self.substream(seq)];
        if b.parent.is_none() {
            return earliest;
        }
        let Some(ts) = self.estimate_ts(seq) else { return w.heard_at + self.cfg.repair_wait };
        let expected = match b.latency {
            Some(e) => ts + (e.mean + 2.0 * e.dev) as Micros + self.cfg.repair_wait_min,
            None => w.heard_at + self.cfg.repair_wait,
        };
        let latest = (ts + self.playout.offset).saturating_sub(self.cfg.repair_margin);
        earliest.max(expected.min(latest))
    }

    /// Wants the pieces of substreams that no parent feeds as soon as the neighbour
    /// that gets them soonest should hold them, by the clock. Without this, such a
    /// piece is first known to exist when a later piece of another substream arrives:
    /// a whole push latency after a neighbour holds it, and pulled only then — the
    /// late pieces of an audience whose upload can't push every substream to everyone
    /// (docs/measurements.md, `browsers`). Only while the stream flows (a paused feed
    /// makes no pieces), and at most one round of substreams past the newest piece.
    pub(super) fn expect_orphaned(&mut self, now: Micros) {
        self.next_expected = None;
        if self.cfg.role != Role::Viewer || self.playout.cursor.is_none() {
            return;
        }
        let (Some((anchor_seq, anchor_ts, interval)), Some(newest)) = (self.ts_anchor, self.newest) else { return };
        let n_sub = self.branches.len() as u64;
        // Flowing: a piece reached us within one round of the substreams (when every
        // substream is orphaned, as when the seed feeding them all goes, the gaps
        // between pieces that do arrive tell what exists).
        if interval == 0 || now.saturating_sub(self.last_accept) > n_sub * interval {
            return;
        }
        let cap = newest.saturating_add(n_sub);
        let mut next: Option<Micros> = None;
        for s in 0..self.branches.len() {
            if self.branches[s].parent.is_some() {
                continue;
            }
            // Seeds hold every piece at once but are asked last: the viewers' latency.
            // A latency is a claim: one whose requests went unanswered (a liar claiming
            // 1 ms) no longer sets the pace.
            let Some(soonest) =
                self.neighbours.iter().filter(|n| !n.is_seed() && n.failures == 0).filter_map(|n| n.latency(s)).min()
            else {
                continue;
            };
            // The first piece of `s` past the newest, then every n_sub-th.
            let first = newest + 1 + (s as u64 + n_sub - (newest + 1) % n_sub) % n_sub;
            let mut seq = first;
            while seq <= cap {
                let due = anchor_ts
                    .saturating_add(seq.saturating_sub(anchor_seq).saturating_mul(interval))
                    .saturating_add(soonest);
                if due > now {
                    next = Some(next.map_or(due, |t: Micros| t.min(due)));
                    break;
                }
                self.add_want(now, seq);
                seq += n_sub;
            }
        }
        self.next_expected = next;
    }

    /// Ingest timestamp of `seq`, from the pieces held (pieces are evenly spaced on
    /// average; a deadline to aim for needs no more).
    pub(super) fn estimate_ts(&self, seq: u64) -> Option<Micros> {
        let (anchor_seq, anchor_ts, interval) = self.ts_anchor?;
        Some(if seq >= anchor_seq {
            anchor_ts.saturating_add((seq - anchor_seq).saturating_mul(interval))
        } else {
            anchor_ts.saturating_sub((anchor_seq - seq).saturating_mul(interval))
        })
    }

    /// Keeps `estimate_ts` O(1): the newest piece and the mean spacing over the window.
    pub(super) fn update_ts_anchor(&mut self, piece: &Piece) {
        if self.ts_anchor.is_some_and(|(seq, _, _)| seq > piece.seq()) {
            return;
        }
        let interval = match self.window.first() {
            Some((first_seq, first)) if first_seq < piece.seq() => {
                piece.timestamp_us().saturating_sub(first.timestamp_us()) / (piece.seq() - first_seq)
            }
            _ => self.ts_anchor.map_or(0, |(_, _, i)| i),
        };
        self.ts_anchor = Some((piece.seq(), piece.timestamp_us(), interval));
    }

    /// Seeds are asked only when the deadline is near, or to start playback.
    fn seed_allowed(&self, now: Micros, seq: u64) -> bool {
        if self.playout.cursor.is_none() {
            return true;
        }
        self.estimate_ts(seq).is_none_or(|ts| now + self.cfg.seed_repair_margin >= ts + self.playout.offset)
    }

    /// When an unanswered request for `seq` is given up for another source: once the
    /// deadline is `hedge_margin` away, if the one asked has had a round trip and a
    /// piece's sending to answer (once per piece).
    fn hedge_at(&self, seq: u64, w: &Want) -> Option<Micros> {
        if w.gave_up_on.is_some() || self.playout.cursor.is_none() {
            return None;
        }
        let (node, _) = w.asked?;
        let n = &self.neighbours[self.neighbour_idx(node)?];
        let deadline = self.estimate_ts(seq)? + self.playout.offset;
        let answer = n.rtt.unwrap_or(200 * MS) + self.hop_time(n);
        Some(deadline.saturating_sub(self.cfg.hedge_margin).max(w.asked_at + answer))
    }

    /// Requests still unanswered near the deadline go to another source too: a slow
    /// answer (a responder whose uplink is queued) would otherwise be waited for until
    /// the request expires, past the deadline. The one given up on is not failed (a
    /// late answer in its record); an answer it sends still counts if it comes first.
    pub(super) fn hedge_requests(&mut self, now: Micros) {
        if self.cfg.role != Role::Viewer || self.cfg.hedge_margin == 0 {
            return;
        }
        let due: Vec<(u64, NodeId)> = self
            .wants
            .iter()
            .filter(|&(seq, w)| self.hedge_at(seq, w).is_some_and(|t| t <= now))
            .filter_map(|(seq, w)| Some((seq, w.asked?.0)))
            .collect();
        for (seq, node) in due {
            if let Some(w) = self.wants.get_mut(seq) {
                w.asked = None;
                w.gave_up_on = Some(node);
            }
            if let Some(i) = self.neighbour_idx(node) {
                // Too slow for this deadline is in its reply record (it is asked later
                // next time); it is not a failure, and its claim to hold the piece
                // stands.
                let n = &mut self.neighbours[i];
                n.requests_out = n.requests_out.saturating_sub(1);
                n.replied(false);
            }
            self.stats.requests_hedged += 1;
        }
    }

    pub(super) fn expire_requests(&mut self, now: Micros) {
        let mut expired = Vec::new();
        for (seq, w) in self.wants.iter_mut() {
            if let Some((node, expires)) = w.asked
                && expires <= now
            {
                w.asked = None;
                expired.push((node, seq));
            }
        }
        for (node, seq) in expired {
            self.stats.requests_timed_out += 1;
            if let Some(i) = self.neighbour_idx(node) {
                let n = &mut self.neighbours[i];
                n.requests_out = n.requests_out.saturating_sub(1);
                n.failures += 1;
                n.replied(false);
                n.have.remove(seq);
                n.lacks.insert(seq);
            }
        }
    }

    pub(super) fn send_requests(&mut self, now: Micros) {
        if self.cfg.role != Role::Viewer {
            return;
        }
        self.last_request_pass = Some(now);
        if let Some(floor) = self.want_floor() {
            self.retain_wants(|k| k >= floor);
        }
        let startup_limit = match (self.playout.cursor, self.playout.target) {
            (None, Some(target)) => target.saturating_add(STARTUP_PIECES),
            _ => u64::MAX,
        };
        let ready: Vec<u64> = self
            .wants
            .iter()
            .take_while(|&(seq, _)| seq < startup_limit)
            .filter(|&(seq, w)| w.asked.is_none() && self.ready_at(seq, w) <= now)
            .map(|(seq, _)| seq)
            .collect();
        let mut batches: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
        for seq in ready {
            let Some(idx) = self.pick_source(now, seq) else { continue };
            let n = &mut self.neighbours[idx];
            n.requests_out += 1;
            // One that has never given us a piece is on a short leash: three round
            // trips (at least 250 ms), so a claim it does not honour costs little.
            let timeout = if n.pieces_from == 0 && !n.is_seed() {
                self.cfg.request_timeout.min((3 * n.rtt.unwrap_or(200 * MS)).max(UNPROVEN_TIMEOUT))
            } else {
                self.cfg.request_timeout
            };
            let expires = now + timeout;
            if let Some(w) = self.wants.get_mut(seq) {
                w.asked = Some((n.node, expires));
                w.asked_at = now;
            }
            batches.entry(n.node).or_default().push(seq);
        }
        for (node, seqs) in batches {
            for chunk in seqs.chunks(MAX_REQUEST_SEQS) {
                self.stats.requests_sent += chunk.len() as u64;
                self.send(node, Message::Request { seqs: chunk.to_vec() });
            }
        }
    }

    /// How long `n` takes to send us a piece it answers with: pushes to its children go
    /// first, so a response waits out the share of its upload they take.
    fn response_time(&self, n: &Neighbour) -> Micros {
        let children = n.status.as_ref().map_or(0, |st| u64::from(st.children));
        let upload = u64::from(n.upload_kbps().max(1));
        let pushed = children * u64::from(self.cfg.stream_kbps) / self.branches.len().max(1) as u64;
        let idle_permille = 1_000u64.saturating_sub(pushed * 1_000 / upload).max(50);
        self.hop_time(n) * 1_000 / idle_permille
    }

    /// The neighbour to pull `seq` from: one that holds it (it said so) or very
    /// likely does (it forwards that substream and its usual latency has passed), has
    /// request budget, and costs least.
    fn pick_source(&self, now: Micros, seq: u64) -> Option<usize> {
        let seed_ok = self.seed_allowed(now, seq);
        let s = self.substream(seq);
        let age = self.estimate_ts(seq).map(|ts| now.saturating_sub(ts));
        let gave_up_on = self.wants.get(seq).and_then(|w| w.gave_up_on);
        // A seed's upload is the broadcaster's cost: it is not asked for a piece its
        // answer would bring after the piece's playout deadline. (Once a seed that
        // turned our subscriptions down could be asked, `browsers` pages asked seeds
        // for pieces too late to play: seed share 0.0096 → 0.0101, continuity the
        // same; with this, 0.0097 and 0.99924.)
        let deadline = self.playout.cursor.and(self.estimate_ts(seq)).map(|ts| ts + self.playout.offset);
        let in_time = |n: &Neighbour| {
            deadline.is_none_or(|d| now + n.rtt.unwrap_or(200 * MS) + self.response_time(n) + n.busy() <= d)
        };
        self.neighbours
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.hello.is_some()
                    && Some(n.node) != gave_up_on
                    && n.busy_until <= now
                    && n.requests_out < self.cfg.max_requests_per_neighbour
                    && !n.lacks.contains(seq)
                    // It claims pieces but has never delivered one, and let requests
                    // time out or stalled as our parent: a withholder until it proves
                    // otherwise.
                    && !((n.failures >= 3 || n.stalls > 0) && n.pieces_from == 0)
                    && (!n.is_seed() || (seed_ok && in_time(n)))
                    && (n.have.contains(seq) || likely_has(n, s, age))
            })
            .min_by_key(|(_, n)| {
                // Before playback starts a seed is the fastest start; after, the last resort.
                let seed = if n.is_seed() && self.playout.cursor.is_some() { self.cfg.seed_parent_penalty } else { 0 };
                let unsure = if n.have.contains(seq) { 0 } else { 50 * MS };
                // One that has never given us a piece is asked after those that have:
                // its claims are all we know of it.
                let unproven = if n.pieces_from == 0 && !n.is_seed() { 300 * MS } else { 0 };
                let cost = n.rtt.unwrap_or(200 * MS)
                    + self.response_time(n)
                    + n.busy()
                    + seed
                    + unsure
                    + unproven
                    + u64::from(n.requests_out) * 50 * MS
                    + u64::from(n.failures) * 100 * MS
                    // What it answers, not what it claims: each expiry in its recent
                    // record costs it more than another neighbour's round trip.
                    + ((1.0 - n.reply_rate) * 400_000.0) as Micros;
                (cost, n.node)
            })
            .map(|(i, _)| i)
    }

    /// Why `seq` is missing, for a log line when it is skipped: the request made for
    /// it (if still known), its substream's parent and each neighbour as repair sees
    /// it — whether it holds or lacks the piece, and what keeps it from being asked.
    pub fn explain_missing(&self, now: Micros, seq: u64) -> String {
        use std::fmt::Write as _;
        let s = self.substream(seq);
        let ms = |t: Micros| t as f64 / 1_000.0;
        let mut out = format!("seq {seq} (substream {s})");
        if let (Some(ts), true) = (self.estimate_ts(seq), self.playout.cursor.is_some()) {
            let _ = write!(out, ", deadline {:+.0} ms", ms(ts + self.playout.offset) - ms(now));
        }
        match self.wants.get(seq) {
            Some(w) => {
                let asked = w.asked.map_or("never asked".to_owned(), |(node, _)| {
                    format!("asked {} {:.0} ms ago", node.0, ms(now.saturating_sub(w.asked_at)))
                });
                let _ = write!(out, "; heard of {:.0} ms ago, {asked}", ms(now.saturating_sub(w.heard_at)));
                if let Some(g) = w.gave_up_on {
                    let _ = write!(out, ", gave up on {}", g.0);
                }
            }
            None => out.push_str("; no request on record"),
        }
        let parent = self.branches.get(s).and_then(|b| b.parent);
        let _ = write!(out, "; parent {}", parent.map_or("none".to_owned(), |p| p.0.to_string()));
        for n in &self.neighbours {
            let holds = if n.have.contains(seq) {
                "has"
            } else if n.lacks.contains(seq) {
                "lacks"
            } else {
                "?"
            };
            let _ = write!(
                out,
                "; {}{} {holds} rtt {:.1} busy {:.0} out {} fail {} refused {} stalls {} gave {} until {:+.0}",
                n.node.0,
                if n.is_seed() { " (seed)" } else { "" },
                ms(n.rtt.unwrap_or(0)),
                ms(n.busy()),
                n.requests_out,
                n.failures,
                n.refusals,
                n.stalls,
                n.pieces_from,
                ms(n.busy_until) - ms(now),
            );
        }
        out
    }
}

/// A neighbour fed with substream `s` whose usual latency is below the piece's age.
fn likely_has(n: &Neighbour, s: usize, age: Option<Micros>) -> bool {
    let Some(age) = age else { return false };
    n.is_seed() || n.latency(s).is_some_and(|l| l < age)
}
