//! The recorded fixture (4 s of ffmpeg `testsrc` + `sine`, H.264 High with B-frames,
//! AAC, one keyframe a second) through the FLV remuxer and the segmenter.

use std::collections::HashMap;
use std::sync::Arc;

use ingest::media::flv::{self, TAG_AUDIO, TAG_VIDEO};
use ingest::media::remux::{FlvRemuxer, Remuxed};
use ingest::media::timeline::{JumpLimits, Timeline};
use ingest::media::ts::{PID_AUDIO, PID_PAT, PID_PMT, PID_VIDEO, read_timestamp};
use ingest::{Segmenter, SegmenterConfig};
use swarm::piece::{ChannelKeypair, Piece, PieceFlags, TS_PACKET_LEN};

const FIXTURE: &[u8] = include_bytes!("fixtures/testsrc-h264-aac-4s.flv");

fn remux(cfg: SegmenterConfig) -> (Vec<Piece>, ChannelKeypair, ingest::SegmenterStats) {
    let key = ChannelKeypair::from_secret_bytes(&[7; 32]);
    let mut seg = Segmenter::new(cfg, Arc::new(ChannelKeypair::from_secret_bytes(&[7; 32])), 1_000);
    let mut remuxer = FlvRemuxer::default();
    let mut timeline = Timeline::rtmp(JumpLimits::default());
    let mut pieces = Vec::new();
    for (i, tag) in flv::read_file(FIXTURE).expect("fixture is a valid FLV").into_iter().enumerate() {
        let out = match tag.kind {
            TAG_VIDEO => remuxer.push_video(&mut timeline, tag.timestamp, tag.body),
            TAG_AUDIO => remuxer.push_audio(&mut timeline, tag.timestamp, tag.body),
            _ => continue,
        };
        seg.set_program(remuxer.program());
        let now_us = i as u64 * 1_000;
        match out.expect("fixture tags are valid") {
            Remuxed::Frame(f) => seg.push(&f, now_us, &mut pieces),
            Remuxed::DiscontinuityThen(f) => {
                seg.discontinuity(now_us, &mut pieces);
                seg.push(&f, now_us, &mut pieces);
            }
            Remuxed::Nothing => {}
        }
    }
    seg.close(u64::MAX / 2, &mut pieces);
    let stats = seg.stats().clone();
    (pieces, key, stats)
}

fn pid(p: &[u8]) -> u16 {
    u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])
}

/// PTS (90 kHz) of every PES that starts in `pid` in these packets.
fn pes_pts(packets: &[&[u8]], want: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for p in packets.iter().filter(|p| pid(p) == want && p[1] & 0x40 != 0) {
        let start = if p[3] & 0x20 != 0 { 5 + usize::from(p[4]) } else { 4 };
        let pes = &p[start..];
        assert_eq!(&pes[..3], &[0, 0, 1], "PES start code");
        out.push(read_timestamp(pes[9..14].try_into().expect("5 bytes")));
    }
    out
}

#[test]
fn pieces_are_signed_keyframe_aligned_and_continuous() {
    let (pieces, key, stats) = remux(SegmenterConfig::default());
    assert!(!pieces.is_empty());
    // Signed by the channel, consecutive sequence numbers from the one given.
    for (i, p) in pieces.iter().enumerate() {
        p.verify(&key.id()).expect("every piece verifies");
        assert_eq!(p.seq(), 1_000 + i as u64);
    }
    // 4 s at one keyframe a second: 4 segments (the fixture's last GOP may be cut short).
    let starts: Vec<&Piece> = pieces.iter().filter(|p| p.flags().contains(PieceFlags::SEGMENT_START)).collect();
    assert_eq!(starts.len(), 4, "segment starts");
    assert_eq!(stats.segments, 4);
    assert!(pieces[0].flags().contains(PieceFlags::SEGMENT_START));
    assert_eq!(stats.keyframe_interval_ms, Some(1_000));
    assert_eq!(stats.frames_dropped_before_keyframe, 0);
    assert_eq!(stats.long_gops, 0);

    let mut cc: HashMap<u16, u8> = HashMap::new();
    let mut video_pts = Vec::new();
    let mut audio_pes = 0;
    for p in &pieces {
        let packets: Vec<&[u8]> = p.payload().chunks(TS_PACKET_LEN).collect();
        if p.flags().contains(PieceFlags::SEGMENT_START) {
            // PAT, PMT, then a video PES starting on a random access point.
            assert_eq!(pid(packets[0]), PID_PAT);
            assert_eq!(pid(packets[1]), PID_PMT);
            assert_eq!(pid(packets[2]), PID_VIDEO);
            assert_eq!(packets[2][1] & 0x40, 0x40, "payload unit start");
            assert_eq!(packets[2][5] & 0x40, 0x40, "random access indicator");
        }
        // Continuity counters run on across pieces, per PID.
        for pk in &packets {
            let counter = pk[3] & 0x0f;
            if let Some(prev) = cc.insert(pid(pk), counter) {
                assert_eq!(counter, (prev + 1) & 0x0f, "continuity counter on PID {:#x}", pid(pk));
            }
        }
        let pts = pes_pts(&packets, PID_VIDEO);
        // Each piece spans at most 250 ms of video (in practice ~50 ms: 1-2 frames).
        if let (Some(lo), Some(hi)) = (pts.iter().min(), pts.iter().max()) {
            assert!(hi - lo <= 250 * 90, "piece {} spans {} ms", p.seq(), (hi - lo) / 90);
        }
        video_pts.extend(pts);
        audio_pes += pes_pts(&packets, PID_AUDIO).len();
    }
    // Every frame made it: 100 video frames (25 fps × 4 s); AAC at 48 kHz ≈ 47/s.
    assert_eq!(video_pts.len(), 100);
    assert!((185..=195).contains(&audio_pes), "{audio_pes} audio frames");
    // B-frames: presentation order differs from decode order, yet all PTS distinct.
    let mut sorted = video_pts.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 100);
    assert_ne!(sorted, video_pts, "B-frames reorder presentation");
    // ~50 ms pieces: 4 s makes about 80.
    assert!((60..=110).contains(&pieces.len()), "{} pieces", pieces.len());
}

#[test]
fn piece_size_limit_splits_big_frames_without_losing_bytes() {
    let (small, _, _) = remux(SegmenterConfig { max_piece_packets: 4, ..SegmenterConfig::default() });
    let (normal, _, _) = remux(SegmenterConfig::default());
    assert!(small.iter().all(|p| p.payload().len() <= 4 * TS_PACKET_LEN));
    let bytes = |ps: &[Piece]| ps.iter().map(|p| p.payload().len()).sum::<usize>();
    assert_eq!(bytes(&small), bytes(&normal));
    assert!(small.len() > normal.len());
}

/// Decodes the concatenated pieces with ffmpeg, when it is installed (CI installs it).
#[test]
fn ffmpeg_decodes_every_frame() {
    if std::process::Command::new("ffmpeg").arg("-version").output().is_err() {
        assert!(std::env::var_os("SHOAL_REQUIRE_FFMPEG").is_none(), "ffmpeg is required here but not installed");
        eprintln!("SKIPPED ffmpeg_decodes_every_frame: ffmpeg is not installed (CI installs it)");
        return;
    }
    let (pieces, _, _) = remux(SegmenterConfig::default());
    let dir = std::env::temp_dir().join(format!("shoal-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The whole stream, and a viewer's join at the second segment start.
    assert_eq!(decoded_frames(&dir.join("all.ts"), &pieces), 100);
    let join = pieces.iter().filter(|p| p.flags().contains(PieceFlags::SEGMENT_START)).nth(1).expect("2 segments");
    let from = pieces.iter().position(|p| p.seq() == join.seq()).expect("held");
    assert_eq!(decoded_frames(&dir.join("join.ts"), &pieces[from..]), 75);
    std::fs::remove_dir_all(&dir).ok();
}

/// Frames of the video stream ffmpeg decodes from these pieces, failing on any error.
fn decoded_frames(ts: &std::path::Path, pieces: &[Piece]) -> u32 {
    let bytes: Vec<u8> = pieces.iter().flat_map(|p| p.payload().iter().copied()).collect();
    std::fs::write(ts, bytes).expect("write ts");
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-xerror", "-v", "error", "-i"])
        .arg(ts)
        .args(["-map", "0", "-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr));
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"])
        .args(["-of", "csv=p=0"])
        .arg(ts)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout);
    // One line for the stream (and one more for the program it belongs to).
    let frames: u32 =
        text.lines().find_map(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("frame count in {text:?}"));
    frames
}
