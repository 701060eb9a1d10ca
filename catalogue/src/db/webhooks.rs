//! Webhooks in the catalogue: an account's endpoints, the events it is told of, and
//! their deliveries (signatures and the retry schedule: [`crate::webhooks`]).
//!
//! An event is written once, by its key (`invoice.finalized:SHOAL-000001`): invoices'
//! events in the transaction that finalizes or voids, licences' by a scan any replica
//! may run ([`Db::emit_licence_events`]) — a second writer of the same key writes
//! nothing. Each event gets one delivery per endpoint the account has then. Whoever
//! delivers first claims a due delivery ([`Db::claim_delivery`]: it moves its next
//! attempt a lease ahead, only if no one else did), so replicas don't send it twice at
//! once; a receiver still deduplicates by the event id, which every attempt carries.

use serde_json::json;
use sqlx::Row;

use super::{Db, DbError, Result};
use crate::webhooks::{self as hooks, MAX_ATTEMPTS, retry_after};

/// At most this many endpoints per account.
pub const MAX_ENDPOINTS: i64 = 16;

/// An endpoint as the admin API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct WebhookEndpoint {
    pub id: i64,
    pub url: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

/// A delivery due now, with what it takes to send it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: i64,
    pub url: String,
    pub secret: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
}

/// One line of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub endpoint_id: i64,
    pub url: String,
    /// `pending`, `delivered` or `failed` (given up after the last attempt).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    pub created_at: i64,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx answer.
    Delivered(u16),
    /// Another answer (its status) or none, and why.
    Failed(Option<u16>, String),
}

/// An endpoint URL: `http(s)://HOST[:PORT][/PATH]`, the host of letters, digits, dots and
/// dashes, the path of URL-safe characters — the pattern the OpenAPI document gives.
fn check_url(url: &str) -> Result<()> {
    let ok = || -> Option<()> {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        let (host, port) = authority.split_once(':').map_or((authority, None), |(h, p)| (h, Some(p)));
        let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        let port_ok = port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
        let path_ok = path.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~/%?&=+-".contains(&b));
        (url.len() <= 2048 && host_ok && port_ok && path_ok).then_some(())
    };
    ok().ok_or_else(|| {
        DbError::Invalid("url: http(s)://HOST[:PORT][/PATH], URL-safe characters, at most 2048 of them".into())
    })
}

/// Records a `usage.anomaly` of the channel with hex info-hash `hash`, once per channel,
/// `kind` and hour whichever replica or roll-up finds it first: `fields` plus the
/// channel's name, the kind and the hour. A channel the catalogue doesn't know: nothing.
pub(super) async fn emit_anomaly(
    conn: &mut sqlx::AnyConnection,
    hash: &str,
    kind: &str,
    hour_start: u64,
    mut fields: serde_json::Value,
    now: i64,
) -> Result<()> {
    let Some(r) = sqlx::query("SELECT account_id, name FROM channels WHERE info_hash = $1")
        .bind(hash)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(());
    };
    let (account, channel): (i64, String) = (r.try_get(0)?, r.try_get(1)?);
    if let Some(f) = fields.as_object_mut() {
        f.insert("channel".into(), channel.into());
        f.insert("kind".into(), kind.into());
        f.insert("hour_start".into(), hour_start.into());
    }
    let key = format!("{}:{hash}:{kind}:{hour_start}", hooks::USAGE_ANOMALY);
    emit(conn, account, hooks::USAGE_ANOMALY, &key, fields, now).await?;
    Ok(())
}

/// Writes an event (once per `key`) and a delivery to each of the account's endpoints,
/// on `conn` — inside the caller's transaction where the event reports a change.
pub(super) async fn emit(
    conn: &mut sqlx::AnyConnection,
    account_id: i64,
    event_type: &str,
    key: &str,
    data: serde_json::Value,
    now: i64,
) -> Result<bool> {
    let public_id = hooks::new_event_id();
    let payload = json!({ "id": public_id, "type": event_type, "created": now, "data": data }).to_string();
    let inserted = sqlx::query(
        "INSERT INTO webhook_events (public_id, event_key, account_id, type, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_key) DO NOTHING RETURNING id",
    )
    .bind(&public_id)
    .bind(key)
    .bind(account_id)
    .bind(event_type)
    .bind(&payload)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = inserted else { return Ok(false) };
    let event: i64 = row.try_get(0)?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, status, attempts, next_attempt_at) \
         SELECT $1, id, 'pending', 0, $2 FROM webhook_endpoints WHERE account_id = $3 AND disabled_at IS NULL",
    )
    .bind(event)
    .bind(now)
    .bind(account_id)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

impl Db {
    /// A new endpoint for the account; returns it and its signing secret (shown once).
    pub async fn create_webhook(&self, account_id: i64, url: &str, now: i64) -> Result<(WebhookEndpoint, String)> {
        check_url(url)?;
        let count: i64 =
            sqlx::query("SELECT COUNT(*) FROM webhook_endpoints WHERE account_id = $1 AND disabled_at IS NULL")
                .bind(account_id)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        if count >= MAX_ENDPOINTS {
            return Err(DbError::Conflict(format!("at most {MAX_ENDPOINTS} endpoints per account; disable one first")));
        }
        let secret = hooks::new_secret();
        let id = self
            .insert_id(
                sqlx::query(
                    "INSERT INTO webhook_endpoints (account_id, url, secret, created_at) VALUES ($1, $2, $3, $4) \
                     RETURNING id",
                )
                .bind(account_id)
                .bind(url)
                .bind(&secret)
                .bind(now),
            )
            .await?;
        Ok((WebhookEndpoint { id, url: url.to_owned(), created_at: now, disabled_at: None }, secret))
    }

    /// The account's endpoints.
    pub async fn webhooks(&self, account_id: i64) -> Result<Vec<WebhookEndpoint>> {
        Ok(sqlx::query_as(
            "SELECT id, url, created_at, disabled_at FROM webhook_endpoints WHERE account_id = $1 ORDER BY id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stops sending to one of the account's endpoints (its pending deliveries are
    /// given up). Returns it as it is afterwards.
    pub async fn disable_webhook(&self, account_id: i64, id: i64, now: i64) -> Result<WebhookEndpoint> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET disabled_at = $1 WHERE id = $2 AND account_id = $3 AND disabled_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint disabled' \
                 WHERE endpoint_id = $1 AND status = 'pending'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.webhooks(account_id).await?.into_iter().find(|w| w.id == id).ok_or(DbError::NotFound("webhook"))
    }

    /// Writes `licence.expiring` for licences ending within 7 days and `licence.expired`
    /// for those that ended in the last 7 days (each once per licence and end time).
    /// Returns how many events were new.
    pub async fn emit_licence_events(&self, now: i64) -> Result<u64> {
        let rows = sqlx::query(
            "SELECT l.id, c.account_id, c.name, p.name, l.valid_from, l.valid_until FROM licenses l \
             JOIN channels c ON c.id = l.channel_id JOIN plans p ON p.id = l.plan_id \
             WHERE l.status = 'active' AND l.valid_until IS NOT NULL AND l.valid_until > $1 AND l.valid_until <= $2",
        )
        .bind(now - hooks::EXPIRING_NOTICE_S)
        .bind(now + hooks::EXPIRING_NOTICE_S)
        .fetch_all(&self.pool)
        .await?;
        let mut new = 0;
        let mut conn = self.pool.acquire().await?;
        for r in rows {
            let (id, account, channel, plan): (i64, i64, String, String) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            let (from, until): (i64, i64) = (r.try_get(4)?, r.try_get(5)?);
            let kind = if until > now { hooks::LICENCE_EXPIRING } else { hooks::LICENCE_EXPIRED };
            let data =
                json!({ "licence": id, "channel": channel, "plan": plan, "valid_from": from, "valid_until": until });
            new += u64::from(emit(&mut conn, account, kind, &format!("{kind}:{id}:{until}"), data, now).await?);
        }
        Ok(new)
    }

    /// Records an anomaly in the account's usage as a `usage.anomaly` event (once per
    /// `key`). Returns whether it was new. (Metering's own, ids over the caps, are
    /// written with the flush that reports them: `Db::record_flush`.)
    pub async fn record_anomaly(&self, account_id: i64, key: &str, data: serde_json::Value, now: i64) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        emit(&mut conn, account_id, hooks::USAGE_ANOMALY, &format!("{}:{key}", hooks::USAGE_ANOMALY), data, now).await
    }

    /// Deliveries due at `now`, oldest first, at most `limit`.
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        Ok(sqlx::query_as(
            "SELECT d.id, w.url, w.secret, e.public_id AS event_id, e.type AS event_type, e.payload, d.attempts, \
               d.next_attempt_at \
             FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
               JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at, d.id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Takes a due delivery for an attempt: moves its next attempt to `lease_until`, only
    /// if it is still as `d` saw it. `false`: another deliverer has it.
    pub async fn claim_delivery(&self, d: &DueDelivery, lease_until: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $1 \
             WHERE id = $2 AND status = 'pending' AND attempts = $3 AND next_attempt_at = $4",
        )
        .bind(lease_until)
        .bind(d.id)
        .bind(d.attempts)
        .bind(d.next_attempt_at)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records a claimed delivery's attempt: delivered, or the next attempt after the
    /// backoff, or given up after [`MAX_ATTEMPTS`].
    pub async fn record_attempt(&self, d: &DueDelivery, outcome: &Attempt, now: i64) -> Result<()> {
        let attempts = d.attempts + 1;
        let q = match outcome {
            Attempt::Delivered(status) => sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = $1, last_status = $2, \
                 last_error = NULL, delivered_at = $3 WHERE id = $4",
            )
            .bind(attempts)
            .bind(i64::from(*status))
            .bind(now)
            .bind(d.id),
            Attempt::Failed(status, why) => {
                let status_text = if attempts >= MAX_ATTEMPTS { "failed" } else { "pending" };
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = $1, attempts = $2, last_status = $3, last_error = $4, \
                     next_attempt_at = $5 WHERE id = $6",
                )
                .bind(status_text)
                .bind(attempts)
                .bind(status.map(i64::from))
                .bind(why.chars().take(500).collect::<String>())
                .bind(now + retry_after(attempts))
                .bind(d.id)
            }
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    /// The account's usage anomalies (their events' payloads), newest first.
    pub async fn anomalies(&self, account_id: i64, limit: i64) -> Result<Vec<serde_json::Value>> {
        let rows = sqlx::query(
            "SELECT payload FROM webhook_events WHERE account_id = $1 AND type = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(account_id)
        .bind(hooks::USAGE_ANOMALY)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get(0)?;
                serde_json::from_str(&payload).map_err(|e| DbError::Invalid(format!("an event in the catalogue: {e}")))
            })
            .collect()
    }

    /// The account's latest deliveries, newest first.
    pub async fn deliveries(&self, account_id: i64, limit: i64) -> Result<Vec<DeliveryRow>> {
        Ok(sqlx::query_as(
            "SELECT e.public_id AS event_id, e.type AS event_type, w.id AS endpoint_id, w.url, d.status, d.attempts, \
               d.next_attempt_at, d.last_status, d.last_error, d.delivered_at, e.created_at \
             FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
               JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             WHERE e.account_id = $1 ORDER BY d.id DESC LIMIT $2",
        )
        .bind(account_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
