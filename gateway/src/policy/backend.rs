//! Where policy counters and cache entries live: in this process, or in
//! Redis so that limits and cached answers are shared by every gateway.
//!
//! Calls are synchronous because policies call them from inside a wasm
//! call. The in-process backend is a mutex-protected map (sub-microsecond);
//! the Redis backend blocks the calling worker for one round trip, which
//! is the price of limits that hold across replicas. Redis failures never
//! fail a request on their own: a counter that cannot be read is reported
//! as allowed, a cache miss as a miss, and both are logged.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
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
    /// under it); creates the key with `ttl_ms` when absent.
    fn counter(&self, key: &str, delta: i64, limit: Option<i64>, ttl_ms: u64) -> CounterState;
    fn cache_get(&self, key: &str) -> Option<Vec<u8>>;
    fn cache_set(&self, key: &str, value: &[u8], ttl_ms: u64);
}

/// In-process counters and a byte-bounded cache (oldest entries evicted first).
pub struct MemoryBackend {
    counters: Mutex<HashMap<String, (i64, Instant)>>,
    cache: Mutex<MemoryCache>,
}

struct MemoryCache {
    max_bytes: usize,
    bytes: usize,
    entries: HashMap<String, (Vec<u8>, Instant)>,
    /// Insertion order, for eviction; stale keys are skipped.
    order: VecDeque<String>,
}

impl MemoryBackend {
    pub fn new(cache_max_bytes: usize) -> Self {
        MemoryBackend {
            counters: Mutex::new(HashMap::new()),
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
    fn counter(&self, key: &str, delta: i64, limit: Option<i64>, ttl_ms: u64) -> CounterState {
        let now = Instant::now();
        let mut map = match self.counters.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Expired counters are dropped lazily, and all at once when the
        // map grows, so it never holds more than the live windows.
        if map.len() > 100_000 {
            map.retain(|_, (_, exp)| *exp > now);
        }
        let live = map.get(key).copied().filter(|(_, exp)| *exp > now);
        let (value, expires) = live.unwrap_or((0, now + Duration::from_millis(ttl_ms)));
        let next = value.saturating_add(delta);
        let allowed = limit.is_none_or(|l| next <= l);
        let stored = if allowed { next } else { value };
        let exists = live.is_some() || (allowed && delta != 0);
        if exists {
            map.insert(key.to_owned(), (stored, expires));
        }
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
        let expires = Instant::now() + Duration::from_millis(ttl_ms);
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
        let conn = client
            .get_connection_with_timeout(timeout)
            .map_err(|e| format!("cannot connect to redis: {e}"))?;
        Ok(RedisBackend {
            client,
            pool: Mutex::new(vec![conn]),
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
    fn counter(&self, key: &str, delta: i64, limit: Option<i64>, ttl_ms: u64) -> CounterState {
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
            Ok((allowed, value, pttl)) => CounterState {
                allowed: allowed == 1,
                value,
                ttl_ms: pttl.max(0) as u64,
            },
            Err(e) => {
                tracing::warn!(error = %e, "redis counter failed; allowing");
                CounterState {
                    allowed: true,
                    value: 0,
                    ttl_ms: 0,
                }
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

    fn exercise(b: &dyn Backend, prefix: &str) {
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
        exercise(&MemoryBackend::new(1 << 20), "t");
    }

    #[test]
    fn memory_cache_is_bounded() {
        let b = MemoryBackend::new(100);
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
