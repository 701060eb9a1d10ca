//! A small HTTP/1.1 client over hyper's connection API: one connection per request,
//! `http://HOST:PORT` only (the tracker and ingest are on the operator's network).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}: only http://HOST:PORT is supported")]
    BadUrl(String),
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

/// A request body with nothing in it.
#[derive(Debug, Default)]
struct Empty;

impl Body for Empty {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }
}

/// `GET base + path_and_query`, with an optional bearer token; the answer's status,
/// headers and body (to be read with [`next_chunk`] or [`read_all`]).
pub async fn get(
    base: &str,
    path_and_query: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<hyper::Response<Incoming>, HttpError> {
    let host = base
        .strip_prefix("http://")
        .map(|h| h.trim_end_matches('/'))
        .filter(|h| !h.is_empty() && !h.contains('/'))
        .ok_or_else(|| HttpError::BadUrl(base.to_owned()))?;
    let addr = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let work = async {
        let stream = TcpStream::connect(&addr).await.map_err(|e| HttpError::Connect(addr.clone(), e))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::get(path_and_query).header("host", host);
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        Ok::<_, HttpError>(sender.send_request(req.body(Empty)?).await?)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| HttpError::Timeout(addr.clone()))?
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
