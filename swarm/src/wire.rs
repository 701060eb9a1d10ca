//! The peer wire protocol: messages, their encoding, and the framing that stream and
//! datagram transports share. `PROTOCOL.md` is the specification; this file follows it.
//!
//! Every message travels as one *frame*: `length: u32 BE | kind: u8 | body`, where
//! `length` counts `kind` and `body`. On a stream, frames follow each other; a datagram
//! carries one or more whole frames, and a frame too big for one datagram is cut into
//! [`Fragment`] frames (see [`datagram`]).

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use crate::piece::{ChannelId, MAX_PIECE_LEN, Piece, PieceError};

/// Version spoken in [`Hello`]. A peer refuses any other with `Goodbye(BadVersion)`.
pub const PROTOCOL_VERSION: u16 = 2;
/// Most substreams a channel can be split into (one bit each in a `u64` mask).
pub const MAX_SUBSTREAMS: usize = 64;
/// Most sequence numbers in one [`Message::Request`].
pub const MAX_REQUEST_SEQS: usize = 32;
/// Most 64-bit words in a [`Message::HaveMap`] (1,024 pieces).
pub const MAX_HAVE_WORDS: usize = 16;
/// Largest frame body (`kind` + message): a maximal piece plus its kind byte.
pub const MAX_FRAME_LEN: usize = 1 + MAX_PIECE_LEN;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// A peer's self-chosen random identity, stable for one run of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl PeerId {
    /// The protocol id of a peer that announces to the tracker with the 20-byte
    /// BitTorrent `peer_id` `tracker_id`: the first 8 bytes of its BLAKE3, little-endian —
    /// what the tracker lists as its key (PROTOCOL.md §6).
    pub fn from_tracker_id(tracker_id: &[u8; 20]) -> PeerId {
        let h = blake3::hash(tracker_id);
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        PeerId(u64::from_le_bytes(b))
    }
}

/// What a peer is in the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A seed node: holds every piece from ingest, uploads on purpose.
    Seed,
    /// A viewer: plays the stream and re-shares it.
    Viewer,
}

/// Why a connection is closed; sent in [`Message::Goodbye`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoodbyeReason {
    /// Leaving (shutdown, channel change).
    Leaving,
    /// No room for another neighbour.
    Full,
    /// The peer's `Hello` named another channel.
    WrongChannel,
    /// The peer speaks another protocol version.
    BadVersion,
    /// A message could not be decoded or broke the protocol.
    Malformed,
    /// The peer sent a piece whose signature is wrong. Banned.
    Forged,
    /// The peer sent a piece or claim far outside the live window.
    OutOfWindow,
    /// Nothing useful from the peer for too long.
    Idle,
    /// Replaced by a better neighbour.
    Replaced,
    /// A second connection between the same two peers.
    Duplicate,
    /// More messages than any honest peer sends, or a run of pieces we already had.
    Flooding,
    /// A reason this build does not know.
    Other(u8),
}

impl GoodbyeReason {
    pub fn code(self) -> u8 {
        match self {
            GoodbyeReason::Leaving => 0,
            GoodbyeReason::Full => 1,
            GoodbyeReason::WrongChannel => 2,
            GoodbyeReason::BadVersion => 3,
            GoodbyeReason::Malformed => 4,
            GoodbyeReason::Forged => 5,
            GoodbyeReason::OutOfWindow => 6,
            GoodbyeReason::Idle => 7,
            GoodbyeReason::Replaced => 8,
            GoodbyeReason::Duplicate => 9,
            GoodbyeReason::Flooding => 10,
            GoodbyeReason::Other(c) => c,
        }
    }

    pub fn from_code(code: u8) -> Self {
        match code {
            0 => GoodbyeReason::Leaving,
            1 => GoodbyeReason::Full,
            2 => GoodbyeReason::WrongChannel,
            3 => GoodbyeReason::BadVersion,
            4 => GoodbyeReason::Malformed,
            5 => GoodbyeReason::Forged,
            6 => GoodbyeReason::OutOfWindow,
            7 => GoodbyeReason::Idle,
            8 => GoodbyeReason::Replaced,
            9 => GoodbyeReason::Duplicate,
            10 => GoodbyeReason::Flooding,
            c => GoodbyeReason::Other(c),
        }
    }
}

/// First message on every connection, both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub channel: ChannelId,
    pub peer_id: PeerId,
    pub role: Role,
    /// Whether the sender accepts incoming connections (not behind NAT).
    pub reachable: bool,
    /// How many substreams the sender splits the channel into.
    pub n_substreams: u8,
    /// Upload capacity the sender offers to the swarm, kbit/s.
    pub upload_kbps: u32,
}

/// What the sender can offer as a parent, and where a joiner should start.
///
/// The per-substream tables are shared (`Arc`): a peer sends the same `Status` to all its
/// neighbours each round, so a copy costs two reference counts, not two allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// More substream subscriptions the sender would accept.
    pub free_slots: u16,
    /// Substream subscriptions it serves now.
    pub children: u16,
    /// What its least valuable child is worth as an inner node: that child's upload if
    /// it forwards what it receives, 0 for a leaf (and 0 with no children). A subscriber
    /// that forwards, with at least twice this, may displace that child.
    pub min_child_kbps: u32,
    /// How long its uplink needs to send what it has queued, ms: requests to a busy
    /// peer wait that long.
    pub busy_ms: u16,
    /// Newest segment start (keyframe piece) it holds.
    pub segment_start: Option<u64>,
    /// Per substream: distance in hops from a seed (`0` for a seed, [`Status::NO_PATH`]
    /// when it has no feed of that substream).
    pub depth: Arc<[u8]>,
    /// Per substream: its usual delay from ingest to holding a piece, ms
    /// ([`Status::NO_LATENCY`] when unknown). Same length as `depth`.
    pub latency_ms: Arc<[u16]>,
    /// Per substream: the seed's child at the top of the sender's branch, once that
    /// branch delivers — the sender's own id if a seed feeds it, else its parent's
    /// `root` ([`Status::NO_ROOT`] with no delivering parent). A seed keeps a child slot
    /// for a child that peers it does not feed say they are fed through. Same length as
    /// `depth`.
    pub root: Arc<[PeerId]>,
    /// Per substream: the sender's parent, once it has pushed a piece in time
    /// ([`Status::NO_ROOT`] otherwise): what shows a seed which neighbours forward.
    /// Same length as `depth`.
    pub parent: Arc<[PeerId]>,
}

impl Status {
    pub const NO_PATH: u8 = u8::MAX;
    pub const NO_LATENCY: u16 = u16::MAX;
    pub const NO_ROOT: PeerId = PeerId(u64::MAX);
}

/// A peer-to-peer message.
#[derive(Debug, Clone)]
pub enum Message {
    Hello(Hello),
    Status(Status),
    /// The sender now holds the verified piece `seq`.
    Have {
        seq: u64,
    },
    /// The sender holds piece `base + 64*w + b` for each bit `b` set in `bits[w]`.
    HaveMap {
        base: u64,
        bits: Vec<u64>,
    },
    /// Push every future piece of these substreams to the sender (replaces any
    /// earlier subscription; `0` unsubscribes).
    Subscribe {
        substreams: u64,
    },
    /// The subset of a `Subscribe` the sender accepted.
    SubscribeReply {
        accepted: u64,
    },
    /// Send these pieces (pull repair).
    Request {
        seqs: Vec<u64>,
    },
    Piece(Piece),
    /// The sender can't serve a requested piece.
    /// The sender holds the requested piece but could not send it in time; ask
    /// elsewhere (the sender is not to be asked again for a moment).
    Busy {
        seq: u64,
    },
    DontHave {
        seq: u64,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Goodbye {
        reason: GoodbyeReason,
    },
}

/// Decoding failures. Any of them ends the connection ([`GoodbyeReason::Malformed`]),
/// except a piece that decodes but fails its signature, which is checked later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLong { len: usize, max: usize },
    #[error("empty frame")]
    EmptyFrame,
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    #[error("{kind} message truncated")]
    Truncated { kind: &'static str },
    #[error("{kind} message has {extra} trailing bytes")]
    TrailingBytes { kind: &'static str, extra: usize },
    #[error("{what}: {n} exceeds the limit of {max}")]
    TooMany { what: &'static str, n: usize, max: usize },
    #[error("unknown role {0}")]
    BadRole(u8),
    #[error("unknown Hello flags {0:#04x}")]
    BadFlags(u8),
    #[error("fragment frames are only valid on datagram transports")]
    UnexpectedFragment,
    #[error("bad fragment: {0}")]
    BadFragment(&'static str),
    #[error("inconsistent message: {0}")]
    Inconsistent(&'static str),
    #[error("bad piece: {0}")]
    Piece(#[from] PieceError),
}

mod kind {
    pub const HELLO: u8 = 0x01;
    pub const STATUS: u8 = 0x02;
    pub const HAVE: u8 = 0x03;
    pub const HAVE_MAP: u8 = 0x04;
    pub const SUBSCRIBE: u8 = 0x05;
    pub const SUBSCRIBE_REPLY: u8 = 0x06;
    pub const REQUEST: u8 = 0x07;
    pub const PIECE: u8 = 0x08;
    pub const DONT_HAVE: u8 = 0x09;
    pub const PING: u8 = 0x0a;
    pub const PONG: u8 = 0x0b;
    pub const GOODBYE: u8 = 0x0c;
    pub const FRAGMENT: u8 = 0x0d;
    pub const BUSY: u8 = 0x0e;
}

const HELLO_LEN: usize = 2 + 32 + 8 + 1 + 1 + 1 + 4;

impl Message {
    /// Short name for logs and metrics labels.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind()).unwrap_or("unknown")
    }

    /// The kind byte this message is framed with.
    fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => kind::HELLO,
            Message::Status(_) => kind::STATUS,
            Message::Have { .. } => kind::HAVE,
            Message::HaveMap { .. } => kind::HAVE_MAP,
            Message::Subscribe { .. } => kind::SUBSCRIBE,
            Message::SubscribeReply { .. } => kind::SUBSCRIBE_REPLY,
            Message::Request { .. } => kind::REQUEST,
            Message::Piece(_) => kind::PIECE,
            Message::DontHave { .. } => kind::DONT_HAVE,
            Message::Busy { .. } => kind::BUSY,
            Message::Ping { .. } => kind::PING,
            Message::Pong { .. } => kind::PONG,
            Message::Goodbye { .. } => kind::GOODBYE,
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Message::Hello(_) => HELLO_LEN,
            Message::Status(s) => 19 + 19 * s.depth.len(),
            Message::HaveMap { bits, .. } => 9 + 8 * bits.len(),
            Message::Request { seqs } => 1 + 8 * seqs.len(),
            Message::Piece(p) => p.encoded_len(),
            Message::Goodbye { .. } => 1,
            Message::Have { .. }
            | Message::Subscribe { .. }
            | Message::SubscribeReply { .. }
            | Message::DontHave { .. }
            | Message::Busy { .. }
            | Message::Ping { .. }
            | Message::Pong { .. } => 8,
        }
    }

    /// Bytes [`Message::encode`] appends: length prefix, kind and body.
    pub fn encoded_len(&self) -> usize {
        LEN_PREFIX + 1 + self.body_len()
    }

    /// Appends this message as one frame. Messages built by this crate's peer are
    /// always within bounds; [`Message::check_bounds`] tells for hand-built ones.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&((1 + self.body_len()) as u32).to_be_bytes());
        out.push(self.kind());
        match self {
            Message::Hello(h) => {
                out.extend_from_slice(&h.version.to_be_bytes());
                out.extend_from_slice(h.channel.as_bytes());
                out.extend_from_slice(&h.peer_id.0.to_be_bytes());
                out.push(match h.role {
                    Role::Seed => 1,
                    Role::Viewer => 2,
                });
                out.push(u8::from(h.reachable));
                out.push(h.n_substreams);
                out.extend_from_slice(&h.upload_kbps.to_be_bytes());
            }
            Message::Status(s) => {
                out.extend_from_slice(&s.free_slots.to_be_bytes());
                out.extend_from_slice(&s.children.to_be_bytes());
                out.extend_from_slice(&s.min_child_kbps.to_be_bytes());
                out.extend_from_slice(&s.busy_ms.to_be_bytes());
                out.extend_from_slice(&s.segment_start.unwrap_or(u64::MAX).to_be_bytes());
                out.push(s.depth.len() as u8);
                out.extend_from_slice(&s.depth);
                // `check_bounds` guarantees equal lengths for our messages; pad or cut
                // a hand-built one so the frame stays well-formed.
                for i in 0..s.depth.len() {
                    let l = s.latency_ms.get(i).copied().unwrap_or(Status::NO_LATENCY);
                    out.extend_from_slice(&l.to_be_bytes());
                }
                for ids in [&s.root, &s.parent] {
                    for i in 0..s.depth.len() {
                        let r = ids.get(i).copied().unwrap_or(Status::NO_ROOT);
                        out.extend_from_slice(&r.0.to_be_bytes());
                    }
                }
            }
            Message::Have { seq: v }
            | Message::DontHave { seq: v }
            | Message::Busy { seq: v }
            | Message::Ping { nonce: v }
            | Message::Pong { nonce: v }
            | Message::Subscribe { substreams: v }
            | Message::SubscribeReply { accepted: v } => out.extend_from_slice(&v.to_be_bytes()),
            Message::HaveMap { base, bits } => {
                out.extend_from_slice(&base.to_be_bytes());
                out.push(bits.len() as u8);
                bits.iter().for_each(|w| out.extend_from_slice(&w.to_be_bytes()));
            }
            Message::Request { seqs } => {
                out.push(seqs.len() as u8);
                seqs.iter().for_each(|s| out.extend_from_slice(&s.to_be_bytes()));
            }
            Message::Piece(p) => p.encode(out),
            Message::Goodbye { reason } => out.push(reason.code()),
        }
    }

    /// This message as one frame in buffers to write back to back (vectored): for a
    /// piece, the 5-byte length prefix and kind, then the piece's own wire form —
    /// shared, not copied, however many neighbours it goes to; for any other message
    /// the whole frame, then nothing.
    pub fn to_frame(&self) -> bytes::buf::Chain<Bytes, Bytes> {
        match self {
            Message::Piece(p) => {
                let mut head = Vec::with_capacity(LEN_PREFIX + 1);
                head.extend_from_slice(&((1 + self.body_len()) as u32).to_be_bytes());
                head.push(self.kind());
                Bytes::from(head).chain(p.wire().clone())
            }
            _ => {
                let mut out = Vec::with_capacity(self.encoded_len());
                self.encode(&mut out);
                Bytes::from(out).chain(Bytes::new())
            }
        }
    }

    /// Checks the size limits of variable-length messages.
    pub fn check_bounds(&self) -> Result<(), WireError> {
        let (what, n, max) = match self {
            Message::Status(s)
                if s.latency_ms.len() != s.depth.len()
                    || s.root.len() != s.depth.len()
                    || s.parent.len() != s.depth.len() =>
            {
                return Err(WireError::Inconsistent("status latency, root, parent and depth lengths differ"));
            }
            Message::Status(s) => ("status depth entries", s.depth.len(), MAX_SUBSTREAMS),
            Message::HaveMap { bits, .. } => ("have_map words", bits.len(), MAX_HAVE_WORDS),
            Message::Request { seqs } => ("request seqs", seqs.len(), MAX_REQUEST_SEQS),
            _ => return Ok(()),
        };
        if n > max { Err(WireError::TooMany { what, n, max }) } else { Ok(()) }
    }

    /// Decodes one frame body (`kind | body`, without the length prefix).
    pub fn decode_frame(mut frame: Bytes) -> Result<Message, WireError> {
        if frame.is_empty() {
            return Err(WireError::EmptyFrame);
        }
        if frame.len() > MAX_FRAME_LEN {
            return Err(WireError::FrameTooLong { len: frame.len(), max: MAX_FRAME_LEN });
        }
        let k = frame.get_u8();
        let mut r = Reader { buf: frame, kind: kind_name(k)? };
        let msg = match k {
            kind::HELLO => {
                r.need(HELLO_LEN)?;
                let version = r.buf.get_u16();
                let mut channel = [0u8; 32];
                r.buf.copy_to_slice(&mut channel);
                let peer_id = PeerId(r.buf.get_u64());
                let role = match r.buf.get_u8() {
                    1 => Role::Seed,
                    2 => Role::Viewer,
                    other => return Err(WireError::BadRole(other)),
                };
                let flags = r.buf.get_u8();
                if flags & !1 != 0 {
                    return Err(WireError::BadFlags(flags));
                }
                Message::Hello(Hello {
                    version,
                    channel: ChannelId::from_bytes(channel),
                    peer_id,
                    role,
                    reachable: flags & 1 == 1,
                    n_substreams: r.buf.get_u8(),
                    upload_kbps: r.buf.get_u32(),
                })
            }
            kind::STATUS => {
                r.need(18)?;
                let free_slots = r.buf.get_u16();
                let children = r.buf.get_u16();
                let min_child_kbps = r.buf.get_u32();
                let busy_ms = r.buf.get_u16();
                let segment_start = Some(r.buf.get_u64()).filter(|&s| s != u64::MAX);
                let n = r.count(MAX_SUBSTREAMS, "status depth entries")?;
                r.need(19 * n)?;
                let depth = Arc::from(&r.buf.split_to(n)[..]);
                let latency_ms = (0..n).map(|_| r.buf.get_u16()).collect();
                let root = (0..n).map(|_| PeerId(r.buf.get_u64())).collect();
                let parent = (0..n).map(|_| PeerId(r.buf.get_u64())).collect();
                Message::Status(Status {
                    free_slots,
                    children,
                    min_child_kbps,
                    busy_ms,
                    segment_start,
                    depth,
                    latency_ms,
                    root,
                    parent,
                })
            }
            kind::HAVE => Message::Have { seq: r.u64()? },
            kind::HAVE_MAP => {
                let base = r.u64()?;
                let n = r.count(MAX_HAVE_WORDS, "have_map words")?;
                r.need(8 * n)?;
                Message::HaveMap { base, bits: (0..n).map(|_| r.buf.get_u64()).collect() }
            }
            kind::SUBSCRIBE => Message::Subscribe { substreams: r.u64()? },
            kind::SUBSCRIBE_REPLY => Message::SubscribeReply { accepted: r.u64()? },
            kind::REQUEST => {
                let n = r.count(MAX_REQUEST_SEQS, "request seqs")?;
                r.need(8 * n)?;
                Message::Request { seqs: (0..n).map(|_| r.buf.get_u64()).collect() }
            }
            kind::PIECE => {
                let piece = Piece::decode(std::mem::take(&mut r.buf))?;
                Message::Piece(piece)
            }
            kind::DONT_HAVE => Message::DontHave { seq: r.u64()? },
            kind::BUSY => Message::Busy { seq: r.u64()? },
            kind::PING => Message::Ping { nonce: r.u64()? },
            kind::PONG => Message::Pong { nonce: r.u64()? },
            kind::GOODBYE => {
                r.need(1)?;
                Message::Goodbye { reason: GoodbyeReason::from_code(r.buf.get_u8()) }
            }
            kind::FRAGMENT => return Err(WireError::UnexpectedFragment),
            other => return Err(WireError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn kind_name(k: u8) -> Result<&'static str, WireError> {
    Ok(match k {
        kind::HELLO => "hello",
        kind::STATUS => "status",
        kind::HAVE => "have",
        kind::HAVE_MAP => "have_map",
        kind::SUBSCRIBE => "subscribe",
        kind::SUBSCRIBE_REPLY => "subscribe_reply",
        kind::REQUEST => "request",
        kind::PIECE => "piece",
        kind::DONT_HAVE => "dont_have",
        kind::PING => "ping",
        kind::PONG => "pong",
        kind::GOODBYE => "goodbye",
        kind::FRAGMENT => "fragment",
        kind::BUSY => "busy",
        other => return Err(WireError::UnknownKind(other)),
    })
}

struct Reader {
    buf: Bytes,
    kind: &'static str,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.buf.remaining() < n { Err(WireError::Truncated { kind: self.kind }) } else { Ok(()) }
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    fn count(&mut self, max: usize, what: &'static str) -> Result<usize, WireError> {
        self.need(1)?;
        let n = self.buf.get_u8() as usize;
        if n > max { Err(WireError::TooMany { what, n, max }) } else { Ok(n) }
    }

    fn finish(self) -> Result<(), WireError> {
        match self.buf.remaining() {
            0 => Ok(()),
            extra => Err(WireError::TrailingBytes { kind: self.kind, extra }),
        }
    }
}

/// Push parser for a byte stream (TCP, QUIC stream): feed bytes with
/// [`FrameDecoder::extend`], take messages with [`FrameDecoder::next_message`].
/// Never buffers more than one frame plus what was fed; refuses an oversized length
/// prefix before reading the body. After an error the stream is unusable.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let Some(len) = peek_len(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX);
        let frame = self.buf.split_to(len).freeze();
        Message::decode_frame(frame).map(Some)
    }
}

fn peek_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    if len > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLong { len, max: MAX_FRAME_LEN });
    }
    Ok(Some(len))
}

pub mod datagram {
    //! Carrying frames over datagrams (UDP). A datagram holds one or more whole frames;
    //! a frame bigger than the datagram size is cut into `Fragment` frames:
    //! `kind 0x0d | msg_id: u32 | index: u16 | count: u16 | data`. The receiver
    //! reassembles at most [`MAX_PARTIAL`] messages at once, dropping the oldest.

    use std::collections::VecDeque;

    use bytes::{Buf, Bytes};

    use super::{FrameDecoder, LEN_PREFIX, MAX_FRAME_LEN, Message, WireError, kind, peek_len};

    /// Datagram size that crosses the Internet without IP fragmentation.
    pub const DEFAULT_DATAGRAM_LEN: usize = 1200;
    /// Messages being reassembled at once per sender.
    pub const MAX_PARTIAL: usize = 8;
    const FRAGMENT_HEADER: usize = LEN_PREFIX + 1 + 4 + 2 + 2;
    /// The most fragments a frame can need: the largest frame in the smallest
    /// datagrams [`encode`] makes (64 bytes). A larger count is refused before
    /// anything is allocated for it.
    pub const MAX_FRAGMENTS: usize = (LEN_PREFIX + MAX_FRAME_LEN).div_ceil(64 - FRAGMENT_HEADER);

    /// Cuts `msg` into datagrams of at most `datagram_len` bytes (≥ 64).
    pub fn encode(msg: &Message, msg_id: u32, datagram_len: usize) -> Vec<Vec<u8>> {
        let datagram_len = datagram_len.max(64);
        let mut frame = Vec::new();
        msg.encode(&mut frame);
        if frame.len() <= datagram_len {
            return vec![frame];
        }
        let chunk = datagram_len - FRAGMENT_HEADER;
        let count = frame.len().div_ceil(chunk);
        frame
            .chunks(chunk)
            .enumerate()
            .map(|(index, data)| {
                let mut d = Vec::with_capacity(FRAGMENT_HEADER + data.len());
                d.extend_from_slice(&((FRAGMENT_HEADER - LEN_PREFIX + data.len()) as u32).to_be_bytes());
                d.push(kind::FRAGMENT);
                d.extend_from_slice(&msg_id.to_be_bytes());
                d.extend_from_slice(&(index as u16).to_be_bytes());
                d.extend_from_slice(&(count as u16).to_be_bytes());
                d.extend_from_slice(data);
                d
            })
            .collect()
    }

    /// A message being reassembled. Memory follows what arrived (fragments as they
    /// came, and one bit per expected fragment), not what the first fragment claims.
    #[derive(Debug)]
    struct Partial {
        msg_id: u32,
        count: usize,
        seen: Vec<u64>,
        parts: Vec<(u16, Bytes)>,
        bytes: usize,
    }

    /// Reassembles messages from one sender's datagrams.
    #[derive(Debug, Default)]
    pub struct Reassembler {
        partial: VecDeque<Partial>,
    }

    impl Reassembler {
        pub fn new() -> Self {
            Self::default()
        }

        /// Decodes one datagram; returns the messages it completed.
        pub fn push(&mut self, datagram: &[u8]) -> Result<Vec<Message>, WireError> {
            let mut out = Vec::new();
            let mut rest = Bytes::copy_from_slice(datagram);
            while !rest.is_empty() {
                let Some(len) = peek_len(&rest)? else {
                    return Err(WireError::Truncated { kind: "datagram" });
                };
                if rest.len() < LEN_PREFIX + len {
                    return Err(WireError::Truncated { kind: "datagram" });
                }
                rest.advance(LEN_PREFIX);
                let mut frame = rest.split_to(len);
                if frame[0] != kind::FRAGMENT {
                    out.push(Message::decode_frame(frame)?);
                    continue;
                }
                frame.advance(1);
                if frame.len() < 8 {
                    return Err(WireError::Truncated { kind: "fragment" });
                }
                let (msg_id, index, count) = (frame.get_u32(), frame.get_u16() as usize, frame.get_u16() as usize);
                if let Some(msg) = self.add(msg_id, index, count, frame)? {
                    out.push(msg);
                }
            }
            Ok(out)
        }

        fn add(&mut self, msg_id: u32, index: usize, count: usize, data: Bytes) -> Result<Option<Message>, WireError> {
            if count < 2 || index >= count {
                return Err(WireError::BadFragment("index out of range"));
            }
            if count > MAX_FRAGMENTS {
                return Err(WireError::BadFragment("more fragments than any frame needs"));
            }
            let pos = match self.partial.iter().position(|p| p.msg_id == msg_id) {
                Some(pos) => pos,
                None => {
                    if self.partial.len() == MAX_PARTIAL {
                        self.partial.pop_front();
                    }
                    let seen = vec![0; count.div_ceil(64)];
                    self.partial.push_back(Partial { msg_id, count, seen, parts: Vec::new(), bytes: 0 });
                    self.partial.len() - 1
                }
            };
            let p = &mut self.partial[pos];
            if p.count != count {
                return Err(WireError::BadFragment("fragment count changed"));
            }
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            if p.seen[word] & bit == 0 {
                p.bytes += data.len();
                if p.bytes > LEN_PREFIX + MAX_FRAME_LEN {
                    return Err(WireError::FrameTooLong { len: p.bytes, max: MAX_FRAME_LEN });
                }
                p.seen[word] |= bit;
                p.parts.push((index as u16, data));
            }
            if p.parts.len() < count {
                return Ok(None);
            }
            let mut p = self.partial.remove(pos).expect("position was found above");
            p.parts.sort_unstable_by_key(|(i, _)| *i);
            let mut dec = FrameDecoder::new();
            p.parts.iter().for_each(|(_, b)| dec.extend(b));
            let msg = dec.next_message()?.ok_or(WireError::BadFragment("fragments hold a partial frame"))?;
            if dec.buffered() != 0 {
                return Err(WireError::BadFragment("fragments hold more than one frame"));
            }
            Ok(Some(msg))
        }
    }
}

impl PartialEq for Message {
    /// Pieces compare by bytes; everything else field by field.
    fn eq(&self, other: &Self) -> bool {
        use Message as M;
        match (self, other) {
            (M::Hello(a), M::Hello(b)) => a == b,
            (M::Status(a), M::Status(b)) => a == b,
            (M::Have { seq: a }, M::Have { seq: b }) => a == b,
            (M::HaveMap { base: a, bits: x }, M::HaveMap { base: b, bits: y }) => a == b && x == y,
            (M::Subscribe { substreams: a }, M::Subscribe { substreams: b }) => a == b,
            (M::SubscribeReply { accepted: a }, M::SubscribeReply { accepted: b }) => a == b,
            (M::Request { seqs: a }, M::Request { seqs: b }) => a == b,
            (M::Piece(a), M::Piece(b)) => a.same_bytes(b),
            (M::DontHave { seq: a }, M::DontHave { seq: b }) => a == b,
            (M::Busy { seq: a }, M::Busy { seq: b }) => a == b,
            (M::Ping { nonce: a }, M::Ping { nonce: b }) => a == b,
            (M::Pong { nonce: a }, M::Pong { nonce: b }) => a == b,
            (M::Goodbye { reason: a }, M::Goodbye { reason: b }) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piece::{ChannelKeypair, PieceFlags, filler_payload};
    use proptest::prelude::*;

    fn sample_piece(n_packets: usize) -> Piece {
        ChannelKeypair::from_secret_bytes(&[1; 32])
            .sign_piece(5, 77, PieceFlags::SEGMENT_START, filler_payload(n_packets, 5))
            .unwrap()
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u16>(), any::<[u8; 32]>(), any::<u64>(), any::<bool>(), any::<bool>(), any::<u8>(), any::<u32>())
                .prop_map(|(version, ch, id, seed, reachable, n_substreams, upload_kbps)| {
                    Message::Hello(Hello {
                        version,
                        channel: ChannelId::from_bytes(ch),
                        peer_id: PeerId(id),
                        role: if seed { Role::Seed } else { Role::Viewer },
                        reachable,
                        n_substreams,
                        upload_kbps,
                    })
                }),
            (
                (any::<u16>(), any::<u16>(), any::<u32>(), any::<u16>()),
                proptest::option::of(0..u64::MAX),
                proptest::collection::vec((any::<u8>(), any::<u16>(), any::<u64>(), any::<u64>()), 0..=MAX_SUBSTREAMS)
            )
                .prop_map(|((free_slots, children, min_child_kbps, busy_ms), segment_start, subs)| {
                    let depth: Vec<u8> = subs.iter().map(|s| s.0).collect();
                    let latency_ms: Vec<u16> = subs.iter().map(|s| s.1).collect();
                    let root: Vec<PeerId> = subs.iter().map(|s| PeerId(s.2)).collect();
                    let parent: Vec<PeerId> = subs.iter().map(|s| PeerId(s.3)).collect();
                    Message::Status(Status {
                        free_slots,
                        children,
                        min_child_kbps,
                        busy_ms,
                        segment_start,
                        depth: depth.into(),
                        latency_ms: latency_ms.into(),
                        root: root.into(),
                        parent: parent.into(),
                    })
                }),
            any::<u64>().prop_map(|seq| Message::Have { seq }),
            (any::<u64>(), proptest::collection::vec(any::<u64>(), 0..=MAX_HAVE_WORDS))
                .prop_map(|(base, bits)| Message::HaveMap { base, bits }),
            any::<u64>().prop_map(|substreams| Message::Subscribe { substreams }),
            any::<u64>().prop_map(|accepted| Message::SubscribeReply { accepted }),
            proptest::collection::vec(any::<u64>(), 0..=MAX_REQUEST_SEQS).prop_map(|seqs| Message::Request { seqs }),
            (1usize..40).prop_map(|n| Message::Piece(sample_piece(n))),
            any::<u64>().prop_map(|seq| Message::DontHave { seq }),
            any::<u64>().prop_map(|seq| Message::Busy { seq }),
            any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
            any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
            any::<u8>().prop_map(|c| Message::Goodbye { reason: GoodbyeReason::from_code(c) }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips_on_a_stream(msgs in proptest::collection::vec(arb_message(), 1..8), cut in 1usize..97) {
            let mut wire = Vec::new();
            for m in &msgs {
                prop_assert!(m.check_bounds().is_ok());
                let before = wire.len();
                m.encode(&mut wire);
                prop_assert_eq!(wire.len() - before, m.encoded_len());
                // The vectored frame is the same bytes.
                let mut frame = m.to_frame();
                prop_assert_eq!(frame.remaining(), m.encoded_len());
                prop_assert_eq!(&frame.copy_to_bytes(m.encoded_len())[..], &wire[before..]);
            }
            // Feed in arbitrary chunks: the parser must not care where reads split.
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                dec.extend(chunk);
                while let Some(m) = dec.next_message().unwrap() {
                    got.push(m);
                }
            }
            prop_assert_eq!(got.len(), msgs.len());
            for (a, b) in msgs.iter().zip(&got) {
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn every_message_round_trips_over_datagrams(msg in arb_message(), size in 64usize..1500, reorder in any::<bool>()) {
            let mut datagrams = datagram::encode(&msg, 9, size);
            prop_assert!(datagrams.iter().all(|d| d.len() <= size.max(64)));
            if reorder {
                datagrams.reverse();
            }
            let mut r = datagram::Reassembler::new();
            let mut got = Vec::new();
            for d in &datagrams {
                got.extend(r.push(d).unwrap());
            }
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(&msg, &got[0]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut dec = FrameDecoder::new();
            dec.extend(&bytes);
            while let Ok(Some(_)) = dec.next_message() {}
            let _ = datagram::Reassembler::new().push(&bytes);
            let _ = Message::decode_frame(Bytes::from(bytes));
        }
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_buffering() {
        let mut dec = FrameDecoder::new();
        dec.extend(&u32::MAX.to_be_bytes());
        assert!(matches!(dec.next_message(), Err(WireError::FrameTooLong { .. })));
    }

    #[test]
    fn bounds_are_enforced_on_decode() {
        let mut wire = Vec::new();
        Message::Request { seqs: vec![1; MAX_REQUEST_SEQS + 1] }.encode(&mut wire);
        let mut dec = FrameDecoder::new();
        dec.extend(&wire);
        assert!(matches!(dec.next_message(), Err(WireError::TooMany { .. })));

        // A Have with a trailing byte.
        let frame = Bytes::from_static(&[kind::HAVE, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]);
        assert_eq!(Message::decode_frame(frame), Err(WireError::TrailingBytes { kind: "have", extra: 1 }));
        assert_eq!(Message::decode_frame(Bytes::from_static(&[0x7f])), Err(WireError::UnknownKind(0x7f)));
        assert_eq!(
            Message::decode_frame(Bytes::from_static(&[kind::PING, 1])),
            Err(WireError::Truncated { kind: "ping" })
        );
    }

    #[test]
    fn a_fragment_count_no_frame_needs_is_refused_and_the_largest_frame_fits() {
        // Before: a 13-byte fragment claiming 65,535 parts made the receiver allocate
        // 2 MB for it (16 MB over its eight partial messages).
        let mut d = Vec::new();
        d.extend_from_slice(&9u32.to_be_bytes());
        d.push(kind::FRAGMENT);
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        d.extend_from_slice(&u16::MAX.to_be_bytes());
        let mut r = datagram::Reassembler::new();
        assert_eq!(r.push(&d).unwrap_err(), WireError::BadFragment("more fragments than any frame needs"));
        // The largest piece in the smallest datagrams needs no more than the bound, in any order.
        let msg = Message::Piece(sample_piece(crate::piece::MAX_TS_PACKETS));
        let mut datagrams = datagram::encode(&msg, 7, 64);
        assert_eq!(datagrams.len(), datagram::MAX_FRAGMENTS);
        datagrams.reverse();
        datagrams.swap(0, 100);
        let mut got = Vec::new();
        for d in &datagrams {
            got.extend(r.push(d).unwrap());
        }
        assert_eq!(got, vec![msg]);
    }

    #[test]
    fn fragments_are_refused_on_a_stream() {
        let datagrams = datagram::encode(&Message::Piece(sample_piece(20)), 1, 1200);
        assert!(datagrams.len() > 1);
        let mut dec = FrameDecoder::new();
        dec.extend(&datagrams[0]);
        assert_eq!(dec.next_message().unwrap_err(), WireError::UnexpectedFragment);
    }
}
