//! Which channels exist and whether they may be watched now. One interface
//! ([`ChannelDirectory`]); today it reads ingest's channel file, the SQL catalogue
//! replaces it when it lands.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ingest::auth::{ChannelFile, ChannelList};
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

/// Ingest's channel file (`channels.json`): names, public keys, status and licences.
/// [`FileDirectory::reload`] re-reads it (the server does every 10 s, so a licence
/// change applies within a minute); a file that can't be read keeps the last good list.
#[derive(Debug)]
pub struct FileDirectory {
    file: ChannelFile,
    list: RwLock<HashMap<[u8; 20], Listed>>,
}

/// A channel as read from the file: its name (shared with answers) and entry.
type Listed = (Arc<str>, ingest::auth::ChannelEntry);

impl FileDirectory {
    pub fn new(file: ChannelFile) -> Self {
        FileDirectory { file, list: RwLock::new(HashMap::new()) }
    }

    /// Reads the file again; returns the number of channels, or why it could not.
    pub fn reload(&self) -> Result<usize, String> {
        let list = self.file.list().map_err(|e| e.to_string())?;
        let mut map = HashMap::new();
        for entry in list.channels {
            let Some(id) = entry.channel_id.as_deref().and_then(ChannelId::from_hex) else {
                tracing::warn!(channel = %entry.name, "channel has no public key in the channel file; create it again with `shoal ingest add-channel`");
                continue;
            };
            map.insert(id.info_hash(), (Arc::from(entry.name.as_str()), entry));
        }
        let n = map.len();
        *self.list.write().unwrap_or_else(std::sync::PoisonError::into_inner) = map;
        Ok(n)
    }
}

impl ChannelDirectory for FileDirectory {
    fn admit(&self, info_hash: &[u8; 20], now_unix: u64) -> Admission {
        let list = self.list.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match list.get(info_hash) {
            None => Admission::Unknown,
            Some((name, entry)) => match ChannelList::admit(entry, now_unix) {
                Ok(()) => Admission::Open { channel: name.clone() },
                Err(r) => Admission::Refused { channel: name.clone(), reason: r.to_string(), label: r.label() },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::auth::License;
    use swarm::piece::ChannelKeypair;

    #[test]
    fn channel_file_channels_are_open_refused_or_unknown() {
        let dir = std::env::temp_dir().join(format!("shoal-tracker-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = ChannelFile::new(dir.join("channels.json"), dir.join("keys"));
        file.create_channel("news", false, None).unwrap();
        file.create_channel("ads", true, None).unwrap();
        file.create_channel("paid", true, Some(License { commercial: true, valid_until_unix: Some(1_000) })).unwrap();
        let d = FileDirectory::new(ChannelFile::new(dir.join("channels.json"), dir.join("keys")));
        assert_eq!(d.reload(), Ok(3));
        let id = |name: &str| {
            let hex = std::fs::read_to_string(dir.join("keys").join(format!("{name}.key"))).unwrap();
            let secret = swarm::piece::decode_hex32(hex.trim()).unwrap();
            ChannelKeypair::from_secret_bytes(&secret).id().info_hash()
        };
        assert_eq!(d.admit(&id("news"), 0), Admission::Open { channel: Arc::from("news") });
        assert!(matches!(d.admit(&id("ads"), 0), Admission::Refused { label: "license_required", .. }));
        assert!(matches!(d.admit(&id("paid"), 999), Admission::Open { .. }));
        assert!(matches!(d.admit(&id("paid"), 1_000), Admission::Refused { label: "license_expired", .. }));
        assert_eq!(d.admit(&[9; 20], 0), Admission::Unknown);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
