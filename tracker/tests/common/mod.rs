//! What the tracker's test files share.
#![allow(dead_code)]

use tracker::db::Plan;

/// A commercial plan: €499 a month, 10,000 viewer-hours included, 2 cents beyond.
pub fn commercial() -> Plan {
    Plan {
        name: "broadcast".into(),
        commercial: true,
        currency: "EUR".into(),
        monthly_price_cents: 49_900,
        included_viewer_hours: 10_000,
        overage_cents_per_viewer_hour: 2,
    }
}
