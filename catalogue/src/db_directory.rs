//! The channel directory and ingest's publish check over the SQL catalogue (both
//! re-exported from [`crate::directory`]).

use std::sync::{Arc, RwLock};

use swarm::piece::ChannelId;

use crate::admission::{Authorizer, Grant, Refusal};
use crate::db::{ChannelRecord, Db};
use crate::directory::{CachedDirectory, admission};
use crate::secrets::{KeyDir, constant_time_eq, hash_stream_key};

/// The SQL catalogue's channels, with licences decided in the query
/// ([`Db::channel_states`]); reloaded like the file, and at once when the catalogue's
/// change counter moves ([`DbDirectory::refresh`]).
#[derive(Debug)]
pub struct DbDirectory {
    db: Db,
    cache: Arc<CachedDirectory>,
    /// The change counter as of the last read.
    version: RwLock<Option<i64>>,
}

impl DbDirectory {
    pub fn new(db: Db, cache: Arc<CachedDirectory>) -> Self {
        DbDirectory { db, cache, version: RwLock::new(None) }
    }

    /// Reads the channels again (licences begin and end with time, not with a write:
    /// the tracker does this every 10 s).
    pub async fn reload(&self, now_unix: u64) -> Result<usize, String> {
        let version = self.db.catalogue_version().await.map_err(|e| e.to_string())?;
        let states = self.db.channel_states(now_unix as i64).await.map_err(|e| e.to_string())?;
        *self.version.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(version);
        Ok(self.cache.replace(states.into_iter().map(|c| (c.channel_id.info_hash(), admission(&c.name, c.admission)))))
    }

    /// Reads the channels again if the catalogue changed since the last read (one row
    /// read when it did not): `Ok(true)` if it did. A channel disabled, a licence
    /// added or ended by an operator, applies to announces at the next refresh.
    pub async fn refresh(&self, now_unix: u64) -> Result<bool, String> {
        let version = self.db.catalogue_version().await.map_err(|e| e.to_string())?;
        let held = *self.version.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held == Some(version) {
            return Ok(false);
        }
        self.reload(now_unix).await.map(|_| true)
    }
}

/// Ingest's [`Authorizer`] over the SQL catalogue: stream keys, status and licences
/// from the catalogue, decided at the moment of each check (a rotation's grace period
/// or a licence that ends between two reads ends on time); signing keys from this
/// node's key directory. [`CatalogueAuthorizer::refresh`] reads the catalogue's change
/// counter and the catalogue again only when it moved (`shoal ingest` does twice a
/// second). Until the first read succeeds every publish is refused with a reason; a
/// failed read keeps the last good catalogue.
#[derive(Debug)]
pub struct CatalogueAuthorizer {
    db: Db,
    keys: KeyDir,
    read: RwLock<Option<Read>>,
}

/// The catalogue as last read, and its change counter then.
#[derive(Debug)]
struct Read {
    version: i64,
    channels: Vec<ChannelRecord>,
}

impl CatalogueAuthorizer {
    pub fn new(db: Db, keys: KeyDir) -> Self {
        CatalogueAuthorizer { db, keys, read: RwLock::new(None) }
    }

    /// Reads the catalogue again; returns the number of channels.
    pub async fn reload(&self) -> Result<usize, String> {
        let version = self.db.catalogue_version().await.map_err(|e| e.to_string())?;
        self.load(version).await
    }

    /// Reads the catalogue again if it changed since the last read: `Ok(true)` if it did.
    pub async fn refresh(&self) -> Result<bool, String> {
        let version = self.db.catalogue_version().await.map_err(|e| e.to_string())?;
        let held = self.read.read().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(|r| r.version);
        if held == Some(version) {
            return Ok(false);
        }
        self.load(version).await.map(|_| true)
    }

    /// Reads the channels, as of `version` or later: the counter is read first, so a
    /// change landing after it moves it again and the next refresh reads once more.
    async fn load(&self, version: i64) -> Result<usize, String> {
        let channels = self.db.channel_records().await.map_err(|e| e.to_string())?;
        let n = channels.len();
        *self.read.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Read { version, channels });
        Ok(n)
    }

    /// The channel `stream_key` opens, if it may publish at `now_unix`.
    fn admitted(&self, stream_key: &str, now_unix: u64) -> Result<(String, ChannelId, bool), Refusal> {
        let hash = hash_stream_key(stream_key);
        let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
        let read = self.read.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(read) = read.as_ref() else {
            return Err(Refusal::Directory("the catalogue has not been read yet; try again shortly".into()));
        };
        // Every stored hash is compared, in constant time: how long this takes says
        // nothing about which key came close.
        let mut found = None;
        for c in &read.channels {
            for k in c.keys_at(now) {
                if constant_time_eq(k, &hash) {
                    found = found.or(Some(c));
                }
            }
        }
        let c = found.ok_or(Refusal::UnknownKey)?;
        c.admission_at(now)?;
        Ok((c.name.clone(), c.channel_id, c.carries_ads))
    }
}

impl Authorizer for CatalogueAuthorizer {
    fn check(&self, stream_key: &str, now_unix: u64) -> Result<String, Refusal> {
        self.admitted(stream_key, now_unix).map(|(name, ..)| name)
    }

    fn authorize(&self, stream_key: &str, now_unix: u64) -> Result<Grant, Refusal> {
        let (name, channel_id, carries_ads) = self.admitted(stream_key, now_unix)?;
        let key = self.keys.signing_key(&name, Some(&channel_id))?;
        Ok(Grant { channel: name, key, carries_ads, srt_passphrase: None })
    }
}
