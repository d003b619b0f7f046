//! A local test harness: run a policy natively, without a gateway.
//!
//! The host capabilities are implemented in-process per thread (each
//! `#[test]` runs on its own thread, so tests do not share counters), with
//! a clock the test can set. [`Harness`] drives a policy through the phases
//! in the order the gateway does, with the settings merged over defaults.
//!
//! ```ignore
//! let mut h = Harness::<MyPolicy>::new(json!({"limit": 2})).unwrap();
//! assert!(matches!(h.request(&Request::user("m", "hi")), RequestVerdict::Continue(_)));
//! ```

#[cfg(not(target_arch = "wasm32"))]
use std::cell::RefCell;
#[cfg(not(target_arch = "wasm32"))]
use std::collections::HashMap;

#[cfg(not(target_arch = "wasm32"))]
use crate::Level;
use crate::{
    Chunk, ChunkVerdict, ConfigError, Policy, PolicyInfo, Request, RequestVerdict, Response,
    ResponseVerdict,
};

#[cfg(not(target_arch = "wasm32"))]
#[derive(Default)]
struct TestHost {
    now_ms: Option<u64>,
    counters: HashMap<String, (i64, u64)>,
    cache: HashMap<String, (Vec<u8>, u64)>,
    logs: Vec<(Level, String)>,
    metrics: HashMap<String, f64>,
    embed: Option<fn(&str) -> Result<Vec<f32>, String>>,
    cost: Option<f64>,
    caller: (Option<String>, Option<String>),
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

#[cfg(not(target_arch = "wasm32"))]
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host_now_ms() -> u64 {
    HOST.with_borrow(|h| h.now_ms).unwrap_or_else(wall_ms)
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host_counter(
    key: &str,
    delta: i64,
    limit: Option<i64>,
    ttl_ms: u64,
) -> crate::host::CounterState {
    let now = host_now_ms();
    HOST.with_borrow_mut(|h| {
        let entry = h.counters.get(key).copied().filter(|(_, exp)| *exp > now);
        let (value, expires) = entry.unwrap_or((0, now + ttl_ms));
        let next = value + delta;
        let allowed = limit.is_none_or(|l| next <= l);
        let stored = if allowed { next } else { value };
        if allowed && (entry.is_some() || delta != 0) {
            h.counters.insert(key.to_owned(), (stored, expires));
        }
        crate::host::CounterState {
            allowed,
            value: stored,
            ttl_ms: if entry.is_some() || delta != 0 {
                expires.saturating_sub(now)
            } else {
                0
            },
        }
    })
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host_cache_get(key: &str) -> Option<Vec<u8>> {
    let now = host_now_ms();
    HOST.with_borrow(|h| {
        h.cache
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone())
    })
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host_cache_set(key: &str, value: &[u8], ttl_ms: u64) {
    let now = host_now_ms();
    HOST.with_borrow_mut(|h| {
        h.cache
            .insert(key.to_owned(), (value.to_vec(), now + ttl_ms));
    });
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host_log(level: Level, message: &str) {
    HOST.with_borrow_mut(|h| h.logs.push((level, message.to_owned())));
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host_metric(name: &str, value: f64) {
    HOST.with_borrow_mut(|h| *h.metrics.entry(name.to_owned()).or_default() += value);
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host_embed(input: &str) -> Result<Vec<f32>, String> {
    match HOST.with_borrow(|h| h.embed) {
        Some(f) => f(input),
        None => Err("no embeddings in this test (use testing::set_embed)".into()),
    }
}

/// Sets the test host's clock (milliseconds since the epoch).
#[cfg(not(target_arch = "wasm32"))]
pub fn set_now_ms(ms: u64) {
    HOST.with_borrow_mut(|h| h.now_ms = Some(ms));
}

/// Moves the test host's clock forward.
#[cfg(not(target_arch = "wasm32"))]
pub fn advance_ms(ms: u64) {
    let now = host_now_ms();
    set_now_ms(now + ms);
}

/// Sets the function that answers `host::embed`.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_embed(f: fn(&str) -> Result<Vec<f32>, String>) {
    HOST.with_borrow_mut(|h| h.embed = Some(f));
}

/// The value of header `name` among `headers` (a verdict's), if any.
pub fn header<'a>(headers: &'a [crate::Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_str())
}

/// What `host::cost` answers on this thread (the cost the gateway computes
/// for `on-complete`).
#[cfg(not(target_arch = "wasm32"))]
pub fn set_cost(cost: Option<f64>) {
    HOST.with_borrow_mut(|h| h.cost = cost);
}

/// What `host::application_id` and `host::subscription_id` answer on this
/// thread.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_caller(application: Option<&str>, subscription: Option<&str>) {
    HOST.with_borrow_mut(|h| {
        h.caller = (
            application.map(str::to_owned),
            subscription.map(str::to_owned),
        )
    });
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host_caller() -> (Option<String>, Option<String>) {
    HOST.with_borrow(|h| h.caller.clone())
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host_cost() -> Option<f64> {
    HOST.with_borrow(|h| h.cost)
}

/// Lines logged so far on this thread.
#[cfg(not(target_arch = "wasm32"))]
pub fn logs() -> Vec<(Level, String)> {
    HOST.with_borrow(|h| h.logs.clone())
}

/// The sum recorded for a custom metric on this thread.
#[cfg(not(target_arch = "wasm32"))]
pub fn metric(name: &str) -> f64 {
    HOST.with_borrow(|h| h.metrics.get(name).copied().unwrap_or(0.0))
}

/// Merges `overrides` into `defaults` the way the gateway does: objects
/// key by key, anything else replaced.
pub fn merge_settings(
    defaults: &serde_json::Value,
    overrides: &serde_json::Value,
) -> serde_json::Value {
    match (defaults, overrides) {
        (serde_json::Value::Object(d), serde_json::Value::Object(o)) => {
            let mut out = d.clone();
            for (k, v) in o {
                let merged = match d.get(k) {
                    Some(dv) => merge_settings(dv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            serde_json::Value::Object(out)
        }
        (_, o) => o.clone(),
    }
}

/// Drives one policy through a request the way the gateway does: `init`
/// once, then every request starts from a clone of the value it built.
pub struct Harness<P: Policy> {
    template: P,
    policy: P,
    /// The manifest's `request_reads` (with [`Harness::with_defaults`]):
    /// parts not listed reach `on_request` empty, as in the gateway.
    request_reads: Option<Vec<String>>,
}

impl<P: Policy> Harness<P> {
    /// A harness whose policies get `settings` (merge with the manifest's
    /// defaults yourself, or use [`Harness::with_defaults`]).
    pub fn new(settings: serde_json::Value) -> Result<Self, ConfigError> {
        let template = P::init(settings)?;
        Ok(Harness {
            policy: template.clone(),
            template,
            request_reads: None,
        })
    }

    /// Settings from a manifest's `defaults` with `overrides` on top.
    pub fn with_defaults(
        manifest_json: &str,
        overrides: serde_json::Value,
    ) -> Result<Self, ConfigError> {
        let manifest: serde_json::Value = serde_json::from_str(manifest_json)
            .map_err(|e| ConfigError::new("", format!("manifest is not JSON: {e}")))?;
        let defaults = manifest
            .get("defaults")
            .cloned()
            .unwrap_or(serde_json::json!({}));
        let mut h = Self::new(merge_settings(&defaults, &overrides))?;
        h.request_reads = manifest.get("request_reads").and_then(|r| {
            r.as_array().map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
        });
        Ok(h)
    }

    /// Starts a new request: the value `init` built, as in the gateway.
    pub fn next_request(&mut self) -> Result<(), ConfigError> {
        self.policy = self.template.clone();
        Ok(())
    }

    pub fn info(&self) -> PolicyInfo {
        self.policy.info()
    }

    /// `on_request` on a fresh policy value.
    pub fn request(&mut self, req: &Request) -> RequestVerdict {
        if let Err(e) = self.next_request() {
            panic!("settings stopped being valid: {e}");
        }
        match &self.request_reads {
            None => self.policy.on_request(req),
            Some(reads) => {
                let reads = |part: &str| reads.iter().any(|r| r == part);
                let mut seen = req.clone();
                if !reads("messages") {
                    seen.messages.clear();
                }
                if !reads("headers") {
                    seen.headers.clear();
                }
                if !reads("raw") {
                    seen.raw.clear();
                }
                self.policy.on_request(&seen)
            }
        }
    }

    /// `on_response` on the current request's policy value.
    pub fn response(&mut self, resp: &Response) -> ResponseVerdict {
        self.policy.on_response(resp)
    }

    /// Streams `pieces` of choice 0 through `on_chunk` and `on_stream_end`,
    /// returning what the client would see, or the rejection.
    pub fn stream(&mut self, pieces: &[&str]) -> Result<String, crate::Rejection> {
        let mut out = String::new();
        for p in pieces {
            match self.policy.on_chunk(&Chunk::new(0, *p)) {
                ChunkVerdict::Continue => out.push_str(p),
                ChunkVerdict::Replace(t) => out.push_str(&t),
                ChunkVerdict::Reject(r) => return Err(r),
            }
        }
        for c in self.policy.on_stream_end() {
            out.push_str(&c.text);
        }
        Ok(out)
    }

    /// `on_complete` on the current request's policy value.
    pub fn complete(&mut self, resp: &Response) {
        self.policy.on_complete(resp)
    }

    /// The policy value of the current request.
    pub fn policy(&mut self) -> &mut P {
        &mut self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{cache, counters};

    #[test]
    fn counters_respect_limits_and_expire() {
        set_now_ms(1_000);
        assert_eq!(counters::try_add("k", 3, 5, 1_000).value, 3);
        let refused = counters::try_add("k", 3, 5, 1_000);
        assert!(!refused.allowed);
        assert_eq!((refused.value, refused.ttl_ms), (3, 1_000));
        assert_eq!(counters::add("k", -1, 1_000).value, 2);
        advance_ms(1_000);
        assert_eq!(counters::get("k").value, 0, "expired with its window");
    }

    #[test]
    fn cache_entries_live_for_their_ttl() {
        set_now_ms(5_000);
        cache::set("a", b"1", 100);
        assert_eq!(cache::get("a"), Some(b"1".to_vec()));
        advance_ms(100);
        assert_eq!(cache::get("a"), None);
    }

    #[test]
    fn settings_merge_like_the_gateway() {
        let d = serde_json::json!({"a": {"x": 1, "y": 2}, "list": [1, 2], "keep": true});
        let o = serde_json::json!({"a": {"y": 3}, "list": [9]});
        assert_eq!(
            merge_settings(&d, &o),
            serde_json::json!({"a": {"x": 1, "y": 3}, "list": [9], "keep": true})
        );
    }
}
