//! Where ingest nodes agree on a channel's epochs ([`crate::media::epoch`]): the
//! catalogue when ingest runs on one (`shoal ingest --database-url`, `shoal up`), a
//! file beside the channel file otherwise, memory in tests.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use crate::hub::lock;
use crate::media::epoch::{Epoch, FeedClock};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A shared store of epochs: one per channel and number, the first proposed.
pub trait EpochStore: Send + Sync + std::fmt::Debug {
    /// The channel's newest epoch.
    fn latest<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Option<Epoch>, String>>;
    /// Stores `epoch` unless its number is taken for the channel; returns the epoch
    /// stored under that number (`epoch`, or the one another node proposed first).
    fn propose<'a>(&'a self, channel: &'a str, epoch: &'a Epoch) -> BoxFuture<'a, Result<Epoch, String>>;
    /// A node is cutting the channel's epoch `number` at `at_us` (its `cut_at_us`, which
    /// only moves forward): a node that joins then knows it is not alone.
    fn touch<'a>(&'a self, channel: &'a str, number: u64, at_us: u64) -> BoxFuture<'a, Result<(), String>>;

    /// [`EpochStore::touch`] for each `(channel, number)` (a store may do it in one
    /// operation); every one is tried, the first error returned.
    fn touch_all<'a>(&'a self, cutting: &'a [(String, u64)], at_us: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut first = Ok(());
            for (channel, number) in cutting {
                let r = self.touch(channel, *number, at_us).await;
                if first.is_ok() {
                    first = r;
                }
            }
            first
        })
    }

    /// [`EpochStore::latest`] of each channel (those with none are left out).
    fn latest_all<'a>(&'a self, channels: &'a [String]) -> BoxFuture<'a, Result<HashMap<String, Epoch>, String>> {
        Box::pin(async move {
            let mut out = HashMap::new();
            for channel in channels {
                if let Some(e) = self.latest(channel).await? {
                    out.insert(channel.clone(), e);
                }
            }
            Ok(out)
        })
    }
}

/// Epochs in memory: one process, nothing kept across restarts.
#[derive(Debug, Default)]
pub struct MemoryEpochs {
    epochs: Mutex<HashMap<String, Vec<Epoch>>>,
}

impl MemoryEpochs {
    fn propose_now(&self, channel: &str, epoch: &Epoch) -> Epoch {
        let mut all = lock(&self.epochs);
        let list = all.entry(channel.to_owned()).or_default();
        if let Some(e) = list.iter().find(|e| e.number == epoch.number) {
            return e.clone();
        }
        list.push(epoch.clone());
        list.sort_by_key(|e| e.number);
        epoch.clone()
    }

    fn latest_now(&self, channel: &str) -> Option<Epoch> {
        lock(&self.epochs).get(channel).and_then(|l| l.last().cloned())
    }

    fn touch_now(&self, channel: &str, number: u64, at_us: u64) {
        if let Some(e) = lock(&self.epochs).get_mut(channel).and_then(|l| l.iter_mut().find(|e| e.number == number)) {
            e.cut_at_us = e.cut_at_us.max(at_us);
        }
    }
}

impl EpochStore for MemoryEpochs {
    fn latest<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Option<Epoch>, String>> {
        Box::pin(async move { Ok(self.latest_now(channel)) })
    }

    fn propose<'a>(&'a self, channel: &'a str, epoch: &'a Epoch) -> BoxFuture<'a, Result<Epoch, String>> {
        Box::pin(async move { Ok(self.propose_now(channel, epoch)) })
    }

    fn touch<'a>(&'a self, channel: &'a str, number: u64, at_us: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.touch_now(channel, number, at_us);
            Ok(())
        })
    }
}

/// Each channel's newest epoch in a JSON file beside the channel file: after a restart
/// the numbering goes on from where it was (and a feed whose timestamps went on too, an
/// encoder that reconnected, keeps its epoch); ingest processes sharing the data
/// directory agree through it (a proposal is read-check-written under an exclusive
/// lock of `epochs.json.lock`; the file is replaced atomically, so readers need none).
#[derive(Debug)]
pub struct FileEpochs {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EpochRecord {
    number: u64,
    clock: String,
    raw0: u64,
    seq0: u64,
    wall0_us: u64,
    piece_ms: u32,
    #[serde(default)]
    cut_at_us: u64,
}

impl EpochRecord {
    fn of(e: &Epoch) -> Self {
        EpochRecord {
            number: e.number,
            clock: e.clock.label().to_owned(),
            raw0: e.raw0,
            seq0: e.seq0,
            wall0_us: e.wall0_us,
            piece_ms: e.piece_ms,
            cut_at_us: e.cut_at_us,
        }
    }

    fn epoch(&self) -> Option<Epoch> {
        Some(Epoch {
            number: self.number,
            clock: FeedClock::from_label(&self.clock)?,
            raw0: self.raw0,
            seq0: self.seq0,
            wall0_us: self.wall0_us,
            piece_ms: self.piece_ms,
            cut_at_us: self.cut_at_us,
        })
    }
}

impl FileEpochs {
    pub fn open(path: PathBuf) -> Self {
        FileEpochs { path }
    }

    /// The file's epochs; a missing file holds none, an unreadable one is an error
    /// (numbering from scratch could go back).
    fn read(&self) -> Result<HashMap<String, EpochRecord>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(e) => Err(format!("reading {}: {e}", self.path.display())),
        }
    }

    /// Runs `change` on the file's epochs under the lock, writing them back if it says so.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut HashMap<String, EpochRecord>) -> Result<(T, bool), String>,
    ) -> Result<T, String> {
        let lock_path = self.path.with_extension("json.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
        lock.lock().map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
        let mut map = self.read()?;
        let (out, write) = change(&mut map)?;
        if write {
            let json = serde_json::to_vec_pretty(&map).map_err(|e| e.to_string())?;
            let tmp = self.path.with_extension(format!("json.{}.tmp", std::process::id()));
            std::fs::write(&tmp, json)
                .and_then(|()| std::fs::rename(&tmp, &self.path))
                .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        }
        Ok(out)
    }

    fn touch_now(&self, cutting: &[(String, u64)], at_us: u64) -> Result<(), String> {
        self.change(|map| {
            let mut write = false;
            for (channel, number) in cutting {
                if let Some(r) = map.get_mut(channel).filter(|r| r.number == *number && r.cut_at_us < at_us) {
                    r.cut_at_us = at_us;
                    write = true;
                }
            }
            Ok(((), write))
        })
    }

    fn propose_now(&self, channel: &str, epoch: &Epoch) -> Result<Epoch, String> {
        self.change(|map| Self::propose_in(map, channel, epoch))
    }

    fn propose_in(
        map: &mut HashMap<String, EpochRecord>,
        channel: &str,
        epoch: &Epoch,
    ) -> Result<(Epoch, bool), String> {
        if let Some(stored) = map.get(channel).filter(|r| r.number >= epoch.number)
            && let Some(e) = stored.epoch()
        {
            // Taken (or passed): what is stored under the number, as far as a file of
            // newest epochs can tell.
            if e.number == epoch.number {
                return Ok((e, false));
            }
            return Err(format!("epoch {} of {channel} is past; the newest is {}", epoch.number, e.number));
        }
        map.insert(channel.to_owned(), EpochRecord::of(epoch));
        Ok((epoch.clone(), true))
    }
}

impl EpochStore for FileEpochs {
    fn latest<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Option<Epoch>, String>> {
        Box::pin(async move { Ok(self.read()?.get(channel).and_then(EpochRecord::epoch)) })
    }

    fn propose<'a>(&'a self, channel: &'a str, epoch: &'a Epoch) -> BoxFuture<'a, Result<Epoch, String>> {
        // A few file operations under a lock held by another process for as long.
        Box::pin(async move { self.propose_now(channel, epoch) })
    }

    fn touch<'a>(&'a self, channel: &'a str, number: u64, at_us: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.touch_now(&[(channel.to_owned(), number)], at_us) })
    }

    /// One read and at most one write of the file for every channel.
    fn touch_all<'a>(&'a self, cutting: &'a [(String, u64)], at_us: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.touch_now(cutting, at_us) })
    }

    /// One read of the file for every channel.
    fn latest_all<'a>(&'a self, channels: &'a [String]) -> BoxFuture<'a, Result<HashMap<String, Epoch>, String>> {
        Box::pin(async move {
            let all = self.read()?;
            Ok(channels.iter().filter_map(|c| Some((c.clone(), all.get(c)?.epoch()?))).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(number: u64, seq0: u64) -> Epoch {
        Epoch { number, clock: FeedClock::Rtmp, raw0: 0, seq0, wall0_us: 1, piece_ms: 50, cut_at_us: 0 }
    }

    #[tokio::test]
    async fn the_first_proposal_of_a_number_is_the_one_kept() {
        let store = MemoryEpochs::default();
        assert_eq!(store.latest("news").await, Ok(None));
        assert_eq!(store.propose("news", &epoch(1, 10)).await, Ok(epoch(1, 10)));
        // A second node proposing number 1 gets the first one back.
        assert_eq!(store.propose("news", &epoch(1, 11)).await, Ok(epoch(1, 10)));
        store.propose("news", &epoch(2, 99)).await.expect("stored");
        assert_eq!(store.latest("news").await, Ok(Some(epoch(2, 99))));
        assert_eq!(store.latest("sport").await, Ok(None));
    }

    #[tokio::test]
    async fn a_file_store_is_shared_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("shoal-epochs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("epochs.json");
        let _ = std::fs::remove_file(&path);
        let (a, b) = (FileEpochs::open(path.clone()), FileEpochs::open(path.clone()));
        assert_eq!(a.propose("news", &epoch(3, 500)).await, Ok(epoch(3, 500)));
        // Another node on the same directory: the first proposal of a number is kept.
        assert_eq!(b.propose("news", &epoch(3, 501)).await, Ok(epoch(3, 500)));
        assert!(b.propose("news", &epoch(2, 1)).await.is_err(), "an older number than the newest");
        b.propose("sport", &epoch(1, 7)).await.expect("stored");
        // Who is cutting it: only forward.
        a.touch("news", 3, 900).await.expect("touched");
        b.touch("news", 3, 800).await.expect("touched");
        b.touch("news", 2, 5_000).await.expect("an old number: nothing to do");
        let again = FileEpochs::open(path.clone());
        assert_eq!(again.latest("news").await, Ok(Some(Epoch { cut_at_us: 900, ..epoch(3, 500) })));
        assert_eq!(again.latest("sport").await, Ok(Some(epoch(1, 7))));
        // Every channel a node cuts, in one write; one read for every channel's newest.
        let cutting = [("news".to_owned(), 3), ("sport".to_owned(), 1), ("weather".to_owned(), 1)];
        a.touch_all(&cutting, 1_200).await.expect("touched");
        let asked = ["news".to_owned(), "sport".to_owned(), "weather".to_owned()];
        let latest = again.latest_all(&asked).await.expect("read");
        assert_eq!(latest.len(), 2, "no epoch of `weather`: left out");
        assert_eq!(latest["news"], Epoch { cut_at_us: 1_200, ..epoch(3, 500) });
        assert_eq!(latest["sport"], Epoch { cut_at_us: 1_200, ..epoch(1, 7) });
        // The defaults (one call per channel) agree with the file's own.
        let memory = MemoryEpochs::default();
        memory.propose("news", &epoch(3, 500)).await.expect("stored");
        memory.touch_all(&cutting, 1_200).await.expect("touched");
        let from_memory = memory.latest_all(&asked).await.expect("read");
        assert_eq!(from_memory.len(), 1);
        assert_eq!(from_memory["news"], latest["news"]);
        // A damaged file is an error (numbering afresh could go back), not an empty store.
        std::fs::write(&path, b"{ not json").expect("write");
        assert!(FileEpochs::open(path).latest("news").await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
