//! The RTMP listener: `rtmp://HOST/live/<stream-key>`, on `scuffle-rtmp` sessions.
//!
//! `scuffle-rtmp` does the handshake, chunking and commands over any
//! `AsyncRead + AsyncWrite`; we give it `&mut MergedStream` (a `TcpStream` read on a tick once
//! publishing: [`crate::merged`]) so that, when we refuse a
//! publish, we still hold the socket and can answer with an `onStatus` error whose
//! description says why (its handler API can only end the session) — encoders show
//! that text instead of a bare "connection failed".

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use httpkit::guard::{AddrGuard, GuardConfig};

use scuffle_rtmp::ServerSession;
use scuffle_rtmp::chunk::CHUNK_SIZE;
use scuffle_rtmp::chunk::writer::ChunkWriter;
use scuffle_rtmp::command_messages::on_status::{OnStatus, OnStatusCode};
use scuffle_rtmp::command_messages::{Command, CommandResultLevel, CommandType};
use scuffle_rtmp::session::server::{ServerSessionError, SessionData, SessionHandler};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::hub::{Ended, Hub, Protocol, Publisher, lock};
use crate::merged::{MergedStream, Ticker};
use catalogue::admission::{Authorizer, Refusal};

/// The RTMP application publishers must use.
pub const APP: &str = "live";
/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 1_024;
/// A connection must be publishing within this (handshake, connect, publish): one
/// that drips bytes or never publishes holds a slot no longer.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// RTMP connections at once from one address (a studio's encoders behind one NAT fit)
/// and from one /24 (/48): slow connections from a few hosts can't take every slot.
pub const PER_ADDRESS: GuardConfig = GuardConfig { per_ip: 32, per_net: 128, ban_for: 0 };

/// Accepts RTMP connections until the listener fails.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, auth: Arc<dyn Authorizer>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let ticker = Ticker::new(hub.config().read_tick);
    let guard = Arc::new(Mutex::new(AddrGuard::new(PER_ADDRESS)));
    let mut last_warned: Option<std::time::Instant> = None;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = httpkit::accept(&listener, "RTMP", None).await;
        if lock(&guard).admit(peer.ip(), 0).is_err() {
            hub.metrics.refusals.with_label_values(&["connection_cap"]).inc();
            if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_warned = Some(std::time::Instant::now());
                tracing::warn!(%peer, "RTMP: too many connections from this address or network: closed");
            }
            continue; // the stream is dropped: closed at once
        }
        let (hub, auth, guard, ticker) = (hub.clone(), auth.clone(), guard.clone(), ticker.clone());
        let span = tracing::info_span!("rtmp_session", %peer, channel = tracing::field::Empty);
        tokio::spawn(
            async move {
                handle(stream, peer, hub, auth, ticker).await;
                lock(&guard).release(peer.ip());
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, hub: Arc<Hub>, auth: Arc<dyn Authorizer>, ticker: Arc<Ticker>) {
    let _ = stream.set_nodelay(true);
    let refusal = Arc::new(Mutex::new(None));
    let published = Arc::new(AtomicBool::new(false));
    // Read on the reactor until the publish is accepted, then on the tick (merged reads).
    let mut stream = MergedStream::new(stream, ticker, published.clone());
    let (ended_tx, mut ended) = watch::channel(None);
    let handler = Handler {
        hub: hub.clone(),
        auth,
        peer,
        publisher: None,
        refusal: refusal.clone(),
        published: published.clone(),
        ended: Arc::new(ended_tx),
    };
    let result = {
        let session = ServerSession::new(&mut stream, handler).run();
        tokio::pin!(session);
        let deadline = tokio::time::sleep(PUBLISH_DEADLINE);
        tokio::pin!(deadline);
        let mut publishing = false;
        loop {
            tokio::select! {
                r = &mut session => break r,
                () = &mut deadline, if !publishing => {
                    if !published.load(Ordering::Relaxed) {
                        hub.metrics.refusals.with_label_values(&["publish_timeout"]).inc();
                        tracing::info!("RTMP connection closed: no publish within {PUBLISH_DEADLINE:?}");
                        return;
                    }
                    publishing = true;
                }
                // Ingest ended the session (a takeover, or its key may no longer
                // publish): the connection closes now, not at the encoder's next tag.
                Ok(_) = ended.wait_for(Option::is_some) => break Ok(false),
            }
        }
    };
    let why = ended.borrow().clone();
    if let Some(why) = why {
        tracing::info!(reason = %why, "RTMP session closed by ingest");
        if let Ended::Revoked(refusal) = &why {
            let _ = stream.write_all(&refusal_status(refusal)).await;
        }
        let _ = stream.shutdown().await;
        return;
    }
    let refused = lock(&refusal).take();
    if let Some(refusal) = refused {
        hub.metrics.refusals.with_label_values(&[refusal.label()]).inc();
        tracing::warn!(reason = %refusal, "RTMP publish refused");
        let _ = stream.write_all(&refusal_status(&refusal)).await;
        let _ = stream.shutdown().await;
        return;
    }
    match result {
        Ok(_) => tracing::debug!("RTMP connection closed"),
        Err(e) => {
            hub.metrics.bad_input.with_label_values(&["rtmp_protocol"]).inc();
            tracing::warn!(error = %e, "RTMP connection ended with an error");
        }
    }
}

/// The `onStatus` error telling the encoder why its publish was refused.
pub fn refusal_status(refusal: &Refusal) -> Vec<u8> {
    let code = match refusal {
        Refusal::AlreadyPublishing(_) => "NetStream.Publish.BadName",
        Refusal::UnknownKey | Refusal::BadApplication(_) => "NetStream.Publish.BadName",
        _ => "NetStream.Publish.Denied",
    };
    let mut writer = ChunkWriter::default();
    writer.set_chunk_size(CHUNK_SIZE);
    let mut out = Vec::new();
    let status = OnStatus {
        code: OnStatusCode(code),
        level: CommandResultLevel::Error,
        description: Some(refusal.to_string().into()),
        others: None,
    };
    let cmd = Command { command_type: CommandType::OnStatus(status), transaction_id: 0.0 };
    if cmd.write(&mut out, &writer).is_err() {
        out.clear();
    }
    out
}

struct Handler {
    hub: Arc<Hub>,
    auth: Arc<dyn Authorizer>,
    peer: SocketAddr,
    publisher: Option<Publisher>,
    refusal: Arc<Mutex<Option<Refusal>>>,
    /// Set once a publish is accepted: the publish deadline no longer applies.
    published: Arc<AtomicBool>,
    /// Why ingest ended this connection's session, for `handle` to close it.
    ended: Arc<watch::Sender<Option<Ended>>>,
}

impl Handler {
    fn refuse(&self, refusal: Refusal) -> ServerSessionError {
        *lock(&self.refusal) = Some(refusal);
        // The handler API has no error of its own; any variant ends the session, and
        // `handle` reads the real reason from `refusal`.
        ServerSessionError::PublishBeforeConnect
    }

    fn authorize(&self, app: &str, stream_name: &str) -> Result<Publisher, Refusal> {
        if app.trim_matches('/') != APP {
            return Err(Refusal::BadApplication(app.to_owned()));
        }
        // OBS and ffmpeg send the key as the stream name; some append "?query".
        let key = stream_name.split('?').next().unwrap_or("");
        let now_unix = crate::hub::now_us() / 1_000_000;
        let grant = self.auth.authorize(key, now_unix)?;
        tracing::Span::current().record("channel", grant.channel.as_str());
        self.hub.begin_publish(&grant, key, self.peer.ip(), Protocol::Rtmp)
    }
}

impl SessionHandler for Handler {
    async fn on_publish(
        &mut self,
        _stream_id: u32,
        app_name: &str,
        stream_name: &str,
    ) -> Result<(), ServerSessionError> {
        if self.publisher.is_some() {
            return Err(self.refuse(Refusal::BadApplication("a second publish on one connection".into())));
        }
        match self.authorize(app_name, stream_name) {
            Ok(p) => {
                tracing::info!(channel = %p.channel().name, "RTMP publish started");
                let (mut cancelled, ended) = (p.cancelled(), self.ended.clone());
                tokio::spawn(async move {
                    // Ends with the session either way: the sender goes with it.
                    if let Ok(why) = cancelled.wait_for(Option::is_some).await {
                        ended.send_replace(why.clone());
                    }
                });
                self.published.store(true, Ordering::Relaxed);
                self.publisher = Some(p);
                Ok(())
            }
            Err(refusal) => Err(self.refuse(refusal)),
        }
    }

    async fn on_unpublish(&mut self, _stream_id: u32) -> Result<(), ServerSessionError> {
        self.publisher = None;
        Ok(())
    }

    async fn on_data(&mut self, _stream_id: u32, data: SessionData) -> Result<(), ServerSessionError> {
        let Some(p) = self.publisher.as_mut() else { return Ok(()) };
        // Faster than real time: this connection is not read until the media meets the
        // wall clock (the encoder is held back by TCP).
        if let Some(wait) = p.ahead_of_clock() {
            tokio::time::sleep(wait).await;
        }
        let result = match data {
            SessionData::Video { timestamp, data } => p.push_video(timestamp, data).await,
            SessionData::Audio { timestamp, data } => p.push_audio(timestamp, data).await,
            SessionData::Amf0 { data, .. } => {
                if let Some(flags) = crate::media::remux::script_cue(&data) {
                    tracing::info!(?flags, "ad-break cue from the encoder");
                    p.mark(flags);
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::info!(reason = %e, "RTMP session closed");
            self.publisher = None;
            return Err(ServerSessionError::PublishBeforeConnect);
        }
        Ok(())
    }
}
