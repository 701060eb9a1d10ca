-- Shoal tracker catalogue, SQLite dialect (the embedded default). Keep in step with
-- ../postgres/0001_catalogue.sql: same tables, columns and constraints.
-- Times are Unix seconds (BIGINT); money is integer cents; flags are 0/1 integers.

CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- API tokens: only SHA-256 (hex) is stored; the token is shown once.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    account_id    BIGINT NOT NULL REFERENCES accounts(id),
    token_sha256  TEXT NOT NULL UNIQUE,
    label         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);

CREATE TABLE plans (
    id                         INTEGER PRIMARY KEY,
    name                       TEXT NOT NULL UNIQUE,
    commercial                 INTEGER NOT NULL CHECK (commercial IN (0, 1)),
    currency                   TEXT NOT NULL,
    monthly_price_cents        BIGINT NOT NULL CHECK (monthly_price_cents >= 0),
    included_viewer_hours      BIGINT NOT NULL CHECK (included_viewer_hours >= 0),
    overage_cents_per_viewer_hour BIGINT NOT NULL CHECK (overage_cents_per_viewer_hour >= 0)
);

-- The private signing key is never here: it lives on ingest nodes only.
CREATE TABLE channels (
    id                     INTEGER PRIMARY KEY,
    account_id             BIGINT NOT NULL REFERENCES accounts(id),
    name                   TEXT NOT NULL UNIQUE,
    public_key             TEXT NOT NULL UNIQUE,
    info_hash              TEXT NOT NULL UNIQUE,
    stream_key_sha256      TEXT NOT NULL,
    prev_stream_key_sha256 TEXT,
    carries_ads            INTEGER NOT NULL CHECK (carries_ads IN (0, 1)),
    status                 TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
    created_at             BIGINT NOT NULL
);
CREATE INDEX channels_account ON channels (account_id);

CREATE TABLE licenses (
    id           INTEGER PRIMARY KEY,
    channel_id   BIGINT NOT NULL REFERENCES channels(id),
    plan_id      BIGINT NOT NULL REFERENCES plans(id),
    valid_from   BIGINT NOT NULL,
    valid_until  BIGINT,
    status       TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at   BIGINT NOT NULL,
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
CREATE INDEX licenses_channel ON licenses (channel_id);

-- One row per (node, channel, window) flush; the key makes a retried flush a no-op.
CREATE TABLE usage_events (
    idempotency_key    TEXT PRIMARY KEY,
    channel_id         BIGINT NOT NULL REFERENCES channels(id),
    hour_start         BIGINT NOT NULL CHECK (hour_start % 3600 = 0),
    viewer_seconds     BIGINT NOT NULL CHECK (viewer_seconds >= 0),
    ad_viewer_seconds  BIGINT NOT NULL CHECK (ad_viewer_seconds >= 0),
    seed_bytes         BIGINT NOT NULL CHECK (seed_bytes >= 0),
    peak_viewers       BIGINT NOT NULL CHECK (peak_viewers >= 0),
    recorded_at        BIGINT NOT NULL
);
CREATE INDEX usage_events_hour ON usage_events (hour_start, channel_id);

CREATE TABLE usage_hourly (
    channel_id         BIGINT NOT NULL REFERENCES channels(id),
    hour_start         BIGINT NOT NULL,
    viewer_seconds     BIGINT NOT NULL,
    ad_viewer_seconds  BIGINT NOT NULL,
    seed_bytes         BIGINT NOT NULL,
    peak_viewers       BIGINT NOT NULL,
    unique_viewers     BIGINT NOT NULL,
    PRIMARY KEY (channel_id, hour_start)
);

CREATE TABLE invoices (
    id            INTEGER PRIMARY KEY,
    account_id    BIGINT NOT NULL REFERENCES accounts(id),
    period_start  BIGINT NOT NULL,
    period_end    BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    total_cents   BIGINT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('draft', 'issued', 'void')),
    created_at    BIGINT NOT NULL,
    UNIQUE (account_id, period_start, period_end)
);

CREATE TABLE invoice_lines (
    id            INTEGER PRIMARY KEY,
    invoice_id    BIGINT NOT NULL REFERENCES invoices(id),
    channel_id    BIGINT REFERENCES channels(id),
    description   TEXT NOT NULL,
    quantity      BIGINT NOT NULL,
    unit_cents    BIGINT NOT NULL,
    amount_cents  BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          BIGINT NOT NULL,
    account_id  BIGINT,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
