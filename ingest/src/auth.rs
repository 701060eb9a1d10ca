//! Who may publish: stream keys to channels, license checks, and the channels'
//! signing keys.
//!
//! Ingest asks one interface, [`Authorizer`]; until the tracker's licensing tables
//! answer it, [`ChannelFile`] does: a JSON file listing each channel with the SHA-256
//! of its stream key(s) and its license, read at every publish attempt (rotation is an edit
//! of that file, effective at the next publish), and a key directory holding each channel's Ed25519 secret in
//! `<channel>.key` (hex, mode 0600 or stricter; refused otherwise).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use swarm::piece::{ChannelId, ChannelKeypair, decode_hex32, encode_hex};

/// A channel allowed to publish now.
#[derive(Debug, Clone)]
pub struct Grant {
    pub channel: String,
    pub key: Arc<ChannelKeypair>,
    /// Ad breaks are metered on this channel.
    pub carries_ads: bool,
    /// SRT publishers must encrypt with this passphrase (10-79 characters).
    pub srt_passphrase: Option<String>,
}

/// Why a publish was refused; [`Refusal::label`] is the bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("unknown stream key: check the key in the encoder's stream settings")]
    UnknownKey,
    #[error("publish to rtmp://HOST/live/<stream-key> (application {0:?} is not served)")]
    BadApplication(String),
    #[error("channel {0} is disabled by its operator")]
    Disabled(String),
    #[error("channel {0} carries ads and has no commercial license: add one, or mark the channel ad-free")]
    LicenseRequired(String),
    #[error("channel {channel}'s commercial license expired at {until_unix} (Unix time): renew it")]
    LicenseExpired { channel: String, until_unix: u64 },
    #[error("channel {channel} has no usable signing key on this ingest node: {detail}")]
    NoSigningKey { channel: String, detail: String },
    #[error("channel {0} is already being published from another address; stop that encoder first")]
    AlreadyPublishing(String),
    #[error("the channel directory could not be read: {0}")]
    Directory(String),
}

impl Refusal {
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadApplication(_) => "bad_application",
            Refusal::Disabled(_) => "channel_disabled",
            Refusal::LicenseRequired(_) => "license_required",
            Refusal::LicenseExpired { .. } => "license_expired",
            Refusal::NoSigningKey { .. } => "no_signing_key",
            Refusal::AlreadyPublishing(_) => "already_publishing",
            Refusal::Directory(_) => "directory_error",
        }
    }
}

/// Decides whether a stream key may publish, and with which channel key.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    fn authorize(&self, stream_key: &str, now_unix: u64) -> Result<Grant, Refusal>;
}

/// SHA-256 of a stream key: what is stored instead of the key.
pub fn hash_stream_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A fresh stream key: 128 random bits, URL-safe.
pub fn generate_stream_key() -> String {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    encode_hex(&bytes)
}

/// Compares without an early exit, so timing does not reveal a matching prefix.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

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
    /// The checks that need no key: status and license.
    pub fn admit(entry: &ChannelEntry, now_unix: u64) -> Result<(), Refusal> {
        if entry.status == ChannelStatus::Disabled {
            return Err(Refusal::Disabled(entry.name.clone()));
        }
        if entry.carries_ads {
            match &entry.license {
                Some(l) if l.commercial => {
                    if let Some(until) = l.valid_until_unix
                        && until <= now_unix
                    {
                        return Err(Refusal::LicenseExpired { channel: entry.name.clone(), until_unix: until });
                    }
                }
                _ => return Err(Refusal::LicenseRequired(entry.name.clone())),
            }
        }
        Ok(())
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

/// The channels' signing keys on this ingest node: `<dir>/<channel>.key`, 64 hex
/// characters, mode 0600 (a key others can read is refused). Loaded once per channel.
#[derive(Debug)]
pub struct KeyDir {
    dir: PathBuf,
    keys: Mutex<HashMap<String, Arc<ChannelKeypair>>>,
}

impl KeyDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        KeyDir { dir: dir.into(), keys: Mutex::new(HashMap::new()) }
    }

    pub fn path(&self, channel: &str) -> PathBuf {
        self.dir.join(format!("{channel}.key"))
    }

    /// A fresh key for a new channel, written 0600; refuses to overwrite one.
    pub fn create(&self, channel: &str) -> Result<ChannelKeypair, String> {
        if !valid_channel_name(channel) {
            return Err(format!("channel name {channel:?}: use 1-64 of a-z, 0-9, '-' and '_'"));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let key = ChannelKeypair::generate();
        write_secret(&self.path(channel), &encode_hex(&key.secret_bytes()))?;
        Ok(key)
    }

    /// The channel's signing key; if `expected` is given, it must be that key's public half.
    pub fn signing_key(&self, channel: &str, expected: Option<&ChannelId>) -> Result<Arc<ChannelKeypair>, Refusal> {
        let no_key = |detail: String| Refusal::NoSigningKey { channel: channel.to_owned(), detail };
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let key = match keys.get(channel) {
            Some(k) => k.clone(),
            None => {
                let path = self.path(channel);
                check_private(&path).map_err(no_key)?;
                let text = std::fs::read_to_string(&path).map_err(|e| no_key(format!("{}: {e}", path.display())))?;
                let secret = decode_hex32(text.trim())
                    .ok_or_else(|| no_key(format!("{} does not hold 64 hex characters", path.display())))?;
                let key = Arc::new(ChannelKeypair::from_secret_bytes(&secret));
                keys.insert(channel.to_owned(), key.clone());
                key
            }
        };
        if let Some(id) = expected
            && key.id() != *id
        {
            keys.remove(channel);
            return Err(no_key(format!(
                "{} is not the key the catalogue has for it (public key {})",
                self.path(channel).display(),
                id.to_hex()
            )));
        }
        Ok(key)
    }
}

/// [`Authorizer`] over a channel file and a key directory.
#[derive(Debug)]
pub struct ChannelFile {
    path: PathBuf,
    keys: KeyDir,
    cache: Mutex<ChannelList>,
}

impl ChannelFile {
    pub fn new(path: impl Into<PathBuf>, key_dir: impl Into<PathBuf>) -> Self {
        ChannelFile { path: path.into(), keys: KeyDir::new(key_dir), cache: Mutex::new(ChannelList::default()) }
    }

    /// The list as it is on disk now.
    pub fn list(&self) -> Result<ChannelList, Refusal> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut cache)?;
        Ok(cache.clone())
    }

    /// Publish attempts are rare, so the file is simply read again each time: an
    /// edit (a rotation, a license, disabling) applies to the next attempt.
    fn refresh(&self, cache: &mut ChannelList) -> Result<(), Refusal> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| Refusal::Directory(format!("{}: {e}", self.path.display())))?;
        *cache =
            serde_json::from_str(&text).map_err(|e| Refusal::Directory(format!("{}: {e}", self.path.display())))?;
        Ok(())
    }

    /// Writes a new channel with a fresh signing key and stream key; returns the
    /// stream key (shown once: only its hash is stored).
    pub fn create_channel(
        &self,
        name: &str,
        carries_ads: bool,
        license: Option<License>,
    ) -> anyhow_lite::Result<String> {
        self.create_channel_with(name, carries_ads, license, None)
    }

    /// [`ChannelFile::create_channel`] with an SRT passphrase.
    pub fn create_channel_with(
        &self,
        name: &str,
        carries_ads: bool,
        license: Option<License>,
        srt_passphrase: Option<String>,
    ) -> anyhow_lite::Result<String> {
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

/// Minimal string errors for the few file operations here.
mod anyhow_lite {
    pub type Result<T> = std::result::Result<T, String>;
}

pub fn valid_channel_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("{} has mode {mode:o}; a channel's secret key must be 0600 (chmod 600)", path.display()));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), String> {
    Ok(())
}

/// Writes a secret readable by its owner only.
pub fn write_secret(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(contents.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

impl Authorizer for ChannelFile {
    fn authorize(&self, stream_key: &str, now_unix: u64) -> Result<Grant, Refusal> {
        let entry = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            self.refresh(&mut cache)?;
            cache.find(stream_key).ok_or(Refusal::UnknownKey)?.clone()
        };
        ChannelList::admit(&entry, now_unix)?;
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
