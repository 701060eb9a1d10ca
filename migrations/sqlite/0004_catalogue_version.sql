-- One counter that every change to what decides publishing and watching bumps
-- (channels: keys, status, ads; licences; plans), whoever makes it: the admin API, a
-- script, an operator at the SQL prompt. Ingest nodes and trackers read this one row
-- twice a second and re-read the catalogue when it moved, so a rotated key, a
-- disabled channel or an ended licence reaches every live session within a second.
-- Keep in step with ../postgres/0004_catalogue_version.sql.

CREATE TABLE catalogue_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  BIGINT NOT NULL
);
INSERT INTO catalogue_version (id, version) VALUES (1, 0);

CREATE TRIGGER channels_inserted AFTER INSERT ON channels
BEGIN UPDATE catalogue_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER channels_updated AFTER UPDATE ON channels
BEGIN UPDATE catalogue_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER channels_deleted AFTER DELETE ON channels
BEGIN UPDATE catalogue_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER licenses_inserted AFTER INSERT ON licenses
BEGIN UPDATE catalogue_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER licenses_updated AFTER UPDATE ON licenses
BEGIN UPDATE catalogue_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER licenses_deleted AFTER DELETE ON licenses
BEGIN UPDATE catalogue_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER plans_inserted AFTER INSERT ON plans
BEGIN UPDATE catalogue_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER plans_updated AFTER UPDATE ON plans
BEGIN UPDATE catalogue_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER plans_deleted AFTER DELETE ON plans
BEGIN UPDATE catalogue_version SET version = version + 1 WHERE id = 1; END;
