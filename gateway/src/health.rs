//! Passive health of routes.
//!
//! The gateway learns a route's health from the requests it sends, not from
//! probes of its own: LLM providers have no cheap health endpoint, and a
//! synthetic completion costs money. A route whose calls keep failing is
//! *ejected*: it gets no traffic for a cool-down. When the cool-down has
//! passed, the next request that would use the route claims it as a
//! *probe* (one request, not a burst); if that succeeds the route is
//! healthy again, if it fails the route stays out for another cool-down.
//! A route that answers 429 with `retry-after` is paused the same way for
//! that long (bounded by the retry policy).
//!
//! State is a few atomics per route, so checking health costs one atomic
//! load per candidate route and no lock. Times are milliseconds on a
//! process-wide monotonic clock; every method that depends on time takes
//! `now_ms` so the logic is tested without sleeping.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

/// When to eject a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures that eject a route; 0 never ejects.
    pub failures: u32,
    /// How long an ejected route gets no traffic.
    pub cooldown: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            failures: 3,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// Whether a request may use a route now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Healthy.
    Available,
    /// Ejected or paused, and its time is up: this request is the probe.
    Probe,
    /// Ejected or paused.
    Unavailable,
}

/// What a recorded outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    /// The route was taken out of rotation.
    Ejected,
    /// The route is back in rotation.
    Recovered,
}

/// The health of one route, shared by every request.
#[derive(Debug, Default)]
pub struct RouteHealth {
    consecutive_failures: AtomicU32,
    /// Clock time (ms) until which the route gets no traffic; 0 = healthy.
    unavailable_until: AtomicU64,
    /// Length (ms) of the current ejection or pause; a probe re-arms it so
    /// that other requests keep away while the probe is in flight.
    pause_ms: AtomicU64,
    /// `portcullis_route_healthy{proxy,route}`, once metrics are attached.
    gauge: OnceLock<IntGauge>,
}

/// Milliseconds on a process-wide monotonic clock, never 0 (0 means
/// "healthy" in `unavailable_until`).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RouteHealth {
    /// Whether a request may use the route at `now`. When an ejection has
    /// run out, exactly one caller gets `Probe`: the compare-and-swap that
    /// moves the deadline forward picks it, and the others see the new
    /// deadline.
    pub fn admit(&self, now: u64) -> Admission {
        let until = self.unavailable_until.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Available;
        }
        if now < until {
            return Admission::Unavailable;
        }
        let rearm = now.saturating_add(self.pause_ms.load(Ordering::Relaxed).max(1));
        match self.unavailable_until.compare_exchange(
            until,
            rearm,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Unavailable,
        }
    }

    /// Whether the route is in rotation (for the gauge and tests).
    pub fn is_healthy(&self) -> bool {
        self.unavailable_until.load(Ordering::Acquire) == 0
    }

    /// A call through the route succeeded (or failed for a reason that is
    /// not the route's, such as a 400 for a bad request).
    pub fn record_success(&self) -> Transition {
        // Loads first: on the common path (healthy, no failures) nothing is
        // written, so cores serving one route do not contend for the line.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.unavailable_until.load(Ordering::Acquire) != 0
            && self.unavailable_until.swap(0, Ordering::AcqRel) != 0
        {
            self.set_gauge(true);
            Transition::Recovered
        } else {
            Transition::None
        }
    }

    /// A call through the route failed. Ejects it at the policy's count of
    /// consecutive failures, or at once if it was being probed.
    pub fn record_failure(&self, now: u64, policy: &HealthPolicy) -> Transition {
        let failures = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let probing = !self.is_healthy();
        if policy.failures == 0 || (!probing && failures < policy.failures) {
            return Transition::None;
        }
        self.pause(now, policy.cooldown);
        if probing {
            // Already out of rotation: a failed probe only extends the stay.
            Transition::None
        } else {
            Transition::Ejected
        }
    }

    /// Takes the route out of rotation for `d` (a `retry-after`, or a
    /// cool-down); a longer stay already in force is kept.
    pub fn pause(&self, now: u64, d: Duration) -> Transition {
        let d = ms(d);
        let until = now.saturating_add(d);
        let before = self.unavailable_until.fetch_max(until, Ordering::AcqRel);
        if before < until {
            self.pause_ms.store(d, Ordering::Relaxed);
        }
        if before == 0 {
            self.set_gauge(false);
            Transition::Ejected
        } else {
            Transition::None
        }
    }

    /// Takes over `old`'s state: `old` is the same route in the
    /// configuration this one replaces, so that a configuration change
    /// (a reload, a managed deployment) neither puts an ejected route back
    /// in rotation nor forgets a `retry-after`. Call before the route
    /// serves.
    pub fn carry_from(&self, old: &RouteHealth) {
        self.consecutive_failures.store(
            old.consecutive_failures.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.pause_ms
            .store(old.pause_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        self.unavailable_until.store(
            old.unavailable_until.load(Ordering::Acquire),
            Ordering::Release,
        );
        if let Some(g) = old.gauge.get() {
            self.attach_gauge(g.clone());
        }
    }

    /// Connects the route's gauge and sets it to the current state.
    pub fn attach_gauge(&self, gauge: IntGauge) {
        let gauge = self.gauge.get_or_init(|| gauge);
        gauge.set(i64::from(self.is_healthy()));
    }

    fn set_gauge(&self, healthy: bool) {
        if let Some(g) = self.gauge.get() {
            g.set(i64::from(healthy));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(failures: u32, cooldown_ms: u64) -> HealthPolicy {
        HealthPolicy {
            failures,
            cooldown: Duration::from_millis(cooldown_ms),
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_a_success_resets_the_count() {
        let h = RouteHealth::default();
        let p = policy(3, 1000);
        assert_eq!(h.record_failure(10, &p), Transition::None);
        assert_eq!(h.record_failure(11, &p), Transition::None);
        assert_eq!(h.record_success(), Transition::None);
        assert_eq!(h.record_failure(12, &p), Transition::None);
        assert_eq!(h.record_failure(13, &p), Transition::None);
        assert_eq!(h.admit(13), Admission::Available);
        assert_eq!(h.record_failure(14, &p), Transition::Ejected);
        assert!(!h.is_healthy());
        assert_eq!(h.admit(15), Admission::Unavailable);
        assert_eq!(h.admit(1013), Admission::Unavailable);
    }

    #[test]
    fn one_probe_after_the_cooldown_then_recovery_or_another_cooldown() {
        let h = RouteHealth::default();
        let p = policy(1, 1000);
        assert_eq!(h.record_failure(100, &p), Transition::Ejected);
        // The cool-down ends at 1100: one caller probes, the next does not.
        assert_eq!(h.admit(1100), Admission::Probe);
        assert_eq!(h.admit(1101), Admission::Unavailable);
        // The probe fails: out for another cool-down from then.
        assert_eq!(h.record_failure(1150, &p), Transition::None);
        assert_eq!(h.admit(2149), Admission::Unavailable);
        assert_eq!(h.admit(2150), Admission::Probe);
        assert_eq!(h.record_success(), Transition::Recovered);
        assert!(h.is_healthy());
        assert_eq!(h.admit(2151), Admission::Available);
    }

    #[test]
    fn zero_failures_never_ejects_but_a_pause_still_applies() {
        let h = RouteHealth::default();
        let p = policy(0, 1000);
        for t in 0..10 {
            assert_eq!(h.record_failure(t, &p), Transition::None);
        }
        assert!(h.is_healthy());
        assert_eq!(h.pause(20, Duration::from_millis(500)), Transition::Ejected);
        assert_eq!(h.admit(519), Admission::Unavailable);
        // A shorter pause does not cut a longer one short.
        assert_eq!(h.pause(30, Duration::from_millis(10)), Transition::None);
        assert_eq!(h.admit(519), Admission::Unavailable);
        assert_eq!(h.admit(520), Admission::Probe);
    }

    #[test]
    fn the_gauge_follows_the_state() {
        let h = RouteHealth::default();
        let g = IntGauge::new("g", "g").unwrap();
        h.attach_gauge(g.clone());
        assert_eq!(g.get(), 1);
        h.record_failure(1, &policy(1, 10));
        assert_eq!(g.get(), 0);
        h.record_success();
        assert_eq!(g.get(), 1);
    }

    #[test]
    fn the_clock_is_never_zero_and_never_goes_back() {
        let a = now_ms();
        let b = now_ms();
        assert!(a >= 1 && b >= a);
    }
}
