-- Stream-key rotation: the previous key keeps working until this time (Unix seconds),
-- so an encoder can be switched over without a gap; NULL: the previous key is dead.
ALTER TABLE channels ADD COLUMN prev_stream_key_until BIGINT;

-- The admin API lists an account's audit entries, newest first.
CREATE INDEX audit_log_account ON audit_log (account_id, id);
