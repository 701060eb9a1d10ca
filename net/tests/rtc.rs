//! The WebRTC host against a real WebRTC peer (str0m as the offering side, as a page's
//! browser is) over UDP on loopback: the offer is answered, the `shoal` data channel
//! becomes a byte stream both ways (cut into messages of at most 16 KiB), and a
//! message above that ends the session.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use net::rtc::{CHUNK, PageStream, RtcHost, RtcSettings};
use str0m::change::SdpAnswer;
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A page's side: an offering str0m peer on its own socket.
struct Client {
    rtc: Rtc,
    socket: UdpSocket,
    channel: ChannelId,
    open: bool,
    received: Vec<u8>,
    closed: bool,
}

impl Client {
    async fn offer(host: &RtcHost) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let mut change = rtc.sdp_api();
        let channel = change.add_channel("shoal".into());
        let (offer, pending) = change.apply().unwrap();
        let answer = host.answer(&offer.to_sdp_string()).await.expect("the offer is answered");
        rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
        Client { rtc, socket, channel, open: false, received: Vec::new(), closed: false }
    }

    /// Runs the peer (a datagram or a timeout at a time, a few ms at most) until `done` holds.
    async fn until(&mut self, mut done: impl FnMut(&mut Client) -> bool) {
        let mut buf = vec![0u8; 2048];
        let local = self.socket.local_addr().unwrap();
        loop {
            let wake = loop {
                match self.rtc.poll_output().unwrap() {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        self.socket.send_to(&t.contents, t.destination).await.unwrap();
                    }
                    Output::Event(Event::ChannelOpen(id, _)) if id == self.channel => self.open = true,
                    Output::Event(Event::ChannelData(d)) => self.received.extend_from_slice(&d.data),
                    Output::Event(Event::ChannelClose(_)) => self.closed = true,
                    Output::Event(Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected)) => {
                        self.closed = true
                    }
                    Output::Event(_) => {}
                }
            };
            let wait = wake
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(5));
            match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) => {
                    let r = Receive::new(Protocol::Udp, from, local, &buf[..n]).unwrap();
                    self.rtc.handle_input(Input::Receive(Instant::now(), r)).unwrap();
                }
                _ => self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap(),
            }
            if done(self) {
                return;
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> bool {
        self.rtc.channel(self.channel).unwrap().write(true, data).unwrap()
    }
}

async fn host() -> (RtcHost, mpsc::Receiver<PageStream>) {
    host_with(RtcSettings::new("127.0.0.1:0".parse().unwrap(), vec![])).await
}

async fn host_with(settings: RtcSettings) -> (RtcHost, mpsc::Receiver<PageStream>) {
    let (tx, rx) = mpsc::channel(4);
    (RtcHost::bind(&settings, tx).await.unwrap(), rx)
}

#[tokio::test]
async fn a_pages_data_channel_is_a_byte_stream_both_ways() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let (host, mut streams) = host().await;
    assert_eq!(host.candidates, vec![host.local]);
    let mut page = Client::offer(&host).await;
    let test = async {
        page.until(|c| c.open).await;
        let PageStream { mut stream, remote } = streams.recv().await.unwrap();
        assert_eq!(remote, page.socket.local_addr().unwrap(), "the page's address, as ICE chose it");
        // The page writes 200 KB in 16 KiB messages; the stream yields it all, in order.
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut chunks = sent.chunks(CHUNK);
        let mut got = Vec::new();
        let mut next = chunks.next();
        while got.len() < sent.len() {
            while let Some(c) = next {
                if !page.write(c) {
                    break;
                }
                next = chunks.next();
            }
            page.until(|_| true).await;
            let mut buf = vec![0u8; 64 * 1024];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(5), stream.read(&mut buf)).await {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(got, sent);
        // The other way: what the shell writes reaches the page.
        let back: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let writer = {
            let back = back.clone();
            tokio::spawn(async move {
                stream.write_all(&back).await.unwrap();
                stream
            })
        };
        page.until(|c| c.received.len() >= back.len()).await;
        assert_eq!(page.received, back);
        let _stream = writer.await.unwrap();
        let stats = host.stats();
        assert_eq!((stats.offers_answered, stats.channels_opened, stats.sessions), (1, 1, 1));
    };
    tokio::time::timeout(Duration::from_secs(20), test).await.expect("within 20 s");
}

#[tokio::test]
async fn a_message_above_16_kib_ends_the_session() {
    let (host, mut streams) = host().await;
    let mut page = Client::offer(&host).await;
    let test = async {
        page.until(|c| c.open).await;
        let PageStream { mut stream, .. } = streams.recv().await.unwrap();
        assert!(page.write(&vec![7u8; CHUNK + 1]));
        page.until(|_| true).await;
        // The shell's side of the stream ends: the session is gone.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            page.until(|_| true).await;
            match tokio::time::timeout(Duration::from_millis(5), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => panic!("{n} bytes of an oversize message reached the shell"),
                Err(_) => {}
            }
        }
        assert_eq!(host.stats().oversize, 1);
    };
    tokio::time::timeout(Duration::from_secs(20), test).await.expect("within 20 s");
}

#[tokio::test]
async fn a_bad_offer_is_refused_with_a_reason() {
    let (host, _streams) = host().await;
    let e = host.answer("v=0 not sdp").await.unwrap_err();
    assert!(e.to_string().contains("not a usable SDP offer"), "{e}");
    assert_eq!(host.stats().offers_refused, 1);
    // And a STUN binding request to the host's port is answered with our address.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    req.extend_from_slice(b"transaction!");
    sock.send_to(&req, host.local).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await.unwrap().unwrap();
    let me: SocketAddr = sock.local_addr().unwrap();
    let port = u16::from_be_bytes([buf[26], buf[27]]) ^ 0x2112;
    assert_eq!((n, &buf[..2], port), (32, &[1u8, 1][..], me.port()));
    assert_eq!(host.stats().stun_answered, 1);
}

#[tokio::test]
async fn one_address_holds_no_more_sessions_than_its_share() {
    let settings = RtcSettings { per_address: 1, ..RtcSettings::new("127.0.0.1:0".parse().unwrap(), vec![]) };
    let (host, mut streams) = host_with(settings).await;
    let (mut first, mut second) = (Client::offer(&host).await, Client::offer(&host).await);
    let test = async {
        first.until(|c| c.open).await;
        assert!(streams.recv().await.is_some(), "the first page's channel reached the shell");
        // The second page, from the same IP address: both offers were answered (an offer
        // does not say where it comes from), but its first datagram ends its session.
        second.until(|_| host.stats().per_address_refused == 1).await;
        assert!(!second.open);
        let stats = host.stats();
        assert_eq!((stats.offers_answered, stats.channels_opened), (2, 1));
    };
    tokio::time::timeout(Duration::from_secs(20), test).await.expect("within 20 s");
}
