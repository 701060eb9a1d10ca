//! A minimal RTMP publisher: handshake, `connect`, `createStream`, `publish`, then
//! audio, video and data messages. It replays recorded FLV fixtures into the RTMP
//! listener in tests and in `shoal bench ingest`; it is not a general RTMP client.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::media::amf0::{self, Amf0};

const CHUNK_SIZE: usize = 4096;
const MSG_SET_CHUNK_SIZE: u8 = 1;
const MSG_COMMAND: u8 = 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("publish refused: {0}")]
    Refused(String),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// A publishing RTMP connection.
#[derive(Debug)]
pub struct RtmpPublisher {
    stream: TcpStream,
    stream_id: u32,
    reader: ChunkReader,
}

impl RtmpPublisher {
    /// Connects to `addr` and publishes `live/<key>`. The refusal text the server
    /// sends (`onStatus` error description) is returned as [`ClientError::Refused`].
    pub async fn connect(addr: std::net::SocketAddr, app: &str, key: &str) -> Result<Self, ClientError> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        // Simple handshake: C0 + C1 (zeros), S0 + S1 + S2, C2 = S1.
        let mut c0c1 = vec![0u8; 1 + 1536];
        c0c1[0] = 3;
        stream.write_all(&c0c1).await?;
        let mut s = vec![0u8; 1 + 1536 + 1536];
        stream.read_exact(&mut s).await?;
        stream.write_all(&s[1..1 + 1536]).await?;
        let mut me = RtmpPublisher { stream, stream_id: 0, reader: ChunkReader::default() };
        me.send(2, MSG_SET_CHUNK_SIZE, 0, 0, &(CHUNK_SIZE as u32).to_be_bytes()).await?;
        let tc_url = format!("rtmp://{addr}/{app}");
        me.command(
            0,
            &[
                Amf0::String("connect".into()),
                Amf0::Number(1.0),
                Amf0::Object(vec![
                    ("app".into(), Amf0::String(app.into())),
                    ("type".into(), Amf0::String("nonprivate".into())),
                    ("flashVer".into(), Amf0::String("FMLE/3.0 (compatible; shoal)".into())),
                    ("tcUrl".into(), Amf0::String(tc_url)),
                ]),
            ],
        )
        .await?;
        me.expect_result(1.0).await?;
        me.command(0, &[Amf0::String("createStream".into()), Amf0::Number(2.0), Amf0::Null]).await?;
        let result = me.expect_result(2.0).await?;
        me.stream_id = result.get(3).and_then(Amf0::as_number).unwrap_or(1.0) as u32;
        me.command(
            me.stream_id,
            &[
                Amf0::String("publish".into()),
                Amf0::Number(3.0),
                Amf0::Null,
                Amf0::String(key.into()),
                Amf0::String(app.into()),
            ],
        )
        .await?;
        loop {
            let msg = me.next_command().await?;
            if msg.first().and_then(Amf0::as_str) != Some("onStatus") {
                continue;
            }
            let info = msg.get(3);
            let code = info.and_then(|i| i.get("code")).and_then(Amf0::as_str).unwrap_or("");
            if code == "NetStream.Publish.Start" {
                return Ok(me);
            }
            let level = info.and_then(|i| i.get("level")).and_then(Amf0::as_str).unwrap_or("");
            if level == "error" {
                let desc = info.and_then(|i| i.get("description")).and_then(Amf0::as_str).unwrap_or(code);
                return Err(ClientError::Refused(desc.to_owned()));
            }
        }
    }

    /// Sends one FLV tag (8 audio, 9 video, 18 data) as an RTMP message.
    pub async fn send_tag(&mut self, kind: u8, timestamp: u32, body: &[u8]) -> Result<(), ClientError> {
        let csid = match kind {
            8 => 4,
            9 => 6,
            _ => 5,
        };
        self.send(csid, kind, self.stream_id, timestamp, body).await
    }

    async fn command(&mut self, stream_id: u32, values: &[Amf0]) -> Result<(), ClientError> {
        let mut payload = Vec::new();
        for v in values {
            v.encode(&mut payload);
        }
        self.send(3, MSG_COMMAND, stream_id, 0, &payload).await
    }

    /// Writes a message as chunks: a type-0 header, then type-3 continuations.
    async fn send(&mut self, csid: u8, kind: u8, stream_id: u32, ts: u32, payload: &[u8]) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(payload.len() + 32);
        out.push(csid & 0x3f);
        let extended = ts >= 0xff_ffff;
        let ts24 = if extended { 0xff_ffff } else { ts };
        out.extend_from_slice(&ts24.to_be_bytes()[1..]);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.extend_from_slice(&stream_id.to_le_bytes());
        if extended {
            out.extend_from_slice(&ts.to_be_bytes());
        }
        for (i, chunk) in payload.chunks(CHUNK_SIZE).enumerate() {
            if i > 0 {
                out.push(0xc0 | (csid & 0x3f));
                if extended {
                    out.extend_from_slice(&ts.to_be_bytes());
                }
            }
            out.extend_from_slice(chunk);
        }
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn expect_result(&mut self, transaction: f64) -> Result<Vec<Amf0>, ClientError> {
        loop {
            let msg = self.next_command().await?;
            let name = msg.first().and_then(Amf0::as_str).unwrap_or("");
            let tid = msg.get(1).and_then(Amf0::as_number);
            if tid == Some(transaction) {
                if name == "_result" {
                    return Ok(msg);
                }
                return Err(ClientError::Protocol(format!("{name} for transaction {transaction}: {msg:?}")));
            }
        }
    }

    async fn next_command(&mut self) -> Result<Vec<Amf0>, ClientError> {
        loop {
            let (kind, payload) = self.reader.next_message(&mut self.stream).await?;
            match kind {
                MSG_SET_CHUNK_SIZE if payload.len() >= 4 => {
                    let size = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
                    self.reader.chunk_size = size.clamp(1, 1 << 24);
                }
                MSG_COMMAND => return amf0::decode_all(&payload).map_err(|e| ClientError::Protocol(e.to_string())),
                _ => {}
            }
        }
    }

    /// Waits until the server closes the connection (reads and discards until EOF).
    pub async fn wait_closed(mut self) {
        let mut buf = [0u8; 4096];
        while matches!(self.stream.read(&mut buf).await, Ok(n) if n > 0) {}
    }

    /// Closes the connection (the server ends the session).
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.stream.shutdown().await?;
        Ok(())
    }

    /// Sends a recorded FLV file's audio and video `passes` times back to back (for
    /// ever with `None`), each tag at its time as an encoder would, timestamps
    /// continuing across passes; then closes.
    pub async fn replay_paced(mut self, flv: &[u8], passes: Option<u32>) -> Result<(), ClientError> {
        let tags: Vec<_> = crate::media::flv::read_file(flv)
            .map_err(|e| ClientError::Protocol(format!("the FLV file: {e}")))?
            .into_iter()
            .filter(|t| t.kind != crate::media::flv::TAG_SCRIPT)
            .collect();
        // One frame past the last tag: the next pass starts where this one ends.
        let span = tags.iter().map(|t| t.timestamp).max().unwrap_or(0) + 40;
        let start = tokio::time::Instant::now();
        let mut pass = 0u32;
        while passes.is_none_or(|n| pass < n) {
            for t in &tags {
                let ts = t.timestamp.wrapping_add(pass.wrapping_mul(span));
                tokio::time::sleep_until(
                    start
                        + std::time::Duration::from_millis(u64::from(pass) * u64::from(span) + u64::from(t.timestamp)),
                )
                .await;
                self.send_tag(t.kind, ts, t.body).await?;
            }
            pass += 1;
        }
        self.close().await
    }
}

#[derive(Debug)]
struct ChunkReader {
    chunk_size: usize,
    /// Per chunk stream: (message length, type, bytes so far).
    partial: HashMap<u32, (usize, u8, Vec<u8>)>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        ChunkReader { chunk_size: 128, partial: HashMap::new() }
    }
}

impl ChunkReader {
    async fn next_message(&mut self, s: &mut TcpStream) -> Result<(u8, Vec<u8>), ClientError> {
        loop {
            let b0 = s.read_u8().await?;
            let fmt = b0 >> 6;
            let csid = match b0 & 0x3f {
                0 => 64 + u32::from(s.read_u8().await?),
                1 => 64 + u32::from(s.read_u16_le().await?),
                n => u32::from(n),
            };
            let header_len = [11, 7, 3, 0][usize::from(fmt)];
            let mut h = [0u8; 11];
            s.read_exact(&mut h[..header_len]).await?;
            if header_len >= 3 && h[..3] == [0xff, 0xff, 0xff] {
                s.read_u32().await?;
            }
            let entry = self.partial.entry(csid).or_insert((0, 0, Vec::new()));
            if header_len >= 7 {
                entry.0 = u32::from_be_bytes([0, h[3], h[4], h[5]]) as usize;
                entry.1 = h[6];
            }
            let want = (entry.0 - entry.2.len()).min(self.chunk_size);
            let start = entry.2.len();
            entry.2.resize(start + want, 0);
            s.read_exact(&mut entry.2[start..]).await?;
            if entry.2.len() == entry.0 {
                let kind = entry.1;
                return Ok((kind, std::mem::take(&mut entry.2)));
            }
        }
    }
}
