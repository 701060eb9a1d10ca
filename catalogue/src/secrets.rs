//! Secrets and how they are kept: stream keys (only their SHA-256 is stored, compared in
//! constant time), seeder tokens, and each channel's Ed25519 signing key in a key
//! directory readable by its owner only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use swarm::piece::{ChannelId, ChannelKeypair, decode_hex32, encode_hex};

use crate::admission::Refusal;
use crate::valid_channel_name;

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

/// Who may read ingest's piece streams and announce as a seed: the SHA-256 of each
/// accepted seeder token.
#[derive(Debug, Clone, Default)]
pub struct SeederTokens {
    hashes: Vec<[u8; 32]>,
}

impl SeederTokens {
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        SeederTokens { hashes: tokens.into_iter().map(hash_stream_key).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn allows(&self, token: &str) -> bool {
        let h = hash_stream_key(token);
        self.hashes.iter().fold(false, |ok, stored| ok | constant_time_eq(stored, &h))
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
