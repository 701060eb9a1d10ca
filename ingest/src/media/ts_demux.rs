//! MPEG-TS in (SRT feeds): packets to access units with their 33-bit timestamps, and
//! SCTE-35 splice messages to ad-break edges. Resynchronises on the sync byte, ignores
//! what it does not carry (other programs, unknown stream types), bounds every buffer.

use bytes::Bytes;
use swarm::piece::{PieceFlags, TS_PACKET_LEN, TS_SYNC_BYTE};

use super::VideoCodec;
use super::ts::{Program, crc32_mpeg2, read_timestamp};

/// A PES bigger than this is dropped (a 4K keyframe is well under it).
const MAX_PES: usize = 8 * 1024 * 1024;

/// One access unit (a video picture, or a PES of ADTS audio frames).
#[derive(Debug, Clone, PartialEq)]
pub struct TsFrame {
    pub video: bool,
    /// 90 kHz, 33 bits.
    pub pts: u64,
    pub dts: u64,
    pub keyframe: bool,
    /// ADTS frames in an audio PES (duration = frames × 1,024 samples).
    pub audio_frames: u32,
    pub sample_rate: u32,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Demuxed {
    Frame(TsFrame),
    /// An ad break starts or ends (SCTE-35 splice_insert).
    Cue(PieceFlags),
}

#[derive(Debug, Default)]
struct Pes {
    /// Order in which PES packets started (the flush order).
    started: u64,
    buf: Vec<u8>,
    random_access: bool,
    overflow: bool,
}

/// Counters of what was dropped, for metrics.
#[derive(Debug, Clone, Default)]
pub struct DemuxStats {
    pub packets: u64,
    pub resyncs: u64,
    pub bad_pes: u64,
    pub bad_sections: u64,
    pub continuity_errors: u64,
}

#[derive(Debug, Default)]
pub struct TsDemuxer {
    pending: Vec<u8>,
    pmt_pid: Option<u16>,
    video: Option<(u16, VideoCodec)>,
    audio: Option<u16>,
    scte35: Option<u16>,
    pes: std::collections::HashMap<u16, Pes>,
    pes_started: u64,
    cc: std::collections::HashMap<u16, u8>,
    pub stats: DemuxStats,
}

impl TsDemuxer {
    /// The tracks found in the PMT so far.
    pub fn program(&self) -> Program {
        Program { video: self.video.map(|v| v.1), audio: self.audio.is_some(), scte35: false }
    }

    /// Feeds bytes (any split); appends what completed.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Demuxed>) {
        self.pending.extend_from_slice(data);
        let mut pos = 0;
        while self.pending.len() - pos >= TS_PACKET_LEN {
            if self.pending[pos] != TS_SYNC_BYTE {
                self.stats.resyncs += 1;
                pos += self.pending[pos..].iter().position(|&b| b == TS_SYNC_BYTE).unwrap_or(self.pending.len() - pos);
                continue;
            }
            let packet: [u8; TS_PACKET_LEN] =
                self.pending[pos..pos + TS_PACKET_LEN].try_into().expect("a whole packet is there");
            self.packet(&packet, out);
            pos += TS_PACKET_LEN;
        }
        self.pending.drain(..pos);
    }

    /// End of input: the last PES of each stream is complete.
    pub fn flush(&mut self, out: &mut Vec<Demuxed>) {
        // In the order they started, not the map's.
        let mut pids: Vec<(u64, u16)> = self.pes.iter().map(|(&pid, p)| (p.started, pid)).collect();
        pids.sort_unstable();
        for (_, pid) in pids {
            self.finish_pes(pid, out);
        }
    }

    fn packet(&mut self, p: &[u8; TS_PACKET_LEN], out: &mut Vec<Demuxed>) {
        self.stats.packets += 1;
        if p[1] & 0x80 != 0 {
            return; // transport error indicator
        }
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        let afc = (p[3] >> 4) & 0x03;
        let cc = p[3] & 0x0f;
        let mut start = 4;
        let mut random_access = false;
        if afc & 0x02 != 0 {
            let af_len = usize::from(p[4]);
            if af_len > 0 {
                random_access = p[5] & 0x40 != 0;
            }
            start = 5 + af_len;
        }
        if afc & 0x01 == 0 || start >= TS_PACKET_LEN {
            return;
        }
        if afc & 0x01 != 0
            && let Some(prev) = self.cc.insert(pid, cc)
            && cc != (prev + 1) & 0x0f
            && cc != prev
        {
            self.stats.continuity_errors += 1;
        }
        let payload = &p[start..];
        if pid == 0 || Some(pid) == self.pmt_pid || Some(pid) == self.scte35 {
            self.psi(pid, pusi, payload, out);
        } else if Some(pid) == self.video.map(|v| v.0) || Some(pid) == self.audio {
            if pusi {
                self.finish_pes(pid, out);
                self.pes_started += 1;
                let started = self.pes_started;
                self.pes.insert(pid, Pes { started, buf: Vec::new(), random_access, overflow: false });
            }
            if let Some(pes) = self.pes.get_mut(&pid) {
                if pes.buf.len() + payload.len() > MAX_PES {
                    pes.overflow = true;
                } else {
                    pes.buf.extend_from_slice(payload);
                }
            }
        }
    }

    /// A PSI section that fits one packet (PAT, PMT and SCTE-35 practically do).
    fn psi(&mut self, pid: u16, pusi: bool, payload: &[u8], out: &mut Vec<Demuxed>) {
        if !pusi {
            return;
        }
        let Some(&pointer) = payload.first() else { return };
        let Some(section) = payload.get(1 + usize::from(pointer)..) else { return };
        if section.len() < 3 {
            return;
        }
        let len = usize::from(section[1] & 0x0f) << 8 | usize::from(section[2]);
        let Some(section) = section.get(..3 + len) else {
            self.stats.bad_sections += 1;
            return;
        };
        if len < 4 || crc32_mpeg2(section) != 0 {
            // The CRC over a section including its CRC is zero.
            self.stats.bad_sections += 1;
            return;
        }
        let body = &section[..section.len() - 4];
        match section[0] {
            0x00 if pid == 0 => {
                // PAT: the first program's PMT.
                for entry in body.get(8..).unwrap_or(&[]).chunks_exact(4) {
                    let program = u16::from_be_bytes([entry[0], entry[1]]);
                    if program != 0 {
                        self.pmt_pid = Some(u16::from(entry[2] & 0x1f) << 8 | u16::from(entry[3]));
                        break;
                    }
                }
            }
            0x02 => {
                let Some(&info_hi) = body.get(10) else { return };
                let info_len = usize::from(info_hi & 0x0f) << 8 | usize::from(*body.get(11).unwrap_or(&0));
                let mut es = body.get(12 + info_len..).unwrap_or(&[]);
                while es.len() >= 5 {
                    let stream_type = es[0];
                    let es_pid = u16::from(es[1] & 0x1f) << 8 | u16::from(es[2]);
                    let es_info = usize::from(es[3] & 0x0f) << 8 | usize::from(es[4]);
                    match stream_type {
                        0x1b if self.video.is_none() => self.video = Some((es_pid, VideoCodec::H264)),
                        0x24 if self.video.is_none() => self.video = Some((es_pid, VideoCodec::Hevc)),
                        0x0f if self.audio.is_none() => self.audio = Some(es_pid),
                        0x86 => self.scte35 = Some(es_pid),
                        _ => {}
                    }
                    es = es.get(5 + es_info..).unwrap_or(&[]);
                }
            }
            0xfc => {
                if let Some(flags) = splice_flags(body) {
                    out.push(Demuxed::Cue(flags));
                }
            }
            _ => {}
        }
    }

    fn finish_pes(&mut self, pid: u16, out: &mut Vec<Demuxed>) {
        let Some(pes) = self.pes.remove(&pid) else { return };
        if pes.overflow {
            self.stats.bad_pes += 1;
            return;
        }
        let b = &pes.buf;
        if b.len() < 9 || b[..3] != [0, 0, 1] {
            if !b.is_empty() {
                self.stats.bad_pes += 1;
            }
            return;
        }
        let flags = b[7];
        let header_len = usize::from(b[8]);
        let Some(data) = b.get(9 + header_len..) else {
            self.stats.bad_pes += 1;
            return;
        };
        let ts = |at: usize| b.get(at..at + 5).and_then(|s| <&[u8; 5]>::try_from(s).ok()).map(read_timestamp);
        let Some(pts) = (flags & 0x80 != 0).then(|| ts(9)).flatten() else {
            self.stats.bad_pes += 1;
            return;
        };
        let dts = if flags & 0x40 != 0 { ts(14).unwrap_or(pts) } else { pts };
        let video = Some(pid) == self.video.map(|v| v.0);
        let frame = if video {
            let codec = self.video.map_or(VideoCodec::H264, |v| v.1);
            TsFrame {
                video: true,
                pts,
                dts,
                keyframe: pes.random_access || has_irap(data, codec),
                audio_frames: 0,
                sample_rate: 0,
                data: Bytes::copy_from_slice(data),
            }
        } else {
            let (audio_frames, sample_rate) = adts_frames(data);
            TsFrame {
                video: false,
                pts,
                dts,
                keyframe: true,
                audio_frames,
                sample_rate,
                data: Bytes::copy_from_slice(data),
            }
        };
        out.push(Demuxed::Frame(frame));
    }
}

/// Whether an Annex B access unit holds an IDR (H.264) or IRAP (HEVC) picture.
fn has_irap(data: &[u8], codec: VideoCodec) -> bool {
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let nal = data[i + 3];
            let irap = match codec {
                VideoCodec::H264 => nal & 0x1f == 5,
                VideoCodec::Hevc => (16..=21).contains(&((nal >> 1) & 0x3f)),
            };
            if irap {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

/// ADTS frames in an audio PES and their sample rate.
fn adts_frames(mut data: &[u8]) -> (u32, u32) {
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let mut n = 0;
    let mut rate = 48_000;
    while data.len() >= 7 && data[0] == 0xff && data[1] & 0xf0 == 0xf0 {
        rate = RATES.get(usize::from((data[2] >> 2) & 0x0f)).copied().unwrap_or(rate);
        let len = usize::from(data[3] & 0x03) << 11 | usize::from(data[4]) << 3 | usize::from(data[5] >> 5);
        if len < 7 || len > data.len() {
            break;
        }
        n += 1;
        data = &data[len..];
    }
    (n.max(1), rate)
}

/// SCTE-35 splice_insert (command 0x05): out of network starts an ad break, back in
/// ends it. Other commands (time_signal needs segmentation descriptors) are ignored.
fn splice_flags(section: &[u8]) -> Option<PieceFlags> {
    // table_id, lengths (3), protocol_version, encrypted/pts_adjustment (5), cw_index,
    // tier + splice_command_length (3), splice_command_type.
    if section.len() < 14 || section[4] != 0 || section[5] & 0x80 != 0 {
        return None;
    }
    if section[13] != 0x05 {
        return None;
    }
    let cmd = section.get(14..)?;
    // splice_event_id (4), cancel indicator, then out_of_network_indicator.
    if cmd.len() < 6 || cmd[4] & 0x80 != 0 {
        return None;
    }
    Some(if cmd[5] & 0x80 != 0 { PieceFlags::AD_BREAK_START } else { PieceFlags::AD_BREAK_END })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ts::TsMuxer;
    use crate::media::{Frame, Payload, Track};

    #[test]
    fn our_own_mux_demuxes_to_the_same_frames() {
        let program = Program { video: Some(VideoCodec::H264), audio: true, scte35: false };
        let mut mux = TsMuxer::new(program);
        let mut ts = Vec::new();
        mux.write_tables(&mut ts);
        let idr = Bytes::from_static(&[0, 0, 0, 1, 0x65, 1, 2, 3]);
        let frames = [
            Frame {
                track: Track::Video,
                dts_ms: 0,
                cts_ms: 40,
                keyframe: true,
                duration_ms: 40,
                data: idr.clone().into(),
            },
            Frame {
                track: Track::Audio,
                dts_ms: 10,
                cts_ms: 0,
                keyframe: true,
                duration_ms: 21,
                // As an RTMP audio frame is kept: its ADTS header apart from the raw AAC.
                data: Payload::Adts {
                    header: [0xff, 0xf1, 0x4c, 0x80, 0x01, 0x1f, 0xfc],
                    raw: Bytes::from_static(&[9]),
                },
            },
            Frame {
                track: Track::Video,
                dts_ms: 40,
                cts_ms: 0,
                keyframe: false,
                duration_ms: 40,
                data: Bytes::from(vec![0u8; 1000]).into(),
            },
        ];
        for f in &frames {
            mux.write_frame(f, &mut ts);
        }
        let mut d = TsDemuxer::default();
        let mut out = Vec::new();
        // Fed in awkward pieces, with garbage in front.
        d.push(&[1, 2, 3], &mut out);
        for chunk in ts.chunks(100) {
            d.push(chunk, &mut out);
        }
        d.flush(&mut out);
        assert_eq!(d.program(), Program { video: Some(VideoCodec::H264), audio: true, scte35: false });
        let got: Vec<TsFrame> = out
            .into_iter()
            .filter_map(|e| match e {
                Demuxed::Frame(f) => Some(f),
                Demuxed::Cue(_) => None,
            })
            .collect();
        assert_eq!(got.len(), 3);
        assert!(got[0].video && got[0].keyframe && got[0].pts == got[0].dts + 40 * 90);
        assert_eq!(got[0].data, idr);
        assert!(!got[1].video && got[1].audio_frames == 1 && got[1].sample_rate == 48_000);
        assert_eq!(&got[1].data[..], &[0xff, 0xf1, 0x4c, 0x80, 0x01, 0x1f, 0xfc, 9]);
        assert!(got[2].video && !got[2].keyframe && got[2].data.len() == 1000);
        assert_eq!(d.stats.resyncs, 1);
        assert_eq!(d.stats.continuity_errors, 0);
    }

    #[test]
    fn scte35_splice_insert_marks_ad_breaks() {
        let mut mux = TsMuxer::new(Program { video: Some(VideoCodec::H264), audio: false, scte35: true });
        let mut ts = Vec::new();
        mux.write_tables(&mut ts);
        for out_of_network in [true, false] {
            let mut s = vec![0xfc, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xf0, 0x05];
            s.extend_from_slice(&[0, 0, 0, 1, 0x7f, if out_of_network { 0xff } else { 0x7f }]);
            s.extend_from_slice(&[0, 0]); // descriptor loop length
            let len = s.len() - 3 + 4;
            s[1] = 0x30 | (len >> 8) as u8;
            s[2] = len as u8;
            let crc = crc32_mpeg2(&s);
            s.extend_from_slice(&crc.to_be_bytes());
            mux.write_scte35(&s, &mut ts);
        }
        let mut d = TsDemuxer::default();
        let mut out = Vec::new();
        d.push(&ts, &mut out);
        assert_eq!(out, vec![Demuxed::Cue(PieceFlags::AD_BREAK_START), Demuxed::Cue(PieceFlags::AD_BREAK_END)]);
    }
}
