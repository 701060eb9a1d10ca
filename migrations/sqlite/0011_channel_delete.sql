-- Deleting a channel (issue 22): the row stays, because its usage, licences and invoices
-- point at it, but it is gone for everything else — not listed, not admitted (announces
-- and publishes are answered as for an unknown channel), not changeable; its name and
-- public key stay taken. Deleting needs the channel's running licences ended first
-- (the admin API's `licences: end`), so nothing bills for a channel that is gone.
-- Keep in step with ../postgres/0011_channel_delete.sql.
ALTER TABLE channels ADD COLUMN deleted_at INTEGER;
