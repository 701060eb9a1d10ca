//! A seed on the tracker's WebSocket (PROTOCOL.md §6.1): it announces its channel with
//! its seeder token (so the tracker hands it pages' offers as a seed's), answers each
//! offer with its [`RtcHost`], and sends the answer back through the tracker. The page
//! then opens its data channel to the host, which hands it to the shell. A viewer that
//! shares with pages does the same without a token (to the tracker it is a page).
//!
//! Reconnects with a growing pause when the tracker goes away, and announces again at
//! the interval the tracker asks for.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use swarm::bencode::latin1;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::rtc::RtcHost;

/// Longest wait between reconnections.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest message taken from the tracker (offers are a few KB).
const MAX_MESSAGE: usize = 64 * 1024;

/// Who announces on the WebSocket.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// `http://HOST:PORT` of the tracker.
    pub tracker: String,
    pub info_hash: [u8; 20],
    /// The 20-byte tracker id (the same as on HTTP announces).
    pub tracker_id: [u8; 20],
    pub seed_token: Option<String>,
}

impl SignalConfig {
    /// `ws://HOST:PORT/announce?role=seed&token=…`.
    pub fn url(&self) -> String {
        let base = self.tracker.trim_end_matches('/');
        let base = base.strip_prefix("http://").map_or_else(|| base.to_owned(), |b| format!("ws://{b}"));
        match &self.seed_token {
            Some(t) => format!("{base}/announce?role=seed&token={}", swarm::bencode::percent_encode(t.as_bytes())),
            None => format!("{base}/announce"),
        }
    }
}

/// Runs until `stop` turns true: connect, announce, answer offers; again after a pause
/// when the connection ends.
pub async fn run(cfg: SignalConfig, host: RtcHost, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let session = session(&cfg, &host);
        tokio::select! {
            r = session => match r {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => tracing::warn!(tracker = %cfg.tracker, error = %e, "WebSocket tracker: pages cannot reach this seed over WebRTC until it is back"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life. Ok when the tracker closed it.
async fn session(cfg: &SignalConfig, host: &RtcHost) -> Result<(), String> {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let url = cfg.url();
    let authority = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .ok_or_else(|| format!("the tracker address {} is not http://HOST:PORT", cfg.tracker))?;
    let tcp = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("connect {authority}: {e}"))?;
    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(config))
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    let hash = latin1(&cfg.info_hash);
    let me = latin1(&cfg.tracker_id);
    let announce = json!({"action": "announce", "info_hash": hash, "peer_id": me, "numwant": 0, "offers": []});
    ws.send(Message::text(announce.to_string())).await.map_err(|e| e.to_string())?;
    let mut interval = Duration::from_secs(120);
    let mut next = tokio::time::Instant::now() + interval;
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep_until(next) => {
                ws.send(Message::text(announce.to_string())).await.map_err(|e| e.to_string())?;
                next = tokio::time::Instant::now() + interval;
                continue;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                return match c {
                    Some(c) if u16::from(c.code) != 1000 => {
                        Err(format!("closed by the tracker: {} {}", c.code, c.reason))
                    }
                    _ => Ok(()),
                };
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Ok(()),
        };
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text.as_str()) else {
            return Err("the tracker sent something other than a JSON object".to_owned());
        };
        if let Some(why) = m.get("failure reason").and_then(Value::as_str) {
            return Err(format!("the tracker refused the announce: {why}"));
        }
        if let Some(i) = m.get("interval").and_then(Value::as_u64) {
            interval = Duration::from_secs(i.clamp(10, 3_600));
            next = tokio::time::Instant::now() + interval;
            continue;
        }
        let (Some(offer), Some(from), Some(offer_id)) = (m.get("offer"), m.get("peer_id"), m.get("offer_id")) else {
            continue;
        };
        let Some(sdp) = offer.get("sdp").and_then(Value::as_str) else { continue };
        match host.answer(sdp).await {
            Ok(answer) => {
                let reply = json!({"action": "announce", "info_hash": hash, "peer_id": me,
                    "to_peer_id": from, "offer_id": offer_id, "answer": {"type": "answer", "sdp": answer}});
                ws.send(Message::text(reply.to_string())).await.map_err(|e| e.to_string())?;
            }
            Err(e) => tracing::info!(error = %e, "a page's offer was not answered"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_the_trackers_with_the_seeds_token() {
        let mut cfg = SignalConfig {
            tracker: "http://127.0.0.1:8700/".into(),
            info_hash: [0; 20],
            tracker_id: [0; 20],
            seed_token: Some("a b&c".into()),
        };
        assert_eq!(cfg.url(), "ws://127.0.0.1:8700/announce?role=seed&token=a%20b%26c");
        cfg.seed_token = None;
        assert_eq!(cfg.url(), "ws://127.0.0.1:8700/announce");
    }
}
