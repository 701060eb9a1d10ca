-- Seed bytes that hold across replicas and restarts (issue 22): per seed (its peer id
-- is new each run) and hour, the lowest and highest `uploaded` counter any replica saw,
-- merged (lowest low, highest high); the roll-up bills the high less the seed's latest
-- earlier high (or less the low in its first hour). Replaces the per-node seed_marks,
-- which credited each replica's own view of the counter (two replicas behind a
-- round-robin billed a seed's bytes about twice).
-- Keep in step with ../postgres/0009_seed_hour_marks.sql.
CREATE TABLE seed_hour_marks (
    info_hash   TEXT NOT NULL,
    peer_key    TEXT NOT NULL,
    hour_start  INTEGER NOT NULL CHECK (hour_start % 3600 = 0),
    low         INTEGER NOT NULL CHECK (low >= 0),
    high        INTEGER NOT NULL CHECK (high >= low),
    PRIMARY KEY (info_hash, peer_key, hour_start)
);
CREATE INDEX seed_hour_marks_hour ON seed_hour_marks (hour_start, info_hash);
DROP TABLE seed_marks;
