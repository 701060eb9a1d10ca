//! The SRT listener (caller mode): `srt://HOST:8890?streamid=#!::r=live/<key>,m=publish`
//! or `streamid=publish:live/<key>`, on `srt-tokio`, wrapped here so the rest of ingest
//! sees MPEG-TS bytes only.
//!
//! Access control happens in the handshake: the stream id is parsed and the key
//! authorized before the connection is accepted; a refusal is an SRT reject code the
//! caller shows (2401 unknown key or passphrase needed, 2403 license or disabled,
//! 2404 wrong resource, 2405 not a publish, 2409 already publishing). A channel with
//! an SRT passphrase is accepted only encrypted with it (a wrong one fails the key
//! exchange inside the handshake).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use srt_protocol::settings::KeySettings;
use srt_tokio::SrtListener;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::options::Passphrase;
use tokio::net::UdpSocket;
use tracing::Instrument;

use crate::hub::{Hub, Protocol};
use catalogue::admission::{Authorizer, Refusal};

/// Receive latency offered to callers (their own setting wins when larger).
pub const LATENCY: Duration = Duration::from_millis(120);

/// What a stream id asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamIdRequest {
    Publish { resource: String },
    Other { mode: String },
}

/// Parses `#!::r=live/KEY,m=publish` (the SRT access-control convention) and
/// `publish:live/KEY` (MediaMTX's form).
pub fn parse_stream_id(id: &str) -> Option<StreamIdRequest> {
    if let Some(rest) = id.strip_prefix("#!::") {
        let mut resource = None;
        let mut mode = "request".to_owned();
        for kv in rest.split(',') {
            match kv.split_once('=') {
                Some(("r", v)) => resource = Some(v.to_owned()),
                Some(("m", v)) => mode = v.to_owned(),
                _ => {}
            }
        }
        let resource = resource?;
        return Some(if mode == "publish" {
            StreamIdRequest::Publish { resource }
        } else {
            StreamIdRequest::Other { mode }
        });
    }
    if let Some(resource) = id.strip_prefix("publish:") {
        return Some(StreamIdRequest::Publish { resource: resource.to_owned() });
    }
    if let Some((mode, _)) = id.split_once(':') {
        return Some(StreamIdRequest::Other { mode: mode.to_owned() });
    }
    None
}

fn reject_code(refusal: &Refusal) -> ServerRejectReason {
    match refusal {
        Refusal::UnknownKey => ServerRejectReason::Unauthorized,
        Refusal::BadApplication(_) => ServerRejectReason::Notfound,
        Refusal::Disabled(_) | Refusal::LicenseRequired(_) | Refusal::LicenseExpired { .. } => {
            ServerRejectReason::Forbidden
        }
        Refusal::AlreadyPublishing(_) => ServerRejectReason::Conflict,
        _ => ServerRejectReason::InternalServerError,
    }
}

/// Binds `addr` and serves SRT publishers; returns the bound address.
pub async fn bind(addr: SocketAddr, hub: Arc<Hub>, auth: Arc<dyn Authorizer>) -> std::io::Result<SocketAddr> {
    let socket = UdpSocket::bind(addr).await?;
    let local = socket.local_addr()?;
    let (listener, mut incoming) = SrtListener::builder().latency(LATENCY).socket(socket).bind(local).await?;
    tokio::spawn(async move {
        let _listener = listener; // dropping it would close the port
        while let Some(request) = incoming.incoming().next().await {
            let peer = request.remote();
            let span = tracing::info_span!("srt_session", %peer, channel = tracing::field::Empty);
            tokio::spawn(handle(request, peer, hub.clone(), auth.clone()).instrument(span));
        }
    });
    Ok(local)
}

async fn handle(request: srt_tokio::ConnectionRequest, peer: SocketAddr, hub: Arc<Hub>, auth: Arc<dyn Authorizer>) {
    let refuse = |hub: &Hub, label: &'static str, why: &str| {
        hub.metrics.refusals.with_label_values(&[label]).inc();
        tracing::warn!(reason = why, "SRT publish refused in the handshake");
    };
    let stream_id = request.stream_id().map(|s| s.to_string()).unwrap_or_default();
    let key = match parse_stream_id(&stream_id) {
        Some(StreamIdRequest::Publish { resource }) => match resource.split_once('/') {
            Some((app, key)) if app == crate::rtmp::APP => key.to_owned(),
            _ => {
                let refusal = Refusal::BadApplication(resource.clone());
                refuse(&hub, refusal.label(), &refusal.to_string());
                let _ = request.reject(RejectReason::Server(reject_code(&refusal))).await;
                return;
            }
        },
        Some(StreamIdRequest::Other { mode }) => {
            refuse(&hub, "bad_mode", &format!("mode {mode:?}: ingest only takes publishers (m=publish)"));
            let _ = request.reject(RejectReason::Server(ServerRejectReason::BadMode)).await;
            return;
        }
        None => {
            refuse(&hub, "bad_stream_id", &format!("stream id {stream_id:?}: use #!::r=live/<key>,m=publish"));
            let _ = request.reject(RejectReason::Server(ServerRejectReason::BadRequest)).await;
            return;
        }
    };
    let now_unix = crate::hub::now_us() / 1_000_000;
    let grant = match auth.authorize(&key, now_unix) {
        Ok(g) => g,
        Err(refusal) => {
            refuse(&hub, refusal.label(), &refusal.to_string());
            let _ = request.reject(RejectReason::Server(reject_code(&refusal))).await;
            return;
        }
    };
    tracing::Span::current().record("channel", grant.channel.as_str());
    // A channel with a passphrase is served encrypted only; the key exchange inside
    // the handshake fails for a caller with another passphrase or none.
    let key_settings = match &grant.srt_passphrase {
        Some(p) => match Passphrase::try_from(p.clone()) {
            // The caller's key length (callers that leave it unset get the default).
            Ok(passphrase) => Some(KeySettings { key_size: request.key_size(), passphrase }),
            Err(e) => {
                refuse(&hub, "no_signing_key", &format!("channel's SRT passphrase is unusable: {e}"));
                let _ = request.reject(RejectReason::Server(ServerRejectReason::InternalServerError)).await;
                return;
            }
        },
        None => None,
    };
    let mut publisher = match hub.begin_publish(&grant, &key, peer.ip(), Protocol::Srt) {
        Ok(p) => p,
        Err(refusal) => {
            refuse(&hub, refusal.label(), &refusal.to_string());
            let _ = request.reject(RejectReason::Server(reject_code(&refusal))).await;
            return;
        }
    };
    let mut socket = match request.accept(key_settings).await {
        Ok(s) => s,
        Err(e) => {
            // A wrong passphrase ends here: the key exchange failed.
            hub.metrics.refusals.with_label_values(&["handshake_failed"]).inc();
            tracing::warn!(error = %e, "SRT handshake failed (wrong passphrase?)");
            return;
        }
    };
    tracing::info!("SRT publish started");
    let mut cancelled = publisher.cancelled();
    let mut stats = socket.statistics().clone();
    loop {
        // Data is pushed after the select (the cancellation's guard is not held across it).
        let data = tokio::select! {
            item = socket.next() => match item {
                Some(Ok((_, data))) => Some(data),
                Some(Err(e)) => {
                    tracing::info!(error = %e, "SRT connection error");
                    break;
                }
                None => break,
            },
            Some(s) = stats.next() => {
                let m = &hub.metrics;
                let ch = [grant.channel.as_str()];
                m.srt_rtt.with_label_values(&ch).set(s.rx_average_rtt.as_secs_f64());
                m.srt_lost.with_label_values(&ch).set(s.rx_loss_data as i64);
                m.srt_retransmitted.with_label_values(&ch).set(s.rx_retransmit_data as i64);
                m.srt_dropped.with_label_values(&ch).set(s.rx_dropped_data as i64);
                None
            },
            Ok(why) = cancelled.wait_for(Option::is_some) => {
                if let Some(why) = &*why {
                    tracing::info!(reason = %why, "SRT session closed by ingest");
                }
                break;
            }
        };
        let Some(data) = data else { continue };
        if let Err(e) = publisher.push_ts(&data).await {
            tracing::info!(reason = %e, "SRT session closed");
            break;
        }
        // Faster than real time: not read until the media meets the wall clock.
        if let Some(wait) = publisher.ahead_of_clock() {
            tokio::time::sleep(wait).await;
        }
    }
    // The last access unit is complete when the feed ends.
    let _ = publisher.flush_ts().await;
}
