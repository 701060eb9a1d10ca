//! Where ingest nodes agree on a channel's epochs ([`crate::media::epoch`]): the
//! catalogue when ingest runs on one (`shoal ingest --database-url`, `shoal up`), a
//! file beside the channel file otherwise, memory in tests.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

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
///
/// Who is cutting an epoch (its `cut_at_us`, touched twice a second by every node
/// that cuts it) is kept apart, in a 16-byte file per channel and number under
/// `epochs.cut/`, rewritten in place under the same lock: a touch is a read and a write
/// on files kept open, where rewriting the JSON file took an open, a parse, a
/// serialisation and a rename each time — 5.5 % of `shoal ingest`'s CPU in `shoal
/// bench ingest-vs-nginx` (Intel Xeon, 2026-12-05, docs/measurements.md).
#[derive(Debug)]
pub struct FileEpochs {
    path: PathBuf,
    /// `epochs.json.lock`, opened once.
    lock_file: Mutex<Option<File>>,
    /// The attendance file of the epoch this process last touched, by channel.
    cut: Mutex<HashMap<String, (u64, File)>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EpochRecord {
    number: u64,
    clock: String,
    raw0: u64,
    seq0: u64,
    wall0_us: u64,
    piece_ms: u32,
    /// Written by versions that kept attendance in this file; read still.
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

/// An attendance file's bytes: the time, then its complement, so that a read that
/// raced a write (the file is rewritten in place) is seen as such.
fn attendance_bytes(at_us: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&at_us.to_le_bytes());
    b[8..].copy_from_slice(&(!at_us).to_le_bytes());
    b
}

/// The time in an attendance file's bytes; `None` for a new (empty) or torn one.
fn attendance_of(b: &[u8]) -> Option<u64> {
    let at = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let check = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
    (check == !at).then_some(at)
}

/// Holds `epochs.json.lock` until dropped.
struct Locked<'a>(MutexGuard<'a, Option<File>>);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.0.as_ref() {
            let _ = f.unlock();
        }
    }
}

impl FileEpochs {
    pub fn open(path: PathBuf) -> Self {
        FileEpochs { path, lock_file: Mutex::new(None), cut: Mutex::default() }
    }

    /// Where a channel's attendance files are.
    fn cut_dir(&self) -> PathBuf {
        self.path.with_extension("cut")
    }

    /// The attendance file of `channel`'s epoch `number` (channel names hold no '.').
    fn cut_path(&self, channel: &str, number: u64) -> PathBuf {
        self.cut_dir().join(format!("{channel}.{number}"))
    }

    /// The lock every process sharing the file takes to change it.
    fn lock(&self) -> Result<Locked<'_>, String> {
        let mut file = lock(&self.lock_file);
        if file.is_none() {
            let lock_path = self.path.with_extension("json.lock");
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
            *file = Some(f);
        }
        if let Some(f) = file.as_ref() {
            f.lock().map_err(|e| format!("locking {}: {e}", self.path.with_extension("json.lock").display()))?;
        }
        Ok(Locked(file))
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

    /// The record's epoch with the newest attendance any node left for it.
    fn epoch_of(&self, channel: &str, record: &EpochRecord) -> Option<Epoch> {
        let mut e = record.epoch()?;
        // A read that raced a write is read again; one that keeps failing counts as none.
        let path = self.cut_path(channel, e.number);
        let at = (0..3).find_map(|_| attendance_of(&std::fs::read(&path).ok()?)).unwrap_or(0);
        e.cut_at_us = e.cut_at_us.max(at);
        Some(e)
    }

    /// Runs `change` on the file's epochs under the lock, writing them back if it says so.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut HashMap<String, EpochRecord>) -> Result<(T, bool), String>,
    ) -> Result<T, String> {
        let _locked = self.lock()?;
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

    /// Moves each epoch's attendance forward to `at_us`, under the lock, on attendance
    /// files kept open (one per channel: the epoch this node cuts now).
    fn touch_now(&self, cutting: &[(String, u64)], at_us: u64) -> Result<(), String> {
        let _locked = self.lock()?;
        let mut open = lock(&self.cut);
        let mut first = Ok(());
        for (channel, number) in cutting {
            let r = self.touch_one(&mut open, channel, *number, at_us);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn touch_one(
        &self,
        open: &mut HashMap<String, (u64, File)>,
        channel: &str,
        number: u64,
        at_us: u64,
    ) -> Result<(), String> {
        let path = self.cut_path(channel, number);
        let err = |e: std::io::Error| format!("touching {}: {e}", path.display());
        if open.get(channel).is_none_or(|(n, _)| *n != number) {
            // Only for an epoch the file holds: one proposed since is not touched back to life.
            if self.read()?.get(channel).is_none_or(|r| r.number != number) {
                open.remove(channel);
                return Ok(());
            }
            std::fs::create_dir_all(self.cut_dir()).map_err(err)?;
            let f = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(err)?;
            open.insert(channel.to_owned(), (number, f));
        }
        let Some((_, f)) = open.get(channel) else { return Ok(()) };
        let mut now = [0u8; 16];
        let n = f.read_at(&mut now, 0).map_err(err)?;
        if attendance_of(&now[..n]).is_none_or(|was| was < at_us) {
            f.write_all_at(&attendance_bytes(at_us), 0).map_err(err)?;
        }
        Ok(())
    }

    fn propose_now(&self, channel: &str, epoch: &Epoch) -> Result<Epoch, String> {
        let (stored, replaced) = self.change(|map| {
            let before = map.get(channel).map(|r| r.number);
            let (stored, write) = Self::propose_in(map, channel, epoch)?;
            Ok(((stored, before.filter(|_| write)), write))
        })?;
        // The attendance of the epoch it replaced is of no more use.
        if let Some(old) = replaced {
            let _ = std::fs::remove_file(self.cut_path(channel, old));
        }
        Ok(stored)
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
        Box::pin(async move { Ok(self.read()?.get(channel).and_then(|r| self.epoch_of(channel, r))) })
    }

    fn propose<'a>(&'a self, channel: &'a str, epoch: &'a Epoch) -> BoxFuture<'a, Result<Epoch, String>> {
        // A few file operations under a lock held by another process for as long.
        Box::pin(async move { self.propose_now(channel, epoch) })
    }

    fn touch<'a>(&'a self, channel: &'a str, number: u64, at_us: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.touch_now(&[(channel.to_owned(), number)], at_us) })
    }

    /// One lock for every channel.
    fn touch_all<'a>(&'a self, cutting: &'a [(String, u64)], at_us: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.touch_now(cutting, at_us) })
    }

    /// One read of the file for every channel.
    fn latest_all<'a>(&'a self, channels: &'a [String]) -> BoxFuture<'a, Result<HashMap<String, Epoch>, String>> {
        Box::pin(async move {
            let all = self.read()?;
            Ok(channels.iter().filter_map(|c| Some((c.clone(), self.epoch_of(c, all.get(c)?)?))).collect())
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
        // Every channel a node cuts, under one lock; one read for every channel's newest.
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
        // Attendance lives beside the file, one 16-byte file per channel and number, and
        // goes with its epoch: a newer epoch starts unattended.
        let cut = dir.join("epochs.cut");
        assert!(cut.join("news.3").is_file() && !cut.join("news.2").exists());
        b.propose("news", &epoch(4, 900)).await.expect("stored");
        assert!(!cut.join("news.3").exists(), "the replaced epoch's attendance is removed");
        a.touch("news", 3, 1_300).await.expect("an epoch no longer the newest: nothing to do");
        assert!(!cut.join("news.3").exists());
        assert_eq!(again.latest("news").await, Ok(Some(epoch(4, 900))));
        a.touch("news", 4, 1_400).await.expect("touched");
        assert_eq!(again.latest("news").await, Ok(Some(Epoch { cut_at_us: 1_400, ..epoch(4, 900) })));
        // Bytes that are not a time and its complement (a read that raced a write, or
        // damage) count as no attendance, and the next touch writes a good one.
        std::fs::write(cut.join("news.4"), b"0123456789abcdef").expect("write");
        assert_eq!(again.latest("news").await, Ok(Some(epoch(4, 900))));
        a.touch("news", 4, 1_500).await.expect("touched");
        assert_eq!(again.latest("news").await, Ok(Some(Epoch { cut_at_us: 1_500, ..epoch(4, 900) })));
        // A damaged file is an error (numbering afresh could go back), not an empty store.
        std::fs::write(&path, b"{ not json").expect("write");
        assert!(FileEpochs::open(path).latest("news").await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
