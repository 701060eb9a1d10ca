-- Viewer-hours backed by bytes (issue 22): what each viewer took in during the hour
-- (its `downloaded` counter at its first announce seen in the hour, and the highest),
-- and each seed's view of the stream (its `downloaded` counter, from ingest, at its
-- first and latest announce seen in the hour, with their times: the stream's rate).
-- The roll-up flags a channel-hour whose viewers' bytes could not have played half its
-- billed viewer-seconds at that rate (catalogue::usage::unbacked). Rows written before
-- this migration read 0: no bytes, no rate, so nothing is judged on them.
-- Keep in step with ../sqlite/0010_marks_bytes.sql.
ALTER TABLE viewer_marks ADD COLUMN first_down BIGINT NOT NULL DEFAULT 0 CHECK (first_down >= 0);
ALTER TABLE viewer_marks ADD COLUMN down BIGINT NOT NULL DEFAULT 0 CHECK (down >= 0);
ALTER TABLE seed_hour_marks ADD COLUMN first_seen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE seed_hour_marks ADD COLUMN last_seen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE seed_hour_marks ADD COLUMN down_low BIGINT NOT NULL DEFAULT 0 CHECK (down_low >= 0);
ALTER TABLE seed_hour_marks ADD COLUMN down_high BIGINT NOT NULL DEFAULT 0 CHECK (down_high >= 0);
