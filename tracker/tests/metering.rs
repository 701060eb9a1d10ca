//! Metering against real databases: usage that survives a killed tracker and a
//! catalogue outage. SQLite always, PostgreSQL when `SHOAL_TEST_DATABASE_URL` is set
//! (`.ci/run` sets it).
#![allow(clippy::unwrap_used)]

mod common;

use catalogue::db::Db;
use catalogue::directory::{CachedDirectory, DbDirectory};
use catalogue::testing::databases;
use swarm::piece::ChannelKeypair;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// An account with one channel, "news", keyed by `secret`: (account, channel id).
async fn news_channel(db: &Db, secret: u8) -> (i64, swarm::piece::ChannelId) {
    let acct = db.create_account("a", 1).await.unwrap();
    let key = ChannelKeypair::from_secret_bytes(&[secret; 32]).id();
    db.create_channel(acct, "news", key, "k", false, 1).await.unwrap();
    (acct, key)
}

/// Viewer `peer`'s announce on `channel`, `w` seconds watched this hour.
fn viewer(channel: &swarm::piece::ChannelId, peer: u8, w: u64) -> tracker::announce::Announce {
    use tracker::announce::{Announce, Role};
    Announce { watched_s: Some(w), role: Role::Viewer, ..Announce::new(channel.info_hash(), [peer; 20], 7000) }
}

#[test]
fn a_killed_tracker_loses_no_usage() {
    use tracker::announce::{Announce, Event, Role};
    use tracker::meter::Meter;
    use tracker::store::{StoreConfig, Swarms};

    const H0: u64 = 1_800_000_000; // a multiple of 3600
    let ip = |n: u8| std::net::IpAddr::from([10, 0, 0, n]);
    rt().block_on(async {
        for db in databases("kill").await {
            let (acct, key) = news_channel(&db, 5).await;
            // Viewers watch a third of the time inside ad breaks; a seed uploads 1 MB/s.
            let ann = |peer: u8, w: u64| Announce { ad_watched_s: Some(w / 3), ..viewer(&key, peer, w) };
            let seed = |t: u64, event| Announce {
                uploaded: t * 1_000_000,
                role: Role::Seed,
                event,
                ..Announce::new(key.info_hash(), [9; 20], 7000)
            };

            let first = Swarms::with_epoch(StoreConfig::default(), H0);
            let meter = Meter::new(db.clone(), "node-a");
            for t in (0..=600u32).step_by(60) {
                first.announce(t, &ann(1, u64::from(t)), ip(1));
                first.announce(t, &ann(2, u64::from(t)), ip(2));
                let event = if t == 0 { Event::Started } else { Event::None };
                first.announce(t, &seed(u64::from(t), event), ip(9));
            }
            let o = meter.flush(&first, H0 + 600).await;
            assert_eq!((o.written_batches, o.failed, o.viewer_seconds), (1, false, 1_200));
            // Two more minutes counted, then SIGKILL: nothing of them was written.
            first.announce(660, &ann(1, 660), ip(1));
            first.announce(720, &ann(2, 720), ip(2));
            first.announce(720, &seed(720, Event::None), ip(9));
            drop((first, meter));

            let second = Swarms::with_epoch(StoreConfig::default(), H0 + 750);
            let meter = Meter::new(db.clone(), "node-a");
            // (Nothing to load: viewers' and seeds' marks merge in the catalogue.)
            second.announce(30, &ann(1, 780), ip(1));
            second.announce(30, &ann(2, 780), ip(2));
            second.announce(30, &seed(780, Event::None), ip(9));
            meter.flush(&second, H0 + 780).await;
            meter.roll_up(H0 + 780).await.unwrap();

            let u = db.hourly_usage(acct, H0 as i64, H0 as i64 + 3600).await.unwrap();
            assert_eq!(u.len(), 1);
            // Each viewer is billed from its first announce's counters on (the baseline):
            // 780 s each, a third of it in ads, though the minutes before the kill were
            // never written — their next announce carried the counters on; the seed from
            // its start: 780 s at 1 MB/s.
            let u = &u[0];
            assert_eq!(
                (u.viewer_seconds, u.ad_viewer_seconds, u.seed_bytes, u.peak_viewers, u.unique_viewers),
                (2 * 780, 2 * 260, 780_000_000, 2, 2),
                "{:?}",
                db.backend()
            );
            let sum = db.usage_summary(acct, H0 as i64, H0 as i64 + 3600).await.unwrap();
            assert_eq!((sum[0].viewer_seconds, sum[0].unique_viewers), (2 * 780, 2));
            db.drop_schema().await.unwrap();
        }
    });
}

/// Two tracker processes flushing in the same minute under one node name — a restart
/// within a minute of the last flush, or two replicas left on the default name — each
/// write their usage: the batch keys carry a per-process epoch. (With keys of node,
/// channel, hour and minute only, the second flush was dropped as a duplicate.)
#[test]
fn flushes_of_two_processes_in_one_minute_are_both_written() {
    use tracker::meter::Meter;
    use tracker::store::{StoreConfig, Swarms};

    const H0: u64 = 1_800_000_000;
    let ip = |n: u8| std::net::IpAddr::from([10, 0, 0, n]);
    rt().block_on(async {
        for db in databases("epoch").await {
            let (acct, key) = news_channel(&db, 6).await;
            let mut billed = 0;
            for peer in [1u8, 2] {
                let swarms = Swarms::with_epoch(StoreConfig::default(), H0);
                let meter = Meter::new(db.clone(), "tracker-1");
                swarms.announce(0, &viewer(&key, peer, 0), ip(peer));
                swarms.announce(60, &viewer(&key, peer, 60), ip(peer));
                let o = meter.flush(&swarms, H0 + 61).await;
                assert_eq!((o.written_batches, o.viewer_seconds, o.failed), (1, 60, false));
                billed += o.viewer_seconds;
            }
            Meter::new(db.clone(), "tracker-1").roll_up(H0 + 62).await.unwrap();
            let u = db.hourly_usage(acct, H0 as i64, H0 as i64 + 3600).await.unwrap();
            assert_eq!((u[0].viewer_seconds, billed), (120, 120), "{:?}", db.backend());
            db.drop_schema().await.unwrap();
        }
    });
}

/// Usage written hours after the hour it was watched in (a batch queued through a long
/// catalogue outage) is rolled up: every hour a written batch touched is, not only the
/// last two.
#[test]
fn usage_written_hours_late_is_rolled_up() {
    use tracker::meter::Meter;
    use tracker::store::{StoreConfig, Swarms};

    const H0: u64 = 1_800_000_000;
    rt().block_on(async {
        for db in databases("late").await {
            let (acct, key) = news_channel(&db, 7).await;
            let swarms = Swarms::with_epoch(StoreConfig::default(), H0);
            let meter = Meter::new(db.clone(), "tracker-1");
            swarms.announce(0, &viewer(&key, 1, 0), std::net::IpAddr::from([10, 0, 0, 1]));
            swarms.announce(60, &viewer(&key, 1, 60), std::net::IpAddr::from([10, 0, 0, 1]));
            // Written three hours later.
            let late = H0 + 3 * 3600 + 10;
            assert_eq!(meter.flush(&swarms, late).await.written_batches, 1);
            meter.roll_up(late).await.unwrap();
            let u = db.hourly_usage(acct, H0 as i64, H0 as i64 + 3600).await.unwrap();
            assert_eq!(u.iter().map(|u| u.viewer_seconds).sum::<i64>(), 60, "{:?}", db.backend());
            db.drop_schema().await.unwrap();
        }
    });
}

/// PostgreSQL going away while the tracker runs: announces keep being answered (the
/// last good directory), usage is kept, and written once the catalogue is back —
/// nothing lost, nothing twice. The failures show in the metrics.
#[test]
fn a_catalogue_outage_keeps_usage_until_it_is_back() {
    use std::sync::Arc;
    use tracker::http::Reload;
    use tracker::meter::Meter;
    use tracker::store::StoreConfig;
    let Ok(url) = std::env::var("SHOAL_TEST_DATABASE_URL") else {
        eprintln!("SKIPPED: SHOAL_TEST_DATABASE_URL is not set (.ci/run sets it)");
        return;
    };
    const H0: u64 = 1_800_000_000;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let proxy = common::Proxy::start(&rt, &common::host_port(&url));
    let via_proxy = url.replacen(&common::host_port(&url), &proxy.addr.to_string(), 1);
    let schema = format!("shoal_outage_{}", std::process::id());
    let db = rt.block_on(Db::open_in_schema(&via_proxy, Some(&schema))).unwrap();
    let key = ChannelKeypair::from_secret_bytes(&[4; 32]).id();
    let acct = rt.block_on(db.create_account("a", 1)).unwrap();
    rt.block_on(db.create_channel(acct, "news", key, "k", false, 1)).unwrap();
    let cache = Arc::new(CachedDirectory::default());
    let reload = Reload::Db(DbDirectory::new(db.clone(), cache.clone()));
    rt.block_on(reload.run(H0)).unwrap();
    let mut tracker =
        tracker::Tracker::new(StoreConfig::default(), cache.clone(), catalogue::secrets::SeederTokens::default());
    tracker.swarms = tracker::store::Swarms::with_epoch(StoreConfig::default(), H0);
    let meter = Meter::new(db.clone(), "node-a");
    let q = |peer: u8, w: u32| {
        format!(
            "info_hash={}&peer_id={}&port=7000&compact=1&watched={w}",
            tracker::announce::percent_encode(&key.info_hash()),
            tracker::announce::percent_encode(&[peer; 20])
        )
    };
    let ip = std::net::IpAddr::from([10, 0, 0, 1]);
    for t in [0u32, 60] {
        assert_eq!(tracker.announce(&q(1, t), ip, t, H0 + u64::from(t)).0, 200);
    }
    assert!(!rt.block_on(meter.flush(&tracker.swarms, H0 + 60)).failed);

    proxy.set_up(false);
    assert!(rt.block_on(reload.run(H0 + 120)).is_err(), "the directory can't be read");
    for t in [120u32, 180] {
        assert_eq!(tracker.announce(&q(1, t), ip, t, H0 + u64::from(t)).0, 200, "still answered");
    }
    let o = rt.block_on(meter.flush(&tracker.swarms, H0 + 180));
    assert!(o.failed);
    assert_eq!((o.queued_batches, o.lag_s), (1, 0));
    assert_eq!(tracker.announce(&q(1, 240), ip, 240, H0 + 240).0, 200);

    proxy.set_up(true);
    let o = rt.block_on(meter.flush(&tracker.swarms, H0 + 240));
    assert_eq!((o.failed, o.written_batches, o.queued_batches), (false, 2, 0));
    rt.block_on(meter.roll_up(H0 + 240)).unwrap();
    let u = rt.block_on(db.hourly_usage(acct, H0 as i64, H0 as i64 + 3600)).unwrap();
    assert_eq!(u[0].viewer_seconds, 240, "60 before, 120 during, 60 after the outage");
    rt.block_on(db.drop_schema()).unwrap();
}

/// Viewer ids that report watching but take nothing in — each from its own address,
/// so no cap stops them — are flagged when the hour's viewer-seconds outgrow what the
/// viewers' `downloaded` bytes could play at the stream's rate (the seed's
/// `downloaded`: the stream from ingest). Honest viewers alone are not.
#[test]
fn ids_that_watch_without_taking_the_stream_in_are_an_anomaly() {
    use tracker::announce::{Announce, Role};
    use tracker::meter::Meter;
    use tracker::store::{StoreConfig, Swarms};

    const H0: u64 = 1_800_000_000;
    const RATE: u64 = 250_000;
    rt().block_on(async {
        for db in databases("unbacked").await {
            let (acct, key) = news_channel(&db, 8).await;
            let swarms = Swarms::with_epoch(StoreConfig::default(), H0);
            let meter = Meter::new(db.clone(), "node-a");
            let seed = |t: u64| Announce {
                uploaded: t * RATE / 50,
                downloaded: t * RATE,
                role: Role::Seed,
                ..Announce::new(key.info_hash(), [9; 20], 7000)
            };
            // Honest viewers take in the stream and a little more (protocol, repairs).
            let honest = |peer: u8, t: u64| Announce { downloaded: t * RATE * 26 / 25, ..viewer(&key, peer, t) };
            let ip = |a: u8, b: u8| std::net::IpAddr::from([10, a, b, 1]);
            let minute = |t: u32, fakes: bool| {
                swarms.announce(t, &seed(u64::from(t)), ip(0, 9));
                for v in 1..=4 {
                    swarms.announce(t, &honest(v, u64::from(t)), ip(0, v));
                }
                if fakes {
                    // Each a viewer by its counter from 20 minutes in, from its own network.
                    for f in 100..120u8 {
                        swarms.announce(t, &viewer(&key, f, u64::from(t - 1_200)), ip(f, 1));
                    }
                }
            };
            for t in (0..=1_200u32).step_by(60) {
                minute(t, false);
            }
            meter.flush(&swarms, H0 + 1_200).await;
            meter.roll_up(H0 + 1_200).await.unwrap();
            assert!(db.anomalies(acct, 10).await.unwrap().is_empty(), "honest viewers are backed ({:?})", db.backend());
            for t in (1_260..=1_800u32).step_by(60) {
                minute(t, true);
            }
            meter.flush(&swarms, H0 + 1_800).await;
            meter.roll_up(H0 + 1_800).await.unwrap();
            let u = &db.hourly_usage(acct, H0 as i64, H0 as i64 + 3_600).await.unwrap()[0];
            // 4 × 1,800 honest seconds, and 20 × 540 made up (each billed from its
            // first announce, 1,260 s in).
            assert_eq!(u.viewer_seconds, 7_200 + 10_800);
            let found = db.anomalies(acct, 10).await.unwrap();
            assert_eq!(found.len(), 1, "{found:#?}");
            let data = &found[0]["data"];
            assert_eq!(data["kind"], "unbacked_hours");
            assert_eq!(data["stream_bytes_per_s"].as_u64(), Some(RATE));
            // The honest viewers' bytes back their 7,200 s (and 4 % more), no more.
            let backed = data["backed_seconds"].as_u64().unwrap();
            assert!((7_200..=7_500).contains(&backed), "{data}");
            db.drop_schema().await.unwrap();
        }
    });
}

/// The measured attack, again: 300 made-up viewer ids from one address
/// announcing every 10 s for 70 s. Before the caps it billed 18,000 viewer-seconds and
/// 301 unique viewers; now the default cap's 64 ids are billed, no more.
#[test]
fn three_hundred_ids_from_one_address_bill_at_most_the_cap() {
    use tracker::announce::{Announce, Role};
    use tracker::meter::Meter;
    use tracker::store::{StoreConfig, Swarms};

    const H0: u64 = 1_800_000_000;
    rt().block_on(async {
        for db in databases("three_hundred").await {
            let (acct, key) = news_channel(&db, 9).await;
            let cfg = StoreConfig::default();
            let swarms = Swarms::with_epoch(cfg, H0);
            let from = std::net::IpAddr::from([203, 0, 113, 7]);
            for t in (0..=70u32).step_by(10) {
                for id in 0..300u16 {
                    let mut peer_id = [b'f'; 20];
                    peer_id[..2].copy_from_slice(&id.to_be_bytes());
                    let a = Announce {
                        watched_s: Some(u64::from(t)),
                        role: Role::Viewer,
                        ..Announce::new(key.info_hash(), peer_id, 7000)
                    };
                    swarms.announce(t, &a, from);
                }
            }
            let meter = Meter::new(db.clone(), "node-a");
            meter.flush(&swarms, H0 + 70).await;
            meter.roll_up(H0 + 70).await.unwrap();
            let u = &db.hourly_usage(acct, H0 as i64, H0 as i64 + 3_600).await.unwrap()[0];
            let cap = u64::from(cfg.max_ids_per_address);
            assert_eq!(cap, 64);
            assert_eq!((u.viewer_seconds as u64, u.unique_viewers as u64), (cap * 70, cap), "{:?}", db.backend());
            db.drop_schema().await.unwrap();
        }
    });
}

/// Ids over a cap become a `usage.anomaly` of the channel's account: once per channel
/// and hour, whatever the flushes and replicas, with how many ids the first report saw.
#[test]
fn ids_over_the_cap_are_recorded_as_an_anomaly_once_per_hour() {
    use tracker::meter::Meter;
    use tracker::store::{StoreConfig, Swarms};

    const H0: u64 = 1_800_000_000;
    rt().block_on(async {
        for db in databases("anomaly").await {
            let (acct, key) = news_channel(&db, 7).await;
            let cfg = StoreConfig { max_ids_per_address: 2, ..StoreConfig::default() };
            let from = std::net::IpAddr::from([203, 0, 113, 7]);
            for (node, ids) in [("node-a", 1..=5u8), ("node-b", 11..=14)] {
                let swarms = Swarms::with_epoch(cfg, H0);
                for id in ids {
                    swarms.announce(10, &viewer(&key, id, 0), from);
                }
                Meter::new(db.clone(), node).flush(&swarms, H0 + 10).await;
            }
            let found = db.anomalies(acct, 10).await.unwrap();
            assert_eq!(found.len(), 1, "one per channel and hour: {found:#?}");
            let data = &found[0]["data"];
            assert_eq!((data["channel"].as_str(), data["kind"].as_str()), (Some("news"), Some("ids_over_cap")));
            assert_eq!(
                (data["ids"].as_u64(), data["hour_start"].as_u64()),
                (Some(3), Some(H0)),
                "node-a's: 5 ids, 2 allowed"
            );
            assert_eq!(found[0]["type"], "usage.anomaly");
            db.drop_schema().await.unwrap();
        }
    });
}

/// The bill across replicas: 200 viewers for 10 minutes of driven time (across an hour
/// boundary), each announcing every 30 s to one of 1, 2 or 3 trackers that share the
/// catalogue — chosen in turn, or at random — and once with one of three trackers
/// SIGKILLed mid-run (what it had not flushed, up to a minute, is lost) and restarted
/// under its name. Every arrangement bills exactly what one tracker seeing every
/// announce would: the viewers' marks merge in the catalogue, whichever replica wrote
/// them, and a lost sighting is carried on by the viewer's next announce; likewise two
/// seeds' bytes, from their `uploaded` counters' hourly marks. Viewers that
/// send the previous hour's final counters early in an hour (`watched_prev`, as Shoal's
/// players do) are billed each hour to its end, even with a tracker killed at the
/// hour's turn; without it an hour's tail is not billed (the arrangements without).
#[test]
fn replicas_behind_any_spreader_bill_what_one_tracker_would() {
    use tracker::announce::{Announce, Event, Role};
    use tracker::meter::Meter;
    use tracker::store::{StoreConfig, Swarms};

    const H0: u64 = 1_800_000_000;
    const START: u64 = H0 + 3_300; // the run crosses into the next hour at 300 s
    const VIEWERS: u64 = 200;
    const SEEDS: [u64; 2] = [START, START + 7];
    rt().block_on(async {
        for db in databases("replicas").await {
            let acct = db.create_account("a", 1).await.unwrap();
            // (trackers, random spreader, tracker killed and when, viewers send watched_prev)
            let arrangements = [
                (1, false, None, false),
                (2, false, None, false),
                (3, false, None, false),
                (2, true, None, false),
                (3, true, None, false),
                (3, false, Some((1, 170)), false),
                (1, false, None, true),
                (3, true, Some((1, 300)), true),
            ];
            let mut channels = Vec::new();
            for (n, _) in arrangements.iter().enumerate() {
                let key = ChannelKeypair::from_secret_bytes(&[40 + n as u8; 32]).id();
                db.create_channel(acct, &format!("ch{n}"), key, &format!("k{n}"), false, 1).await.unwrap();
                channels.push(key);
            }
            let mut random = catalogue::testing::choices(0x5eed);
            // Each viewer joins in the first minute and announces every 30 s after.
            let joins: Vec<u64> = (0..VIEWERS).map(|_| START + random(60)).collect();
            for (key, &(n, spread_at_random, killed, prev)) in channels.iter().zip(&arrangements) {
                let mut trackers: Vec<(Swarms, Meter)> = (0..n)
                    .map(|i| {
                        (Swarms::with_epoch(StoreConfig::default(), START), Meter::new(db.clone(), format!("t{i}")))
                    })
                    .collect();
                let mut epochs = vec![START; n];
                let mut turn = 0;
                for t in START..START + 600 {
                    for (v, &joined) in joins.iter().enumerate() {
                        if t < joined || (t - joined) % 30 != 0 {
                            continue;
                        }
                        let hour_start = t - t % 3600;
                        let watched = t - joined.max(hour_start);
                        let i = if spread_at_random { random(n as u64) as usize } else { turn % n };
                        turn += 1;
                        let ip = std::net::IpAddr::from([10, 1, (v / 250) as u8, (v % 250) as u8 + 1]);
                        let mut a = viewer(key, v as u8, watched);
                        if prev && t % 3600 < 600 && joined < hour_start {
                            // The last hour's final count: it watched to its end.
                            a.watched_prev_s = Some(hour_start - joined.max(hour_start - 3600));
                        }
                        trackers[i].0.announce((t - epochs[i]) as u32, &a, ip);
                    }
                    // Two seeds upload 100 kB/s each from START, announcing every 30 s.
                    for (n_seed, &started) in SEEDS.iter().enumerate() {
                        if t < started || (t - started) % 30 != 0 {
                            continue;
                        }
                        let i = if spread_at_random { random(n as u64) as usize } else { turn % n };
                        turn += 1;
                        let a = Announce {
                            uploaded: (t - started) * 100_000,
                            role: Role::Seed,
                            event: if t == started { Event::Started } else { Event::None },
                            ..Announce::new(key.info_hash(), [250 + n_seed as u8; 20], 7000)
                        };
                        trackers[i].0.announce((t - epochs[i]) as u32, &a, std::net::IpAddr::from([10, 9, 0, 1]));
                    }
                    // Each tracker flushes every minute, at its own second.
                    for (i, (swarms, meter)) in trackers.iter().enumerate() {
                        if (t - START) % 60 == 17 + 13 * i as u64 {
                            assert!(!meter.flush(swarms, t).await.failed);
                        }
                    }
                    if let Some((k, at)) = killed
                        && t == START + at
                    {
                        // SIGKILL: what it saw since its last flush is gone.
                        trackers[k] =
                            (Swarms::with_epoch(StoreConfig::default(), t), Meter::new(db.clone(), format!("t{k}")));
                        epochs[k] = t;
                    }
                }
                for (swarms, meter) in &trackers {
                    meter.flush(swarms, START + 600).await;
                    meter.roll_up(START + 600).await.unwrap();
                }
            }
            // What one tracker seeing every announce bills (without and with watched_prev).
            let truth = catalogue::testing::one_tracker_bill(&joins, START + 600);
            let usage = db.usage_summary(acct, H0 as i64, H0 as i64 + 7_200).await.unwrap();
            assert_eq!(usage.len(), arrangements.len());
            assert!(truth[1] > truth[0], "the tails: {truth:?}");
            // Each seed's counter at its last announce.
            let seed_truth: u64 = SEEDS.iter().map(|&s| (START + 599 - s) / 30 * 30 * 100_000).sum();
            for (u, arrangement) in usage.iter().zip(&arrangements) {
                let (billed, truth) = (u.viewer_seconds as u64, truth[usize::from(arrangement.3)]);
                println!(
                    "{arrangement:?}: billed {billed} viewer-seconds and {} seed bytes, one tracker would bill \
                     {truth} and {seed_truth}",
                    u.seed_bytes
                );
                assert_eq!(billed, truth, "{arrangement:?} on {:?}", db.backend());
                assert_eq!(u.seed_bytes as u64, seed_truth, "{arrangement:?} on {:?}", db.backend());
                // Over the period: the union of the hours' HyperLogLog sketches (±1.6 %).
                assert!((u.unique_viewers - VIEWERS as i64).abs() <= 10, "{arrangement:?}: {}", u.unique_viewers);
            }
            db.drop_schema().await.unwrap();
        }
    });
}
