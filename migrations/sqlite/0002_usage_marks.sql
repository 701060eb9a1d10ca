-- Metering marks: per tracker node, channel, hour and viewer, the viewer's `watched`
-- counter already credited. Written with each usage flush (same transaction), read
-- back after a restart so the next announces credit only what is new.
CREATE TABLE usage_marks (
    node        TEXT NOT NULL,
    info_hash   TEXT NOT NULL,
    hour_start  BIGINT NOT NULL,
    peer_key    TEXT NOT NULL,
    credited    BIGINT NOT NULL CHECK (credited >= 0),
    PRIMARY KEY (node, info_hash, hour_start, peer_key)
);
