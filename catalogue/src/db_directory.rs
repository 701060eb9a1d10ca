//! The channel directory and ingest's publish check over the SQL catalogue (both
//! re-exported from [`crate::directory`]).

use std::sync::{Arc, RwLock};

use swarm::piece::ChannelId;

use crate::admission::{Authorizer, Grant, Refusal};
use crate::db::Db;
use crate::directory::{CachedDirectory, admission};
use crate::secrets::{KeyDir, constant_time_eq, hash_stream_key};

/// The SQL catalogue's channels, with licences decided in the query
/// ([`Db::channel_states`]); reloaded like the file.
#[derive(Debug)]
pub struct DbDirectory {
    db: Db,
    cache: Arc<CachedDirectory>,
}

impl DbDirectory {
    pub fn new(db: Db, cache: Arc<CachedDirectory>) -> Self {
        DbDirectory { db, cache }
    }

    pub async fn reload(&self, now_unix: u64) -> Result<usize, String> {
        let states = self.db.channel_states(now_unix as i64).await.map_err(|e| e.to_string())?;
        Ok(self.cache.replace(states.into_iter().map(|c| (c.channel_id.info_hash(), admission(&c.name, c.admission)))))
    }
}

/// Ingest's [`Authorizer`] over the SQL catalogue: stream keys, status and licences
/// from the catalogue (re-read by [`CatalogueAuthorizer::reload`], every 10 s in
/// `shoal ingest --database-url`, so a new channel, a rotated key or a licence change
/// applies within that), signing keys from this node's key directory. Until the first
/// read succeeds every publish is refused with a reason; a failed read keeps the last
/// good catalogue.
#[derive(Debug)]
pub struct CatalogueAuthorizer {
    db: Db,
    keys: KeyDir,
    channels: RwLock<Option<Vec<PublishEntry>>>,
}

#[derive(Debug)]
struct PublishEntry {
    name: String,
    channel_id: ChannelId,
    carries_ads: bool,
    stream_keys: Vec<[u8; 32]>,
    admission: Result<(), Refusal>,
}

impl CatalogueAuthorizer {
    pub fn new(db: Db, keys: KeyDir) -> Self {
        CatalogueAuthorizer { db, keys, channels: RwLock::new(None) }
    }

    /// Reads the catalogue again, deciding licences at `now_unix`; returns the number of channels.
    pub async fn reload(&self, now_unix: u64) -> Result<usize, String> {
        let states = self.db.channel_states(now_unix as i64).await.map_err(|e| e.to_string())?;
        let entries: Vec<PublishEntry> = states
            .into_iter()
            .map(|c| PublishEntry {
                name: c.name,
                channel_id: c.channel_id,
                carries_ads: c.carries_ads,
                stream_keys: c.stream_keys,
                admission: c.admission,
            })
            .collect();
        let n = entries.len();
        *self.channels.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(entries);
        Ok(n)
    }
}

impl Authorizer for CatalogueAuthorizer {
    fn authorize(&self, stream_key: &str, _now_unix: u64) -> Result<Grant, Refusal> {
        let hash = hash_stream_key(stream_key);
        let (name, channel_id, carries_ads) = {
            let channels = self.channels.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(channels) = channels.as_ref() else {
                return Err(Refusal::Directory("the catalogue has not been read yet; try again shortly".into()));
            };
            // Every stored hash is compared, in constant time: how long this takes says
            // nothing about which key came close.
            let mut found = None;
            for c in channels {
                for k in &c.stream_keys {
                    if constant_time_eq(k, &hash) {
                        found = found.or(Some(c));
                    }
                }
            }
            let c = found.ok_or(Refusal::UnknownKey)?;
            c.admission.clone()?;
            (c.name.clone(), c.channel_id, c.carries_ads)
        };
        let key = self.keys.signing_key(&name, Some(&channel_id))?;
        Ok(Grant { channel: name, key, carries_ads, srt_passphrase: None })
    }
}
