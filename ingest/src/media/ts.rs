//! MPEG-TS muxing (ISO 13818-1): PAT, PMT, PES with PTS/DTS, PCR on the video PID,
//! continuity counters, random-access indicators on keyframes.

use swarm::piece::{TS_PACKET_LEN, TS_SYNC_BYTE};
use swarm::ts_out::encode_timestamp;
pub use swarm::ts_out::read_timestamp;

use super::{Frame, Track, VideoCodec};

pub const PID_PAT: u16 = 0x0000;
pub const PID_PMT: u16 = 0x1000;
pub const PID_VIDEO: u16 = 0x0100;
pub const PID_AUDIO: u16 = 0x0101;
pub const PID_SCTE35: u16 = 0x0102;

const STREAM_TYPE_H264: u8 = 0x1b;
const STREAM_TYPE_HEVC: u8 = 0x24;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;
const STREAM_TYPE_SCTE35: u8 = 0x86;

/// Output ms 0 is written as this PTS, so that PCR (which runs a little behind DTS)
/// and composition offsets never go below zero.
const TIME_BASE_MS: i64 = 1_400;
/// PCR runs this far behind the DTS of the frame it precedes (decoder buffer).
const PCR_LEAD_MS: i64 = 100;
const PTS_MODULUS: u64 = 1 << 33;

/// What [`TsMuxer::write_tables`] writes: a PAT and a PMT, one packet each.
pub const TABLES_LEN: usize = 2 * TS_PACKET_LEN;

/// What the program carries (decides the PMT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    pub video: Option<VideoCodec>,
    pub audio: bool,
    /// An SCTE-35 PID is announced (ad-break cues).
    pub scte35: bool,
}

#[derive(Debug, Clone)]
pub struct TsMuxer {
    program: Program,
    cc: [u8; 5],
    /// Output ms of input time 0 (the epoch's wall time): what PTS, DTS and PCR count from.
    base_ms: i64,
}

impl Program {
    /// The PMT's version: a function of what it announces (distinct for every layout),
    /// so that every node writes the same PMT for the same tracks and a player sees the
    /// version move whenever the tracks change.
    pub fn pmt_version(&self) -> u8 {
        let video = match self.video {
            None => 0,
            Some(VideoCodec::H264) => 1,
            Some(VideoCodec::Hevc) => 2,
        };
        video * 4 + u8::from(self.audio) * 2 + u8::from(self.scte35)
    }
}

fn cc_index(pid: u16) -> usize {
    match pid {
        PID_PAT => 0,
        PID_PMT => 1,
        PID_VIDEO => 2,
        PID_AUDIO => 3,
        _ => 4,
    }
}

impl TsMuxer {
    pub fn new(program: Program) -> Self {
        TsMuxer { program, cc: [0; 5], base_ms: 0 }
    }

    pub fn program(&self) -> Program {
        self.program
    }

    /// Changes what the PMT announces (a new session with other tracks); the PMT
    /// version moves with it ([`Program::pmt_version`]) so that players notice.
    pub fn set_program(&mut self, program: Program) {
        self.program = program;
    }

    /// Continuity counters start again at 0 (at a segment start: a segment's bytes
    /// then depend on its own frames only).
    pub fn reset_counters(&mut self) {
        self.cc = [0; 5];
    }

    /// Frames' times are written as `base_ms` plus theirs.
    pub fn set_time_base(&mut self, base_ms: i64) {
        self.base_ms = base_ms;
    }

    fn pcr_pid(&self) -> u16 {
        if self.program.video.is_some() { PID_VIDEO } else { PID_AUDIO }
    }

    /// PAT and PMT: what a viewer needs to start decoding here ([`TABLES_LEN`] bytes:
    /// each section fits one packet).
    pub fn write_tables(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        // PAT: program 1 -> PMT PID.
        let mut pat = vec![0x00, 0xb0, 0, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01];
        pat.extend_from_slice(&[0xe0 | (PID_PMT >> 8) as u8, PID_PMT as u8]);
        self.write_section(PID_PAT, pat, out);
        let mut pmt = vec![0x02, 0xb0, 0, 0x00, 0x01, 0xc1 | (self.program.pmt_version() << 1), 0x00, 0x00];
        let pcr = self.pcr_pid();
        pmt.extend_from_slice(&[0xe0 | (pcr >> 8) as u8, pcr as u8, 0xf0, 0x00]);
        let mut es = |stream_type: u8, pid: u16| {
            pmt.extend_from_slice(&[stream_type, 0xe0 | (pid >> 8) as u8, pid as u8, 0xf0, 0x00]);
        };
        match self.program.video {
            Some(VideoCodec::H264) => es(STREAM_TYPE_H264, PID_VIDEO),
            Some(VideoCodec::Hevc) => es(STREAM_TYPE_HEVC, PID_VIDEO),
            None => {}
        }
        if self.program.audio {
            es(STREAM_TYPE_AAC_ADTS, PID_AUDIO);
        }
        if self.program.scte35 {
            es(STREAM_TYPE_SCTE35, PID_SCTE35);
        }
        self.write_section(PID_PMT, pmt, out);
        debug_assert_eq!(out.len() - start, TABLES_LEN);
    }

    /// `section` from table id to the last byte before the CRC; fills in the length.
    fn write_section(&mut self, pid: u16, mut section: Vec<u8>, out: &mut Vec<u8>) {
        let len = section.len() - 3 + 4;
        section[1] = 0xb0 | ((len >> 8) as u8 & 0x0f);
        section[2] = len as u8;
        let crc = crc32_mpeg2(&section);
        section.extend_from_slice(&crc.to_be_bytes());
        self.packetize(pid, &[&[0], &section], None, false, out); // pointer field, section
    }

    /// One SCTE-35 splice_info_section, passed through as it came.
    pub fn write_scte35(&mut self, section: &[u8], out: &mut Vec<u8>) {
        self.packetize(PID_SCTE35, &[&[0], section], None, false, out); // pointer field, section
    }

    /// One frame as a PES packet: [`TsMuxer::frame_len`] bytes.
    pub fn write_frame(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        let pes = self.pes(frame);
        // The PES header is built apart and packetized together with the frame's bytes
        // (as they arrived: [`super::Payload`]), so the frame is copied once, straight
        // into TS packets.
        let mut parts = Vec::with_capacity(16);
        parts.push(pes.head());
        frame.data.parts(&mut parts);
        self.packetize(pes.pid, &parts, pes.pcr, pes.random_access, out);
    }

    /// The TS bytes [`TsMuxer::write_frame`] writes for `frame`, exactly: a piece's
    /// buffer is sized before the frame is written into it.
    pub fn frame_len(&self, frame: &Frame) -> usize {
        let pes = self.pes(frame);
        packets(pes.head_len + frame.data.len(), first_af_len(pes.pcr.is_some(), pes.random_access)) * TS_PACKET_LEN
    }

    /// What goes ahead of a frame's bytes: its PES header, on which PID, with which
    /// PCR, and whether it is a random access point.
    fn pes(&self, frame: &Frame) -> Pes {
        let dts_ms = self.base_ms + frame.dts_ms;
        let dts = ticks(dts_ms);
        let pts = ticks(dts_ms + i64::from(frame.cts_ms));
        let (pid, stream_id) = match frame.track {
            Track::Video => (PID_VIDEO, 0xe0),
            Track::Audio => (PID_AUDIO, 0xc0),
        };
        let with_dts = pts != dts;
        let mut head = [0u8; PES_HEAD_MAX];
        head[..6].copy_from_slice(&[0, 0, 1, stream_id, 0, 0]);
        head[6] = if frame.track == Track::Video { 0x84 } else { 0x80 }; // marker, data alignment
        head[7] = if with_dts { 0xc0 } else { 0x80 };
        head[8] = if with_dts { 10 } else { 5 };
        head[9..14].copy_from_slice(&encode_timestamp(if with_dts { 0x3 } else { 0x2 }, pts));
        let head_len = if with_dts {
            head[14..19].copy_from_slice(&encode_timestamp(0x1, dts));
            19
        } else {
            14
        };
        // PES_packet_length: 0 (unbounded) is allowed for video only.
        let len = head_len - 6 + frame.data.len();
        if frame.track == Track::Audio || len <= 0xffff {
            let len = u16::try_from(len).unwrap_or(0);
            head[4..6].copy_from_slice(&len.to_be_bytes());
        }
        let pcr = (pid == self.pcr_pid()).then(|| ((dts_ms + TIME_BASE_MS - PCR_LEAD_MS).max(0) as u64) * 27_000);
        Pes { head, head_len, pid, pcr, random_access: frame.keyframe && frame.track == Track::Video }
    }

    /// Cuts `parts` (read as one byte string) into TS packets of `pid`.
    fn packetize(&mut self, pid: u16, parts: &[&[u8]], pcr: Option<u64>, random_access: bool, out: &mut Vec<u8>) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let start = out.len();
        let n_packets = packets(total, first_af_len(pcr.is_some(), random_access));
        out.reserve(n_packets * TS_PACKET_LEN);
        let (mut part, mut at) = (0, 0);
        let mut pos = 0;
        let mut first = true;
        while pos < total || first {
            // Adaptation field (without its length byte): flags, PCR, stuffing.
            let mut af = [0xffu8; TS_PACKET_LEN];
            let mut af_len = 0;
            if first && (pcr.is_some() || random_access) {
                af[0] = if random_access { 0x40 } else { 0x00 } | if pcr.is_some() { 0x10 } else { 0x00 };
                af_len = 1;
                if let Some(pcr) = pcr {
                    let base = (pcr / 300) % PTS_MODULUS;
                    let ext = pcr % 300;
                    af[1..7].copy_from_slice(&[
                        (base >> 25) as u8,
                        (base >> 17) as u8,
                        (base >> 9) as u8,
                        (base >> 1) as u8,
                        ((base & 1) << 7) as u8 | 0x7e | (ext >> 8) as u8,
                        ext as u8,
                    ]);
                    af_len = 7;
                }
            }
            let remaining = total - pos;
            let mut af_total = if af_len == 0 { 0 } else { 1 + af_len };
            let room = TS_PACKET_LEN - 4 - af_total;
            if remaining < room {
                let stuffing = room - remaining;
                if af_total == 0 {
                    if stuffing > 1 {
                        af[0] = 0x00;
                        af_len = stuffing - 1; // flags byte, then 0xff stuffing
                    }
                } else {
                    af_len += stuffing; // the array is 0xff past what was written
                }
                af_total += stuffing;
            }
            let take = (TS_PACKET_LEN - 4 - af_total).min(remaining);
            let cc = &mut self.cc[cc_index(pid)];
            let control = if af_total > 0 { 0x30 } else { 0x10 };
            out.push(TS_SYNC_BYTE);
            out.push(if first { 0x40 } else { 0x00 } | ((pid >> 8) as u8 & 0x1f));
            out.push(pid as u8);
            out.push(control | *cc);
            *cc = (*cc + 1) & 0x0f;
            if af_total > 0 {
                out.push((af_total - 1) as u8);
                out.extend_from_slice(&af[..af_len]);
            }
            let mut left = take;
            while left > 0 {
                let src = &parts[part][at..];
                let n = src.len().min(left);
                out.extend_from_slice(&src[..n]);
                left -= n;
                at += n;
                if at == parts[part].len() {
                    part += 1;
                    at = 0;
                }
            }
            pos += take;
            first = false;
        }
        debug_assert_eq!(out.len() - start, n_packets * TS_PACKET_LEN, "packets() counts what packetize writes");
    }
}

/// The longest PES header written: with PTS and DTS.
const PES_HEAD_MAX: usize = 19;

/// A frame's PES header and how it is packetized.
struct Pes {
    head: [u8; PES_HEAD_MAX],
    head_len: usize,
    pid: u16,
    pcr: Option<u64>,
    random_access: bool,
}

impl Pes {
    fn head(&self) -> &[u8] {
        &self.head[..self.head_len]
    }
}

/// Bytes the first packet's adaptation field takes (its length byte included) before
/// any stuffing: flags and a PCR, or flags alone for a random access point.
fn first_af_len(pcr: bool, random_access: bool) -> usize {
    if pcr {
        8
    } else if random_access {
        2
    } else {
        0
    }
}

/// TS packets that carry `total` bytes when the first packet's adaptation field takes
/// `first_af` of its room (the last packet is stuffed; at least one packet).
fn packets(total: usize, first_af: usize) -> usize {
    let room = TS_PACKET_LEN - 4;
    let first_room = room - first_af;
    1 + total.saturating_sub(first_room).div_ceil(room)
}

/// Output ms to 90 kHz ticks, modulo 2^33.
fn ticks(ms: i64) -> u64 {
    ((ms + TIME_BASE_MS).max(0) as u64 * 90) % PTS_MODULUS
}

/// CRC-32/MPEG-2 of PSI sections.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// Every payload length across the packet boundaries, with a PCR, a random access
    /// flag, both or neither: whole packets, counters in turn, an adaptation field
    /// where the payload does not fill the packet (flags, PCR, then only 0xff), and
    /// the payload back in order.
    #[test]
    fn packets_carry_any_length_with_well_formed_adaptation_fields() {
        let data: Vec<u8> = (0..600u32).map(|i| (i * 7 + 3) as u8).collect();
        for (pcr, random_access) in
            [(None, false), (Some(27_000_000 * 5 + 123), false), (None, true), (Some(300), true)]
        {
            for len in 0..data.len() {
                let mut mux = TsMuxer::new(Program { video: Some(VideoCodec::H264), audio: true, scte35: false });
                let (head, tail) = data[..len].split_at(len / 3);
                let mut out = Vec::new();
                mux.packetize(PID_VIDEO, &[head, tail], pcr, random_access, &mut out);
                let first_af = first_af_len(pcr.is_some(), random_access);
                assert_eq!(out.len(), packets(len, first_af) * TS_PACKET_LEN, "len {len}");
                let mut payload = Vec::new();
                for (i, p) in out.chunks(TS_PACKET_LEN).enumerate() {
                    assert_eq!(p[0], TS_SYNC_BYTE);
                    assert_eq!(p[1] & 0x40 != 0, i == 0, "unit start on the first packet only");
                    assert_eq!(u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]), PID_VIDEO);
                    assert_eq!(p[3] & 0x0f, (i % 16) as u8, "continuity counter");
                    let mut at = 4;
                    if p[3] & 0x20 != 0 {
                        let af_len = usize::from(p[4]);
                        at = 5 + af_len;
                        if af_len > 0 {
                            let flags = p[5];
                            let want = if i == 0 { first_af > 0 } else { false };
                            assert_eq!(flags & 0x40 != 0, want && random_access, "len {len}: RA flag");
                            assert_eq!(flags & 0x10 != 0, want && pcr.is_some(), "len {len}: PCR flag");
                            let fixed = if flags & 0x10 != 0 { 7 } else { 1 };
                            if let (Some(pcr), true) = (pcr, flags & 0x10 != 0) {
                                let b = &p[6..12];
                                let base = (u64::from(b[0]) << 25)
                                    | (u64::from(b[1]) << 17)
                                    | (u64::from(b[2]) << 9)
                                    | (u64::from(b[3]) << 1)
                                    | u64::from(b[4] >> 7);
                                let ext = (u64::from(b[4] & 1) << 8) | u64::from(b[5]);
                                assert_eq!(base * 300 + ext, pcr, "len {len}: PCR");
                            }
                            assert!(p[5 + fixed..at].iter().all(|&b| b == 0xff), "len {len}: stuffing");
                        }
                    } else {
                        assert!(i > 0 || first_af == 0, "len {len}: the first packet's flags need a field");
                    }
                    assert_eq!(p[3] & 0x10, 0x10, "payload present");
                    payload.extend_from_slice(&p[at..]);
                }
                assert_eq!(payload, &data[..len], "len {len}, pcr {pcr:?}, random access {random_access}");
            }
        }
    }

    #[test]
    fn crc_of_a_known_pat() {
        // The PAT ffmpeg writes for program 1 -> PMT 0x1000.
        let pat = [0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00];
        assert_eq!(crc32_mpeg2(&pat), 0x2ab1_04b2);
    }

    /// `frame_len` is what `write_frame` writes, exactly, for every kind of frame and
    /// every size around the packet edges: a piece's buffer is sized by it beforehand.
    #[test]
    fn frame_len_is_what_write_frame_writes() {
        for video in [Some(VideoCodec::H264), None] {
            let mut mux = TsMuxer::new(Program { video, audio: true, scte35: false });
            mux.set_time_base(5_000);
            let mut out = Vec::new();
            mux.write_tables(&mut out);
            assert_eq!(out.len(), TABLES_LEN);
            for len in (0..600).chain([16_000, 65_535, 65_536, 200_000]) {
                for (track, keyframe, cts_ms) in
                    [(Track::Video, true, 80), (Track::Video, false, 0), (Track::Audio, true, 0)]
                {
                    let frame = Frame {
                        track,
                        dts_ms: 40,
                        cts_ms,
                        keyframe,
                        duration_ms: 40,
                        data: Bytes::from(vec![1u8; len]).into(),
                    };
                    let before = out.len();
                    mux.write_frame(&frame, &mut out);
                    assert_eq!(
                        out.len() - before,
                        mux.frame_len(&frame),
                        "{track:?} keyframe {keyframe} cts {cts_ms} len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn frames_become_whole_packets_with_counters_and_timestamps() {
        let mut mux = TsMuxer::new(Program { video: Some(VideoCodec::H264), audio: true, scte35: false });
        let mut out = Vec::new();
        mux.write_tables(&mut out);
        let frame = Frame {
            track: Track::Video,
            dts_ms: 1_000,
            cts_ms: 80,
            keyframe: true,
            duration_ms: 40,
            data: Bytes::from(vec![7u8; 500]).into(),
        };
        mux.write_frame(&frame, &mut out);
        mux.write_frame(&Frame { keyframe: false, ..frame.clone() }, &mut out);
        assert_eq!(out.len() % TS_PACKET_LEN, 0);
        let packets: Vec<&[u8]> = out.chunks(TS_PACKET_LEN).collect();
        assert!(packets.iter().all(|p| p[0] == TS_SYNC_BYTE));
        let video: Vec<&&[u8]> =
            packets.iter().filter(|p| (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) == PID_VIDEO).collect();
        // 500 bytes + 19 of PES header: three packets per frame, counters 0..=5.
        assert_eq!(video.len(), 6);
        for (i, p) in video.iter().enumerate() {
            assert_eq!(p[3] & 0x0f, i as u8);
        }
        // First packet: PUSI, adaptation field with random access + PCR, then the PES.
        let p = video[0];
        assert_eq!(p[1] & 0x40, 0x40);
        assert_eq!(p[5] & 0x50, 0x50);
        let pes = &p[5 + usize::from(p[4])..];
        assert_eq!(&pes[..4], &[0, 0, 1, 0xe0]);
        let pts = read_timestamp(pes[9..14].try_into().expect("5 bytes"));
        let dts = read_timestamp(pes[14..19].try_into().expect("5 bytes"));
        assert_eq!(pts, (1_000 + 80 + TIME_BASE_MS as u64) * 90);
        assert_eq!(dts, (1_000 + TIME_BASE_MS as u64) * 90);
        // The second frame is no random access point.
        assert_eq!(video[3][5] & 0x40, 0);
    }

    #[test]
    fn the_tables_say_the_layouts_version_as_players_read_it() {
        let mut seen = std::collections::HashSet::new();
        for video in [None, Some(VideoCodec::H264), Some(VideoCodec::Hevc)] {
            for audio in [false, true] {
                for scte35 in [false, true] {
                    let program = Program { video, audio, scte35 };
                    let mut out = Vec::new();
                    TsMuxer::new(program).write_tables(&mut out);
                    let read = swarm::ts_out::pmt_version(&out);
                    assert_eq!(read, Some(program.pmt_version()), "{program:?}");
                    assert!(seen.insert(read), "{program:?}: a version another layout has");
                }
            }
        }
        // Bytes without tables, or cut inside them, have none.
        assert_eq!(swarm::ts_out::pmt_version(&[]), None);
        let mut out = Vec::new();
        TsMuxer::new(Program { video: None, audio: true, scte35: false }).write_tables(&mut out);
        assert_eq!(swarm::ts_out::pmt_version(&out[..TS_PACKET_LEN]), None);
        assert_eq!(swarm::ts_out::pmt_version(&out[TS_PACKET_LEN..]), None);
    }
}
