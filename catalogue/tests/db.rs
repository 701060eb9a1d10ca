//! The catalogue against real databases: SQLite always (a file in a temporary
//! directory), PostgreSQL when `SHOAL_TEST_DATABASE_URL` is set (`.ci/run` sets it),
//! each test in its own schema. The same assertions run on both.
#![allow(clippy::unwrap_used)]

use catalogue::admission::{Authorizer, Refusal};
use catalogue::db::UsageEvent;
use catalogue::directory::{Admission, CachedDirectory, CatalogueAuthorizer, ChannelDirectory, DbDirectory};
use catalogue::secrets::KeyDir;
use catalogue::testing::{commercial, databases};
use swarm::piece::ChannelKeypair;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn licences_decide_admission() {
    rt().block_on(async {
        for db in databases("licences").await {
            let acct = db.create_account("tv5", 100).await.unwrap();
            let plan = db.create_plan(&commercial(), 1).await.unwrap();
            let key = |n: u8| ChannelKeypair::from_secret_bytes(&[n; 32]).id();
            let news = db.create_channel(acct, "news", key(1), "k1", false, 100).await.unwrap();
            let ads = db.create_channel(acct, "ads", key(2), "k2", true, 100).await.unwrap();
            let paid = db.create_channel(acct, "paid", key(3), "k3", true, 100).await.unwrap();
            db.add_license(paid, plan, 100, Some(1_000), 100).await.unwrap();

            let at = |now| {
                let db = db.clone();
                async move {
                    db.channel_states(now).await.unwrap().into_iter().map(|c| (c.name, c.admission)).collect::<Vec<_>>()
                }
            };
            assert_eq!(
                at(500).await,
                vec![
                    ("news".to_owned(), Ok(())),
                    ("ads".to_owned(), Err(Refusal::LicenseRequired("ads".into()))),
                    ("paid".to_owned(), Ok(())),
                ],
                "{:?}",
                db.backend()
            );
            assert_eq!(
                at(1_000).await[2].1,
                Err(Refusal::LicenseExpired { channel: "paid".into(), until_unix: 1_000 }),
                "a licence ends at valid_until"
            );
            db.set_channel_status(news, false).await.unwrap();
            assert_eq!(at(500).await[0].1, Err(Refusal::Disabled("news".into())));
            db.add_license(ads, plan, 400, None, 400).await.unwrap();
            assert_eq!(at(500).await[1].1, Ok(()), "an open-ended licence");
            assert_eq!(at(300).await[1].1, Err(Refusal::LicenseRequired("ads".into())), "not before valid_from");
            // Names, keys and info-hashes are unique.
            assert!(db.create_channel(acct, "news", key(9), "k9", false, 100).await.is_err());
            assert!(db.create_channel(acct, "other", key(1), "k9", false, 100).await.is_err());
            assert!(db.create_channel(acct, "Bad Name", key(8), "k8", false, 100).await.is_err());
            db.audit(500, Some(acct), "test", "channel.disable", "news", "{}").await.unwrap();

            // The tracker's directory over the catalogue says the same to announces.
            let cache = std::sync::Arc::new(CachedDirectory::default());
            let dir = DbDirectory::new(db.clone(), cache.clone());
            assert_eq!(dir.reload(500).await, Ok(3));
            assert!(matches!(cache.admit(&key(2).info_hash(), 500), Admission::Open { .. }));
            assert!(matches!(
                cache.admit(&key(1).info_hash(), 500),
                Admission::Refused { label: "channel_disabled", .. }
            ));
            assert_eq!(cache.admit(&key(7).info_hash(), 500), Admission::Unknown);
            // It follows the catalogue's change counter: nothing to read until a write.
            assert_eq!(dir.refresh(500).await, Ok(false));
            db.set_channel_status(ads, false).await.unwrap();
            assert_eq!(dir.refresh(500).await, Ok(true), "a write moved the counter");
            assert!(matches!(
                cache.admit(&key(2).info_hash(), 500),
                Admission::Refused { label: "channel_disabled", .. }
            ));
            assert_eq!(dir.refresh(500).await, Ok(false));
            db.drop_schema().await.unwrap();
        }
    });
}

#[test]
fn tokens_are_hashed_and_scoped() {
    rt().block_on(async {
        for db in databases("tokens").await {
            let a = db.create_account("a", 1).await.unwrap();
            let b = db.create_account("b", 1).await.unwrap();
            let ta = db.create_api_token(a, "ops", 1).await.unwrap();
            let tb = db.create_api_token(b, "ops", 1).await.unwrap();
            assert_eq!(db.account_for_token(&ta).await.unwrap().map(|c| c.account_id), Some(a));
            assert_eq!(db.account_for_token(&tb).await.unwrap().map(|c| c.account_id), Some(b));
            assert_eq!(db.account_for_token("shoal_guess").await.unwrap(), None);
            assert!(db.create_account("a", 2).await.is_err(), "account names are unique");
            db.drop_schema().await.unwrap();
        }
    });
}

#[test]
fn usage_is_idempotent_and_rolls_up_per_account() {
    rt().block_on(async {
        for db in databases("usage").await {
            let a = db.create_account("a", 1).await.unwrap();
            let b = db.create_account("b", 1).await.unwrap();
            let key = |n: u8| ChannelKeypair::from_secret_bytes(&[n; 32]).id();
            let ca = db.create_channel(a, "a-news", key(1), "k1", false, 1).await.unwrap();
            let cb = db.create_channel(b, "b-news", key(2), "k2", false, 1).await.unwrap();
            let ev = |k: &str, ch: i64, vs: i64, peak: i64| UsageEvent {
                idempotency_key: k.to_owned(),
                channel_id: ch,
                hour_start: 7_200,
                viewer_seconds: vs,
                ad_viewer_seconds: vs / 10,
                seed_bytes: vs * 1_000,
                peak_viewers: peak,
            };
            let batch =
                [ev("n1:a-news:7200", ca, 600, 10), ev("n2:a-news:7200", ca, 400, 12), ev("n1:b-news:7200", cb, 50, 1)];
            assert_eq!(db.record_usage(&batch, 7_300).await.unwrap(), 3);
            // A retried flush (the node did not hear the commit) adds nothing.
            assert_eq!(db.record_usage(&batch, 7_301).await.unwrap(), 0);
            assert_eq!(db.roll_up_hour(7_200, 10_800).await.unwrap(), 2);
            // A late event, then the roll-up again: totals recomputed, not added twice.
            assert_eq!(db.record_usage(&[ev("n3:a-news:7200", ca, 100, 3)], 7_400).await.unwrap(), 1);
            db.roll_up_hour(7_200, 10_800).await.unwrap();
            db.roll_up_hour(7_200, 10_800).await.unwrap();
            let ua = db.hourly_usage(a, 0, 10_800).await.unwrap();
            assert_eq!(ua.len(), 1, "account a sees only its channel: {ua:?}");
            assert_eq!((ua[0].channel.as_str(), ua[0].viewer_seconds, ua[0].peak_viewers), ("a-news", 1_100, 12));
            assert_eq!((ua[0].ad_viewer_seconds, ua[0].seed_bytes), (110, 1_100_000));
            let ub = db.hourly_usage(b, 0, 10_800).await.unwrap();
            assert_eq!(ub.iter().map(|u| u.channel.as_str()).collect::<Vec<_>>(), ["b-news"]);
            // Bad input is refused, nothing written.
            let mut bad = ev("n1:a-news:7201", ca, 1, 1);
            bad.hour_start = 7_201;
            assert!(db.record_usage(&[bad], 7_500).await.is_err());
            db.drop_schema().await.unwrap();
        }
    });
}

#[test]
fn a_retried_flush_counts_once() {
    use catalogue::usage::{Drained, Mark, SeedMark, UsageDelta};
    rt().block_on(async {
        for db in databases("retry").await {
            let acct = db.create_account("a", 1).await.unwrap();
            let key = ChannelKeypair::from_secret_bytes(&[6; 32]).id();
            db.create_channel(acct, "news", key, "k", false, 1).await.unwrap();
            let seed = |hour_start, low, high| SeedMark {
                info_hash: key.info_hash(),
                peer_key: [2; 8],
                hour_start,
                low,
                high,
                first_seen: hour_start,
                last_seen: hour_start,
                down_low: 0,
                down_high: 0,
            };
            let d = Drained {
                usage: vec![UsageDelta {
                    info_hash: key.info_hash(),
                    hour_start: 3_600,
                    viewer_seconds: 90,
                    ad_viewer_seconds: 30,
                    seed_bytes: 5_000,
                    peak_viewers: 3,
                    ids_over_cap: 0,
                }],
                marks: vec![Mark {
                    info_hash: key.info_hash(),
                    hour_start: 3_600,
                    peer_key: [1; 8],
                    first_seen: 3_600,
                    first_watched: 0,
                    first_ad: 0,
                    last_seen: 3_690,
                    watched: 90,
                    ad: 30,
                    first_down: 0,
                    down: 0,
                }],
                seed_marks: vec![seed(3_600, 2_000, 5_000)],
            };
            assert_eq!(db.record_flush("n", "e1.61", &d, 3_700).await.unwrap(), 1);
            assert_eq!(db.record_flush("n", "e1.61", &d, 3_700).await.unwrap(), 0, "the same batch again: no-op");
            // A channel the catalogue doesn't know: dropped, not an error.
            let stray =
                Drained { usage: vec![UsageDelta { info_hash: [9; 20], ..d.usage[0].clone() }], ..Drained::default() };
            assert_eq!(db.record_flush("n", "e1.62", &stray, 3_700).await.unwrap(), 0);
            db.roll_up_hour(3_600, 7_200).await.unwrap();
            let u = &db.hourly_usage(acct, 0, 7_200).await.unwrap()[0];
            assert_eq!((u.viewer_seconds, u.seed_bytes), (90, 3_000), "the seed's first hour: high less low");
            // Another node saw the seed start in the hour before, and more of this hour:
            // marks merge (lowest low, highest high), and the hour's bytes count from the
            // seed's high of the hour before.
            let m = Drained { seed_marks: vec![seed(0, 0, 1_000), seed(3_600, 1_500, 6_000)], ..Drained::default() };
            db.record_flush("m", "e2.61", &m, 3_700).await.unwrap();
            db.roll_up_hour(0, 3_600).await.unwrap();
            db.roll_up_hour(3_600, 7_200).await.unwrap();
            let u = db.hourly_usage(acct, 0, 7_200).await.unwrap();
            assert_eq!(u.iter().map(|u| u.seed_bytes).collect::<Vec<_>>(), [1_000, 5_000], "{:?}", db.backend());
            assert_eq!(u[1].viewer_seconds, 90);
            db.drop_schema().await.unwrap();
        }
    });
}

/// Viewer-seconds the viewers' bytes don't back — ids that report watching without
/// taking the stream in — are a `usage.anomaly`, once per channel and hour; the marks'
/// byte counters merge across nodes like the rest.
#[test]
fn viewer_hours_not_backed_by_bytes_are_an_anomaly_once() {
    use catalogue::usage::{Drained, Mark, SeedMark};
    rt().block_on(async {
        for db in databases("unbacked").await {
            let acct = db.create_account("a", 1).await.unwrap();
            let key = ChannelKeypair::from_secret_bytes(&[7; 32]).id();
            db.create_channel(acct, "news", key, "k", false, 1).await.unwrap();
            const H: u64 = 3_600;
            // One seed, seen by two nodes: 3,000 s over which it took in 750 MB, a
            // 250 kB/s stream once its marks merge (each node alone saw too little).
            let seed = |first_seen, last_seen, down_low, down_high| SeedMark {
                info_hash: key.info_hash(),
                peer_key: [2; 8],
                hour_start: H,
                low: 0,
                high: 0,
                first_seen,
                last_seen,
                down_low,
                down_high,
            };
            // A viewer's sighting from `from` to `to` (s into the hour), watching all
            // of it, with `bytes_per_s` taken in.
            let viewer = |id: u16, from: u64, to: u64, bytes_per_s: u64| Mark {
                info_hash: key.info_hash(),
                hour_start: H,
                peer_key: [id as u8, (id >> 8) as u8, 0, 0, 0, 0, 0, 9],
                first_seen: H + from,
                first_watched: from as u16,
                first_ad: 0,
                last_seen: H + to,
                watched: to as u16,
                ad: 0,
                first_down: 1_000_000 + from * bytes_per_s,
                down: 1_000_000 + to * bytes_per_s,
            };
            // Four honest viewers, 1,000 s each at the stream's rate, their first and
            // second halves written by different nodes.
            let honest = |half: u64| (0..4).map(|i| viewer(i, 100 + half * 500, 600 + half * 500, 250_000)).collect();
            let a = Drained { marks: honest(0), seed_marks: vec![seed(H + 100, H + 100, 0, 0)], ..Drained::default() };
            let b = Drained {
                marks: honest(1),
                seed_marks: vec![seed(H + 3_100, H + 3_100, 750_000_000, 750_000_000)],
                ..Drained::default()
            };
            db.record_flush("n1", "e1.1", &a, 4_300).await.unwrap();
            db.record_flush("n2", "e2.1", &b, 6_800).await.unwrap();
            db.roll_up_hour(H as i64, (H + 3_200) as i64).await.unwrap();
            let u = &db.hourly_usage(acct, 0, 7_200).await.unwrap()[0];
            assert_eq!(u.viewer_seconds, 4_000);
            assert!(db.anomalies(acct, 10).await.unwrap().is_empty(), "backed: no anomaly ({:?})", db.backend());
            // Twenty made-up ids report 600 s each and take nothing in: 16,000 billed
            // seconds, 4,000 of them backed.
            let fakes = Drained { marks: (100..120).map(|i| viewer(i, 0, 600, 0)).collect(), ..Drained::default() };
            db.record_flush("n1", "e1.2", &fakes, 6_900).await.unwrap();
            for _ in 0..2 {
                db.roll_up_hour(H as i64, (H + 3_300) as i64).await.unwrap();
            }
            let found = db.anomalies(acct, 10).await.unwrap();
            assert_eq!(found.len(), 1, "once per channel and hour: {found:?}");
            assert_eq!(found[0]["type"], "usage.anomaly");
            let f = &found[0]["data"];
            assert_eq!(f["kind"], "unbacked_hours");
            assert_eq!(f["channel"], "news");
            assert_eq!((f["viewer_seconds"].as_u64(), f["backed_seconds"].as_u64()), (Some(16_000), Some(4_000)));
            assert_eq!(f["stream_bytes_per_s"].as_u64(), Some(250_000));
            db.drop_schema().await.unwrap();
        }
    });
}

/// Ingest asks the catalogue: stream keys (with a rotation's grace period), licences,
/// and the node's signing key, which must be the catalogue's public key.
#[test]
fn ingest_publishes_by_the_catalogue_and_keys_rotate() {
    rt().block_on(async {
        for db in databases("publish").await {
            let dir =
                std::env::temp_dir().join(format!("shoal-publish-keys-{}-{:?}", std::process::id(), db.backend()));
            let _ = std::fs::remove_dir_all(&dir);
            let keys = KeyDir::new(&dir);
            let a = db.create_account("a", 1).await.unwrap();
            let plan = db.create_plan(&commercial(), 1).await.unwrap();
            let news = keys.create("news").unwrap().id();
            let sport = keys.create("sport").unwrap().id();
            let news_id = db.create_channel(a, "news", news, "k-news", false, 1).await.unwrap();
            let sport_id = db.create_channel(a, "sport", sport, "k-sport", true, 1).await.unwrap();
            // A channel whose key on this node is not the catalogue's.
            let other = ChannelKeypair::from_secret_bytes(&[8; 32]).id();
            keys.create("mixup").unwrap();
            db.create_channel(a, "mixup", other, "k-mixup", false, 1).await.unwrap();

            let auth = CatalogueAuthorizer::new(db.clone(), KeyDir::new(&dir));
            assert!(matches!(auth.authorize("k-news", 100), Err(Refusal::Directory(_))), "nothing read yet");
            assert_eq!(auth.reload().await.unwrap(), 3);
            assert_eq!(auth.refresh().await, Ok(false), "nothing changed since the read");
            let g = auth.authorize("k-news", 100).unwrap();
            assert_eq!((g.channel.as_str(), g.key.id(), g.carries_ads), ("news", news, false));
            assert_eq!(auth.authorize("k-guess", 100).unwrap_err(), Refusal::UnknownKey);
            assert_eq!(auth.authorize("k-sport", 100).unwrap_err(), Refusal::LicenseRequired("sport".into()));
            match auth.authorize("k-mixup", 100) {
                Err(Refusal::NoSigningKey { detail, .. }) => assert!(detail.contains("not the key"), "{detail}"),
                other => panic!("{other:?}"),
            }
            let lic = db.add_license(sport_id, plan, 100, None, 100).await.unwrap();
            assert_eq!(auth.refresh().await, Ok(true), "a licence moves the catalogue's counter");
            assert!(auth.authorize("k-sport", 100).unwrap().carries_ads);

            // Rotation with a minute's grace: both keys until then, the new one after,
            // decided when asked (no read between).
            let k2 = db.rotate_stream_key(news_id, Some(160)).await.unwrap();
            assert_eq!(auth.refresh().await, Ok(true), "a rotation moves the catalogue's counter");
            assert_eq!(auth.refresh().await, Ok(false));
            assert_eq!(auth.authorize("k-news", 159).unwrap().channel, "news");
            assert_eq!(auth.authorize(&k2, 159).unwrap().channel, "news");
            assert_eq!(auth.check("k-news", 160).unwrap_err(), Refusal::UnknownKey, "the grace ended at 160");
            assert_eq!(auth.check(&k2, 160), Ok("news".to_owned()));
            // Rotation without grace: the old key dies at once.
            let k3 = db.rotate_stream_key(news_id, None).await.unwrap();
            assert_eq!(auth.refresh().await, Ok(true));
            assert_eq!(auth.check(&k2, 161).unwrap_err(), Refusal::UnknownKey);
            assert_eq!(auth.authorize(&k3, 161).unwrap().channel, "news");
            // Disabling, and enabling again.
            db.set_channel_status(news_id, false).await.unwrap();
            assert_eq!(auth.refresh().await, Ok(true));
            assert_eq!(auth.check(&k3, 161).unwrap_err(), Refusal::Disabled("news".into()));
            db.set_channel_status(news_id, true).await.unwrap();
            assert_eq!(auth.refresh().await, Ok(true));
            assert_eq!(auth.check(&k3, 161), Ok("news".to_owned()));

            // Ending the licence refuses the channel from then on.
            let ended = db.end_license(a, lic, 200).await.unwrap();
            assert_eq!((ended.valid_until, ended.status.as_str()), (Some(200), "active"));
            assert_eq!(auth.refresh().await, Ok(true));
            assert_eq!(auth.check("k-sport", 199), Ok("sport".to_owned()));
            assert!(matches!(auth.authorize("k-sport", 200), Err(Refusal::LicenseExpired { until_unix: 200, .. })));
            // A licence that ends later ends on time without another read.
            db.add_license(sport_id, plan, 200, Some(250), 200).await.unwrap();
            assert_eq!(auth.refresh().await, Ok(true));
            assert_eq!(auth.check("k-sport", 249), Ok("sport".to_owned()));
            assert!(matches!(auth.check("k-sport", 250), Err(Refusal::LicenseExpired { until_unix: 250, .. })));
            // A licence not started yet is revoked, not billed.
            let future = db.add_license(sport_id, plan, 1_000, None, 200).await.unwrap();
            assert_eq!(db.end_license(a, future, 300).await.unwrap().status, "revoked");
            let b = db.create_account("b", 1).await.unwrap();
            assert!(matches!(db.end_license(b, future, 300).await, Err(catalogue::db::DbError::Forbidden(_))));
            assert!(matches!(db.channel_of(b, "news").await, Err(catalogue::db::DbError::Forbidden(_))));
            assert!(matches!(db.channel_of(b, "nope").await, Err(catalogue::db::DbError::NotFound(_))));
            assert!(matches!(
                db.create_channel(b, "news", other, "x", false, 1).await,
                Err(catalogue::db::DbError::Conflict(_))
            ));
            let _ = std::fs::remove_dir_all(&dir);
            db.drop_schema().await.unwrap();
        }
    });
}

/// Stream epochs: the first proposal of a number is kept, on both databases; the newest
/// is found per channel.
#[test]
fn stream_epochs_keep_the_first_proposal() {
    use catalogue::db::StreamEpoch;
    rt().block_on(async {
        for db in databases("epochs").await {
            let e = |number: i64, seq0: i64| StreamEpoch {
                number,
                clock: "rtmp".into(),
                raw0: (1i64 << 33) - 900,
                seq0,
                wall0_us: 1_800_000_000_000_000,
                piece_ms: 50,
                cut_at_us: 0,
            };
            assert_eq!(db.latest_stream_epoch("news").await.unwrap(), None);
            assert_eq!(
                db.propose_stream_epoch("news", &e(1, 180_000_000_001), 10).await.unwrap(),
                e(1, 180_000_000_001)
            );
            // Another node proposing number 1 reads the first back.
            assert_eq!(
                db.propose_stream_epoch("news", &e(1, 180_000_000_002), 11).await.unwrap(),
                e(1, 180_000_000_001)
            );
            db.propose_stream_epoch("news", &e(2, 180_000_009_000), 12).await.unwrap();
            db.propose_stream_epoch("sport", &e(1, 5), 12).await.unwrap();
            assert_eq!(
                db.latest_stream_epoch("news").await.unwrap(),
                Some(e(2, 180_000_009_000)),
                "{:?}",
                db.backend()
            );
            assert_eq!(db.latest_stream_epoch("sport").await.unwrap(), Some(e(1, 5)));
            // Who cuts it: the time only moves forward.
            db.touch_stream_epoch("news", 2, 1_800_000_000_500_000).await.unwrap();
            db.touch_stream_epoch("news", 2, 1_800_000_000_400_000).await.unwrap();
            let newest = db.latest_stream_epoch("news").await.unwrap().unwrap();
            assert_eq!(newest.cut_at_us, 1_800_000_000_500_000);
            let bad = StreamEpoch { clock: "flv".into(), ..e(3, 1) };
            assert!(db.propose_stream_epoch("news", &bad, 13).await.is_err(), "an unknown clock is refused");
            db.drop_schema().await.unwrap();
        }
    });
}
