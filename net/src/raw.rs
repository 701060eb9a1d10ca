//! A hand-driven peer: a TCP connection that speaks PROTOCOL.md message by message,
//! for the attack tests (and any tool that plays a hostile or broken peer). It
//! connects from an address of its own on loopback (127.66.0.x), so a ban of it
//! touches nobody else on the host; its receive buffer is small (4 KiB), as a phone's
//! on a bad link might be.

use std::net::SocketAddr;
use std::time::Duration;

use swarm::piece::ChannelId;
use swarm::wire::{FrameDecoder, GoodbyeReason, Hello, Message, PROTOCOL_VERSION, PeerId, Role, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from 127.66.0.`host`.
pub async fn connect_from(to: SocketAddr, host: u8) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    sock.bind(SocketAddr::from(([127, 66, 0, host], 0)))?;
    sock.connect(to).await
}

/// [`connect_from`], then `Hello` as viewer `id` of `channel` (4 substreams).
pub async fn viewer_from(to: SocketAddr, host: u8, channel: ChannelId, id: u64) -> std::io::Result<TcpStream> {
    let mut s = connect_from(to, host).await?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        channel,
        peer_id: PeerId(id),
        role: Role::Viewer,
        reachable: false,
        n_substreams: 4,
        upload_kbps: 1_000,
    };
    send(&mut s, &[Message::Hello(hello)]).await?;
    Ok(s)
}

/// The `Status` of the most attractive parent there is (4 substreams): room for 64
/// children, one hop from a seed and 1 ms behind it in each — what a liar or a
/// withholder says.
pub fn best_parent_status() -> Status {
    Status {
        free_slots: 64,
        children: 0,
        min_child_kbps: 0,
        busy_ms: 0,
        segment_start: None,
        depth: vec![1; 4].into(),
        latency_ms: vec![1; 4].into(),
        root: vec![Status::NO_ROOT; 4].into(),
        parent: vec![Status::NO_ROOT; 4].into(),
    }
}

/// Writes `msgs`, encoded back to back.
pub async fn send(s: &mut TcpStream, msgs: &[Message]) -> std::io::Result<()> {
    let mut out = Vec::new();
    msgs.iter().for_each(|m| m.encode(&mut out));
    s.write_all(&out).await
}

/// Reads until the other side closes: the reason of its goodbye (`None`: closed
/// without one). `Err` if it did not close within `limit`.
pub async fn goodbye_then_close(s: &mut TcpStream, limit: Duration) -> Result<Option<GoodbyeReason>, String> {
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 65_536];
    let mut goodbye = None;
    let closed = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dec.extend(&buf[..n]),
            }
            while let Ok(Some(m)) = dec.next_message() {
                if let Message::Goodbye { reason } = m {
                    goodbye = Some(reason);
                }
            }
        }
    })
    .await;
    closed.map(|()| goodbye).map_err(|_| format!("the other side did not close within {limit:?}"))
}
