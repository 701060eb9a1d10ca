//! Usage and invoices as files a finance team opens: RFC 4180 CSV (one header, a row
//! per line), and an invoice as a printable HTML page (every value escaped).

use crate::calendar;
use crate::db::{HourlyUsage, Invoice, UsageSummary};

/// A CSV field: quoted (quotes doubled) when it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// Unix time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(t: i64) -> String {
    let s = t.rem_euclid(calendar::DAY);
    format!("{}T{:02}:{:02}:{:02}Z", calendar::date(t), s / 3600, s / 60 % 60, s % 60)
}

const COUNTERS: &str = "viewer_seconds,ad_viewer_seconds,seed_bytes,peak_viewers,unique_viewers\r\n";

/// The counters both usage files end their rows with.
fn counters(viewer_seconds: i64, ad: i64, seed_bytes: i64, peak: i64, unique: i64) -> String {
    format!("{viewer_seconds},{ad},{seed_bytes},{peak},{unique}\r\n")
}

/// Hourly usage, one row per channel and hour.
pub fn hourly_csv(rows: &[HourlyUsage]) -> String {
    let mut out = format!("channel,hour_start,hour_start_utc,{COUNTERS}");
    for r in rows {
        let c = counters(r.viewer_seconds, r.ad_viewer_seconds, r.seed_bytes, r.peak_viewers, r.unique_viewers);
        out.push_str(&format!("{},{},{},{c}", csv_field(&r.channel), r.hour_start, utc(r.hour_start)));
    }
    out
}

/// Usage per channel and period (a day, or the whole period asked for).
pub fn summary_csv(rows: &[UsageSummary]) -> String {
    let mut out = format!("channel,from,to,from_utc,{COUNTERS}");
    for r in rows {
        let c = counters(r.viewer_seconds, r.ad_viewer_seconds, r.seed_bytes, r.peak_viewers, r.unique_viewers);
        out.push_str(&format!("{},{},{},{},{c}", csv_field(&r.channel), r.from, r.to, utc(r.from)));
    }
    out
}

/// Invoices: one header, then per invoice its lines and a total row.
pub fn invoices_csv(invoices: &[Invoice]) -> String {
    let mut out = String::from(
        "invoice,month,kind,channel,plan,description,quantity,unit_cents,amount_cents,currency,viewer_seconds\r\n",
    );
    for inv in invoices {
        let number = csv_field(inv.number.as_deref().unwrap_or("preview"));
        let currency = csv_field(&inv.currency);
        for l in &inv.lines {
            out.push_str(&format!(
                "{number},{},{},{},{},{},{},{},{},{currency},{}\r\n",
                inv.month,
                l.kind.as_str(),
                csv_field(&l.channel),
                csv_field(&l.plan),
                csv_field(&l.description),
                l.quantity,
                l.unit_cents,
                l.amount_cents,
                l.viewer_seconds
            ));
        }
        out.push_str(&format!("{number},{},total,,,,,,{},{currency},\r\n", inv.month, inv.total_cents));
    }
    out
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Cents as `1,234.56` (a minus sign for credits).
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    let whole = (c / 100).to_string();
    let mut grouped = String::new();
    for (i, d) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(d);
    }
    format!("{sign}{grouped}.{:02}", c % 100)
}

/// An issued invoice or credit note as a printable page; `issuer` and `account` name
/// the parties. A voided invoice says so across the top.
pub fn invoice_html(inv: &Invoice, issuer: &str, account: &str) -> String {
    let title = match (inv.kind.as_str(), &inv.number) {
        ("credit_note", Some(n)) => format!("Credit note {n}"),
        (_, Some(n)) => format!("Invoice {n}"),
        (_, None) => "Invoice preview (not issued)".to_owned(),
    };
    let mut rows = String::new();
    for l in &inv.lines {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>\n",
            esc(&l.channel),
            esc(&l.plan),
            esc(&l.description),
            l.quantity,
            money(l.unit_cents),
            money(l.amount_cents)
        ));
    }
    let mut notes = String::new();
    if inv.status == "void" {
        notes.push_str(&format!(
            "<p class=void>VOID — {} ({})</p>\n",
            esc(inv.void_reason.as_deref().unwrap_or("")),
            inv.voided_at.map(utc).unwrap_or_default()
        ));
    }
    if let Some(c) = &inv.credits {
        notes.push_str(&format!("<p>Cancels invoice {}.</p>\n", esc(c)));
    }
    format!(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{title}</title>\n\
         <style>body{{font:14px/1.4 system-ui,sans-serif;max-width:52em;margin:2em auto;color:#111}}\
         table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ccc;padding:.3em .5em;text-align:left}}\
         .n{{text-align:right;white-space:nowrap}}.void{{color:#b00;font-weight:bold;font-size:1.4em}}\
         @media print{{body{{margin:0}}}}</style></head>\n<body>\n<h1>{title}</h1>\n{notes}\
         <p>From <b>{issuer}</b> to <b>{account}</b> (account {account_id})<br>\
         Period {month}: {from} to {to}<br>Issued {issued}</p>\n\
         <table><thead><tr><th>Channel</th><th>Plan</th><th>Description</th><th class=n>Quantity</th>\
         <th class=n>Unit ({currency})</th><th class=n>Amount ({currency})</th></tr></thead>\n<tbody>\n{rows}</tbody>\n\
         <tfoot><tr><th colspan=5>Total</th><th class=n>{total} {currency}</th></tr></tfoot></table>\n</body></html>\n",
        title = esc(&title),
        issuer = esc(issuer),
        account = esc(account),
        account_id = inv.account_id,
        month = esc(&inv.month),
        from = calendar::date(inv.period_start),
        to = calendar::date(inv.period_end - 1),
        issued = inv.issued_at.map(utc).unwrap_or_else(|| "not yet".into()),
        currency = esc(&inv.currency),
        total = money(inv.total_cents),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_times_and_money_are_written_for_people_and_parsers() {
        assert_eq!(csv_field("a,b \"c\""), "\"a,b \"\"c\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(utc(1_796_083_200 + 3_723), "2026-12-01T01:02:03Z");
        assert_eq!(
            (money(0), money(5), money(123_456_789), money(-2_515_000)),
            ("0.00".into(), "0.05".into(), "1,234,567.89".into(), "-25,150.00".into())
        );
        assert_eq!(esc("<b>&'\""), "&lt;b&gt;&amp;&#39;&quot;");
    }
}
