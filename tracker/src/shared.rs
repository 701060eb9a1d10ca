//! Swarm membership shared by tracker replicas through Redis, so a viewer announcing to
//! one replica is listed to viewers announcing to another.
//!
//! Per channel (info-hash in hex, under a key prefix): a hash of its viewers and one of
//! its seeds (8-byte peer key → 20-byte record: IPv6 or IPv4-mapped address, port,
//! flags, free slots), and a sorted set of when each peer last announced (Unix
//! seconds: replicas share a clock, not a process start). A sorted set of channels by
//! last announce lets any replica sweep: peers silent past the timeout are removed,
//! channels silent that long are forgotten (Redis drops a key once it is empty). Every
//! operation is idempotent, so replicas sweeping at once do no harm.
//!
//! An announce is one pipelined round trip: write the peer, sample the channel's
//! viewers (`HRANDFIELD`, a random window like the memory store's) and seeds, count
//! both. Peer choice then ranks the sample exactly as the memory store does.
//!
//! Metering needs no Redis: every announce also goes through the replica's memory
//! store, which notes what it saw of each viewer (its marks); marks from every replica
//! merge in the catalogue, and the bill is computed from them (`catalogue::usage::Mark`),
//! so it doesn't matter which replica answered which announce. If
//! Redis fails or is slow (a timeout), the replica answers from its own memory store,
//! with the peers that announced to it, and counts the error.

use std::net::IpAddr;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::announce::{Announce, Event, Role};
use crate::store::{AnnounceReply, Candidate, PeerOut, REACHABLE, SEED, StoreConfig, SweepStats, peer_key, peer_list};

/// Longest a Redis round trip may take before the replica answers from memory.
pub const TIMEOUT: Duration = Duration::from_millis(250);

/// Bytes of a peer's record in Redis.
const RECORD: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {} ms", TIMEOUT.as_millis())]
    Timeout,
}

/// The shared swarm store.
#[derive(Clone)]
pub struct SharedSwarms {
    conn: ConnectionManager,
    prefix: String,
    cfg: StoreConfig,
}

impl std::fmt::Debug for SharedSwarms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSwarms").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl SharedSwarms {
    /// Connects (`redis://HOST:PORT[/DB]`); keys start with `prefix:` (replicas of one
    /// tracker share a prefix; tests use their own).
    pub async fn connect(url: &str, prefix: &str, cfg: StoreConfig) -> Result<Self, SharedError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(SharedSwarms { conn, prefix: prefix.to_owned(), cfg })
    }

    fn key(&self, info_hash: &[u8; 20], part: &str) -> String {
        format!("{}:{}:{part}", self.prefix, swarm::piece::encode_hex(info_hash))
    }

    fn channels_key(&self) -> String {
        format!("{}:channels", self.prefix)
    }

    async fn query<T: redis::FromRedisValue>(&self, p: &redis::Pipeline) -> Result<T, SharedError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(TIMEOUT, p.query_async::<T>(&mut conn)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(SharedError::Timeout),
        }
    }

    /// Records the announce and chooses the peers to give back, from every replica's
    /// peers. The caller has checked the channel and, for a seed, its token.
    pub async fn announce(&self, a: &Announce, ip: IpAddr, unix: u64) -> Result<AnnounceReply, SharedError> {
        let key = peer_key(&a.peer_id);
        let (viewers_key, seeds_key, seen_key) =
            (self.key(&a.info_hash, "v"), self.key(&a.info_hash, "s"), self.key(&a.info_hash, "seen"));
        let mut p = redis::pipe();
        if a.event == Event::Stopped {
            p.cmd("HDEL").arg(&viewers_key).arg(&key[..]).ignore();
            p.cmd("HDEL").arg(&seeds_key).arg(&key[..]).ignore();
            p.cmd("ZREM").arg(&seen_key).arg(&key[..]).ignore();
            p.cmd("HLEN").arg(&seeds_key).cmd("HLEN").arg(&viewers_key);
            let (seeds, viewers): (u32, u32) = self.query(&p).await?;
            return Ok(AnnounceReply { seeds, viewers, peers: Vec::new(), over_cap: None });
        }
        let ip16 = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let flags = if a.role == Role::Seed { SEED } else { 0 } | if a.reachable { REACHABLE } else { 0 };
        let mut rec = [0u8; RECORD];
        rec[..16].copy_from_slice(&ip16);
        rec[16..18].copy_from_slice(&a.port.to_be_bytes());
        rec[18] = flags;
        rec[19] = a.free_slots;
        let (mine, other) = if a.role == Role::Seed { (&seeds_key, &viewers_key) } else { (&viewers_key, &seeds_key) };
        let want = a.numwant.min(self.cfg.max_numwant) as usize;
        let sample = (want * 4).max(64);
        let seeds_wanted = if a.role == Role::Viewer { self.cfg.seeds_per_list as usize + 1 } else { 0 };
        p.cmd("HSET").arg(mine).arg(&key[..]).arg(&rec[..]).ignore();
        p.cmd("HDEL").arg(other).arg(&key[..]).ignore();
        p.cmd("ZADD").arg(&seen_key).arg(unix).arg(&key[..]).ignore();
        p.cmd("ZADD").arg(self.channels_key()).arg(unix).arg(&a.info_hash[..]).ignore();
        p.cmd("HRANDFIELD").arg(&viewers_key).arg(sample).arg("WITHVALUES");
        p.cmd("HRANDFIELD").arg(&seeds_key).arg(seeds_wanted.max(1)).arg("WITHVALUES");
        p.cmd("HLEN").arg(&seeds_key).cmd("HLEN").arg(&viewers_key);
        let (viewer_sample, seed_sample, seeds, viewers): (Vec<Vec<u8>>, Vec<Vec<u8>>, u32, u32) =
            self.query(&p).await?;
        let listable = |flat: &[Vec<u8>]| -> Vec<Candidate> {
            decode_pairs(flat)
                .into_iter()
                .filter(|(flags, c)| c.out.key != key && flags & REACHABLE != 0)
                .map(|(_, c)| c)
                .collect()
        };
        let chosen_seeds =
            listable(&seed_sample).into_iter().take(seeds_wanted.saturating_sub(1).min(want)).map(|c| c.out);
        let peers = peer_list(chosen_seeds.collect(), listable(&viewer_sample), want);
        Ok(AnnounceReply { seeds, viewers, peers, over_cap: None })
    }

    /// (seeds, viewers) of a channel across replicas.
    pub async fn scrape(&self, info_hash: &[u8; 20]) -> Result<(u32, u32), SharedError> {
        let mut p = redis::pipe();
        p.cmd("HLEN").arg(self.key(info_hash, "s")).cmd("HLEN").arg(self.key(info_hash, "v"));
        self.query(&p).await
    }

    /// Removes peers silent for longer than the timeout, and forgets channels silent
    /// that long (their keys are empty, so Redis has dropped them).
    pub async fn sweep(&self, unix: u64) -> Result<SweepStats, SharedError> {
        let cutoff = unix.saturating_sub(u64::from(self.cfg.peer_timeout_s) + 1);
        let mut stats = SweepStats::default();
        let mut p = redis::pipe();
        p.cmd("ZRANGE").arg(self.channels_key()).arg(0).arg(-1);
        let (channels,): (Vec<Vec<u8>>,) = self.query(&p).await?;
        for chunk in channels.chunks(256) {
            let hashes: Vec<[u8; 20]> = chunk.iter().filter_map(|h| <[u8; 20]>::try_from(h.as_slice()).ok()).collect();
            let mut p = redis::pipe();
            for h in &hashes {
                p.cmd("ZRANGEBYSCORE").arg(self.key(h, "seen")).arg("-inf").arg(cutoff);
            }
            let expired: Vec<Vec<Vec<u8>>> = self.query(&p).await?;
            let mut p = redis::pipe();
            let mut any = false;
            for (h, keys) in hashes.iter().zip(&expired).filter(|(_, k)| !k.is_empty()) {
                any = true;
                stats.expired_peers += keys.len() as u64;
                p.cmd("HDEL").arg(self.key(h, "v")).arg(keys).ignore();
                p.cmd("HDEL").arg(self.key(h, "s")).arg(keys).ignore();
                p.cmd("ZREMRANGEBYSCORE").arg(self.key(h, "seen")).arg("-inf").arg(cutoff).ignore();
            }
            if any {
                self.query::<()>(&p).await?;
            }
        }
        let mut p = redis::pipe();
        p.cmd("ZREMRANGEBYSCORE").arg(self.channels_key()).arg("-inf").arg(cutoff);
        let (pruned,): (u64,) = self.query(&p).await?;
        stats.pruned_swarms = pruned;
        Ok(stats)
    }
}

impl SharedSwarms {
    /// Deletes every key under the prefix (tests clean up; an operator resets).
    pub async fn clear(&self) -> Result<u64, SharedError> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                deleted += redis::cmd("DEL").arg(&keys).query_async::<u64>(&mut conn).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// Records from `HRANDFIELD … WITHVALUES` (field, value, field, value, …), with their
/// flags; malformed entries (someone else's keys, a truncated value) are skipped.
fn decode_pairs(flat: &[Vec<u8>]) -> Vec<(u8, Candidate)> {
    flat.chunks_exact(2)
        .filter_map(|kv| {
            let key: [u8; 8] = kv[0].as_slice().try_into().ok()?;
            let rec: &[u8; RECORD] = kv[1].as_slice().try_into().ok()?;
            let ip16: [u8; 16] = rec[..16].try_into().ok()?;
            let ip = IpAddr::V6(ip16.into()).to_canonical();
            let (port, flags) = (u16::from_be_bytes([rec[16], rec[17]]), rec[18]);
            let out = PeerOut { ip, port, seed: flags & SEED != 0, key };
            Some((flags, Candidate { out, free_slots: rec[19] }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_and_garbage_is_skipped() {
        let mut rec = vec![0u8; RECORD];
        rec[15] = 1;
        rec[16..18].copy_from_slice(&7001u16.to_be_bytes());
        rec[18] = SEED | REACHABLE;
        rec[19] = 4;
        let flat = vec![vec![1; 8], rec.clone(), vec![2; 7], rec.clone(), vec![3; 8], vec![0; 3], vec![4; 8]];
        let got = decode_pairs(&flat);
        assert_eq!(got.len(), 1, "a short key, a short record and an odd trailing field are skipped");
        let (flags, c) = got[0];
        assert_eq!((c.out.key, c.out.port, c.out.seed, c.free_slots, flags), ([1; 8], 7001, true, 4, SEED | REACHABLE));
        assert_eq!(c.out.ip, IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), "::1 stays IPv6");
    }
}
