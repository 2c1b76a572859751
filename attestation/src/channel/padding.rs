//! Padding: what an observer of sealed traffic learns about sizes.
//!
//! # Whole messages
//!
//! A sealed request or response carries one Binary HTTP message followed by zero bytes
//! (RFC 9292 §3.8 allows padding a message with trailing zeros), so that its length is
//! [`bucket`]`(len)`:
//!
//! - up to 64 KiB: the next power of two, at least 1 KiB. Prompts and completions of
//!   similar size are indistinguishable; the cost is under 2× and at most 32 KiB.
//! - above 64 KiB: Padmé (Nikitin et al., PETS 2019): the length keeps only its top
//!   ⌊log2 ⌊log2 L⌋⌋ + 1 bits. The cost is at most 12 % and about 3 % at 1 MiB (for
//!   example 1 MiB + 100 B pads to 1 MiB + 32 KiB), and it leaks O(log log L) bits.
//!
//! # Streams
//!
//! Each chunk of a sealed stream (one server-sent event, or the response head, or the
//! end of the message) is padded to [`chunk_bucket`]`(len)`: 512 bytes, then powers of two
//! up to 16 KiB, then whole 16 KiB chunks. A streamed token (a few bytes of text in
//! ~200 bytes of JSON) always fills one 512-byte chunk, so token lengths do not show;
//! the cost is up to 512 bytes per event instead of ~200 (about 2.5×). Events are padded
//! with an SSE comment line (`:` then spaces, `\n`), which every SSE parser ignores, so
//! the stream stays a standard `text/event-stream` inside a standard chunked OHTTP
//! Binary HTTP message; the head with a `veil-padding` header field; the end with
//! RFC 9292 trailing zeros.
//!
//! The AEAD tag (16 bytes) and framing (1–8 bytes per chunk) come on top and are the
//! same for every message of a bucket.

/// Smallest whole-message bucket.
pub const MIN_MESSAGE: usize = 1024;
/// Largest size that is padded to a power of two; Padmé above.
pub const POW2_LIMIT: usize = 64 * 1024;
/// Smallest stream chunk.
pub const MIN_CHUNK: usize = 512;
/// Largest plaintext in one chunk (`ohttp`'s limit); bigger events span several full
/// chunks.
pub const MAX_CHUNK: usize = 16 * 1024;

/// The padded length of a whole message of `len` bytes.
#[must_use]
pub fn bucket(len: usize) -> usize {
    if len <= MIN_MESSAGE {
        MIN_MESSAGE
    } else if len <= POW2_LIMIT {
        len.next_power_of_two()
    } else {
        padme(len)
    }
}

/// Padmé: round `len` up so that only its top ⌊log2 E⌋ + 1 bits vary, where E = ⌊log2 len⌋.
#[must_use]
pub fn padme(len: usize) -> usize {
    if len < 2 {
        return len;
    }
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2 len)
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1
    let last_bits = e.saturating_sub(s);
    let mask = (1usize << last_bits) - 1;
    len.checked_add(mask).map_or(usize::MAX, |v| v & !mask)
}

/// The padded plaintext length of a stream chunk carrying `len` bytes.
#[must_use]
pub fn chunk_bucket(len: usize) -> usize {
    if len <= MIN_CHUNK {
        MIN_CHUNK
    } else if len <= MAX_CHUNK {
        len.next_power_of_two()
    } else {
        len.div_ceil(MAX_CHUNK).saturating_mul(MAX_CHUNK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_buckets() {
        assert_eq!(bucket(0), 1024);
        assert_eq!(bucket(1024), 1024);
        assert_eq!(bucket(1025), 2048);
        assert_eq!(bucket(65536), 65536);
        assert_eq!(bucket(65537), 65536 + 2048);
        assert_eq!(bucket((1 << 20) + 100), (1 << 20) + (1 << 15));
        assert_eq!(chunk_bucket(0), 512);
        assert_eq!(chunk_bucket(513), 1024);
        assert_eq!(chunk_bucket(16384), 16384);
        assert_eq!(chunk_bucket(16385), 32768);
        assert_eq!(chunk_bucket(40000), 49152);
    }

    proptest! {
        #[test]
        fn buckets_cover_and_bound_overhead(len in 0usize..(64 << 20)) {
            let b = bucket(len);
            prop_assert!(b >= len);
            prop_assert!(bucket(b) == b, "a bucket is its own bucket");
            if len > POW2_LIMIT {
                prop_assert!((b - len) as f64 <= 0.12 * len as f64);
            } else {
                prop_assert!(b <= (2 * len).max(MIN_MESSAGE));
            }
            let c = chunk_bucket(len);
            prop_assert!(c >= len && chunk_bucket(c) == c);
        }
    }
}
