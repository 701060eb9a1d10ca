//! The one response (and request) body every Shoal server and client uses: whole bytes
//! (sent with a Content-Length) or a stream of chunks fed by a task through a channel
//! (sent chunked). Chunks are [`Bytes`]: a piece's wire form or payload goes out as the
//! same buffer to every receiver, never copied per receiver.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;

#[derive(Debug)]
pub enum Body {
    /// Whole buffers, sent in order with a Content-Length (their sum).
    Full(VecDeque<Bytes>),
    /// Chunks as a task sends them; the body ends when the sender is dropped.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body {
    /// A body of one buffer.
    pub fn full(b: impl Into<Bytes>) -> Self {
        Body::Full(VecDeque::from([b.into()]))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Body::Full(VecDeque::new())
    }

    /// A body made of several buffers sent back to back without joining them (a
    /// segment of pieces: each is a slice of its piece's buffer).
    pub fn chunks(parts: impl IntoIterator<Item = Bytes>) -> Self {
        Body::Full(parts.into_iter().collect())
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            Body::Full(parts) => Poll::Ready(parts.pop_front().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(parts) if parts.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(parts) => SizeHint::with_exact(parts.iter().map(|b| b.len() as u64).sum()),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}: not a URL this client takes (http://HOST[:PORT], or https:// where TLS is offered)")]
    BadUrl(String),
    #[error("{0}: refused: {1}")]
    Refused(String, &'static str),
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("answer body over {0} bytes")]
    TooLong(usize),
}

/// The next chunk of a body; `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Option<Result<Bytes, HttpError>> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e.into())),
        }
    }
}

/// A whole body of at most `limit` bytes.
pub async fn read_all(mut body: Incoming, limit: usize) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(HttpError::TooLong(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
