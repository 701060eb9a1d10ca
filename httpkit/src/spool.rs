//! Sending the same bytes to many clients without copying them into each socket.
//!
//! A server that sends one buffer to thousands of clients (a seeder's LL-HLS parts)
//! spends a fifth of its CPU copying that buffer into socket buffers, once per client:
//! `write` copies, `sendfile` does not — the kernel hands the file's pages to the socket.
//! nginx serves files that way. A [`Spool`] gives shared [`Bytes`] the same path: it
//! writes them once into an unnamed file and notes where they are in a [`SpoolIndex`];
//! the kit's connections ([`ServerConfig::spool`]) send any response bytes that the
//! index knows with `sendfile` from that file, and everything else as before.
//!
//! The file is an `O_TMPFILE` in the system's temporary directory (`TMPDIR`), which
//! has no name and is gone when closed: on a disk file system its pages are page
//! cache, which the kernel splices into sockets in batches — measured 7 % less CPU per
//! byte than from `memfd` (shared memory, spliced a page at a time). Where the
//! directory can't hold one (tmpfs, some overlay file systems) it is a `memfd`.
//!
//! The index is keyed by the address of the bytes, and holds a clone of each `Bytes`
//! it lists: while listed, that memory can't be freed, so nothing else can live at
//! that address, and a write of bytes from that range is a write of those very bytes
//! (`Bytes` never change). A spool dropped (its segment out of the window) unlists
//! them; a connection still sending them then falls back to `write`. On other systems
//! than Linux, and if a file can't be made (out of descriptors), bytes are simply not
//! spooled — they are still served, by `write`.
//!
//! [`ServerConfig::spool`]: crate::ServerConfig::spool

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

/// Where spooled bytes are: their address → the file and offset holding a copy.
#[derive(Debug, Clone, Default)]
pub struct SpoolIndex(Arc<RwLock<BTreeMap<usize, Entry>>>);

#[derive(Debug)]
struct Entry {
    file: Arc<File>,
    offset: u64,
    /// Keeps the memory (and so the address) theirs while listed.
    bytes: Bytes,
}

impl SpoolIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// The file and offset holding `buf`, if `buf` lies within spooled bytes.
    pub fn find(&self, buf: &[u8]) -> Option<(Arc<File>, u64)> {
        let at = buf.as_ptr() as usize;
        let map = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, e) = map.range(..=at).next_back()?;
        let within = at - start;
        (within + buf.len() <= e.bytes.len()).then(|| (e.file.clone(), e.offset + within as u64))
    }

    /// How many buffers are listed.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The page size that [`Spool::align`] aligns to.
const PAGE: u64 = 4096;

/// One unnamed file of buffers, listed in an index until dropped.
#[derive(Debug)]
pub struct Spool {
    index: SpoolIndex,
    file: Arc<File>,
    len: u64,
    listed: Vec<usize>,
}

impl Spool {
    /// A new, empty file; fails where the system has no unnamed files or no
    /// descriptor left.
    pub fn new(index: &SpoolIndex) -> io::Result<Spool> {
        Ok(Spool {
            index: index.clone(),
            file: Arc::new(unnamed_file(&std::env::temp_dir())?),
            len: 0,
            listed: Vec::new(),
        })
    }

    /// Starts what is put next on a page of its own (the file keeps a hole): a
    /// response that begins there is sent from whole pages.
    pub fn align(&mut self) {
        self.len = self.len.next_multiple_of(PAGE);
    }

    /// Appends `bytes` to the file and lists them. Empty buffers, and buffers whose
    /// memory is already listed, are left out.
    pub fn put(&mut self, bytes: &Bytes) -> io::Result<()> {
        if bytes.is_empty() || self.index.find(bytes).is_some() {
            return Ok(());
        }
        write_at(&self.file, bytes, self.len)?;
        let at = bytes.as_ptr() as usize;
        let mut map = self.index.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(at, Entry { file: self.file.clone(), offset: self.len, bytes: bytes.clone() });
        self.listed.push(at);
        self.len += bytes.len() as u64;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let mut map = self.index.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for at in &self.listed {
            // Only this spool's entry: another may have listed the address since.
            if map.get(at).is_some_and(|e| Arc::ptr_eq(&e.file, &self.file)) {
                map.remove(at);
            }
        }
    }
}

/// An `O_TMPFILE` in `dir`, or else a `memfd`.
#[cfg(target_os = "linux")]
fn unnamed_file(dir: &std::path::Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let tmp = rustix::fs::open(dir, OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC, Mode::RUSR | Mode::WUSR);
    let fd = match tmp {
        Ok(fd) => fd,
        Err(_) => rustix::fs::memfd_create("shoal-spool", rustix::fs::MemfdFlags::CLOEXEC)?,
    };
    Ok(File::from(fd))
}

#[cfg(not(target_os = "linux"))]
fn unnamed_file(_: &std::path::Path) -> io::Result<File> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "spool files are Linux-only"))
}

fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
    }
    #[cfg(not(unix))]
    {
        let _ = (file, bytes, offset);
        Err(io::Error::new(io::ErrorKind::Unsupported, "spool files are Linux-only"))
    }
}

/// `sendfile(socket, file, offset, len)`: how many bytes went (`WouldBlock` when the
/// socket's buffer is full).
#[cfg(target_os = "linux")]
pub(crate) fn send_file(socket: &tokio::net::TcpStream, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = offset;
    Ok(rustix::fs::sendfile(socket, file, Some(&mut off), len)?)
}

/// `sendmsg(socket, bufs, MSG_MORE)`: more follows at once, so the kernel holds a
/// partial packet back for it.
#[cfg(target_os = "linux")]
pub(crate) fn send_more(socket: &tokio::net::TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendFlags, sendmsg};
    Ok(sendmsg(socket, bufs, &mut SendAncillaryBuffer::default(), SendFlags::MORE | SendFlags::NOSIGNAL)?)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn send_more(_: &tokio::net::TcpStream, _: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "sendmsg(MSG_MORE) is Linux-only"))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn send_file(_: &tokio::net::TcpStream, _: &File, _: u64, _: usize) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "sendfile is Linux-only"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::FileExt;

    fn read(file: &File, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        file.read_exact_at(&mut out, offset).unwrap();
        out
    }

    #[test]
    fn spooled_bytes_are_found_by_address_with_their_place_in_the_file() {
        let index = SpoolIndex::new();
        let mut spool = Spool::new(&index).unwrap();
        let whole = Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<u8>>());
        let (first, second) = (whole.slice(..4_000), whole.slice(4_000..));
        spool.put(&second).unwrap();
        spool.put(&first).unwrap();
        spool.put(&first.slice(10..20)).unwrap(); // already listed: left out
        spool.put(&Bytes::new()).unwrap();
        assert_eq!(index.len(), 2);

        let (file, offset) = index.find(&second).unwrap();
        assert_eq!((offset, read(&file, offset, second.len())), (0, second.to_vec()));
        let inner = first.slice(100..300);
        let (file, offset) = index.find(&inner).unwrap();
        assert_eq!((offset, read(&file, offset, inner.len())), (6_000 + 100, inner.to_vec()));
        // Bytes running past a listed buffer, equal bytes elsewhere in memory: not spooled.
        assert!(index.find(&whole[3_990..4_010]).is_none());
        let elsewhere = first.to_vec();
        assert!(index.find(&elsewhere).is_none());
        drop(spool);
        assert!(index.is_empty() && index.find(&second).is_none());
    }

    #[test]
    fn bytes_put_after_align_start_on_a_page_of_their_own() {
        let index = SpoolIndex::new();
        let mut spool = Spool::new(&index).unwrap();
        let (a, b) = (Bytes::from(vec![1u8; 5_000]), Bytes::from(vec![2u8; 100]));
        spool.align(); // at 0 already: stays
        spool.put(&a).unwrap();
        spool.align();
        spool.put(&b).unwrap();
        assert_eq!(index.find(&a).unwrap().1, 0);
        let (file, offset) = index.find(&b).unwrap();
        assert_eq!((offset, read(&file, offset, 100)), (8_192, b.to_vec()));
    }

    #[test]
    fn without_a_directory_for_unnamed_files_the_spool_is_a_memfd() {
        let file = unnamed_file(std::path::Path::new("/proc/no-such-dir")).unwrap();
        write_at(&file, b"parts", 0).unwrap();
        assert_eq!(read(&file, 0, 5), b"parts");
    }
}
