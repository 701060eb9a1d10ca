//! Codec plumbing: decoder configuration records to parameter sets, length-prefixed
//! NAL units to Annex B (what MPEG-TS carries), raw AAC to ADTS.

use std::sync::Arc;

use bytes::Bytes;

use super::{ByteReader, Truncated, VideoCodec};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error(transparent)]
    Truncated(#[from] Truncated),
    #[error("decoder configuration record version {0} (expected 1)")]
    RecordVersion(u8),
    #[error("NAL unit length field of {0} bytes (must be 1, 2 or 4)")]
    LengthSize(usize),
    #[error("a frame arrived before the codec configuration (sequence header)")]
    NoConfig,
    #[error("AAC AudioSpecificConfig with object type {0} (ingest takes AAC LC, HE-AAC)")]
    AacObjectType(u8),
    #[error("AAC AudioSpecificConfig with sampling frequency index {0}")]
    AacFrequency(u8),
    #[error("AAC frame of {0} bytes does not fit an ADTS header")]
    AacFrameTooLong(usize),
}

/// What turning a video frame into Annex B needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    /// Bytes of each NAL unit's length prefix.
    pub length_size: usize,
    /// Parameter sets (VPS/SPS/PPS) to put before every keyframe, in order.
    pub parameter_sets: Vec<Vec<u8>>,
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Bytes of an ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;

impl VideoConfig {
    /// From an AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3.1).
    pub fn from_avc_record(record: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(record, "AVC configuration record");
        let version = r.u8()?;
        if version != 1 {
            return Err(CodecError::RecordVersion(version));
        }
        r.take(3)?; // profile, compatibility, level
        let length_size = usize::from(r.u8()? & 0x03) + 1;
        let mut parameter_sets = Vec::new();
        let n_sps = r.u8()? & 0x1f;
        for _ in 0..n_sps {
            let len = usize::from(r.u16()?);
            parameter_sets.push(r.take(len)?.to_vec());
        }
        let n_pps = r.u8()?;
        for _ in 0..n_pps {
            let len = usize::from(r.u16()?);
            parameter_sets.push(r.take(len)?.to_vec());
        }
        Self::checked(VideoCodec::H264, length_size, parameter_sets)
    }

    /// From an HEVCDecoderConfigurationRecord (ISO 14496-15 §8.3.3.1).
    pub fn from_hevc_record(record: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(record, "HEVC configuration record");
        let version = r.u8()?;
        if version != 1 {
            return Err(CodecError::RecordVersion(version));
        }
        r.take(20)?; // profile, tier, level, constraint flags, ..., up to lengthSizeMinusOne
        let length_size = usize::from(r.u8()? & 0x03) + 1;
        let n_arrays = r.u8()?;
        let mut parameter_sets = Vec::new();
        for _ in 0..n_arrays {
            r.u8()?; // array completeness, NAL unit type
            let n = r.u16()?;
            for _ in 0..n {
                let len = usize::from(r.u16()?);
                parameter_sets.push(r.take(len)?.to_vec());
            }
        }
        Self::checked(VideoCodec::Hevc, length_size, parameter_sets)
    }

    fn checked(codec: VideoCodec, length_size: usize, parameter_sets: Vec<Vec<u8>>) -> Result<Self, CodecError> {
        if length_size == 3 {
            return Err(CodecError::LengthSize(3));
        }
        Ok(VideoConfig { codec, length_size, parameter_sets })
    }

    /// Checks one frame's length-prefixed NAL units (every length within the frame)
    /// and keeps them, with what writing them as one Annex B access unit takes
    /// ([`Nalus`]): nothing is copied here.
    pub fn nalus(self: &Arc<Self>, units: Bytes, keyframe: bool) -> Result<Nalus, CodecError> {
        let mut len = self.aud().len();
        if keyframe {
            len += self.parameter_sets.iter().map(|ps| START_CODE.len() + ps.len()).sum::<usize>();
        }
        let mut r = ByteReader::new(&units, "NAL unit");
        while r.remaining() > 0 {
            let nal = self.next_nal(&mut r)?;
            if self.kept(nal, keyframe) {
                len += START_CODE.len() + nal.len();
            }
        }
        Ok(Nalus { units, config: Arc::clone(self), keyframe, len })
    }

    /// The access unit delimiter each frame starts with.
    fn aud(&self) -> &'static [u8] {
        match self.codec {
            // AUD, primary_pic_type 7 (any).
            VideoCodec::H264 => &[0, 0, 0, 1, 0x09, 0xf0],
            // AUD (type 35), layer 0, tid 1; pic_type 2 (any).
            VideoCodec::Hevc => &[0, 0, 0, 1, 0x46, 0x01, 0x50],
        }
    }

    /// The next NAL unit after its length prefix.
    fn next_nal<'a>(&self, r: &mut ByteReader<'a>) -> Result<&'a [u8], CodecError> {
        let len = match self.length_size {
            1 => usize::from(r.u8()?),
            2 => usize::from(r.u16()?),
            _ => r.u32()? as usize,
        };
        Ok(r.take(len)?)
    }

    /// Whether a NAL unit of the frame is written: delimiters and parameter sets inside
    /// a keyframe are dropped (ours come first), as are empty units.
    fn kept(&self, nal: &[u8], keyframe: bool) -> bool {
        let Some(&first) = nal.first() else { return false };
        let skip = match self.codec {
            // AUD 9; SPS 7 and PPS 8 only where we inserted ours.
            VideoCodec::H264 => {
                let t = first & 0x1f;
                t == 9 || (keyframe && (t == 7 || t == 8))
            }
            // AUD 35; VPS 32, SPS 33, PPS 34.
            VideoCodec::Hevc => {
                let t = (first >> 1) & 0x3f;
                t == 35 || (keyframe && (32..=34).contains(&t))
            }
        };
        !skip
    }
}

/// One video frame's length-prefixed NAL units as they arrived (checked), written as
/// one Annex B access unit on the way into TS packets: an access unit delimiter, the
/// parameter sets before a keyframe (so a viewer can start decoding there), then each
/// NAL unit after a start code. The frame's bytes are copied once, into the piece.
#[derive(Debug, Clone)]
pub struct Nalus {
    units: Bytes,
    config: Arc<VideoConfig>,
    keyframe: bool,
    /// Bytes as Annex B.
    len: usize,
}

impl Nalus {
    /// Bytes as Annex B.
    pub fn annex_b_len(&self) -> usize {
        self.len
    }

    /// Appends the slices whose concatenation is the Annex B access unit.
    pub fn parts<'a>(&'a self, out: &mut Vec<&'a [u8]>) {
        let cfg = &self.config;
        out.push(cfg.aud());
        if self.keyframe {
            for ps in &cfg.parameter_sets {
                out.extend([&START_CODE[..], ps]);
            }
        }
        let mut r = ByteReader::new(&self.units, "NAL unit");
        // Checked when made ([`VideoConfig::nalus`]): no unit runs past the frame.
        while r.remaining() > 0
            && let Ok(nal) = cfg.next_nal(&mut r)
        {
            if cfg.kept(nal, self.keyframe) {
                out.extend([&START_CODE[..], nal]);
            }
        }
    }
}

/// AAC parameters from an AudioSpecificConfig, enough to write ADTS headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// MPEG-4 audio object type (2: AAC LC).
    pub object_type: u8,
    pub frequency_index: u8,
    pub channel_config: u8,
}

const AAC_RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

impl AacConfig {
    pub fn from_audio_specific_config(asc: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(asc, "AudioSpecificConfig");
        let b0 = r.u8()?;
        let b1 = r.u8()?;
        let object_type = b0 >> 3;
        let frequency_index = ((b0 & 0x07) << 1) | (b1 >> 7);
        let channel_config = (b1 >> 3) & 0x0f;
        // ADTS has two bits for the profile: object types 1..=4. HE-AAC (5, 29) is
        // signalled implicitly over an AAC LC core, which ADTS carries as profile LC.
        let object_type = match object_type {
            1..=4 => object_type,
            5 | 29 => 2,
            other => return Err(CodecError::AacObjectType(other)),
        };
        if usize::from(frequency_index) >= AAC_RATES.len() {
            return Err(CodecError::AacFrequency(frequency_index));
        }
        Ok(AacConfig { object_type, frequency_index, channel_config })
    }

    pub fn sample_rate(&self) -> u32 {
        AAC_RATES.get(usize::from(self.frequency_index)).copied().unwrap_or(48_000)
    }

    /// Duration of one AAC frame (1,024 samples), µs.
    pub fn frame_us(&self) -> u64 {
        1_024 * 1_000_000 / u64::from(self.sample_rate())
    }

    /// The ADTS header of a raw AAC frame of `raw_len` bytes.
    pub fn adts_header(&self, raw_len: usize) -> Result<[u8; ADTS_HEADER_LEN], CodecError> {
        let len = raw_len + ADTS_HEADER_LEN;
        if len >= 1 << 13 {
            return Err(CodecError::AacFrameTooLong(raw_len));
        }
        let profile = self.object_type - 1;
        Ok([
            0xff,
            0xf1, // MPEG-4, layer 0, no CRC
            (profile << 6) | (self.frequency_index << 2) | ((self.channel_config >> 2) & 0x01),
            ((self.channel_config & 0x03) << 6) | ((len >> 11) as u8 & 0x03),
            (len >> 3) as u8,
            ((len as u8 & 0x07) << 5) | 0x1f,
            0xfc, // buffer fullness 0x7ff (VBR), one raw data block
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_record_to_annex_b_with_parameter_sets_on_keyframes() {
        let record = [1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 0xAA, 1, 0, 1, 0x68];
        let cfg = VideoConfig::from_avc_record(&record).expect("valid record");
        assert_eq!(cfg.length_size, 4);
        assert_eq!(cfg.parameter_sets, vec![vec![0x67, 0xAA], vec![0x68]]);
        let cfg = Arc::new(cfg);
        let annex_b = |units: &'static [u8], keyframe: bool| -> Result<Vec<u8>, CodecError> {
            let nalus = cfg.nalus(Bytes::from_static(units), keyframe)?;
            let mut parts = Vec::new();
            nalus.parts(&mut parts);
            let out = parts.concat();
            assert_eq!(out.len(), nalus.annex_b_len());
            Ok(out)
        };
        // A keyframe: our delimiter and parameter sets, its own delimiter dropped.
        let key = annex_b(&[0, 0, 0, 2, 0x65, 0x11, 0, 0, 0, 2, 0x09, 0xf0], true).expect("valid frame");
        assert_eq!(key, [0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1, 0x67, 0xAA, 0, 0, 0, 1, 0x68, 0, 0, 0, 1, 0x65, 0x11]);
        // Not a keyframe: no parameter sets added, its own kept; empty units dropped.
        let other = annex_b(&[0, 0, 0, 1, 0x68, 0, 0, 0, 0, 0, 0, 0, 1, 0x41], false).expect("valid frame");
        assert_eq!(other, [0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1, 0x68, 0, 0, 0, 1, 0x41]);
        let truncated = annex_b(&[0, 0, 0, 9, 0x41], false);
        assert!(matches!(truncated, Err(CodecError::Truncated(_))));
        let torn_prefix = annex_b(&[0, 0, 0, 1, 0x41, 0, 0], false);
        assert!(matches!(torn_prefix, Err(CodecError::Truncated(_))));
    }

    #[test]
    fn adts_header_fields() {
        // AAC LC, 48 kHz, stereo.
        let cfg = AacConfig::from_audio_specific_config(&[0x11, 0x90]).expect("valid config");
        assert_eq!((cfg.object_type, cfg.frequency_index, cfg.channel_config), (2, 3, 2));
        assert_eq!(cfg.frame_us(), 21_333);
        assert_eq!(cfg.adts_header(100).expect("fits"), [0xff, 0xf1, 0x4c, 0x80, 0x0d, 0x7f, 0xfc]);
        assert!(matches!(cfg.adts_header(8_185), Err(CodecError::AacFrameTooLong(8_185))));
        assert!(AacConfig::from_audio_specific_config(&[0x11]).is_err());
    }
}
