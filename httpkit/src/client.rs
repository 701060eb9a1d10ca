//! A small HTTP/1.1 client over hyper's connection API: one connection per request,
//! `http://HOST:PORT` only (the tracker and ingest are on the operator's network).

use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use crate::body::{HttpError, next_chunk, read_all};

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
        Ok::<_, HttpError>(sender.send_request(req.body(crate::Body::empty())?).await?)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| HttpError::Timeout(addr.clone()))?
}
