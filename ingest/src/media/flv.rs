//! FLV tag bodies as RTMP carries them (video 9, audio 8, script data 18), and FLV
//! files for fixtures and benches. Legacy H.264 (codec id 7), the widespread HEVC
//! extension (codec id 12) and Enhanced RTMP (`avc1`, `hvc1` FourCCs); AAC audio.

use super::{ByteReader, Truncated, VideoCodec};

pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;

/// Why a tag body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlvError {
    #[error(transparent)]
    Truncated(#[from] Truncated),
    #[error("unsupported video codec id {0} (ingest takes H.264 and HEVC)")]
    VideoCodec(u8),
    #[error("unsupported Enhanced RTMP video FourCC {0:?} (ingest takes avc1 and hvc1)")]
    FourCc([u8; 4]),
    #[error("unsupported audio format {0} (ingest takes AAC)")]
    AudioFormat(u8),
    #[error("Enhanced RTMP multitrack video is not supported")]
    Multitrack,
    #[error("not an FLV file (bad signature or header)")]
    BadFileHeader,
}

/// What a video tag carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// Decoder configuration record (AVCDecoderConfigurationRecord / HEVC...).
    Config {
        codec: VideoCodec,
        record: &'a [u8],
    },
    /// One access unit of length-prefixed NAL units.
    Frame {
        codec: VideoCodec,
        keyframe: bool,
        cts_ms: i32,
        nalus: &'a [u8],
    },
    EndOfSequence,
    /// Command frames, metadata and other tags that carry no picture.
    Ignored,
}

/// What an audio tag carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AudioSpecificConfig.
    AacConfig(&'a [u8]),
    /// One raw AAC frame.
    AacFrame(&'a [u8]),
}

const CODEC_AVC: u8 = 7;
const CODEC_HEVC: u8 = 12;
const FRAME_KEY: u8 = 1;
const FRAME_COMMAND: u8 = 5;

pub fn parse_video(body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let mut r = ByteReader::new(body, "video tag");
    let b0 = r.u8()?;
    let frame_type = (b0 >> 4) & 0x07;
    if b0 & 0x80 != 0 {
        // Enhanced RTMP: packet type in the low nibble, then a FourCC.
        let packet_type = b0 & 0x0f;
        if packet_type == 6 {
            return Err(FlvError::Multitrack);
        }
        let fourcc: [u8; 4] = r.take(4)?.try_into().map_err(|_| FlvError::BadFileHeader)?;
        let codec = match &fourcc {
            b"avc1" => VideoCodec::H264,
            b"hvc1" => VideoCodec::Hevc,
            _ => return Err(FlvError::FourCc(fourcc)),
        };
        if frame_type == FRAME_COMMAND && packet_type != 0 {
            return Ok(VideoTag::Ignored);
        }
        return Ok(match packet_type {
            0 => VideoTag::Config { codec, record: r.rest() },
            1 => {
                let cts_ms = r.i24()?;
                VideoTag::Frame { codec, keyframe: frame_type == FRAME_KEY, cts_ms, nalus: r.rest() }
            }
            3 => VideoTag::Frame { codec, keyframe: frame_type == FRAME_KEY, cts_ms: 0, nalus: r.rest() },
            2 => VideoTag::EndOfSequence,
            _ => VideoTag::Ignored,
        });
    }
    let codec = match b0 & 0x0f {
        CODEC_AVC => VideoCodec::H264,
        CODEC_HEVC => VideoCodec::Hevc,
        other => return Err(FlvError::VideoCodec(other)),
    };
    if frame_type == FRAME_COMMAND {
        return Ok(VideoTag::Ignored);
    }
    let packet_type = r.u8()?;
    let cts_ms = r.i24()?;
    Ok(match packet_type {
        0 => VideoTag::Config { codec, record: r.rest() },
        1 => VideoTag::Frame { codec, keyframe: frame_type == FRAME_KEY, cts_ms, nalus: r.rest() },
        2 => VideoTag::EndOfSequence,
        _ => VideoTag::Ignored,
    })
}

const SOUND_AAC: u8 = 10;

pub fn parse_audio(body: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let mut r = ByteReader::new(body, "audio tag");
    let b0 = r.u8()?;
    let format = b0 >> 4;
    if format != SOUND_AAC {
        return Err(FlvError::AudioFormat(format));
    }
    Ok(match r.u8()? {
        0 => AudioTag::AacConfig(r.rest()),
        _ => AudioTag::AacFrame(r.rest()),
    })
}

/// One tag of an FLV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTag<'a> {
    pub kind: u8,
    /// Milliseconds, 32 bits as RTMP carries them.
    pub timestamp: u32,
    pub body: &'a [u8],
}

/// Reads the tags of an FLV file held in memory (fixtures, the ingest bench).
pub fn read_file(file: &[u8]) -> Result<Vec<FileTag<'_>>, FlvError> {
    let mut r = ByteReader::new(file, "FLV file");
    let header = r.take(9)?;
    if &header[..3] != b"FLV" {
        return Err(FlvError::BadFileHeader);
    }
    let offset = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
    let mut r = ByteReader::new(file.get(offset..).ok_or(FlvError::BadFileHeader)?, "FLV file");
    r.u32()?; // PreviousTagSize0
    let mut tags = Vec::new();
    while r.remaining() > 0 {
        let kind = r.u8()? & 0x1f;
        let size = r.u24()? as usize;
        let low = r.u24()?;
        let high = r.u8()?;
        r.u24()?; // stream id
        let body = r.take(size)?;
        r.u32()?; // PreviousTagSize
        tags.push(FileTag { kind, timestamp: (u32::from(high) << 24) | low, body });
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc_frame_with_negative_composition_time() {
        let body = [0x17, 1, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x65];
        match parse_video(&body) {
            Ok(VideoTag::Frame { codec: VideoCodec::H264, keyframe: true, cts_ms: -40, nalus }) => {
                assert_eq!(nalus, &[0, 0, 0, 1, 0x65])
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn enhanced_hevc_frames() {
        let body = [0x93, b'h', b'v', b'c', b'1', 0xAA];
        assert!(matches!(
            parse_video(&body),
            Ok(VideoTag::Frame { codec: VideoCodec::Hevc, keyframe: true, cts_ms: 0, .. })
        ));
        let body = [0x90, b'h', b'v', b'c', b'1', 1, 2];
        assert_eq!(parse_video(&body), Ok(VideoTag::Config { codec: VideoCodec::Hevc, record: &[1, 2] }));
        assert_eq!(parse_video(&[0x91, b'a', b'v', b'0', b'1']), Err(FlvError::FourCc(*b"av01")));
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(parse_video(&[0x12, 0]), Err(FlvError::VideoCodec(2)));
        assert_eq!(parse_audio(&[0x2f, 0]), Err(FlvError::AudioFormat(2)));
        assert!(matches!(parse_video(&[0x17, 1, 0]), Err(FlvError::Truncated(_))));
        assert!(matches!(parse_video(&[]), Err(FlvError::Truncated(_))));
    }
}
