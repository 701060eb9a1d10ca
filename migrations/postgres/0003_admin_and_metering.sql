-- Stream-key rotation: the previous key keeps working until this time (Unix seconds),
-- so an encoder can be switched over without a gap; NULL: the previous key is dead.
ALTER TABLE channels ADD COLUMN prev_stream_key_until BIGINT;

-- The admin API lists an account's audit entries, newest first.
CREATE INDEX audit_log_account ON audit_log (account_id, id);

-- Metering of ad breaks: a viewer's ad_watched counter already credited, beside watched.
ALTER TABLE usage_marks ADD COLUMN ad_credited BIGINT NOT NULL DEFAULT 0 CHECK (ad_credited >= 0);

-- Seeds' uploaded counters already credited as seed bytes, per tracker node (the
-- counters run across hours, so no hour here); read back after a restart.
CREATE TABLE seed_marks (
    node        TEXT NOT NULL,
    info_hash   TEXT NOT NULL,
    peer_key    TEXT NOT NULL,
    uploaded    BIGINT NOT NULL CHECK (uploaded >= 0),
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (node, info_hash, peer_key)
);

-- Unique viewers of an hour as a HyperLogLog sketch, so that any period's unique
-- viewers is the union (merge) of its hours' sketches.
ALTER TABLE usage_hourly ADD COLUMN unique_sketch BYTEA;

-- The hourly roll-up counts an hour's viewers from its marks.
CREATE INDEX usage_marks_hour ON usage_marks (hour_start, info_hash);
