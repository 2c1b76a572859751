//! Replay protection: a strike register of the encapsulated requests opened recently.
//!
//! An OHTTP request is identified by its encapsulated KEM share (`enc`): a client draws a
//! fresh one for every request, and a request whose `enc` was altered no longer opens.
//! The register keeps, for `window`, a 128-bit digest of the key configuration id and the
//! message's header and `enc` of every request that opened; the same request seen again
//! within the window is refused before the engine sees it.
//!
//! Bounds: at most `capacity` entries (each about 48 bytes with the map's and queue's
//! overhead, so the default 262,144 entries hold about 12 MiB). When the register is full
//! of entries still inside their window, a new request is refused with 503 rather than
//! admitted unguarded (fail closed); at the defaults that takes more than 870 requests a
//! second sustained for five minutes. A request replayed after its window has passed is
//! not caught here; DESIGN.md's answer to that is key rotation, and clients that send a
//! `date` inner header are held to the window by [`crate::inner`]'s freshness check.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use veil_attestation::bytes::Sha256Digest;
use veil_attestation::channel::KeyId;

/// The default window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// The default number of entries.
pub const DEFAULT_CAPACITY: usize = 262_144;
/// RFC 9458 §4.1 header: key id (1), KEM id (2), KDF id (2), AEAD id (2).
const HEADER_LEN: usize = 7;

/// The identity of one encapsulated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Strike([u8; 16]);

impl Strike {
    /// The strike for a request sealed to `key_id` whose KEM share is `enc_len` bytes long
    /// (the request's header and share; fewer when the message is shorter, which then does
    /// not open anyway).
    #[must_use]
    pub fn of(key_id: &KeyId, message: &[u8], enc_len: usize) -> Self {
        let end = message.len().min(HEADER_LEN + enc_len);
        let mut input = Vec::with_capacity(16 + end);
        input.extend_from_slice(key_id.as_bytes());
        input.extend_from_slice(message.get(..end).unwrap_or(message));
        let digest = Sha256Digest::of(&input);
        let mut out = [0u8; 16];
        out.copy_from_slice(digest.as_bytes().get(..16).unwrap_or(&[0u8; 16]));
        Self(out)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The same encapsulated request opened within the window.
    #[error("this encapsulated request was seen before")]
    Replayed,
    /// The register is full of entries still inside their window.
    #[error("the replay register is full")]
    Full,
}

#[derive(Debug, Default)]
struct State {
    seen: HashSet<Strike>,
    /// Entries in arrival order with their expiry; arrival order is expiry order.
    order: VecDeque<(Instant, Strike)>,
}

/// The strike register.
#[derive(Debug)]
pub struct ReplayGuard {
    window: Duration,
    capacity: usize,
    state: Mutex<State>,
}

impl ReplayGuard {
    /// A register holding requests for `window`, at most `capacity` of them.
    #[must_use]
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// The window.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The entry bound.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.seen.len())
    }

    /// Whether it holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `strike` at `now`, or says why the request must be refused.
    ///
    /// # Errors
    /// [`Refused::Replayed`] when it was recorded within the window; [`Refused::Full`]
    /// when the register holds `capacity` entries that are all inside their window. A
    /// poisoned lock also refuses (as `Full`): never admit unguarded.
    pub fn check(&self, strike: Strike, now: Instant) -> Result<(), Refused> {
        let Ok(mut s) = self.state.lock() else {
            return Err(Refused::Full);
        };
        while let Some(&(expiry, old)) = s.order.front() {
            if expiry > now {
                break;
            }
            s.order.pop_front();
            s.seen.remove(&old);
        }
        if s.seen.contains(&strike) {
            return Err(Refused::Replayed);
        }
        if s.seen.len() >= self.capacity {
            return Err(Refused::Full);
        }
        s.seen.insert(strike);
        s.order.push_back((now + self.window, strike));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strike(n: u8) -> Strike {
        Strike::of(&KeyId::of(b"config"), &[n; 40], 32)
    }

    #[test]
    fn a_request_seen_within_the_window_is_refused_and_accepted_after_it() {
        let g = ReplayGuard::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        assert_eq!(g.check(strike(1), t0), Ok(()));
        assert_eq!(g.check(strike(2), t0), Ok(()));
        assert_eq!(
            g.check(strike(1), t0 + Duration::from_secs(9)),
            Err(Refused::Replayed)
        );
        assert_eq!(g.len(), 2);
        // Past the window the entry is gone (and memory with it).
        assert_eq!(g.check(strike(1), t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_full_register_refuses_new_requests_until_entries_expire() {
        let g = ReplayGuard::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        for n in 0..3 {
            assert_eq!(
                g.check(strike(n), t0 + Duration::from_secs(u64::from(n))),
                Ok(())
            );
        }
        assert_eq!(
            g.check(strike(9), t0 + Duration::from_secs(5)),
            Err(Refused::Full)
        );
        // A replay is still named a replay when full.
        assert_eq!(
            g.check(strike(2), t0 + Duration::from_secs(5)),
            Err(Refused::Replayed)
        );
        // The oldest expires at t0+10: room for one.
        assert_eq!(g.check(strike(9), t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn the_strike_covers_the_key_header_and_share_only() {
        let id = KeyId::of(b"config");
        let mut a = vec![7u8; 100];
        let s = Strike::of(&id, &a, 32);
        // The ciphertext after the share does not change the strike...
        a[60] ^= 1;
        assert_eq!(Strike::of(&id, &a, 32), s);
        // ...the share, the header and the key configuration do.
        a[20] ^= 1;
        assert_ne!(Strike::of(&id, &a, 32), s);
        a[20] ^= 1;
        a[0] ^= 1;
        assert_ne!(Strike::of(&id, &a, 32), s);
        a[0] ^= 1;
        assert_ne!(Strike::of(&KeyId::of(b"other"), &a, 32), s);
        // Short messages do not panic.
        let _ = Strike::of(&id, &[], 32);
        let _ = Strike::of(&id, &[1, 2, 3], 1120);
    }
}
