//! Host capabilities. In a component these call the gateway; built
//! natively (unit tests) they run against the in-process test host in
//! [`crate::testing`]. A policy may only use the capabilities its manifest
//! declares (`counters`, `cache`, `clock`, `log`, `metrics`, `embeddings`);
//! the gateway refuses components that import others. [`Regex`] and
//! [`Schema`] are always available.

use crate::{Level, Span};

#[cfg(target_arch = "wasm32")]
use crate::bindings::portcullis::policy as wit;

/// The state of a counter after an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterState {
    /// Whether `try_add` applied the delta (always true for `add`).
    pub allowed: bool,
    pub value: i64,
    /// Milliseconds until the counter expires.
    pub ttl_ms: u64,
}

/// Shared counters: fixed windows, budgets. Keys are private to the policy.
pub mod counters {
    use super::CounterState;

    /// Adds `delta` to `key`, creating it with `ttl_ms` when absent.
    pub fn add(key: &str, delta: i64, ttl_ms: u64) -> CounterState {
        #[cfg(target_arch = "wasm32")]
        {
            super::from_wit(super::wit::counters::add(key, delta, ttl_ms))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_counter(key, delta, None, ttl_ms)
        }
    }

    /// Adds `delta` only if the result stays at or under `limit` (atomic).
    pub fn try_add(key: &str, delta: i64, limit: i64, ttl_ms: u64) -> CounterState {
        #[cfg(target_arch = "wasm32")]
        {
            super::from_wit(super::wit::counters::try_add(key, delta, limit, ttl_ms))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_counter(key, delta, Some(limit), ttl_ms)
        }
    }

    /// The counter's value (0 and ttl 0 when absent).
    pub fn get(key: &str) -> CounterState {
        #[cfg(target_arch = "wasm32")]
        {
            super::from_wit(super::wit::counters::get(key))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_counter(key, 0, None, 0)
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn from_wit(s: wit::counters::CounterState) -> CounterState {
    CounterState {
        allowed: s.allowed,
        value: s.value,
        ttl_ms: s.ttl_ms,
    }
}

/// A TTL key-value store. Keys are private to the policy.
pub mod cache {
    pub fn get(key: &str) -> Option<Vec<u8>> {
        #[cfg(target_arch = "wasm32")]
        {
            super::wit::cache::get(key)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_cache_get(key)
        }
    }

    pub fn set(key: &str, value: &[u8], ttl_ms: u64) {
        #[cfg(target_arch = "wasm32")]
        {
            super::wit::cache::set(key, value, ttl_ms)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_cache_set(key, value, ttl_ms)
        }
    }
}

/// The SHA-256 digest of `data`, computed by the host (with the CPU's SHA
/// instructions: many times faster than hashing in wasm). Always granted.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    #[cfg(target_arch = "wasm32")]
    let digest = wit::compute::sha256(data);
    #[cfg(not(target_arch = "wasm32"))]
    let digest = {
        use sha2::Digest as _;
        sha2::Sha256::digest(data).to_vec()
    };
    let mut out = [0u8; 32];
    // The host always answers 32 bytes; a shorter answer leaves zeros.
    let n = digest.len().min(32);
    out[..n].copy_from_slice(&digest[..n]);
    out
}

/// What the request cost, in the gateway's price table currency: known in
/// `on_complete` (its final usage at the price of the model called), none
/// elsewhere and for a model without a price.
pub fn cost() -> Option<f64> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::metering::cost()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::host_cost()
    }
}

/// The application the request's key belongs to (admin's id), when it is
/// an application's key.
pub fn application_id() -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::caller::application_id()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::host_caller().0
    }
}

/// The subscription the request's key is used under (admin's id), when it
/// is an application's key.
pub fn subscription_id() -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::caller::subscription_id()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::host_caller().1
    }
}

/// Milliseconds since the Unix epoch (the test host's clock can be set).
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        wit::clock::now_ms()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::host_now_ms()
    }
}

/// Logs through the gateway's `tracing`, tagged with the policy's name.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        wit::log::log(level, message)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::host_log(level, message)
    }
}

/// Custom metrics.
pub mod metrics {
    /// Adds to the counter `name`.
    pub fn counter_add(name: &str, value: u64) {
        #[cfg(target_arch = "wasm32")]
        {
            super::wit::metrics::counter_add(name, value)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_metric(name, value as f64)
        }
    }

    /// Records an observation of `name`.
    pub fn observe(name: &str, value: f64) {
        #[cfg(target_arch = "wasm32")]
        {
            super::wit::metrics::observe(name, value)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_metric(name, value)
        }
    }
}

/// An embedding of `input` from the gateway's embeddings endpoint.
pub fn embed(input: &str) -> Result<Vec<f32>, String> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::embeddings::embed(input)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::host_embed(input)
    }
}

/// A regular expression compiled by the host (Rust `regex` syntax).
/// Cloning copies a handle.
#[derive(Debug, Clone)]
pub struct Regex {
    #[cfg(target_arch = "wasm32")]
    handle: u32,
    #[cfg(not(target_arch = "wasm32"))]
    re: regex::Regex,
}

impl Regex {
    pub fn new(pattern: &str, case_insensitive: bool) -> Result<Regex, String> {
        #[cfg(target_arch = "wasm32")]
        {
            wit::compute::regex_compile(pattern, case_insensitive).map(|handle| Regex { handle })
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            regex::RegexBuilder::new(pattern)
                .case_insensitive(case_insensitive)
                .build()
                .map(|re| Regex { re })
                .map_err(|e| e.to_string())
        }
    }

    /// One expression matching where any of `patterns` matches: a
    /// prefilter that scans a text once instead of once per pattern (each
    /// pattern in a group of its own, so its inline flags stay its own).
    /// Most texts match none, and then the per-pattern work is skipped.
    pub fn any_of<S: AsRef<str>>(patterns: &[S], case_insensitive: bool) -> Result<Regex, String> {
        let joined: Vec<String> = patterns
            .iter()
            .map(|p| format!("(?:{})", p.as_ref()))
            .collect();
        Regex::new(&joined.join("|"), case_insensitive)
    }

    pub fn is_match(&self, text: &str) -> bool {
        #[cfg(target_arch = "wasm32")]
        {
            wit::compute::regex_is_match(self.handle, text)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.re.is_match(text)
        }
    }

    /// Non-overlapping matches, as byte ranges of `text`.
    pub fn find_all(&self, text: &str) -> Vec<Span> {
        #[cfg(target_arch = "wasm32")]
        {
            wit::compute::regex_find_all(self.handle, text)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.re
                .find_iter(text)
                .map(|m| Span {
                    start: m.start() as u32,
                    end: m.end() as u32,
                })
                .collect()
        }
    }
}

/// A JSON Schema compiled by the host. Cloning copies a handle.
#[derive(Clone)]
pub struct Schema {
    #[cfg(target_arch = "wasm32")]
    handle: u32,
    #[cfg(not(target_arch = "wasm32"))]
    validator: std::sync::Arc<jsonschema::Validator>,
}

impl Schema {
    pub fn new(schema: &serde_json::Value) -> Result<Schema, String> {
        #[cfg(target_arch = "wasm32")]
        {
            wit::compute::schema_compile(&schema.to_string()).map(|handle| Schema { handle })
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            jsonschema::validator_for(schema)
                .map(|validator| Schema {
                    validator: std::sync::Arc::new(validator),
                })
                .map_err(|e| e.to_string())
        }
    }

    /// Validates a JSON text; the errors name JSON pointers.
    pub fn validate(&self, document: &str) -> Result<(), Vec<String>> {
        #[cfg(target_arch = "wasm32")]
        {
            wit::compute::schema_validate(self.handle, document)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let doc: serde_json::Value =
                serde_json::from_str(document).map_err(|e| vec![format!("not JSON: {e}")])?;
            let errors: Vec<String> = self
                .validator
                .iter_errors(&doc)
                .map(|e| format!("{}: {}", e.instance_path(), e))
                .collect();
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors)
            }
        }
    }
}
