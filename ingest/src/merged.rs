//! Merged reads: a publishing connection is read on a clock ([`READ_TICK`]), all of them
//! on one tick, instead of on every arrival.
//!
//! Why: a live feed arrives as many small writes (an encoder writes each frame, 70 and
//! more a second with audio), and each arrival on a socket the runtime watches wakes a
//! thread — a context switch, an `epoll_wait`, the runtime's bookkeeping — which on a
//! virtual machine was the largest single cost of `shoal ingest` (`perf`, 2026-12-04,
//! docs/measurements.md). Once a publish is accepted its socket leaves the runtime's
//! reactor: one timer per process wakes every publishing session each tick, and each
//! reads what arrived since (non-blocking, until the socket is empty). The cost is at
//! most one tick of added delay per read, a fixed number of wake-ups however many
//! feeds arrive, and one `recv` per session and tick that may find nothing. SRS's
//! "merged read" (`mr`) makes the same trade for the same reason. Before the publish
//! (handshake, connect) the connection stays on the reactor: a crowd of idle
//! connections costs nothing per tick.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::hub::lock;

/// How often publishing connections are read: at most this much delay per read
/// (2.5 % of the 800 ms the seeders' window already adds), fewer wake-ups than a feed's
/// arrivals from two feeds on.
pub const READ_TICK: Duration = Duration::from_millis(20);

/// Bytes read from the socket per call at most (what the RTMP reader asks for).
const SCRATCH: usize = 64 * 1024;

/// Wakes every registered reader once per tick; its task runs only while some reader
/// waits (it ends at the first tick with none).
#[derive(Debug)]
pub struct Ticker {
    period: Duration,
    state: Mutex<TickerState>,
}

#[derive(Debug, Default)]
struct TickerState {
    waiting: Vec<Waker>,
    running: bool,
}

impl Ticker {
    pub fn new(period: Duration) -> Arc<Self> {
        Arc::new(Ticker { period, state: Mutex::default() })
    }

    /// `waker` is woken at the next tick.
    fn wait(self: &Arc<Self>, waker: &Waker) {
        let start = {
            let mut st = lock(&self.state);
            if !st.waiting.iter().any(|w| w.will_wake(waker)) {
                st.waiting.push(waker.clone());
            }
            !std::mem::replace(&mut st.running, true)
        };
        if start {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.run().await });
        }
    }

    async fn run(&self) {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first completes at once
        let mut woken = Vec::new();
        loop {
            tick.tick().await;
            {
                let mut st = lock(&self.state);
                if st.waiting.is_empty() {
                    st.running = false;
                    return;
                }
                std::mem::swap(&mut woken, &mut st.waiting);
            }
            woken.drain(..).for_each(Waker::wake);
        }
    }
}

/// An accepted connection: on the runtime's reactor until `merge` is set (the publish
/// was accepted), then read and written directly, woken by the [`Ticker`].
#[derive(Debug)]
pub struct MergedStream {
    io: Io,
    merge: Arc<AtomicBool>,
    ticker: Arc<Ticker>,
    scratch: Box<[u8]>,
}

#[derive(Debug)]
enum Io {
    Reactor(TcpStream),
    Direct(std::net::TcpStream),
    /// Only while switching (or after a switch failed: every call errs).
    Gone,
}

impl MergedStream {
    /// `merge`: set it once the connection should leave the reactor.
    pub fn new(stream: TcpStream, ticker: Arc<Ticker>, merge: Arc<AtomicBool>) -> Self {
        MergedStream { io: Io::Reactor(stream), merge, ticker, scratch: Vec::new().into_boxed_slice() }
    }

    /// Whether reads are merged on the tick now.
    pub fn merged(&self) -> bool {
        matches!(self.io, Io::Direct(_))
    }

    /// Leaves the reactor once asked to (the socket stays non-blocking).
    fn switch(&mut self) -> io::Result<()> {
        if !matches!(self.io, Io::Reactor(_)) || !self.merge.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Io::Reactor(stream) = std::mem::replace(&mut self.io, Io::Gone) else { return Ok(()) };
        let direct = stream.into_std()?;
        direct.set_nonblocking(true)?;
        self.io = Io::Direct(direct);
        self.scratch = vec![0; SCRATCH].into_boxed_slice();
        Ok(())
    }
}

/// A non-blocking call on a socket off the reactor: retried when interrupted; one that
/// would block waits for the next tick.
fn direct<T>(ticker: &Arc<Ticker>, cx: &Context<'_>, mut op: impl FnMut() -> io::Result<T>) -> Poll<io::Result<T>> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ticker.wait(cx.waker());
                return Poll::Pending;
            }
            r => return Poll::Ready(r),
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection lost while leaving the reactor")
}

impl AsyncRead for MergedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if let Err(e) = me.switch() {
            return Poll::Ready(Err(e));
        }
        match &mut me.io {
            Io::Reactor(s) => Pin::new(s).poll_read(cx, buf),
            Io::Direct(s) => {
                let room = buf.remaining().min(me.scratch.len());
                let scratch = &mut me.scratch[..room];
                direct(&me.ticker, cx, || s.read(scratch)).map_ok(|n| buf.put_slice(&me.scratch[..n]))
            }
            Io::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for MergedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        match &mut me.io {
            Io::Reactor(s) => Pin::new(s).poll_write(cx, data),
            Io::Direct(s) => direct(&me.ticker, cx, || s.write(data)),
            Io::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Reactor(s) => Pin::new(s).poll_flush(cx),
            Io::Direct(_) => Poll::Ready(Ok(())),
            Io::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Reactor(s) => Pin::new(s).poll_shutdown(cx),
            Io::Direct(s) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            Io::Gone => Poll::Ready(Err(gone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    #[tokio::test]
    async fn a_connection_leaves_the_reactor_when_asked_and_loses_nothing() {
        let (mut client, accepted) = pair().await;
        let merge = Arc::new(AtomicBool::new(false));
        let mut server = MergedStream::new(accepted, Ticker::new(READ_TICK), merge.clone());
        let mut got = [0u8; 5];
        client.write_all(b"hello").await.expect("write");
        server.read_exact(&mut got).await.expect("read on the reactor");
        assert_eq!(&got, b"hello");
        assert!(!server.merged());

        // Bytes already waiting when it switches are read, then more as they come,
        // in any split, and the other direction still works.
        client.write_all(b"before").await.expect("write");
        merge.store(true, Ordering::Relaxed);
        let mut got = vec![0u8; 6];
        server.read_exact(&mut got).await.expect("read merged");
        assert!(server.merged());
        assert_eq!(got, b"before");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.expect("write");
            client
        });
        let mut got = vec![0u8; big.len()];
        server.read_exact(&mut got).await.expect("read merged");
        assert!(got == big, "300 kB through the tick, in order");
        let mut client = writer.await.expect("writer");
        server.write_all(b"ack").await.expect("write back");
        let mut ack = [0u8; 3];
        client.read_exact(&mut ack).await.expect("ack");
        assert_eq!(&ack, b"ack");

        // The peer's close is an end of stream, not a hang.
        drop(client);
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.expect("eof"), 0);
    }

    #[tokio::test]
    async fn the_ticker_stops_when_no_one_waits_and_starts_again() {
        let ticker = Ticker::new(Duration::from_millis(1));
        let (mut client, accepted) = pair().await;
        let mut server = MergedStream::new(accepted, ticker.clone(), Arc::new(AtomicBool::new(true)));
        for round in 0..3u8 {
            client.write_all(&[round]).await.expect("write");
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.expect("read");
            assert_eq!(b[0], round);
            // Nobody waits now: the tick task ends on its next tick.
            while lock(&ticker.state).running {
                tokio::task::yield_now().await;
            }
        }
    }
}
