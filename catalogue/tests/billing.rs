//! Invoices through their life on real databases (SQLite always, PostgreSQL when
//! `SHOAL_TEST_DATABASE_URL` is set), the same assertions on both: preview writes
//! nothing, finalize numbers gaplessly and copies prices, the database itself refuses
//! to change what was issued, void issues a credit note, late usage is an adjustment
//! line on the next invoice, one invoice per currency, overlapping licences refused.
#![allow(clippy::unwrap_used)]

use catalogue::calendar::{DAY, Month};
use catalogue::db::{Db, DbError, Invoice, LineKind, Plan, Price, UsageEvent};
use catalogue::testing::{commercial, databases, raw_sql};
use swarm::piece::ChannelKeypair;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

const HOUR: i64 = 3_600;

/// Records `viewer_seconds` for a channel in the hour starting at `hour` and rolls it up.
async fn watch(db: &Db, key: &str, channel_id: i64, hour: i64, viewer_seconds: i64) {
    let ev = UsageEvent {
        idempotency_key: key.to_owned(),
        channel_id,
        hour_start: hour,
        viewer_seconds,
        ad_viewer_seconds: 0,
        seed_bytes: 0,
        peak_viewers: 1,
    };
    db.record_usage(&[ev], hour).await.unwrap();
    db.roll_up_hour(hour, hour + 3_600).await.unwrap();
}

fn without_number(mut inv: Invoice) -> Invoice {
    inv.number = None;
    inv.status = "preview".into();
    inv.issued_at = None;
    for l in &mut inv.lines {
        l.adjusts_invoice = None;
    }
    inv
}

#[test]
fn invoices_are_previewed_finalized_voided_and_late_usage_is_adjusted() {
    rt().block_on(async {
        for db in databases("billing").await {
            let a = db.create_account("a", 1).await.unwrap();
            let b = db.create_account("b", 1).await.unwrap();
            let eur = db.create_plan(&commercial(), 1).await.unwrap();
            let usd = db
                .create_plan(
                    &Plan {
                        name: "broadcast-us".into(),
                        price: Price {
                            currency: "USD".into(),
                            monthly_price_cents: 59_900,
                            included_viewer_hours: 0,
                            overage_cents_per_viewer_hour: 3,
                        },
                        ..commercial()
                    },
                    1,
                )
                .await
                .unwrap();
            let key = |n: u8| ChannelKeypair::from_secret_bytes(&[n; 32]).id();
            let paid = db.create_channel(a, "paid", key(1), "k1", true, 1).await.unwrap();
            let us = db.create_channel(a, "us", key(2), "k2", true, 1).await.unwrap();
            let free = db.create_channel(a, "free", key(3), "k3", false, 1).await.unwrap();
            let other = db.create_channel(b, "other", key(4), "k4", true, 1).await.unwrap();
            let nov = Month::parse("2026-11").unwrap();
            let dec = nov.next();
            let mid_nov = nov.start() + 15 * DAY;
            // paid: from 16 November on, open-ended; us: all of November only.
            db.add_license(paid, eur, mid_nov, None, 1).await.unwrap();
            db.add_license(us, usd, nov.start() - 40 * DAY, Some(dec.start()), 1).await.unwrap();
            db.add_license(other, eur, nov.start(), None, 1).await.unwrap();
            let overlap = db.add_license(paid, eur, mid_nov + DAY, Some(dec.end()), 1).await.unwrap_err();
            assert!(
                matches!(&overlap, DbError::Conflict(m) if m.contains("already covers")),
                "two licences at once on one channel would both bill: {overlap}"
            );

            // 5,100.5 viewer-hours on paid after its licence began (and some before: not
            // billed), 10 on us, plenty on the free channel and on the other account's.
            watch(&db, "p1", paid, mid_nov + 2 * HOUR, 5_000 * HOUR).await;
            watch(&db, "p2", paid, mid_nov + 30 * HOUR, 100 * HOUR + HOUR / 2).await;
            watch(&db, "p0", paid, mid_nov - 5 * HOUR, 777 * HOUR).await;
            watch(&db, "u1", us, nov.start() + 7 * HOUR, 10 * HOUR).await;
            watch(&db, "f1", free, nov.start() + 7 * HOUR, 999 * HOUR).await;
            watch(&db, "o1", other, nov.start() + 7 * HOUR, 50_000 * HOUR).await;

            // Preview: one invoice per currency, writes nothing.
            let preview = db.preview_invoices(a, nov).await.unwrap();
            assert_eq!(preview.iter().map(|i| i.currency.as_str()).collect::<Vec<_>>(), ["EUR", "USD"]);
            let (e, u) = (&preview[0], &preview[1]);
            assert!(e.lines.iter().chain(&u.lines).all(|l| l.channel != "free" && l.channel != "other"));
            assert_eq!(
                e.lines.iter().map(|l| (l.kind, l.quantity, l.unit_cents, l.amount_cents)).collect::<Vec<_>>(),
                [(LineKind::Licence, 1, 24_950, 24_950), (LineKind::Overage, 100, 2, 200)],
                "15 of November's 30 days is half the price; 5,000 of 10,000 hours included; the started hour not billed: {e:#?}"
            );
            assert_eq!(e.lines[1].viewer_seconds, 5_100 * HOUR + HOUR / 2);
            assert_eq!(e.lines[0].description, "broadcast plan, 15 of 30 days (2026-11-16 to 2026-11-30)");
            assert_eq!((e.total_cents, e.status.as_str(), e.number.as_deref()), (25_150, "preview", None));
            assert_eq!(u.total_cents, 59_900 + 30, "USD: a whole month and 10 hours at 3 cents");
            assert!(e.lines.iter().chain(&u.lines).all(|l| l.amount_cents == l.quantity * l.unit_cents));
            assert_eq!(db.invoices(a).await.unwrap(), vec![], "a preview writes nothing");
            assert_eq!(db.preview_invoices(a, nov).await.unwrap(), preview, "and is the same when asked again");

            // Finalize: only after the month, gapless numbers, the preview as issued.
            let early = db.finalize_invoices(a, nov, "SHOAL", dec.start() - 1).await.unwrap_err();
            assert!(matches!(&early, DbError::Invalid(m) if m.contains("runs until 2026-12-01")), "{early}");
            assert!(matches!(db.finalize_invoices(a, nov, "shoal", dec.start()).await, Err(DbError::Invalid(_))));
            let issued = db.finalize_invoices(a, nov, "SHOAL", dec.start() + 10).await.unwrap();
            assert_eq!(
                issued.iter().map(|i| i.number.clone().unwrap()).collect::<Vec<_>>(),
                ["SHOAL-000001", "SHOAL-000002"]
            );
            assert!(issued.iter().all(|i| i.status == "finalized" && i.issued_at == Some(dec.start() + 10)));
            assert_eq!(issued.iter().cloned().map(without_number).collect::<Vec<_>>(), preview);
            let again = db.finalize_invoices(a, nov, "SHOAL", dec.start() + 20).await.unwrap();
            assert_eq!(again, issued, "a repeated billing run issues nothing twice");
            assert_eq!(db.invoices(a).await.unwrap(), issued);
            assert_eq!(db.invoices(b).await.unwrap(), vec![], "another account's are its own");
            assert_eq!(db.invoice_by_number("SHOAL-000002").await.unwrap(), issued[1]);

            // The database refuses to change what was issued, whoever asks.
            for sql in [
                "UPDATE invoices SET total_cents = 1 WHERE number = 'SHOAL-000001'",
                "UPDATE invoices SET status = 'issuing' WHERE number = 'SHOAL-000001'",
                "DELETE FROM invoices WHERE number = 'SHOAL-000002'",
                "UPDATE invoice_lines SET amount_cents = 0",
                "DELETE FROM invoice_lines",
                "INSERT INTO invoice_lines (invoice_id, kind, channel, plan, description, quantity, unit_cents, \
                   amount_cents, span_start, span_end, viewer_seconds, included_seconds) \
                   SELECT id, 'licence', 'paid', 'x', 'extra', 1, 5, 5, 0, 1, 0, 0 FROM invoices WHERE number = 'SHOAL-000001'",
                "UPDATE invoice_series SET last = 1",
                "DELETE FROM invoice_series",
            ] {
                assert!(raw_sql(&db, sql).await.is_err(), "{:?} let through: {sql}", db.backend());
            }
            assert_eq!(db.invoices(a).await.unwrap(), issued, "unchanged");
            // A price change is a new version (never an edit): issued invoices hold copies,
            // the running licence keeps the version it was sold on, a new one takes the new.
            assert!(raw_sql(&db, "UPDATE plan_versions SET monthly_price_cents = 1").await.is_err());
            assert!(raw_sql(&db, "DELETE FROM plan_versions").await.is_err());
            let dearer = Price { monthly_price_cents: 99_900, ..commercial().price };
            let v2 = db.reprice_plan("broadcast", &dearer, dec.start()).await.unwrap();
            assert_eq!((v2.version, v2.plan.price.monthly_price_cents), (2, 99_900));
            assert_eq!(db.invoices(a).await.unwrap(), issued);
            let late = db.create_channel(a, "late", key(5), "k5", true, 1).await.unwrap();
            db.add_license(late, eur, dec.start(), None, dec.start()).await.unwrap();
            let versions: Vec<_> = db.licenses(a).await.unwrap().iter().map(|l| (l.channel.clone(), l.plan_version)).collect();
            assert_eq!(versions, [("late".into(), 2), ("paid".into(), 1), ("us".into(), 1)]);

            // Usage for November recorded after its invoice: 2.5 hours more → 103 hours
            // over, 3 more than billed; on December's invoice as an adjustment.
            watch(&db, "p3", paid, mid_nov + 40 * HOUR, 2 * HOUR + HOUR / 2).await;
            let dec_preview = db.preview_invoices(a, dec).await.unwrap();
            assert_eq!(dec_preview.len(), 1, "us's licence ended with November: {dec_preview:#?}");
            let adj = dec_preview[0].lines.iter().find(|l| l.kind == LineKind::Adjustment).unwrap();
            assert_eq!(
                (adj.quantity, adj.unit_cents, adj.viewer_seconds, adj.adjusts_invoice.as_deref()),
                (3, 2, 2 * HOUR + HOUR / 2, Some("SHOAL-000001"))
            );
            let licence = |ch: &str| {
                let l = dec_preview[0].lines.iter().find(|l| l.channel == ch && l.kind == LineKind::Licence).unwrap();
                (l.plan_version, l.amount_cents)
            };
            assert_eq!(licence("paid"), (1, 49_900), "all of December at the price its licence was sold at");
            assert_eq!(licence("late"), (2, 99_900), "a new licence at the new price");

            // Void: a credit note cancelling every line, the next number; once only.
            let credit = db.void_invoice("SHOAL-000001", "billed the wrong entity", dec.start() + 30).await.unwrap();
            assert_eq!((credit.number.as_deref(), credit.kind.as_str()), (Some("SHOAL-000003"), "credit_note"));
            assert_eq!((credit.total_cents, credit.credits.as_deref()), (-25_150, Some("SHOAL-000001")));
            assert!(credit.lines.iter().all(|l| l.kind == LineKind::Credit && l.amount_cents <= 0));
            let voided = db.invoice_by_number("SHOAL-000001").await.unwrap();
            assert_eq!((voided.status.as_str(), voided.void_reason.as_deref()), ("void", Some("billed the wrong entity")));
            assert_eq!(voided.lines, issued[0].lines, "voiding changes no line");
            assert!(matches!(db.void_invoice("SHOAL-000001", "again", dec.start()).await, Err(DbError::Conflict(_))));
            assert!(matches!(db.void_invoice("SHOAL-000003", "a credit", dec.start()).await, Err(DbError::Conflict(_))));
            assert!(matches!(db.void_invoice("SHOAL-000404", "none", dec.start()).await, Err(DbError::NotFound(_))));
            assert!(matches!(db.void_invoice("SHOAL-000002", " ", dec.start()).await, Err(DbError::Invalid(_))));

            // November again: the EUR invoice reissued with all its usage (103 hours),
            // so December has nothing late left to adjust; USD stays as issued.
            let reissued = db.finalize_invoices(a, nov, "SHOAL", dec.start() + 40).await.unwrap();
            assert_eq!(reissued[0].number.as_deref(), Some("SHOAL-000004"), "gapless: after the credit note");
            assert_eq!((reissued[0].lines[1].quantity, reissued[0].total_cents), (103, 25_156));
            assert_eq!(reissued[1], issued[1]);
            let dec_preview = db.preview_invoices(a, dec).await.unwrap();
            assert!(dec_preview[0].lines.iter().all(|l| l.kind != LineKind::Adjustment), "{dec_preview:#?}");
            let csv = reissued[0].to_csv();
            assert!(csv.starts_with("invoice,month,kind,channel,plan,description,quantity,unit_cents,amount_cents"), "{csv}");
            assert!(csv.ends_with("SHOAL-000004,2026-11,total,,,,,,25156,EUR,\r\n"), "{csv}");
            db.drop_schema().await.unwrap();
        }
    });
}
