//! Continuous MPEG-TS out of pieces, as one muxer would have written it.
//!
//! Ingest starts every segment's continuity counters at 0, so that a segment's bytes
//! depend on its own frames only (two ingest nodes cut the same bytes wherever they
//! started reading the feed), and writes times from the wall clock its feed's epoch
//! is bound to, so a new epoch (an encoder restarted) jumps in time. A player reading
//! pieces back to back as one stream (`/live.ts`, the viewer's playout) would see each
//! segment's counters jump — ffmpeg marks such packets corrupt, some players drop them
//! — and the time jump at a new epoch. [`TsOut`] rewrites each packet's counter to run
//! on from the last one of its PID, and at a piece flagged `DISCONTINUITY` shifts
//! PTS, DTS and PCR from there on so that time continues just after the last frame
//! written. HLS segments need neither: each is fetched on its own, and the playlist
//! marks `EXT-X-DISCONTINUITY`.

use std::collections::HashMap;

use bytes::Bytes;

use crate::piece::{TS_PACKET_LEN, TS_SYNC_BYTE};

/// The null packets' PID: no counter.
const PID_NULL: u16 = 0x1fff;
/// PTS, DTS and PCR bases count modulo 2^33 (90 kHz).
const MODULUS: u64 = 1 << 33;
/// Time left after the last frame when a new epoch's are shifted, 90 kHz (40 ms).
const GAP_TICKS: u64 = 3_600;

/// Reads a 5-byte PES timestamp (90 kHz).
pub fn read_timestamp(b: &[u8; 5]) -> u64 {
    (u64::from(b[0] >> 1) & 0x07) << 30
        | u64::from(b[1]) << 22
        | u64::from(b[2] >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4] >> 1)
}

/// A 5-byte PES timestamp with its 4-bit `prefix` (0x2: PTS only, 0x3: PTS before a
/// DTS, 0x1: DTS) and marker bits.
pub fn encode_timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8) << 1) | 1,
    ]
}

/// The version of the first program's PMT in `payload` (whole TS packets), if the
/// PAT and that PMT both begin in it: ingest writes both at every segment start, and
/// derives the version from the tracks, so a new version is a new layout (another
/// codec, a track added or dropped).
pub fn pmt_version(payload: &[u8]) -> Option<u8> {
    // (PID, the section's bytes after the pointer field) of packets that begin one.
    let sections =
        payload.chunks_exact(TS_PACKET_LEN).filter(|p| p[0] == TS_SYNC_BYTE && p[1] & 0x40 != 0).filter_map(|p| {
            let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
            let at = payload_start(p)?;
            let pointer = usize::from(p[at]);
            Some((pid, p.get(at + 1 + pointer..)?))
        });
    let mut pmt_pid = None;
    for (pid, s) in sections {
        match pmt_pid {
            // PAT: table 0, then the first program's (number, PID) after 8 bytes; a
            // program number 0 is the network PID, not a program.
            None if pid == 0 && s.first() == Some(&0) => {
                let mut programs = s.get(8..)?.chunks_exact(4);
                let p = programs.find(|p| p[0] != 0 || p[1] != 0)?;
                pmt_pid = Some((u16::from(p[2] & 0x1f) << 8) | u16::from(p[3]));
            }
            Some(pmt) if pid == pmt && s.first() == Some(&2) => return s.get(5).map(|v| (v >> 1) & 0x1f),
            _ => {}
        }
    }
    None
}

/// One output stream's state.
#[derive(Debug, Clone, Default)]
pub struct TsOut {
    /// PID → the counter its next payload-carrying packet gets.
    next: HashMap<u16, u8>,
    /// Added to every time written, 90 kHz modulo 2^33.
    shift: u64,
    /// The newest DTS (or PTS) written, after the shift.
    last_dts: Option<u64>,
    /// The PMT version of the segments written ([`pmt_version`]).
    layout: Option<u8>,
}

/// Where a packet's payload begins (after the header and any adaptation field).
fn payload_start(p: &[u8]) -> Option<usize> {
    let start = if p[3] & 0x20 != 0 { 5 + usize::from(p[4]) } else { 4 };
    (start < TS_PACKET_LEN).then_some(start)
}

/// The offsets of a PES header's PTS and DTS in a packet that starts one.
fn pes_times(p: &[u8]) -> (Option<usize>, Option<usize>) {
    let Some(at) = payload_start(p) else { return (None, None) };
    let pes = &p[at..];
    if pes.len() < 19 || pes[..3] != [0, 0, 1] || pes[3] < 0xc0 {
        return (None, None);
    }
    match pes[7] >> 6 {
        2 => (Some(at + 9), None),
        3 => (Some(at + 9), Some(at + 14)),
        _ => (None, None),
    }
}

impl TsOut {
    /// Whether `payload` (the next segment start's: only those carry the tables) begins
    /// another layout than the segments written so far: another PMT version, so another codec or track set on the same
    /// PIDs. The stream should end before it (its player reconnects): ffmpeg's
    /// demuxer keeps the decoder it opened for a PID (H.264 fed HEVC fails), and a
    /// player reading one stream maps its tracks once.
    pub fn layout_changes(&mut self, payload: &[u8]) -> bool {
        match (pmt_version(payload), self.layout) {
            (Some(new), Some(old)) if new != old => true,
            (Some(new), _) => {
                self.layout = Some(new);
                false
            }
            (None, _) => false,
        }
    }

    /// `payload` (whole TS packets) for the stream; `discontinuity`: the piece begins a
    /// new timeline (its flag). Bytes that are not TS packets pass as they are.
    pub fn write(&mut self, payload: &[u8], discontinuity: bool) -> Bytes {
        let mut out = payload.to_vec();
        if discontinuity && let Some(last) = self.last_dts {
            let first =
                out.chunks_exact(TS_PACKET_LEN).filter(|p| p[0] == TS_SYNC_BYTE && p[1] & 0x40 != 0).find_map(|p| {
                    let (pts, dts) = pes_times(p);
                    dts.or(pts).map(|at| read_timestamp(p[at..at + 5].try_into().expect("5 bytes")))
                });
            if let Some(first) = first {
                self.shift = (last + GAP_TICKS + MODULUS - first) % MODULUS;
            }
        }
        for packet in out.chunks_exact_mut(TS_PACKET_LEN) {
            if packet[0] != TS_SYNC_BYTE {
                continue;
            }
            let pid = (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
            if pid == PID_NULL {
                continue;
            }
            self.renumber(pid, packet);
            self.retime(packet);
        }
        Bytes::from(out)
    }

    fn renumber(&mut self, pid: u16, packet: &mut [u8]) {
        let has_payload = packet[3] & 0x10 != 0;
        let cc = match self.next.get(&pid) {
            // A packet without payload repeats the last counter.
            Some(&next) if !has_payload => next.wrapping_sub(1) & 0x0f,
            Some(&next) => next,
            None => packet[3] & 0x0f,
        };
        packet[3] = (packet[3] & 0xf0) | cc;
        self.next.insert(pid, (cc + 1) & 0x0f);
    }

    fn retime(&mut self, packet: &mut [u8]) {
        // PCR, in the adaptation field.
        if packet[3] & 0x20 != 0 && packet[4] >= 7 && packet[5] & 0x10 != 0 && self.shift != 0 {
            let b = &packet[6..12];
            let base = u64::from(b[0]) << 25
                | u64::from(b[1]) << 17
                | u64::from(b[2]) << 9
                | u64::from(b[3]) << 1
                | u64::from(b[4] >> 7);
            let base = (base + self.shift) % MODULUS;
            packet[6] = (base >> 25) as u8;
            packet[7] = (base >> 17) as u8;
            packet[8] = (base >> 9) as u8;
            packet[9] = (base >> 1) as u8;
            packet[10] = ((base & 1) << 7) as u8 | (packet[10] & 0x7f);
        }
        if packet[1] & 0x40 == 0 {
            return;
        }
        let (pts, dts) = pes_times(packet);
        for (at, prefix) in [(pts, if dts.is_some() { 0x3 } else { 0x2 }), (dts, 0x1)] {
            let Some(at) = at else { continue };
            let t = (read_timestamp(packet[at..at + 5].try_into().expect("5 bytes")) + self.shift) % MODULUS;
            packet[at..at + 5].copy_from_slice(&encode_timestamp(prefix, t));
        }
        if let Some(at) = dts.or(pts) {
            self.last_dts = Some(read_timestamp(packet[at..at + 5].try_into().expect("5 bytes")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pid: u16, cc: u8, payload: bool) -> Vec<u8> {
        let mut p = vec![0xff; TS_PACKET_LEN];
        p[0] = TS_SYNC_BYTE;
        p[1] = (pid >> 8) as u8;
        p[2] = pid as u8;
        p[3] = if payload { 0x10 } else { 0x20 } | cc;
        if !payload {
            p[4] = 183;
            p[5] = 0;
        }
        p
    }

    /// A packet starting a PES with PTS and DTS, and a PCR.
    fn pes(pid: u16, dts: u64) -> Vec<u8> {
        let mut p = vec![0xffu8; TS_PACKET_LEN];
        p[..4].copy_from_slice(&[TS_SYNC_BYTE, 0x40 | (pid >> 8) as u8, pid as u8, 0x30]);
        p[4] = 7;
        p[5] = 0x10;
        let pcr = dts - 900;
        p[6..12].copy_from_slice(&[
            (pcr >> 25) as u8,
            (pcr >> 17) as u8,
            (pcr >> 9) as u8,
            (pcr >> 1) as u8,
            ((pcr & 1) << 7) as u8 | 0x7e,
            0,
        ]);
        let mut head = vec![0, 0, 1, 0xe0, 0, 0, 0x84, 0xc0, 10];
        head.extend_from_slice(&encode_timestamp(0x3, dts + 3_000));
        head.extend_from_slice(&encode_timestamp(0x1, dts));
        p[12..12 + head.len()].copy_from_slice(&head);
        p
    }

    fn counters(bytes: &[u8]) -> Vec<(u16, u8)> {
        bytes.chunks(TS_PACKET_LEN).map(|p| ((u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]), p[3] & 0x0f)).collect()
    }

    /// PAT (program 1 at PID 0x1000) and a PMT of `version`.
    fn tables(version: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for (pid, section) in [
            (0x0000u16, vec![0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00]),
            (0x1000, vec![0x02, 0xb0, 0x12, 0x00, 0x01, 0xc1 | (version << 1), 0x00, 0x00, 0xe1, 0x00, 0xf0, 0x00]),
        ] {
            let mut p = packet(pid, 0, true);
            p[1] |= 0x40;
            p[4] = 0;
            p[5..5 + section.len()].copy_from_slice(&section);
            out.extend_from_slice(&p);
        }
        out
    }

    #[test]
    fn a_stream_notices_another_layout_but_not_the_same_one_again() {
        let mut c = TsOut::default();
        assert_eq!(pmt_version(&tables(6)), Some(6));
        assert!(!c.layout_changes(&packet(0x100, 0, true)), "no tables: nothing to go by");
        assert!(!c.layout_changes(&tables(6)));
        assert!(!c.layout_changes(&packet(0x100, 1, true)));
        assert!(!c.layout_changes(&tables(6)), "the same layout again (a new session like the last)");
        assert!(c.layout_changes(&tables(5)));
        assert!(c.layout_changes(&tables(5)), "the stream is to end: it stays changed");
        assert!(!TsOut::default().layout_changes(&tables(5)), "a new stream starts on any");
    }

    #[test]
    fn segments_that_each_start_at_zero_run_on() {
        let mut c = TsOut::default();
        let seg = |n: u8| {
            [packet(0x100, 0, true), packet(0x101, 0, true), packet(0x100, 1, true), packet(0x100, n, true)].concat()
        };
        let first = c.write(&seg(2), false);
        assert_eq!(counters(&first), vec![(0x100, 0), (0x101, 0), (0x100, 1), (0x100, 2)]);
        let second = c.write(&seg(2), false);
        assert_eq!(counters(&second), vec![(0x100, 3), (0x101, 1), (0x100, 4), (0x100, 5)]);
        // Wraps at 16; an adaptation-only packet repeats the last counter.
        let mut c = TsOut::default();
        let many: Vec<u8> = (0..17).flat_map(|i| packet(0x100, (i % 16) as u8, true)).collect();
        let out = c.write(&many, false);
        assert_eq!(counters(&out).last(), Some(&(0x100, 0)));
        let out = c.write(&[packet(0x100, 9, false), packet(0x100, 0, true)].concat(), false);
        assert_eq!(counters(&out), vec![(0x100, 0), (0x100, 1)]);
        // Null packets and stray bytes pass untouched.
        let odd = [packet(PID_NULL, 7, true), vec![0u8; 10]].concat();
        assert_eq!(&c.write(&odd, false)[..], &odd[..]);
    }

    #[test]
    fn a_new_timeline_continues_just_after_the_last_frame() {
        let mut c = TsOut::default();
        let read = |b: &[u8], at: usize| read_timestamp(b[at..at + 5].try_into().unwrap());
        let out = c.write(&pes(0x100, 900_000), false);
        assert_eq!((read(&out, 21), read(&out, 26)), (903_000, 900_000), "written as they are");
        // The next epoch's media is stamped an hour later (or wrapped around): shifted
        // to 40 ms after the last DTS, PCR with it, and everything after it too.
        let out = c.write(&pes(0x100, (900_000 + 324_000_000) % MODULUS), true);
        assert_eq!((read(&out, 21), read(&out, 26)), (906_600, 903_600));
        let pcr = (u64::from(out[6]) << 25)
            | (u64::from(out[7]) << 17)
            | (u64::from(out[8]) << 9)
            | (u64::from(out[9]) << 1)
            | u64::from(out[10] >> 7);
        assert_eq!(pcr, 903_600 - 900);
        let out = c.write(&pes(0x100, 324_903_600 % MODULUS), false);
        assert_eq!(read(&out, 26), 907_200);
        // Going back (an epoch whose clock is behind) is shifted forward all the same.
        let out = c.write(&pes(0x100, 1_000), true);
        assert_eq!(read(&out, 26), 907_200 + 3_600);
    }
}
