//! The channel file: the catalogue of a node without SQL. A JSON file listing each
//! channel with the SHA-256 of its stream key(s), status, licence and public key, looked
//! at by every check (a publish attempt, and each re-check of live sessions: rotation
//! is an edit of that file, effective at once); the channels' signing keys are in a
//! [`KeyDir`].

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use swarm::piece::{ChannelId, decode_hex32, encode_hex};

use crate::admission::{Authorizer, Grant, LicenceStanding, Refusal, Standing, admit};
use crate::secrets::{KeyDir, constant_time_eq, generate_stream_key, hash_stream_key};
use crate::valid_channel_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChannelStatus {
    #[default]
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct License {
    pub commercial: bool,
    /// Unix time the license ends; none: open-ended.
    #[serde(default)]
    pub valid_until_unix: Option<u64>,
}

/// One channel in the channel file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelEntry {
    pub name: String,
    /// SHA-256 (hex) of each accepted stream key: two during a rotation.
    pub stream_key_sha256: Vec<String>,
    #[serde(default)]
    pub carries_ads: bool,
    #[serde(default)]
    pub license: Option<License>,
    #[serde(default)]
    pub status: ChannelStatus,
    /// SRT publishers must encrypt with this (AES, 10-79 characters). Stored as is:
    /// SRT derives its keys from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srt_passphrase: Option<String>,
    /// The channel's public key (hex): what viewers verify against and what the
    /// tracker derives the channel's info-hash from. The private key is not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChannelList {
    pub channels: Vec<ChannelEntry>,
}

impl ChannelList {
    /// [`admit`] for a channel of the file at `now_unix`.
    pub fn admit(entry: &ChannelEntry, now_unix: u64) -> Result<(), Refusal> {
        let licence = match &entry.license {
            Some(l) if l.commercial => match l.valid_until_unix {
                Some(until) if until <= now_unix => LicenceStanding::ExpiredAt(until),
                _ => LicenceStanding::Current,
            },
            _ => LicenceStanding::None,
        };
        admit(Standing {
            name: &entry.name,
            enabled: entry.status == ChannelStatus::Enabled,
            carries_ads: entry.carries_ads,
            licence,
        })
    }

    /// The entry whose key hash matches, comparing every hash in constant time.
    fn find(&self, stream_key: &str) -> Option<&ChannelEntry> {
        let hash = hash_stream_key(stream_key);
        let mut found = None;
        for entry in &self.channels {
            for stored in &entry.stream_key_sha256 {
                if let Some(stored) = decode_hex32(stored)
                    && constant_time_eq(&stored, &hash)
                {
                    found = found.or(Some(entry));
                }
            }
        }
        found
    }
}
/// [`Authorizer`] over a channel file and a key directory.
#[derive(Debug)]
pub struct ChannelFile {
    path: PathBuf,
    keys: KeyDir,
    cache: Mutex<Cached>,
}

/// The list as last parsed, and which version of the file it came from.
#[derive(Debug, Default)]
struct Cached {
    seen: Option<Fingerprint>,
    list: ChannelList,
}

/// What tells one version of the file from the next without reading it: an edit
/// changes the modification time (ns on today's file systems) or the size, and the
/// atomic replace every writer here uses makes a new inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Fingerprint { len: meta.len(), modified: meta.modified().ok(), inode }
    }

    /// Modified in the last 2 s (or in the future): file times tick coarsely (a few
    /// ms), so an in-place edit of the same length may not show yet; such a file is
    /// read every time until it is older (as git treats "racily clean" files).
    fn recent(&self) -> bool {
        self.modified.is_none_or(|m| m.elapsed().ok().is_none_or(|age| age < std::time::Duration::from_secs(2)))
    }
}

impl ChannelFile {
    pub fn new(path: impl Into<PathBuf>, key_dir: impl Into<PathBuf>) -> Self {
        ChannelFile { path: path.into(), keys: KeyDir::new(key_dir), cache: Mutex::new(Cached::default()) }
    }

    /// The list as it is on disk now.
    pub fn list(&self) -> Result<ChannelList, Refusal> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut cache)?;
        Ok(cache.list.clone())
    }

    /// Every check looks at the file (one `stat`; it is parsed again only when it
    /// changed): an edit (a rotation, a licence, disabling) applies to the next publish
    /// and to live sessions at their next check.
    fn refresh(&self, cache: &mut Cached) -> Result<(), Refusal> {
        let unreadable = |e: &dyn std::fmt::Display| Refusal::Directory(format!("{}: {e}", self.path.display()));
        let seen = Fingerprint::of(&std::fs::metadata(&self.path).map_err(|e| unreadable(&e))?);
        if cache.seen.as_ref() == Some(&seen) && !seen.recent() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| unreadable(&e))?;
        cache.list = serde_json::from_str(&text).map_err(|e| unreadable(&e))?;
        cache.seen = Some(seen);
        Ok(())
    }

    /// Writes a new channel with a fresh signing key and stream key; returns the
    /// stream key (shown once: only its hash is stored).
    pub fn create_channel(&self, name: &str, carries_ads: bool, license: Option<License>) -> Result<String, String> {
        self.create_channel_with(name, carries_ads, license, None)
    }

    /// [`ChannelFile::create_channel`] with an SRT passphrase.
    pub fn create_channel_with(
        &self,
        name: &str,
        carries_ads: bool,
        license: Option<License>,
        srt_passphrase: Option<String>,
    ) -> Result<String, String> {
        if !valid_channel_name(name) {
            return Err(format!("channel name {name:?}: use 1-64 of a-z, 0-9, '-' and '_'"));
        }
        let mut list =
            if self.path.exists() { self.list().map_err(|e| e.to_string())? } else { ChannelList::default() };
        if list.channels.iter().any(|c| c.name == name) {
            return Err(format!("channel {name} exists"));
        }
        let key = self.keys.create(name)?;
        let stream_key = generate_stream_key();
        list.channels.push(ChannelEntry {
            name: name.to_owned(),
            stream_key_sha256: vec![encode_hex(&hash_stream_key(&stream_key))],
            carries_ads,
            license,
            status: ChannelStatus::Enabled,
            srt_passphrase,
            channel_id: Some(key.id().to_hex()),
        });
        let json = serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(stream_key)
    }
}

impl ChannelFile {
    /// The entry `stream_key` opens, if it may publish at `now_unix`.
    fn admitted(&self, stream_key: &str, now_unix: u64) -> Result<ChannelEntry, Refusal> {
        let entry = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            self.refresh(&mut cache)?;
            cache.list.find(stream_key).ok_or(Refusal::UnknownKey)?.clone()
        };
        ChannelList::admit(&entry, now_unix)?;
        Ok(entry)
    }
}

impl Authorizer for ChannelFile {
    fn check(&self, stream_key: &str, now_unix: u64) -> Result<String, Refusal> {
        self.admitted(stream_key, now_unix).map(|e| e.name)
    }

    fn authorize(&self, stream_key: &str, now_unix: u64) -> Result<Grant, Refusal> {
        let entry = self.admitted(stream_key, now_unix)?;
        let expected = entry.channel_id.as_deref().and_then(ChannelId::from_hex);
        let key = self.keys.signing_key(&entry.name, expected.as_ref())?;
        Ok(Grant { channel: entry.name, key, carries_ads: entry.carries_ads, srt_passphrase: entry.srt_passphrase })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("shoal-auth-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn keys_licenses_and_rotation() {
        let d = dir();
        let file = ChannelFile::new(d.join("channels.json"), d.join("keys"));
        let free = file.create_channel("news", false, None).expect("create");
        let ads = file.create_channel("sport", true, None).expect("create");
        assert!(file.create_channel("news", false, None).is_err());
        assert!(file.create_channel("Bad Name", false, None).is_err());

        let g = file.authorize(&free, 100).expect("ad-free channels are free");
        assert_eq!(g.channel, "news");
        assert_eq!(file.authorize("nope", 100).unwrap_err(), Refusal::UnknownKey);
        assert_eq!(file.authorize(&ads, 100).unwrap_err(), Refusal::LicenseRequired("sport".into()));

        // A license, then its expiry; then disabling; each takes effect on the next publish.
        let mut list = file.list().expect("list");
        list.channels[1].license = Some(License { commercial: true, valid_until_unix: Some(1_000) });
        list.channels[0].status = ChannelStatus::Disabled;
        // A rotation: the old key and a new one both work until the old is removed.
        list.channels[1].stream_key_sha256.push(encode_hex(&hash_stream_key("new-key")));
        std::fs::write(d.join("channels.json"), serde_json::to_string(&list).expect("json")).expect("write");
        assert_eq!(file.authorize(&ads, 999).expect("licensed").channel, "sport");
        assert_eq!(file.authorize("new-key", 999).expect("rotated key").channel, "sport");
        assert_eq!(
            file.authorize(&ads, 1_000).unwrap_err(),
            Refusal::LicenseExpired { channel: "sport".into(), until_unix: 1_000 }
        );
        assert_eq!(file.authorize(&free, 100).unwrap_err(), Refusal::Disabled("news".into()));
        std::fs::remove_dir_all(&d).ok();
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_secret_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir();
        let file = ChannelFile::new(d.join("channels.json"), d.join("keys"));
        let key = file.create_channel("news", false, None).expect("create");
        let path = d.join("keys/news.key");
        assert_eq!(std::fs::metadata(&path).expect("key").permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        match file.authorize(&key, 0) {
            Err(Refusal::NoSigningKey { detail, .. }) => assert!(detail.contains("chmod 600"), "{detail}"),
            other => panic!("unexpected {other:?}"),
        }
        std::fs::remove_dir_all(&d).ok();
    }
}
