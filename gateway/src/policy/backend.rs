//! Where policy counters and cache entries live: in this process, or in
//! Redis so that limits and cached answers are shared by every gateway.
//!
//! Calls are synchronous because policies call them from inside a wasm
//! call. The in-process backend keeps counters in a bounded map, sharded
//! by key behind one mutex per shard (sub-microsecond; see
//! [`MemoryCounters`]);
//! the Redis backend blocks the calling worker for one round trip, which
//! is the price of limits that hold across replicas. Redis failures never
//! fail a request on their own: a counter that cannot be read is reported
//! as allowed, a cache miss as a miss, and both are logged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The state of a counter after an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterState {
    pub allowed: bool,
    pub value: i64,
    pub ttl_ms: u64,
}

/// Counters and a TTL cache.
pub trait Backend: Send + Sync {
    /// Adds `delta` (when `limit` is set, only if the result stays at or
    /// under it); creates the key with `ttl_ms` when absent. An error means
    /// the counter is out of reach (Redis down): the policy call fails and
    /// its attachment's `on_error` decides, fail open or closed.
    fn counter(
        &self,
        key: &str,
        delta: i64,
        limit: Option<i64>,
        ttl_ms: u64,
    ) -> Result<CounterState, String>;
    fn cache_get(&self, key: &str) -> Option<Vec<u8>>;
    fn cache_set(&self, key: &str, value: &[u8], ttl_ms: u64);
    /// Whether an operation waits on another process (a network round
    /// trip): chains whose policies use such a backend run their phases
    /// off the gateway's worker threads (see `chain::off_worker`).
    fn waits_on_network(&self) -> bool {
        false
    }
}

/// In-process counters (bounded, see [`MemoryCounters`]) and a
/// byte-bounded cache (oldest entries evicted first).
pub struct MemoryBackend {
    counters: MemoryCounters,
    cache: Mutex<MemoryCache>,
}

/// Counters kept in process by default (`policy_engine.max_counters`).
pub const DEFAULT_MAX_COUNTERS: usize = 100_000;

/// Longest TTL a counter or cache entry gets (400 days): a policy's TTL
/// is its own input and must not overflow the clock.
const MAX_TTL_MS: u64 = 400 * 86_400_000;

/// Expired counters one operation removes at most, so no call does work
/// proportional to the map: expired entries a call does not reach are
/// ignored when read and go when their turn comes.
const EXPIRE_PER_CALL: usize = 8;

/// When `now + ttl_ms` expires, with the TTL capped.
fn expiry(now: Instant, ttl_ms: u64) -> Instant {
    let ttl = Duration::from_millis(ttl_ms.min(MAX_TTL_MS));
    now.checked_add(ttl).unwrap_or(now)
}

/// In-process counters: a map bounded to `max` entries, least recently
/// used evicted first, expired entries removed a few at a time. Keys are
/// spread over shards by a per-process random hash (so nobody can aim
/// keys at one shard), each shard with its own lock and its share of the
/// bound. Every operation is O(log n) in its shard and removes at most
/// `EXPIRE_PER_CALL` expired entries and one least recently used entry.
///
/// Evicting a live counter forgets its count (its window starts over), so
/// the bound should exceed the live counters of normal traffic; the
/// policies bound how many counters one caller can open (token-rate-limit:
/// `max_values_per_key`), and the host bounds key length.
pub struct MemoryCounters {
    shards: Vec<Mutex<CounterShard>>,
    hasher: RandomState,
}

/// What the counters hold and what their bound has cost so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterStats {
    /// Entries held now (some may have expired and not been removed yet).
    pub entries: usize,
    /// Least recently used entries removed to stay under the bound.
    pub evicted: u64,
    /// Expired entries removed.
    pub expired: u64,
    /// The most entries one operation removed.
    pub max_removed_per_call: usize,
}

struct CounterShard {
    cap: usize,
    /// Bumped on every use; orders `by_use`.
    tick: u64,
    entries: HashMap<Arc<str>, Counter>,
    /// Keys by last use, least recent first.
    by_use: BTreeMap<u64, Arc<str>>,
    /// Keys by expiry (with their creation tick, unique), soonest first.
    by_expiry: BTreeMap<(Instant, u64), Arc<str>>,
    evicted: u64,
    expired: u64,
    max_removed_per_call: usize,
}

struct Counter {
    value: i64,
    expires: Instant,
    used: u64,
    created: u64,
}

impl MemoryCounters {
    /// Counters bounded to `max` entries (at least 1).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        // Small bounds stay exact in one shard.
        let n = if max >= 1024 { 16 } else { 1 };
        let shards = (0..n)
            .map(|_| {
                Mutex::new(CounterShard {
                    cap: (max / n).max(1),
                    tick: 0,
                    entries: HashMap::new(),
                    by_use: BTreeMap::new(),
                    by_expiry: BTreeMap::new(),
                    evicted: 0,
                    expired: 0,
                    max_removed_per_call: 0,
                })
            })
            .collect();
        MemoryCounters {
            shards,
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, CounterShard> {
        let i = (self.hasher.hash_one(key) % self.shards.len() as u64) as usize;
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// See [`Backend::counter`].
    pub fn counter(&self, key: &str, delta: i64, limit: Option<i64>, ttl_ms: u64) -> CounterState {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let mut removed = shard.expire(now);
        let live = shard
            .entries
            .get(key)
            .filter(|c| c.expires > now)
            .map(|c| (c.value, c.expires));
        let (value, expires) = live.unwrap_or((0, expiry(now, ttl_ms)));
        let next = value.saturating_add(delta);
        let allowed = limit.is_none_or(|l| next <= l);
        let stored = if allowed { next } else { value };
        let exists = live.is_some() || (allowed && delta != 0);
        if live.is_some() {
            shard.update(key, stored);
        } else if exists {
            removed += shard.insert(key, stored, expires);
        }
        shard.max_removed_per_call = shard.max_removed_per_call.max(removed);
        CounterState {
            allowed,
            value: stored,
            ttl_ms: if exists {
                expires.saturating_duration_since(now).as_millis() as u64
            } else {
                0
            },
        }
    }

    /// Entries, evictions and removals so far, over all shards.
    pub fn stats(&self) -> CounterStats {
        let mut s = CounterStats::default();
        for shard in &self.shards {
            let g = match shard.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            s.entries += g.entries.len();
            s.evicted += g.evicted;
            s.expired += g.expired;
            s.max_removed_per_call = s.max_removed_per_call.max(g.max_removed_per_call);
        }
        s
    }
}

impl CounterShard {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Removes up to `EXPIRE_PER_CALL` expired entries; returns how many.
    fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while n < EXPIRE_PER_CALL {
            match self.by_expiry.first_key_value() {
                Some(((exp, _), _)) if *exp <= now => {}
                _ => break,
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                if let Some(c) = self.entries.remove(&key) {
                    self.by_use.remove(&c.used);
                }
                self.expired += 1;
                n += 1;
            }
        }
        n
    }

    /// Sets a live entry's value and marks it used.
    fn update(&mut self, key: &str, value: i64) {
        let tick = self.next_tick();
        let Some(c) = self.entries.get_mut(key) else {
            return;
        };
        let old = std::mem::replace(&mut c.used, tick);
        c.value = value;
        if let Some(k) = self.by_use.remove(&old) {
            self.by_use.insert(tick, k);
        }
    }

    /// Inserts a new entry (replacing an expired one under the same key)
    /// and evicts the least recently used one past the bound; returns how
    /// many entries were removed.
    fn insert(&mut self, key: &str, value: i64, expires: Instant) -> usize {
        let mut removed = 0;
        if let Some(old) = self.entries.remove(key) {
            self.by_use.remove(&old.used);
            self.by_expiry.remove(&(old.expires, old.created));
            removed += 1;
        }
        let tick = self.next_tick();
        let k: Arc<str> = Arc::from(key);
        self.entries.insert(
            k.clone(),
            Counter {
                value,
                expires,
                used: tick,
                created: tick,
            },
        );
        self.by_use.insert(tick, k.clone());
        self.by_expiry.insert((expires, tick), k);
        if self.entries.len() > self.cap
            && let Some((_, lru)) = self.by_use.pop_first()
        {
            if let Some(c) = self.entries.remove(&lru) {
                self.by_expiry.remove(&(c.expires, c.created));
            }
            self.evicted += 1;
            removed += 1;
        }
        removed
    }
}

struct MemoryCache {
    max_bytes: usize,
    bytes: usize,
    entries: HashMap<String, (Vec<u8>, Instant)>,
    /// Insertion order, for eviction; stale keys are skipped.
    order: VecDeque<String>,
}

impl MemoryBackend {
    /// A backend holding at most `max_counters` counters and
    /// `cache_max_bytes` of cached entries.
    pub fn new(max_counters: usize, cache_max_bytes: usize) -> Self {
        MemoryBackend {
            counters: MemoryCounters::new(max_counters),
            cache: Mutex::new(MemoryCache {
                max_bytes: cache_max_bytes,
                bytes: 0,
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }
}

impl Backend for MemoryBackend {
    fn counter(
        &self,
        key: &str,
        delta: i64,
        limit: Option<i64>,
        ttl_ms: u64,
    ) -> Result<CounterState, String> {
        Ok(self.counters.counter(key, delta, limit, ttl_ms))
    }

    fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        let c = match self.cache.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        c.entries
            .get(key)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn cache_set(&self, key: &str, value: &[u8], ttl_ms: u64) {
        let mut c = match self.cache.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let size = key.len() + value.len();
        if size > c.max_bytes {
            return;
        }
        if let Some((old, _)) = c.entries.remove(key) {
            c.bytes -= key.len() + old.len();
        }
        while c.bytes + size > c.max_bytes {
            let Some(oldest) = c.order.pop_front() else {
                break;
            };
            if let Some((old, _)) = c.entries.remove(&oldest) {
                c.bytes -= oldest.len() + old.len();
            }
        }
        let expires = expiry(Instant::now(), ttl_ms);
        c.entries.insert(key.to_owned(), (value.to_vec(), expires));
        c.order.push_back(key.to_owned());
        c.bytes += size;
        // The order queue may hold keys replaced since; keep it bounded.
        if c.order.len() > 2 * c.entries.len() + 1024 {
            let MemoryCache { entries, order, .. } = &mut *c;
            order.retain(|k| entries.contains_key(k));
        }
    }
}

/// Counters and cache in Redis, shared by every gateway using the same server.
pub struct RedisBackend {
    client: redis::Client,
    pool: Mutex<Vec<redis::Connection>>,
    timeout: Duration,
    try_add: redis::Script,
    add: redis::Script,
}

// KEYS[1]: counter; ARGV: delta, limit (or "" for none), ttl ms.
// Returns {allowed, value, pttl}. Atomic, so replicas never overshoot.
const TRY_ADD_LUA: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local delta = tonumber(ARGV[1])
local nxt = cur + delta
if ARGV[2] ~= '' and nxt > tonumber(ARGV[2]) then
  return {0, cur, redis.call('PTTL', KEYS[1])}
end
if delta ~= 0 or redis.call('EXISTS', KEYS[1]) == 1 then
  local v = redis.call('INCRBY', KEYS[1], delta)
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
  return {1, v, redis.call('PTTL', KEYS[1])}
end
return {1, 0, 0}
"#;

impl RedisBackend {
    /// Connects once to check the URL; connections are then pooled.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        // Redis being down must not stop a configuration from loading (a
        // restart while Redis is down would then serve nothing): each
        // policy's `on_error` decides, per request, while it is down.
        let pool = match client.get_connection_with_timeout(timeout) {
            Ok(conn) => vec![conn],
            Err(e) => {
                tracing::warn!(error = %e, "Redis unreachable at load; policies that use it follow their on_error until it answers");
                Vec::new()
            }
        };
        Ok(RedisBackend {
            client,
            pool: Mutex::new(pool),
            timeout,
            try_add: redis::Script::new(TRY_ADD_LUA),
            add: redis::Script::new(TRY_ADD_LUA),
        })
    }

    fn with_conn<R>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R, String> {
        let pooled = match self.pool.lock() {
            Ok(mut g) => g.pop(),
            Err(p) => p.into_inner().pop(),
        };
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = self
                    .client
                    .get_connection_with_timeout(self.timeout)
                    .map_err(|e| e.to_string())?;
                let _ = c.set_read_timeout(Some(self.timeout));
                let _ = c.set_write_timeout(Some(self.timeout));
                c
            }
        };
        let out = f(&mut conn).map_err(|e| e.to_string());
        if out.is_ok() {
            if let Ok(mut g) = self.pool.lock() {
                if g.len() < 64 {
                    g.push(conn);
                }
            }
        }
        out
    }
}

impl Backend for RedisBackend {
    fn waits_on_network(&self) -> bool {
        true
    }

    fn counter(
        &self,
        key: &str,
        delta: i64,
        limit: Option<i64>,
        ttl_ms: u64,
    ) -> Result<CounterState, String> {
        let script = if limit.is_some() {
            &self.try_add
        } else {
            &self.add
        };
        let limit_arg = limit.map(|l| l.to_string()).unwrap_or_default();
        let r: Result<(i64, i64, i64), String> = self.with_conn(|c| {
            script
                .key(key)
                .arg(delta)
                .arg(&limit_arg)
                .arg(ttl_ms.max(1))
                .invoke(c)
        });
        match r {
            Ok((allowed, value, pttl)) => Ok(CounterState {
                allowed: allowed == 1,
                value,
                ttl_ms: pttl.max(0) as u64,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "redis counter failed");
                Err(format!("redis counter failed: {e}"))
            }
        }
    }

    fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        match self.with_conn(|c| redis::cmd("GET").arg(key).query::<Option<Vec<u8>>>(c)) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "redis cache get failed");
                None
            }
        }
    }

    fn cache_set(&self, key: &str, value: &[u8], ttl_ms: u64) {
        let r = self.with_conn(|c| {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query::<()>(c)
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "redis cache set failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(backend: &dyn Backend, prefix: &str) {
        struct Up<'a>(&'a dyn Backend);
        impl Up<'_> {
            fn counter(&self, k: &str, d: i64, l: Option<i64>, t: u64) -> CounterState {
                self.0.counter(k, d, l, t).expect("the backend answers")
            }
            fn cache_set(&self, k: &str, v: &[u8], t: u64) {
                self.0.cache_set(k, v, t)
            }
            fn cache_get(&self, k: &str) -> Option<Vec<u8>> {
                self.0.cache_get(k)
            }
        }
        let b = Up(backend);
        let k = format!("{prefix}:c");
        assert_eq!(b.counter(&k, 3, Some(5), 60_000).value, 3);
        let s = b.counter(&k, 3, Some(5), 60_000);
        assert!(!s.allowed);
        assert_eq!(s.value, 3, "a refused add changes nothing");
        assert!(s.ttl_ms > 0 && s.ttl_ms <= 60_000);
        assert_eq!(b.counter(&k, -1, None, 60_000).value, 2);
        let g = b.counter(&format!("{prefix}:absent"), 0, None, 0);
        assert_eq!((g.value, g.ttl_ms), (0, 0));
        // Expiry.
        let e = format!("{prefix}:short");
        b.counter(&e, 1, None, 30);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.counter(&e, 1, None, 30).value, 1, "a new window starts");
        b.cache_set(&format!("{prefix}:k"), b"v", 60_000);
        assert_eq!(b.cache_get(&format!("{prefix}:k")), Some(b"v".to_vec()));
        assert_eq!(b.cache_get(&format!("{prefix}:nope")), None);
    }

    #[test]
    fn memory_backend() {
        exercise(&MemoryBackend::new(1000, 1 << 20), "t");
        exercise(
            &MemoryBackend::new(DEFAULT_MAX_COUNTERS, 1 << 20),
            "sharded",
        );
    }

    /// A million distinct keys (a caller inventing rate-limit keys) leave
    /// the map at its bound, and no operation removes more than a few
    /// entries: the work per call does not grow with the map.
    #[test]
    fn a_million_distinct_counters_stay_bounded() {
        let max = 10_000;
        let c = MemoryCounters::new(max);
        for i in 0..1_000_000u32 {
            let s = c.counter(&format!("flood|{i}"), 1, Some(100), 60_000);
            assert!(s.allowed && s.value == 1);
        }
        let s = c.stats();
        assert!(s.entries <= max, "{s:?}");
        assert!(s.entries >= max - 16, "the bound is used: {s:?}");
        assert_eq!(s.evicted, 1_000_000 - s.entries as u64, "{s:?}");
        assert!(s.max_removed_per_call <= 1 + EXPIRE_PER_CALL, "{s:?}");
        // A counter in steady use is the most recently used, not evicted.
        let c = MemoryCounters::new(100);
        for i in 0..10_000u32 {
            c.counter("busy", 1, None, 60_000);
            c.counter(&format!("flood|{i}"), 1, None, 60_000);
        }
        assert_eq!(c.counter("busy", 0, None, 0).value, 10_000);
        assert!(c.stats().entries <= 100);
    }

    /// Expired counters leave a few per call, never all at once.
    #[test]
    fn expired_counters_are_removed_a_few_at_a_time() {
        let c = MemoryCounters::new(100_000);
        for i in 0..5_000u32 {
            c.counter(&format!("short|{i}"), 1, None, 1);
        }
        std::thread::sleep(Duration::from_millis(5));
        for i in 0..2_000u32 {
            let s = c.counter(&format!("new|{i}"), 1, None, 60_000);
            assert_eq!(s.value, 1);
        }
        let s = c.stats();
        assert!(s.max_removed_per_call <= 1 + EXPIRE_PER_CALL, "{s:?}");
        assert!(s.expired > 0, "{s:?}");
        assert_eq!(s.entries as u64 + s.expired, 7_000, "{s:?}");
        // An expired counter reads as absent and starts a new window.
        assert_eq!(c.counter("short|4999", 0, None, 0).value, 0);
        assert_eq!(c.counter("short|4999", 2, None, 60_000).value, 2);
    }

    #[test]
    fn huge_ttls_do_not_overflow_the_clock() {
        let b = MemoryBackend::new(10, 1 << 20);
        let s = b.counter("k", 1, None, u64::MAX).unwrap();
        assert!(s.ttl_ms > 0 && s.ttl_ms <= MAX_TTL_MS, "{s:?}");
        b.cache_set("k", b"v", u64::MAX);
        assert_eq!(b.cache_get("k"), Some(b"v".to_vec()));
    }

    #[test]
    fn memory_cache_is_bounded() {
        let b = MemoryBackend::new(10, 100);
        b.cache_set("a", &[0; 40], 60_000);
        b.cache_set("b", &[0; 40], 60_000);
        b.cache_set("c", &[0; 40], 60_000);
        assert!(b.cache_get("a").is_none(), "oldest evicted");
        assert!(b.cache_get("c").is_some());
        b.cache_set("big", &[0; 200], 60_000);
        assert!(b.cache_get("big").is_none(), "larger than the bound");
    }

    /// Runs against a real Redis when `REDIS_URL` is set (.ci/run starts one).
    #[test]
    fn redis_backend() {
        let Ok(url) = std::env::var("REDIS_URL") else {
            eprintln!("REDIS_URL not set; skipping the Redis backend test");
            return;
        };
        let b = RedisBackend::connect(&url, Duration::from_secs(2)).expect("redis reachable");
        let prefix = format!("portcullis-test-{}", uuid::Uuid::new_v4().simple());
        exercise(&b, &prefix);
    }
}
