//! Which proxy keys authenticated requests, and when. A managed gateway
//! reports it to admin with its heartbeats, which is how admin's
//! `keys[].last_used_at` gets set.
//!
//! The request path pays a clock read and one relaxed atomic load: each
//! key of the loaded configuration ([`KeyEntry`]) remembers the second in
//! which its last use was recorded, and only when that second has passed is
//! the use written to the gateway-wide [`KeyUsage`] map, under its mutex.
//! So the lock is taken at most once per second per key, whatever the
//! request rate. The map lives beside the configuration, not in it, so a
//! configuration swap loses nothing; the heartbeat takes the map whole and
//! puts it back if admin did not take it. Times are therefore accurate to
//! about a second, which is all `last_used_at` promises.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A key a proxy accepts, as loaded.
#[derive(Debug)]
pub struct KeyEntry {
    /// Shown in logs instead of the key.
    pub name: Arc<str>,
    /// The key's stable id: what limits, caches and metrics count by (two
    /// keys may share a name, never an id).
    pub id: Arc<str>,
    /// What the key may do (none: everything its proxy offers).
    pub scope: Option<Arc<crate::config::KeyScopeFile>>,
    /// The key's application and subscription (application keys).
    pub caller: crate::policy::CallerIds,
    /// Unix second of the last use written to [`KeyUsage`] (0: none yet).
    recorded_s: AtomicU64,
    /// Unix millisecond from which the key is refused, if it expires.
    pub expires_ms: Option<i64>,
}

impl KeyEntry {
    pub fn new(name: Arc<str>, id: Arc<str>, expires_ms: Option<i64>) -> Self {
        KeyEntry {
            name,
            id,
            scope: None,
            caller: Default::default(),
            recorded_s: AtomicU64::new(0),
            expires_ms,
        }
    }

    /// Whether the key has expired at `now_ms` (Unix milliseconds).
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }
}

/// Keys used since the last heartbeat, by SHA-256, with the Unix time in
/// milliseconds of their last recorded use.
#[derive(Debug, Default)]
pub struct KeyUsage {
    used: Mutex<HashMap<[u8; 32], i64>>,
}

/// Uses taken from [`KeyUsage`]: key SHA-256 to Unix milliseconds.
pub type Uses = HashMap<[u8; 32], i64>;

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl KeyUsage {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], i64>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that the key hashing to `hash` (its entry `entry`) has just
    /// authenticated a request.
    pub fn record(&self, hash: &[u8; 32], entry: &KeyEntry) {
        self.record_at(hash, entry, unix_ms());
    }

    fn record_at(&self, hash: &[u8; 32], entry: &KeyEntry, now_ms: i64) {
        let Ok(second) = u64::try_from(now_ms / 1000) else {
            return;
        };
        if second == 0 {
            return;
        }
        // Read first: the common case writes nothing shared.
        if entry.recorded_s.load(Ordering::Relaxed) >= second {
            return;
        }
        // Of the requests racing into a new second, one records it.
        if entry.recorded_s.fetch_max(second, Ordering::Relaxed) >= second {
            return;
        }
        let mut map = self.map();
        let at = map.entry(*hash).or_insert(now_ms);
        *at = (*at).max(now_ms);
    }

    /// Takes the uses recorded since the last call.
    pub fn take(&self) -> Uses {
        std::mem::take(&mut *self.map())
    }

    /// Puts back uses that could not be reported, keeping the later time
    /// of any key used again meanwhile.
    pub fn restore(&self, uses: Uses) {
        let mut map = self.map();
        for (hash, t) in uses {
            let at = map.entry(hash).or_insert(t);
            *at = (*at).max(t);
        }
    }
}

/// The heartbeat's `keys_used`: hex SHA-256 to Unix milliseconds.
pub fn to_wire(uses: &Uses) -> BTreeMap<String, i64> {
    uses.iter().map(|(h, t)| (hex::encode(h), *t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_at_most_once_a_second_and_survives_a_failed_report() {
        let usage = KeyUsage::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let ea = KeyEntry::new(Arc::from("a"), Arc::from("a"), None);
        let eb = KeyEntry::new(Arc::from("b"), Arc::from("b"), None);
        usage.record_at(&a, &ea, 10_100);
        // Same second: not written again (the map keeps the first time).
        usage.record_at(&a, &ea, 10_900);
        usage.record_at(&b, &eb, 10_500);
        let taken = usage.take();
        assert_eq!(taken, HashMap::from([(a, 10_100), (b, 10_500)]));
        assert!(usage.take().is_empty(), "taken means gone");

        // A later second is recorded; an earlier one never moves it back.
        usage.record_at(&a, &ea, 12_000);
        usage.record_at(&a, &ea, 11_000);
        assert_eq!(usage.take(), HashMap::from([(a, 12_000)]));

        // A report that failed is put back and merged with newer uses.
        usage.record_at(&a, &ea, 13_000);
        usage.restore(HashMap::from([(a, 12_000), (b, 10_500)]));
        assert_eq!(usage.take(), HashMap::from([(a, 13_000), (b, 10_500)]));

        // A fresh entry (a new configuration) records at once.
        let ea2 = KeyEntry::new(Arc::from("a"), Arc::from("a"), None);
        usage.record_at(&a, &ea2, 13_500);
        let wire = to_wire(&usage.take());
        assert_eq!(wire, BTreeMap::from([("01".repeat(32), 13_500)]));

        // The real clock.
        usage.record(&b, &KeyEntry::new(Arc::from("b"), Arc::from("b"), None));
        let t = usage.take()[&b];
        assert!((t - unix_ms()).abs() < 60_000, "{t}");
    }

    #[test]
    fn concurrent_requests_record_one_use_per_second() {
        let usage = Arc::new(KeyUsage::default());
        let entry = Arc::new(KeyEntry::new(Arc::from("k"), Arc::from("k"), None));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (usage, entry) = (usage.clone(), entry.clone());
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        usage.record_at(&[7u8; 32], &entry, 20_000 + i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let taken = usage.take();
        assert_eq!(taken.len(), 1);
        assert!((20_000..21_000).contains(&taken[&[7u8; 32]]));
    }
}
