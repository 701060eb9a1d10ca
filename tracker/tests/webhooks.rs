//! Webhooks against a local receiver that fails each event's first two attempts, on
//! SQLite and PostgreSQL, time driven by the test: every event is delivered, once
//! acknowledged, under one id across its attempts, each attempt signed; nothing goes
//! to another account's endpoint; licence events are written once however often the
//! scan runs; a delivery is claimed by one deliverer; an endpoint that never answers is
//! given up after the last attempt; private addresses are refused unless allowed.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use catalogue::calendar::{DAY, Month};
use catalogue::db::Db;
use catalogue::testing::{commercial, databases};
use catalogue::webhooks::{self as hooks, MAX_ATTEMPTS, retry_after};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounterVec, Opts};
use swarm::piece::ChannelKeypair;
use tracker::webhooks::Deliverer;

/// What the receiver saw: (path, event id header, signature header, body).
type Seen = Arc<Mutex<Vec<(String, String, String, Vec<u8>)>>>;

/// A receiver on a free port: answers 500 to each event id's first two deliveries, then 200.
async fn receiver() -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let tries: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (log, tries) = (log.clone(), tries.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (log, tries) = (log.clone(), tries.clone());
                    async move {
                        let header =
                            |h: &str| req.headers().get(h).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
                        let (id, sig) = (header(hooks::EVENT_ID_HEADER), header(hooks::SIGNATURE_HEADER));
                        let path = req.uri().path().to_owned();
                        let body = httpkit::client::read_all(req.into_body(), 1 << 16).await.unwrap();
                        log.lock().unwrap().push((path, id.clone(), sig, body));
                        let n = {
                            let mut t = tries.lock().unwrap();
                            let n = t.entry(id).or_default();
                            *n += 1;
                            *n
                        };
                        let status = if n <= 2 { 500 } else { 200 };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder().status(status).body(httpkit::Body::empty()).unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (port, seen)
}

fn outcomes() -> IntCounterVec {
    IntCounterVec::new(Opts::new("t", "t"), &["outcome"]).unwrap()
}

async fn setup(db: &Db, port: u16, now: i64) -> (i64, String, i64) {
    let a = db.create_account("a", 1).await.unwrap();
    let b = db.create_account("b", 1).await.unwrap();
    let plan = db.create_plan(&commercial(), 1).await.unwrap();
    let key = |n: u8| ChannelKeypair::from_secret_bytes(&[n; 32]).id();
    let news = db.create_channel(a, "news", key(1), "k1", true, 1).await.unwrap();
    let sport = db.create_channel(a, "sport", key(2), "k2", true, 1).await.unwrap();
    let nov = Month::of(now - 10 * DAY);
    db.add_license(news, plan, nov.start(), Some(nov.end()), 1).await.unwrap();
    db.add_license(sport, plan, nov.start(), Some(now + 3 * DAY), 1).await.unwrap();
    let (_, secret) = db.create_webhook(a, &format!("http://127.0.0.1:{port}/a"), 1).await.unwrap();
    db.create_webhook(b, &format!("http://127.0.0.1:{port}/b"), 1).await.unwrap();
    (a, secret, b)
}

#[tokio::test]
async fn every_event_is_delivered_once_acknowledged_signed_and_retried_with_backoff() {
    for db in databases("webhooks").await {
        let (port, seen) = receiver().await;
        // 2026-12-05: November has ended; news's licence ended with it, sport's ends in 3 days.
        let t = Month::parse("2026-12").unwrap().start() + 4 * DAY;
        let (a, secret, _) = setup(&db, port, t).await;
        let nov = Month::parse("2026-11").unwrap();
        let issued = db.finalize_invoices(a, nov, "SHOAL", t).await.unwrap();
        let number = issued[0].number.clone().unwrap();
        db.void_invoice(&number, "test", t).await.unwrap();

        let counts = outcomes();
        let deliverer = Deliverer::new(db.clone(), true, counts.clone());
        assert_eq!(deliverer.round(t, true).await.unwrap(), 4, "finalized, voided, expired, expiring: first attempts");
        assert_eq!(deliverer.round(t + 5, true).await.unwrap(), 0, "nothing due before the backoff; no event twice");
        assert_eq!(deliverer.round(t + retry_after(1), false).await.unwrap(), 4, "second attempts");
        let third = t + retry_after(1) + retry_after(2);
        assert_eq!(deliverer.round(third - 1, false).await.unwrap(), 0);
        assert_eq!(deliverer.round(third, false).await.unwrap(), 4, "third attempts: acknowledged");
        assert_eq!(deliverer.round(third + DAY, false).await.unwrap(), 0, "delivered is done");
        assert_eq!(counts.with_label_values(&["delivered"]).get(), 4);
        assert_eq!(counts.with_label_values(&["retry"]).get(), 8);

        let seen = seen.lock().unwrap().clone();
        assert!(seen.iter().all(|(path, ..)| path == "/a"), "nothing to another account's endpoint");
        let mut by_id: HashMap<&str, Vec<&Vec<u8>>> = HashMap::new();
        for (_, id, sig, body) in &seen {
            // Each attempt is signed at its own time, and that signature verifies then.
            let at: i64 = sig.trim_start_matches("t=").split(',').next().unwrap().parse().unwrap();
            assert_eq!(hooks::verify(&secret, sig, body, at), Ok(()), "{sig}");
            assert!(hooks::verify("whsec_other", sig, body, at).is_err());
            by_id.entry(id).or_default().push(body);
        }
        assert_eq!(by_id.len(), 4);
        let mut types: Vec<String> = Vec::new();
        for (id, bodies) in &by_id {
            assert_eq!(bodies.len(), 3, "{id}: two failures and the acknowledged one");
            assert!(bodies.windows(2).all(|w| w[0] == w[1]), "the same event each time");
            let v: serde_json::Value = serde_json::from_slice(bodies[0]).unwrap();
            assert_eq!(v["id"], *id);
            types.push(v["type"].as_str().unwrap().to_owned());
        }
        types.sort();
        assert_eq!(types, ["invoice.finalized", "invoice.voided", "licence.expired", "licence.expiring"]);
        let log = db.deliveries(a, 200).await.unwrap();
        assert!(log.iter().all(|d| (d.status.as_str(), d.attempts, d.last_status) == ("delivered", 3, Some(200))));

        // Two deliverers see a delivery due: one claims it.
        assert!(
            db.record_anomaly(a, "news:ids_over_cap:1", serde_json::json!({"channel": "news"}), third).await.unwrap()
        );
        assert!(!db.record_anomaly(a, "news:ids_over_cap:1", serde_json::json!({}), third).await.unwrap(), "once");
        let due = db.due_deliveries(third, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert!(db.claim_delivery(&due[0], third + 60).await.unwrap());
        assert!(!db.claim_delivery(&due[0], third + 60).await.unwrap(), "already claimed");
        db.drop_schema().await.unwrap();
    }
}

#[tokio::test]
async fn an_endpoint_that_never_answers_is_given_up_and_private_addresses_are_refused() {
    for db in databases("webhooks_fail").await {
        // A port with nothing listening.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let t = Month::parse("2026-12").unwrap().start() + 4 * DAY;
        let (a, _, b) = setup(&db, closed, t).await;
        let counts = outcomes();
        let deliverer = Deliverer::new(db.clone(), true, counts.clone());
        let mut now = t;
        assert_eq!(deliverer.round(now, true).await.unwrap(), 2, "expired and expiring");
        for attempt in 1..MAX_ATTEMPTS {
            now += retry_after(attempt);
            assert_eq!(deliverer.round(now, false).await.unwrap(), 2, "attempt {}", attempt + 1);
        }
        assert_eq!(deliverer.round(now + 30 * DAY, false).await.unwrap(), 0, "given up: no more attempts");
        let log = db.deliveries(a, 200).await.unwrap();
        assert!(log.iter().all(|d| d.status == "failed" && d.attempts == MAX_ATTEMPTS), "{log:#?}");
        assert!(log[0].last_error.as_deref().unwrap().contains("connecting"), "{log:#?}");
        assert_eq!(counts.with_label_values(&["gave_up"]).get(), 2);

        // Without allow_private, an endpoint on loopback is refused before connecting.
        let (port, seen) = receiver().await;
        db.create_webhook(b, &format!("http://127.0.0.1:{port}/b"), now).await.unwrap();
        db.record_anomaly(b, "x", serde_json::json!({}), now).await.unwrap();
        let strict = Deliverer::new(db.clone(), false, outcomes());
        assert_eq!(strict.round(now, false).await.unwrap(), 2, "b's two endpoints");
        assert!(seen.lock().unwrap().is_empty());
        let log = db.deliveries(b, 200).await.unwrap();
        assert!(log.iter().all(|d| d.last_error.as_deref().unwrap().contains("private")), "{log:#?}");
        assert_eq!(strict.outcomes.with_label_values(&["refused"]).get(), 2);

        // A disabled endpoint's pending deliveries are given up.
        let w = db.webhooks(b).await.unwrap();
        db.disable_webhook(b, w[0].id, now).await.unwrap();
        assert!(db.create_webhook(b, "ftp://x", now).await.is_err());
        let log = db.deliveries(b, 200).await.unwrap();
        assert_eq!(log.iter().filter(|d| d.status == "failed").count(), 1, "{log:#?}");
        db.drop_schema().await.unwrap();
    }
}
