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
