//! `client::post` against local servers: plain http, https with a certificate the
//! client was told to trust (and not one it wasn't), the address filter, bad URLs.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use httpkit::client::{self, HttpError};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Serves connections from `listener` (through `tls` if given): records each request's
/// path, `x-test` header and body, answers 201 "thanks".
fn serve(listener: tokio::net::TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, seen: Seen) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, tls) = (seen.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let header =
                            req.headers().get("x-test").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
                        let body = client::read_all(req.into_body(), 1 << 20).await.unwrap();
                        seen.lock().unwrap().push((path, header, body));
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder().status(201).body(httpkit::Body::full("thanks")).unwrap(),
                        )
                    }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[tokio::test]
async fn posts_over_http_and_https_to_allowed_addresses_only() {
    let seen: Seen = Arc::default();
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    serve(plain, None, seen.clone());

    let headers = [("x-test", "one".to_owned())];
    let t = Duration::from_secs(5);
    let url = format!("http://127.0.0.1:{plain_port}/hook?x=1");
    let (status, body) = client::post(&url, &headers, b"{}".to_vec(), t, None, client::any_address, 64).await.unwrap();
    assert_eq!((status, body.as_slice()), (201, b"thanks".as_slice()));
    assert_eq!(seen.lock().unwrap()[0], ("/hook".to_owned(), "one".to_owned(), b"{}".to_vec()));

    // Loopback is refused under public_only, before any connection.
    let e = client::post(&url, &headers, vec![], t, None, client::public_only, 64).await.unwrap_err();
    assert!(matches!(e, HttpError::Refused(..)), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 1);

    // https with a certificate for localhost that only a client told to trust it accepts.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let secure = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secure_port = secure.local_addr().unwrap().port();
    serve(secure, Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))), seen.clone());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let trusting = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let url = format!("https://localhost:{secure_port}/tls");
    let headers = [("x-test", "two".to_owned())];
    let (status, _) =
        client::post(&url, &headers, b"[1]".to_vec(), t, Some(&trusting), client::any_address, 64).await.unwrap();
    assert_eq!(status, 201);
    assert_eq!(seen.lock().unwrap()[1], ("/tls".to_owned(), "two".to_owned(), b"[1]".to_vec()));
    let public_roots = client::tls_client_config();
    let e = client::post(&url, &headers, vec![], t, Some(&public_roots), client::any_address, 64).await.unwrap_err();
    assert!(matches!(e, HttpError::Tls(..)), "a self-signed certificate is not trusted: {e}");
    assert_eq!(seen.lock().unwrap().len(), 2);

    for bad in ["ftp://x/", "http://", "http://a:b/", "http://[::1/", "https://localhost/", "http://u@h/"] {
        let e = client::post(bad, &[], vec![], t, None, client::any_address, 64).await.unwrap_err();
        assert!(matches!(e, HttpError::BadUrl(_)), "{bad}: {e}");
    }
}

#[test]
fn public_only_refuses_every_local_kind_of_address() {
    let check = |a: &str| client::public_only(&format!("{a}:443").parse().unwrap()).is_ok();
    for local in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"] {
        assert!(!check(local), "{local}");
    }
    for local in ["[::1]", "[fd00::1]", "[fe80::1]", "[::ffff:127.0.0.1]", "[::]"] {
        assert!(!check(local), "{local}");
    }
    assert!(check("93.184.215.14") && check("[2606:4700::1111]"));
}
