//! Buffers that hold plaintext: allocated once at the size they need, wiped in bulk
//! when dropped, and never grown by a reallocation that would leave an unwiped copy
//! behind.
//!
//! `zeroize`'s `impl Zeroize for Vec<u8>` wipes element by element (one volatile store
//! per byte, ~20× slower than a bulk wipe at 1 MiB), and `Zeroizing<Vec<u8>>` uses it.
//! [`wipe`] wipes the initialized bytes and the spare capacity with the bulk
//! `<[u8]>::zeroize` / `<[MaybeUninit<u8>]>::zeroize`, which give the same guarantee
//! (writes the compiler may not remove).

use std::ops::{Deref, DerefMut, Range};

use zeroize::Zeroize;

/// Wipe `v` (contents and spare capacity, in bulk) and empty it.
pub(crate) fn wipe(v: &mut Vec<u8>) {
    v.as_mut_slice().zeroize();
    v.spare_capacity_mut().zeroize();
    v.clear();
}

/// A byte buffer holding plaintext, wiped on drop.
#[derive(Default)]
pub(crate) struct PlainBuf(Vec<u8>);

impl std::fmt::Debug for PlainBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlainBuf(<{} bytes redacted>)", self.0.len())
    }
}

impl PlainBuf {
    /// An empty buffer with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// A copy of `bytes`, in an allocation of exactly their size.
    pub(crate) fn copy_of(bytes: &[u8]) -> Self {
        let mut v = Vec::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        Self(v)
    }

    /// Append `bytes`. When the allocation is too small, the contents move to a new one
    /// (at least twice as large) and the old one is wiped, rather than being left to
    /// the allocator as `Vec`'s own growth would.
    pub(crate) fn extend_secure(&mut self, bytes: &[u8]) {
        let needed = self.0.len().saturating_add(bytes.len());
        if needed > self.0.capacity() {
            let mut grown = Vec::with_capacity(needed.max(self.0.capacity().saturating_mul(2)));
            grown.extend_from_slice(&self.0);
            let mut old = std::mem::replace(&mut self.0, grown);
            wipe(&mut old);
        }
        self.0.extend_from_slice(bytes);
    }

    /// Make the allocation hold at least `capacity` bytes: when it is smaller, the
    /// contents move to a new one of exactly `capacity` bytes and the old one is
    /// wiped.
    pub(crate) fn reserve_total_secure(&mut self, capacity: usize) {
        if capacity > self.0.capacity() {
            let mut grown = Vec::with_capacity(capacity);
            grown.extend_from_slice(&self.0);
            let mut old = std::mem::replace(&mut self.0, grown);
            wipe(&mut old);
        }
    }

    /// Keep only the bytes in `ranges` (ascending, non-overlapping), moved to the front
    /// in order; wipe everything else; and hand the vector over. Its new owner must
    /// wipe it (as [`super::Request`] and [`super::Response`] do on drop).
    pub(crate) fn into_compacted(mut self, ranges: &[Range<usize>]) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        let mut len = 0usize;
        for r in ranges {
            // Each range starts at or after `len` (they ascend), so this moves bytes
            // towards the front without overwriting any that are still to move.
            if r.start <= r.end && r.end <= v.len() && r.start >= len {
                v.copy_within(r.clone(), len);
                len += r.len();
            }
        }
        if let Some(rest) = v.get_mut(len..) {
            rest.zeroize();
        }
        v.truncate(len);
        v
    }

    /// [`PlainBuf::into_compacted`] with one range.
    pub(crate) fn into_range(self, range: Range<usize>) -> Vec<u8> {
        self.into_compacted(std::slice::from_ref(&range))
    }

    /// The contents were sealed in place and are no longer plaintext: hand them over
    /// without wiping.
    pub(crate) fn into_sealed(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl From<Vec<u8>> for PlainBuf {
    /// Take over `v`, which will be wiped.
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl Deref for PlainBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for PlainBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for PlainBuf {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_empties_and_keeps_the_allocation() {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0xaa; 48]);
        v.truncate(16);
        wipe(&mut v);
        assert!(v.is_empty());
        assert!(v.capacity() >= 64, "the allocation is kept, only wiped");
    }

    #[test]
    fn compaction_keeps_ranges_in_order_and_wipes_the_rest() {
        let mut b = PlainBuf::with_capacity(16);
        b.extend_from_slice(b"..abc..de.f");
        let v = b.into_compacted(&[2..5, 7..9, 10..11]);
        assert_eq!(v, b"abcdef");
        let b = PlainBuf::copy_of(b"xxhello");
        assert_eq!(b.into_range(2..7), b"hello");
        let b = PlainBuf::copy_of(b"abc");
        assert_eq!(b.into_compacted(&[]), b"");
    }

    #[test]
    fn reserve_total_secure_grows_exactly_and_keeps_the_contents() {
        let mut b = PlainBuf::copy_of(b"abc");
        b.reserve_total_secure(2);
        assert_eq!(b.capacity(), 3);
        b.reserve_total_secure(100);
        assert_eq!(b.capacity(), 100);
        assert_eq!(&b[..], b"abc");
    }

    #[test]
    fn extend_secure_grows() {
        let mut b = PlainBuf::with_capacity(2);
        for i in 0..100u8 {
            b.extend_secure(&[i, i]);
        }
        assert_eq!(b.len(), 200);
        assert_eq!(b[199], 99);
    }
}
