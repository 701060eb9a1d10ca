//! Invoices as a finance team sends them (the Stripe/Lago model):
//!
//! - **preview** ([`Db::preview_invoices`]): what finalizing a calendar month would
//!   issue, one invoice per currency; computed, never written.
//! - **finalize** ([`Db::finalize_invoices`], a platform action): after the month has
//!   ended, each preview is issued with the next number of its issuer's gapless series
//!   and every price copied onto its lines. Issued documents never change: the
//!   database refuses UPDATE and DELETE (migration 0005's triggers), not only this code.
//! - **void** ([`Db::void_invoice`]): the only change an invoice takes; it issues a
//!   credit note cancelling every line, and the month can then be finalized again.
//! - **late usage**: usage rolled up for a month after its invoice was issued is billed
//!   on the account's next invoice as an adjustment line against the original line
//!   (that line keeps the viewer-seconds it billed, so the difference is exact).
//!
//! Money rules: a licence is billed for its share of the month, by the month's own
//! length (a 15-day licence in a 30-day month is half the price; in February 14 days
//! are half), rounded half up to the cent; the viewer-hours a plan includes are
//! prorated the same way, in seconds; overage is billed in whole viewer-hours beyond
//! them, a started hour not billed. Every line's amount is its quantity × unit price.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Db, DbError, Result, conflict};
use crate::calendar::{self, DAY, Month};
use crate::webhooks as hooks;

/// What an invoice line bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The plan's monthly price for the licence's share of the month.
    Licence,
    /// Viewer-hours beyond those the plan includes.
    Overage,
    /// Usage that arrived after an earlier invoice was issued, billed against its line.
    Adjustment,
    /// A credit note's line cancelling a voided invoice's line.
    Credit,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Licence => "licence",
            LineKind::Overage => "overage",
            LineKind::Adjustment => "adjustment",
            LineKind::Credit => "credit",
        }
    }

    fn parse(s: &str) -> Result<LineKind> {
        Ok(match s {
            "licence" => LineKind::Licence,
            "overage" => LineKind::Overage,
            "adjustment" => LineKind::Adjustment,
            "credit" => LineKind::Credit,
            other => return Err(DbError::Invalid(format!("invoice line kind {other:?} in the catalogue"))),
        })
    }
}

/// One line of an invoice or credit note. `amount_cents` is `quantity × unit_cents`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvoiceLine {
    pub kind: LineKind,
    pub channel: String,
    pub plan: String,
    /// The plan's price version the line was priced on.
    pub plan_version: i64,
    pub description: String,
    pub quantity: i64,
    pub unit_cents: i64,
    pub amount_cents: i64,
    /// The licence's time the line bills, `[span_start, span_end)` (Unix seconds).
    pub span_start: i64,
    pub span_end: i64,
    /// Viewer-seconds the line bills: watched in the span (overage), or the late part (adjustment).
    pub viewer_seconds: i64,
    /// Viewer-seconds the plan includes in the span.
    pub included_seconds: i64,
    /// An adjustment's or credit's: the number of the invoice whose line it adds to or cancels.
    pub adjusts_invoice: Option<String>,
    #[serde(skip)]
    channel_id: Option<i64>,
    /// The line it adds to or cancels (an id in `invoice_lines`).
    #[serde(skip)]
    adjusts: Option<i64>,
}

/// An invoice or credit note: previewed (no number yet), finalized, or void.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Invoice {
    /// `ISSUER-000042`, gapless per issuer; `None` on a preview.
    pub number: Option<String>,
    /// `invoice` or `credit_note`.
    pub kind: String,
    pub account_id: i64,
    /// The calendar month billed, `YYYY-MM`.
    pub month: String,
    pub period_start: i64,
    pub period_end: i64,
    pub currency: String,
    pub total_cents: i64,
    /// `preview`, `finalized` or `void`.
    pub status: String,
    pub issued_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub void_reason: Option<String>,
    /// A credit note's: the number of the invoice it voids.
    pub credits: Option<String>,
    pub lines: Vec<InvoiceLine>,
}

impl Invoice {
    /// RFC 4180 CSV: [`crate::export::invoices_csv`] of this one.
    pub fn to_csv(&self) -> String {
        crate::export::invoices_csv(std::slice::from_ref(self))
    }
}

/// `amount × part / whole`, rounded half up (all non-negative).
fn prorate(amount: i64, part: i64, whole: i64) -> i64 {
    let (a, p, w) = (i128::from(amount), i128::from(part), i128::from(whole.max(1)));
    i64::try_from((2 * a * p + w) / (2 * w)).unwrap_or(i64::MAX)
}

/// Whole viewer-hours beyond those included (a started hour is not billed).
fn overage_hours(viewer_seconds: i64, included_seconds: i64) -> i64 {
    (viewer_seconds - included_seconds).max(0) / 3600
}

/// Seconds as days for people: `15` or `15.5`.
fn days(seconds: i64) -> String {
    if seconds % DAY == 0 { (seconds / DAY).to_string() } else { format!("{:.1}", seconds as f64 / DAY as f64) }
}

/// Seconds as hours for people: `12` or `12.5`.
fn hours(seconds: i64) -> String {
    if seconds % 3600 == 0 { (seconds / 3600).to_string() } else { format!("{:.1}", seconds as f64 / 3600.0) }
}

/// An issuer's name: what invoice numbers start with.
fn check_issuer(issuer: &str) -> Result<()> {
    if (1..=16).contains(&issuer.len()) && issuer.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(DbError::Invalid(format!("issuer {issuer:?}: 1-16 of A-Z and 0-9 (invoice numbers start with it)")))
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

impl Db {
    /// Viewer-seconds of a channel rolled up for the hours starting in `[from, to)`.
    async fn viewer_seconds(&self, channel_id: i64, from: i64, to: i64) -> Result<i64> {
        // PostgreSQL's SUM of BIGINT is NUMERIC, which the Any driver can't decode.
        let sum: Option<i64> = sqlx::query(
            "SELECT CAST(SUM(viewer_seconds) AS BIGINT) FROM usage_hourly \
             WHERE channel_id = $1 AND hour_start >= $2 AND hour_start < $3",
        )
        .bind(channel_id)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(sum.unwrap_or(0))
    }

    /// What finalizing `month` would issue to the account: one invoice per currency,
    /// from its commercial licences in the month, their usage, and usage that arrived
    /// after earlier invoices were issued. Writes nothing.
    pub async fn preview_invoices(&self, account_id: i64, month: Month) -> Result<Vec<Invoice>> {
        let (start, end) = (month.start(), month.end());
        let mut by_currency: BTreeMap<String, Vec<InvoiceLine>> = BTreeMap::new();
        let licences = sqlx::query(
            "SELECT c.id, c.name, p.name, v.currency, v.monthly_price_cents, v.included_viewer_hours, \
               v.overage_cents_per_viewer_hour, l.valid_from, l.valid_until, v.version \
             FROM licenses l JOIN channels c ON c.id = l.channel_id JOIN plans p ON p.id = l.plan_id \
               JOIN plan_versions v ON v.id = l.plan_version_id \
             WHERE c.account_id = $1 AND l.status = 'active' AND p.commercial = 1 \
               AND l.valid_from < $3 AND (l.valid_until IS NULL OR l.valid_until > $2) \
             ORDER BY c.name, l.valid_from, l.id",
        )
        .bind(account_id)
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        for r in licences {
            let (channel_id, channel, plan, currency): (i64, String, String, String) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            let (price, included_h, overage): (i64, i64, i64) = (r.try_get(4)?, r.try_get(5)?, r.try_get(6)?);
            let span_start = r.try_get::<i64, _>(7)?.max(start);
            let span_end = r.try_get::<Option<i64>, _>(8)?.unwrap_or(end).min(end);
            let plan_version: i64 = r.try_get(9)?;
            let covered = span_end - span_start;
            let amount = prorate(price, covered, month.seconds());
            let viewer_seconds = self.viewer_seconds(channel_id, span_start, span_end).await?;
            let included_seconds = prorate(included_h.saturating_mul(3600), covered, month.seconds());
            let extra = overage_hours(viewer_seconds, included_seconds);
            let line = |kind, description, quantity, unit_cents, viewer_seconds| InvoiceLine {
                kind,
                channel: channel.clone(),
                plan: plan.clone(),
                plan_version,
                description,
                quantity,
                unit_cents,
                amount_cents: quantity * unit_cents,
                span_start,
                span_end,
                viewer_seconds,
                included_seconds,
                adjusts_invoice: None,
                channel_id: Some(channel_id),
                adjusts: None,
            };
            let lines = by_currency.entry(currency).or_default();
            lines.push(line(
                LineKind::Licence,
                format!(
                    "{plan} plan, {} of {} days ({} to {})",
                    days(covered),
                    days(month.seconds()),
                    calendar::date(span_start),
                    calendar::date(span_end - 1)
                ),
                1,
                amount,
                0,
            ));
            lines.push(line(
                LineKind::Overage,
                format!(
                    "viewer-hours beyond the {} included ({} watched)",
                    hours(included_seconds),
                    hours(viewer_seconds)
                ),
                extra,
                overage,
                viewer_seconds,
            ));
        }
        for (currency, line) in self.late_usage(account_id, start).await? {
            by_currency.entry(currency).or_default().push(line);
        }
        Ok(by_currency
            .into_iter()
            .map(|(currency, lines)| Invoice {
                number: None,
                kind: "invoice".into(),
                account_id,
                month: month.to_string(),
                period_start: start,
                period_end: end,
                currency,
                total_cents: lines.iter().map(|l| l.amount_cents).sum(),
                status: "preview".into(),
                issued_at: None,
                voided_at: None,
                void_reason: None,
                credits: None,
                lines,
            })
            .collect())
    }

    /// Adjustment lines (with their currency) for usage of months before `before` that
    /// arrived after their invoices were issued: per overage line of a finalized
    /// invoice, the usage now rolled up in its span beyond what it and its finalized
    /// adjustments billed.
    async fn late_usage(&self, account_id: i64, before: i64) -> Result<Vec<(String, InvoiceLine)>> {
        let rows = sqlx::query(
            "SELECT l.id, i.number, i.currency, l.channel_id, l.channel, l.plan, l.unit_cents, l.span_start, \
               l.span_end, l.viewer_seconds, l.included_seconds, l.plan_version, \
               (SELECT CAST(COALESCE(SUM(a.viewer_seconds), 0) AS BIGINT) FROM invoice_lines a \
                  JOIN invoices ai ON ai.id = a.invoice_id \
                  WHERE a.adjusts = l.id AND a.kind = 'adjustment' AND ai.status = 'finalized') \
             FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
             WHERE i.account_id = $1 AND i.kind = 'invoice' AND i.status = 'finalized' AND l.kind = 'overage' \
               AND i.period_end <= $2 AND l.channel_id IS NOT NULL \
             ORDER BY i.seq, l.id",
        )
        .bind(account_id)
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let (line_id, number, currency): (i64, String, String) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            let channel_id: i64 = r.try_get(3)?;
            let (span_start, span_end): (i64, i64) = (r.try_get(7)?, r.try_get(8)?);
            let (billed, included, adjusted): (i64, i64, i64) = (r.try_get(9)?, r.try_get(10)?, r.try_get(12)?);
            let known = billed + adjusted;
            let now = self.viewer_seconds(channel_id, span_start, span_end).await?;
            let hours_more = overage_hours(now, included) - overage_hours(known, included);
            if now <= known || hours_more <= 0 {
                // Nothing more to bill yet; late seconds below an hour wait for more.
                continue;
            }
            let unit: i64 = r.try_get(6)?;
            out.push((
                currency,
                InvoiceLine {
                    kind: LineKind::Adjustment,
                    channel: r.try_get(4)?,
                    plan: r.try_get(5)?,
                    plan_version: r.try_get(11)?,
                    description: format!(
                        "late usage for invoice {number} ({} to {}): {} viewer-hours recorded after it was issued",
                        calendar::date(span_start),
                        calendar::date(span_end - 1),
                        hours(now - known)
                    ),
                    quantity: hours_more,
                    unit_cents: unit,
                    amount_cents: hours_more * unit,
                    span_start,
                    span_end,
                    viewer_seconds: now - known,
                    included_seconds: included,
                    adjusts_invoice: Some(number),
                    channel_id: Some(channel_id),
                    adjusts: Some(line_id),
                },
            ));
        }
        Ok(out)
    }

    /// Issues the account's invoices for `month` (a platform action): each currency's
    /// preview gets the next number of `issuer`'s series, in one transaction per
    /// invoice. Only after the month has ended. A currency already invoiced for the
    /// month (and not voided) is returned as it was issued, not issued twice, so a
    /// billing run can be repeated.
    pub async fn finalize_invoices(
        &self,
        account_id: i64,
        month: Month,
        issuer: &str,
        now: i64,
    ) -> Result<Vec<Invoice>> {
        check_issuer(issuer)?;
        if now < month.end() {
            return Err(DbError::Invalid(format!(
                "month {month} runs until {}: finalize it once it has ended",
                calendar::date(month.end())
            )));
        }
        let mut out = Vec::new();
        for preview in self.preview_invoices(account_id, month).await? {
            // Issued before (a repeated run): returned as it was, not issued again.
            let live = sqlx::query(
                "SELECT id FROM invoices WHERE account_id = $1 AND period_start = $2 AND currency = $3 \
                 AND kind = 'invoice' AND status = 'finalized'",
            )
            .bind(account_id)
            .bind(month.start())
            .bind(&preview.currency)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = live {
                out.push(self.invoice_by_id(row.try_get(0)?).await?);
                continue;
            }
            let mut tx = self.pool.begin().await?;
            let (id, number) = issue(&mut tx, issuer, &preview, None, now).await?;
            tx.commit().await?;
            tracing::info!(number, account_id, %month, total_cents = preview.total_cents, "invoice finalized");
            out.push(self.invoice_by_id(id).await?);
        }
        Ok(out)
    }

    /// Voids a finalized invoice and issues the credit note cancelling it (same issuer,
    /// next number), in one transaction. Returns the credit note.
    pub async fn void_invoice(&self, number: &str, reason: &str, now: i64) -> Result<Invoice> {
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 500 {
            return Err(DbError::Invalid("void: give a reason, 1-500 characters".into()));
        }
        let inv = self.invoice_by_number(number).await?;
        if inv.kind != "invoice" || inv.status != "finalized" {
            return Err(DbError::Conflict(format!(
                "{number} is a {} that is {}: only a finalized invoice is voided",
                inv.kind, inv.status
            )));
        }
        let head =
            sqlx::query("SELECT id, issuer FROM invoices WHERE number = $1").bind(number).fetch_one(&self.pool).await?;
        let (original, issuer): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
        let line_ids = sqlx::query("SELECT id FROM invoice_lines WHERE invoice_id = $1 ORDER BY id")
            .bind(original)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let credit = Invoice {
            kind: "credit_note".into(),
            total_cents: -inv.total_cents,
            lines: inv
                .lines
                .iter()
                .zip(line_ids)
                .map(|(l, id)| InvoiceLine {
                    kind: LineKind::Credit,
                    description: format!("credit: {}", l.description),
                    quantity: -l.quantity,
                    amount_cents: -l.amount_cents,
                    adjusts: Some(id),
                    ..l.clone()
                })
                .collect(),
            ..inv.clone()
        };
        let mut tx = self.pool.begin().await?;
        let voided = sqlx::query(
            "UPDATE invoices SET status = 'void', voided_at = $1, void_reason = $2 WHERE id = $3 AND status = 'finalized'",
        )
        .bind(now)
        .bind(reason)
        .bind(original)
        .execute(&mut *tx)
        .await?;
        if voided.rows_affected() != 1 {
            return Err(DbError::Conflict(format!("{number} was voided meanwhile")));
        }
        let (id, credit_number) = issue(&mut tx, &issuer, &credit, Some(original), now).await?;
        let data = serde_json::json!({
            "number": number, "account_id": inv.account_id, "credit_note": credit_number, "reason": reason,
            "currency": inv.currency, "total_cents": inv.total_cents,
        });
        let key = format!("{}:{number}", hooks::INVOICE_VOIDED);
        super::webhooks::emit(&mut tx, inv.account_id, hooks::INVOICE_VOIDED, &key, data, now).await?;
        tx.commit().await?;
        tracing::info!(number, credit_number, reason, "invoice voided");
        self.invoice_by_id(id).await
    }

    /// The account's invoices and credit notes, oldest first.
    pub async fn invoices(&self, account_id: i64) -> Result<Vec<Invoice>> {
        self.load_invoices("i.account_id = $1 AND i.status <> 'issuing'", account_id).await
    }

    /// An issued invoice or credit note by its number.
    pub async fn invoice_by_number(&self, number: &str) -> Result<Invoice> {
        let row = sqlx::query("SELECT id FROM invoices WHERE number = $1 AND status <> 'issuing'")
            .bind(number)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(DbError::NotFound("invoice"))?;
        self.invoice_by_id(row.try_get(0)?).await
    }

    async fn invoice_by_id(&self, id: i64) -> Result<Invoice> {
        self.load_invoices("i.id = $1", id).await?.pop().ok_or(DbError::NotFound("invoice"))
    }

    /// The invoices `filter` (a condition on `invoices i` with one parameter, `$1`)
    /// selects, in id order, with their lines: two queries whatever their number.
    async fn load_invoices(&self, filter: &'static str, param: i64) -> Result<Vec<Invoice>> {
        let headers = sqlx::query(&format!(
            "SELECT i.id, i.number, i.kind, i.account_id, i.period_start, i.period_end, i.currency, i.total_cents, \
               i.status, i.issued_at, i.voided_at, i.void_reason, o.number \
             FROM invoices i LEFT JOIN invoices o ON o.id = i.credits WHERE {filter} ORDER BY i.id"
        ))
        .bind(param)
        .fetch_all(&self.pool)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT l.invoice_id, l.kind, l.channel, l.plan, l.description, l.quantity, l.unit_cents, l.amount_cents, \
               l.span_start, l.span_end, l.viewer_seconds, l.included_seconds, ai.number, l.channel_id, l.adjusts, \
               l.plan_version \
             FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
               LEFT JOIN invoice_lines a ON a.id = l.adjusts \
               LEFT JOIN invoices ai ON ai.id = a.invoice_id \
             WHERE {filter} ORDER BY l.invoice_id, l.id"
        ))
        .bind(param)
        .fetch_all(&self.pool)
        .await?;
        let mut lines: std::collections::HashMap<i64, Vec<InvoiceLine>> = std::collections::HashMap::new();
        for r in &rows {
            lines.entry(r.try_get(0)?).or_default().push(InvoiceLine {
                kind: LineKind::parse(&r.try_get::<String, _>(1)?)?,
                channel: r.try_get(2)?,
                plan: r.try_get(3)?,
                plan_version: r.try_get(15)?,
                description: r.try_get(4)?,
                quantity: r.try_get(5)?,
                unit_cents: r.try_get(6)?,
                amount_cents: r.try_get(7)?,
                span_start: r.try_get(8)?,
                span_end: r.try_get(9)?,
                viewer_seconds: r.try_get(10)?,
                included_seconds: r.try_get(11)?,
                adjusts_invoice: r.try_get(12)?,
                channel_id: r.try_get(13)?,
                adjusts: r.try_get(14)?,
            });
        }
        headers
            .iter()
            .map(|h| {
                let id: i64 = h.try_get(0)?;
                let period_start: i64 = h.try_get(4)?;
                Ok(Invoice {
                    number: Some(h.try_get(1)?),
                    kind: h.try_get(2)?,
                    account_id: h.try_get(3)?,
                    month: Month::of(period_start).to_string(),
                    period_start,
                    period_end: h.try_get(5)?,
                    currency: h.try_get(6)?,
                    total_cents: h.try_get(7)?,
                    status: h.try_get(8)?,
                    issued_at: h.try_get(9)?,
                    voided_at: h.try_get(10)?,
                    void_reason: h.try_get(11)?,
                    credits: h.try_get(12)?,
                    lines: lines.remove(&id).unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// Writes `doc` as issued inside `tx`: the next number of the issuer's series, the
/// header (`credits`: the invoice a credit note voids), its lines, then `finalized`
/// (the database checks the total against the lines). Returns its id and number.
async fn issue(tx: &mut Tx<'_>, issuer: &str, doc: &Invoice, credits: Option<i64>, now: i64) -> Result<(i64, String)> {
    let seq: i64 = sqlx::query(
        "INSERT INTO invoice_series (issuer, last) VALUES ($1, 1) \
         ON CONFLICT (issuer) DO UPDATE SET last = invoice_series.last + 1 RETURNING last",
    )
    .bind(issuer)
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    let number = format!("{issuer}-{seq:06}");
    let id: i64 = sqlx::query(
        "INSERT INTO invoices (issuer, seq, number, kind, account_id, period_start, period_end, currency, \
           total_cents, status, credits, issued_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'issuing', $10, $11) RETURNING id",
    )
    .bind(issuer)
    .bind(seq)
    .bind(&number)
    .bind(&doc.kind)
    .bind(doc.account_id)
    .bind(doc.period_start)
    .bind(doc.period_end)
    .bind(&doc.currency)
    .bind(doc.total_cents)
    .bind(credits)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| conflict(e, || format!("the {} invoice of {} is already finalized", doc.currency, doc.month)))?
    .try_get(0)?;
    for l in &doc.lines {
        sqlx::query(
            "INSERT INTO invoice_lines (invoice_id, kind, channel_id, channel, plan, description, quantity, \
               unit_cents, amount_cents, span_start, span_end, viewer_seconds, included_seconds, adjusts, plan_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(id)
        .bind(l.kind.as_str())
        .bind(l.channel_id)
        .bind(&l.channel)
        .bind(&l.plan)
        .bind(&l.description)
        .bind(l.quantity)
        .bind(l.unit_cents)
        .bind(l.amount_cents)
        .bind(l.span_start)
        .bind(l.span_end)
        .bind(l.viewer_seconds)
        .bind(l.included_seconds)
        .bind(l.adjusts)
        .bind(l.plan_version)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("UPDATE invoices SET status = 'finalized' WHERE id = $1").bind(id).execute(&mut **tx).await?;
    if doc.kind == "invoice" {
        let data = serde_json::json!({
            "number": number, "account_id": doc.account_id, "month": doc.month,
            "currency": doc.currency, "total_cents": doc.total_cents,
        });
        let key = format!("{}:{number}", hooks::INVOICE_FINALIZED);
        super::webhooks::emit(tx, doc.account_id, hooks::INVOICE_FINALIZED, &key, data, now).await?;
    }
    Ok((id, number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_rounds_half_up_and_hours_in_the_customers_favour() {
        assert_eq!(prorate(49_900, 15 * DAY, 30 * DAY), 24_950, "half of a 30-day month");
        assert_eq!(prorate(49_900, 14 * DAY, 28 * DAY), 24_950, "half of February");
        assert_eq!(prorate(100, 1, 3), 33);
        assert_eq!(prorate(100, 2, 3), 67, "66.67 rounds up");
        assert_eq!(prorate(1, 1, 2), 1, "half a cent rounds up");
        assert_eq!(prorate(i64::MAX, 2, 1), i64::MAX, "saturates, never wraps");
        assert_eq!(overage_hours(10 * 3600 - 1, 0), 9, "a started hour is not billed");
        assert_eq!(overage_hours(5, 10), 0);
        assert_eq!((days(15 * DAY), days(DAY / 2)), ("15".to_owned(), "0.5".to_owned()));
        assert!(check_issuer("SHOAL").is_ok() && check_issuer("shoal").is_err() && check_issuer("").is_err());
    }
}
