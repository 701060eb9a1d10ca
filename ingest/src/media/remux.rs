//! RTMP/FLV tags to frames (the hub places them on the channel's timeline).

use std::sync::Arc;

use bytes::Bytes;

use super::codec::{AacConfig, CodecError, VideoConfig};
use super::flv::{self, AudioTag, FlvError, VideoTag};
use super::ts::Program;
use super::{Frame, Payload, Track, VideoCodec};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemuxError {
    #[error(transparent)]
    Flv(#[from] FlvError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// What one tag produced.
#[derive(Debug, Clone)]
pub enum Remuxed {
    /// A frame and the tag's raw timestamp: its `dts_ms` (and a video frame's
    /// `duration_ms`) are set when the hub places it on the channel's timeline.
    Frame { raw: u64, frame: Frame },
    /// A configuration or a tag without media.
    Nothing,
}

/// Per-session state: codec configurations.
#[derive(Debug, Default)]
pub struct FlvRemuxer {
    video: Option<Arc<VideoConfig>>,
    audio: Option<AacConfig>,
}

impl FlvRemuxer {
    /// The tracks configured so far.
    pub fn program(&self) -> Program {
        Program { video: self.video.as_ref().map(|v| v.codec), audio: self.audio.is_some(), scte35: false }
    }

    pub fn video_codec(&self) -> Option<VideoCodec> {
        self.video.as_ref().map(|v| v.codec)
    }

    /// A video tag's body (an RTMP message): a frame keeps its NAL units as a slice of
    /// it, no copy.
    pub fn push_video(&mut self, timestamp: u32, body: &Bytes) -> Result<Remuxed, RemuxError> {
        match flv::parse_video(body)? {
            VideoTag::Config { codec, record } => {
                self.video = Some(Arc::new(match codec {
                    VideoCodec::H264 => VideoConfig::from_avc_record(record)?,
                    VideoCodec::Hevc => VideoConfig::from_hevc_record(record)?,
                }));
                Ok(Remuxed::Nothing)
            }
            VideoTag::Frame { keyframe, cts_ms, nalus, .. } => {
                let cfg = self.video.as_ref().ok_or(CodecError::NoConfig)?;
                let frame = Frame {
                    track: Track::Video,
                    dts_ms: 0,
                    cts_ms: cts_ms.max(0),
                    keyframe,
                    duration_ms: 0,
                    data: Payload::Nalus(cfg.nalus(body.slice_ref(nalus), keyframe)?),
                };
                Ok(Remuxed::Frame { raw: u64::from(timestamp), frame })
            }
            VideoTag::EndOfSequence | VideoTag::Ignored => Ok(Remuxed::Nothing),
        }
    }

    /// An audio tag's body: a frame keeps the raw AAC as a slice of it.
    pub fn push_audio(&mut self, timestamp: u32, body: &Bytes) -> Result<Remuxed, RemuxError> {
        match flv::parse_audio(body)? {
            AudioTag::AacConfig(asc) => {
                self.audio = Some(AacConfig::from_audio_specific_config(asc)?);
                Ok(Remuxed::Nothing)
            }
            AudioTag::AacFrame(raw) => {
                let cfg = self.audio.ok_or(CodecError::NoConfig)?;
                let frame = Frame {
                    track: Track::Audio,
                    dts_ms: 0,
                    cts_ms: 0,
                    keyframe: true,
                    duration_ms: (cfg.frame_us() / 1_000) as u32,
                    data: Payload::Adts { header: cfg.adts_header(raw.len())?, raw: body.slice_ref(raw) },
                };
                Ok(Remuxed::Frame { raw: u64::from(timestamp), frame })
            }
        }
    }
}

/// An ad-break edge announced in RTMP script data: `onCuePoint` (Adobe's cue points,
/// as Wirecast, vMix and AWS Elemental send them: a `name`, `type` or `cue` of
/// `cue-out`/`cue-in`, possibly under `parameters`), or the shorthand commands
/// `onCueOut`/`onCueIn`, `onAdStart`/`onAdEnd`. `None` for everything else
/// (`onMetaData`, captions, unknown cues).
pub fn script_cue(body: &[u8]) -> Option<swarm::piece::PieceFlags> {
    use super::amf0::{self, Amf0};
    use swarm::piece::PieceFlags;
    let values = amf0::decode_all(body).ok()?;
    let mut iter = values.iter();
    let mut name = iter.next()?.as_str()?;
    if name == "@setDataFrame" {
        name = iter.next()?.as_str()?;
    }
    let word = |s: &str| -> Option<PieceFlags> {
        match s.to_ascii_lowercase().replace(['-', '_', ' '], "").as_str() {
            "cueout" | "spliceout" | "adstart" | "adbreakstart" | "out" => Some(PieceFlags::AD_BREAK_START),
            "cuein" | "splicein" | "adend" | "adbreakend" | "in" => Some(PieceFlags::AD_BREAK_END),
            _ => None,
        }
    };
    match name {
        "onCueOut" | "onAdStart" => return Some(PieceFlags::AD_BREAK_START),
        "onCueIn" | "onAdEnd" => return Some(PieceFlags::AD_BREAK_END),
        "onCuePoint" => {}
        _ => return None,
    }
    let info = iter.next()?;
    for scope in [Some(info), info.get("parameters")].into_iter().flatten() {
        for key in ["cue", "type", "name"] {
            if let Some(flags) = scope.get(key).and_then(Amf0::as_str).and_then(word) {
                return Some(flags);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::script_cue;
    use crate::media::amf0::Amf0;
    use swarm::piece::PieceFlags;

    fn script(values: &[Amf0]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            v.encode(&mut out);
        }
        out
    }

    #[test]
    fn cue_points_become_ad_break_flags() {
        let obj = |k: &str, v: &str| Amf0::Object(vec![(k.into(), Amf0::String(v.into()))]);
        let on = |v: Amf0| script(&[Amf0::String("onCuePoint".into()), v]);
        assert_eq!(script_cue(&on(obj("name", "cue-out"))), Some(PieceFlags::AD_BREAK_START));
        assert_eq!(script_cue(&on(obj("type", "CUE_IN"))), Some(PieceFlags::AD_BREAK_END));
        let nested = Amf0::Object(vec![
            ("name".into(), Amf0::String("scte35".into())),
            ("parameters".into(), Amf0::Object(vec![("cue".into(), Amf0::String("out".into()))])),
        ]);
        assert_eq!(script_cue(&on(nested)), Some(PieceFlags::AD_BREAK_START));
        assert_eq!(script_cue(&script(&[Amf0::String("onCueIn".into())])), Some(PieceFlags::AD_BREAK_END));
        assert_eq!(script_cue(&script(&[Amf0::String("onMetaData".into()), obj("width", "1")])), None);
        assert_eq!(script_cue(&on(obj("name", "chapter-2"))), None);
        assert_eq!(script_cue(&[0xff, 0x00]), None);
    }
}
