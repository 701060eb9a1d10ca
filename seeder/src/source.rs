//! Ingest's piece stream for a seeder: `GET /v1/channels/{name}/pieces?from=SEQ` with
//! the seeder token, pieces back to back (each self-delimiting), resumed from the next
//! sequence number after a reconnect (from the newest segment start if that piece has
//! left ingest's window: 410). The stream is split with swarm's [`PieceDecoder`];
//! pieces go to the shell as `Input::Origin`, and the shell verifies each like any
//! other.

use std::time::Duration;

use swarm::piece::{ChannelId, Piece, PieceDecoder};
use tokio::sync::{mpsc, watch};

use httpkit::client as http_client;

/// Where a seeder reads a channel from.
#[derive(Debug, Clone)]
pub struct Source {
    /// `http://HOST:PORT` of ingest.
    pub base: String,
    pub channel: String,
    pub token: String,
}

/// Reads the channel until `stop` turns true, reconnecting with backoff; pieces go out
/// tagged with `index` (which ingest they came from); publishes the channel id once
/// ingest has said it (`x-shoal-channel-id`); `connected` is 1 while the stream is open.
pub async fn run(
    src: Source,
    index: usize,
    pieces: mpsc::Sender<(usize, Piece)>,
    channel_id: watch::Sender<Option<ChannelId>>,
    mut stop: watch::Receiver<bool>,
    connected: prometheus::IntGauge,
) {
    let mut next: Option<u64> = None;
    let mut backoff = Duration::from_millis(100);
    let mut waiting_said = false;
    // An ingest that stays down (a main/backup pair's dead one) is logged once, and
    // again once it is back.
    let mut down_said = false;
    while !*stop.borrow() {
        let path = match next {
            Some(seq) => format!("/v1/channels/{}/pieces?from={seq}", src.channel),
            None => format!("/v1/channels/{}/pieces", src.channel),
        };
        match http_client::get(&src.base, &path, Some(&src.token), Duration::from_secs(5)).await {
            Ok(resp) if resp.status() == 410 => {
                tracing::warn!(channel = %src.channel, ?next, "ingest's window moved past us: resuming at its newest segment");
                next = None;
                continue;
            }
            Ok(resp) if resp.status() == 200 => {
                if let Some(id) =
                    resp.headers().get("x-shoal-channel-id").and_then(|v| v.to_str().ok()).and_then(ChannelId::from_hex)
                {
                    channel_id.send_if_modified(|c| {
                        let changed = *c != Some(id);
                        *c = Some(id);
                        changed
                    });
                }
                backoff = Duration::from_millis(100);
                connected.set(1);
                if std::mem::take(&mut down_said) {
                    tracing::info!(channel = %src.channel, ingest = %src.base, "ingest reachable again");
                }
                let mut body = resp.into_body();
                let mut split = PieceDecoder::default();
                loop {
                    let chunk = tokio::select! {
                        c = http_client::next_chunk(&mut body) => c,
                        _ = stop.changed() => {
                            connected.set(0);
                            return;
                        }
                    };
                    let Some(Ok(chunk)) = chunk else { break };
                    split.extend(&chunk);
                    loop {
                        match split.next_piece() {
                            Ok(Some(p)) => {
                                next = Some(p.seq() + 1);
                                if pieces.send((index, p)).await.is_err() {
                                    connected.set(0);
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::error!(error = %e, "ingest's piece stream is corrupt: reconnecting");
                                split.clear();
                                break;
                            }
                        }
                    }
                }
                connected.set(0);
                tracing::info!(channel = %src.channel, ingest = %src.base, ?next, "ingest's piece stream ended: reconnecting");
            }
            Ok(resp) if resp.status() == 404 => {
                // Not published yet: normal before the encoder starts; said once.
                if !waiting_said {
                    waiting_said = true;
                    tracing::info!(channel = %src.channel, "waiting for the channel to be published on ingest");
                }
                // Polled often: the first segment of a (re)started feed is what
                // viewers are waiting for.
                backoff = backoff.min(Duration::from_millis(100));
            }
            Ok(resp) => {
                let status = resp.status();
                let why = http_client::read_all(resp.into_body(), 4096).await.unwrap_or_default();
                tracing::warn!(%status, reason = %String::from_utf8_lossy(&why).trim(), channel = %src.channel, "ingest refused the piece stream");
            }
            Err(e) if !down_said => {
                down_said = true;
                tracing::warn!(error = %e, channel = %src.channel, ingest = %src.base, "ingest unreachable (retrying every second; said once)");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        // At most a second: ingest coming back should find its seeders at once.
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
