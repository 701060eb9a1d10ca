-- Webhooks (issue 22): an account's endpoints, the events it is told of (written in
-- the transaction of the change they report, so none is lost or invented), and one
-- delivery per event and endpoint, retried with backoff until delivered or given up.
-- Keep in step with ../postgres/0007_webhooks.sql.
CREATE TABLE webhook_endpoints (
    id           INTEGER PRIMARY KEY,
    account_id   INTEGER NOT NULL REFERENCES accounts(id),
    url          TEXT NOT NULL,
    -- Signs every delivery (HMAC-SHA256); shown to the account once.
    secret       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    disabled_at  INTEGER
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id);

CREATE TABLE webhook_events (
    id           INTEGER PRIMARY KEY,
    -- evt_…: the id receivers deduplicate by (sent in every attempt).
    public_id    TEXT NOT NULL UNIQUE,
    -- What makes the event happen once: e.g. invoice.finalized:SHOAL-000001.
    event_key    TEXT NOT NULL UNIQUE,
    account_id   INTEGER NOT NULL REFERENCES accounts(id),
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY,
    event_id         INTEGER NOT NULL REFERENCES webhook_events(id),
    endpoint_id      INTEGER NOT NULL REFERENCES webhook_endpoints(id),
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  INTEGER NOT NULL,
    last_status      INTEGER,
    last_error       TEXT,
    delivered_at     INTEGER,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
