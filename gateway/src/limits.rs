//! Per-key limits: requests per minute (the `governor` crate's GCRA), tokens per minute
//! (reserved at admission from the declared maximum, settled from the receipt) and
//! concurrent requests in flight. Free of HTTP; the clock is a parameter where it matters.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::store::KeyRecord;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Requests per minute; retry after this many seconds.
    Requests(u64),
    /// Tokens per minute; retry after this many seconds.
    Tokens(u64),
    /// Too many requests in flight.
    Concurrency,
}

/// A token-per-minute bucket that can be settled: governor cannot give cells back, and a
/// reservation of the declared maximum must be returned when the receipt shows fewer tokens.
/// The balance may go negative when a receipt shows more than was reserved (prompt tokens
/// are only known from the receipt); the key then waits until it refills.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket of `per_minute` tokens refilling at `per_minute` a minute.
    #[must_use]
    pub fn new(per_minute: u32, now: Instant) -> Self {
        let capacity = f64::from(per_minute);
        Self {
            capacity,
            per_second: capacity / 60.0,
            state: Mutex::new((capacity, now)),
        }
    }

    fn refill(&self, s: &mut (f64, Instant), now: Instant) {
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.per_second).min(self.capacity);
        s.1 = now;
    }

    /// Takes `n` tokens, or says how long until they are there.
    pub fn reserve(&self, n: u64, now: Instant) -> Result<(), Duration> {
        let Ok(mut s) = self.state.lock() else {
            return Err(Duration::from_secs(1));
        };
        self.refill(&mut s, now);
        #[allow(clippy::cast_precision_loss)]
        let want = n as f64;
        if want > self.capacity {
            // Can never fit: refuse for a minute rather than forever.
            return Err(Duration::from_secs(60));
        }
        if s.0 >= want {
            s.0 -= want;
            Ok(())
        } else {
            let missing = want - s.0;
            Err(Duration::from_secs_f64(
                missing / self.per_second.max(f64::MIN_POSITIVE),
            ))
        }
    }

    /// Settles a reservation of `reserved` with the `used` count from the receipt.
    pub fn settle(&self, reserved: u64, used: u64, now: Instant) {
        if let Ok(mut s) = self.state.lock() {
            self.refill(&mut s, now);
            #[allow(clippy::cast_precision_loss)]
            let delta = reserved as f64 - used as f64;
            s.0 = (s.0 + delta).min(self.capacity);
        }
    }

    /// The tokens available now (for tests and metrics).
    #[must_use]
    pub fn available(&self, now: Instant) -> f64 {
        match self.state.lock() {
            Ok(mut s) => {
                self.refill(&mut s, now);
                s.0
            }
            Err(_) => 0.0,
        }
    }
}

/// Settlements queued for a key (each holds its request's [`Admission`]), and a lock held
/// while they run, so that whoever drains the queue returns only once none is running.
#[derive(Default)]
struct Deferred {
    queue: Mutex<VecDeque<Box<dyn FnOnce() + Send>>>,
    running: Mutex<()>,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deferred")
    }
}

/// The live limiters of one key.
#[derive(Debug)]
pub struct KeyLimiter {
    config: (Option<u32>, Option<u32>, u32),
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<TokenBucket>,
    streams: Arc<Semaphore>,
    deferred: Deferred,
}

impl KeyLimiter {
    /// Runs the settlements queued by [`Admission::settle_later`], oldest first, each once
    /// (whoever calls this first runs it); returns once none is queued or running.
    pub fn run_deferred(&self) {
        let _running = self
            .deferred
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let next = self
                .deferred
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop_front();
            let Some(f) = next else {
                return;
            };
            f();
        }
    }
}

/// What an admitted request holds until it ends.
#[derive(Debug)]
pub struct Admission {
    limiter: Arc<KeyLimiter>,
    reserved: u64,
    _stream: OwnedSemaphorePermit,
}

impl Admission {
    /// Settles the token reservation with the receipt's count.
    pub fn settle(&self, used: u64) {
        if let Some(t) = &self.limiter.tokens {
            t.settle(self.reserved, used, Instant::now());
        }
    }

    /// Queues `f`, which receives this admission (so the request keeps its slot until `f`
    /// is done), to run from [`KeyLimiter::run_deferred`] on the returned limiter, or
    /// before the key's next admission, whichever comes first: a request admitted after
    /// this one was queued always finds it settled.
    pub fn settle_later(self, f: impl FnOnce(Self) + Send + 'static) -> Arc<KeyLimiter> {
        let limiter = Arc::clone(&self.limiter);
        limiter
            .deferred
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(Box::new(move || f(self)));
        limiter
    }
}

/// Every key's limiters.
#[derive(Debug)]
pub struct Limits {
    default_max_streams: u32,
    keys: Mutex<HashMap<String, Arc<KeyLimiter>>>,
}

impl Limits {
    /// `default_max_streams` applies to keys without their own.
    #[must_use]
    pub fn new(default_max_streams: u32) -> Self {
        Self {
            default_max_streams: default_max_streams.max(1),
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn limiter(&self, key: &KeyRecord) -> Arc<KeyLimiter> {
        let config = (
            key.rpm,
            key.tpm,
            key.max_streams.unwrap_or(self.default_max_streams).max(1),
        );
        let Ok(mut keys) = self.keys.lock() else {
            return Arc::new(build(config));
        };
        match keys.get(&key.name) {
            Some(l) if l.config == config => Arc::clone(l),
            _ => {
                let l = Arc::new(build(config));
                keys.insert(key.name.clone(), Arc::clone(&l));
                l
            }
        }
    }

    /// Admits a request declaring `max_tokens`, or says why not. Checks concurrency first,
    /// then requests per minute, then tokens, so a refused request consumes nothing.
    pub fn admit(&self, key: &KeyRecord, max_tokens: u64) -> Result<Admission, Refusal> {
        let limiter = self.limiter(key);
        // Settlements of requests that have ended come first.
        limiter.run_deferred();
        let permit = Arc::clone(&limiter.streams)
            .try_acquire_owned()
            .map_err(|_| Refusal::Concurrency)?;
        if let Some(rl) = &limiter.requests
            && let Err(not_until) = rl.check()
        {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(Refusal::Requests(wait.as_secs().saturating_add(1)));
        }
        if let Some(t) = &limiter.tokens {
            t.reserve(max_tokens, Instant::now())
                .map_err(|d| Refusal::Tokens(d.as_secs().saturating_add(1)))?;
        }
        Ok(Admission {
            limiter,
            reserved: max_tokens,
            _stream: permit,
        })
    }
}

fn build(config: (Option<u32>, Option<u32>, u32)) -> KeyLimiter {
    let (rpm, tpm, streams) = config;
    KeyLimiter {
        config,
        requests: rpm
            .and_then(NonZeroU32::new)
            .map(|n| RateLimiter::direct(Quota::per_minute(n))),
        tokens: tpm.map(|n| TokenBucket::new(n, Instant::now())),
        streams: Arc::new(Semaphore::new(streams as usize)),
        deferred: Deferred::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rpm: Option<u32>, tpm: Option<u32>, streams: Option<u32>) -> KeyRecord {
        KeyRecord {
            name: "k".into(),
            key_hash: String::new(),
            rpm,
            tpm,
            max_streams: streams,
            created_at_ms: 0,
            revoked_at_ms: None,
        }
    }

    #[test]
    fn requests_per_minute_admit_exactly_the_quota() {
        let limits = Limits::new(1000);
        let k = key(Some(50), None, None);
        let mut admitted = Vec::new();
        let mut refused = 0;
        for _ in 0..200 {
            match limits.admit(&k, 0) {
                Ok(a) => admitted.push(a),
                Err(Refusal::Requests(s)) => {
                    assert!(s >= 1);
                    refused += 1;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(admitted.len(), 50);
        assert_eq!(refused, 150);
    }

    #[test]
    fn concurrency_is_released_when_the_request_ends() {
        let limits = Limits::new(2);
        let k = key(None, None, None);
        let a = limits.admit(&k, 0);
        let b = limits.admit(&k, 0);
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(limits.admit(&k, 0).err(), Some(Refusal::Concurrency));
        drop(a);
        assert!(limits.admit(&k, 0).is_ok());
    }

    #[test]
    fn tokens_are_reserved_then_settled() {
        let t0 = Instant::now();
        let b = TokenBucket::new(100, t0);
        assert!(b.reserve(60, t0).is_ok());
        assert!(b.reserve(60, t0).is_err());
        // The receipt says 10 were used: 50 come back.
        b.settle(60, 10, t0);
        assert!((b.available(t0) - 90.0).abs() < 1e-6);
        assert!(b.reserve(90, t0).is_ok());
        // A receipt above the reservation leaves the bucket in debt.
        b.settle(0, 30, t0);
        assert!(b.available(t0) < 0.0);
        // Refill: 100 a minute.
        let later = t0 + Duration::from_secs(60);
        assert!((b.available(later) - 70.0).abs() < 1e-6);
        assert!(b.reserve(101, later).is_err());
    }

    #[test]
    fn deferred_settlements_run_before_the_next_admission() {
        let limits = Limits::new(1);
        let k = key(None, Some(100), None);
        let a = limits.admit(&k, 100).unwrap();
        let ran = Arc::new(Mutex::new(0));
        let r2 = Arc::clone(&ran);
        let limiter = a.settle_later(move |a| {
            a.settle(10);
            *r2.lock().unwrap() += 1;
        });
        // Not yet run: the next admission runs it (slot released, 90 tokens back) first.
        assert_eq!(*ran.lock().unwrap(), 0);
        let b = limits.admit(&k, 90).unwrap();
        assert_eq!(*ran.lock().unwrap(), 1);
        // Run once only.
        limiter.run_deferred();
        assert_eq!(*ran.lock().unwrap(), 1);
        drop(b);
    }

    #[test]
    fn changed_limits_take_effect() {
        let limits = Limits::new(4);
        let mut k = key(Some(1), None, None);
        assert!(limits.admit(&k, 0).is_ok());
        assert!(limits.admit(&k, 0).is_err());
        k.rpm = Some(3);
        assert!(limits.admit(&k, 0).is_ok());
    }
}
