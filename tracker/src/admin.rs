//! The admin API: an account's channels, stream keys, licences, hourly usage,
//! invoices and audit log, behind a bearer token scoped to that account — an account
//! never sees or changes another's data. Every change is written to the audit log.
//! `GET /v1/openapi.json` describes it; `shoal admin` wraps it.
//!
//! - `GET /v1/channels`; `POST /v1/channels` `{name, public_key, carries_ads}` (the
//!   answer holds the stream key, shown this once).
//! - `POST /v1/channels/{name}/disable` `{licences: "end"|"keep"}` (required when a
//!   licence runs or is to come: end it now, or keep paying for it), `…/enable`;
//!   `DELETE /v1/channels/{name}` `{licences: "end"}` (required when a licence runs or
//!   is to come; a deleted channel keeps none): gone, its usage and invoices kept.
//! - `POST /v1/channels/{name}/stream-key` `{grace_seconds}`: a new stream key; the old
//!   one keeps working for the grace period.
//! - `GET /v1/plans`; `GET /v1/licenses`; `POST /v1/channels/{name}/licenses`
//!   `{plan, valid_from, valid_until}`; `POST /v1/licenses/{id}/end`.
//! - `GET /v1/usage?from=UNIX&to=UNIX` — hourly usage per channel in `[from, to)`;
//!   `GET /v1/usage/summary?…[&by=day]` — the period (or each day of it) per channel,
//!   unique viewers over each; both also as CSV (`format=csv`);
//!   `GET /v1/usage/anomalies` — the latest 200 usage anomalies.
//! - `GET /v1/invoices` — the account's issued invoices and credit notes;
//!   `GET /v1/invoices/preview?month=YYYY-MM` — what finalizing the month would issue
//!   (one per currency; writes nothing); `GET /v1/invoices/{number}`; each also as CSV
//!   with `format=csv`, and one as a printable page with `format=html`. Finalizing and voiding are the platform's (`shoal admin invoice`).
//! - `GET /v1/webhooks`; `POST /v1/webhooks` `{url}` (the answer holds the signing
//!   secret, shown this once); `POST /v1/webhooks/{id}/disable`; `GET
//!   /v1/webhooks/deliveries` — the latest 200 deliveries and how each went. Events:
//!   `invoice.finalized`, `invoice.voided`, `licence.expiring` (7 days ahead),
//!   `licence.expired`, `usage.anomaly` (`catalogue::webhooks` for the signature).
//! - `GET /v1/audit` — the account's latest 200 audit entries.

use serde::{Deserialize, Serialize};

use catalogue::db::{Caller, Db, DbError};
use catalogue::export;
use catalogue::requests::{self, AddLicense, CreateChannel, CreateWebhook, Disable, OnDisable, Rotate};

/// An answer: status, content type, body.
pub type Answer = (u16, &'static str, Vec<u8>);

/// Largest request body taken, bytes.
pub const MAX_BODY: usize = 64 * 1024;

pub use catalogue::requests::MAX_GRACE_S;

#[derive(Debug, Serialize)]
struct ChannelOut {
    name: String,
    channel_id: String,
    info_hash: String,
    carries_ads: bool,
    /// `null` when it may publish and be watched, else why not.
    refused: Option<String>,
}

#[derive(Debug, Serialize)]
struct CreatedChannel {
    name: String,
    channel_id: String,
    info_hash: String,
    /// Shown this once: only its hash is stored.
    stream_key: String,
}

#[derive(Debug, Serialize)]
struct NewKey {
    name: String,
    stream_key: String,
    /// Until when the previous key is still accepted (Unix seconds), if at all.
    previous_key_valid_until: Option<i64>,
}

#[derive(Debug, Serialize)]
struct ErrorOut<'a> {
    error: &'a str,
}

fn json<T: Serialize>(status: u16, v: &T) -> Answer {
    (status, "application/json", serde_json::to_vec(v).unwrap_or_default())
}

fn error(status: u16, msg: &str) -> Answer {
    json(status, &ErrorOut { error: msg })
}

/// Who a request's bearer token belongs to, or the answer refusing it.
async fn caller(db: &Db, authorization: Option<&str>) -> Result<Caller, Answer> {
    let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(error(401, "send Authorization: Bearer <API token>"));
    };
    match db.account_for_token(token.trim()).await {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(error(401, "API token not accepted")),
        Err(e) => Err(db_error(&e)),
    }
}

/// The answer for a catalogue error: what the caller can act on, or 503.
fn db_error(e: &DbError) -> Answer {
    match e {
        DbError::NotFound(what) => error(404, &format!("no such {what}")),
        DbError::Forbidden(m) => error(403, m),
        DbError::Conflict(m) => error(409, m),
        DbError::Invalid(m) => error(400, m),
        _ => {
            tracing::warn!(error = %e, "admin API: catalogue error");
            error(503, "the catalogue is unavailable; try again")
        }
    }
}

fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')).map(str::to_owned))
}

/// `[from, to)` in Unix seconds (empty when `to` is not after `from`).
fn period(query: &str) -> Result<(i64, i64), Answer> {
    let get = |n: &str| param(query, n).and_then(|v| v.parse::<i64>().ok());
    match (get("from"), get("to")) {
        (Some(f), Some(t)) => Ok((f, t.max(f))),
        _ => Err(error(400, "from and to: Unix seconds (integers)")),
    }
}

fn required<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Answer> {
    requests::parse(bytes).map_err(|e| error(400, &e))
}

/// One admin request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
    pub now: i64,
}

/// The methods an admin path takes (`GET, POST` as an `Allow` header says it), `None`
/// if there is no such path.
pub fn allowed(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/v1/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    Some(match segs.as_slice() {
        ["channels"] | ["webhooks"] => "GET, POST",
        ["channels", _] => "DELETE",
        ["channels", _, "disable" | "enable" | "stream-key" | "licenses"]
        | ["licenses", _, "end"]
        | ["webhooks", _, "disable"] => "POST",
        ["openapi.json" | "plans" | "licenses" | "usage" | "invoices" | "audit"]
        | ["usage", "summary" | "anomalies"]
        | ["invoices", _]
        | ["webhooks", "deliveries"] => "GET",
        _ => return None,
    })
}

/// A `format` the path doesn't offer, answered 400 (not silently taken as JSON).
fn bad_format(path: &str, query: &str) -> Option<Answer> {
    let offered: &[&str] = match path {
        "/v1/invoices" | "/v1/invoices/preview" | "/v1/usage" | "/v1/usage/summary" => &["json", "csv"],
        p if p.starts_with("/v1/invoices/") => &["json", "csv", "html"],
        _ => &[],
    };
    let f = param(query, "format")?;
    (!offered.contains(&f.as_str())).then(|| {
        let list = if offered.is_empty() { "none here".to_owned() } else { offered.join(", ") };
        error(400, &format!("format {f:?}: {list}"))
    })
}

/// Answers an admin request; `None` if the path isn't under `/v1/`.
pub async fn route(db: &Db, req: Request<'_>) -> Option<Answer> {
    let rest = req.path.strip_prefix("/v1/")?;
    let Some(allow) = allowed(req.path) else {
        return Some(error(404, "no such admin path; see /v1/openapi.json"));
    };
    if !allow.split(", ").any(|m| m == req.method) {
        // The caller adds the `Allow` header ([`allowed`]).
        return Some(error(405, &format!("{} takes {allow}; see /v1/openapi.json", req.path)));
    }
    if rest == "openapi.json" {
        return Some((200, "application/json", openapi().as_bytes().to_vec()));
    }
    if let Some(bad) = bad_format(req.path, req.query) {
        return Some(bad);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let who = match caller(db, req.authorization).await {
        Ok(c) => c,
        Err(answer) => return Some(answer),
    };
    let answer = match (req.method, segs.as_slice()) {
        ("GET", ["channels"]) => list_channels(db, &who, req.now).await,
        ("POST", ["channels"]) => create_channel(db, &who, req).await,
        ("POST", ["channels", name, action @ ("disable" | "enable")]) => {
            set_status(db, &who, name, *action == "enable", req).await
        }
        ("DELETE", ["channels", name]) => delete_channel(db, &who, name, req).await,
        ("POST", ["channels", name, "stream-key"]) => rotate(db, &who, name, req).await,
        ("POST", ["channels", name, "licenses"]) => add_license(db, &who, name, req).await,
        ("POST", ["licenses", id, "end"]) => end_license(db, &who, id, req.now).await,
        ("GET", ["plans"]) => match db.plans_for(who.account_id).await {
            Ok(p) => json(200, &p),
            Err(e) => db_error(&e),
        },
        ("GET", ["licenses"]) => match db.licenses(who.account_id).await {
            Ok(l) => json(200, &l),
            Err(e) => db_error(&e),
        },
        ("GET", ["audit"]) => match db.audit_entries(who.account_id, 200).await {
            Ok(a) => json(200, &a),
            Err(e) => db_error(&e),
        },
        ("GET", ["usage"]) => match period(req.query) {
            Err(a) => a,
            Ok((from, to)) => match db.hourly_usage(who.account_id, from, to).await {
                Ok(u) if param(req.query, "format").as_deref() == Some("csv") => csv(export::hourly_csv(&u)),
                Ok(u) => json(200, &u),
                Err(e) => db_error(&e),
            },
        },
        ("GET", ["usage", "summary"]) => match period(req.query) {
            Err(a) => a,
            Ok((from, to)) => {
                let bucket = match param(req.query, "by").as_deref() {
                    None | Some("period") => Ok(None),
                    Some("day") => Ok(Some(catalogue::calendar::DAY)),
                    Some(_) => Err(error(400, "by: day or period")),
                };
                match bucket {
                    Err(a) => a,
                    Ok(bucket) => match db.usage_buckets(who.account_id, from, to, bucket).await {
                        Ok(u) if param(req.query, "format").as_deref() == Some("csv") => csv(export::summary_csv(&u)),
                        Ok(u) => json(200, &u),
                        Err(e) => db_error(&e),
                    },
                }
            }
        },
        ("GET", ["invoices"]) => match db.invoices(who.account_id).await {
            Ok(all) => invoices_answer(&all, req.query),
            Err(e) => db_error(&e),
        },
        ("GET", ["invoices", "preview"]) => {
            match param(req.query, "month").as_deref().map(catalogue::calendar::Month::parse) {
                Some(Ok(month)) => match db.preview_invoices(who.account_id, month).await {
                    Ok(previews) => invoices_answer(&previews, req.query),
                    Err(e) => db_error(&e),
                },
                Some(Err(e)) => error(400, &e),
                None => error(400, "month: YYYY-MM, the calendar month to preview"),
            }
        }
        ("GET", ["invoices", number]) => match db.invoice_by_number(number).await {
            // Another account's invoice is answered as no such one: numbers are guessable.
            Ok(inv) if inv.account_id == who.account_id => one_invoice(db, inv, req.query).await,
            Ok(_) | Err(DbError::NotFound(_)) => error(404, "no such invoice"),
            Err(e) => db_error(&e),
        },
        ("GET", ["usage", "anomalies"]) => match db.anomalies(who.account_id, 200).await {
            Ok(a) => json(200, &a),
            Err(e) => db_error(&e),
        },
        ("GET", ["webhooks"]) => match db.webhooks(who.account_id).await {
            Ok(w) => json(200, &w),
            Err(e) => db_error(&e),
        },
        ("POST", ["webhooks"]) => create_webhook(db, &who, req).await,
        ("POST", ["webhooks", id, "disable"]) => disable_webhook(db, &who, id, req.now).await,
        ("GET", ["webhooks", "deliveries"]) => match db.deliveries(who.account_id, 200).await {
            Ok(d) => json(200, &d),
            Err(e) => db_error(&e),
        },
        _ => error(405, "method not allowed on this path; see /v1/openapi.json"),
    };
    Some(answer)
}

/// Invoices as JSON (an array), or as CSV with `format=csv` (one header, their lines).
fn invoices_answer(invoices: &[catalogue::db::Invoice], query: &str) -> Answer {
    if param(query, "format").as_deref() == Some("csv") {
        csv(export::invoices_csv(invoices))
    } else {
        json(200, &invoices)
    }
}

fn csv(body: String) -> Answer {
    (200, "text/csv; charset=utf-8", body.into_bytes())
}

/// One invoice: JSON, CSV, or (`format=html`) a printable page.
async fn one_invoice(db: &Db, inv: catalogue::db::Invoice, query: &str) -> Answer {
    if param(query, "format").as_deref() != Some("html") {
        return invoices_answer(std::slice::from_ref(&inv), query);
    }
    let issuer = inv.number.as_deref().and_then(|n| n.rsplit_once('-')).map_or("", |(i, _)| i).to_owned();
    match db.account_name(inv.account_id).await {
        Ok(account) => (200, "text/html; charset=utf-8", export::invoice_html(&inv, &issuer, &account).into_bytes()),
        Err(e) => db_error(&e),
    }
}

#[derive(Debug, Serialize)]
struct CreatedWebhook {
    #[serde(flatten)]
    endpoint: catalogue::db::WebhookEndpoint,
    /// Verifies the `Shoal-Signature` of every delivery; shown this once.
    secret: String,
}

async fn create_webhook(db: &Db, who: &Caller, req: Request<'_>) -> Answer {
    let w: CreateWebhook = match required(req.body) {
        Ok(w) => w,
        Err(a) => return a,
    };
    match db.create_webhook(who.account_id, &w.url, req.now).await {
        Ok((endpoint, secret)) => {
            audited(db, who, req.now, "webhook.create", &endpoint.url, &format!("endpoint {}", endpoint.id)).await;
            json(201, &CreatedWebhook { endpoint, secret })
        }
        Err(e) => db_error(&e),
    }
}

async fn disable_webhook(db: &Db, who: &Caller, id: &str, now: i64) -> Answer {
    let Ok(id) = id.parse::<i64>() else {
        return error(400, "webhook id: a number");
    };
    match db.disable_webhook(who.account_id, id, now).await {
        Ok(w) => {
            audited(db, who, now, "webhook.disable", &w.url, &format!("endpoint {id}")).await;
            json(200, &w)
        }
        Err(e) => db_error(&e),
    }
}

/// Writes the audit entry of a change that has been made. A failure here is logged
/// and does not undo the change (the catalogue just took the change, so it is rare).
async fn audited(db: &Db, who: &Caller, now: i64, action: &str, subject: &str, detail: &str) {
    if let Err(e) = db.audit(now, Some(who.account_id), &who.actor(), action, subject, detail).await {
        tracing::error!(error = %e, action, subject, "audit entry not written");
    }
}

/// The account's channels as the API shows them.
async fn my_channels(db: &Db, who: &Caller, now: i64) -> Result<Vec<ChannelOut>, DbError> {
    Ok(db
        .channel_states(now)
        .await?
        .into_iter()
        .filter(|c| c.account_id == who.account_id)
        .map(|c| ChannelOut {
            name: c.name,
            channel_id: c.channel_id.to_hex(),
            info_hash: swarm::piece::encode_hex(&c.channel_id.info_hash()),
            carries_ads: c.carries_ads,
            refused: c.admission.err().map(|r| r.to_string()),
        })
        .collect())
}

async fn list_channels(db: &Db, who: &Caller, now: i64) -> Answer {
    match my_channels(db, who, now).await {
        Ok(mine) => json(200, &mine),
        Err(e) => db_error(&e),
    }
}

async fn create_channel(db: &Db, who: &Caller, req: Request<'_>) -> Answer {
    let c: CreateChannel = match required(req.body) {
        Ok(c) => c,
        Err(a) => return a,
    };
    let id = match c.channel_id() {
        Ok(id) => id,
        Err(e) => return error(400, e),
    };
    let stream_key = catalogue::secrets::generate_stream_key();
    match db.create_channel(who.account_id, &c.name, id, &stream_key, c.carries_ads, req.now).await {
        Ok(_) => {
            let detail = format!("public key {}, carries ads: {}", id.to_hex(), c.carries_ads);
            audited(db, who, req.now, "channel.create", &c.name, &detail).await;
            json(
                201,
                &CreatedChannel {
                    name: c.name,
                    channel_id: id.to_hex(),
                    info_hash: swarm::piece::encode_hex(&id.info_hash()),
                    stream_key,
                },
            )
        }
        Err(e) => db_error(&e),
    }
}

async fn set_status(db: &Db, who: &Caller, name: &str, enabled: bool, req: Request<'_>) -> Answer {
    let choice = match requests::parse_or_default::<Disable>(req.body) {
        Ok(d) => d.licences,
        Err(e) => return error(400, &e),
    };
    let result = async {
        let id = db.channel_of(who.account_id, name).await?;
        let detail =
            if enabled { String::new() } else { licences_on_leaving(db, who, name, choice, false, req.now).await? };
        db.set_channel_status(id, enabled).await?;
        Ok(detail)
    };
    match result.await {
        Ok(detail) => {
            let action = if enabled { "channel.enable" } else { "channel.disable" };
            audited(db, who, req.now, action, name, &detail).await;
            list_one(db, who, name, req.now).await
        }
        Err(e) => db_error(&e),
    }
}

/// `DELETE /v1/channels/{name}`: gone for good (its usage, licences and invoices stay;
/// its name and key stay taken). A licence running or to come must be ended with it
/// (`licences: end`); keeping one is refused.
async fn delete_channel(db: &Db, who: &Caller, name: &str, req: Request<'_>) -> Answer {
    let choice = match requests::parse_or_default::<Disable>(req.body) {
        Ok(d) => d.licences,
        Err(e) => return error(400, &e),
    };
    let result = async {
        let id = db.channel_of(who.account_id, name).await?;
        let detail = licences_on_leaving(db, who, name, choice, true, req.now).await?;
        db.delete_channel(id, req.now).await?;
        Ok(detail)
    };
    match result.await {
        Ok(detail) => {
            audited(db, who, req.now, "channel.delete", name, &detail).await;
            json(200, &serde_json::json!({ "name": name, "deleted_at": req.now }))
        }
        Err(e) => db_error(&e),
    }
}

/// What becomes of channel `name`'s licences running or to come as it is disabled or
/// (`deleting`) deleted: the caller's `choice` — required when there are some — ends
/// them now or (disabling only) keeps them. Returns the audit detail.
async fn licences_on_leaving(
    db: &Db,
    who: &Caller,
    name: &str,
    choice: Option<OnDisable>,
    deleting: bool,
    now: i64,
) -> Result<String, DbError> {
    let live: Vec<_> = db
        .licenses(who.account_id)
        .await?
        .into_iter()
        .filter(|l| l.channel == name && l.status == "active" && l.valid_until.is_none_or(|u| u > now))
        .collect();
    let ids: Vec<String> = live.iter().map(|l| l.id.to_string()).collect();
    match (choice, live.is_empty()) {
        (None, false) => {
            let keep = if deleting {
                String::new()
            } else {
                ", or {\"licences\": \"keep\"} to keep it (and pay for it) while the channel is off".to_owned()
            };
            Err(DbError::Invalid(format!(
                "channel {name} has licence {} running or to come: send {{\"licences\": \"end\"}} to end it now{keep}",
                ids.join(", ")
            )))
        }
        (Some(OnDisable::Keep), false) if deleting => Err(DbError::Invalid(format!(
            "channel {name} has licence {} running or to come: a deleted channel keeps none; send \
             {{\"licences\": \"end\"}} to end it with the channel",
            ids.join(", ")
        ))),
        (Some(OnDisable::End), false) => {
            for l in &live {
                db.end_license(who.account_id, l.id, now).await?;
            }
            Ok(format!("licences ended: {}", ids.join(", ")))
        }
        (Some(OnDisable::Keep), false) => Ok("licences kept".into()),
        _ => Ok(String::new()),
    }
}

/// The channel as `GET /v1/channels` shows it.
async fn list_one(db: &Db, who: &Caller, name: &str, now: i64) -> Answer {
    match my_channels(db, who, now).await {
        Ok(mine) => match mine.into_iter().find(|c| c.name == name) {
            Some(c) => json(200, &c),
            None => error(404, "no such channel"),
        },
        Err(e) => db_error(&e),
    }
}

async fn rotate(db: &Db, who: &Caller, name: &str, req: Request<'_>) -> Answer {
    let r: Rotate = match requests::parse_or_default(req.body) {
        Ok(r) => r,
        Err(e) => return error(400, &e),
    };
    let until = match r.previous_until(req.now) {
        Ok(until) => until,
        Err(e) => return error(400, &e),
    };
    let result = async {
        let id = db.channel_of(who.account_id, name).await?;
        db.rotate_stream_key(id, until).await
    };
    match result.await {
        Ok(stream_key) => {
            let detail = format!("previous key accepted for {} s", r.grace_seconds);
            audited(db, who, req.now, "channel.rotate_stream_key", name, &detail).await;
            json(200, &NewKey { name: name.to_owned(), stream_key, previous_key_valid_until: until })
        }
        Err(e) => db_error(&e),
    }
}

async fn add_license(db: &Db, who: &Caller, name: &str, req: Request<'_>) -> Answer {
    let l: AddLicense = match required(req.body) {
        Ok(l) => l,
        Err(a) => return a,
    };
    let (from, valid_until) = match l.period(req.now) {
        Ok(p) => p,
        Err(e) => return error(400, &e),
    };
    let result = async {
        let channel = db.channel_of(who.account_id, name).await?;
        let plan = db.plan_for(who.account_id, &l.plan).await?;
        let id = db.add_license(channel, plan.id, from, valid_until, req.now).await?;
        let all = db.licenses(who.account_id).await?;
        all.into_iter().find(|r| r.id == id).ok_or(DbError::NotFound("licence"))
    };
    match result.await {
        Ok(row) => {
            let until = row.valid_until.map_or_else(|| "open-ended".to_owned(), |u| u.to_string());
            let detail = format!("licence {} on plan {}, from {} until {until}", row.id, row.plan, row.valid_from);
            audited(db, who, req.now, "license.add", name, &detail).await;
            json(201, &row)
        }
        Err(e) => db_error(&e),
    }
}

async fn end_license(db: &Db, who: &Caller, id: &str, now: i64) -> Answer {
    let Ok(id) = id.parse::<i64>() else {
        return error(400, "licence id: a number");
    };
    match db.end_license(who.account_id, id, now).await {
        Ok(row) => {
            let detail = format!("licence {id}: {}, until {:?}", row.status, row.valid_until);
            audited(db, who, now, "license.end", &row.channel, &detail).await;
            json(200, &row)
        }
        Err(e) => db_error(&e),
    }
}

/// The OpenAPI document as served: [`OPENAPI`] with what every operation shares filled
/// in, so no answer the API gives goes undocumented — 401 and 503 on every operation
/// with a token, 400 where it takes parameters or a body, 404 where its path names
/// something; its path parameters declared; request bodies closed (unknown fields are
/// refused, as the API does).
pub fn openapi() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(OPENAPI) else {
            return OPENAPI.to_owned();
        };
        let error = serde_json::json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
        let mut closed = Vec::new();
        if let Some(paths) = doc.get_mut("paths").and_then(serde_json::Value::as_object_mut) {
            for (path, item) in paths.iter_mut() {
                let names: Vec<String> = path
                    .split('/')
                    .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')).map(str::to_owned))
                    .collect();
                let Some(ops) = item.as_object_mut() else { continue };
                for op in ops.values_mut() {
                    let secured = op.get("security").is_some();
                    let takes = op.get("parameters").is_some() || op.get("requestBody").is_some() || !names.is_empty();
                    if let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") {
                        closed.push(schema.get("$ref").and_then(|r| r.as_str()).map(str::to_owned));
                    }
                    if let Some(schema) = op.pointer_mut("/requestBody/content/application~1json/schema")
                        && schema.get("$ref").is_none()
                    {
                        schema["additionalProperties"] = false.into();
                    }
                    let params =
                        op.as_object_mut().map(|o| o.entry("parameters").or_insert_with(|| serde_json::json!([])));
                    if let Some(list) = params.and_then(serde_json::Value::as_array_mut) {
                        for name in &names {
                            if !list.iter().any(|p| p["name"] == name.as_str() && p["in"] == "path") {
                                let schema = if name == "id" {
                                    serde_json::json!({"type": "integer", "minimum": 1, "maximum": i64::MAX})
                                } else {
                                    serde_json::json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"})
                                };
                                list.push(
                                    serde_json::json!({"name": name, "in": "path", "required": true, "schema": schema}),
                                );
                            }
                        }
                    }
                    let Some(responses) = op.get_mut("responses").and_then(serde_json::Value::as_object_mut) else {
                        continue;
                    };
                    let mut add = |code: &str, description: &str| {
                        let r =
                            responses.entry(code).or_insert_with(|| serde_json::json!({"description": description}));
                        if code != "200" && code != "201" {
                            r["content"] = error.clone();
                        }
                    };
                    if secured {
                        add("401", "missing or unknown token");
                        add("503", "the catalogue is unavailable; try again");
                    }
                    if takes && secured {
                        add("400", "bad input: the error says which");
                    }
                    if !names.is_empty() && secured {
                        add("404", "no such thing of this account");
                    }
                }
            }
        }
        for name in closed.into_iter().flatten() {
            let pointer = name.trim_start_matches('#').replace('~', "~0");
            if let Some(schema) = doc.pointer_mut(&pointer) {
                schema["additionalProperties"] = false.into();
            }
        }
        serde_json::to_string(&doc).unwrap_or_else(|_| OPENAPI.to_owned())
    })
}

/// OpenAPI 3.1 description of the tracker's HTTP API (as written; served as [`openapi`]).
pub const OPENAPI: &str = r##"{
  "openapi": "3.1.0",
  "info": {"title": "Shoal tracker", "version": "0.2.0",
    "description": "BitTorrent announce and scrape for viewers and seeds; the admin API for an account's channels, stream keys, licences, usage and invoices. Admin errors are JSON {\"error\": \"...\"}: 400 bad input, 401 missing or unknown token, 403 another account's, 404 no such, 409 exists, 503 catalogue unavailable."},
  "components": {
    "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
    "schemas": {
      "Channel": {"type": "object", "properties": {"name": {"type": "string"}, "channel_id": {"type": "string", "description": "Ed25519 public key, hex"},
        "info_hash": {"type": "string", "description": "hex"}, "carries_ads": {"type": "boolean"},
        "refused": {"type": ["string", "null"], "description": "why it may not publish or be watched now"}}},
      "NewChannel": {"type": "object", "required": ["name", "public_key"], "properties": {"name": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
        "public_key": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$", "description": "the channel's Ed25519 public key, 64 hex characters (a point on the curve)"}, "carries_ads": {"type": "boolean", "default": false}}},
      "License": {"type": "object", "properties": {"id": {"type": "integer"}, "channel": {"type": "string"}, "plan": {"type": "string"},
        "plan_version": {"type": "integer"},
        "valid_from": {"type": "integer"}, "valid_until": {"type": ["integer", "null"]}, "status": {"enum": ["active", "revoked"]}}},
      "InvoiceLine": {"type": "object", "properties": {"kind": {"enum": ["licence", "overage", "adjustment", "credit"]},
        "channel": {"type": "string"}, "plan": {"type": "string"}, "description": {"type": "string"},
        "quantity": {"type": "integer"}, "unit_cents": {"type": "integer"}, "amount_cents": {"type": "integer", "description": "quantity × unit_cents"},
        "span_start": {"type": "integer"}, "span_end": {"type": "integer"}, "viewer_seconds": {"type": "integer"}, "included_seconds": {"type": "integer"},
        "adjusts_invoice": {"type": ["string", "null"], "description": "an adjustment's or credit's: the invoice whose line it adds to or cancels"}}},
      "Invoice": {"type": "object", "properties": {"number": {"type": ["string", "null"], "description": "gapless per issuer; null on a preview"},
        "kind": {"enum": ["invoice", "credit_note"]}, "account_id": {"type": "integer"}, "month": {"type": "string"},
        "period_start": {"type": "integer"}, "period_end": {"type": "integer"}, "currency": {"type": "string"}, "total_cents": {"type": "integer"},
        "status": {"enum": ["preview", "finalized", "void"]}, "issued_at": {"type": ["integer", "null"]}, "voided_at": {"type": ["integer", "null"]},
        "void_reason": {"type": ["string", "null"]}, "credits": {"type": ["string", "null"], "description": "a credit note's: the invoice it voids"},
        "lines": {"type": "array", "items": {"$ref": "#/components/schemas/InvoiceLine"}}}},
      "Error": {"type": "object", "properties": {"error": {"type": "string"}}}
    }
  },
  "paths": {
    "/announce": {"get": {"summary": "BitTorrent announce (BEP 3, 23, 7) plus role, token, reachable, slots, watched, ad_watched, watched_prev, ad_watched_prev; uploaded (seed bytes) and downloaded (viewers: set against their watching; seeds: the stream from ingest)",
      "responses": {"200": {"description": "bencoded peers"}, "400": {"description": "bencoded failure reason"},
                    "401": {"description": "seed without token"}, "403": {"description": "licence or seed token"},
                    "404": {"description": "unknown channel"}}}},
    "/scrape": {"get": {"summary": "BitTorrent scrape", "responses": {"200": {"description": "bencoded files"}, "400": {"description": "bencoded failure reason"}}}},
    "/v1/channels": {
      "get": {"summary": "The account's channels and whether each may publish", "security": [{"token": []}],
        "responses": {"200": {"description": "array of Channel"}, "401": {"description": "token"}}},
      "post": {"summary": "Create a channel; the answer holds its stream key, shown once", "security": [{"token": []}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewChannel"}}}},
        "responses": {"201": {"description": "name, channel_id, info_hash, stream_key"}, "400": {"description": "bad name or key"}, "409": {"description": "exists"}}}},
    "/v1/channels/{name}": {"delete": {"summary": "Delete the channel: no longer listed, watched, published or changed; its usage, licences and invoices stay, its name and key stay taken. A licence running or to come must be ended with it", "security": [{"token": []}],
      "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"licences": {"enum": ["end", "keep", null], "description": "end: end its licences now; keep is refused (a deleted channel keeps none); null: as if not given"}}}}}},
      "responses": {"200": {"description": "name, deleted_at"}, "400": {"description": "a licence runs and was not ended"}, "403": {"description": "another account's"}, "404": {"description": "no such channel"}}}},
    "/v1/channels/{name}/disable": {"post": {"summary": "Stop publishing and watching; with a licence running or to come, say whether it ends now or is kept (and billed)", "security": [{"token": []}],
      "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"licences": {"enum": ["end", "keep", null], "description": "null: as if not given"}}}}}},
      "responses": {"200": {"description": "Channel"}, "400": {"description": "a licence runs and no choice was given"}, "403": {"description": "another account's"}, "404": {"description": "no such channel"}}}},
    "/v1/channels/{name}/enable": {"post": {"summary": "Allow publishing and watching again", "security": [{"token": []}],
      "responses": {"200": {"description": "Channel"}, "403": {"description": "another account's"}, "404": {"description": "no such channel"}}}},
    "/v1/channels/{name}/stream-key": {"post": {"summary": "A new stream key (shown once); the previous one works for grace_seconds (default 0, at most 86400)",
      "security": [{"token": []}],
      "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"grace_seconds": {"type": "integer", "minimum": 0, "maximum": 86400}}}}}},
      "responses": {"200": {"description": "name, stream_key, previous_key_valid_until"}, "403": {"description": "another account's"}}}},
    "/v1/channels/{name}/licenses": {"post": {"summary": "License the channel on a plan this account may buy (billed pro rata), from now or at most an hour back; overlapping licences are refused (409)", "security": [{"token": []}],
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["plan"],
        "properties": {"plan": {"type": "string"}, "valid_from": {"type": "integer"}, "valid_until": {"type": "integer"}}}}}},
      "responses": {"201": {"description": "License"}, "400": {"description": "a plan the account may not buy, a bad or back-dated period"}, "409": {"description": "another licence covers part of the period"}}}},
    "/v1/licenses": {"get": {"summary": "The account's licences", "security": [{"token": []}], "responses": {"200": {"description": "array of License"}}}},
    "/v1/licenses/{id}/end": {"post": {"summary": "End a licence now (one not started yet is revoked)", "security": [{"token": []}],
      "responses": {"200": {"description": "License"}, "403": {"description": "another account's"}, "404": {"description": "no such licence"}}}},
    "/v1/plans": {"get": {"summary": "The plans this account may buy, each at its current price version (running licences keep the version they were sold on)",
      "security": [{"token": []}], "responses": {"200": {"description": "array of {id, version, name, commercial, offered, currency, monthly_price_cents, included_viewer_hours, overage_cents_per_viewer_hour}"}}}},
    "/v1/usage": {"get": {"summary": "Hourly usage per channel in [from, to), JSON or CSV", "security": [{"token": []}],
      "parameters": [{"name": "from", "in": "query", "required": true, "schema": {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807}},
                     {"name": "to", "in": "query", "required": true, "schema": {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807, "description": "not after from: an empty period"}},
                     {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}}],
      "responses": {"200": {"description": "JSON array or CSV"}, "400": {"description": "bad period"}, "401": {"description": "token"}}}},
    "/v1/usage/summary": {"get": {"summary": "Usage per channel over [from, to), or per UTC day of it (by=day): sums, highest hourly peak, unique viewers over each (HyperLogLog, about 1.6 % error)",
      "security": [{"token": []}],
      "parameters": [{"name": "from", "in": "query", "required": true, "schema": {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807}},
                     {"name": "to", "in": "query", "required": true, "schema": {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807, "description": "not after from: an empty period"}},
                     {"name": "by", "in": "query", "schema": {"enum": ["period", "day"]}},
                     {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}}],
      "responses": {"200": {"description": "JSON array or CSV"}, "400": {"description": "bad period or by"}}}},
    "/v1/invoices": {"get": {"summary": "The account's issued invoices and credit notes, oldest first", "security": [{"token": []}],
      "parameters": [{"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}}],
      "responses": {"200": {"description": "array of Invoice, or CSV"}, "401": {"description": "token"}}}},
    "/v1/invoices/preview": {"get": {"summary": "What finalizing the calendar month would issue: one invoice per currency, no number; writes nothing",
      "security": [{"token": []}],
      "parameters": [{"name": "month", "in": "query", "required": true, "schema": {"type": "string", "pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$"}},
                     {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}}],
      "responses": {"200": {"description": "array of Invoice, or CSV"}, "400": {"description": "bad month"}, "401": {"description": "token"}}}},
    "/v1/invoices/{number}": {"get": {"summary": "One issued invoice or credit note: JSON, CSV, or a printable HTML page", "security": [{"token": []}],
      "parameters": [{"name": "number", "in": "path", "required": true, "schema": {"type": "string"}},
                     {"name": "format", "in": "query", "schema": {"enum": ["json", "csv", "html"]}}],
      "responses": {"200": {"description": "array of one Invoice, or CSV"}, "401": {"description": "token"}, "404": {"description": "no such invoice of this account"}}}},
    "/v1/usage/anomalies": {"get": {"summary": "The account's latest 200 usage anomalies, newest first (the usage.anomaly events, once per channel, kind and hour: ids_over_cap, unbacked_hours)",
      "security": [{"token": []}], "responses": {"200": {"description": "array of {id, type, created, data}"}, "401": {"description": "token"}}}},
    "/v1/webhooks": {
      "get": {"summary": "The account's webhook endpoints", "security": [{"token": []}],
        "responses": {"200": {"description": "array of {id, url, created_at, disabled_at}"}, "401": {"description": "token"}}},
      "post": {"summary": "A new endpoint; the answer holds its signing secret, shown once. Deliveries are POSTs of {id, type, created, data} with Shoal-Event-Id, Shoal-Event-Type and Shoal-Signature: t=UNIX,v1=HMAC-SHA256(secret, t + '.' + body) in hex; retried with backoff for about three days; receivers deduplicate by the event id",
        "security": [{"token": []}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string", "maxLength": 2048, "pattern": "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%?&=+-]*)?$", "description": "https://… (http:// allowed)"}}}}}},
        "responses": {"201": {"description": "{id, url, created_at, disabled_at, secret}"}, "400": {"description": "bad url"}, "409": {"description": "too many endpoints"}}}},
    "/v1/webhooks/{id}/disable": {"post": {"summary": "Stop sending to an endpoint (its pending deliveries are given up)", "security": [{"token": []}],
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1, "maximum": 9223372036854775807}}],
      "responses": {"200": {"description": "the endpoint"}, "400": {"description": "id not a number"}, "404": {"description": "no such endpoint of this account"}}}},
    "/v1/webhooks/deliveries": {"get": {"summary": "The latest 200 deliveries, newest first: event, endpoint, status (pending, delivered, failed), attempts, last answer or error",
      "security": [{"token": []}], "responses": {"200": {"description": "array"}, "401": {"description": "token"}}}},
    "/v1/audit": {"get": {"summary": "The account's latest 200 audit entries, newest first", "security": [{"token": []}],
      "responses": {"200": {"description": "array of {at, actor, action, subject, detail}"}}}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}},
    "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}}
  }
}"##;
