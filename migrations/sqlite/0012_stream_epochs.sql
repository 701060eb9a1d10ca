-- Stream epochs (issue 21): how ingest nodes agree on a channel's numbering. An epoch
-- binds a feed's timeline to sequence numbers and wall time (feed timestamp raw0 is
-- relative time 0, sequence number seq0 and wall time wall0_us; pieces are cut on a
-- grid of piece_ms). Every node reading the same feed places its frames on the same
-- epoch and cuts the same pieces. The first node to propose a number for a channel
-- wins (INSERT ... ON CONFLICT DO NOTHING); the others read it back. Nodes cutting an
-- epoch say so twice a second (cut_at_us, only forward): one that joins knows whether
-- it is alone. Keyed by channel name: names stay taken after a channel is deleted.
-- Keep in step with ../postgres/0012_stream_epochs.sql.
CREATE TABLE stream_epochs (
    channel TEXT NOT NULL,
    number BIGINT NOT NULL,
    clock TEXT NOT NULL CHECK (clock IN ('rtmp', 'mpegts')),
    raw0 BIGINT NOT NULL,
    seq0 BIGINT NOT NULL,
    wall0_us BIGINT NOT NULL,
    piece_ms BIGINT NOT NULL CHECK (piece_ms > 0),
    cut_at_us BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (channel, number)
);
