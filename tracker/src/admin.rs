//! The admin API (first part: reading): an account's channels, hourly usage and
//! invoices, behind a bearer token scoped to that account — an account never sees
//! another's data. `GET /v1/openapi.json` describes it.
//!
//! - `GET /v1/channels` — the account's channels and whether each may publish/be watched.
//! - `GET /v1/usage?from=UNIX&to=UNIX` — hourly usage per channel in `[from, to)`.
//! - `GET /v1/invoices?from=UNIX&to=UNIX[&format=csv]` — the invoice for the period.

use serde::Serialize;

use crate::db::{Db, DbError};

/// An answer: status, content type, body.
pub type Answer = (u16, &'static str, Vec<u8>);

#[derive(Debug, Serialize)]
struct ChannelOut {
    name: String,
    channel_id: String,
    info_hash: String,
    /// `null` when it may publish and be watched, else why not.
    refused: Option<String>,
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

/// The account a request's bearer token belongs to, or the answer refusing it.
async fn account(db: &Db, authorization: Option<&str>) -> Result<i64, Answer> {
    let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(error(401, "send Authorization: Bearer <API token>"));
    };
    match db.account_for_token(token.trim()).await {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(error(401, "API token not accepted")),
        Err(e) => Err(db_error(&e)),
    }
}

fn db_error(e: &DbError) -> Answer {
    tracing::warn!(error = %e, "admin API: catalogue error");
    error(503, "the catalogue is unavailable; try again")
}

fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')).map(str::to_owned))
}

fn period(query: &str) -> Result<(i64, i64), Answer> {
    let get = |n: &str| param(query, n).and_then(|v| v.parse::<i64>().ok());
    match (get("from"), get("to")) {
        (Some(f), Some(t)) if t > f => Ok((f, t)),
        _ => Err(error(400, "from and to: Unix seconds, to after from")),
    }
}

/// Answers `GET path?query` for the admin API; `None` if the path isn't one of its.
pub async fn route(db: &Db, path: &str, query: &str, authorization: Option<&str>, now: i64) -> Option<Answer> {
    if path == "/v1/openapi.json" {
        return Some((200, "application/json", OPENAPI.as_bytes().to_vec()));
    }
    if !matches!(path, "/v1/channels" | "/v1/usage" | "/v1/invoices") {
        return None;
    }
    let acct = match account(db, authorization).await {
        Ok(a) => a,
        Err(answer) => return Some(answer),
    };
    Some(match path {
        "/v1/channels" => match db.channel_states(now).await {
            Ok(all) => {
                let mine: Vec<ChannelOut> = all
                    .into_iter()
                    .filter(|c| c.account_id == acct)
                    .map(|c| ChannelOut {
                        name: c.name,
                        channel_id: c.channel_id.to_hex(),
                        info_hash: swarm::piece::encode_hex(&c.channel_id.info_hash()),
                        refused: c.admission.err().map(|r| r.to_string()),
                    })
                    .collect();
                json(200, &mine)
            }
            Err(e) => db_error(&e),
        },
        "/v1/usage" => match period(query) {
            Err(a) => a,
            Ok((from, to)) => match db.hourly_usage(acct, from, to).await {
                Ok(u) => json(200, &u),
                Err(e) => db_error(&e),
            },
        },
        _ => match period(query) {
            Err(a) => a,
            Ok((from, to)) => match db.invoice(acct, from, to, now).await {
                Ok(inv) if param(query, "format").as_deref() == Some("csv") => {
                    (200, "text/csv; charset=utf-8", inv.to_csv().into_bytes())
                }
                Ok(inv) => json(200, &inv),
                Err(DbError::Invalid(m)) => error(400, &m),
                Err(e) => db_error(&e),
            },
        },
    })
}

/// OpenAPI 3.1 description of the tracker's HTTP API.
pub const OPENAPI: &str = r#"{
  "openapi": "3.1.0",
  "info": {"title": "Shoal tracker", "version": "0.1.0"},
  "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
  "paths": {
    "/announce": {"get": {"summary": "BitTorrent announce (BEP 3, 23, 7) plus role, token, reachable, slots, watched",
      "responses": {"200": {"description": "bencoded peers"}, "400": {"description": "bencoded failure reason"},
                    "401": {"description": "seed without token"}, "403": {"description": "licence or seed token"},
                    "404": {"description": "unknown channel"}}}},
    "/scrape": {"get": {"summary": "BitTorrent scrape", "responses": {"200": {"description": "bencoded files"}}}},
    "/v1/channels": {"get": {"summary": "The account's channels and whether each may publish", "security": [{"token": []}],
      "responses": {"200": {"description": "JSON array"}, "401": {"description": "missing or unknown token"}}}},
    "/v1/usage": {"get": {"summary": "Hourly usage per channel in [from, to)", "security": [{"token": []}],
      "parameters": [{"name": "from", "in": "query", "required": true, "schema": {"type": "integer"}},
                     {"name": "to", "in": "query", "required": true, "schema": {"type": "integer"}}],
      "responses": {"200": {"description": "JSON array"}, "400": {"description": "bad period"}, "401": {"description": "token"}}}},
    "/v1/invoices": {"get": {"summary": "The invoice for [from, to), JSON or CSV", "security": [{"token": []}],
      "parameters": [{"name": "from", "in": "query", "required": true, "schema": {"type": "integer"}},
                     {"name": "to", "in": "query", "required": true, "schema": {"type": "integer"}},
                     {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}}],
      "responses": {"200": {"description": "invoice"}, "400": {"description": "bad period"}, "401": {"description": "token"}}}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}},
    "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}}
  }
}"#;
