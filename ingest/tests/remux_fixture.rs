//! The recorded fixture (4 s of ffmpeg `testsrc` + `sine`, H.264 High with B-frames,
//! AAC, one keyframe a second) through the FLV remuxer and the segmenter.

use std::collections::HashMap;
use std::sync::Arc;

use ingest::SegmenterConfig;
use ingest::media::cutter::FlvCutter;
use ingest::media::epoch::{Epoch, FeedClock};
use ingest::media::flv;
use ingest::media::ts::{PID_AUDIO, PID_PAT, PID_PMT, PID_VIDEO, read_timestamp};
use swarm::piece::{ChannelKeypair, Piece, PieceFlags, TS_PACKET_LEN};
use swarm::ts_out::TsOut;

const FIXTURE: &[u8] = include_bytes!("fixtures/testsrc-h264-aac-4s.flv");

/// Wall time of the fixture's first tag.
const T0: u64 = 1_800_000_000_000_000;

/// The epoch the fixture is cut on: its first tag is time 0, sequence number 1,000.
fn epoch(piece_ms: u32) -> Epoch {
    let first = flv::read_file(FIXTURE).expect("fixture is a valid FLV")[0].timestamp;
    Epoch {
        number: 1,
        clock: FeedClock::Rtmp,
        raw0: u64::from(first),
        seq0: 1_000,
        wall0_us: T0,
        piece_ms,
        cut_at_us: 0,
    }
}

/// The fixture's tags from the `skip`-th on, cut by a node that starts reading there.
fn cut_from(cfg: SegmenterConfig, skip: usize) -> (Vec<Piece>, ingest::SegmenterStats) {
    let tags = flv::read_file(FIXTURE).expect("fixture is a valid FLV");
    let e = epoch(cfg.piece_ms);
    let now = T0 + u64::from(tags[skip].timestamp - tags[0].timestamp) * 1_000;
    let mut cutter = FlvCutter::new(cfg, Arc::new(ChannelKeypair::from_secret_bytes(&[7; 32])), e, now);
    let mut pieces = Vec::new();
    // An encoder sends its sequence headers (AVC and AAC packet type 0) first on every
    // connection; then the media from where this node came in.
    let configs = tags[..skip].iter().filter(|t| t.body.get(1) == Some(&0));
    for tag in configs.chain(&tags[skip..]) {
        let body = bytes::Bytes::copy_from_slice(tag.body);
        cutter.push(tag.kind, tag.timestamp, &body, &mut pieces).expect("fixture tags are valid");
    }
    cutter.segmenter.flush(&mut pieces);
    (pieces, cutter.segmenter.stats().clone())
}

fn remux(cfg: SegmenterConfig) -> (Vec<Piece>, ChannelKeypair, ingest::SegmenterStats) {
    let (pieces, stats) = cut_from(cfg, 0);
    (pieces, ChannelKeypair::from_secret_bytes(&[7; 32]), stats)
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
    // Signed by the channel; numbered by the epoch's 50 ms grid from its first number,
    // one after another (every cell of an A/V feed holds a frame).
    for (i, p) in pieces.iter().enumerate() {
        p.verify(&key.id()).expect("every piece verifies");
        assert_eq!(p.seq(), 1_000 + i as u64);
    }
    // Timestamps are the wall time the piece's media ends on the epoch's clock.
    let last = pieces.last().expect("pieces");
    assert!((T0 + 3_900_000..=T0 + 4_100_000).contains(&last.timestamp_us()), "{}", last.timestamp_us() - T0);
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
        // Continuity counters start at 0 with each segment and run on within it, per PID.
        if p.flags().contains(PieceFlags::SEGMENT_START) {
            cc.clear();
        }
        for pk in &packets {
            let counter = pk[3] & 0x0f;
            let want = cc.get(&pid(pk)).map_or(0, |prev| (prev + 1) & 0x0f);
            assert_eq!(counter, want, "continuity counter on PID {:#x}", pid(pk));
            cc.insert(pid(pk), counter);
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

/// Frames of the video stream ffmpeg decodes from these pieces played back to back (as
/// `/live.ts` and the viewer write them: counters renumbered), failing on any error.
fn decoded_frames(ts: &std::path::Path, pieces: &[Piece]) -> u32 {
    let mut out = TsOut::default();
    let bytes: Vec<u8> =
        pieces.iter().flat_map(|p| out.write(p.payload(), p.flags().contains(PieceFlags::DISCONTINUITY))).collect();
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

/// The heart of main/backup ingest: a node that starts reading the feed mid-stream cuts,
/// from its second keyframe on, exactly the pieces of a node that read it from the
/// start — same numbers, same bytes, same signatures.
#[test]
fn a_node_that_joins_mid_stream_cuts_the_same_pieces() {
    let (reference, _) = cut_from(SegmenterConfig::default(), 0);
    let tags = flv::read_file(FIXTURE).expect("fixture");
    // Keyframes come every second for 4 s: joiners before 2 s publish from their second.
    for skip in [7, tags.len() / 8, tags.len() / 4, tags.len() / 3] {
        assert!(tags[skip].timestamp > tags[0].timestamp, "tag {skip} is past the epoch's start");
        let (joined, stats) = cut_from(SegmenterConfig::default(), skip);
        assert!(!joined.is_empty(), "joining at tag {skip}: nothing cut");
        assert!(joined[0].flags().contains(PieceFlags::SEGMENT_START), "a joiner publishes from a segment start");
        assert!(stats.pieces_withheld > 0, "its first segment is withheld");
        let from = reference.iter().position(|p| p.seq() == joined[0].seq()).expect("same numbers");
        assert_eq!(reference.len() - from, joined.len(), "joining at tag {skip}");
        for (a, b) in reference[from..].iter().zip(&joined) {
            assert_eq!(a.wire(), b.wire(), "piece {} differs (joined at tag {skip})", a.seq());
        }
    }
    // A node whose first tag is the epoch's first cuts everything the same.
    let (again, _) = cut_from(SegmenterConfig::default(), 0);
    assert_eq!(
        reference.iter().map(|p| p.wire().clone()).collect::<Vec<_>>(),
        again.iter().map(|p| p.wire().clone()).collect::<Vec<_>>()
    );
}

/// The fixture's pieces, byte for byte, are what ingest cut before: nodes of two
/// versions cut one feed side by side during a rolling upgrade (or a main and a
/// backup ingest), and a viewer takes each number from whichever it reaches, so
/// changing how pieces are written — even to equivalent TS — splits the swarm. The
/// digest moves only with a deliberate change of the cut bytes (say so in the notes).
#[test]
fn the_fixture_is_cut_to_the_same_bytes_as_before() {
    let (pieces, _, _) = remux(SegmenterConfig::default());
    let mut all = blake3::Hasher::new();
    for p in &pieces {
        all.update(p.wire());
    }
    assert_eq!(pieces.len(), 82);
    assert_eq!(all.finalize().to_hex().as_str(), "ff769650f09ff3ae13872dda54e57bc9f15f5221d545faf002baee900122c6b2");
}
