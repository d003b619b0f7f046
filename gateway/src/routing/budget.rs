//! The retry budget: retries may add only a bounded share of load.
//!
//! Failover multiplies load exactly when providers are struggling: if every
//! request that meets a failing route tries two more, a brown-out becomes
//! three times the traffic. Like Envoy's `retry_budget`, the gateway lets
//! at most `percent` of a proxy's requests in flight be in their retry
//! phase, with a floor of `min_concurrency` so that a quiet proxy can still
//! fail over. A request that is refused a retry answers with the error it
//! has. Counting in-flight requests (not a rate over a window) keeps this
//! to two atomics and makes the bound hold at any instant.

use std::sync::atomic::{AtomicU32, Ordering};

/// A proxy's retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u32,
    min_concurrency: u32,
    active_requests: AtomicU32,
    active_retries: AtomicU32,
}

/// Held for a request's lifetime: counts it as in flight.
#[must_use]
pub struct RequestGuard<'a>(&'a RetryBudget);

/// Held while a request is in its retry phase.
#[must_use]
pub struct RetryGuard<'a>(&'a RetryBudget);

impl RetryBudget {
    /// Retries may be `percent` of requests in flight, and at least
    /// `min_concurrency`.
    pub fn new(percent: u32, min_concurrency: u32) -> Self {
        RetryBudget {
            percent,
            min_concurrency,
            active_requests: AtomicU32::new(0),
            active_retries: AtomicU32::new(0),
        }
    }

    /// Counts a request as in flight until the guard drops.
    pub fn request(&self) -> RequestGuard<'_> {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self)
    }

    /// How many requests may be retrying at once right now.
    pub fn allowed(&self) -> u32 {
        let active = u64::from(self.active_requests.load(Ordering::Relaxed));
        let share = active * u64::from(self.percent) / 100;
        u32::try_from(share)
            .unwrap_or(u32::MAX)
            .max(self.min_concurrency)
    }

    /// A retry slot, or `None` when the budget is spent.
    pub fn try_retry(&self) -> Option<RetryGuard<'_>> {
        let allowed = self.allowed();
        self.active_retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < allowed).then_some(n + 1)
            })
            .ok()
            .map(|_| RetryGuard(self))
    }

    /// Requests in their retry phase now.
    pub fn retrying(&self) -> u32 {
        self.active_retries.load(Ordering::Relaxed)
    }
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for RetryGuard<'_> {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_applies_to_a_quiet_proxy() {
        let b = RetryBudget::new(20, 3);
        let _r = b.request();
        let slots: Vec<_> = (0..5).filter_map(|_| b.try_retry()).collect();
        assert_eq!(slots.len(), 3);
        assert_eq!(b.retrying(), 3);
        drop(slots);
        assert_eq!(b.retrying(), 0);
        assert!(b.try_retry().is_some());
    }

    #[test]
    fn a_busy_proxy_gets_its_percentage() {
        let b = RetryBudget::new(20, 3);
        let reqs: Vec<_> = (0..50).map(|_| b.request()).collect();
        assert_eq!(b.allowed(), 10);
        let slots: Vec<_> = (0..50).filter_map(|_| b.try_retry()).collect();
        assert_eq!(slots.len(), 10);
        assert!(b.try_retry().is_none());
        // Requests finishing shrink the budget; slots held stay valid.
        drop(reqs);
        assert_eq!(b.allowed(), 3);
        assert!(b.try_retry().is_none());
        drop(slots);
        assert_eq!(b.try_retry().map(|_| ()), Some(()));
    }

    #[test]
    fn zero_disables_retries() {
        let b = RetryBudget::new(0, 0);
        let _r = b.request();
        assert!(b.try_retry().is_none());
    }
}
