//! Buffers recycled: once every holder of a piece (the live window, seeder streams,
//! the debug tap) has let it go, its buffer comes back to the channel's pool and
//! carries a later piece; a video frame's, once the segmenter has packetized it.
//!
//! Why: a piece buffer is tens to hundreds of KiB, a size glibc serves from fresh pages
//! (`mmap`, or a grown heap) and gives back to the kernel on free, so every new piece
//! was paid for again in page faults and kernel page zeroing: 16 % of `shoal ingest`'s
//! CPU in `shoal bench ingest-vs-nginx --piece-ms 250` (perf, 2026-11-28). With the
//! pool, a channel whose window is full allocates nothing per piece.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;

/// Buffers kept for reuse at most: the window lets one piece go per piece it takes, so a
/// few cover the pieces seeders still hold a little longer.
pub const KEEP: usize = 8;

type Shelf = Mutex<Vec<Vec<u8>>>;

/// A channel's spare piece buffers.
#[derive(Debug, Clone, Default)]
pub struct BufferPool(Arc<Shelf>);

fn lock(shelf: &Shelf) -> MutexGuard<'_, Vec<Vec<u8>>> {
    shelf.lock().unwrap_or_else(|e| e.into_inner())
}

impl BufferPool {
    /// An empty buffer with room for at least `capacity` bytes: a recycled one if any.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let spare = lock(&self.0).pop();
        match spare {
            Some(mut buf) => {
                buf.reserve(capacity);
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// `buf` as shared bytes (no copy) whose buffer comes back to this pool when the
    /// last holder drops them.
    pub fn share(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Returned { buf, shelf: Arc::downgrade(&self.0) })
    }

    /// Buffers waiting for reuse.
    pub fn spare(&self) -> usize {
        lock(&self.0).len()
    }
}

/// A buffer lent out as [`Bytes`]; goes back on the shelf when dropped (unless the
/// shelf is full or its channel is gone).
struct Returned {
    buf: Vec<u8>,
    shelf: Weak<Shelf>,
}

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        let Some(shelf) = self.shelf.upgrade() else { return };
        let mut spare = lock(&shelf);
        if spare.len() < KEEP {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            spare.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_when_its_last_holder_drops_it() {
        let pool = BufferPool::default();
        let mut buf = pool.take(1000);
        buf.extend_from_slice(b"piece one");
        let ptr = buf.as_ptr();
        let bytes = pool.share(buf);
        let copy = bytes.slice(6..);
        assert_eq!(&bytes[..], b"piece one");
        drop(bytes);
        assert_eq!(pool.spare(), 0, "still held by a slice");
        assert_eq!(&copy[..], b"one");
        drop(copy);
        assert_eq!(pool.spare(), 1);
        let again = pool.take(500);
        assert!(again.is_empty());
        assert!(again.capacity() >= 1000);
        assert_eq!(again.as_ptr(), ptr, "the same allocation is reused");
        assert_eq!(pool.spare(), 0);
    }

    #[test]
    fn the_shelf_is_bounded_and_outlived_safely() {
        let pool = BufferPool::default();
        let held: Vec<Bytes> = (0..KEEP + 5).map(|i| pool.share(vec![i as u8; 10])).collect();
        drop(held);
        assert_eq!(pool.spare(), KEEP);
        let orphan = pool.share(vec![1, 2, 3]);
        drop(pool);
        assert_eq!(&orphan[..], &[1, 2, 3]);
        drop(orphan); // the pool is gone: the buffer is simply freed
    }
}
