//! Which channels exist and whether they may be watched now ([`ChannelDirectory`],
//! for the tracker's announces) or published ([`CatalogueAuthorizer`], ingest's
//! [`Authorizer`] over the SQL catalogue). Both read the channel file or the SQL
//! catalogue, and decide with [`crate::admission::admit`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::admission::Refusal;
use crate::file::{ChannelFile, ChannelList};
use swarm::piece::ChannelId;

/// Whether announces to a channel are taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Open {
        channel: Arc<str>,
    },
    /// Known, but not to be watched now; `reason` tells the operator what to do.
    Refused {
        channel: Arc<str>,
        reason: String,
        label: &'static str,
    },
    Unknown,
}

pub trait ChannelDirectory: Send + Sync + std::fmt::Debug {
    fn admit(&self, info_hash: &[u8; 20], now_unix: u64) -> Admission;
}

/// A fixed set of open channels (tests, benchmarks, a tracker without a catalogue).
#[derive(Debug, Default)]
pub struct StaticDirectory {
    map: HashMap<[u8; 20], Arc<str>>,
}

impl StaticDirectory {
    pub fn new(channels: impl IntoIterator<Item = (String, ChannelId)>) -> Self {
        StaticDirectory { map: channels.into_iter().map(|(name, id)| (id.info_hash(), Arc::from(name))).collect() }
    }
}

impl ChannelDirectory for StaticDirectory {
    fn admit(&self, info_hash: &[u8; 20], _now_unix: u64) -> Admission {
        self.map.get(info_hash).map_or(Admission::Unknown, |c| Admission::Open { channel: c.clone() })
    }
}

/// Every info-hash is an open channel. Only for load tests whose clients make up
/// info-hashes (`aquatic_http_load_test`): `shoal tracker --bench-any-info-hash`.
#[derive(Debug, Default)]
pub struct AnyChannel;

impl ChannelDirectory for AnyChannel {
    fn admit(&self, _info_hash: &[u8; 20], _now_unix: u64) -> Admission {
        Admission::Open { channel: Arc::from("any") }
    }
}

/// Admissions computed by a loader (the channel file, the SQL catalogue) and swapped
/// in whole; announces only read it.
#[derive(Debug, Default)]
pub struct CachedDirectory {
    map: RwLock<HashMap<[u8; 20], Admission>>,
}

impl CachedDirectory {
    pub fn replace(&self, entries: impl IntoIterator<Item = ([u8; 20], Admission)>) -> usize {
        let map: HashMap<_, _> = entries.into_iter().collect();
        let n = map.len();
        *self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner) = map;
        n
    }
}

impl ChannelDirectory for CachedDirectory {
    fn admit(&self, info_hash: &[u8; 20], _now_unix: u64) -> Admission {
        let map = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(info_hash).cloned().unwrap_or(Admission::Unknown)
    }
}

pub(crate) fn admission(name: &str, result: Result<(), Refusal>) -> Admission {
    let channel = Arc::from(name);
    match result {
        Ok(()) => Admission::Open { channel },
        Err(r) => Admission::Refused { channel, reason: r.to_string(), label: r.label() },
    }
}

/// Ingest's channel file (`channels.json`): names, public keys, status and licences.
/// [`FileDirectory::reload`] re-reads it (the server does every 10 s, so a licence
/// change applies within a minute); a file that can't be read keeps the last good list.
#[derive(Debug)]
pub struct FileDirectory {
    file: ChannelFile,
    cache: Arc<CachedDirectory>,
}

impl FileDirectory {
    pub fn new(file: ChannelFile, cache: Arc<CachedDirectory>) -> Self {
        FileDirectory { file, cache }
    }

    /// Reads the file again and decides each channel's admission at `now_unix`;
    /// returns the number of channels, or why it could not.
    pub fn reload(&self, now_unix: u64) -> Result<usize, String> {
        let list = self.file.list().map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for entry in &list.channels {
            let Some(id) = entry.channel_id.as_deref().and_then(ChannelId::from_hex) else {
                tracing::warn!(channel = %entry.name, "channel has no public key in the channel file; create it again with `shoal ingest add-channel`");
                continue;
            };
            entries.push((id.info_hash(), admission(&entry.name, ChannelList::admit(entry, now_unix))));
        }
        Ok(self.cache.replace(entries))
    }
}

#[cfg(feature = "sql")]
pub use crate::db_directory::{CatalogueAuthorizer, DbDirectory};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::License;
    use swarm::piece::ChannelKeypair;

    #[test]
    fn channel_file_channels_are_open_refused_or_unknown() {
        let dir = std::env::temp_dir().join(format!("shoal-tracker-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = ChannelFile::new(dir.join("channels.json"), dir.join("keys"));
        file.create_channel("news", false, None).unwrap();
        file.create_channel("ads", true, None).unwrap();
        file.create_channel("paid", true, Some(License { commercial: true, valid_until_unix: Some(1_000) })).unwrap();
        let cache = Arc::new(CachedDirectory::default());
        let load = |now| {
            FileDirectory::new(ChannelFile::new(dir.join("channels.json"), dir.join("keys")), cache.clone()).reload(now)
        };
        assert_eq!(load(0), Ok(3));
        let d = cache.clone();
        let id = |name: &str| {
            let hex = std::fs::read_to_string(dir.join("keys").join(format!("{name}.key"))).unwrap();
            let secret = swarm::piece::decode_hex32(hex.trim()).unwrap();
            ChannelKeypair::from_secret_bytes(&secret).id().info_hash()
        };
        assert_eq!(d.admit(&id("news"), 0), Admission::Open { channel: Arc::from("news") });
        assert!(matches!(d.admit(&id("ads"), 0), Admission::Refused { label: "license_required", .. }));
        assert!(matches!(d.admit(&id("paid"), 0), Admission::Open { .. }));
        load(1_000).unwrap();
        assert!(matches!(d.admit(&id("paid"), 1_000), Admission::Refused { label: "license_expired", .. }));
        assert_eq!(d.admit(&[9; 20], 0), Admission::Unknown);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
