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

/// Buffers kept for reuse per size class at most: the window lets one piece go per
/// piece it takes, so a few cover the pieces seeders still hold a little longer.
pub const KEEP: usize = 32;

/// The smallest capacity [`BufferPool::take`] hands out.
pub const MIN_CLASS: usize = 4 * 1024;

/// Buffers above this are freed when let go, not kept (a rare huge keyframe).
pub const MAX_CLASS: usize = 1024 * 1024;

/// Size classes: `MIN_CLASS << i` for `i < CLASSES`.
const CLASSES: usize = (MAX_CLASS / MIN_CLASS).trailing_zeros() as usize + 1;

/// Spare buffers by size class.
type Shelf = Mutex<[Vec<Vec<u8>>; CLASSES]>;

/// A channel's spare piece (or frame) buffers.
#[derive(Debug, Clone, Default)]
pub struct BufferPool(Arc<Shelf>);

fn lock(shelf: &Shelf) -> MutexGuard<'_, [Vec<Vec<u8>>; CLASSES]> {
    shelf.lock().unwrap_or_else(|e| e.into_inner())
}

/// The capacity of what [`BufferPool::take`] hands out for `n` bytes: the smallest
/// class that holds them (above [`MAX_CLASS`], a power of two of no class).
pub fn class_capacity(n: usize) -> usize {
    n.max(MIN_CLASS).next_power_of_two()
}

/// The class of a buffer of exactly `capacity` (a power of two within the classes).
fn class_of(capacity: usize) -> Option<usize> {
    (capacity.is_power_of_two() && (MIN_CLASS..=MAX_CLASS).contains(&capacity))
        .then(|| (capacity / MIN_CLASS).trailing_zeros() as usize)
}

impl BufferPool {
    /// An empty buffer with room for at least `capacity` bytes: a spare of its size
    /// class if any (capacities are powers of two from [`MIN_CLASS`]), else a new one.
    /// A caller that knows the size it will write asks for it, so the buffer never
    /// grows. Before classes, spares were a little too small as often as not, and were
    /// grown (`realloc` copies all a buffer ever held) or replaced: new pages for most
    /// pieces, 240 page faults a second in `shoal bench ingest-vs-nginx` (Intel Xeon,
    /// 2026-12-05, docs/measurements.md).
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let size = class_capacity(capacity);
        class_of(size).and_then(|c| lock(&self.0)[c].pop()).unwrap_or_else(|| Vec::with_capacity(size))
    }

    /// `buf` as shared bytes (no copy) whose buffer comes back to this pool when the
    /// last holder drops them.
    pub fn share(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Returned { buf, shelf: Arc::downgrade(&self.0) })
    }

    /// Puts a buffer that was taken and never shared back on its shelf (a piece's
    /// buffer that turned out too small for it).
    pub fn give_back(&self, buf: Vec<u8>) {
        shelve(&self.0, buf);
    }

    /// Buffers waiting for reuse.
    pub fn spare(&self) -> usize {
        lock(&self.0).iter().map(Vec::len).sum()
    }
}

/// A buffer lent out as [`Bytes`]; goes back on its class's shelf when dropped (unless
/// that is full, the buffer is of no class, or its channel is gone).
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
        if let Some(shelf) = self.shelf.upgrade() {
            shelve(&shelf, std::mem::take(&mut self.buf));
        }
    }
}

/// Keeps `buf` for its class, unless that shelf is full or it is of no class.
fn shelve(shelf: &Shelf, mut buf: Vec<u8>) {
    let Some(class) = class_of(buf.capacity()) else { return };
    let mut spare = lock(shelf);
    if spare[class].len() < KEEP {
        buf.clear();
        spare[class].push(buf);
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
    fn buffers_come_in_size_classes_and_a_spare_serves_its_class_only() {
        let pool = BufferPool::default();
        let small = pool.take(5_000);
        assert_eq!(small.capacity(), 8_192);
        let small_ptr = small.as_ptr();
        drop(pool.share(small));
        // Another class: a new buffer; the spare stays for its own class.
        let big = pool.take(20_000);
        assert_eq!(big.capacity(), 32_768);
        assert_eq!(pool.spare(), 1);
        let big_ptr = big.as_ptr();
        drop(pool.share(big));
        let again = pool.take(17_000);
        assert_eq!((again.capacity(), again.as_ptr()), (32_768, big_ptr));
        let again_small = pool.take(8_192);
        assert_eq!((again_small.capacity(), again_small.as_ptr()), (8_192, small_ptr));
        assert_eq!(pool.spare(), 0);
        // A buffer of no class (not of a class's size, or huge) is not kept.
        drop(pool.share(Vec::with_capacity(5_000)));
        drop(pool.share(Vec::with_capacity(2 * MAX_CLASS)));
        assert_eq!(pool.spare(), 0);
    }

    #[test]
    fn the_shelf_is_bounded_and_outlived_safely() {
        let pool = BufferPool::default();
        let held: Vec<Bytes> = (0..KEEP + 5)
            .map(|i| {
                let mut buf = pool.take(10);
                buf.extend_from_slice(&[i as u8; 10]);
                pool.share(buf)
            })
            .collect();
        drop(held);
        assert_eq!(pool.spare(), KEEP);
        let mut buf = pool.take(3);
        buf.extend_from_slice(&[1, 2, 3]);
        let orphan = pool.share(buf);
        drop(pool);
        assert_eq!(&orphan[..], &[1, 2, 3]);
        drop(orphan); // the pool is gone: the buffer is simply freed
    }
}
