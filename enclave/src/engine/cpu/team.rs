//! A team of threads working through one forward pass in lock step: a spinning barrier
//! between steps, and per-thread output segments that every thread reads after the
//! barrier (double-buffered so that writing step k+1 never waits for readers of step k).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

/// A thread of the team failed (panicked); the pass is abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poisoned;

/// Spins this many times before yielding the CPU while waiting.
const SPINS_BEFORE_YIELD: u32 = 4096;

/// Yields this many times before sleeping on the condition variable.
const YIELDS_BEFORE_SLEEP: u32 = 64;

/// A reusable barrier that spins, then yields, and only then sleeps: the steps it
/// separates take microseconds, far less than a sleep and wake-up, so on an idle machine
/// nobody sleeps; on a machine with more runnable threads than cores (other teams, other
/// processes) a waiter whose peer was descheduled stops burning the core that peer needs.
#[derive(Debug)]
pub struct SpinBarrier {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl SpinBarrier {
    /// A barrier for `n` threads.
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    fn wake_sleepers(&self) {
        // SeqCst pairs with the sleeper's increment-then-check: either it sees the
        // new generation (or the poison) or this sees it registered.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self
                .lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.wake.notify_all();
        }
    }

    /// Waits until all `n` threads arrived.
    ///
    /// # Errors
    /// When another thread of the team panicked.
    pub fn wait(&self) -> Result<(), Poisoned> {
        if self.n == 1 {
            return Ok(());
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.wake_sleepers();
            return Ok(());
        }
        let mut spins = 0u32;
        let mut yields = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.poisoned.load(Ordering::Relaxed) {
                return Err(Poisoned);
            }
            if spins < SPINS_BEFORE_YIELD {
                std::hint::spin_loop();
                spins += 1;
            } else if yields < YIELDS_BEFORE_SLEEP {
                std::thread::yield_now();
                yields += 1;
            } else {
                let guard = self
                    .lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                if self.generation.load(Ordering::SeqCst) == generation
                    && !self.poisoned.load(Ordering::SeqCst)
                {
                    // The timeout only bounds the cost of a lost wake-up, which the
                    // SeqCst pairing rules out.
                    let _ = self
                        .wake
                        .wait_timeout(guard, Duration::from_millis(5))
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// Marks the team as failed: every waiter returns [`Poisoned`].
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.wake_sleepers();
    }

    /// Resets after a failed pass.
    pub fn reset(&mut self) {
        self.arrived.store(0, Ordering::Relaxed);
        self.poisoned.store(false, Ordering::Relaxed);
    }
}

/// Poisons the barrier if the thread holding it unwinds.
#[derive(Debug)]
pub struct PoisonOnPanic<'a>(pub &'a SpinBarrier);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison();
        }
    }
}

/// `[n * t / parts, n * (t + 1) / parts)`: thread `t`'s share of `n` items.
pub fn share(n: usize, t: usize, parts: usize) -> Range<usize> {
    let parts = parts.max(1);
    (n * t / parts)..(n * (t + 1) / parts)
}

/// Where the threads of a team publish their part of a step's output.
#[derive(Debug)]
pub struct Exchange {
    threads: usize,
    segments: [Vec<RwLock<Vec<f32>>>; 2],
    /// The barrier of the team.
    pub barrier: SpinBarrier,
}

impl Exchange {
    /// An exchange for `threads` threads.
    pub fn new(threads: usize) -> Self {
        let mk = || (0..threads).map(|_| RwLock::new(Vec::new())).collect();
        Self {
            threads,
            segments: [mk(), mk()],
            barrier: SpinBarrier::new(threads),
        }
    }

    /// Threads in the team.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Publishes thread `t`'s output of a step (buffer `phase` of two).
    pub fn publish(&self, phase: usize, t: usize, data: &[f32]) {
        if let Some(lock) = self.segments[phase & 1].get(t) {
            let mut seg = lock
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            seg.clear();
            seg.extend_from_slice(data);
        }
    }

    /// Waits for the team, then assembles the full `[m × total]` output of a step whose
    /// rows thread `t` computed as `share(total, t, threads)`, each `[m × len_t]`.
    ///
    /// # Errors
    /// When another thread of the team panicked.
    pub fn gather(
        &self,
        phase: usize,
        m: usize,
        total: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), Poisoned> {
        self.gather_blocks(phase, m, total, 1, out)
    }

    /// As [`Exchange::gather`], with the work split in units of `unit` values (thread
    /// `t` published `[m × share(units, t) × unit]`).
    ///
    /// # Errors
    /// When another thread of the team panicked.
    pub fn gather_blocks(
        &self,
        phase: usize,
        m: usize,
        units: usize,
        unit: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), Poisoned> {
        self.barrier.wait()?;
        let total = units * unit;
        out.resize(m * total, 0.0);
        for t in 0..self.threads {
            let r = share(units, t, self.threads);
            let (start, end) = (r.start * unit, r.end * unit);
            let len = end - start;
            if len == 0 {
                continue;
            }
            let Some(lock) = self.segments[phase & 1].get(t) else {
                continue;
            };
            let seg = lock
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (i, src) in seg.chunks_exact(len).take(m).enumerate() {
                if let Some(dst) = out.get_mut(i * total + start..i * total + end) {
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for n in [0, 1, 5, 9, 576, 49152] {
            for parts in 1..5 {
                let mut next = 0;
                for t in 0..parts {
                    let r = share(n, t, parts);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn team_exchanges_many_steps() {
        let threads = 3;
        let ex = Exchange::new(threads);
        let total = 10;
        let results: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let ex = &ex;
                    s.spawn(move || {
                        let _guard = PoisonOnPanic(&ex.barrier);
                        let mut full = Vec::new();
                        let mut sums = Vec::new();
                        for step in 0..200usize {
                            let r = share(total, t, threads);
                            let mine: Vec<f32> = (0..2)
                                .flat_map(|m| {
                                    r.clone().map(move |i| (step * 100 + m * 10 + i) as f32)
                                })
                                .collect();
                            ex.publish(step, t, &mine);
                            ex.gather(step, 2, total, &mut full).unwrap();
                            sums.push(full.iter().sum::<f32>());
                            for (k, v) in full.iter().enumerate() {
                                assert_eq!(*v, (step * 100 + k) as f32);
                            }
                        }
                        sums
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn a_panicking_thread_releases_the_others() {
        let ex = Exchange::new(2);
        std::thread::scope(|s| {
            let a = s.spawn(|| {
                let _guard = PoisonOnPanic(&ex.barrier);
                panic!("worker failure");
            });
            let b = s.spawn(|| {
                let _guard = PoisonOnPanic(&ex.barrier);
                ex.barrier.wait()
            });
            assert!(a.join().is_err());
            assert_eq!(b.join().unwrap(), Err(Poisoned));
        });
    }
}
