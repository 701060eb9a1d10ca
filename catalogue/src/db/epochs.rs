//! Stream epochs: where ingest nodes agree on a channel's numbering (the rules are
//! ingest's, `ingest::media::epoch`; this is the shared table). The first proposal of a
//! number for a channel is kept; every node reads back the one kept.

use sqlx::Row;

use super::{Db, Result};

/// One epoch as stored (numbers as the database holds them; ingest converts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEpoch {
    pub number: i64,
    /// `rtmp` or `mpegts`.
    pub clock: String,
    pub raw0: i64,
    pub seq0: i64,
    pub wall0_us: i64,
    pub piece_ms: i64,
    /// When a node last said it was cutting it, µs (0: never).
    pub cut_at_us: i64,
}

const COLUMNS: &str = "number, clock, raw0, seq0, wall0_us, piece_ms, cut_at_us";

fn row(r: &sqlx::any::AnyRow) -> Result<StreamEpoch> {
    Ok(StreamEpoch {
        number: r.try_get(0)?,
        clock: r.try_get(1)?,
        raw0: r.try_get(2)?,
        seq0: r.try_get(3)?,
        wall0_us: r.try_get(4)?,
        piece_ms: r.try_get(5)?,
        cut_at_us: r.try_get(6)?,
    })
}

impl Db {
    /// The channel's newest epoch.
    pub async fn latest_stream_epoch(&self, channel: &str) -> Result<Option<StreamEpoch>> {
        let sql = format!("SELECT {COLUMNS} FROM stream_epochs WHERE channel = $1 ORDER BY number DESC LIMIT 1");
        let r = sqlx::query(&sql).bind(channel).fetch_optional(&self.pool).await?;
        r.as_ref().map(row).transpose()
    }

    /// Stores `epoch` unless the channel has one with its number; returns the one stored
    /// under that number (`epoch`, or another node's that came first).
    pub async fn propose_stream_epoch(&self, channel: &str, epoch: &StreamEpoch, now: i64) -> Result<StreamEpoch> {
        sqlx::query(
            "INSERT INTO stream_epochs (channel, number, clock, raw0, seq0, wall0_us, piece_ms, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (channel, number) DO NOTHING",
        )
        .bind(channel)
        .bind(epoch.number)
        .bind(&epoch.clock)
        .bind(epoch.raw0)
        .bind(epoch.seq0)
        .bind(epoch.wall0_us)
        .bind(epoch.piece_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let sql = format!("SELECT {COLUMNS} FROM stream_epochs WHERE channel = $1 AND number = $2");
        row(&sqlx::query(&sql).bind(channel).bind(epoch.number).fetch_one(&self.pool).await?)
    }

    /// A node cuts the channel's epoch `number` at `at_us` (the time only moves forward).
    pub async fn touch_stream_epoch(&self, channel: &str, number: i64, at_us: i64) -> Result<()> {
        sqlx::query("UPDATE stream_epochs SET cut_at_us = $3 WHERE channel = $1 AND number = $2 AND cut_at_us < $3")
            .bind(channel)
            .bind(number)
            .bind(at_us)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
