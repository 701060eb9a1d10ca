//! For the tests of this crate and of those built on it (tracker, shoal): the
//! databases to run a test against, and an example plan. Not used by the services.

use crate::db::{Db, Plan, Price};

/// The databases to run `test` against, each fresh: SQLite (a file in a temporary
/// directory) always, PostgreSQL in a schema of its own when `SHOAL_TEST_DATABASE_URL`
/// is set (`.ci/run` sets it; without it the test says so and runs on SQLite only).
///
/// # Panics
/// If a database can't be opened: it is a test's set-up.
#[allow(clippy::unwrap_used)]
pub async fn databases(test: &str) -> Vec<Db> {
    let dir = std::env::temp_dir().join(format!("shoal-db-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut dbs = vec![Db::open(&format!("sqlite://{}", dir.join("tracker.db").display())).await.unwrap()];
    match std::env::var("SHOAL_TEST_DATABASE_URL") {
        Ok(url) => {
            let schema = format!("shoal_{test}_{}", std::process::id());
            dbs.push(Db::open_in_schema(&url, Some(&schema)).await.unwrap());
        }
        Err(_) => eprintln!("SKIPPED PostgreSQL: SHOAL_TEST_DATABASE_URL is not set (.ci/run sets it)"),
    }
    dbs
}

/// A commercial plan: €499 a month, 10,000 viewer-hours included, 2 cents beyond.
pub fn commercial() -> Plan {
    Plan {
        name: "broadcast".into(),
        commercial: true,
        offered: true,
        price: Price {
            currency: "EUR".into(),
            monthly_price_cents: 49_900,
            included_viewer_hours: 10_000,
            overage_cents_per_viewer_hour: 2,
        },
    }
}

/// Runs `sql` as it is, as someone with the database's password could: for tests
/// that show what the database itself refuses (issued invoices never change).
///
/// # Errors
/// What the database answers.
pub async fn raw_sql(db: &Db, sql: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sql).execute(&db.pool).await?.rows_affected())
}

/// A reproducible stream of choices (splitmix64 from `seed`): each call gives a number
/// below its argument. The metering tests' random spreader and join times.
pub fn choices(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |m: u64| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % m.max(1)
    }
}

/// What one tracker seeing every announce bills viewers that joined at `joins` (unix
/// seconds) and announce every 30 s from then until `end` (exclusive), watching all the
/// time: per viewer and UTC hour, what its counter grew by between its first and last
/// announce in the hour (from the hour's start if it was watching before). Returns
/// [without `watched_prev`, with it — an hour the viewer watched to its end billed to
/// its end].
pub fn one_tracker_bill(joins: &[u64], end: u64) -> [u64; 2] {
    let mut truth = [0, 0];
    for &joined in joins {
        let announces: Vec<u64> = (joined..end).step_by(30).collect();
        let mut hours: Vec<u64> = announces.iter().map(|t| t - t % 3600).collect();
        hours.dedup();
        for hour_start in hours {
            let in_hour: Vec<u64> = announces.iter().copied().filter(|t| t - t % 3600 == hour_start).collect();
            if let (Some(first), Some(last)) = (in_hour.first(), in_hour.last()) {
                let base = if joined >= hour_start { first - joined } else { 0 };
                truth[0] += (last - joined.max(hour_start)) - base;
                let to = if hour_start + 3_600 < end { hour_start + 3_600 } else { *last };
                truth[1] += (to - joined.max(hour_start)) - base;
            }
        }
    }
    truth
}
