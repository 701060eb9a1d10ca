//! A small HTTP/1.1 client over hyper's connection API, one connection per request:
//! [`get`] for `http://HOST:PORT` (the tracker and ingest are on the operator's
//! network), [`post`] for http and https (webhooks go to the customers' endpoints), with
//! a say over which addresses it may connect to.

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

/// Where [`post`] may connect: asked of every address the host resolves to, so a name
/// that resolves to a private address can't steer it there (webhooks: SSRF).
pub type AddrFilter = fn(&std::net::SocketAddr) -> Result<(), &'static str>;

/// Public addresses only: not loopback, private, link-local, unique-local, CGNAT,
/// multicast, documentation or unspecified.
pub fn public_only(a: &std::net::SocketAddr) -> Result<(), &'static str> {
    use std::net::IpAddr;
    let private = match a.ip() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some()
        }
    };
    if private { Err("a private or local address") } else { Ok(()) }
}

/// Any address (tests, and operators who deliver inside their own network).
pub fn any_address(_: &std::net::SocketAddr) -> Result<(), &'static str> {
    Ok(())
}

/// A TLS client configuration trusting Mozilla's roots (webpki-roots), on aws-lc-rs.
///
/// # Panics
/// Never in practice: the default provider supports the safe default versions.
pub fn tls_client_config() -> std::sync::Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// `POST url` with `headers` and `body`; the answer's status and at most `limit` bytes
/// of its body. `https://` needs `tls`. The whole exchange within `timeout`.
pub async fn post(
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    timeout: Duration,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    allow: AddrFilter,
    limit: usize,
) -> Result<(u16, Vec<u8>), HttpError> {
    let bad = || HttpError::BadUrl(url.to_owned());
    let (secure, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return Err(bad()),
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let default_port = if secure { 443 } else { 80 };
    let port_of = |p: &str| {
        if p.is_empty() {
            Ok(default_port)
        } else {
            p.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).ok_or_else(bad)
        }
    };
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: [addr] or [addr]:port.
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            (h, port_of(after)?)
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, port_of(&format!(":{p}"))?),
            None => (authority, default_port),
        },
    };
    if host.is_empty() {
        return Err(bad());
    }
    let tls = match (secure, tls) {
        (true, Some(t)) => Some(t.clone()),
        (true, None) => return Err(bad()),
        (false, _) => None,
    };
    let work = async {
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| HttpError::Connect(authority.to_owned(), e))?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            return Err(HttpError::Connect(authority.to_owned(), std::io::ErrorKind::NotFound.into()));
        };
        // Every address it resolves to must be allowed, not only the one tried first.
        for a in &addrs {
            allow(a).map_err(|why| HttpError::Refused(format!("{authority} ({a})"), why))?;
        }
        let stream = TcpStream::connect(addr).await.map_err(|e| HttpError::Connect(authority.to_owned(), e))?;
        let _ = stream.set_nodelay(true);
        let mut req = hyper::Request::post(path).header("host", authority).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(crate::Body::full(body))?;
        let resp = match tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| bad())?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .map_err(|e| HttpError::Tls(authority.to_owned(), e))?;
                send(TokioIo::new(stream), req).await?
            }
            None => send(TokioIo::new(stream), req).await?,
        };
        let status = resp.status().as_u16();
        Ok((status, read_all(resp.into_body(), limit).await?))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| HttpError::Timeout(authority.to_owned()))?
}

async fn send<IO>(io: IO, req: hyper::Request<crate::Body>) -> Result<hyper::Response<Incoming>, HttpError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}
