//! The bill across tracker processes: 1–3 `shoal tracker` processes sharing Redis and
//! a PostgreSQL catalogue, behind a spreader (this test: round-robin or random), 200
//! viewers and two seeds announcing over HTTP for 10 minutes of driven time across an
//! hour's turn (`--clock-file`: the trackers' time is what the test writes), one tracker
//! SIGKILLed mid-run and restarted under its name in two arrangements. Each bills
//! exactly what one tracker seeing every announce would. Needs `SHOAL_TEST_DATABASE_URL`
//! and `SHOAL_TEST_REDIS_URL` (`.ci/run` sets both); skipped, saying so, without them.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Killed, eventually, http_get, start, terminate, word_after};
use swarm::piece::ChannelKeypair;

const H0: u64 = 1_800_000_000; // a multiple of 3600
const START: u64 = H0 + 3_300; // the run crosses into the next hour at 300 s
const VIEWERS: u64 = 200;
const SEEDS: [u64; 2] = [START, START + 7];
const TOKEN: &str = "metering-seed-token";

fn pct(b: &[u8]) -> String {
    b.iter().map(|b| format!("%{b:02x}")).collect()
}

/// One `shoal tracker` process on a free port, its clock the file `clock`.
fn tracker(
    db_url: &str,
    redis: &str,
    prefix: &str,
    node: &str,
    clock: &std::path::Path,
    data: &str,
) -> (Killed, String) {
    let clock = clock.display().to_string();
    let args = [
        "tracker",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        db_url,
        "--redis-url",
        redis,
        "--redis-prefix",
        prefix,
        "--node",
        node,
        "--clock-file",
        &clock,
        "--seeder-token",
        TOKEN,
        "--data-dir",
        data,
    ];
    let (child, lines) = start(&args, "TRACKER");
    let url = word_after(&lines, "TRACKER");
    (child, url.trim_end_matches("/announce").to_owned())
}

/// The tracker's usage flushes so far.
fn flushes(base: &str) -> u64 {
    let (_, body) = http_get(&format!("{base}/metrics"));
    let text = String::from_utf8(body).unwrap();
    let line = text.lines().find(|l| l.starts_with("shoal_tracker_usage_flushes_total{result=\"ok\"}"));
    line.map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// Writes the driven time (replacing the file whole: a reader never sees half of it).
fn set_clock(clock: &std::path::Path, t: u64) {
    let tmp = clock.with_extension("new");
    std::fs::write(&tmp, t.to_string()).unwrap();
    std::fs::rename(&tmp, clock).unwrap();
}

#[test]
fn tracker_processes_behind_any_spreader_bill_what_one_tracker_would() {
    let (Ok(pg), Ok(redis)) = (std::env::var("SHOAL_TEST_DATABASE_URL"), std::env::var("SHOAL_TEST_REDIS_URL")) else {
        eprintln!("SKIPPED: SHOAL_TEST_DATABASE_URL and SHOAL_TEST_REDIS_URL are needed (.ci/run sets both)");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A database of its own: the tracker processes open it by URL.
    let name = format!("shoal_meterproc_{}", std::process::id());
    let admin = rt.block_on(catalogue::db::Db::open_in_schema(&pg, Some(&name))).unwrap();
    rt.block_on(catalogue::testing::raw_sql(&admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).unwrap();
    rt.block_on(catalogue::testing::raw_sql(&admin, &format!("CREATE DATABASE {name}"))).unwrap();
    let (base, _) = pg.rsplit_once('/').unwrap();
    let db_url = format!("{base}/{name}");
    let db = rt.block_on(catalogue::db::Db::open(&db_url)).unwrap();
    let acct = rt.block_on(db.create_account("a", 1)).unwrap();
    let dir = std::env::temp_dir().join(format!("shoal-meterproc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.display().to_string();

    // (trackers, random spreader, tracker killed and when, viewers send watched_prev)
    let arrangements = [
        (1, false, None, false),
        (2, false, None, false),
        (3, true, None, false),
        (3, false, Some((1, 170)), false),
        (3, true, Some((2, 300)), true),
    ];
    let mut random = catalogue::testing::choices(0x5eed);
    // Each viewer joins in the first minute and announces every 30 s after.
    let joins: Vec<u64> = (0..VIEWERS).map(|_| START + random(60)).collect();
    for (n, &(trackers_n, spread_at_random, killed, prev)) in arrangements.iter().enumerate() {
        let key = ChannelKeypair::from_secret_bytes(&[60 + n as u8; 32]).id();
        rt.block_on(db.create_channel(acct, &format!("ch{n}"), key, &format!("k{n}"), false, 1)).unwrap();
        let hash = pct(&key.info_hash());
        let clock = dir.join(format!("clock{n}"));
        set_clock(&clock, START);
        let prefix = format!("{name}_{n}");
        let up = |node: usize| tracker(&db_url, &redis, &prefix, &format!("t{node}"), &clock, &data);
        // (process, base URL, driven time it started at)
        let mut trackers: Vec<(Killed, String, u64)> = (0..trackers_n)
            .map(|i| {
                let (c, u) = up(i);
                (c, u, START)
            })
            .collect();
        let mut turn = 0;
        for t in START..START + 600 {
            let before: Vec<u64> = trackers.iter().map(|tr| flushes(&tr.1)).collect();
            set_clock(&clock, t);
            // A new minute: each tracker flushes (as every minute of its clock) before
            // this second's announces, as a tracker whose minutes pass in real time
            // would (here they pass in a tenth of a second).
            for (tr, before) in trackers.iter().zip(before) {
                if t % 60 == 0 && t / 60 != tr.2 / 60 {
                    let flushed = eventually(std::time::Duration::from_secs(20), || flushes(&tr.1) > before);
                    assert!(flushed, "tracker {} did not flush at {t}", tr.1);
                }
            }
            let mut to = |query: String| {
                let i = if spread_at_random { random(trackers_n as u64) as usize } else { turn % trackers_n };
                turn += 1;
                let (status, body) = http_get(&format!("{}/announce?{query}", trackers[i].1));
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            };
            for (v, &joined) in joins.iter().enumerate() {
                if t < joined || (t - joined) % 30 != 0 {
                    continue;
                }
                let hour_start = t - t % 3600;
                let mut q = format!(
                    "info_hash={hash}&peer_id={}&port={}&uploaded=0&downloaded=0&left=0&compact=1&watched={}",
                    pct(&[v as u8; 20]),
                    7000 + v,
                    t - joined.max(hour_start)
                );
                if prev && t % 3600 < 600 && joined < hour_start {
                    // The last hour's final count: it watched to its end.
                    q += &format!("&watched_prev={}", hour_start - joined.max(hour_start - 3600));
                }
                to(q);
            }
            // Two seeds upload 100 kB/s each from their start, announcing every 30 s.
            for (s, &started) in SEEDS.iter().enumerate() {
                if t < started || (t - started) % 30 != 0 {
                    continue;
                }
                let event = if t == started { "&event=started" } else { "" };
                to(format!(
                    "info_hash={hash}&peer_id={}&port={}&uploaded={}&downloaded=0&left=0&compact=1&role=seed&token={TOKEN}{event}",
                    pct(&[250 + s as u8; 20]),
                    9000 + s,
                    (t - started) * 100_000
                ));
            }
            if let Some((k, at)) = killed
                && t == START + at
            {
                // SIGKILL: what it saw since its last flush is gone. Restarted under
                // its name (on a new port: the spreader follows).
                trackers[k].0.0.kill().unwrap();
                trackers[k].0.0.wait().unwrap();
                let (c, u) = up(k);
                trackers[k] = (c, u, t);
            }
        }
        // Stopped: each writes what it has not flushed.
        for (child, _, _) in &mut trackers {
            assert!(terminate(child).success());
        }
    }
    for hour in [H0, H0 + 3_600] {
        rt.block_on(db.roll_up_hour(hour as i64, (START + 600) as i64)).unwrap();
    }
    // What one tracker seeing every announce bills (without and with watched_prev).
    let truth = catalogue::testing::one_tracker_bill(&joins, START + 600);
    let seed_truth: u64 = SEEDS.iter().map(|&s| (START + 599 - s) / 30 * 30 * 100_000).sum();
    let usage = rt.block_on(db.usage_summary(acct, H0 as i64, H0 as i64 + 7_200)).unwrap();
    assert_eq!(usage.len(), arrangements.len());
    for (u, arrangement) in usage.iter().zip(&arrangements) {
        let truth = truth[usize::from(arrangement.3)];
        println!(
            "{arrangement:?}: billed {} viewer-seconds and {} seed bytes; one tracker would bill {truth} and {seed_truth}",
            u.viewer_seconds, u.seed_bytes
        );
        assert_eq!(u.viewer_seconds as u64, truth, "{arrangement:?}");
        assert_eq!(u.seed_bytes as u64, seed_truth, "{arrangement:?}");
        assert!((u.unique_viewers - VIEWERS as i64).abs() <= 10, "{arrangement:?}: {}", u.unique_viewers);
    }
    drop(db);
    rt.block_on(catalogue::testing::raw_sql(&admin, &format!("DROP DATABASE {name} WITH (FORCE)"))).unwrap();
    rt.block_on(admin.drop_schema()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
