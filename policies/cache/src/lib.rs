//! cache: an exact-match response cache.
//!
//! The key is a hash of the normalised request: the proxy, the model, the
//! messages and the parameters that change the answer, with object keys
//! sorted so that field order does not matter; `stream`, `stream_options`
//! and `user` are left out, so a streamed and a non-streamed request share
//! an entry (the gateway replays a hit as SSE when the client streams).
//! With `per_key`, each API key has its own entries.

use portcullis_policy_sdk::host::{self, cache};
use portcullis_policy_sdk::{
    ConfigError, Header, Policy, PolicyInfo, Request, RequestVerdict, Response, ResponseMode,
    export_policy, serde_json, settings,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct Settings {
    #[serde(default = "ttl")]
    ttl_seconds: u64,
    #[serde(default = "max_entry")]
    max_entry_bytes: usize,
    #[serde(default)]
    per_key: bool,
}

fn ttl() -> u64 {
    300
}

fn max_entry() -> usize {
    256 * 1024
}

/// Request fields that change the answer.
const KEYED: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "tools",
    "tool_choice",
    "response_format",
    "reasoning_effort",
];

/// Deserialises one JSON value straight into `out` as compact JSON with
/// every object's keys sorted, so that field order does not change a key.
/// No `serde_json::Value` tree is built: with `preserve_order` (on for the
/// workspace) each object would be an index map, and building them was
/// most of this policy's request phase once the hash moved to the host.
struct Canonical<'a>(&'a mut Vec<u8>);

impl<'de> serde::de::DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Canonical<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        write_json(self.0, &v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        write_json(self.0, &v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        write_json(self.0, &v);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // As serde_json's `Value` writes a float (and `null` for none).
        write_json(self.0, &serde_json::Number::from_f64(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_json(self.0, v);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            let mark = self.0.len();
            if !first {
                self.0.push(b',');
            }
            if seq.next_element_seed(Canonical(self.0))?.is_none() {
                self.0.truncate(mark);
                break;
            }
            first = false;
        }
        self.0.push(b']');
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Each entry rendered on its own, then written in key order. A key
        // given twice keeps its last value, as a parsed object does: the
        // sort is stable, so of equal keys the last one given is written
        // (no search per key, which a request with thousands of keys in
        // one object would make quadratic).
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            let mut v = Vec::new();
            map.next_value_seed(Canonical(&mut v))?;
            entries.push((k, v));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.0.push(b'{');
        let mut first = true;
        for (i, (k, v)) in entries.iter().enumerate() {
            if entries.get(i + 1).is_some_and(|next| next.0 == *k) {
                continue;
            }
            if !first {
                self.0.push(b',');
            }
            first = false;
            write_json(self.0, k);
            self.0.push(b':');
            self.0.extend_from_slice(v);
        }
        self.0.push(b'}');
        Ok(())
    }
}

/// The request's keyed fields, each already in canonical form.
struct Keyed([Option<Vec<u8>>; KEYED.len()]);

impl<'de> serde::Deserialize<'de> for Keyed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> serde::de::Visitor<'de> for Top {
            type Value = Keyed;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Keyed, A::Error> {
                let mut out = Keyed(Default::default());
                while let Some(k) = map.next_key::<String>()? {
                    match KEYED.iter().position(|f| *f == k) {
                        Some(i) => {
                            let mut v = Vec::new();
                            map.next_value_seed(Canonical(&mut v))?;
                            out.0[i] = Some(v);
                        }
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Top)
    }
}

/// A string or scalar as JSON (escaped as serde_json writes it).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing to a Vec cannot fail, and these values always serialise.
    let _ = serde_json::to_writer(out, v);
}

/// The cache key of a request, or `None` when its JSON is unreadable.
/// The key is the SHA-256 of the proxy, the key when `per_key`, and the
/// keyed fields (in `KEYED` order) as one JSON object. The hash is the
/// host's (`compute::sha256`): in wasm it was the largest part of this
/// policy's request phase after the parse (docs/benchmarks.md).
pub fn cache_key(req: &Request, per_key: bool) -> Option<String> {
    let keyed: Keyed = serde_json::from_str(&req.raw).ok()?;
    let mut buf = Vec::with_capacity(req.raw.len() + req.proxy_id.len() + req.key_id.len() + 4);
    buf.extend_from_slice(req.proxy_id.as_bytes());
    buf.push(0);
    if per_key {
        buf.extend_from_slice(req.key_id.as_bytes());
    }
    buf.push(0);
    buf.push(b'{');
    let mut first = true;
    for (k, v) in KEYED.iter().zip(&keyed.0) {
        if let Some(v) = v {
            if !first {
                buf.push(b',');
            }
            first = false;
            write_json(&mut buf, *k);
            buf.push(b':');
            buf.extend_from_slice(v);
        }
    }
    buf.push(b'}');
    Some(hex::encode(host::sha256(&buf)))
}

#[derive(Clone)]
pub struct Cache {
    s: Settings,
    /// The key to store the answer under (a miss that may be cached).
    store_as: Option<String>,
}

impl Policy for Cache {
    fn init(value: serde_json::Value) -> Result<Self, ConfigError> {
        Ok(Cache {
            s: settings(value)?,
            store_as: None,
        })
    }

    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            on_request: true,
            response: ResponseMode::Skip,
            on_complete: true,
        }
    }

    fn on_request(&mut self, req: &Request) -> RequestVerdict {
        let control = req
            .header("cache-control")
            .unwrap_or("")
            .to_ascii_lowercase();
        if control.contains("no-store") {
            return RequestVerdict::Continue(vec![Header::new("x-cache", "BYPASS")]);
        }
        let Some(key) = cache_key(req, self.s.per_key) else {
            return RequestVerdict::Continue(vec![Header::new("x-cache", "BYPASS")]);
        };
        if !control.contains("no-cache") {
            if let Some(body) = cache::get(&key) {
                if let Ok(body) = String::from_utf8(body) {
                    return RequestVerdict::respond(200, vec![Header::new("x-cache", "HIT")], body);
                }
            }
        }
        self.store_as = Some(key);
        RequestVerdict::Continue(vec![Header::new("x-cache", "MISS")])
    }

    fn on_complete(&mut self, resp: &Response) {
        let Some(key) = self.store_as.take() else {
            return;
        };
        if resp.status == 200 && !resp.raw.is_empty() && resp.raw.len() <= self.s.max_entry_bytes {
            cache::set(&key, resp.raw.as_bytes(), self.s.ttl_seconds * 1000);
        }
    }
}

export_policy!(Cache);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::serde_json::json;
    use portcullis_policy_sdk::testing::{self, Harness};

    const MANIFEST: &str = include_str!("../policy.json");

    fn req(raw: serde_json::Value) -> Request {
        let mut r = Request::user("m", "hi");
        r.raw = raw.to_string();
        r
    }

    #[test]
    fn keys_ignore_order_and_streaming() {
        let a = req(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}),
        );
        let b = req(
            json!({"temperature": 0.5, "stream": true, "messages": [{"content": "hi", "role": "user"}], "model": "m"}),
        );
        let c = req(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7}),
        );
        assert_eq!(cache_key(&a, false), cache_key(&b, false));
        assert_ne!(cache_key(&a, false), cache_key(&c, false));
    }

    /// The key is the SHA-256 of proxy, key and the keyed fields as one
    /// JSON object with nested keys sorted: entries stored in Redis by an
    /// earlier build keep being found.
    #[test]
    fn keys_hash_the_keyed_fields_with_nested_keys_sorted() {
        let r = req(json!({
            "stream": true, "messages": [{"role": "user", "content": "hé \"x\""}],
            "model": "m", "tools": [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": [2.5, null]}}}]
        }));
        let canonical = r#"{"model":"m","messages":[{"content":"hé \"x\"","role":"user"}],"tools":[{"function":{"name":"f","parameters":{"a":[2.5,null],"b":1}},"type":"function"}]}"#;
        // The digest, as an earlier build computed it in wasm.
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"p\0\0");
        h.update(canonical.as_bytes());
        let mut r = r;
        r.proxy_id = "p".into();
        assert_eq!(cache_key(&r, false), Some(hex::encode(h.finalize())));
    }

    /// The streaming canonical form is the one a parsed `Value` with
    /// sorted keys gives (how earlier builds computed it), on values that
    /// exercise escapes in keys, repeated keys, numbers and empty nests.
    #[test]
    fn canonical_form_matches_the_sorted_value() {
        fn sorted(v: &serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Object(m) => {
                    let mut e: Vec<_> = m.iter().collect();
                    e.sort_by(|a, b| a.0.cmp(b.0));
                    serde_json::Value::Object(
                        e.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect(),
                    )
                }
                serde_json::Value::Array(a) => {
                    serde_json::Value::Array(a.iter().map(sorted).collect())
                }
                leaf => leaf.clone(),
            }
        }
        let text = r#"{"z": [1, -2, 3.25, 1e21, true, null, {}, [], {"b": {"y": 1, "x": [2]}, "a\u00e9\"k": "v\n"}], "a": {"k": 1, "k": 2}, "m": "\ud83d\ude00"}"#;
        let mut out = Vec::new();
        let mut de = serde_json::Deserializer::from_str(text);
        serde::de::DeserializeSeed::deserialize(Canonical(&mut out), &mut de).unwrap();
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), sorted(&v).to_string());
    }

    #[test]
    fn miss_then_hit_then_expiry() {
        testing::set_now_ms(1_000_000);
        let mut h = Harness::<Cache>::with_defaults(MANIFEST, json!({"ttl_seconds": 60})).unwrap();
        let r = req(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let RequestVerdict::Continue(hs) = h.request(&r) else {
            panic!()
        };
        assert_eq!(hs[0].value, "MISS");
        let mut resp = Response::text("m", "hello", None);
        resp.raw = "{\"id\":\"x\"}".into();
        h.complete(&resp);
        let RequestVerdict::Respond(d) = h.request(&r) else {
            panic!("hit expected")
        };
        assert_eq!(
            (d.status, d.body.as_str(), d.headers[0].value.as_str()),
            (200, "{\"id\":\"x\"}", "HIT")
        );
        // no-cache skips the lookup.
        let mut nc = r.clone();
        nc.headers.push(Header::new("cache-control", "no-cache"));
        assert!(matches!(h.request(&nc), RequestVerdict::Continue(_)));
        testing::advance_ms(61_000);
        assert!(
            matches!(h.request(&r), RequestVerdict::Continue(_)),
            "expired"
        );
    }
}
