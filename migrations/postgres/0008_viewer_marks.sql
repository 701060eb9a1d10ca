-- Metering that holds across replicas and restarts (issue 22): what the trackers saw of
-- each viewer in each hour, merged from every replica and flush (earliest first
-- sighting, latest last one, highest counters); the roll-up bills each viewer from
-- its mark (catalogue::usage::Mark::billed). Replaces the per-node usage_marks, which
-- only let one node resume its own credits. usage_events.viewer_seconds stays the
-- writing node's own per-announce credit (diagnostics; the bill comes from here).
-- Keep in step with ../sqlite/0008_viewer_marks.sql.
CREATE TABLE viewer_marks (
    info_hash      TEXT NOT NULL,
    hour_start     BIGINT NOT NULL CHECK (hour_start % 3600 = 0),
    peer_key       TEXT NOT NULL,
    first_seen     BIGINT NOT NULL,
    first_watched  BIGINT NOT NULL CHECK (first_watched >= 0),
    first_ad       BIGINT NOT NULL CHECK (first_ad >= 0),
    last_seen      BIGINT NOT NULL,
    watched        BIGINT NOT NULL CHECK (watched >= 0),
    ad             BIGINT NOT NULL CHECK (ad >= 0),
    PRIMARY KEY (info_hash, hour_start, peer_key)
);
CREATE INDEX viewer_marks_hour ON viewer_marks (hour_start, info_hash);
DROP TABLE usage_marks;
