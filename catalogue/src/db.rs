//! The tracker's catalogue in SQL (sqlx): accounts, API tokens, plans, channels,
//! licences, usage and its hourly roll-up, invoices, the audit log. SQLite (one file
//! in the data directory) is the embedded default; PostgreSQL for fleets. One code
//! path through sqlx's `Any` driver: every statement is written once, with `$N`
//! placeholders (both databases take them) and portable SQL; only the migrations are
//! per dialect (`migrations/sqlite`, `migrations/postgres`). Every value is bound,
//! never formatted into SQL.

use std::collections::HashMap;
use std::str::FromStr;

use crate::admission::{LicenceStanding, Refusal, Standing, admit};
use crate::secrets::{generate_stream_key, hash_stream_key};
use crate::usage::{Drained, MAX_SEED_BYTES_PER_S, Mark, SeedMark, unbacked};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use swarm::piece::{ChannelId, encode_hex};

mod billing;
mod epochs;
mod plans;
mod webhooks;
pub use billing::{Invoice, InvoiceLine, LineKind};
pub use epochs::StreamEpoch;
pub use plans::{Plan, PlanVersion, Price};
pub use webhooks::{Attempt, DeliveryRow, DueDelivery, MAX_ENDPOINTS, WebhookEndpoint};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    BadUrl(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Invalid(String),
    /// A name that must be unique is taken.
    #[error("{0}")]
    Conflict(String),
    /// It exists but belongs to another account.
    #[error("{0}")]
    Forbidden(String),
}

/// A unique-constraint violation as [`DbError::Conflict`] with `what`; other errors as they are.
fn conflict(e: sqlx::Error, what: impl FnOnce() -> String) -> DbError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => DbError::Conflict(what()),
        _ => DbError::Sql(e),
    }
}

pub type Result<T> = std::result::Result<T, DbError>;

/// How long viewer marks are kept, seconds: the roll-up of an hour needs its marks and
/// the previous hour's, and a tracker keeps usage it could not write for a day.
pub const MARKS_KEPT_S: i64 = 2 * 86_400;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// A connection pool and the dialect behind it.
#[derive(Debug, Clone)]
pub struct Db {
    pub(crate) pool: AnyPool,
    backend: Backend,
    /// The PostgreSQL schema given to [`Db::open_in_schema`].
    schema: Option<String>,
}

/// A channel as the tracker admits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub channel_id: ChannelId,
    pub carries_ads: bool,
    /// SHA-256 of each stream key accepted now: the current one, and the previous one
    /// during a rotation's grace period.
    pub stream_keys: Vec<[u8; 32]>,
    /// `Err` says why announces and publishing are refused now.
    pub admission: std::result::Result<(), Refusal>,
}

/// A channel as stored: what decides its admission at any moment ([`ChannelRecord::state_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub channel_id: ChannelId,
    pub carries_ads: bool,
    pub enabled: bool,
    /// SHA-256 of the current stream key (`None`: not a valid hash; no key matches).
    pub stream_key: Option<[u8; 32]>,
    /// The previous key's SHA-256 and the Unix time it stops working (a rotation's grace).
    pub previous_key: Option<([u8; 32], i64)>,
    /// Active commercial licences: `[valid_from, valid_until)`, open-ended when `None`.
    pub licences: Vec<(i64, Option<i64>)>,
}

impl ChannelRecord {
    /// The stream keys (SHA-256) accepted at `now`.
    pub fn keys_at(&self, now: i64) -> impl Iterator<Item = &[u8; 32]> {
        self.stream_key.iter().chain(self.previous_key.iter().filter(move |(_, until)| *until > now).map(|(k, _)| k))
    }

    /// Where the commercial licences stand at `now`.
    pub fn licence_at(&self, now: i64) -> LicenceStanding {
        if self.licences.iter().any(|&(from, until)| from <= now && until.is_none_or(|u| u > now)) {
            return LicenceStanding::Current;
        }
        match self.licences.iter().filter_map(|&(_, until)| until.filter(|&u| u <= now)).max() {
            Some(until) => LicenceStanding::ExpiredAt(until.max(0) as u64),
            None => LicenceStanding::None,
        }
    }

    /// Whether it may be published and watched at `now`, and why not.
    pub fn admission_at(&self, now: i64) -> std::result::Result<(), Refusal> {
        admit(Standing {
            name: &self.name,
            enabled: self.enabled,
            carries_ads: self.carries_ads,
            licence: self.licence_at(now),
        })
    }

    pub fn state_at(&self, now: i64) -> ChannelState {
        ChannelState {
            id: self.id,
            account_id: self.account_id,
            name: self.name.clone(),
            channel_id: self.channel_id,
            carries_ads: self.carries_ads,
            stream_keys: self.keys_at(now).copied().collect(),
            admission: self.admission_at(now),
        }
    }
}

/// Who called the admin API: the account and which of its tokens (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account_id: i64,
    pub token_id: i64,
    pub label: String,
}

impl Caller {
    /// How the audit log names it.
    pub fn actor(&self) -> String {
        format!("token {} ({})", self.token_id, self.label)
    }
}

/// A licence as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct LicenseRow {
    pub id: i64,
    pub channel: String,
    pub plan: String,
    /// The plan's price version it was sold on (and is billed at until it ends).
    pub plan_version: i64,
    pub valid_from: i64,
    pub valid_until: Option<i64>,
    pub status: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
}

/// One flush of usage for one channel and hour from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    /// `node:channel:window`, deterministic, so a retried flush inserts nothing.
    pub idempotency_key: String,
    pub channel_id: i64,
    pub hour_start: i64,
    pub viewer_seconds: i64,
    pub ad_viewer_seconds: i64,
    pub seed_bytes: i64,
    pub peak_viewers: i64,
}

/// A channel's usage in one hour (rolled up).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HourlyUsage {
    pub channel: String,
    pub hour_start: i64,
    pub viewer_seconds: i64,
    pub ad_viewer_seconds: i64,
    pub seed_bytes: i64,
    pub peak_viewers: i64,
    pub unique_viewers: i64,
}

/// A channel's usage over a period: sums, the highest hourly peak, and unique viewers
/// over the whole period (the union of its hours' sketches: ±1.6 %, not a sum).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageSummary {
    pub channel: String,
    pub from: i64,
    pub to: i64,
    pub viewer_seconds: i64,
    pub ad_viewer_seconds: i64,
    pub seed_bytes: i64,
    pub peak_viewers: i64,
    pub unique_viewers: i64,
}

impl Db {
    /// Connects (`sqlite://PATH` — created if missing — or `postgres://…`) and brings
    /// the schema up to date.
    pub async fn open(url: &str) -> Result<Db> {
        Self::open_in_schema(url, None).await
    }

    /// [`Db::open`] inside a PostgreSQL schema (created if missing): lets tests share
    /// one database without seeing each other. Ignored for SQLite.
    pub async fn open_in_schema(url: &str, schema: Option<&str>) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::BadUrl(url.to_owned()));
        };
        let url = match backend {
            // Create the file on first start.
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        // An unreachable catalogue fails a call within seconds (the default is 30 s): the
        // meter keeps its batch, the directory its last good copy, the admin API says 503.
        let mut pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 1 } else { 8 })
            .acquire_timeout(std::time::Duration::from_secs(5));
        let schema = match (backend, schema) {
            (Backend::Postgres, Some(s)) => {
                if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                    return Err(DbError::Invalid(format!("schema name {s:?}: use a-z, 0-9 and _")));
                }
                Some(s.to_owned())
            }
            _ => None,
        };
        // Per connection: SQLite enforces foreign keys only when asked; a test schema
        // is the first on PostgreSQL's search path.
        let schema_for_setup = schema.clone();
        pool = pool.after_connect(move |conn, _| {
            let setup = match (backend, &schema_for_setup) {
                (Backend::Sqlite, _) => Some("PRAGMA foreign_keys = ON".to_owned()),
                // The name was checked above: identifiers can't be bound.
                (Backend::Postgres, Some(s)) => {
                    Some(format!("CREATE SCHEMA IF NOT EXISTS {s}; SET search_path TO {s}"))
                }
                (Backend::Postgres, None) => None,
            };
            Box::pin(async move {
                if let Some(sql) = setup {
                    conn.execute(sql.as_str()).await?;
                }
                Ok(())
            })
        });
        let pool = pool.connect_with(options).await?;
        let db = Db { pool, backend, schema };
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&db.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&db.pool).await?,
        }
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Drops the schema given to [`Db::open_in_schema`] with everything in it (tests
    /// clean up after themselves). Does nothing otherwise.
    pub async fn drop_schema(self) -> Result<()> {
        if let Some(s) = &self.schema {
            // Checked when opened: a-z, 0-9 and _ only.
            self.pool.execute(format!("DROP SCHEMA {s} CASCADE").as_str()).await?;
        }
        self.pool.close().await;
        Ok(())
    }

    /// Inserts a row and returns its id (`RETURNING` works on both).
    async fn insert_id<'q>(&self, q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>) -> Result<i64> {
        Ok(q.fetch_one(&self.pool).await?.try_get::<i64, _>(0)?)
    }

    pub async fn create_account(&self, name: &str, now: i64) -> Result<i64> {
        if name.is_empty() || name.len() > 128 {
            return Err(DbError::Invalid("account name: 1-128 characters".into()));
        }
        self.insert_id(
            sqlx::query("INSERT INTO accounts (name, created_at) VALUES ($1, $2) RETURNING id").bind(name).bind(now),
        )
        .await
    }

    /// A new API token for the account; returns the token (only its hash is stored).
    pub async fn create_api_token(&self, account_id: i64, label: &str, now: i64) -> Result<String> {
        let token = format!("shoal_{}", generate_stream_key());
        sqlx::query("INSERT INTO api_tokens (account_id, token_sha256, label, created_at) VALUES ($1, $2, $3, $4)")
            .bind(account_id)
            .bind(encode_hex(&hash_stream_key(&token)))
            .bind(label)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    /// Who a bearer token belongs to (unrevoked tokens only).
    pub async fn account_for_token(&self, token: &str) -> Result<Option<Caller>> {
        // Looked up by SHA-256: the token itself is never stored or compared.
        let row =
            sqlx::query("SELECT account_id, id, label FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL")
                .bind(encode_hex(&hash_stream_key(token)))
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| Ok(Caller { account_id: r.try_get(0)?, token_id: r.try_get(1)?, label: r.try_get(2)? })).transpose()
    }

    /// Every account, (id, name), by id.
    pub async fn accounts(&self) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT id, name FROM accounts ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// The account's id by name.
    pub async fn account_by_name(&self, name: &str) -> Result<i64> {
        let row = sqlx::query("SELECT id FROM accounts WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        row.map(|r| r.try_get::<i64, _>(0)).transpose()?.ok_or(DbError::NotFound("account"))
    }

    /// A channel with its public key and the hash of its first stream key.
    pub async fn create_channel(
        &self,
        account_id: i64,
        name: &str,
        channel_id: ChannelId,
        stream_key: &str,
        carries_ads: bool,
        now: i64,
    ) -> Result<i64> {
        if !crate::valid_channel_name(name) {
            return Err(DbError::Invalid(format!("channel name {name:?}: use 1-64 of a-z, 0-9, '-' and '_'")));
        }
        self.insert_id(
            sqlx::query(
                "INSERT INTO channels (account_id, name, public_key, info_hash, stream_key_sha256, carries_ads, \
                 status, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'enabled', $7) RETURNING id",
            )
            .bind(account_id)
            .bind(name)
            .bind(channel_id.to_hex())
            .bind(encode_hex(&channel_id.info_hash()))
            .bind(encode_hex(&hash_stream_key(stream_key)))
            .bind(i64::from(carries_ads))
            .bind(now),
        )
        .await
        .map_err(|e| match e {
            DbError::Sql(e) => conflict(e, || format!("channel {name} or its public key exists")),
            e => e,
        })
    }

    /// The id of the account's channel `name`: [`DbError::NotFound`] if no channel has
    /// that name (or it was deleted), [`DbError::Forbidden`] if another account's has.
    pub async fn channel_of(&self, account_id: i64, name: &str) -> Result<i64> {
        let row = sqlx::query("SELECT id, account_id FROM channels WHERE name = $1 AND deleted_at IS NULL")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(DbError::NotFound("channel"))?;
        if row.try_get::<i64, _>(1)? != account_id {
            return Err(DbError::Forbidden(format!("channel {name} belongs to another account")));
        }
        Ok(row.try_get(0)?)
    }

    /// A new stream key for the channel; the current one keeps working until
    /// `previous_until` (if given), no longer. Returns the new key (only its hash is stored).
    pub async fn rotate_stream_key(&self, channel_id: i64, previous_until: Option<i64>) -> Result<String> {
        let key = generate_stream_key();
        let r = sqlx::query(
            "UPDATE channels SET prev_stream_key_sha256 = stream_key_sha256, prev_stream_key_until = $1, \
             stream_key_sha256 = $2 WHERE id = $3",
        )
        .bind(previous_until)
        .bind(encode_hex(&hash_stream_key(&key)))
        .bind(channel_id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(DbError::NotFound("channel"));
        }
        Ok(key)
    }

    /// Deletes a channel at `now`: off and gone from every list, admission and change
    /// ([`Db::channel_of`], [`Db::channel_records`]); its usage, licences and invoices
    /// stay. The caller ends its running licences first.
    pub async fn delete_channel(&self, channel_id: i64, now: i64) -> Result<()> {
        self.write_channel_status(channel_id, false, Some(now)).await
    }

    /// Enables or disables a channel (not a deleted one: [`DbError::NotFound`]).
    pub async fn set_channel_status(&self, channel_id: i64, enabled: bool) -> Result<()> {
        self.write_channel_status(channel_id, enabled, None).await
    }

    async fn write_channel_status(&self, channel_id: i64, enabled: bool, deleted_at: Option<i64>) -> Result<()> {
        let r = sqlx::query("UPDATE channels SET status = $1, deleted_at = $2 WHERE id = $3 AND deleted_at IS NULL")
            .bind(if enabled { "enabled" } else { "disabled" })
            .bind(deleted_at)
            .bind(channel_id)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(DbError::NotFound("channel"));
        }
        Ok(())
    }

    pub async fn add_license(
        &self,
        channel_id: i64,
        plan_id: i64,
        valid_from: i64,
        valid_until: Option<i64>,
        now: i64,
    ) -> Result<i64> {
        // Two licences on one channel at once would both be billed.
        let overlap = sqlx::query(
            "SELECT id, valid_from, valid_until FROM licenses WHERE channel_id = $1 AND status = 'active' \
             AND valid_from < $3 AND (valid_until IS NULL OR valid_until > $2) ORDER BY valid_from LIMIT 1",
        )
        .bind(channel_id)
        .bind(valid_from)
        .bind(valid_until.unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = overlap {
            let (id, from, until): (i64, i64, Option<i64>) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            let until = until.map_or("open-ended".to_owned(), |u| format!("until {}", crate::calendar::date(u)));
            return Err(DbError::Conflict(format!(
                "licence {id} already covers this channel from {} ({until}): end it first, or start the new one after it",
                crate::calendar::date(from)
            )));
        }
        // On the plan's current price version, which it keeps until it ends.
        let row = sqlx::query(
            "INSERT INTO licenses (channel_id, plan_id, valid_from, valid_until, status, created_at, plan_version_id) \
             SELECT $1, $2, $3, $4, 'active', $5, v.id FROM plan_versions v WHERE v.plan_id = $2 \
             ORDER BY v.version DESC LIMIT 1 RETURNING id",
        )
        .bind(channel_id)
        .bind(plan_id)
        .bind(valid_from)
        .bind(valid_until)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get::<i64, _>(0)).transpose()?.ok_or(DbError::NotFound("plan"))
    }

    /// The account's licences, by channel and start.
    pub async fn licenses(&self, account_id: i64) -> Result<Vec<LicenseRow>> {
        Ok(sqlx::query_as(
            "SELECT l.id, c.name AS channel, p.name AS plan, v.version AS plan_version, l.valid_from, l.valid_until, \
               l.status FROM licenses l \
             JOIN channels c ON c.id = l.channel_id JOIN plans p ON p.id = l.plan_id \
             JOIN plan_versions v ON v.id = l.plan_version_id \
             WHERE c.account_id = $1 ORDER BY c.name, l.valid_from, l.id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Ends one of the account's licences at `now`: one not started before `now` is revoked
    /// (never billed), a running one ends now (billed up to now), an ended one is left
    /// as it is. Returns the licence as it is afterwards.
    pub async fn end_license(&self, account_id: i64, license_id: i64, now: i64) -> Result<LicenseRow> {
        let Some(l) = self.licenses(account_id).await?.into_iter().find(|l| l.id == license_id) else {
            let exists = sqlx::query("SELECT id FROM licenses WHERE id = $1")
                .bind(license_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some();
            return Err(if exists {
                DbError::Forbidden(format!("licence {license_id} belongs to another account"))
            } else {
                DbError::NotFound("licence")
            });
        };
        if l.status == "active" && l.valid_from >= now {
            sqlx::query("UPDATE licenses SET status = 'revoked' WHERE id = $1")
                .bind(license_id)
                .execute(&self.pool)
                .await?;
        } else if l.status == "active" && l.valid_until.is_none_or(|u| u > now) {
            sqlx::query("UPDATE licenses SET valid_until = $1 WHERE id = $2")
                .bind(now)
                .bind(license_id)
                .execute(&self.pool)
                .await?;
        }
        self.licenses(account_id).await?.into_iter().find(|l| l.id == license_id).ok_or(DbError::NotFound("licence"))
    }

    /// Every channel with whether it may be watched and published at `now`: a disabled
    /// channel may not; a channel that carries ads needs an active commercial licence
    /// covering `now`.
    pub async fn channel_states(&self, now: i64) -> Result<Vec<ChannelState>> {
        Ok(self.channel_records().await?.iter().map(|r| r.state_at(now)).collect())
    }

    /// Every channel with what decides its admission at any time (keys with their
    /// validity, commercial licence periods): callers decide at the moment they ask
    /// ([`ChannelRecord::state_at`]), so a grace period or a licence that ends between
    /// two reads ends on time.
    pub async fn channel_records(&self) -> Result<Vec<ChannelRecord>> {
        let rows = sqlx::query(
            "SELECT c.id, c.account_id, c.name, c.public_key, c.carries_ads, c.status, \
               c.stream_key_sha256, c.prev_stream_key_sha256, c.prev_stream_key_until \
             FROM channels c WHERE c.deleted_at IS NULL ORDER BY c.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let licences = sqlx::query(
            "SELECT l.channel_id, l.valid_from, l.valid_until FROM licenses l JOIN plans p ON p.id = l.plan_id \
             WHERE l.status = 'active' AND p.commercial = 1 ORDER BY l.channel_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut periods: HashMap<i64, Vec<(i64, Option<i64>)>> = HashMap::new();
        for l in licences {
            periods.entry(l.try_get(0)?).or_default().push((l.try_get(1)?, l.try_get(2)?));
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get(0)?;
            let name: String = r.try_get(2)?;
            let key: String = r.try_get(3)?;
            let channel_id =
                ChannelId::from_hex(&key).ok_or_else(|| DbError::Invalid(format!("channel {name}: bad public key")))?;
            let carries_ads: i64 = r.try_get(4)?;
            let status: String = r.try_get(5)?;
            let prev: Option<String> = r.try_get(7)?;
            let prev_until: Option<i64> = r.try_get(8)?;
            out.push(ChannelRecord {
                id,
                account_id: r.try_get(1)?,
                name,
                channel_id,
                carries_ads: carries_ads == 1,
                enabled: status == "enabled",
                stream_key: swarm::piece::decode_hex32(&r.try_get::<String, _>(6)?),
                previous_key: match (prev.as_deref().and_then(swarm::piece::decode_hex32), prev_until) {
                    (Some(k), Some(until)) => Some((k, until)),
                    _ => None,
                },
                licences: periods.remove(&id).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The catalogue's change counter: it moves whenever a channel, a licence or a plan
    /// is written (triggers in `migrations/*/0004_catalogue_version.sql`), so a reader
    /// polls this one row and re-reads the rest only when it moved.
    pub async fn catalogue_version(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT version FROM catalogue_version WHERE id = 1").fetch_one(&self.pool).await?.try_get(0)?)
    }

    /// Writes usage events; one already written (same idempotency key) is skipped.
    /// Returns how many were new.
    pub async fn record_usage(&self, events: &[UsageEvent], now: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for e in events {
            if e.hour_start % 3600 != 0 {
                return Err(DbError::Invalid(format!("usage hour_start {} is not on the hour", e.hour_start)));
            }
            let r = sqlx::query(
                "INSERT INTO usage_events (idempotency_key, channel_id, hour_start, viewer_seconds, \
                 ad_viewer_seconds, seed_bytes, peak_viewers, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(&e.idempotency_key)
            .bind(e.channel_id)
            .bind(e.hour_start)
            .bind(e.viewer_seconds)
            .bind(e.ad_viewer_seconds)
            .bind(e.seed_bytes)
            .bind(e.peak_viewers)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            inserted += r.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Writes one flush of a tracker node in one transaction: a usage event per channel
    /// and hour, keyed `node:info_hash:hour:batch` — `batch` names this flush, unique to
    /// the process that drained it (a retry of the same batch writes nothing; a
    /// restarted process's batches never share a key with its predecessor's) — and the
    /// viewers' marks (merged with any node's) and the seeds'. Usage of channels not in
    /// the catalogue is dropped. Viewer marks of hours older than [`MARKS_KEPT_S`] and
    /// seed marks untouched for two days are deleted.
    /// Rows shared between nodes (marks) are written in key order, so replicas flushing
    /// at once wait for each other rather than deadlock (each takes its rows' locks in
    /// the same order). Returns events written.
    pub async fn record_flush(&self, node: &str, batch: &str, d: &Drained, now: i64) -> Result<u64> {
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut marks: Vec<&Mark> = d.marks.iter().collect();
        marks.sort_unstable_by_key(|m| (m.info_hash, m.hour_start, m.peer_key));
        let mut seed_marks: Vec<&SeedMark> = d.seed_marks.iter().collect();
        seed_marks.sort_unstable_by_key(|m| (m.info_hash, m.peer_key, m.hour_start));
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        for u in &d.usage {
            let hash = encode_hex(&u.info_hash);
            let r = sqlx::query(
                "INSERT INTO usage_events (idempotency_key, channel_id, hour_start, viewer_seconds, \
                 ad_viewer_seconds, seed_bytes, peak_viewers, recorded_at) \
                 SELECT $1, id, $2, $3, $4, $5, $6, $7 FROM channels WHERE info_hash = $8 \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(format!("{node}:{hash}:{}:{batch}", u.hour_start))
            .bind(big(u.hour_start))
            .bind(big(u.viewer_seconds))
            .bind(big(u.ad_viewer_seconds))
            .bind(big(u.seed_bytes))
            .bind(i64::from(u.peak_viewers))
            .bind(now)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
            written += r.rows_affected();
        }
        for m in marks {
            // Merged with what any node wrote of this viewer and hour (Mark::merge in SQL).
            sqlx::query(
                "INSERT INTO viewer_marks (info_hash, hour_start, peer_key, first_seen, first_watched, first_ad, \
                   last_seen, watched, ad, first_down, down) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (info_hash, hour_start, peer_key) DO UPDATE SET \
                   first_watched = CASE WHEN excluded.first_seen < viewer_marks.first_seen \
                     THEN excluded.first_watched ELSE viewer_marks.first_watched END, \
                   first_down = CASE WHEN excluded.first_seen < viewer_marks.first_seen \
                     THEN excluded.first_down ELSE viewer_marks.first_down END, \
                   down = CASE WHEN excluded.down > viewer_marks.down THEN excluded.down ELSE viewer_marks.down END, \
                   first_ad = CASE WHEN excluded.first_seen < viewer_marks.first_seen \
                     THEN excluded.first_ad ELSE viewer_marks.first_ad END, \
                   first_seen = CASE WHEN excluded.first_seen < viewer_marks.first_seen \
                     THEN excluded.first_seen ELSE viewer_marks.first_seen END, \
                   last_seen = CASE WHEN excluded.last_seen > viewer_marks.last_seen \
                     THEN excluded.last_seen ELSE viewer_marks.last_seen END, \
                   watched = CASE WHEN excluded.watched > viewer_marks.watched \
                     THEN excluded.watched ELSE viewer_marks.watched END, \
                   ad = CASE WHEN excluded.ad > viewer_marks.ad THEN excluded.ad ELSE viewer_marks.ad END",
            )
            .bind(encode_hex(&m.info_hash))
            .bind(big(m.hour_start))
            .bind(encode_hex(&m.peer_key))
            .bind(big(m.first_seen))
            .bind(i64::from(m.first_watched))
            .bind(i64::from(m.first_ad))
            .bind(big(m.last_seen))
            .bind(i64::from(m.watched))
            .bind(i64::from(m.ad))
            .bind(big(m.first_down))
            .bind(big(m.down))
            .execute(&mut *tx)
            .await?;
        }
        for m in seed_marks {
            // Merged with what any node wrote of this seed and hour.
            sqlx::query(
                "INSERT INTO seed_hour_marks (info_hash, peer_key, hour_start, low, high, first_seen, last_seen, \
                   down_low, down_high) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (info_hash, peer_key, hour_start) DO UPDATE SET \
                   low = CASE WHEN excluded.low < seed_hour_marks.low THEN excluded.low ELSE seed_hour_marks.low END, \
                   high = CASE WHEN excluded.high > seed_hour_marks.high \
                     THEN excluded.high ELSE seed_hour_marks.high END, \
                   first_seen = CASE WHEN excluded.first_seen < seed_hour_marks.first_seen \
                     THEN excluded.first_seen ELSE seed_hour_marks.first_seen END, \
                   last_seen = CASE WHEN excluded.last_seen > seed_hour_marks.last_seen \
                     THEN excluded.last_seen ELSE seed_hour_marks.last_seen END, \
                   down_low = CASE WHEN excluded.down_low < seed_hour_marks.down_low \
                     THEN excluded.down_low ELSE seed_hour_marks.down_low END, \
                   down_high = CASE WHEN excluded.down_high > seed_hour_marks.down_high \
                     THEN excluded.down_high ELSE seed_hour_marks.down_high END",
            )
            .bind(encode_hex(&m.info_hash))
            .bind(encode_hex(&m.peer_key))
            .bind(big(m.hour_start))
            .bind(big(m.low))
            .bind(big(m.high.max(m.low)))
            .bind(big(m.first_seen))
            .bind(big(m.last_seen))
            .bind(big(m.down_low))
            .bind(big(m.down_high))
            .execute(&mut *tx)
            .await?;
        }
        for u in d.usage.iter().filter(|u| u.ids_over_cap > 0) {
            let fields = serde_json::json!({
                "ids": u.ids_over_cap, "node": node,
                "detail": "more viewer ids from one address or network than the caps allow: answered, not listed, not billed",
            });
            webhooks::emit_anomaly(&mut tx, &encode_hex(&u.info_hash), "ids_over_cap", u.hour_start, fields, now)
                .await?;
        }
        for table in ["viewer_marks", "seed_hour_marks"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE hour_start < $1"))
                .bind(now - now % 3600 - MARKS_KEPT_S)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Recomputes one hour's roll-up (so running it again, or after late usage, gives
    /// the right totals): seed bytes and peak viewers from its usage events; viewer-
    /// seconds, ad seconds and unique viewers (exact, and as a HyperLogLog sketch for
    /// periods) from its viewer marks, each viewer billed by [`Mark::billed`] — continuing
    /// if it has a mark in the hour before; seed bytes from its seed marks (see
    /// [`crate::usage::SeedMark`]). (A channel-hour without marks — written before marks were kept —
    /// keeps its events' counts.) A channel-hour whose viewers' bytes don't back its
    /// viewer-seconds ([`crate::usage::unbacked`]) is recorded as a `usage.anomaly`
    /// (`now`: the event's time). Returns the channels rolled up.
    pub async fn roll_up_hour(&self, hour_start: i64, now: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO usage_hourly (channel_id, hour_start, viewer_seconds, ad_viewer_seconds, seed_bytes, \
               peak_viewers, unique_viewers) \
             SELECT channel_id, hour_start, SUM(viewer_seconds), SUM(ad_viewer_seconds), SUM(seed_bytes), \
               MAX(peak_viewers), 0 \
             FROM usage_events WHERE hour_start = $1 GROUP BY channel_id, hour_start \
             ON CONFLICT (channel_id, hour_start) DO UPDATE SET \
               viewer_seconds = excluded.viewer_seconds, ad_viewer_seconds = excluded.ad_viewer_seconds, \
               seed_bytes = excluded.seed_bytes, peak_viewers = excluded.peak_viewers",
        )
        .bind(hour_start)
        .execute(&mut *tx)
        .await?;
        let marks = sqlx::query(
            "SELECT m.info_hash, m.peer_key, m.first_seen, m.first_watched, m.first_ad, m.last_seen, m.watched, m.ad, \
               CASE WHEN EXISTS (SELECT 1 FROM viewer_marks p WHERE p.info_hash = m.info_hash \
                 AND p.hour_start = $2 AND p.peer_key = m.peer_key) THEN 1 ELSE 0 END, m.first_down, m.down \
             FROM viewer_marks m WHERE m.hour_start = $1 ORDER BY m.info_hash",
        )
        .bind(hour_start)
        .bind(hour_start - 3600)
        .fetch_all(&mut *tx)
        .await?;
        /// One channel's hour, from its marks.
        struct Hour {
            hash: String,
            seconds: u64,
            ad: u64,
            unique: u64,
            sketch: crate::hll::Hll,
            /// Bytes its viewers took in.
            bytes: u64,
        }
        // Sorted by channel.
        let mut channels: Vec<Hour> = Vec::new();
        for m in marks {
            let hash: String = m.try_get(0)?;
            let Some(peer_key) = swarm::piece::decode_hex::<8>(&m.try_get::<String, _>(1)?) else { continue };
            let num = |i: usize| -> Result<u64> { Ok(m.try_get::<i64, _>(i)?.max(0) as u64) };
            let counter = |i: usize| -> Result<u16> { Ok(u16::try_from(num(i)?).unwrap_or(u16::MAX)) };
            let mark = Mark {
                info_hash: [0; 20],
                hour_start: hour_start.max(0) as u64,
                peer_key,
                first_seen: num(2)?,
                first_watched: counter(3)?,
                first_ad: counter(4)?,
                last_seen: num(5)?,
                watched: counter(6)?,
                ad: counter(7)?,
                first_down: num(9)?,
                down: num(10)?,
            };
            let (seconds, ad) = mark.billed(m.try_get::<i64, _>(8)? == 1);
            if channels.last().is_none_or(|c| c.hash != hash) {
                let sketch = crate::hll::Hll::new();
                channels.push(Hour { hash, seconds: 0, ad: 0, unique: 0, sketch, bytes: 0 });
            }
            if let Some(c) = channels.last_mut() {
                c.seconds += seconds;
                c.ad += ad;
                c.unique += 1;
                c.sketch.insert_hash(u64::from_le_bytes(peer_key));
                c.bytes = c.bytes.saturating_add(mark.bytes());
            }
        }
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for c in &channels {
            sqlx::query(
                "INSERT INTO usage_hourly (channel_id, hour_start, viewer_seconds, ad_viewer_seconds, seed_bytes, \
                   peak_viewers, unique_viewers, unique_sketch) \
                 SELECT id, $1, $2, $3, 0, 0, $4, $5 FROM channels WHERE info_hash = $6 \
                 ON CONFLICT (channel_id, hour_start) DO UPDATE SET viewer_seconds = excluded.viewer_seconds, \
                   ad_viewer_seconds = excluded.ad_viewer_seconds, unique_viewers = excluded.unique_viewers, \
                   unique_sketch = excluded.unique_sketch",
            )
            .bind(hour_start)
            .bind(big(c.seconds))
            .bind(big(c.ad))
            .bind(big(c.unique))
            .bind(c.sketch.to_bytes())
            .bind(&c.hash)
            .execute(&mut *tx)
            .await?;
        }
        // Seed bytes: each seed's highest counter in the hour less its latest earlier
        // high (its low in its first hour), at most an hour at the cap.
        let seeds = sqlx::query(
            "SELECT m.info_hash, m.low, m.high, (SELECT MAX(p.high) FROM seed_hour_marks p \
               WHERE p.info_hash = m.info_hash AND p.peer_key = m.peer_key AND p.hour_start < $1), \
               m.first_seen, m.last_seen, m.down_low, m.down_high \
             FROM seed_hour_marks m WHERE m.hour_start = $1 ORDER BY m.info_hash",
        )
        .bind(hour_start)
        .fetch_all(&mut *tx)
        .await?;
        // By channel: seed bytes, and the seeds' view of the stream.
        let mut seed_hours: Vec<(String, u64, Vec<SeedMark>)> = Vec::new();
        for m in seeds {
            let hash: String = m.try_get(0)?;
            let (low, high): (i64, i64) = (m.try_get(1)?, m.try_get(2)?);
            let base = m.try_get::<Option<i64>, _>(3)?.unwrap_or(low);
            let bytes = (high.saturating_sub(base).max(0) as u64).min(3_600 * MAX_SEED_BYTES_PER_S);
            let num = |i: usize| -> Result<u64> { Ok(m.try_get::<i64, _>(i)?.max(0) as u64) };
            let view = SeedMark {
                info_hash: [0; 20],
                peer_key: [0; 8],
                hour_start: hour_start.max(0) as u64,
                low: 0,
                high: 0,
                first_seen: num(4)?,
                last_seen: num(5)?,
                down_low: num(6)?,
                down_high: num(7)?,
            };
            match seed_hours.last_mut() {
                Some((h, sum, views)) if *h == hash => {
                    *sum += bytes;
                    views.push(view);
                }
                _ => seed_hours.push((hash, bytes, vec![view])),
            }
        }
        for (hash, bytes, _) in &seed_hours {
            sqlx::query(
                "INSERT INTO usage_hourly (channel_id, hour_start, viewer_seconds, ad_viewer_seconds, seed_bytes, \
                   peak_viewers, unique_viewers) \
                 SELECT id, $1, 0, 0, $2, 0, 0 FROM channels WHERE info_hash = $3 \
                 ON CONFLICT (channel_id, hour_start) DO UPDATE SET seed_bytes = excluded.seed_bytes",
            )
            .bind(hour_start)
            .bind(big(*bytes))
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        }
        // Viewer-hours its viewers' bytes don't back: a `usage.anomaly` (once per
        // channel and hour, at the first roll-up that finds it).
        let views_of: HashMap<&str, &[SeedMark]> = seed_hours.iter().map(|s| (s.0.as_str(), &s.2[..])).collect();
        for c in &channels {
            let views = views_of.get(c.hash.as_str()).copied().unwrap_or_default();
            let Some(u) = unbacked(c.seconds, c.bytes, views) else { continue };
            let fields = serde_json::json!({
                "viewer_seconds": u.viewer_seconds, "backed_seconds": u.backed_seconds,
                "viewer_bytes": u.viewer_bytes, "stream_bytes_per_s": u.stream_rate.round() as u64,
                "detail": "the viewers' downloaded bytes could not have played half the billed viewer-seconds at \
                           the stream's rate: viewer ids that report watching without taking the stream in",
            });
            let hour = hour_start.max(0) as u64;
            webhooks::emit_anomaly(&mut tx, &c.hash, "unbacked_hours", hour, fields, now).await?;
        }
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    /// An account's hourly usage in `[from, to)`, channel by channel. Another
    /// account's channels are never in it.
    pub async fn hourly_usage(&self, account_id: i64, from: i64, to: i64) -> Result<Vec<HourlyUsage>> {
        let rows = sqlx::query(
            "SELECT c.name, u.hour_start, u.viewer_seconds, u.ad_viewer_seconds, u.seed_bytes, u.peak_viewers, \
               u.unique_viewers \
             FROM usage_hourly u JOIN channels c ON c.id = u.channel_id \
             WHERE c.account_id = $1 AND u.hour_start >= $2 AND u.hour_start < $3 \
             ORDER BY c.name, u.hour_start",
        )
        .bind(account_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HourlyUsage {
                    channel: r.try_get(0)?,
                    hour_start: r.try_get(1)?,
                    viewer_seconds: r.try_get(2)?,
                    ad_viewer_seconds: r.try_get(3)?,
                    seed_bytes: r.try_get(4)?,
                    peak_viewers: r.try_get(5)?,
                    unique_viewers: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// An account's usage in `[from, to)` per channel, as one summary each.
    pub async fn usage_summary(&self, account_id: i64, from: i64, to: i64) -> Result<Vec<UsageSummary>> {
        self.usage_buckets(account_id, from, to, None).await
    }

    /// An account's usage in `[from, to)` per channel and per `bucket` seconds (aligned
    /// to the Unix epoch: `86_400` is per UTC day), or over the whole period (`None`):
    /// sums, the highest hourly peak, and unique viewers over each bucket (the union of
    /// its hours' sketches: ±1.6 %, not a sum). By channel, then time.
    pub async fn usage_buckets(
        &self,
        account_id: i64,
        from: i64,
        to: i64,
        bucket: Option<i64>,
    ) -> Result<Vec<UsageSummary>> {
        let rows = sqlx::query(
            "SELECT c.name, u.hour_start, u.viewer_seconds, u.ad_viewer_seconds, u.seed_bytes, u.peak_viewers, \
               u.unique_sketch \
             FROM usage_hourly u JOIN channels c ON c.id = u.channel_id \
             WHERE c.account_id = $1 AND u.hour_start >= $2 AND u.hour_start < $3 ORDER BY c.name, u.hour_start",
        )
        .bind(account_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(UsageSummary, crate::hll::Hll)> = Vec::new();
        for r in rows {
            let (name, hour): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
            let (start, end) = match bucket {
                Some(b) if b > 0 => {
                    let start = hour - hour.rem_euclid(b);
                    (start.max(from), (start + b).min(to))
                }
                _ => (from, to),
            };
            if out.last().is_none_or(|(s, _)| s.channel != name || s.from != start) {
                let s = UsageSummary {
                    channel: name,
                    from: start,
                    to: end,
                    viewer_seconds: 0,
                    ad_viewer_seconds: 0,
                    seed_bytes: 0,
                    peak_viewers: 0,
                    unique_viewers: 0,
                };
                out.push((s, crate::hll::Hll::new()));
            }
            let sketch: Option<Vec<u8>> = r.try_get(6)?;
            if let Some((s, hll)) = out.last_mut() {
                s.viewer_seconds += r.try_get::<i64, _>(2)?;
                s.ad_viewer_seconds += r.try_get::<i64, _>(3)?;
                s.seed_bytes += r.try_get::<i64, _>(4)?;
                s.peak_viewers = s.peak_viewers.max(r.try_get::<i64, _>(5)?);
                if let Some(h) = sketch.as_deref().and_then(crate::hll::Hll::from_bytes) {
                    hll.merge(&h);
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|(mut s, hll)| {
                s.unique_viewers = hll.estimate().round() as i64;
                s
            })
            .collect())
    }

    /// An account's name.
    pub async fn account_name(&self, account_id: i64) -> Result<String> {
        let row =
            sqlx::query("SELECT name FROM accounts WHERE id = $1").bind(account_id).fetch_optional(&self.pool).await?;
        row.map(|r| r.try_get::<String, _>(0)).transpose()?.ok_or(DbError::NotFound("account"))
    }

    /// The account's latest audit entries, newest first.
    pub async fn audit_entries(&self, account_id: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        Ok(sqlx::query_as(
            "SELECT at, actor, action, subject, detail FROM audit_log WHERE account_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(account_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Appends to the audit log.
    pub async fn audit(
        &self,
        now: i64,
        account_id: Option<i64>,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, account_id, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now)
        .bind(account_id)
        .bind(actor)
        .bind(action)
        .bind(subject)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
