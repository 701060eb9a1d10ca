-- One counter that every change to what decides publishing and watching bumps
-- (channels: keys, status, ads; licences; plans), whoever makes it: the admin API, a
-- script, an operator at the SQL prompt. Ingest nodes and trackers read this one row
-- twice a second and re-read the catalogue when it moved, so a rotated key, a
-- disabled channel or an ended licence reaches every live session within a second.
-- Keep in step with ../sqlite/0004_catalogue_version.sql.

CREATE TABLE catalogue_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  BIGINT NOT NULL
);
INSERT INTO catalogue_version (id, version) VALUES (1, 0);

CREATE FUNCTION bump_catalogue_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalogue_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER channels_changed AFTER INSERT OR UPDATE OR DELETE ON channels
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalogue_version();
CREATE TRIGGER licenses_changed AFTER INSERT OR UPDATE OR DELETE ON licenses
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalogue_version();
CREATE TRIGGER plans_changed AFTER INSERT OR UPDATE OR DELETE ON plans
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalogue_version();
