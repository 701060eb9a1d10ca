//! The playout buffer: start at a segment start, play in order at each piece's
//! deadline, skip what missed it.

use crate::wire::Role;

use super::{Event, Micros, Peer};

impl Peer {
    pub(super) fn advance_playout(&mut self, now: Micros) {
        if self.cfg.role != Role::Viewer {
            return;
        }
        if self.playout.cursor.is_none() {
            // The newest segment start is the aim; one we already hold will do if it
            // isn't too old (a flash crowd makes the newest the hardest to get).
            let held = self.latest_segment_start.filter(|s| {
                self.window.get(*s).is_some_and(|p| now.saturating_sub(p.timestamp_us()) <= self.cfg.max_start_lag)
            });
            let target = match self.playout.target {
                Some(t) if self.window.contains(t) => t,
                _ => match held {
                    Some(s) => s,
                    None => return,
                },
            };
            let Some(piece) = self.window.get(target) else { return };
            // Start at the target segment; keep the configured delay if we are early
            // enough, else whatever delay we joined with.
            self.playout.offset = self.cfg.playout_delay.max(now.saturating_sub(piece.timestamp_us()));
            self.playout.cursor = Some(target);
            self.retain_wants(|k| k >= target);
            self.events.push_back(Event::PlaybackStarted { seq: target });
        }
        // The old run's tail after a jump in numbering plays first.
        while let Some(piece) = self.playout.tail.front() {
            if piece.timestamp_us() + self.playout.offset > now {
                return;
            }
            self.stats.played += 1;
            self.events.push_back(Event::Play(piece.clone()));
            self.playout.tail.pop_front();
        }
        while let Some(cursor) = self.playout.cursor {
            let Some((seq, piece)) = self.window.iter_from(cursor).next() else { break };
            if piece.timestamp_us() + self.playout.offset > now {
                break;
            }
            for missed in cursor..seq {
                self.stats.skipped += 1;
                self.events.push_back(Event::Skipped { seq: missed });
            }
            self.stats.played += 1;
            self.events.push_back(Event::Play(piece.clone()));
            self.playout.cursor = Some(seq + 1);
        }
    }
}
